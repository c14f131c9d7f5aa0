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

def wait_up(url, proc, timeout=240, log=None):
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            raise AssertionError(f'server exited {proc.returncode}:\n{(log.read_text() if log else proc.stderr.read())[-3000:]}')
        try:
            if httpx.get(url + '/api/v1/health', timeout=2).status_code == 200: return
        except httpx.HTTPError: pass
        time.sleep(0.5)
    raise AssertionError(f'server did not come up in {timeout}s')

class Server:
    "`fastxfer serve ...` in a subprocess on 127.0.0.1:<free port>, its output in `serve-<port>.log`; stopped by its pid."
    def __init__(self, *args, env=None, cwd=None):
        self.port = free_port(); self.url = f'http://127.0.0.1:{self.port}'
        self.log_path = Path(cwd or '.')/f'serve-{self.port}.log'
        self.log = open(self.log_path, 'w+')   # a file, not a pipe: a server that logs a lot (a fuzzer's requests) never blocks on it
        self.proc = subprocess.Popen([str(FASTXFER), 'serve', '--host', '127.0.0.1', '--port', str(self.port), *map(str, args)],
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}, cwd=cwd)
        wait_up(self.url, self.proc, log=self.log_path)
    def stop(self) -> str:
        "Stop the server; returns what it wrote."
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait(10)
        self.log.close()
        return self.log_path.read_text(errors='replace')

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
    assert '/api/v1/models/{model}/drift' in s['paths']
    assert {p for p in s['paths'] if p.endswith('/explain')} == {'/api/v1/models/nfl/explain'}   # the stand-ins do not explain themselves
    typed = {p for p in s['paths'] if p.startswith('/api/v1/models/') and p not in ('/api/v1/models/{model}', '/api/v1/models/{model}/drift')
             and not p.endswith('/explain')}
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
        label = pred['properties']['label']   # an enum, or with prediction sets (a label may abstain) an enum or null
        enum = label.get('enum') or next(a['enum'] for a in label['anyOf'] if 'enum' in a)
        assert enum == [str(c) for c in client.get(f'/api/v1/models/{model}').json()['classes']]
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
    (tmp_path/'keys.txt').write_text(KEY + '\n')   # the keys reach every process (each reads the file itself)
    s = Server('--models', demo_server.models, '--processes', '2', '--no-ui', '--api-key-file', tmp_path/'keys.txt',
               env={'FASTXFER_DATA_DIR': str(tmp_path/'data')}, cwd=tmp_path)
    try:
        health, t0 = [], time.time()
        while len({h['process'] for h in health}) < 2 and time.time() - t0 < 120:   # the second worker may still be loading
            with ThreadPoolExecutor(16) as ex:
                health += list(ex.map(lambda _: httpx.get(s.url + '/api/v1/health', timeout=30).json(), range(64)))
            time.sleep(0.5)
        assert len({h['process'] for h in health}) == 2 and all(h['models'] == 1 for h in health), ('two processes, each with the model', [h for h in health if h['models'] != 1][:2])
        teams = [f'Parallel Team {i}' for i in range(40)]
        def record(team, headers=AUTH): return httpx.post(s.url + '/api/v1/models/nfl/record', json=dict(team=team, pf=400, pa=380, sos=0.5), headers=headers, timeout=60)
        with ThreadPoolExecutor(16) as ex: refused = list(ex.map(lambda t: record(t, {}), ['No Key'] * 16))
        assert all(r.status_code == 401 for r in refused), [r.status_code for r in refused]
        with ThreadPoolExecutor(16) as ex: rs = list(ex.map(record, teams))
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200][:3]
        with sqlite3.connect(tmp_path/'data'/'NFL.db') as con:
            got = dict(con.execute('SELECT Tm, COUNT(*) FROM stats WHERE is_hypothetical = 1 GROUP BY Tm').fetchall())
        assert got == {t: 1 for t in teams}
        for _ in range(4):   # whichever process answers the scrape, it counts both (prometheus-client's multiprocess mode)
            m = scrape(s.url)
            assert metric(m, 'fastxfer_requests_total', model='nfl', operation='record', status='200') == 40
            assert metric(m, 'fastxfer_requests_total', model='nfl', operation='record', status='401') == 16
            assert metric(m, 'fastxfer_request_items_sum', model='nfl', operation='record') == 40
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
    for argv, want in [(['serve', '--help'], ['--models', '--demo', '--host', '--port', 'upgrade', 'drift']), (['api', 'postman', '--help'], ['--out', '--models'])]:
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
    (tmp_path/'cut'/'card.json').parent.mkdir(); (tmp_path/'cut'/'card.json').write_text('{"kind": "vision", "pred')   # a copy cut short
    with TestClient(create_app(tmp_path, ui=False)) as c:
        h = c.get('/api/v1/health').json()
        assert h['models'] == 1 and set(h['failed']) == {'broken', 'evil', 'cut'} and 'not part of fastxfer' in h['failed']['evil']
        assert 'card.json is not valid JSON' in h['failed']['cut']
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


# ---------------------------------------------------------------- API keys, CORS and /metrics (#32)
KEY, KEY2 = 'test-key-4f9c2b7e1d', 'second-key-8a3e5c0f'
AUTH, WRONG = {'Authorization': f'Bearer {KEY}'}, {'Authorization': 'Bearer not-the-key'}
ROW = dict(pf=465, pa=380, sos=1.5)

def recorded(db, team) -> int:
    if not Path(db).exists(): return 0
    with sqlite3.connect(db) as con:
        return con.execute('SELECT COUNT(*) FROM stats WHERE is_hypothetical = 1 AND Tm = ?', (team,)).fetchone()[0]

def scrape(url, **kw) -> dict:
    "The server's /metrics, parsed: {(metric sample name, sorted labels): value}."
    from prometheus_client.parser import text_string_to_metric_families
    r = httpx.get(url + '/metrics', timeout=30, **kw)
    assert r.status_code == 200 and r.headers['content-type'].startswith('text/plain'), (r.status_code, r.text[:300])
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(r.text) for s in f.samples}

def metric(m:dict, name:str, **labels) -> float:
    "The sum of the samples `name` whose labels include `labels` (0 when there is none)."
    return sum(v for (n, ls), v in m.items() if n == name and labels.items() <= dict(ls).items())

@pytest.fixture(scope='module')
def keyed_server(demo_server, tmp_path_factory):
    "`fastxfer serve --api-key-file FILE` (the default --protect writes) on the real NFL model."
    d = tmp_path_factory.mktemp('keyed')
    (d/'keys.txt').write_text(f'# the keys of this test server\n\n{KEY}\n{KEY2}\n')
    s = Server('--models', demo_server.models, '--api-key-file', d/'keys.txt', '--no-ui', env={'FASTXFER_DATA_DIR': str(d/'data')}, cwd=d)
    s.db = d/'data'/'NFL.db'
    yield s
    log = s.stop()
    assert 'API keys: 2' in log and KEY not in log and KEY2 not in log, 'a key was logged'

def test_keys_protect_the_record_operation(keyed_server):
    u, db = keyed_server.url, keyed_server.db
    r = httpx.post(u + '/api/v1/models/nfl/record', json=dict(ROW, team='No Key Knights'))
    assert r.status_code == 401 and r.headers['www-authenticate'] == 'Bearer' and 'API key' in r.json()['error'], r.text
    r = httpx.post(u + '/api/v1/models/nfl/record', json=dict(ROW, team='Wrong Key Wolves'), headers=WRONG)
    assert r.status_code == 403 and set(r.json()) == {'error'} and 'not valid' in r.json()['error'], r.text
    r = httpx.post(u + '/api/v1/models/nfl/record', json=dict(ROW, team='Keyed Kings'), headers=AUTH)
    assert r.status_code == 200 and r.json()['effects']['record']['rows'][0]['recorded'] is True, r.text
    r = httpx.post(u + '/api/v1/models/nfl/record/batch', json={'rows': [dict(ROW, team='Second Key Seals')]}, headers={'X-API-Key': KEY2})
    assert r.status_code == 200, r.text
    assert [recorded(db, t) for t in ('No Key Knights', 'Wrong Key Wolves', 'Keyed Kings', 'Second Key Seals')] == [0, 0, 1, 1]

@pytest.mark.parametrize('query', ['record=true', 'record=1', 'record=yes', 'record=maybe', 'x=1&record=on', 'record=false&record=true'])
def test_an_effect_asked_through_the_old_alias_needs_the_key_too(keyed_server, query):
    team = f'Alias Team {query}'
    r = httpx.post(f'{keyed_server.url}/api/v1/predict/nfl?{query}', json=dict(ROW, team=team))
    assert r.status_code == 401 and 'error' in r.json(), (query, r.status_code, r.text)
    assert recorded(keyed_server.db, team) == 0

def test_under_protect_writes_predictions_health_and_metrics_stay_open(keyed_server):
    u = keyed_server.url
    assert httpx.get(u + '/api/v1/health').status_code == 200
    assert httpx.post(u + '/api/v1/models/nfl/predict', json=dict(ROW, team='Open')).json()['label'] == 'winning'
    assert httpx.post(u + '/api/v1/predict/nfl?record=false', json=dict(ROW, team='Open')).status_code == 200
    assert httpx.get(u + '/api/v1/models').status_code == 200 and httpx.get(u + '/metrics').status_code == 200

def test_the_openapi_document_types_the_keys(keyed_server):
    doc = httpx.get(keyed_server.url + '/openapi.json').json()
    assert doc['components']['securitySchemes']['bearerAuth'] == {**doc['components']['securitySchemes']['bearerAuth'], 'type': 'http', 'scheme': 'bearer'}
    ops = {(p, m): o for p, ms in doc['paths'].items() for m, o in ms.items()}
    secured = {k for k, o in ops.items() if o.get('security')}
    assert secured == {('/api/v1/models/nfl/record', 'post'), ('/api/v1/models/nfl/record/batch', 'post')}
    for k, o in ops.items():
        if k in secured:
            assert o['security'] == [{'bearerAuth': []}]
            for s in ('401', '403'): assert o['responses'][s]['content']['application/json']['schema']['$ref'].endswith('/ErrorResponse')
        else: assert '401' not in o['responses'] and '403' not in o['responses'], k
    m = ops[('/metrics', 'get')]['responses']['200']['content']
    assert list(m) == ['text/plain']

def test_cors_is_off_by_default(keyed_server):
    r = httpx.get(keyed_server.url + '/api/v1/health', headers={'Origin': 'http://elsewhere.example'})
    assert r.status_code == 200 and 'access-control-allow-origin' not in r.headers
    r = httpx.options(keyed_server.url + '/api/v1/models/nfl/predict', headers={'Origin': 'http://elsewhere.example', 'Access-Control-Request-Method': 'POST'})
    assert 'access-control-allow-origin' not in r.headers

def test_metrics_count_what_was_sent(keyed_server):
    "Valid and invalid requests to a real server: /metrics counts each, per model, operation and status, with latency and batch sizes."
    u = keyed_server.url
    before = scrape(u)
    sent = [('/api/v1/models/nfl/predict', dict(ROW, team='M'), {}, 200)] * 3 + \
           [('/api/v1/models/nfl/predict/batch', {'rows': [dict(ROW, team=f'M{i}') for i in range(5)]}, {}, 200)] * 2 + \
           [('/api/v1/models/nfl/predict', {'pf': 'many'}, {}, 422)] * 2 + \
           [('/api/v1/models/nfl/record', dict(ROW, team='Metric Mets'), {}, 401), ('/api/v1/models/nfl/record', dict(ROW, team='Metric Mets'), AUTH, 200),
            ('/api/v1/predict/nfl', dict(ROW, team='M'), {}, 200), ('/api/v1/models/nope/predict', ROW, {}, 404)]
    for path, body, headers, status in sent:
        r = httpx.post(u + path, json=body, headers=headers, timeout=60)
        assert r.status_code == status, (path, r.status_code, r.text)
    httpx.get(u + '/api/v1/health')   # not counted
    after = scrape(u)
    delta = lambda name, **kw: metric(after, name, **kw) - metric(before, name, **kw)
    assert delta('fastxfer_requests_total', model='nfl', operation='predict', status='200') == 4   # three typed, one old alias
    assert delta('fastxfer_requests_total', model='nfl', operation='predict/batch', status='200') == 2
    assert delta('fastxfer_requests_total', model='nfl', operation='predict', status='422') == 2
    assert delta('fastxfer_requests_total', model='nfl', operation='record', status='401') == 1
    assert delta('fastxfer_requests_total', model='nfl', operation='record', status='200') == 1
    assert delta('fastxfer_requests_total', model='', operation='other', status='404') == 1       # an unknown model: no label of its own
    assert delta('fastxfer_requests_total') == len(sent)
    assert delta('fastxfer_errors_total', model='nfl', operation='predict', status_class='4xx') == 2
    assert delta('fastxfer_errors_total', model='nfl', operation='record', status_class='4xx') == 1
    assert delta('fastxfer_errors_total', status_class='5xx') == 0
    assert delta('fastxfer_request_seconds_count', model='nfl', operation='predict') == 6
    assert delta('fastxfer_request_seconds_bucket', model='nfl', operation='predict', le='+Inf') == 6
    assert delta('fastxfer_request_seconds_sum', model='nfl', operation='predict') > 0
    assert delta('fastxfer_request_items_count', model='nfl', operation='predict/batch') == 2      # items: only requests that parsed
    assert delta('fastxfer_request_items_sum', model='nfl', operation='predict/batch') == 10
    assert delta('fastxfer_request_items_bucket', model='nfl', operation='predict/batch', le='4.0') == 0
    assert delta('fastxfer_request_items_bucket', model='nfl', operation='predict/batch', le='8.0') == 2
    assert delta('fastxfer_request_items_sum', model='nfl', operation='predict') == 4

@pytest.fixture(scope='module')
def all_server(demo_server, tmp_path_factory):
    "`fastxfer serve --protect all` with its keys in $FASTXFER_API_KEYS, and one CORS origin."
    d = tmp_path_factory.mktemp('protect_all')
    s = Server('--models', demo_server.models, '--protect', 'all', '--cors-origin', 'http://app.example:8080', '--no-ui',
               env={'FASTXFER_DATA_DIR': str(d/'data'), 'FASTXFER_API_KEYS': f'{KEY}, {KEY2}'}, cwd=d)
    yield s
    s.stop()

def test_protect_all_closes_predictions_and_metrics_but_not_health(all_server):
    u = all_server.url
    assert httpx.get(u + '/api/v1/health').status_code == 200
    for method, path, kw in [('post', '/api/v1/models/nfl/predict', dict(json=dict(ROW, team='A'))), ('post', '/api/v1/predict/nfl', dict(json=ROW)),
                             ('get', '/api/v1/models', {}), ('get', '/api/v1/models/nfl', {}), ('get', '/metrics', {}),
                             ('post', '/api/v1/models/nope/predict', dict(json=ROW))]:   # no key: not even which models exist
        r = getattr(httpx, method)(u + path, **kw)
        assert r.status_code == 401 and 'error' in r.json(), (path, r.status_code, r.text)
        assert getattr(httpx, method)(u + path, headers=WRONG, **kw).status_code == 403
    r = httpx.post(u + '/api/v1/models/nfl/predict', json=dict(ROW, team='A'), headers={'Authorization': f'Bearer {KEY2}'})
    assert r.status_code == 200 and r.json()['label'] == 'winning'
    assert httpx.get(u + '/api/v1/models', headers=AUTH).status_code == 200
    m = scrape(u, headers=AUTH)
    assert metric(m, 'fastxfer_requests_total', model='nfl', operation='predict', status='401') == 2   # the typed one and the alias
    doc = httpx.get(u + '/openapi.json').json()   # the document stays readable, and says what needs a key
    assert {p for p, ms in doc['paths'].items() for o in ms.values() if not o.get('security')} == {'/api/v1/health'}

def test_cors_origin_allows_that_origin_only(all_server):
    u, ok = all_server.url, 'http://app.example:8080'
    r = httpx.options(u + '/api/v1/models/nfl/predict', headers={'Origin': ok, 'Access-Control-Request-Method': 'POST',
                                                                 'Access-Control-Request-Headers': 'authorization,content-type'})
    assert r.status_code == 200 and r.headers['access-control-allow-origin'] == ok, (r.status_code, r.headers)
    assert 'authorization' in r.headers['access-control-allow-headers'].lower()
    r = httpx.post(u + '/api/v1/models/nfl/predict', json=dict(ROW, team='A'), headers={'Origin': ok, **AUTH})
    assert r.status_code == 200 and r.headers['access-control-allow-origin'] == ok
    r = httpx.post(u + '/api/v1/models/nfl/predict', json=dict(ROW, team='A'), headers={'Origin': 'http://evil.example', **AUTH})
    assert 'access-control-allow-origin' not in r.headers

def test_serve_refuses_a_public_host_without_keys(demo_server, tmp_path):
    "`--host 0.0.0.0` without keys: exit 2 saying why, nothing listening."
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != 'FASTXFER_API_KEYS'}
    r = subprocess.run([sys.executable, '-m', 'fastxfer', 'serve', '--models', str(demo_server.models), '--host', '0.0.0.0', '--port', str(port), '--no-ui'],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 2 and r.stderr.startswith('error:') and '--api-key-file' in r.stderr and '--insecure' in r.stderr, r.stderr[-2000:]
    with socket.socket() as s: assert s.connect_ex(('127.0.0.1', port)) != 0, 'the refused server listens'

@pytest.mark.parametrize('args,env,words', [
    (['--api-key-file', 'EMPTY'], {}, 'holds no key'),
    (['--api-key-file', 'MISSING'], {}, 'cannot read it'),
    ([], {'FASTXFER_API_KEYS': ' , '}, 'holds no key'),
    (['--protect', 'all'], {}, 'no API key is set'),
    (['--cors-origin', 'app.example/path'], {}, 'give an origin'),
    (['--api-key-file', 'SPACES'], {}, 'printable ASCII'),
])
def test_serve_key_and_cors_mistakes_are_user_errors(tmp_path, args, env, words):
    (tmp_path/'empty.txt').write_text('# no key here\n\n'); (tmp_path/'spaces.txt').write_text('a key with spaces\n')
    files = {'EMPTY': tmp_path/'empty.txt', 'MISSING': tmp_path/'missing.txt', 'SPACES': tmp_path/'spaces.txt'}
    r = run_cli('serve', '--models', tmp_path, '--port', str(free_port()), *[files.get(a, a) for a in args], env=env)
    assert r.returncode == 2 and 'error:' in r.stderr and words in r.stderr, r.stderr[-2000:]

def test_keys_in_process_and_the_postman_collection(demo_server, tmp_path):
    from fastxfer.serve import ApiKeys
    app = create_app(demo_server.models, ui=False, keys=ApiKeys([KEY]), context={'db': tmp_path/'k.db'})
    with TestClient(app) as c:
        assert c.post('/api/v1/models/nfl/record', json=dict(ROW, team='T')).status_code == 401
        assert c.post('/api/v1/models/nfl/record', json=dict(ROW, team='T'), headers={'authorization': f'bearer {KEY}'}).status_code == 200
        assert c.post('/api/v1/predict/nfl/batch?record=true', json={'rows': [dict(ROW, team='T')]}).status_code == 401
    assert recorded(tmp_path/'k.db', 'T') == 1
    col = postman_collection(app)
    assert col['auth']['type'] == 'bearer' and col['auth']['bearer'][0]['value'] == '{{apiKey}}'
    assert {'key': 'apiKey', 'value': ''}.items() <= [v for v in col['variable'] if v['key'] == 'apiKey'][0].items()
    auth = {i['request']['url']['raw']: i['request'].get('auth') for i in col['item']}
    assert auth['{{baseUrl}}/api/v1/models/nfl/record'] is None             # inherits the collection's bearer key
    assert auth['{{baseUrl}}/api/v1/health'] == {'type': 'noauth'} and auth['{{baseUrl}}/api/v1/models/nfl/predict'] == {'type': 'noauth'}
    assert 'auth' not in postman_collection(create_app(demo_server.models, ui=False))   # no keys: no auth
    assert KEY not in json.dumps(col)
