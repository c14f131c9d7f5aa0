"""`POST /api/v1/models/<name>/explain` on the real model folders of every family, in-process (FastAPI's test client):
typed in the OpenAPI document, answered for each model's own example input, bad input a 4xx, `?format=png` the picture."""
import base64, io
import pytest
from PIL import Image


@pytest.fixture(scope='module')
def client(real_models):
    from fastapi.testclient import TestClient
    from fastxfer.serve import create_app
    app = create_app(real_models)
    with TestClient(app) as c:
        c.hub = app.state.hub
        yield c


def _send(client, name, query=''):
    "POST the model's own example input to its explain operation."
    p = client.hub.models[name]
    url = f'/api/v1/models/{name}/explain{query}'
    if p.input.media_type == 'multipart/form-data':
        f = p.examples()[0]
        return client.post(url, files={'file': (f, open(f, 'rb').read(), 'image/jpeg')})
    return client.post(url, json=p.input.example(False))


def test_every_family_explains_over_rest_typed_in_the_document(client):
    doc = client.get('/openapi.json').json()
    explaining = [n for n, p in client.hub.models.items() if p.can_explain]
    assert {'pets', 'reviews', 'adult', 'nfl', 'ml', 'camvid'} <= set(explaining)
    for name in explaining:
        op = doc['paths'][f'/api/v1/models/{name}/explain']['post']
        ref = op['responses']['200']['content']['application/json']['schema']['$ref'].split('/')[-1]
        assert {'summary', 'method', 'tokens', 'rows', 'picture_png'} <= set(doc['components']['schemas'][ref]['properties'])
        r = _send(client, name)
        assert r.status_code == 200, (name, r.text)
        e = r.json()
        assert e['model'] == name and e['summary'] and e['method']
        assert e['tokens'] or e['rows'] or e.get('heatmap'), name       # something beyond the sentence
        if e['picture_png']: assert Image.open(io.BytesIO(base64.b64decode(e['picture_png']))).size[0] > 100
        assert client.get(f'/api/v1/models/{name}').json()['explain_url'] == f'/api/v1/models/{name}/explain'


def test_the_target_is_one_of_the_classes(client):
    r = _send(client, 'pets', '?target=dog')
    assert r.status_code == 200 and r.json()['target'] == 'dog'
    bad = _send(client, 'pets', '?target=zebra')
    assert bad.status_code == 422 and 'cat' in bad.json()['error'] and 'dog' in bad.json()['error']
    assert 'target' not in str(client.get('/openapi.json').json()['paths']['/api/v1/models/ml/explain']['post'].get('parameters'))  # a rating has no classes


def test_format_png_answers_the_picture_and_json_only_models_say_so(client):
    r = _send(client, 'adult', '?format=png')
    assert r.status_code == 200 and r.headers['content-type'] == 'image/png' and Image.open(io.BytesIO(r.content)).size[0] > 100
    r = _send(client, 'reviews', '?format=png')
    assert r.status_code == 422 and 'JSON only' in r.json()['error']


def test_bad_input_is_a_clear_4xx(client):
    r = client.post('/api/v1/models/pets/explain', files={'file': ('x.jpg', b'not an image', 'image/jpeg')})
    assert r.status_code == 415 and 'not an image' in r.json()['error']
    r = client.post('/api/v1/models/reviews/explain', json={'texts': ['x' * 10**6]})
    assert r.status_code == 413 and 'error' in r.json()
    row = dict(client.hub.models['adult'].input.example(False)); row.pop(next(iter(row)))
    r = client.post('/api/v1/models/adult/explain', json=row)
    assert r.status_code == 422 and 'error' in r.json()
    r = client.post('/api/v1/models/ml/explain', json={'user': 'nobody-here', 'item': '1097'})   # a user it does not know
    assert r.status_code == 200 and "user 'nobody-here' not in the ratings" in r.json()['summary'] and r.json()['rows'] == []
    r = client.post('/api/v1/models/ml/explain?format=png', json={'user': 'nobody-here', 'item': '1097'})
    assert r.status_code == 200 and r.headers['content-type'] == 'image/png'   # the fallback's parts, drawn
