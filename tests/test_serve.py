"""`fastxfer serve`: the REST API through the real app (in-process) and a real server on a loopback port.

The NFL model is the real one (`fastxfer serve --demo` trains it from the embedded 2023 page). Image and text
models come from the real vision and text families in the slow tests (`test_real_*`); the fast tests also use two
small stand-in predictors defined here, because they can be told to crash or to block, which a real model cannot.
"""
import asyncio, io, json, os, shutil, socket, sqlite3, struct, subprocess, sys, threading, time, zipfile, zlib
from pathlib import Path

import httpx, pytest
from PIL import Image
from fastapi.testclient import TestClient

from conftest import FASTXFER, run_cli, run_json, build_real_models, PLUGIN_ENV, request_schema
from fastxfer.model_folder import ModelFolder, Predictor, model_writer, probs_dict
from fastxfer.serve import Limits, create_app, postman_collection, POSTMAN_SCHEMA


# ---------------------------------------------------------------- stand-in predictors for the fast tests
class ImageProbe(Predictor):
    "red vs blue from the mean colour; 13x13 images crash it; `gate` (an Event) can hold it inside predict."
    input_type = 'image'
    def __init__(self, folder, gate=None):
        super().__init__(folder); self.gate, self.active, self.overlap, self.calls = gate, 0, False, []
        self.lock, self.entered = threading.Lock(), threading.Event()
    def predict(self, items, **kw):
        with self.lock: self.active += 1; self.overlap |= self.active > 1; self.calls.append(len(items))
        try:
            self.entered.set()
            if self.gate is not None: assert self.gate.wait(30), 'gate never opened'
            out = []
            for im in items:
                assert isinstance(im, Image.Image) and im.mode == 'RGB'
                if im.size == (13, 13): raise ValueError('13x13 images crash this model')
                r, g, b = im.resize((1, 1)).getpixel((0, 0)); p = r/(r + b + 1e-9)
                out.append(dict(label='red' if p >= .5 else 'blue', probs=probs_dict(self.classes, [1 - p, p])))
            return out
        finally:
            with self.lock: self.active -= 1

class TextProbe(Predictor):
    "'pos' when a text has more 'good' than 'bad'."
    input_type = 'text'
    def predict(self, items, **kw):
        out = []
        for t in items:
            assert isinstance(t, str)
            p = 0.9 if t.lower().count('good') > t.lower().count('bad') else 0.1
            out.append(dict(label='pos' if p > .5 else 'neg', probs=probs_dict(self.classes, [1 - p, p])))
        return out
    def examples(self): return ['good good film', 'bad plot']

def _folder(root, name, classes, kind='probe'):
    with model_writer(Path(root)/name, kind=kind, predictor='fastxfer.model_folder.ConstantPredictor') as w:
        w.card.update(classes=classes, prior=[.5, .5], metrics={'accuracy': 1.0}, arch='stand-in')
    return ModelFolder(Path(root)/name)

def png(w=16, h=16, color=(220, 20, 20), fmt='PNG'):
    b = io.BytesIO(); Image.new('RGB', (w, h), color).save(b, format=fmt); return b.getvalue()

def noise_png(w=64, h=64):
    b = io.BytesIO(); Image.frombytes('RGB', (w, h), os.urandom(w*h*3)).save(b, format='PNG'); return b.getvalue()

RED, BLUE = (230, 10, 10), (10, 10, 230)

# ---------------------------------------------------------------- a real server on a loopback port
def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_up(url, proc, timeout=240):
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None: raise AssertionError(f'server exited {proc.returncode}:\n{proc.stderr.read()[-3000:]}')
        try:
            if httpx.get(url + '/api/v1/health', timeout=2).status_code == 200: return
        except httpx.HTTPError: pass
        time.sleep(0.5)
    raise AssertionError(f'server did not come up in {timeout}s')

class Server:
    "`fastxfer serve ...` in a subprocess on 127.0.0.1:<free port>; stopped by its pid."
    def __init__(self, *args, env=None, cwd=None):
        self.port = free_port(); self.url = f'http://127.0.0.1:{self.port}'
        self.log = open(Path(cwd or '.')/f'serve-{self.port}.log', 'w+')
        self.proc = subprocess.Popen([str(FASTXFER), 'serve', '--host', '127.0.0.1', '--port', str(self.port), *map(str, args)],
                                     stdout=self.log, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, cwd=cwd)
        wait_up(self.url, self.proc)
    def stop(self):
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait(10)
        return self.proc.stderr.read()

@pytest.fixture(scope='session')
def demo_server(tmp_path_factory):
    "`fastxfer serve --demo` on an empty models folder: trains the real NFL demo model, then serves it."
    d = tmp_path_factory.mktemp('serve_demo')
    env = {'FASTXFER_DATA_DIR': str(d/'data')}
    s = Server('--demo', '--models', d/'models', env=env, cwd=d)
    s.dir, s.models, s.db = d, d/'models', d/'data'/'NFL.db'
    yield s
    s.stop()

@pytest.fixture(scope='module')
def app_and_probes(demo_server, tmp_path_factory):
    "The real app on the demo models folder (the real NFL model) plus the stand-ins, in-process."
    d = tmp_path_factory.mktemp('probes')
    img, txt = ImageProbe(_folder(d, 'colours', ['blue', 'red'])), TextProbe(_folder(d, 'reviews', ['neg', 'pos']))
    app = create_app(demo_server.models, predictors={'colours': img, 'reviews': txt}, ui=False,
                     limits=Limits(max_image_bytes=200_000, max_pixels=2_000_000, max_items=8, max_text_chars=500, max_body_bytes=3_000_000),
                     context={'db': demo_server.dir/'inproc.db'})
    return app, img, txt

@pytest.fixture(scope='module')
def client(app_and_probes):
    with TestClient(app_and_probes[0]) as c: yield c

VIPERS = dict(team='Atlanta Vipers', pf=465, pa=380, pd=85, sos=1.5)

# ---------------------------------------------------------------- listing
def test_health_and_models(client):
    h = client.get('/api/v1/health').json()
    assert h['status'] == 'ok' and h['models'] == 3 and h['failed'] == {}
    ms = {m['name']: m for m in client.get('/api/v1/models').json()['models']}
    assert set(ms) == {'nfl', 'colours', 'reviews'}
    assert ms['nfl']['kind'] == 'nfl' and ms['nfl']['input_type'] == 'tabular' and ms['nfl']['card']['features']
    assert ms['nfl']['classes'] == ms['nfl']['card']['classes'] and 'winning' in ms['nfl']['classes']
    assert ms['colours']['predict_url'] == '/api/v1/models/colours/predict' and ms['colours']['batch_url'].endswith('/predict/batch')
    assert ms['nfl']['effects'] == {'record': '/api/v1/models/nfl/record'} and ms['reviews']['effects'] == {}
    assert client.get('/api/v1/models/nfl').json()['card']['kind'] == 'nfl'

# ---------------------------------------------------------------- predictions
def test_predict_image_one_and_batch(client):
    r = client.post('/api/v1/predict/colours', files={'file': ('r.png', png(color=RED), 'image/png')})
    assert r.status_code == 200, r.text
    j = r.json(); assert j['label'] == 'red' and j['predictions'][0]['label'] == 'red' and set(j['probs']) == {'blue', 'red'}
    cols = [RED, BLUE, BLUE, RED, BLUE]
    r = client.post('/api/v1/predict/colours/batch',
                    files=[('files', (f'{i}.jpg', png(color=c, fmt='JPEG'), 'image/jpeg')) for i,c in enumerate(cols)])
    assert r.status_code == 200, r.text
    assert [p['label'] for p in r.json()['predictions']] == ['red' if c == RED else 'blue' for c in cols]
    assert r.json()['label'] is None   # several items: no top-level label

def test_predict_text(client):
    r = client.post('/api/v1/predict/reviews', json={'texts': ['good good good', 'bad, bad film']})
    assert r.status_code == 200, r.text
    assert [p['label'] for p in r.json()['predictions']] == ['pos', 'neg']
    r = client.post('/api/v1/predict/reviews/batch', json={'texts': ['good'] * 8})
    assert len(r.json()['predictions']) == 8

def test_predict_nfl_real_model(client, demo_server):
    r = client.post('/api/v1/predict/nfl', json=VIPERS)
    assert r.status_code == 200, r.text
    j = r.json(); assert j['label'] == 'winning' and j['probs']['winning'] > 0.5 and j['recorded'] is None
    assert abs(sum(j['probs'].values()) - 1) < 1e-6
    weak = dict(team='Weak', pf=250, pa=420, sos=0.0)   # pd left out: pf - pa
    r = client.post('/api/v1/predict/nfl/batch', json={'rows': [VIPERS, weak]})
    assert [p['label'] for p in r.json()['predictions']] == ['winning', 'not winning']

def test_nfl_record_true_writes_the_db(client, demo_server):
    db = demo_server.dir/'inproc.db'
    r = client.post('/api/v1/predict/nfl?record=true', json=dict(VIPERS, team='Recorded Rams'))
    assert r.status_code == 200, r.text
    assert r.json()['recorded']['rows'][0]['recorded'] is True
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT Tm, PF, prediction FROM stats WHERE is_hypothetical = 1 AND Tm = 'Recorded Rams'").fetchall()
    assert rows == [('Recorded Rams', 465.0, 'winning')]
    assert client.post('/api/v1/predict/nfl?record=false', json=dict(VIPERS, team='Not Recorded')).json()['recorded'] is None

# ---------------------------------------------------------------- bad input: 4xx with a JSON error
BAD = [
    ('unknown model', 'post', '/api/v1/predict/nope', dict(json={'texts': ['x']}), 404, 'unknown model'),
    ('unknown route', 'get', '/api/v1/nothing', {}, 404, 'Not Found'),
    ('not an image', 'post', '/api/v1/predict/colours', dict(files={'file': ('x.png', b'<html>hi</html>', 'image/png')}), 415, 'not an image'),
    ('empty upload', 'post', '/api/v1/predict/colours', dict(files={'file': ('x.png', b'', 'image/png')}), 400, 'empty'),
    ('truncated image', 'post', '/api/v1/predict/colours', dict(files={'file': ('x.png', noise_png()[:5000], 'image/png')}), 400, 'truncated'),
    ('too many bytes', 'post', '/api/v1/predict/colours', dict(files={'file': ('x.png', noise_png(300, 300), 'image/png')}), 413, 'limit is 200,000'),
    ('decompression bomb', 'post', '/api/v1/predict/colours', dict(files={'file': ('x.png', png(3000, 3000, (0, 0, 0)), 'image/png')}), 413, 'decompression bomb'),
    ('JSON to an image model', 'post', '/api/v1/predict/colours', dict(json={'texts': ['x']}), 415, 'multipart'),
    ('no file field', 'post', '/api/v1/predict/colours', dict(files={'other': ('x.png', png(), 'image/png')}), 422, "field 'file'"),
    ('two files to one-image endpoint', 'post', '/api/v1/predict/colours', dict(files=[('file', ('a.png', png(), 'image/png'))]*2), 422, '/batch'),
    ('too many images', 'post', '/api/v1/predict/colours/batch', dict(files=[('files', ('a.png', png(), 'image/png'))]*9), 413, 'limit is 8'),
    ('upload to a text model', 'post', '/api/v1/predict/reviews', dict(files={'file': ('a.png', png(), 'image/png')}), 415, 'JSON'),
    ('empty text list', 'post', '/api/v1/predict/reviews', dict(json={'texts': []}), 422, 'empty'),
    ('no texts key', 'post', '/api/v1/predict/reviews', dict(json={'text': 'good'}), 422, '"texts"'),
    ('blank text', 'post', '/api/v1/predict/reviews', dict(json={'texts': ['good', '   ']}), 422, 'texts[1] is empty'),
    ('non-string text', 'post', '/api/v1/predict/reviews', dict(json={'texts': [42]}), 422, 'not a string'),
    ('too-long text', 'post', '/api/v1/predict/reviews', dict(json={'texts': ['good ' * 200]}), 413, 'limit is 500'),
    ('too many texts', 'post', '/api/v1/predict/reviews/batch', dict(json={'texts': ['good'] * 9}), 413, 'limit is 8'),
    ('bad JSON', 'post', '/api/v1/predict/reviews', dict(content=b'{"texts": [', headers={'content-type': 'application/json'}), 400, 'not valid JSON'),
    ('NFL field missing', 'post', '/api/v1/predict/nfl', dict(json={'team': 'X', 'pf': 300, 'pd': 10}), 422, 'missing field(s) pa, sos'),
    ('NFL field not numeric', 'post', '/api/v1/predict/nfl', dict(json={'team': 'X', 'pf': 300, 'pa': 'many', 'sos': 1}), 422, "'pa' must be a finite number"),
    ('NFL field NaN', 'post', '/api/v1/predict/nfl', dict(content=b'{"pf": NaN, "pa": 1, "sos": 1}', headers={'content-type': 'application/json'}), 422, "'pf'"),
    ('NFL pd inconsistent (model says)', 'post', '/api/v1/predict/nfl', dict(json=dict(VIPERS, pd=3)), 422, 'PF - PA'),
    ('NFL rows empty', 'post', '/api/v1/predict/nfl/batch', dict(json={'rows': []}), 422, 'empty'),
    ('NFL batch row bad', 'post', '/api/v1/predict/nfl/batch', dict(json={'rows': [VIPERS, {'pf': 1}]}), 422, 'rows[1]'),
    ('record on a non-NFL model', 'post', '/api/v1/predict/reviews?record=true', dict(json={'texts': ['good']}), 422, 'has no side effect'),
    ('record without team', 'post', '/api/v1/predict/nfl?record=true', dict(json={'pf': 300, 'pa': 200, 'sos': 0}), 422, 'team'),
    ('record not a boolean', 'post', '/api/v1/predict/nfl?record=maybe', dict(json=VIPERS), 422, 'true or false'),
    ('body over the limit', 'post', '/api/v1/predict/colours/batch', dict(content=b'x' * 3_100_000, headers={'content-type': 'multipart/form-data; boundary=zz'}), 413, 'limit'),
]

@pytest.mark.parametrize('what,method,url,kw,status,msg', BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_json_error(client, what, method, url, kw, status, msg):
    r = getattr(client, method)(url, **kw)
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers['content-type'].startswith('application/json')
    assert set(r.json()) == {'error'} and msg in r.json()['error'], r.json()

def test_model_error_is_a_logged_500_and_the_server_carries_on(client, caplog):
    with caplog.at_level('ERROR', logger='fastxfer.serve'):
        r = client.post('/api/v1/predict/colours', files={'file': ('c.png', png(13, 13), 'image/png')})
    assert r.status_code == 500 and '13x13' in r.json()['error']
    assert any('colours failed' in rec.getMessage() and 'ValueError' in rec.getMessage() for rec in caplog.records)
    assert client.post('/api/v1/predict/colours', files={'file': ('r.png', png(color=RED), 'image/png')}).json()['label'] == 'red'

# ---------------------------------------------------------------- concurrency
def test_concurrent_requests_get_their_own_answers(tmp_path):
    img = ImageProbe(_folder(tmp_path, 'colours', ['blue', 'red']))
    app = create_app(tmp_path/'none', predictors={'colours': img}, ui=False)
    cols = [RED if i % 3 else BLUE for i in range(40)]
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://t') as c:
            rs = await asyncio.gather(*[c.post('/api/v1/predict/colours', files={'file': (f'{i}.png', png(color=col), 'image/png')})
                                        for i,col in enumerate(cols)])
        return [r.json()['label'] for r in rs]
    assert asyncio.run(go()) == ['red' if c == RED else 'blue' for c in cols]
    assert not img.overlap, 'a predictor was called from two threads at once'
    assert sum(img.calls) == 40 and len(img.calls) < 40, f'concurrent requests were not combined: {img.calls}'

def test_a_busy_model_does_not_block_the_server(tmp_path):
    gate = threading.Event()
    slow = ImageProbe(_folder(tmp_path, 'slow', ['blue', 'red']), gate=gate)
    app = create_app(tmp_path/'none', predictors={'slow': slow, 'reviews': TextProbe(_folder(tmp_path, 'reviews', ['neg', 'pos']))}, ui=False)
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://t') as c:
            busy = asyncio.create_task(c.post('/api/v1/predict/slow', files={'file': ('r.png', png(color=RED), 'image/png')}))
            while not slow.entered.is_set(): await asyncio.sleep(0.01)       # the slow model is now inside predict
            h = await c.get('/api/v1/health')                                   # answered while it is held
            t = await c.post('/api/v1/predict/reviews', json={'texts': ['good']})  # another model is not queued behind it
            assert not busy.done()
            gate.set()
            return h.status_code, t.json()['label'], (await busy).json()['label']
    assert asyncio.run(go()) == (200, 'pos', 'red')

# ---------------------------------------------------------------- OpenAPI and Postman
def test_openapi_is_complete(client):
    s = client.get('/openapi.json').json()
    assert {'/api/v1/health', '/api/v1/models', '/api/v1/models/{model}'} <= set(s['paths'])
    typed = {p for p in s['paths'] if p.startswith('/api/v1/models/') and p != '/api/v1/models/{model}'}
    assert typed == {f'/api/v1/models/{m}/{v}' for m in ('nfl', 'colours', 'reviews') for v in ('predict', 'predict/batch')} | \
                    {'/api/v1/models/nfl/record', '/api/v1/models/nfl/record/batch'}
    assert not any(p.startswith('/api/v1/predict/') for p in s['paths'])   # the older generic endpoints are aliases, hidden
    comps = s['components']['schemas']
    body = lambda path, ctype: request_schema(s, path, ctype)
    img = body('/api/v1/models/colours/predict', 'multipart/form-data')
    assert img['required'] == ['file'] and img['properties']['file']['contentMediaType'] == 'application/octet-stream'   # OpenAPI 3.1's file
    assert body('/api/v1/models/colours/predict/batch', 'multipart/form-data')['properties']['files']['maxItems'] == 8
    txt = body('/api/v1/models/reviews/predict', 'application/json')
    assert txt['properties']['texts']['maxItems'] == 8 and txt['additionalProperties'] is False
    row = body('/api/v1/models/nfl/predict', 'application/json')
    assert set(row['properties']) == {'team', 'pf', 'pa', 'sos'} and set(row['required']) == {'pf', 'pa', 'sos'}
    assert 'team' in body('/api/v1/models/nfl/record', 'application/json')['required']
    for path in typed:
        op = s['paths'][path]['post']
        resp = comps[op['responses']['200']['content']['application/json']['schema']['$ref'].split('/')[-1]]
        pred = comps[resp['properties']['predictions']['items']['$ref'].split('/')[-1]]
        model = path.split('/')[4]
        assert pred['properties']['label']['enum'] == [str(c) for c in client.get(f'/api/v1/models/{model}').json()['classes']]
        assert op['responses']['422']['content']['application/json']['schema']['$ref'].endswith('/ErrorResponse')
    assert {'ModelsResponse', 'HealthResponse', 'ErrorResponse'} <= set(comps)

def test_typed_operations_answer_like_the_aliases(client):
    r = client.post('/api/v1/models/nfl/predict', json={k: v for k, v in VIPERS.items() if k != 'pd'})
    assert r.status_code == 200, r.text
    assert r.json()['probs'] == client.post('/api/v1/predict/nfl', json=VIPERS).json()['probs']
    assert client.post('/api/v1/models/nfl/predict', json=VIPERS).status_code == 422        # pd is not in the typed schema
    r = client.post('/api/v1/models/reviews/predict/batch', json={'texts': ['good', 'bad']})
    assert [p['label'] for p in r.json()['predictions']] == ['pos', 'neg']
    r = client.post('/api/v1/models/colours/predict', files={'file': ('r.png', png(color=RED), 'image/png')})
    assert r.json()['label'] == 'red'
    assert client.post('/api/v1/models/colours/predict', files={'files': ('r.png', png(), 'image/png')}).status_code == 422

def test_typed_record_operation_writes_the_db_once(client, demo_server):
    db = demo_server.dir/'inproc.db'
    row = dict(team='Typed Texans', pf=465, pa=380, sos=1.5)
    r = client.post('/api/v1/models/nfl/record', json=row)
    assert r.status_code == 200, r.text
    assert r.json()['effects']['record']['rows'][0]['recorded'] is True and r.json()['label'] == 'winning'
    assert client.post('/api/v1/models/nfl/record', json={k: v for k, v in row.items() if k != 'team'}).status_code == 422
    with sqlite3.connect(db) as con:
        n = con.execute("SELECT COUNT(*) FROM stats WHERE is_hypothetical = 1 AND Tm = 'Typed Texans'").fetchone()[0]
    assert n == 1

def test_docs_page_is_offline(client):
    d = client.get('/docs')
    assert d.status_code == 200 and '/api/v1/models/nfl/predict' in d.text and '/api/v1/predict/{model}' in d.text
    assert '<script' not in d.text and 'https://' not in d.text

def test_postman_collection_from_the_cli(tmp_path, demo_server):
    out = tmp_path/'fx.postman_collection.json'
    r = run_json('api', 'postman', '--out', out, '--models', demo_server.models)
    assert r['out'] == str(out) and r['models'] == ['nfl']
    col = json.loads(out.read_text())
    assert col['info']['schema'] == POSTMAN_SCHEMA and col['variable'][0]['key'] == 'baseUrl'
    spec = httpx.get(demo_server.url + '/openapi.json').json()
    ops = {(p, m.upper()) for p, o in spec['paths'].items() for m in o}
    got = {('/' + '/'.join('{%s}' % s[1:] if s.startswith(':') else s for s in i['request']['url']['path']), i['request']['method']) for i in col['item']}
    assert got == ops
    nfl = [i for i in col['item'] if i['request']['url']['raw'] == '{{baseUrl}}/api/v1/models/nfl/predict'][0]
    assert json.loads(nfl['request']['body']['raw']) == dict(team='Atlanta Vipers', pf=465, pa=380, sos=1.5)
    info = [i for i in col['item'] if i['request']['url']['raw'].endswith(':model')][0]
    assert info['request']['url']['variable'][0]['value'] == 'nfl'

# ---------------------------------------------------------------- a real server on a loopback port
def test_loopback_server_endpoints(demo_server):
    u = demo_server.url
    assert httpx.get(u + '/api/v1/health').json()['models'] == 1
    [m] = httpx.get(u + '/api/v1/models').json()['models']
    assert m['name'] == 'nfl' and m['card']['classes'] == ['not winning', 'winning']
    assert httpx.get(u + '/api/v1/models/nfl').json()['card'] == m['card']
    assert httpx.get(u + '/api/v1/models/nope').status_code == 404
    assert '<script' not in httpx.get(u + '/docs').text and httpx.get(u + '/openapi.json').json()['info']['title'] == 'fastxfer'
    r = httpx.post(u + '/api/v1/predict/nfl', json=VIPERS)
    assert r.status_code == 200 and r.json()['label'] == 'winning'
    r = httpx.post(u + '/api/v1/predict/nfl/batch', json={'rows': [VIPERS, dict(pf=200, pa=400, sos=-1)]})
    assert [p['label'] for p in r.json()['predictions']] == ['winning', 'not winning']
    page = httpx.get(u + '/')
    assert page.status_code == 200 and 'gradio' in page.text.lower() and 'googleapis' not in page.text

def test_loopback_record_true_writes_nfl_db(demo_server):
    r = httpx.post(demo_server.url + '/api/v1/predict/nfl?record=true', json=dict(VIPERS, team='Loopback Lions'))
    assert r.status_code == 200, r.text
    with sqlite3.connect(demo_server.db) as con:
        n = con.execute("SELECT COUNT(*) FROM stats WHERE Tm = 'Loopback Lions' AND is_hypothetical = 1").fetchone()[0]
    assert n == 1

def test_two_server_processes_record_every_row_once(demo_server, tmp_path):
    "`fastxfer serve --processes 2`: both processes answer, and concurrent recording requests write every row exactly once."
    from concurrent.futures import ThreadPoolExecutor
    s = Server('--models', demo_server.models, '--processes', '2', '--no-ui', env={'FASTXFER_DATA_DIR': str(tmp_path/'data')}, cwd=tmp_path)
    try:
        health, t0 = [], time.time()
        while len({h['process'] for h in health}) < 2 and time.time() - t0 < 120:   # the second worker may still be loading
            with ThreadPoolExecutor(16) as ex:
                health += list(ex.map(lambda _: httpx.get(s.url + '/api/v1/health', timeout=30).json(), range(64)))
            time.sleep(0.5)
        assert len({h['process'] for h in health}) == 2 and all(h['models'] == 1 for h in health), 'two processes, each with the model'
        teams = [f'Parallel Team {i}' for i in range(40)]
        def record(team): return httpx.post(s.url + '/api/v1/models/nfl/record', json=dict(team=team, pf=400, pa=380, sos=0.5), timeout=60)
        with ThreadPoolExecutor(16) as ex: rs = list(ex.map(record, teams))
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200][:3]
        with sqlite3.connect(tmp_path/'data'/'NFL.db') as con:
            got = dict(con.execute('SELECT Tm, COUNT(*) FROM stats WHERE is_hypothetical = 1 GROUP BY Tm').fetchall())
        assert got == {t: 1 for t in teams}
    finally: s.stop()

@pytest.mark.parametrize('url,kw,status', [
    ('/api/v1/predict/nope', dict(json=VIPERS), 404),
    ('/api/v1/predict/nfl', dict(json={'pf': 'x', 'pa': 1, 'sos': 1}), 422),
    ('/api/v1/predict/nfl', dict(json={'pf': 1}), 422),
    ('/api/v1/predict/nfl', dict(files={'file': ('a.png', png(), 'image/png')}), 415),
    ('/api/v1/predict/nfl', dict(content=b'nope', headers={'content-type': 'application/json'}), 400),
    ('/api/v1/predict/nfl', dict(content=b'[' * 100_000, headers={'content-type': 'application/json'}), 400),
    ('/api/v1/models/nfl/predict', dict(content=b'{"team": ' + b'[' * 5_000 + b']' * 5_000 + b'}',
                                        headers={'content-type': 'application/json'}), 400),
])
def test_loopback_bad_input(demo_server, url, kw, status):
    r = httpx.post(demo_server.url + url, **kw)
    assert r.status_code == status and 'error' in r.json(), r.text

def test_loopback_body_limit_refuses_before_reading(demo_server):
    # 200 MB announced, nothing sent: the server answers 413 from the Content-Length alone
    with socket.create_connection(('127.0.0.1', demo_server.port), timeout=10) as s:
        s.sendall(b'POST /api/v1/predict/nfl/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                  b'Content-Length: 200000000\r\n\r\n')
        reply = b''
        while b'\r\n\r\n' not in reply or not reply.rstrip().endswith(b'}'):  # headers and the JSON body may come in separate packets
            chunk = s.recv(4096)
            if not chunk: break
            reply += chunk
    reply = reply.decode()
    assert reply.startswith('HTTP/1.1 413') and 'limit' in reply, reply

def test_serve_cli_help(capsys):
    from fastxfer.cli import main
    for argv, want in [(['serve', '--help'], ['--models', '--demo', '--host', '--port', 'trusted']), (['api', 'postman', '--help'], ['--out', '--models'])]:
        with pytest.raises(SystemExit) as e: main(argv)
        out = capsys.readouterr().out
        assert e.value.code == 0 and all(w in out for w in want), out

def test_serve_missing_models_folder_is_a_user_error(tmp_path):
    r = run_cli('serve', '--models', tmp_path/'missing', '--port', str(free_port()))
    assert r.returncode == 2 and 'does not exist' in r.stderr


# ---------------------------------------------------------------- real vision and text models (slow: they are trained here)
@pytest.fixture(scope='module')
def real_server(real_models):
    d = real_models.parent
    s = Server('--models', real_models, '--no-ui', cwd=d, env={'FASTXFER_DATA_DIR': str(d/'data'), **PLUGIN_ENV})
    yield s
    s.stop()

@pytest.mark.slow
def test_real_models_over_loopback(real_server):
    from conftest import shared_or_skip
    pets, u = shared_or_skip('pets/images'), real_server.url
    ms = {m['name']: m for m in httpx.get(u + '/api/v1/models').json()['models']}
    assert {n: m['input_type'] for n, m in ms.items()} == {'pets': 'image', 'reviews': 'text', 'nfl': 'tabular', 'toy': 'tabular', 'adult': 'tabular', 'ml': 'tabular'}
    img = pets/'Abyssinian_1.jpg'
    if shutil.which('curl'):   # the command in docs/serving.md
        out = subprocess.run(['curl', '-s', '-F', f'file=@{img}', u + '/api/v1/predict/pets'], capture_output=True, text=True, timeout=60)
        assert json.loads(out.stdout)['label'] in ('cat', 'dog')
    one = httpx.post(u + '/api/v1/predict/pets', files={'file': (img.name, img.read_bytes(), 'image/jpeg')}, timeout=60).json()
    names = sorted(p.name for p in pets.iterdir())[:32]
    batch = httpx.post(u + '/api/v1/predict/pets/batch', files=[('files', (n, (pets/n).read_bytes(), 'image/jpeg')) for n in names], timeout=120).json()
    assert len(batch['predictions']) == 32 and batch['predictions'][names.index(img.name)]['probs'] == pytest.approx(one['probs'], abs=1e-4)
    r = httpx.post(u + '/api/v1/predict/reviews/batch', json={'texts': ['What a wonderful film, I loved it.', 'Dull, boring, a waste of time.']}, timeout=60)
    assert r.status_code == 200 and all(p['label'] in ('positive', 'negative') for p in r.json()['predictions'])
    for kw, status in [(dict(files={'file': ('a.jpg', b'GIF89a not really', 'image/jpeg')}), 415),
                       (dict(files={'file': ('a.jpg', img.read_bytes()[:3000], 'image/jpeg')}), 400),
                       (dict(files={'file': ('b.png', png(9000, 9000, (0, 0, 0)), 'image/png')}), 413),
                       (dict(json={'texts': ['x']}), 415)]:
        r = httpx.post(u + '/api/v1/predict/pets', timeout=60, **kw)
        assert r.status_code == status and 'error' in r.json(), r.text
    for body, status in [({'texts': []}, 422), ({'texts': ['x' * 20_001]}, 413)]:
        assert httpx.post(u + '/api/v1/predict/reviews', json=body, timeout=60).status_code == status
    assert httpx.get(u + '/api/v1/health').json()['status'] == 'ok'


# ---------------------------------------------------------------- the Gradio UI, without a browser (see test_browser.py for one)
def test_ui_is_mounted_with_a_tab_per_kind(tmp_path, demo_server):
    img, txt = ImageProbe(_folder(tmp_path, 'colours', ['blue', 'red'])), TextProbe(_folder(tmp_path, 'reviews', ['neg', 'pos']))
    img2 = ImageProbe(_folder(tmp_path, 'colours2', ['blue', 'red']))
    app = create_app(demo_server.models, predictors={'colours': img, 'colours2': img2, 'reviews': txt})
    with TestClient(app) as c:
        page = c.get('/')
        assert page.status_code == 200 and 'googleapis' not in page.text and 'fonts.gstatic' not in page.text
        cfg = c.get('/config').json()
        comps = cfg['components']
        tabs = [x['props'].get('label') for x in comps if x.get('type') in ('tabitem', 'tab')]
        assert {'Images', 'Text', 'NFL', 'colours', 'colours2'} <= set(tabs), tabs   # two image models: a sub-tab each
        ids = {x['props'].get('elem_id') for x in comps}
        assert {'in-colours', 'out-colours', 'in-colours2', 'in-reviews', 'in-nfl-team', 'in-nfl-pf', 'in-nfl-sos', 'head-nfl'} <= ids
        md = ' '.join(str(x['props'].get('value')) for x in comps if x.get('type') == 'markdown')
        assert 'accuracy' in md and 'not winning, winning' in md   # the cards, with labels read from the models
        assert c.get('/api/v1/health').json()['models'] == 4    # the API keeps priority over the UI mounted at /


def test_a_broken_model_folder_is_reported_not_fatal(tmp_path):
    _folder(tmp_path, 'ok', ['no', 'yes'])
    (tmp_path/'broken').mkdir()
    (tmp_path/'broken'/'card.json').write_text(json.dumps({'kind': 'vision', 'predictor': 'fastxfer.nowhere.Nothing'}))
    (tmp_path/'evil').mkdir()
    (tmp_path/'evil'/'card.json').write_text(json.dumps({'kind': 'x', 'predictor': 'os.system'}))
    with TestClient(create_app(tmp_path, ui=False)) as c:
        h = c.get('/api/v1/health').json()
        assert h['models'] == 1 and set(h['failed']) == {'broken', 'evil'} and 'not part of fastxfer' in h['failed']['evil']
        r = c.post('/api/v1/predict/ok', json={'pf': 1, 'pa': 2, 'pd': -1, 'sos': 0})   # ConstantPredictor: tabular
        assert r.status_code == 200 and r.json()['label'] in ('no', 'yes')


# ---------------------------------------------------------------- hostile JSON (#32)
def _deep(n): return b'{"texts": ' + b'[' * n + b'"good"' + b']' * n + b'}'

@pytest.mark.parametrize('url', ['/api/v1/models/reviews/predict', '/api/v1/predict/reviews', '/api/v1/models/nfl/predict'])
@pytest.mark.parametrize('depth', [5_000, 100_000])
def test_deeply_nested_json_is_a_400_not_a_500(client, url, depth):
    r = client.post(url, content=_deep(depth), headers={'content-type': 'application/json'})
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert set(r.json()) == {'error'} and 'nested' in r.json()['error'], r.json()
    assert client.get('/api/v1/health').json()['status'] == 'ok'

def test_nesting_inside_strings_and_moderate_depth_still_reach_the_model(client):
    r = client.post('/api/v1/models/reviews/predict', json={'texts': ['[[[[' * 50 + ' good']})
    assert r.status_code == 200, r.text
    r = client.post('/api/v1/models/reviews/predict', content=_deep(10), headers={'content-type': 'application/json'})
    assert r.status_code == 422 and 'error' in r.json()   # too deep for the schema, but answered by validation

def test_a_chunked_json_body_over_the_limit_is_a_413(client):
    def chunks():
        for _ in range(40): yield b'{"texts": ["' + b'g' * 100_000 + b'"]}'
    r = client.post('/api/v1/models/reviews/predict', content=chunks(), headers={'content-type': 'application/json'})
    assert r.status_code == 413 and 'limit' in r.json()['error'], (r.status_code, r.text[:200])


# ---------------------------------------------------------------- the hostile-request corpus (#32)
JSON_CT = {'content-type': 'application/json'}

def bomb_png(w=100_000, h=100_000):
    "A real 1x1 PNG whose header claims w x h pixels (10 billion: a decompression bomb if decoded)."
    raw = png(1, 1)
    ihdr = b'IHDR' + struct.pack('>II', w, h) + raw[24:29]
    return raw[:12] + ihdr + struct.pack('>I', zlib.crc32(ihdr)) + raw[33:]

def zip_bomb():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as z: z.writestr('zeros.bin', b'\0' * 20_000_000)
    return buf.getvalue()

HOSTILE = [   # (what, url, request, status or None for any 4xx, words the error must hold)
    ('deep nesting', '/api/v1/models/reviews/predict', dict(content=_deep(100_000), headers=JSON_CT), 400, 'nested'),
    ('deep nesting, old alias', '/api/v1/predict/nfl', dict(content=b'[' * 100_000, headers=JSON_CT), 400, 'nested'),
    ('a million-digit number', '/api/v1/models/nfl/predict',
     dict(content=b'{"team": "X", "pf": ' + b'9' * 1_000_000 + b', "pa": 1, "sos": 1}', headers=JSON_CT), 400, 'number'),
    ('NaN literal', '/api/v1/models/nfl/predict', dict(content=b'{"team": "X", "pf": NaN, "pa": 1, "sos": 1}', headers=JSON_CT), None, ''),
    ('Infinity literal', '/api/v1/models/nfl/predict', dict(content=b'{"team": "X", "pf": 1, "pa": -Infinity, "sos": 1}', headers=JSON_CT), None, ''),
    ('invalid UTF-8', '/api/v1/models/reviews/predict', dict(content=b'{"texts": ["\xff\xfe good"]}', headers=JSON_CT), 400, 'UTF-8'),
    ('duplicate keys', '/api/v1/models/reviews/predict', dict(content=b'{"texts": ["good"], "texts": ["bad"]}', headers=JSON_CT), 400, 'twice'),
    ('10,000 multipart parts', '/api/v1/models/colours/predict/batch',
     dict(files=[('files', (f'{i}.png', b'x', 'image/png')) for i in range(10_000)]), None, ''),
    ('truncated multipart', '/api/v1/models/colours/predict',
     dict(content=b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG',
          headers={'content-type': 'multipart/form-data; boundary=zz'}), None, ''),
    ('PNG bomb', '/api/v1/models/colours/predict', dict(files={'file': ('bomb.png', bomb_png(), 'image/png')}), None, 'pixels'),
    ('zip bomb as an image', '/api/v1/models/colours/predict', dict(files={'file': ('bomb.png', zip_bomb(), 'image/png')}), None, ''),
    ('wrong content type', '/api/v1/models/reviews/predict', dict(content=b'texts=good', headers={'content-type': 'text/plain'}), 415, 'JSON'),
    ('JSON to an image model', '/api/v1/models/colours/predict', dict(json={'file': 'x'}), 415, 'multipart'),
]

@pytest.mark.parametrize('what,url,kw,status,words', HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_request_is_a_4xx_and_the_server_stays_healthy(client, what, url, kw, status, words):
    r = client.post(url, **kw)
    assert (r.status_code == status) if status else (400 <= r.status_code < 500), (r.status_code, r.text[:300])
    assert r.headers['content-type'].startswith('application/json') and set(r.json()) == {'error'}, r.text[:300]
    assert words in r.json()['error'], r.json()
    assert client.get('/api/v1/health').json()['status'] == 'ok'
    assert client.post('/api/v1/models/reviews/predict', json={'texts': ['good film']}).status_code == 200

def test_a_get_with_a_json_content_type_and_no_body_still_answers(client):
    assert client.get('/api/v1/health', headers=JSON_CT).status_code == 200

def test_a_slow_body_is_dropped_and_other_clients_are_served(tmp_path):
    "A client sending its body a byte at a time gets 408 after `Limits.body_seconds`; meanwhile others get answers."
    import threading, uvicorn
    (tmp_path/'models').mkdir()
    app = create_app(tmp_path/'models', predictors={'reviews': TextProbe(_folder(tmp_path, 'reviews', ['neg', 'pos']))},
                     ui=False, limits=Limits(body_seconds=2))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning'))
    threading.Thread(target=server.run, daemon=True).start()
    base = f'http://127.0.0.1:{port}'
    for _ in range(100):
        if server.started: break
        time.sleep(0.1)
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=15) as s:
            s.sendall(b'POST /api/v1/models/reviews/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                      b'Content-Length: 100\r\n\r\n{')
            t0 = time.monotonic()
            for _ in range(3):   # meanwhile, an ordinary request is answered at once
                s.sendall(b' ')
                r = httpx.post(base + '/api/v1/models/reviews/predict', json={'texts': ['good']}, timeout=5)
                assert r.status_code == 200, r.text
                time.sleep(0.5)
            reply = s.recv(4096).decode()
            waited = time.monotonic() - t0
        assert reply.startswith('HTTP/1.1 408') and 'did not arrive within 2 s' in reply, reply
        assert waited < 10, waited
    finally: server.should_exit = True
