"""Schemathesis hooks for `test_api_fuzz.py`: real image bytes for the image fields the document declares.

The typed image operations say `encoding: {file: {contentType: "image/png, image/jpeg, ..."}}`; random bytes
are not images, so the fuzzer gets PNG and JPEG files of random sizes and colours for those media types.
"""
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


@st.composite
def _image(draw, fmt):
    w, h = draw(st.integers(1, 96)), draw(st.integers(1, 96))
    mode = draw(st.sampled_from(['RGB', 'L', 'RGBA'] if fmt == 'PNG' else ['RGB', 'L']))
    color = draw(st.integers(0, 255)) if mode == 'L' else tuple(draw(st.integers(0, 255)) for _ in mode)
    b = io.BytesIO(); Image.new(mode, (w, h), color).save(b, format=fmt)
    return b.getvalue()


schemathesis.openapi.media_type('image/png', _image('PNG'))
schemathesis.openapi.media_type('image/jpeg', _image('JPEG'))
