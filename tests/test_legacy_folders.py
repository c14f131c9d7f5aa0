"""Model folders written by an earlier release: refused as they are (their models are pickles), converted once by
`fastxfer upgrade --trust`, then predicting exactly as before and serving.

The package of that release (commit LEGACY_RELEASE) is taken from this repository's own history (`git archive`),
trains one small model of each kind (vision, text, NFL) in a subprocess and records its own predictions; today's
code refuses the folders, converts them, predicts with them (equal to 1e-5) and serves them through the typed
REST operations and the older endpoints.
"""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import ROOT, old_release, shared_or_skip

pytestmark = pytest.mark.slow   # an old release built from history and three models trained with it: over a minute; the tabular upgrade test stays in the default suite

LEGACY_RELEASE = '442e883'   # the last release before `fastxfer.family` (cards without the contract's fields)


def _old_cli(pkg: Path, *commands, cwd):
    "Run the old release's `fastxfer` COMMANDS (each a list of arguments) one after another in one new interpreter."
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import fastxfer, fastxfer.cli as c; "
            "assert fastxfer.__file__.startswith(sys.path[0]), fastxfer.__file__; "
            "[sys.exit(f'old fastxfer {a[:2]} exited {r}') for a in json.loads(sys.argv[2]) for r in [c.main(a)] if r]")
    r = subprocess.run([sys.executable, '-c', code, str(pkg), json.dumps([[str(x) for x in a] for a in commands])],
                       capture_output=True, text=True, cwd=cwd, env={**os.environ, 'FASTXFER_DATA_DIR': str(cwd/'data')}, timeout=600)
    assert r.returncode == 0, f'old fastxfer failed:\n{r.stderr[-3000:]}'


TEXTS = ['a wonderful film', 'dull acting', 'superb and moving']
NFL_ROWS = [dict(team='Vipers', pf=465, pa=380, sos=1.5), dict(team='Owls', pf=300, pa=410, sos=-2.0)]

def predictions(models: Path) -> dict:
    "Probabilities of each legacy model on fixed inputs (run by the old release and by today's code alike)."
    from fastxfer.model_folder import load_model
    pets = sorted((models/'pets'/'examples').iterdir())
    return {'pets': [p['probs'] for p in load_model(models/'pets').predict(pets)],
            'reviews': [p['probs'] for p in load_model(models/'reviews').predict(TEXTS)],
            'nfl': [p['probability'] for p in load_model(models/'nfl').predict(NFL_ROWS)]}


def _old_predictions(pkg: Path, models: Path) -> dict:
    "`predictions(models)` computed by the old release, in its own interpreter."
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import fastxfer; assert fastxfer.__file__.startswith(sys.path[0]); "
            "sys.path.insert(0, sys.argv[3]); from test_legacy_folders import predictions; "
            "print(json.dumps(predictions(__import__('pathlib').Path(sys.argv[2]))))")
    r = subprocess.run([sys.executable, '-c', code, str(pkg), str(models), str(Path(__file__).parent)], capture_output=True, text=True,
                       env={**os.environ, 'FASTXFER_DATA_DIR': str(models.parent/'data')}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def legacy_models(tmp_path_factory):
    d = tmp_path_factory.mktemp('legacy')
    pkg = old_release(d/'release', LEGACY_RELEASE)
    pets = shared_or_skip('pets/images')
    (d/'pets').mkdir()
    for f in sorted(pets.iterdir())[::30][:20]: (d/'pets'/f.name).symlink_to(f)
    (d/'reviews.csv').write_text('text,label\n' + ''.join(f'"{w} film, {w} acting",{l}\n' for w, l in
                                 [('great', 'pos'), ('wonderful', 'pos'), ('superb', 'pos'), ('lovely', 'pos'), ('moving', 'pos'),
                                  ('awful', 'neg'), ('boring', 'neg'), ('dull', 'neg'), ('terrible', 'neg'), ('bad', 'neg')] * 2))
    _old_cli(pkg, ['vision', 'train', d/'pets', '--labels', 'cat-dog', '--mode', 'features', '--size', '64', '--out', d/'models'/'pets', '--quiet'],
             ['text', 'train', d/'reviews.csv', '--model', 'embed-logreg', '--valid-pct', '0.3', '--out', d/'models'/'reviews', '--quiet'],
             ['nfl', 'scrape', '--season', '2023', '--html', ROOT/'data'/'nfl'/'pfr_years_2023.htm', '--db', d/'NFL.db', '--quiet'],
             ['nfl', 'train', '--db', d/'NFL.db', '--no-evaluate', '--out', d/'models'/'nfl', '--quiet'], cwd=d)
    (d/'old_predictions.json').write_text(json.dumps(_old_predictions(pkg, d/'models')))
    return d/'models'


@pytest.fixture(scope='module')
def upgraded(legacy_models, tmp_path_factory):
    "A copy of the legacy folders converted by `fastxfer upgrade --trust`."
    from conftest import run_cli, run_json
    d = tmp_path_factory.mktemp('upgraded')/'models'
    shutil.copytree(legacy_models, d)
    assert run_json('upgrade', d/'reviews')['upgraded'] is False   # nothing to convert, no --trust needed
    for m in ('pets', 'nfl'):
        r = run_cli('upgrade', d/m)
        assert r.returncode == 2 and '--trust' in r.stderr and 'error:' in r.stderr, r.stderr
        r = run_json('upgrade', d/m, '--trust')
        assert r['upgraded'] and r['removed'], r
        assert run_json('upgrade', d/m, '--trust')['upgraded'] is False    # idempotent: already safe
    return d


def test_legacy_folders_are_refused_as_they_are(legacy_models):
    from fastxfer.core import FastxferError
    from fastxfer.model_folder import check_model, load_model
    for m in ('pets', 'nfl'):
        with pytest.raises(FastxferError, match='fastxfer upgrade'): load_model(legacy_models/m)
        r = check_model(legacy_models/m)
        assert not r['safe'] and r['pickles'], r
    r = check_model(legacy_models/'reviews')   # an embed-logreg folder was pickle-free already (encoder/ and head.pt)
    assert r['safe'] and r['pickles'] == [], r


def test_upgraded_folders_predict_as_before(legacy_models, upgraded):
    from fastxfer.model_folder import check_model
    old, new = json.loads((legacy_models.parent/'old_predictions.json').read_text()), predictions(upgraded)
    for m in ('pets', 'reviews'):
        assert len(old[m]) == len(new[m]) > 0
        for a, b in zip(old[m], new[m]): assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-5, (m, a, b)
    assert max(abs(a - b) for a, b in zip(old['nfl'], new['nfl'])) < 1e-5, (old['nfl'], new['nfl'])
    for m in ('pets', 'reviews', 'nfl'):
        r = check_model(upgraded/m)
        assert r['safe'] and r['pickles'] == [] and r['format'] == (1 if m == 'reviews' else 2), r   # reviews: pickle-free as it was


def test_upgraded_legacy_folders_serve(upgraded, tmp_path):
    from fastxfer.serve import create_app
    legacy_models = upgraded
    with TestClient(create_app(upgraded, ui=False, context={'db': tmp_path/'NFL.db'})) as c:
        h = c.get('/api/v1/health').json()
        assert h['models'] == 3 and h['failed'] == {}, h
        img = sorted((legacy_models/'pets'/'examples').iterdir())[0]
        r = c.post('/api/v1/models/pets/predict', files={'file': (img.name, img.read_bytes(), 'image/jpeg')})
        assert r.status_code == 200 and r.json()['label'] in ('cat', 'dog'), r.text
        assert c.post('/api/v1/predict/reviews', json={'texts': ['dull']}).json()['label'] in ('pos', 'neg')
        r = c.post('/api/v1/models/nfl/record', json=dict(team='Legacy Lions', pf=300, pa=350, sos=0))
        assert r.status_code == 200 and r.json()['effects']['record']['rows'][0]['recorded'] is True
