"""Loading a model folder runs no code from it: no family reads a pickle to load, predict or serve.

A pickle whose loading creates a file is planted, under every name an earlier release read (`model.pkl`,
`processor.pkl`, `gbm.pkl`, ...), in a copy of each family's folder; loading, predicting and serving never
create the file. The check is real: unpickling the planted file does create it.
"""
import json, pickle, shutil

import httpx
import pytest

from conftest import PLUGIN_ENV, run_json
from test_serve import Server

OLD_PICKLES = ('model.pkl', 'learner.pkl', 'processor.pkl', 'gbm.pkl', 'linear.pkl', 'bow.pkl', 'logreg.pkl', 'export.pkl')


class Plant:
    "Unpickling this creates `path` (the proof that code ran)."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (open, (self.path, 'w'))


@pytest.fixture(scope='module')
def planted(real_models, tmp_path_factory):
    "A copy of every real model folder with a planted pickle under each old name; returns (models dir, sentinel path)."
    d = tmp_path_factory.mktemp('planted')
    models, sentinel = d/'models', d/'PWNED'
    shutil.copytree(real_models, models, symlinks=True)
    bomb = pickle.dumps(Plant(sentinel))
    for m in models.iterdir():
        if (m/'card.json').is_file():
            for n in OLD_PICKLES: (m/n).write_bytes(bomb)
    pickle.loads(bomb); assert sentinel.exists(), 'the planted pickle creates the file when unpickled'
    sentinel.unlink()
    return models, sentinel


def _examples(p):
    "One example input of predictor `p`, as its `predict` takes it."
    ex = p.examples()
    assert ex, f'{p.name} offers no example'
    return ex[:1]


def test_every_family_writes_a_safe_folder(real_models):
    for m in sorted(p for p in real_models.iterdir() if (p/'card.json').is_file()):
        r = run_json('check', m)
        assert r['safe'] and r['pickles'] == [] and r['format'] == 2, (m.name, r['verdict'])
        assert all(f['format'] != 'pickle' for f in r['files'])


def test_load_and_predict_never_unpickle(planted):
    from fastxfer.model_folder import check_model, find_model_folders, load_model
    import toy_family  # noqa: F401  (registers the plug-in family of the toy folder, as FASTXFER_PLUGINS does in a new process)
    models, sentinel = planted
    folders = find_model_folders(models)
    assert {f.kind for f in folders} >= {'vision', 'text', 'nfl', 'tabular', 'collab', 'segment'}
    for f in folders:
        r = check_model(f.path)
        assert r['safe'] and set(r['unlisted']) == set(OLD_PICKLES) and 'not read' in r['verdict'], r['verdict']
        p = load_model(f.path)
        preds = p.predict(_examples(p))
        assert len(preds) == 1 and 'label' in preds[0], (f.name, preds)
        assert not sentinel.exists(), f'loading or predicting with {f.name} unpickled a planted file'


def test_serve_never_unpickles(planted):
    models, sentinel = planted
    s = Server('--models', models, '--no-ui', cwd=models.parent, env={'FASTXFER_DATA_DIR': str(models.parent/'data'), **PLUGIN_ENV})
    try:
        h = httpx.get(s.url + '/api/v1/health', timeout=30).json()
        assert h['failed'] == {} and h['models'] == len([m for m in models.iterdir() if (m/'card.json').is_file()]), h
        img = next((models/'pets'/'examples').iterdir())
        r = httpx.post(s.url + '/api/v1/models/pets/predict', files={'file': (img.name, img.read_bytes(), 'image/jpeg')}, timeout=60)
        assert r.status_code == 200, r.text
        r = httpx.post(s.url + '/api/v1/models/reviews/predict', json={'texts': ['a wonderful film']}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        s.stop()
    assert not sentinel.exists(), 'serving unpickled a planted file'


def test_a_weights_file_replaced_by_a_pickle_is_refused_without_running_it(real_models, tmp_path):
    "torch weights are read with weights_only=True: a pickle in their place is an error, never run."
    from fastxfer.model_folder import load_model
    sentinel = tmp_path/'PWNED'
    for name, weights in (('ml', 'collab.pt'), ('adult', 'tabular.pt')):
        m = tmp_path/name; shutil.copytree(real_models/name, m)
        if not (m/weights).exists(): continue
        if name == 'adult':   # the net alone, whichever candidate the training chose: its weights are then read
            card = json.loads((m/'card.json').read_text()); card['members'] = ['tabular']; (m/'card.json').write_text(json.dumps(card))
        (m/weights).write_bytes(pickle.dumps(Plant(sentinel)))
        with pytest.raises(Exception) as e: load_model(m).predict(load_model(real_models/name).examples()[:1])
        assert not isinstance(e.value, AssertionError) and not sentinel.exists(), (name, e.value)


def test_a_folder_of_an_earlier_release_is_refused_with_the_upgrade_command(real_models, tmp_path):
    "A folder whose card predates the safe format and that holds a pickle is not loaded, by the library, the CLI or the server."
    from fastxfer.core import FastxferError
    from fastxfer.model_folder import load_model
    m = tmp_path/'models'/'old'; shutil.copytree(real_models/'reviews', m)
    card = json.loads((m/'card.json').read_text()); card.pop('format'); (m/'card.json').write_text(json.dumps(card))
    (m/'bow.pkl').write_bytes(pickle.dumps({'an': 'old model'}))
    with pytest.raises(FastxferError, match='fastxfer upgrade .* --trust'): load_model(m)
    r = run_json('check', m)
    assert not r['safe'] and r['pickles'] == ['bow.pkl'] and 'fastxfer upgrade' in r['verdict']
    from fastxfer.serve import create_app
    from fastapi.testclient import TestClient
    with TestClient(create_app(tmp_path/'models', ui=False)) as c:
        h = c.get('/api/v1/health').json()
        assert 'old' in h['failed'] and 'fastxfer upgrade' in h['failed']['old'], h
