"""A real API client in the suite: Schemathesis fuzzes the live server's `/openapi.json`.

A server on loopback serves one model of each kind (image, text, NFL, tables, a recommender, and the toy plug-in family). The fuzzer
generates requests from the document alone (examples, boundary values, random data; image fields get real
PNG/JPEG files from `fuzz_hooks.py`) and checks that no request gets a server error, that no request the
document allows is rejected, and that every response matches its declared schema.
"""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest

from conftest import PLUGIN_ENV, HERE
from test_serve import Server

ST = Path(sys.executable).parent/'st'
CHECKS = 'not_a_server_error,positive_data_acceptance,response_schema_conformance'


def test_schemathesis_finds_no_server_error_and_no_rejected_valid_request(real_models, tmp_path):
    if not ST.exists():
        print('SKIP: schemathesis is not installed (it is in the dev extras)'); pytest.skip('schemathesis is not installed')
    d = real_models.parent
    s = Server('--models', real_models, '--no-ui', cwd=d, env={'FASTXFER_DATA_DIR': str(tmp_path/'data'), **PLUGIN_ENV})
    try:
        env = {**os.environ, 'SCHEMATHESIS_HOOKS': 'fuzz_hooks',
               'PYTHONPATH': os.pathsep.join(filter(None, [str(HERE), os.environ.get('PYTHONPATH', '')]))}
        cmd = [str(ST), 'run', s.url + '/openapi.json', '--checks', CHECKS, '--mode', 'positive',
               '--phases', 'examples,coverage,fuzzing', '--max-examples', '25', '--seed', '42', '--workers', '1',
               '--request-timeout', '60', '--report', 'json', '--report-dir', str(tmp_path/'report')]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=420, cwd=tmp_path)   # its caches stay out of the tree
        out = r.stdout + r.stderr
        print(out[-6000:])
        assert r.returncode == 0, out[-6000:]
        [report] = (tmp_path/'report').glob('*.json')
        rep = json.loads(report.read_text())
        assert rep['complete'] and rep['failures'] == [] and rep['errors'] == [], rep['failures'][:3]
        assert rep['operations']['tested'] == rep['operations']['selected'] >= 13
        rates = rep['valid_rates']
        for model in ('pets', 'reviews', 'nfl', 'toy'):      # every model's typed operations got valid requests, none rejected
            for op in (f'POST /api/v1/models/{model}/predict', f'POST /api/v1/models/{model}/predict/batch'):
                fz = rates[op]['fuzzing']
                assert fz['accepted'] > 0 and fz['rejected'] == 0, (op, rates[op])
        assert rates['POST /api/v1/models/nfl/record']['fuzzing']['accepted'] > 0
        for op in ('predict', 'recommend', 'similar'):       # the recommender's queries too
            fz = rates[f'POST /api/v1/models/ml/{op}']['fuzzing']
            assert fz['accepted'] > 0 and fz['rejected'] == 0, (op, rates[f'POST /api/v1/models/ml/{op}'])
    finally:
        s.stop()
