"""Input drift: each model folder keeps its training inputs' statistics (`reference.json`); the server scores a window of
recent inputs against them at `GET /api/v1/models/<name>/drift`. Real models, real held-out data: inputs like the
training data stay under the threshold, shifted ones rise above it."""
import io, json

import pandas as pd
from fastapi.testclient import TestClient
from PIL import Image

from conftest import ADULT_COLUMNS, shared_or_skip


def _client(real_models, tmp_path, names):
    "A server (the app, in this process) on a copy of the models `names` only."
    import shutil
    from fastxfer.serve import create_app
    d = tmp_path/'models'
    for n in names: shutil.copytree(real_models/n, d/n)
    return TestClient(create_app(d, ui=False))


def _adult_rows(start, n):
    "Rows of the shared Adult sample the model was not trained on (it saw the first 400), as the API takes them."
    df = pd.read_csv(shared_or_skip('fastai_samples/adult_sample/adult.csv'), skipinitialspace=True, skiprows=range(1, start), nrows=n)
    return df[[c for c in ADULT_COLUMNS if c != 'salary']].to_dict('records')


def _post_rows(c, rows):
    for i in range(0, len(rows), 64):
        r = c.post('/api/v1/models/adult/predict/batch', json={'rows': rows[i:i+64]})
        assert r.status_code == 200, r.text


def test_every_model_folder_keeps_its_reference(real_models):
    for m in ('pets', 'reviews', 'adult', 'nfl', 'ml', 'camvid'):
        ref = json.loads((real_models/m/'reference.json').read_text())
        assert ref['n'] > 0 and ref['columns'], m


def test_tabular_drift_rises_for_shifted_rows_only(real_models, tmp_path):
    rows = _adult_rows(2000, 300)
    with _client(real_models, tmp_path, ['adult']) as c:
        r = c.get('/api/v1/models/adult/drift').json()
        assert r['ready'] is False and r['score'] is None and r['min_n'] == 100          # nothing seen yet
        _post_rows(c, rows)
        r = c.get('/api/v1/models/adult/drift').json()
        assert r['ready'] and r['n'] == 300 and not r['drifted'] and r['score'] < r['threshold'], r
    shifted = [{**row, 'age': row['age'] + 25, 'hours-per-week': row['hours-per-week'] * 2} for row in rows]
    with _client(real_models, tmp_path/'2', ['adult']) as c:
        _post_rows(c, shifted)
        r = c.get('/api/v1/models/adult/drift').json()
        assert r['drifted'] and r['score'] > r['threshold'], r
        worst = {col['column'] for col in r['columns'][:2]}
        assert worst == {'age', 'hours-per-week'} and all(col['drifted'] is False for col in r['columns'][2:]), r['columns']
        assert c.get('/api/v1/models/nope/drift').status_code == 404


def _jpeg(im):
    b = io.BytesIO(); im.save(b, format='JPEG', quality=90); return b.getvalue()


def test_image_drift_rises_for_dark_photos(real_models, tmp_path):
    pets = sorted(shared_or_skip('pets/images').glob('*.jpg'))[1::3][:120]    # not the model's 40 training photos ([::15])
    photos = [p.read_bytes() for p in pets]
    dark = [_jpeg(Image.eval(Image.open(p).convert('RGB'), lambda v: v // 4)) for p in pets]
    for images, drifted in ((photos, False), (dark, True)):
        with _client(real_models, tmp_path/str(drifted), ['pets']) as c:
            for i in range(0, len(images), 32):
                r = c.post('/api/v1/models/pets/predict/batch', files=[('files', (f'{k}.jpg', b, 'image/jpeg')) for k, b in enumerate(images[i:i+32])])
                assert r.status_code == 200, r.text
            r = c.get('/api/v1/models/pets/drift').json()
            assert r['n'] == len(images) and r['drifted'] is drifted, r
            if drifted: assert r['columns'][0]['column'] == 'brightness', r['columns']


def test_drift_is_typed_in_the_openapi_document(real_models, tmp_path):
    with _client(real_models, tmp_path, ['adult']) as c:
        doc = c.get('/openapi.json').json()
    op = doc['paths']['/api/v1/models/{model}/drift']['get']
    ref = op['responses']['200']['content']['application/json']['schema']['$ref']
    schema = doc['components']['schemas'][ref.rsplit('/', 1)[1]]
    assert {'drifted', 'score', 'threshold', 'columns', 'ready', 'n'} <= set(schema['properties']) and '404' in op['responses']
