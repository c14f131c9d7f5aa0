"""A real API client in the suite: Schemathesis fuzzes the live server's `/openapi.json`.

A server on loopback serves one model of each kind (image, text, NFL, tables, a recommender, a segmentation model and the
toy plug-in family) behind an API key (`--protect all`: every operation but the health check needs it). The fuzzer sends
the key (`-H 'Authorization: Bearer ...'`) and generates requests from the document alone (examples, boundary values,
random data; image fields get real PNG/JPEG files from `fuzz_hooks.py`), twice:

- positive mode: no request gets a server error, no request the document allows is rejected, and every response
  matches its declared schema;
- negative mode (every check that applies to invalid data): each request the document forbids is a 4xx, never a 5xx,
  its answer is the documented `{"error": ...}`, undeclared methods get a 405 with `Allow`, and each operation
  refuses a request without the key or with a wrong one.
"""
import json, os, subprocess, sys, time
from pathlib import Path

import httpx, pytest

from conftest import PLUGIN_ENV, HERE
from test_serve import Server, scrape, metric

ST = Path(sys.executable).parent/'st'
KEY = 'fuzz-key-5d1c9a7b3e'
POSITIVE_CHECKS = 'not_a_server_error,positive_data_acceptance,response_schema_conformance'
# A request that breaks the document is refused with a 4xx the document lists: 413 too (too many items or characters).
ST_CONFIG = '[checks.negative_data_rejection]\nexpected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n'


@pytest.fixture(scope='module')
def fuzz_server(real_models, tmp_path_factory):
    if not ST.exists():
        print('SKIP: schemathesis is not installed (it is in the dev extras)'); pytest.skip('schemathesis is not installed')
    d = tmp_path_factory.mktemp('fuzz')
    s = Server('--models', real_models, '--no-ui', '--protect', 'all', cwd=d,
               env={'FASTXFER_DATA_DIR': str(d/'data'), 'FASTXFER_API_KEYS': KEY, **PLUGIN_ENV})
    yield s
    s.stop()


def st_run(server, tmp_path, *args) -> dict:
    "Run `st run` against the server's document with the key; returns its JSON report."
    env = {**os.environ, 'SCHEMATHESIS_HOOKS': 'fuzz_hooks',
           'PYTHONPATH': os.pathsep.join(filter(None, [str(HERE), os.environ.get('PYTHONPATH', '')]))}
    (tmp_path/'schemathesis.toml').write_text(ST_CONFIG)
    cmd = [str(ST), '--config-file', str(tmp_path/'schemathesis.toml'), 'run', server.url + '/openapi.json',
           '-H', f'Authorization: Bearer {KEY}', *args, '--seed', '42', '--workers', '1', '--request-timeout', '60',
           '--report', 'json', '--report-dir', str(tmp_path/'report')]
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=420, cwd=tmp_path)   # its caches stay out of the tree
    out = r.stdout + r.stderr
    print(out[-6000:]); print(f'schemathesis {" ".join(args)}: {time.time() - t:.0f} s')
    assert KEY not in out, 'the key was printed'
    assert r.returncode == 0, out[-6000:]
    [report] = (tmp_path/'report').glob('*.json')
    rep = json.loads(report.read_text())
    assert rep['complete'] and rep['failures'] == [] and rep['errors'] == [], rep['failures'][:3]
    assert rep['operations']['tested'] == rep['operations']['selected'] >= 13
    return rep


def test_schemathesis_finds_no_server_error_and_no_rejected_valid_request(fuzz_server, tmp_path):
    rep = st_run(fuzz_server, tmp_path, '--checks', POSITIVE_CHECKS, '--mode', 'positive', '--phases', 'examples,coverage,fuzzing',
                 '--max-examples', '6')
    rates = rep['valid_rates']
    for model in ('pets', 'reviews', 'nfl', 'toy', 'adult', 'camvid'):   # every model's typed operations got valid requests, none rejected
        for op in (f'POST /api/v1/models/{model}/predict', f'POST /api/v1/models/{model}/predict/batch'):
            fz = rates[op]['fuzzing']
            assert fz['accepted'] > 0 and fz['rejected'] == 0, (op, rates[op])
    assert rates['POST /api/v1/models/nfl/record']['fuzzing']['accepted'] > 0
    for op in ('predict', 'recommend', 'similar'):       # the recommender's queries too
        fz = rates[f'POST /api/v1/models/ml/{op}']['fuzzing']
        assert fz['accepted'] > 0 and fz['rejected'] == 0, (op, rates[f'POST /api/v1/models/ml/{op}'])
    for model in ('pets', 'reviews', 'nfl', 'adult', 'camvid', 'ml'):   # every family's explain operation too
        fz = rates[f'POST /api/v1/models/{model}/explain']['fuzzing']
        assert fz['accepted'] > 0 and fz['rejected'] == 0, (model, rates[f'POST /api/v1/models/{model}/explain'])


def test_schemathesis_negative_mode_finds_no_server_error(fuzz_server, tmp_path):
    "Invalid requests of every kind the document allows to be built, with every check that applies to them: 4xx, never 5xx."
    before = scrape(fuzz_server.url, headers={'Authorization': f'Bearer {KEY}'})
    rep = st_run(fuzz_server, tmp_path, '--checks', 'all', '--exclude-checks', 'positive_data_acceptance', '--mode', 'negative',
                 '--phases', 'examples,coverage,fuzzing', '--max-examples', '6')
    assert rep['test_cases']['generated'] >= 300, rep['test_cases']
    after = scrape(fuzz_server.url, headers={'Authorization': f'Bearer {KEY}'})
    delta = lambda name, **kw: metric(after, name, **kw) - metric(before, name, **kw)
    assert delta('fastxfer_errors_total', status_class='5xx') == 0
    for model, op in [('pets', 'predict'), ('reviews', 'predict'), ('nfl', 'record'), ('toy', 'predict'), ('adult', 'predict'),
                      ('camvid', 'predict'), ('ml', 'recommend')]:   # the invalid bodies got past the key to the model's checks
        refused = sum(delta('fastxfer_requests_total', model=model, operation=op, status=s) for s in ('400', '413', '415', '422'))
        assert refused > 0, (model, op)
    assert delta('fastxfer_requests_total', model='nfl', operation='record', status='401') > 0   # and were refused without it
    assert httpx.get(fuzz_server.url + '/api/v1/health').json()['status'] == 'ok'
