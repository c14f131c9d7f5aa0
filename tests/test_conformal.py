"""Conformal prediction through the tabular family, as a user runs it: training keeps a calibration split and its
scores, predict answers sets (intervals) at a coverage chosen then, evaluate measures the coverage, calibrate adds
scores to a folder that has none, the server types and checks `coverage` and abstains; every bad input a clear error."""
import json, shutil
import numpy as np, pandas as pd, pytest
from fastapi.testclient import TestClient
from conftest import run_cli, run_json


def churn(n, seed):
    "A table whose label follows its columns with noise: some rows sure, some not."
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({'age': rng.integers(18, 80, n), 'plan': rng.choice(['basic', 'plus', 'pro'], n), 'visits': rng.poisson(3, n),
                       'spend': rng.gamma(2, 30, n).round(2)})
    df['churned'] = np.where(df.spend/30 + (df.plan == 'pro')*2 - df.visits*0.5 + rng.normal(0, 1, n) > 1.5, 'yes', 'no')
    return df


def without_scores(src, dst):
    "A copy of model folder `src` at `dst` as it was before fastxfer kept conformity scores."
    shutil.copytree(src, dst)
    (dst/'conformal.json').unlink()
    card = json.loads((dst/'card.json').read_text()); card.pop('conformal'); card['files'].remove('conformal.json')
    (dst/'card.json').write_text(json.dumps(card))
    return dst


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp('conformal')
    churn(1000, 0).to_csv(d/'churn.csv', index=False)
    churn(600, 1).to_csv(d/'fresh.csv', index=False)       # rows the models never saw
    cls = run_json('tabular', 'train', d/'churn.csv', '--target', 'churned', '--model', 'gbm', '--out', d/'models'/'churn')
    reg = run_json('tabular', 'train', d/'churn.csv', '--target', 'spend', '--model', 'gbm', '--out', d/'models'/'spend')
    return d, cls, reg


def test_training_keeps_a_calibration_split_and_its_scores(models):
    d, cls, reg = models
    assert (cls['n_train'], cls['n_calib'], cls['n_valid']) == (700, 100, 200)   # 10% of the 800 training rows, raised to 100
    card = json.loads((d/'models'/'churn'/'card.json').read_text())
    assert card['conformal']['n'] == 100 and card['conformal']['method'] == 'raps' and 'conformal.json' in card['files']
    assert 'plots/selective.png' in card['files']   # the selective-accuracy curve of the classifier's sets
    assert len(json.loads((d/'models'/'churn'/'conformal.json').read_text())['scores']) == 100
    for r in (cls, reg):   # validation rows, which neither training nor calibration saw
        assert set(r['conformal']) == {'0.8', '0.9', '0.95'} and abs(r['conformal']['0.9']['coverage'] - 0.9) < 0.07, r['conformal']
    assert run_json('check', d/'models'/'churn')['safe']


def test_predict_answers_sets_and_intervals_at_the_coverage_asked(models):
    d, _, _ = models
    r = run_json('tabular', 'predict', d/'models'/'churn', d/'fresh.csv', '--coverage', '0.95')
    sets = [p['set'] for p in r['predictions']]
    assert all(p['coverage'] == 0.95 and p['label'] in p['set'] for p in r['predictions'])
    assert {1, 2} <= {len(s) for s in sets}, 'sure rows get one label, unsure rows both'
    r80 = run_json('tabular', 'predict', d/'models'/'churn', d/'fresh.csv', '--coverage', '0.8')
    assert sum(map(len, (p['set'] for p in r80['predictions']))) < sum(map(len, sets)), 'a lower coverage, smaller sets'
    ab = run_json('tabular', 'predict', d/'models'/'churn', d/'fresh.csv', '--abstain-above', '1')['predictions']
    assert all((p['label'] is None) == p['abstained'] == (len(p['set']) > 1) for p in ab) and any(p['abstained'] for p in ab)
    human = run_cli('tabular', 'predict', d/'models'/'churn', '--row', 'age=40', 'plan=pro', 'visits=1', 'spend=90', check=0).stdout
    assert 'set: ' in human and 'at 90%' in human, human
    v = run_json('tabular', 'predict', d/'models'/'spend', d/'fresh.csv')['predictions']
    assert all(p['lower'] < p['value'] < p['upper'] and p['coverage'] == 0.9 for p in v)
    fresh = pd.read_csv(d/'fresh.csv')
    assert abs(np.mean([p['lower'] <= y <= p['upper'] for p, y in zip(v, fresh.spend)]) - 0.9) < 0.06


def test_evaluate_measures_coverage_on_new_rows(models):
    d, _, _ = models
    r = run_json('tabular', 'evaluate', d/'models'/'churn', d/'fresh.csv')
    c = r['conformal']['0.9']
    assert abs(c['coverage'] - 0.9) < 0.05 and 1 <= c['mean_size'] <= 2 and set(c['per_class']) == {'no', 'yes'}
    assert 'sets at 90%: held the truth' in run_cli('tabular', 'evaluate', d/'models'/'churn', d/'fresh.csv', check=0).stdout


def test_calib_col_marks_the_calibration_rows(tmp_path):
    df = churn(400, 3).assign(calib=lambda d: np.where(np.arange(len(d)) % 5 == 0, 'yes', 'no'))
    df.to_csv(tmp_path/'c.csv', index=False)
    train = ('tabular', 'train', tmp_path/'c.csv', '--target', 'churned', '--model', 'gbm', '--out', tmp_path/'m')
    r = run_json(*train, '--calib-col', 'calib')
    card = json.loads((tmp_path/'m'/'card.json').read_text())
    assert 60 <= r['n_calib'] <= 80 and card['conformal']['n'] == r['n_calib'] == card['split']['n_calib']   # the marked rows outside validation
    assert 'calib' not in [c['name'] for c in card['columns']] and 'calib' in card['excluded']
    for col, says in (('nope', "no column 'nope' (--calib-col)"), ('few', 'mark at least 4'), ('plan', "--calib-col plan: 'plus' is not true/false")):
        df.assign(few=np.arange(len(df)) < 2).to_csv(tmp_path/'c.csv', index=False)
        out = run_cli(*train, '--calib-col', col, check=2)
        assert out.stderr.strip().splitlines()[-1].startswith('error:') and says in out.stderr, out.stderr


def test_a_folder_without_scores_says_how_to_add_them_and_calibrate_does(models, tmp_path):
    d, _, _ = models
    old = without_scores(d/'models'/'churn', tmp_path/'old')
    assert 'set' not in run_json('tabular', 'predict', old, d/'fresh.csv')['predictions'][0]   # nothing asked: plain answers
    r = run_cli('tabular', 'predict', old, d/'fresh.csv', '--coverage', '0.9', check=2)
    assert r.stderr.startswith('error:') and f'fastxfer tabular calibrate {old}' in r.stderr, r.stderr
    pd.read_csv(d/'fresh.csv').head(3).to_csv(tmp_path/'three.csv', index=False)
    r = run_cli('tabular', 'calibrate', old, tmp_path/'three.csv', check=2)
    assert 'too few' in r.stderr and 'at least 4' in r.stderr and not (old/'conformal.json').exists()
    c = run_json('tabular', 'calibrate', old, d/'fresh.csv', '--method', 'lac')
    assert c['conformal']['n'] == 600 and c['conformal']['method'] == 'lac'
    said = run_cli('tabular', 'calibrate', old, d/'fresh.csv').stdout.strip()   # without --json: a sentence, in every family
    assert said == f"600 items of {d/'fresh.csv'}: conformity scores written to {old/'conformal.json'}", said
    assert run_json('tabular', 'predict', old, d/'fresh.csv', '--coverage', '0.9')['predictions'][0]['set']


@pytest.mark.parametrize('args, says', [(['--coverage', '1.5'], 'coverage must be strictly between 0 and 1'),
                                        (['--coverage', '0'], 'coverage must be strictly between 0 and 1'),
                                        (['--coverage', '0.99999'], 'calibration items are too few for coverage'),
                                        (['--abstain-above', '0'], 'at least 1')])
def test_bad_coverage_is_exit_2(models, args, says):
    d, _, _ = models
    r = run_cli('tabular', 'predict', d/'models'/'churn', d/'fresh.csv', *args, check=2)
    assert r.stderr.startswith('error:') and says in r.stderr, r.stderr


def test_served_sets_are_typed_checked_and_abstain(models):
    from fastxfer.serve import create_app
    d, _, _ = models
    row = dict(age=40, plan='plus', visits='3', spend=40.0)
    with TestClient(create_app(d/'models', ui=False, abstain_above=1)) as c:
        doc = c.get('/openapi.json').json()
        op = doc['paths']['/api/v1/models/churn/predict']['post']
        assert {'coverage', 'abstain_above'} <= {q['name'] for q in op['parameters']}
        assert 'set' in json.dumps(doc['components']['schemas']['ChurnPrediction'])
        assert 'lower' in json.dumps(doc['components']['schemas']['SpendPrediction'])
        answers = [c.post('/api/v1/models/churn/predict?coverage=0.95', json=dict(row, spend=s)).json() for s in (5.0, 80.0, 90.0, 100.0, 200.0)]
        assert all(a['predictions'][0]['coverage'] == 0.95 for a in answers)
        unsure = [a for a in answers if len(a['predictions'][0]['set']) > 1]
        assert unsure and all(a['label'] is None and a['predictions'][0]['abstained'] for a in unsure), answers   # the server's abstain_above 1
        r = c.post('/api/v1/models/churn/predict?abstain_above=2', json=row).json()
        assert r['predictions'][0]['abstained'] is False and r['label'] in ('no', 'yes')
        for q in ('coverage=2', 'coverage=abc', 'abstain_above=0'):
            r = c.post(f'/api/v1/models/churn/predict?{q}', json=row)
            assert r.status_code == 422 and 'error' in r.json(), (q, r.text)
        r = c.post('/api/v1/models/spend/predict', json=dict(age=40, plan='plus', visits='3', churned='no')).json()
        assert r['predictions'][0]['lower'] < r['predictions'][0]['value'] < r['predictions'][0]['upper']


def test_vision_calibrate_adds_sets_to_a_folder(real_models, tmp_path):
    "Training keeps the scores of 8 calibration photos; a folder without scores gets them from photos it did not train on; then predict answers sets."
    from conftest import shared_or_skip
    pets = shared_or_skip('pets/images')
    card = json.loads((real_models/'pets'/'card.json').read_text())   # 40 photos: 8 validation, 8 calibration, 24 training
    assert card['conformal']['n'] == card['metrics']['n_calib'] == 8 and card['conformal']['split'] == 'calibration'
    one = run_json('vision', 'predict', real_models/'pets', next(f for f in sorted(pets.iterdir()) if f.suffix == '.jpg'))['predictions'][0]
    assert one['coverage'] == 0.88 and one['label'] in one['set']   # 8 scores are too few for the default 90%: the most they promise
    one = run_json('vision', 'predict', real_models/'pets', next(f for f in sorted(pets.iterdir()) if f.suffix == '.jpg'), '--coverage', '0.8')['predictions'][0]
    assert one['label'] in one['set'] and one['coverage'] == 0.8
    m = without_scores(real_models/'pets', tmp_path/'pets')
    trained = {p.name for p in (real_models.parent/'pets40').iterdir()}
    imgs = [f for f in sorted(pets.iterdir()) if f.name not in trained][::7][:60]
    (tmp_path/'cal').mkdir(); (tmp_path/'few').mkdir()
    for f in imgs: (tmp_path/'cal'/f.name).symlink_to(f)
    for f in (imgs[0], imgs[-1]): (tmp_path/'few'/f.name).symlink_to(f)   # a cat and a dog: too few to calibrate
    r = run_cli('vision', 'calibrate', m, tmp_path/'few', check=2)
    assert 'too few' in r.stderr and not (m/'conformal.json').exists()
    r = run_json('vision', 'calibrate', m, tmp_path/'cal')
    assert r['n'] == len(imgs) and r['conformal']['method'] == 'raps' and (m/'conformal.json').exists()
    preds = run_json('vision', 'predict', m, *imgs[:4], '--coverage', '0.9')['predictions']
    assert all(p['coverage'] == 0.9 and p['label'] in p['set'] and set(p['set']) <= {'cat', 'dog'} for p in preds)
    assert 'set: ' in run_cli('vision', 'predict', m, imgs[0], check=0).stdout
    ev = run_json('vision', 'evaluate', m, tmp_path/'cal')   # the scores' own photos: coverage measured with them
    assert ev['conformal_how'] == 'scores' and set(ev['conformal']) == {'0.8', '0.9', '0.95'} and ev['selective'][-1]['answered'] == 1.0
    ev = run_json('vision', 'evaluate', m, tmp_path/'cal', '--tta')   # TTA: not what the scores were made from
    assert ev['conformal_how'] == 're-split' and ev['conformal']['0.9']['resplits'] == 20
    assert 'calibrated on half of these images' in run_cli('vision', 'evaluate', m, tmp_path/'cal', '--tta', check=0).stdout


def test_text_calibrate_adds_sets_to_a_folder(real_models, tmp_path):
    "A text folder gets scores from reviews it did not train on; predict then answers sets; a label it lacks is an error."
    import pandas as pd
    from conftest import shared_or_skip
    card = json.loads((real_models/'reviews'/'card.json').read_text())   # 60 texts: 12 validation, 12 calibration, 36 training
    assert card['conformal']['n'] == 12 and card['conformal']['split'] == 'calibration'
    m = without_scores(real_models/'reviews', tmp_path/'reviews')
    df = pd.read_csv(shared_or_skip('fastai_samples/imdb_sample/texts.csv'))
    df = pd.concat([df[df.label == l].iloc[100:130] for l in ('positive', 'negative')])   # the folder trained on the first 30 of each
    df.assign(text=df.text.str.slice(0, 200))[['label', 'text']].to_csv(tmp_path/'held_out.csv', index=False)
    df.assign(label='neutral').head(10)[['label', 'text']].to_csv(tmp_path/'other.csv', index=False)
    r = run_cli('text', 'calibrate', m, tmp_path/'other.csv', check=2)
    assert 'neutral' in r.stderr and not (m/'conformal.json').exists(), r.stderr
    r = run_json('text', 'calibrate', m, tmp_path/'held_out.csv')
    assert r['n'] == 60 and r['conformal']['n'] == 60
    preds = run_json('text', 'predict', m, 'a wonderful film', 'dull', '--coverage', '0.8')['predictions']
    assert all(p['coverage'] == 0.8 and p['label'] in p['set'] for p in preds)
    ev = run_json('text', 'evaluate', m, tmp_path/'held_out.csv')
    assert ev['conformal_how'] == 'scores' and 0.8 <= ev['conformal']['0.9']['coverage'] <= 1 and ev['selective']
    assert 'sets at 90%: held the truth' in run_cli('text', 'evaluate', real_models/'reviews', tmp_path/'held_out.csv', check=0).stdout
