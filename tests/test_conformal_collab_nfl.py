"""Conformal prediction in the collab and NFL families, as a user runs it: a recommender keeps the residuals of
held-out ratings and answers each rating with an interval, evaluate measures how often the intervals held,
calibrate rewrites the scores; the NFL folder keeps the chosen model's out-of-fold scores and answers a
prediction set; every bad coverage a clear error (exit 2)."""
import hashlib, json, shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import run_cli, run_json, shared_or_skip

# ---- collab: the shared MovieLens folder (`real_models`: trained once per run, random split, seed 42) ----------------

def _ml_split(tmp: Path):
    "The MovieLens sample's validation ratings of the shared folder's split (ratings it did not train on), as a CSV."
    from fastxfer.collab.data import read_ratings, split_ratings
    csv = shared_or_skip('fastai_samples/movie_lens_sample/ratings.csv')
    _, va, _ = split_ratings(read_ratings(csv), 'random', 0.2, 42)
    pd.read_csv(csv).iloc[va].to_csv(tmp/'valid.csv', index=False)
    return csv, tmp/'valid.csv', len(va)


def test_collab_folder_keeps_scores_and_predict_answers_intervals(real_models):
    m = real_models/'ml'
    card = json.loads((m/'card.json').read_text())
    c = card['conformal']
    assert 'conformal.json' in card['files'] and c['kind'] == 'regression' and c['key'] == 'rating' and c['split'] == 'calibration'
    assert c['n'] == card['split']['n_calib'] > 100   # 10% of the training ratings, disjoint from validation
    assert card['split']['n_train'] + c['n'] + card['split']['n_valid'] == card['n_ratings']
    p = run_json('collab', 'predict', m, '--user', 73, '--item', 1097)['predictions'][0]
    assert p['coverage'] == 0.9 and 0.5 <= p['lower'] <= p['rating'] <= p['upper'] <= 5.0, p   # clipped to the scale
    p80 = run_json('collab', 'predict', m, '--user', 73, '--item', 1097, '--coverage', 0.8)['predictions'][0]
    assert p80['coverage'] == 0.8 and p80['upper'] - p80['lower'] <= p['upper'] - p['lower']
    cold = run_json('collab', 'predict', m, '--user', 'nobody', '--item', 'nothing')['predictions'][0]
    assert cold['cold_start'] and cold['lower'] <= cold['rating'] <= cold['upper']
    human = run_cli('collab', 'predict', m, '--user', 73, '--item', 1097, check=0).stdout
    assert f"{p['rating']:.2f} ({p['lower']:.2f} to {p['upper']:.2f} at 90%)" in human, human


def test_collab_evaluate_measures_interval_coverage(real_models, tmp_path):
    m = real_models/'ml'
    csv, valid, n = _ml_split(tmp_path)
    r = run_json('collab', 'evaluate', m, valid)   # validation ratings: neither trained on nor calibrated with
    c = r['conformal']['0.9']
    print(f"collab validation: {r['conformal']}")
    assert r['n'] == n and set(r['conformal']) == {'0.8', '0.9', '0.95'} and 0.82 <= c['coverage'] <= 0.97 and 0 < c['mean_width'] < 4.5
    assert r['conformal']['0.8']['mean_width'] < c['mean_width'] < r['conformal']['0.95']['mean_width']
    every = run_json('collab', 'evaluate', m, csv)['conformal']['0.9']['coverage']   # training ratings too: loose bound
    assert 0.75 <= every <= 1.0
    assert 'intervals at 90%: held the truth' in run_cli('collab', 'evaluate', m, valid, check=0).stdout


def test_collab_calibrate_rewrites_the_scores(real_models, tmp_path):
    m = tmp_path/'ml'; shutil.copytree(real_models/'ml', m)
    _, valid, n = _ml_split(tmp_path)
    before = (m/'conformal.json').read_text()
    r = run_json('collab', 'calibrate', m, valid)
    c = json.loads((m/'card.json').read_text())['conformal']
    assert r['n'] == n and r['conformal'] == c and c['n'] == n and c['split'] == 'calibrate' and c['key'] == 'rating'
    assert (m/'conformal.json').read_text() != before and len(json.loads((m/'conformal.json').read_text())['scores']) == n
    p = run_json('collab', 'predict', m, '--user', 73, '--item', 1097)['predictions'][0]
    assert p['lower'] <= p['rating'] <= p['upper']
    pd.read_csv(valid).head(3).to_csv(tmp_path/'three.csv', index=False)
    e = run_cli('collab', 'calibrate', m, tmp_path/'three.csv', check=2)
    assert e.stderr.startswith('error:') and 'too few' in e.stderr and 'at least 4' in e.stderr


def test_collab_small_tables_hold_nothing_out():
    "A recommender needs its ratings: 10% of a small table is under 100 ratings, so none are held out."
    from fastxfer.collab import rating_calibration_split
    fit, ca = rating_calibration_split(np.arange(384), 0.1, 42)
    assert len(fit) == 384 and len(ca) == 0
    fit, ca = rating_calibration_split(np.arange(4825), 0.1, 42)
    assert len(ca) == 482 and len(fit) == 4825 - 482 and not set(fit) & set(ca)
    assert len(rating_calibration_split(np.arange(4825), 0, 42)[1]) == 0


def test_collab_served_intervals(real_models, tmp_path):
    from fastapi.testclient import TestClient
    from fastxfer.serve import create_app
    (tmp_path/'models').mkdir(); shutil.copytree(real_models/'ml', tmp_path/'models'/'ml')
    with TestClient(create_app(tmp_path/'models', ui=False)) as c:
        a = c.post('/api/v1/models/ml/predict', json={'user': 73, 'item': 1097}).json()['predictions'][0]
        b = c.post('/api/v1/models/ml/predict?coverage=0.8', json={'user': 73, 'item': 1097}).json()['predictions'][0]
        assert a['coverage'] == 0.9 and b['coverage'] == 0.8 and a['lower'] <= b['lower'] <= b['upper'] <= a['upper'] <= 5
        assert c.post('/api/v1/models/ml/predict?coverage=1.5', json={'user': 73, 'item': 1097}).status_code == 422


# ---- NFL: the demo's folder (2023, 32 team-seasons, stratified 5-fold): out-of-fold scores --------------------------

def _env(tmp):
    return {'FASTXFER_DATA_DIR': str(tmp/'data'), 'FASTXFER_MODELS_DIR': str(tmp/'models')}


@pytest.fixture(scope='module')
def nfl_demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('nfl_conformal')
    r = run_json('nfl', 'demo', '--workdir', tmp/'work', env=_env(tmp))
    return tmp, r


def test_nfl_folder_keeps_out_of_fold_scores_and_predict_answers_sets(nfl_demo):
    tmp, r = nfl_demo
    m = Path(r['model_dir'])
    c = json.loads((m/'card.json').read_text())['conformal']
    assert c['split'] == 'out-of-fold' and c['n'] == 32 and c['method'] == 'raps' and (m/'conformal.json').is_file()
    assert r['train']['n_calib'] == 32 and set(r['train']['conformal']) == {'0.8', '0.9', '0.95'}
    assert r['prediction']['set'] == ['winning'] and r['prediction']['coverage'] == 0.9   # the Vipers: a sure answer
    args = ['--team', 'Close', '--pf', 390, '--pa', 385, '--sos', 0.3, '--model', m, '--db', r['db'], '--no-record']
    p = run_json('nfl', 'predict', *args, '--coverage', 0.95, env=_env(tmp))
    assert p['coverage'] == 0.95 and p['label'] in p['set'] and set(p['set']) <= {'winning', 'not winning'}
    ab = run_json('nfl', 'predict', *args, '--coverage', 0.95, '--abstain-above', 1, env=_env(tmp))
    assert ab['abstained'] == (len(ab['set']) > 1) and (ab['label'] is None) == ab['abstained']
    human = run_cli('nfl', 'predict', *args, env=_env(tmp), check=0).stdout
    assert 'how sure: ' in human and '(set: ' in human and 'at 90%)' in human, human


def test_nfl_evaluate_reports_the_coverage_of_the_sets(nfl_demo):
    tmp, r = nfl_demo
    e = run_json('nfl', 'evaluate', '--db', r['db'], env=_env(tmp))
    print(f"NFL (2023, 5-fold): {e['conformal']}")
    assert 'oof' not in e and e['conformal'] == e['models'][e['better']]['conformal']
    assert set(e['conformal']) == {'0.8', '0.9', '0.95'} and 0.75 <= e['conformal']['0.9']['coverage'] <= 1.0
    assert 1 <= e['conformal']['0.9']['mean_size'] <= 2
    assert "each fold's from the other folds' out-of-fold scores" in run_cli('nfl', 'evaluate', '--db', r['db'], env=_env(tmp), check=0).stdout


def test_nfl_calibrate_takes_seasons_the_model_did_not_see(nfl_demo, tmp_path):
    tmp, r = nfl_demo
    m = tmp_path/'nfl'; shutil.copytree(r['model_dir'], m)
    e = run_cli('nfl', 'calibrate', m, '--db', r['db'], env=_env(tmp), check=2)
    assert e.stderr.startswith('error:') and 'trained on (2023)' in e.stderr, e.stderr
    c = run_json('nfl', 'calibrate', m, shared_or_skip('nfl/standings.csv'), env=_env(tmp))
    assert c['n'] == 736 - 32 and c['conformal']['split'] == 'calibrate' and 2023 not in c['conformal']['seasons']
    assert json.loads((m/'conformal.json').read_text())['labels'].__len__() == c['n']


@pytest.mark.parametrize('family', ['collab', 'nfl'])
@pytest.mark.parametrize('coverage, says', [('1.5', 'coverage must be strictly between 0 and 1'),
                                            ('0.99999', 'calibration items are too few for coverage')])
def test_bad_coverage_is_exit_2_and_records_nothing(family, coverage, says, real_models, nfl_demo):
    tmp, r = nfl_demo
    if family == 'collab': args = ['collab', 'predict', real_models/'ml', '--user', 73, '--item', 1097]
    else: args = ['nfl', 'predict', '--team', 'Nobody', '--pf', 300, '--pa', 300, '--sos', 0, '--model', r['model_dir'], '--db', r['db']]
    before = hashlib.sha256(Path(r['db']).read_bytes()).hexdigest()
    e = run_cli(*args, '--coverage', coverage, env=_env(tmp), check=2)
    assert e.stderr.startswith('error:') and says in e.stderr, e.stderr
    assert hashlib.sha256(Path(r['db']).read_bytes()).hexdigest() == before, 'nothing written'
