"""The tabular family on small real tables: each data source, each model, regression, unseen categories,
write-back idempotence, the typed REST row, and every bad input (a clear message, exit 2, nothing written)."""
import json, sqlite3
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import fresh_words, run_cli, run_cli_here, run_json, adult_csv, request_schema, old_release, run_old

from fastxfer.core import FastxferError
from fastxfer.model_folder import load_model
from fastxfer.tabular import train_table, predict_table, evaluate_table


@pytest.fixture(scope='module')
def tables(tmp_path_factory):
    "A 400-row census table in CSV, Parquet and SQLite, and a small regression table."
    d = tmp_path_factory.mktemp('tables')
    csv = adult_csv(d/'adult.csv')
    df = pd.read_csv(csv)
    df.to_parquet(d/'adult.parquet')
    with pd.ExcelWriter(d/'adult.xlsx') as w:   # the rows on a second sheet, as a workbook often has them
        pd.DataFrame({'about': ['census rows on the next sheet']}).to_excel(w, sheet_name='README', index=False)
        df.to_excel(w, sheet_name='people', index=False)
    with sqlite3.connect(d/'census.db') as con: df.to_sql('people', con, index=False)
    rng = np.random.default_rng(1)
    n = 300
    reg = pd.DataFrame({'rooms': rng.integers(1, 8, n), 'area': rng.uniform(20, 200, n).round(1), 'city': rng.choice(['a', 'b', 'c'], n)})
    reg['price'] = 1000*reg.area + 5000*(reg.city == 'a') + rng.normal(0, 5000, n)
    reg.to_csv(d/'houses.csv', index=False)
    return d


@pytest.fixture(scope='module')
def adult_model(tables):
    "Trained once through the command line, as a user would."
    r = run_json('tabular', 'train', tables/'adult.csv', '--target', 'salary', '--out', tables/'models'/'adult')
    return tables/'models'/'adult', r


def test_train_reports_every_candidate_the_baseline_and_the_choice(adult_model):
    d, r = adult_model
    assert r['task'] == 'classification' and r['classes'] == ['<50k', '>=50k']
    assert r['roles']['cat'] == ['workclass', 'education', 'sex'] and r['roles']['cont'] == ['age', 'hours-per-week']
    assert 'row id' in r['roles']['excluded']['id']
    assert {'tabular', 'gbm', 'linear', 'average:tabular+gbm+linear'} <= set(r['candidates'])
    best = max(c['metrics']['accuracy'] for c in r['candidates'].values())
    assert r['metrics']['accuracy'] == best and r['chosen'] in r['reason']
    assert set(r['metrics']) >= {'accuracy', 'log_loss', 'brier', 'ece'} and r['baseline']['accuracy'] < r['metrics']['accuracy']
    assert {'plots/reliability.png', 'plots/importance.png', 'plots/loss.png'} <= set(r['plots'])
    card = json.loads((d/'card.json').read_text())
    assert card['importance'] and card['confusion_matrix'] and card['temperature'] > 0
    assert sum(map(sum, card['confusion_matrix'])) == r['n_valid'] == 80


def test_each_source_trains_and_predicts_the_same_rows(tables, adult_model):
    d, _ = adult_model
    csv = predict_table(d, tables/'adult.csv')['predictions']
    pq = predict_table(d, tables/'adult.parquet')['predictions']
    db = predict_table(d, f'sqlite:///{tables}/census.db?table=people')['predictions']
    db2 = predict_table(d, db=tables/'census.db', table='people')['predictions']
    xl = run_json('tabular', 'predict', d, tables/'adult.xlsx', '--table', 'people')['predictions']
    assert [p['label'] for p in csv] == [p['label'] for p in pq] == [p['label'] for p in db] == [p['label'] for p in db2] == [p['label'] for p in xl]
    e = run_cli('tabular', 'predict', d, tables/'adult.xlsx')   # the first sheet, README, has no census columns
    assert e.returncode == 2 and '(sheet README)' in e.stderr and "first sheet, 'README', of 2" in e.stderr, e.stderr
    r = train_table(None, 'salary', tables/'m_sql', db=tables/'census.db', table='people', model='gbm', quiet=True)
    assert r['chosen'] == 'gbm' and r['n_train'] + r['n_calib'] + r['n_valid'] == 400 and r['n_calib'] == 80   # a quarter of the 320 training rows (under 100)
    assert json.loads((tables/'m_sql'/'card.json').read_text())['source'] == f'sqlite:///{tables/"census.db"}?table=people'


def test_a_semicolon_csv_with_decimal_commas_reads_as_the_comma_one(tables, adult_model):
    "A spreadsheet in a European locale writes `;` between fields and 40,25 for forty and a quarter; Excel on Windows, in Windows-1252."
    from fastxfer.tabular.data import read_table
    d, _ = adult_model
    df = pd.read_csv(tables/'adult.csv', skipinitialspace=True); df['hours-per-week'] = df['hours-per-week'] + 0.25
    df.loc[0, 'workclass'] = 'Privé'
    df.to_csv(tables/'us.csv', index=False); df.to_csv(tables/'eu.csv', index=False, sep=';', decimal=',', encoding='cp1252')
    text = (tables/'eu.csv').read_bytes().decode('cp1252')
    assert ';hours-per-week;' in text.splitlines()[0] and ';40,25;' in text and 'Privé' in text
    pd.testing.assert_frame_equal(read_table(str(tables/'eu.csv')), read_table(str(tables/'us.csv')))
    assert predict_table(d, tables/'eu.csv')['predictions'] == predict_table(d, tables/'us.csv')['predictions']



def test_a_date_column_becomes_its_parts_and_stays_one_input(tmp_path):
    "Bought on a weekend or not decides the label: only the date's parts (fastai's add_datepart) can tell; rows give the date itself."
    rng = np.random.default_rng(0)
    days = pd.Timestamp('2023-01-01') + pd.to_timedelta(rng.integers(0, 730, 600), unit='D')
    df = pd.DataFrame({'bought': days.strftime('%d/%m/%Y'), 'amount': rng.uniform(1, 100, 600).round(2)})
    df['returned'] = np.where((days.dayofweek >= 5) ^ (rng.random(600) < 0.03), 'yes', 'no')
    df.to_csv(tmp_path/'sales.csv', index=False)
    r = run_json('tabular', 'train', tmp_path/'sales.csv', '--target', 'returned', '--model', 'gbm', '--out', tmp_path/'m')
    assert r['roles']['dates'] == ['bought'] and r['roles']['cont'] == ['amount'] and 'bought' not in r['roles']['excluded']
    assert r['metrics']['accuracy'] > 0.9 > r['baseline']['accuracy'] + 0.1, (r['metrics'], r['baseline'])
    p = load_model(tmp_path/'m')
    assert [(c.name, c.kind) for c in p.input.columns] == [('amount', 'number'), ('bought', 'string')]
    preds = predict_table(tmp_path/'m', row=['{"amount": 5, "bought": "13/01/2024"}', '{"amount": 5, "bought": "16/01/2024"}'])['predictions']
    assert [x['label'] for x in preds] == ['yes', 'no']      # a Saturday, a Tuesday; 13/01: the day comes first, as in training
    e = p.explain({'amount': 5, 'bought': '13/01/2024'})
    assert e['rows'][0]['feature'] == 'bought', e['rows']
    long_json = json.dumps({'amount': 5, 'bought': '13/01/2024'}, indent=200)   # longer than a file name may be: once an OSError
    e = run_json('tabular', 'explain', tmp_path/'m', long_json, '--out', tmp_path/'why')['explanations'][0]
    assert e['rows'][0]['feature'] == 'bought' and Path(e['picture']).is_file()
    for bad in ('next week', 'July', '3000-01-01'):   # 'July' read as year 1, 3000 beyond what pandas holds: once a traceback
        r = run_cli('tabular', 'predict', tmp_path/'m', '--row', f'amount=5,bought={bad}')
        assert r.returncode == 2 and f"column 'bought': '{bad}' is not a date (like " in r.stderr.strip().splitlines()[-1], r.stderr
    df.assign(bought=days).to_parquet(tmp_path/'sales.parquet')   # a real datetime column, as Parquet and pandas keep it
    li = run_json('tabular', 'label-issues', tmp_path/'sales.parquet', '--target', 'returned', '--out', tmp_path/'li')
    row = json.loads((tmp_path/'li'/'label_issues.json').read_text())['issues'][0]['row']
    assert li['n_issues'] > 0 and set(row) == {'amount', 'bought'} and pd.Timestamp(row['bought']) in set(days), row

def test_months_alone_are_dates_that_carry_to_months_not_seen(tmp_path):
    "A column of months (2021-07) is a date of three parts (year, month, time), not 72 categories: a later month is predicted by its month."
    rng = np.random.default_rng(1)
    y, m = rng.integers(2018, 2024, 400), rng.integers(1, 13, 400)
    df = pd.DataFrame({'month': [f'{a}-{b:02d}' for a, b in zip(y, m)], 'x': rng.normal(size=400), 'busy': np.where(np.isin(m, [6, 7, 8]), 'yes', 'no')})
    df.to_csv(tmp_path/'months.csv', index=False)
    r = run_json('tabular', 'train', tmp_path/'months.csv', '--target', 'busy', '--model', 'gbm', '--out', tmp_path/'m')
    assert r['roles']['dates'] == ['month'] and r['metrics']['accuracy'] > 0.95, r['metrics']
    [col] = [c for c in json.loads((tmp_path/'m'/'card.json').read_text())['columns'] if c['name'] == 'month']
    assert col['month'] is True and len(col['example']) == 7 and col['min'] == '2018-01', col
    preds = predict_table(tmp_path/'m', row=['{"month": "2026-07", "x": 0}', '{"month": "2026-12", "x": 0}'])['predictions']
    assert [p['label'] for p in preds] == ['yes', 'no']


@pytest.mark.parametrize('model', ['tabular', 'gbm', 'linear'])
def test_each_model_alone(tables, model):
    r = train_table(tables/'adult.csv', 'salary', tables/f'm_{model}', model=model, quiet=True)
    assert list(r['candidates']) == [model] and r['chosen'] == model
    p = load_model(tables/f'm_{model}')
    assert p.members == [model]
    row = {'age': 50, 'workclass': 'Private', 'education': 'Masters', 'sex': 'Male', 'hours-per-week': 60}
    pred = p.predict([row])[0]
    assert pred['label'] in ('<50k', '>=50k') and abs(sum(pred['probs'].values()) - 1) < 1e-6


def test_regression(tables):
    r = train_table(tables/'houses.csv', 'price', tables/'m_houses', quiet=True)
    assert r['task'] == 'regression' and set(r['metrics']) == {'rmse', 'mae', 'r2'}
    assert r['metrics']['r2'] > 0.8 and r['baseline']['rmse'] > r['metrics']['rmse']
    pred = predict_table(tables/'m_houses', row=['rooms=3', 'area=100', 'city=a'])['predictions'][0]
    assert 90_000 < pred['value'] < 120_000 and pred['probs'] == {}
    e = evaluate_table(tables/'m_houses', tables/'houses.csv')
    assert e['metrics']['rmse'] < e['baseline']['rmse']


def test_the_ui_shows_a_predicted_value(tables):
    "A regression has no probabilities: the UI's label shows the value, and the headline says what it is."
    import asyncio, shutil
    from fastxfer.serve import create_app, build_ui
    models = tables/'ui_models'
    train_table(tables/'houses.csv', 'price', models/'houses', model='linear', quiet=True)
    app = create_app(models)
    demo, _ = build_ui(app)
    fn = next(f.fn for f in demo.fns.values() if f.name == 'fn')
    row = {'rooms': 3, 'area': 100, 'city': 'a'}
    label, head = asyncio.run(fn(*[row[c.name] for c in app.state.hub.models['houses'].input.columns]))
    assert 90_000 < float(label) < 120_000 and head.startswith(f'## Predicted price: {float(label):,.0f}\n\n90% interval: '), head
    lo, hi = (float(v.replace(',', '')) for v in head.split('interval: ')[1].split(' to '))
    assert lo < float(label) < hi and ',' in head.split('interval: ')[1]   # readable numbers, no exponent
    shutil.rmtree(models)


def test_unseen_categories_are_counted_not_errors(tables, adult_model):
    d, _ = adult_model
    rows = pd.read_csv(tables/'adult.csv').head(4)
    rows.loc[0, 'workclass'] = 'Martian'; rows.loc[1, 'workclass'] = 'Venusian'; rows.loc[2, 'education'] = 'Hogwarts'
    rows.to_csv(tables/'unseen.csv', index=False)
    r = run_json('tabular', 'predict', d, tables/'unseen.csv')
    assert r['unseen'] == {'workclass': 2, 'education': 1}
    assert [p['unseen'] for p in r['predictions']] == [{'workclass': 1}, {'workclass': 1}, {'education': 1}, {}]
    assert set(r['ignored_columns']) == {'id', 'salary'}


def test_predicting_imports_no_fastai_and_processes_rows_as_fastai(tables, adult_model):
    "A loaded processor fills, codes and scales rows with pandas as fastai's procs do (missing and unseen values too), so predicting imports no fastai."
    from fastxfer.tabular.data import read_table
    from fastxfer.tabular.models import Processor
    d, _ = adult_model
    code = "from fastxfer.tabular import predict_table\nprint(len(predict_table(sys.argv[1], sys.argv[2])['predictions']))"
    assert fresh_words(code, d, tables/'adult.csv') == ['400', '[]']
    rows = read_table(tables/'adult.csv')
    rows.loc[rows.index[:20], 'education-num'] = np.nan; rows.loc[rows.index[20:30], 'age'] = np.nan
    rows.loc[rows.index[30:35], 'workclass'] = 'Martian'; rows.loc[rows.index[35:40], 'occupation'] = None
    plain, fastai = Processor.load(d/'processor.json'), Processor.load(d/'processor.json')
    fastai.empty   # builds fastai's procs: transform then takes them
    for a, b in zip(plain.transform(rows), fastai.transform(rows)):
        if isinstance(a, dict): assert a == b
        else: assert a.dtype == b.dtype and np.array_equal(a, b)


def test_write_back_is_one_transaction_and_idempotent_on_the_key(tables, adult_model):
    d, _ = adult_model
    rows = pd.read_csv(tables/'adult.csv').head(7).drop(columns='salary'); rows.to_csv(tables/'new.csv', index=False)
    url = f'sqlite:///{tables}/preds.db?table=adult'
    for i in range(2):
        r = run_json('tabular', 'predict', d, tables/'new.csv', '--write-to', url, '--key', 'id')
        assert r['written']['written'] == 7 and r['written']['replaced'] == 7*i
    with sqlite3.connect(tables/'preds.db') as con:
        assert con.execute('SELECT COUNT(*), COUNT(DISTINCT id) FROM adult').fetchone() == (7, 7)
        got = dict(con.execute('SELECT id, prediction FROM adult').fetchall())
    assert got == {i: p['label'] for i, p in zip(rows.id, r['predictions'])}
    # a batch whose key repeats is refused before anything is written
    pd.concat([rows, rows.head(1)]).to_csv(tables/'dup.csv', index=False)
    bad = run_cli('tabular', 'predict', d, tables/'dup.csv', '--write-to', url, '--key', 'id')
    assert bad.returncode == 2 and 'not unique' in bad.stderr
    with sqlite3.connect(tables/'preds.db') as con: assert con.execute('SELECT COUNT(*) FROM adult').fetchone() == (7,)


def test_predict_input_errors_name_the_problem(tables, adult_model):
    d, _ = adult_model
    r = run_cli('tabular', 'predict', d, '--row', 'age=40', 'workclass=Private')
    assert r.returncode == 2 and 'missing column(s) education, sex, hours-per-week' in r.stderr and 'the model needs' in r.stderr
    r = run_cli('tabular', 'predict', d, '--row', 'age=forty,workclass=Private,education=HS-grad,sex=Male,hours-per-week=40')
    assert r.returncode == 2 and "row 1, column 'age': 'forty' is not a number" in r.stderr
    # a decimal comma (as a ;-separated CSV from Excel writes it) stays one value, and the error says how to write it
    r = run_cli('tabular', 'predict', d, '--row', 'age=40,workclass=Private,education=HS-grad,sex=Male,hours-per-week=37,5')
    assert r.returncode == 2 and "column 'hours-per-week': '37,5' is not a number (write the decimals after a point)" in r.stderr
    r = run_cli('tabular', 'explain', d, 'age=40,workclass=Private,education=HS-grad,sex=Male,hours-per-week=37,5')
    assert r.returncode == 2 and "'hours-per-week' must be a finite number, got '37,5' (write the decimals after a point)" in r.stderr
    # rows as JSON in DATA, as explain takes them
    row = {'age': 40, 'workclass': 'Private', 'education': 'HS-grad', 'sex': 'Male', 'hours-per-week': 37.5}
    one, two = run_json('tabular', 'predict', d, json.dumps(row)), run_json('tabular', 'predict', d, json.dumps([row, {**row, 'age': 60}]))
    assert one['n'] == 1 and two['n'] == 2 and two['predictions'][0] == one['predictions'][0]
    r = run_cli('tabular', 'predict', d, '{"age": 40')
    assert r.returncode == 2 and 'the JSON given as DATA: not JSON' in r.stderr
    # a table file is read as training reads one: a cell that is not a number (UCI's '?') is missing, and said
    rows = pd.DataFrame([row, {**row, 'age': '?'}, {**row, 'age': None}])
    rows.to_csv(tables/'qmark.csv', index=False)
    r = run_cli('tabular', 'predict', d, tables/'qmark.csv', '--json')
    assert r.returncode == 0 and "column 'age': 1 cell(s) that are not numbers taken as missing (row 3: '?')" in r.stderr, r.stderr   # row 1: the header
    assert json.loads(r.stdout)['predictions'][1] == json.loads(r.stdout)['predictions'][2]   # '?' is predicted as an empty cell
    said = run_cli('tabular', 'predict', d, tables/'qmark.csv').stdout.splitlines()   # a file's rows as a spreadsheet numbers them
    assert [x.split(':')[0] for x in said[:3]] == ['row 2', 'row 3', 'row 4'], said
    assert run_cli('tabular', 'predict', d, json.dumps([row, row])).stdout.startswith('row 1: ')   # JSON rows count from 1
    # --out writes the rows with their prediction (the format by the extension), never over the rows' own file
    for ext in ('csv', 'xlsx', 'parquet', 'jsonl'):
        o = run_json('tabular', 'predict', d, tables/'qmark.csv', '--out', tables/f'preds.{ext}')
        back = {'csv': pd.read_csv, 'xlsx': pd.read_excel, 'parquet': pd.read_parquet, 'jsonl': lambda f: pd.read_json(f, lines=True)}[ext](tables/f'preds.{ext}')
        assert o['out']['written'] == 3 and list(back.columns[-6:]) == ['prediction', 'probability', 'set', 'coverage', 'model_id', 'predicted_at']
        assert back.prediction.tolist() == [p['label'] for p in o['predictions']] and back.education.tolist() == ['HS-grad'] * 3
    assert (tables/'preds.csv').read_text().splitlines()[1].startswith('40,')   # whole numbers with an empty cell below stay whole (not 40.0)
    o = run_json('tabular', 'predict', d, tables/'qmark.csv', '--out', tables/'sets.csv', '--coverage', '0.8')   # the set at the coverage asked for
    back = pd.read_csv(tables/'sets.csv')
    assert (back.coverage == 0.8).all() and list(back.columns) == list(pd.read_csv(tables/'preds.csv').columns)
    assert back.set.fillna('').tolist() == [' '.join(p['set']) for p in o['predictions']]
    before = (tables/'qmark.csv').read_bytes()
    for out, msg in ((tables/'qmark.csv', 'is the file the rows come from'), (tables/'p.txt', 'give a file ending in .csv')):
        r = run_cli('tabular', 'predict', d, tables/'qmark.csv', '--out', out)
        assert r.returncode == 2 and msg in r.stderr.strip().splitlines()[-1] and not (tables/'p.txt').exists(), r.stderr
    assert (tables/'qmark.csv').read_bytes() == before


def test_served_model_takes_a_typed_row(tables, adult_model):
    "A real server on loopback: the row schema comes from the model's columns."
    import httpx
    from test_serve import Server
    s = Server('--models', tables/'models', '--no-ui', cwd=tables)
    try:
        doc = httpx.get(s.url + '/openapi.json').json()
        schema = request_schema(doc, '/api/v1/models/adult/predict')
        assert set(schema['properties']) == {'age', 'workclass', 'education', 'sex', 'hours-per-week'}
        assert set(schema['required']) == set(schema['properties']) and schema['additionalProperties'] is False
        post = lambda body, path='predict': httpx.post(f'{s.url}/api/v1/models/adult/{path}', json=body)
        row = {'age': 50, 'workclass': 'Private', 'education': 'Masters', 'sex': 'Male', 'hours-per-week': 60}
        r = post(row)
        assert r.status_code == 200 and r.json()['label'] in ('<50k', '>=50k') and r.json()['predictions'][0]['unseen'] == {}
        assert post({**row, 'workclass': 'Martian'}).json()['predictions'][0]['unseen'] == {'workclass': 1}
        assert post({**row, 'age': None}).status_code == 200      # a missing value is filled in, as in training
        assert post({**row, 'age': 'old'}).status_code == 422
        assert post({k: v for k, v in row.items() if k != 'age'}).status_code == 422
        assert post({**row, 'extra': 1}).status_code == 422
        assert len(post({'rows': [row, row]}, 'predict/batch').json()['predictions']) == 2
    finally:
        s.stop()


def _bad(tmp, *args):
    out = tmp/'out'
    r = run_cli_here('tabular', 'train', *args, '--out', out)
    assert r.returncode == 2, r.stderr
    assert not out.exists() and not list(tmp.glob('.out*')), 'nothing is written'
    return r.stderr


def test_bad_tables_are_clear_errors_and_write_nothing(tmp_path, tables):
    (tmp_path/'empty.csv').write_text('')
    assert 'empty' in _bad(tmp_path, tmp_path/'empty.csv', '--target', 'y')
    assert "no column 'salry'" in (e := _bad(tmp_path, tables/'adult.csv', '--target', 'salry')) and 'workclass' in e
    pd.DataFrame({'x': range(10), 'y': ['a']*10}).to_csv(tmp_path/'one.csv', index=False)
    assert 'one class' in _bad(tmp_path, tmp_path/'one.csv', '--target', 'y')
    assert "no table 'nope'" in (e := _bad(tmp_path, f'sqlite:///{tables}/census.db?table=nope', '--target', 'salary')) and 'people' in e
    (tmp_path/'bad.parquet').write_bytes(b'PAR1 this is not parquet')
    assert 'Parquet' in _bad(tmp_path, tmp_path/'bad.parquet', '--target', 'y')
    (tmp_path/'notadb.db').write_text('hello')
    assert 'not an SQLite database' in _bad(tmp_path, tmp_path/'notadb.db', '--table', 't', '--target', 'y')


def test_an_empty_column_is_dropped_and_mixed_cells_are_counted(tmp_path, tables):
    df = pd.read_csv(tables/'adult.csv')
    df['notes'] = None
    df['hours-per-week'] = df['hours-per-week'].astype(object); df.loc[[3, 9], 'hours-per-week'] = ['lots', '?']
    df.to_csv(tmp_path/'messy.csv', index=False)
    r = train_table(tmp_path/'messy.csv', 'salary', tmp_path/'m', model='linear', quiet=True)
    assert r['roles']['excluded']['notes'] == 'empty in every row'
    assert 'hours-per-week' in r['roles']['cont']
    assert any("'hours-per-week': 2 cell(s)" in n and 'lots' in n for n in r['notes'])


# ---- a folder of an earlier release (pickles) is converted once and predicts the same ----------------------------


OLD_TRAIN = '''
import json, sys, pandas as pd
from fastxfer.tabular import train_table
from fastxfer.model_folder import load_model
data, models, rows = sys.argv[1:4]
rows, out = pd.read_csv(rows), []
for model, procs in (('gbm', 'age*hours-per-week,impute'), ('linear', None)):
    train_table(data, 'salary', f'{models}/{model}', model=model, procs=procs, seed=0, quiet=True)
    out.append([p['probs'] for p in load_model(f'{models}/{model}').predict_frame(rows)[0]])
print(json.dumps(out))
'''

def test_upgrade_converts_an_earlier_release_and_predicts_the_same(tmp_path):
    from fastxfer.model_folder import check_model
    pkg = old_release(tmp_path/'release')
    data = adult_csv(tmp_path/'adult.csv')
    rows = pd.read_csv(data).head(40)
    rows.loc[::4, 'age'] = None; rows.loc[1::5, 'workclass'] = 'Astronaut'; rows.loc[2::6, 'education'] = None
    rows.to_csv(tmp_path/'rows.csv', index=False)
    old = run_old(pkg, OLD_TRAIN, data, tmp_path/'models', tmp_path/'rows.csv')
    for (model, _), before in zip((('gbm', 'gbm.pkl'), ('linear', 'linear.pkl')), old):
        d = tmp_path/'models'/model
        assert {'processor.pkl', f'{model}.pkl'} <= {p.name for p in d.iterdir()}
        assert check_model(d)['safe'] is False
        with pytest.raises(FastxferError, match='fastxfer upgrade'): load_model(d).predict_frame(rows)
        err = run_cli_here('upgrade', d).stderr                      # without --trust: refused, nothing changed
        assert '--trust' in err and (d/'processor.pkl').exists()
        u = run_json('upgrade', d, '--trust')
        assert u['upgraded'] and sorted(u['wrote']) == sorted(['processor.json', f'{model}.skops'])
        c = run_json('check', d)
        assert c['safe'] and c['pickles'] == [] and c['format'] == 2, c
        card = json.loads((d/'card.json').read_text())
        assert card['model_files'] == {model: f'{model}.skops'} and 'processor.json' in card['files']
        after = [p['probs'] for p in load_model(d).predict_frame(rows)[0]]
        assert len(after) == len(before) == 40
        for a, b in zip(after, before):
            assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-5, (a, b)
        assert run_json('upgrade', d, '--trust')['upgraded'] is False    # a second time: already safe


def test_the_model_folder_holds_no_pickle(adult_model):
    from fastxfer.model_folder import check_model
    d, _ = adult_model
    c = check_model(d)
    assert c['safe'] and c['pickles'] == [] and c['format'] == 2, c
    assert {'processor.json', 'tabular.pt', 'gbm.skops', 'linear.skops'} <= {f['file'] for f in c['files']}


def test_the_ui_card_shows_the_baseline_beside_the_metrics(adult_model):
    from fastxfer.serve import card_markdown
    d, r = adult_model
    md = card_markdown('adult', load_model(d)).split('\n\n')
    line = next(l for l in md if l.startswith('**baseline**'))
    assert md.index(line) == next(i for i, l in enumerate(md) if l.startswith('**metrics**')) + 1
    assert f"accuracy {r['baseline']['accuracy']:.4g}" in line and 'log_loss' in line and '(the majority class' in line, line
