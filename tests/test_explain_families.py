"""`explain` for the text, tabular (and NFL) and collab families: the attributions find what decides a synthetic label,
equal the reference libraries' (shap's exact Shapley values, captum's feature ablation), and the command line writes
them, the picture included, and refuses bad targets and unknown ids with exit 2."""
import json
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import run_cli, run_json

NEUTRAL = ('the a table window chair paper river stone street cloud morning garden letter number green quiet road kitchen '
           'station evening bottle market corner yellow house pencil coffee simple').split()

def keyword_texts(n:int, seed:int) -> list[str]:
    "`n` texts of 5 to 9 neutral words; every other one has 'zebra' somewhere in it."
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        w = list(rng.choice(NEUTRAL, int(rng.integers(5, 10))))
        if i % 2: w.insert(int(rng.integers(0, len(w) + 1)), 'zebra')
        out.append(' '.join(w))
    return out


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def zebra(tmp_path_factory):
    "A text model (embed-logreg, the cheapest) whose label is 'yes' exactly when the text has the word 'zebra'."
    d = tmp_path_factory.mktemp('zebra')
    texts = keyword_texts(100, 0)
    pd.DataFrame(dict(text=texts, label=['yes' if 'zebra' in t.split() else 'no' for t in texts])).to_csv(d/'z.csv', index=False)
    run_cli('text', 'train', d/'z.csv', '--model', 'embed-logreg', '--calib-pct', 0, '--out', d/'m', '--quiet', check=0)
    from fastxfer.model_folder import load_model
    return load_model(d/'m')


@pytest.fixture(scope='module')
def one_column(tmp_path_factory):
    "A table model (gradient boosting) whose label is 'hi' exactly when x0 > 0.5; x1, x2 and the colour are noise."
    d = tmp_path_factory.mktemp('table')
    rng, n = np.random.default_rng(0), 400
    df = pd.DataFrame(dict(x0=rng.normal(size=n).round(3), x1=rng.normal(size=n).round(3), x2=rng.uniform(0, 10, n).round(2),
                           colour=rng.choice(['red', 'green', 'blue'], n)))
    df['label'] = np.where(df.x0 > 0.5, 'hi', 'lo')
    df.to_csv(d/'t.csv', index=False)
    run_cli('tabular', 'train', d/'t.csv', '--target', 'label', '--model', 'gbm', '--out', d/'m', '--quiet', check=0)
    from fastxfer.model_folder import load_model
    return load_model(d/'m')


def test_the_keyword_gets_the_largest_weight(zebra):
    texts = [t for t in keyword_texts(40, 1) if 'zebra' in t.split()]
    tops = [max(zebra.explain(t)['tokens'], key=lambda w: w['weight'])['token'] for t in texts]
    assert sum(t == 'zebra' for t in tops) >= 0.9 * len(texts), tops
    e = zebra.explain(texts[0], target='no')   # about the other class the keyword takes the most away
    assert min(e['tokens'], key=lambda w: w['weight'])['token'] == 'zebra' and e['target'] == 'no'
    assert [w['token'] for w in e['tokens']] == texts[0].split()


def test_the_deciding_column_gets_the_largest_contribution(one_column):
    assert one_column.explain_baseline()['x0'] < 0.5   # the typical row (the median x0) is 'lo'
    rng = np.random.default_rng(1)
    for x0 in (0.9, 1.3, 2.5):   # 'hi' rows, the noise columns far from typical
        row = dict(x0=x0, x1=float(rng.choice([-2, 2])), x2=float(rng.choice([0.5, 9.5])), colour=str(rng.choice(['red', 'green'])))
        e = one_column.explain(row)
        assert e['rows'][0]['feature'] == 'x0' and e['rows'][0]['contribution'] > 0.3, e['rows']
        assert e['label'] == e['target'] == 'hi' and e['summary'].startswith('label hi: ')
        assert abs(sum(r['contribution'] for r in e['rows']) - (e['answer'] - e['baseline_answer'])) < 1e-9
        json.dumps(e)


def test_shapley_values_equal_shaps(real_models):
    "shap's KernelExplainer on the same model function and the one background row (every coalition of the 5 columns: exact)."
    try: import shap
    except ImportError: print('SKIP: shap is not installed'); pytest.skip('shap is not installed')
    from fastxfer.model_folder import load_model
    p = load_model(real_models/'adult')
    base = p.explain_baseline(); cols = list(base)
    row = dict(age=52, workclass='Self-emp-inc', education='Masters', sex='Female', **{'hours-per-week': 60})
    cats = {c: sorted({row[c], base[c]}) for c in cols if isinstance(row[c], str)}   # shap masks numbers: categories by their code
    code = lambda r: [float(cats[c].index(r[c])) if c in cats else float(r[c]) for c in cols]
    def f(x):
        rows = [{c: cats[c][int(v)] if c in cats else float(v) for c, v in zip(cols, xr)} for xr in np.asarray(x)]
        return np.array([q['probs']['>=50k'] for q in p.predict(rows)])
    k = shap.KernelExplainer(f, np.array([code(base)]))
    ref = np.asarray(k.shap_values(np.array([code(row)]), nsamples=2 ** len(cols), silent=True)).ravel()
    e = p.explain(row, target='>=50k')
    mine = {r['feature']: r['contribution'] for r in e['rows']}
    assert np.allclose([mine[c] for c in cols], ref, rtol=0, atol=1e-6), (mine, ref)
    assert abs(float(k.expected_value) - e['baseline_answer']) < 1e-6 and np.abs(ref).max() > 0.05


def test_word_weights_equal_captums_feature_ablation(zebra):
    try:
        import torch
        from captum.attr import FeatureAblation
    except ImportError: print('SKIP: captum is not installed'); pytest.skip('captum is not installed')
    text = keyword_texts(6, 2)[3]
    words = text.split()
    k = zebra.classes.index('yes')
    def forward(mask):   # a 0/1 mask over the words -> the probability of 'yes' of the text of the words kept
        kept = [' '.join(w for w, m in zip(words, row) if m > 0.5) for row in mask.tolist()]
        return torch.tensor(zebra.predict_probs(kept)[0][:, k], dtype=torch.float64)
    ref = FeatureAblation(forward).attribute(torch.ones(1, len(words), dtype=torch.float64), baselines=0.0)[0].numpy()
    mine = [w['weight'] for w in zebra.explain(text, target='yes')['tokens']]
    assert np.allclose(mine, ref, rtol=0, atol=1e-6), (mine, ref)
    assert ref[words.index('zebra')] == ref.max() > 0.1   # not all zeros: the keyword carries the class


def test_text_explain_from_the_command_line(real_models, tmp_path):
    text = 'A wonderful film with great acting'
    r = run_json('text', 'explain', real_models/'reviews', text, '--out', tmp_path)
    e = r['explanations'][0]
    assert e['input'] == text and [w['token'] for w in e['tokens']] == text.split() and 'picture' not in e
    assert e['label'] in ('negative', 'positive') and e['target'] == e['label'] and e['method'] and e['summary']
    assert run_json('text', 'explain', real_models/'reviews', text, '--target', 'negative')['explanations'][0]['target'] == 'negative'
    out = run_cli('text', 'explain', real_models/'reviews', text, check=0).stdout
    assert out.startswith(f'{text}: ') and 'words that add the most:' in out
    # a file among the texts is read (as text predict reads it), not explained as its name
    (tmp_path/'two.txt').write_text(f'{text}\nA dull film\n')
    es = run_json('text', 'explain', real_models/'reviews', tmp_path/'two.txt', 'bad')['explanations']
    assert [(e['input'], e.get('source')) for e in es] == [(text, f'{tmp_path}/two.txt line 1'), ('A dull film', f'{tmp_path}/two.txt line 2'), ('bad', None)]


def test_tabular_explain_writes_the_chart(real_models, tmp_path):
    row = 'age=52,workclass=Private,education=Masters,sex=Male,hours-per-week=50'
    r = run_json('tabular', 'explain', real_models/'adult', row, '--target', '>=50k', '--out', tmp_path)
    e = r['explanations'][0]
    assert [x['feature'] for x in e['rows']] and {x['feature'] for x in e['rows']} == {'age', 'workclass', 'education', 'sex', 'hours-per-week'}
    sizes = [abs(x['contribution']) for x in e['rows']]
    assert sizes == sorted(sizes, reverse=True) and e['method'].startswith('Shapley values against a typical row (exact, 5 columns)')
    assert e['summary'].startswith('salary >=50k: ') and abs(sum(x['contribution'] for x in e['rows']) - (e['answer'] - e['baseline_answer'])) < 1e-9
    png = open(e['picture'], 'rb').read()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and str(tmp_path) in e['picture']
    # a null stays null: the model fills it in
    nulls = run_json('tabular', 'explain', real_models/'adult', json.dumps(dict(age=52, workclass=None, education='Masters', sex=None,
                                                                                **{'hours-per-week': 50})), '--out', tmp_path)
    assert {x['feature']: x['value'] for x in nulls['explanations'][0]['rows']}['sex'] is None
    # a table file among the inputs gives its rows, the first --max-rows, each named by its row as a spreadsheet shows it
    pd.DataFrame([dict(age=52, workclass='Private', education='Masters', sex='Male', salary='>=50k', **{'hours-per-week': 50}),
                  dict(age=23, workclass=None, education='HS-grad', sex='Female', salary='<50k', **{'hours-per-week': 20}),
                  dict(age=40, workclass='Private', education='HS-grad', sex='Male', salary='<50k', **{'hours-per-week': 40})]).to_csv(tmp_path/'rows.csv', index=False)
    f = run_json('tabular', 'explain', real_models/'adult', tmp_path/'rows.csv', row, '--max-rows', 2, '--target', '>=50k', '--out', tmp_path/'f')
    assert [e['input'] for e in f['explanations']] == [f"{tmp_path/'rows.csv'} row 2", f"{tmp_path/'rows.csv'} row 3", row]
    assert f['explanations'][0]['answer'] == e['answer'] and {x['feature']: x['value'] for x in f['explanations'][1]['rows']}['workclass'] is None
    assert [Path(e['picture']).name for e in f['explanations']] == ['1-rows-csv-row-2.png', '2-rows-csv-row-3.png', '3.png']   # named after the rows


def test_nfl_explain(real_models, tmp_path):
    r = run_json('nfl', 'explain', real_models/'nfl', 'team=Vipers,pf=465,pa=380,sos=1.5', '--target', 'winning', '--out', tmp_path)
    e = r['explanations'][0]
    c = {x['feature']: x['contribution'] for x in e['rows']}
    assert set(c) == {'pf', 'pa', 'sos'} and c['pf'] > 0 and c['pa'] < 0   # more points for helps, more against hurts
    assert e['answer'] > e['baseline_answer'] and open(e['picture'], 'rb').read(4) == b'\x89PNG'
    assert 'winning_season winning:' in run_cli('nfl', 'explain', real_models/'nfl', 'pf=465,pa=380,sos=1.5', '--out', tmp_path, check=0).stdout


def test_collab_explain(real_models, tmp_path):
    from fastxfer.model_folder import load_model
    p = load_model(real_models/'ml')
    user = '73'
    item = sorted(x for x in p.rec.rated[user] if x in p.rec.iidx)[0]
    e = run_json('collab', 'explain', real_models/'ml', f'user={user},item={item}', '--out', tmp_path)['explanations'][0]
    assert e['target'] is None and abs(e['global_mean'] + e['user_bias'] + e['item_bias'] + e['factors'] - e['rating']) < 1e-9
    assert 0 < len(e['rows']) <= 5 and all(x['item'] in p.rec.rated[user] and x['item'] != item for x in e['rows'])
    sims = [x['similarity'] for x in e['rows']]
    assert sims == sorted(sims, reverse=True)
    # the most similar of all the user's items, by the cosine of the item factors
    u = p.rec._unit
    best = max((x for x in p.rec.rated[user] if x != item and x in p.rec.iidx), key=lambda x: float(u[p.rec.iidx[x] - 1] @ u[p.rec.iidx[item] - 1]))
    assert e['rows'][0]['item'] == best


@pytest.mark.parametrize('family,model,given,says', [
    ('text', 'reviews', ['a fine film', '--target', 'neutral'], "target 'neutral' is not one of the model's classes"),
    ('tabular', 'adult', ['age=52,workclass=Private,education=Masters,sex=Male,hours-per-week=50', '--target', 'rich'],
     "target 'rich' is not one of the model's classes"),
    ('tabular', 'adult', ['age=52,workclass=Private,education=Masters,sex=Male,hours-per-week=50', '--max-rows', '0'], '--max-rows 0: give 1 or more'),
    ('collab', 'ml', ['user=73,item=1097', '--target', '5'], 'this model predicts a number'),
    ('text', 'reviews', ['a fine film', '  '], 'text 2 of those given is empty')])
def test_bad_explain_is_exit_2(family, model, given, says, real_models, tmp_path):
    r = run_cli(family, 'explain', real_models/model, *given, '--out', tmp_path)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and says in last, last
