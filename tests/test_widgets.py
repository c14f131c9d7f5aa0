"""`fastxfer.widgets.predict_widget`: driven by setting the widgets' values, as a person's upload or typing would."""
import datetime, io, subprocess
from pathlib import Path

import ipywidgets as W
import pytest
from PIL import Image

from conftest import shared_or_skip, run_cli
from fastxfer.model_folder import ModelFolder, Predictor, model_writer, probs_dict
from fastxfer.widgets import PredictWidget, predict_widget


def upload_value(data: bytes, name='x.png', type='image/png'):
    "What `FileUpload.value` holds after a person uploads `data` (ipywidgets 8)."
    return ({'name': name, 'type': type, 'size': len(data), 'content': memoryview(data),
             'last_modified': datetime.datetime.now(datetime.timezone.utc)},)


class WordCount(Predictor):
    "Stand-in text model: 'long' when a text has more than 5 words."
    input_type = 'text'
    def predict(self, items, **kw):
        return [dict(label='long' if len(t.split()) > 5 else 'short',
                     probs=probs_dict(self.classes, [0.2, 0.8] if len(t.split()) > 5 else [0.8, 0.2])) for t in items]


@pytest.fixture
def wordcount(tmp_path):
    with model_writer(tmp_path/'wc', kind='probe', predictor='fastxfer.model_folder.ConstantPredictor') as w:
        w.card.update(classes=['short', 'long'], prior=[.5, .5])
    return WordCount(ModelFolder(tmp_path/'wc'))


def test_text_widget_predicts_when_text_is_entered(wordcount):
    w = predict_widget(wordcount)
    assert isinstance(w, PredictWidget) and isinstance(w.input, W.Textarea)
    w.input.value = 'a b c d e f g h'
    assert w.result['label'] == 'long' and 'long' in w.output.value and '80.0%' in w.output.value
    w.input.value = 'tiny'
    assert w.result['label'] == 'short'
    w.input.value = 'x' * 30_000
    assert w.result is None and 'limit' in w.error


@pytest.fixture(scope='module')
def nfl_model(tmp_path_factory):
    "A real NFL model trained in-process on the shared standings (no cross-validation, a few seconds)."
    csv = shared_or_skip('nfl/standings.csv')
    from fastxfer.nfl import train
    out = tmp_path_factory.mktemp('nfl')/'nfl'
    train(standings=csv, out=out, evaluate=False)
    return out


def test_nfl_widget_fields_from_the_model(nfl_model):
    w = predict_widget(nfl_model)
    assert set(w.fields) == {'team', 'pf', 'pa', 'pd', 'sos'}
    assert {f: w.fields[f].value for f in ('pf', 'pa', 'sos')} == dict(pf=465, pa=380, sos=1.5)   # typical values, not zeros
    w.button.click()
    assert w.result is not None, w.error   # the form answers as it stands
    w.fields['team'].value = 'Atlanta Vipers'
    for f, v in dict(pf=465, pa=380, sos=1.5).items(): w.fields[f].value = v
    w.fields['pd'].value = '85'   # optional: a text box, empty for "work it out" (a number box would send 0)
    w.button.click()
    assert w.result['label'] == 'winning' and 'Probability of a winning season' in w.output.value
    w.fields['pd'].value = '3'   # inconsistent with pf - pa: the model's own check, shown as an error
    w.button.click()
    assert w.result is None and 'PF - PA' in w.error


@pytest.fixture(scope='module')
def vision_model(tmp_path_factory):
    "A real EfficientNet-Lite0 cat/dog model from 40 shared pets photos (`fastxfer vision train`, ~40 s)."
    pets = shared_or_skip('pets/images')
    d = tmp_path_factory.mktemp('widget_vision')
    (d/'pets40').mkdir()
    for f in sorted(pets.iterdir())[::15][:40]: (d/'pets40'/f.name).symlink_to(f)
    run_cli('vision', 'train', d/'pets40', '--labels', 'cat-dog', '--mode', 'features', '--size', '128',
            '--out', d/'pets', '--quiet', check=0)
    return d/'pets'


@pytest.mark.slow
def test_image_widget_with_a_real_vision_model(vision_model):
    pets = shared_or_skip('pets/images')
    w = predict_widget(vision_model)
    assert isinstance(w.input, W.FileUpload) and w.input.accept == 'image/*'
    w.input.value = upload_value((pets/'Bengal_101.jpg').read_bytes(), 'Bengal_101.jpg', 'image/jpeg')
    assert w.result['label'] in ('cat', 'dog') and set(w.result['probs']) == {'cat', 'dog'}
    assert w.preview.value and w.result['label'] in w.output.value
    b = io.BytesIO(); Image.new('RGB', (64, 64)).save(b, format='PNG')
    w.input.value = upload_value(b.getvalue()[:40])      # truncated
    assert w.result is None and ('truncated' in w.error or 'not an image' in w.error)
