"""The collab family on small ratings whose answer is known (two groups of users who love two disjoint groups of
items): each split, recommend and similar, cold start, duplicates, the typed REST row, and every bad input (a clear
message, exit 2, nothing written)."""
import json, sqlite3
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import fresh_words, run_cli, run_cli_here, run_json, request_schema

from fastxfer.core import FastxferError
from fastxfer.model_folder import load_model

N_USERS, N_ITEMS, PER_USER = 40, 20, 12


def two_groups(seed=0) -> pd.DataFrame:
    "Users u0-u19 love items i0-i9 (about 4.6) and dislike i10-i19 (about 1.4); users u20-u39 the opposite."
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for u in range(N_USERS):
        for i in rng.permutation(N_ITEMS)[:PER_USER]:
            love = (u < N_USERS//2) == (i < N_ITEMS//2)
            t += int(rng.integers(1, 100))
            rows.append((f'u{u}', f'i{i}', float(np.clip(np.round(rng.normal(4.6 if love else 1.4, 0.3)*2)/2, 0.5, 5)), t))
    return pd.DataFrame(rows, columns=['userId', 'movieId', 'rating', 'timestamp'])

loves = lambda u, i: (int(u[1:]) < N_USERS//2) == (int(i[1:]) < N_ITEMS//2)


@pytest.fixture(scope='module')
def ratings(tmp_path_factory):
    d = tmp_path_factory.mktemp('collab')
    two_groups().to_csv(d/'ratings.csv', index=False)
    return d


@pytest.fixture(scope='module')
def model(ratings):
    "Trained once through the command line (random split), as a user would."
    r = run_json('collab', 'train', ratings/'ratings.csv', '--split', 'random', '--out', ratings/'models'/'groups')
    return ratings/'models'/'groups', r


def test_train_reports_the_model_beside_its_baselines(model):
    path, r = model
    assert r['split'].startswith('random') and r['n_train'] + r['n_valid'] == N_USERS*PER_USER
    # the biases cannot tell the two tastes apart; the factors can
    assert r['metrics']['mse'] < 0.5*r['baselines']['biases']['mse'] < r['baselines']['global_mean']['mse']
    assert r['ranking']['model']['ndcg@10'] > r['ranking']['popularity']['ndcg@10']
    card = json.loads((path/'card.json').read_text())
    assert card['kind'] == 'collab' and card['y_range'] == [0.0, 5.5] and card['scale'] == [0.5, 5.0]
    assert {'collab.pt', 'biases.json', 'rated.parquet', 'sessions.npz', 'plots/loss.png', 'plots/item_factors.png', 'plots/item_bias.png'} <= set(card['files'])
    assert card['net']['members'] == 3 and card['sessions']['ratings'] == r['n_train']   # small data: three networks averaged


def test_recommend_and_similar_find_each_groups_items(model):
    path, _ = model
    df = two_groups()
    for u in ('u3', 'u27'):
        seen = set(df[df.userId == u].movieId)
        liked_left = [f'i{i}' for i in range(N_ITEMS) if f'i{i}' not in seen and loves(u, f'i{i}')]
        r = run_json('collab', 'recommend', path, '--user', u, '--n', len(liked_left))
        got = [it['item'] for it in r['items']]
        assert r['cold_start'] is False and not set(got) & seen, 'never recommends what the user rated'
        assert sorted(got) == sorted(liked_left), (u, got, liked_left)
    s = run_json('collab', 'similar', path, '--item', 'i2', '--n', 5)
    assert s['cold_start'] is False and all(int(it['item'][1:]) < N_ITEMS//2 for it in s['items']) and 'i2' not in [it['item'] for it in s['items']]


def test_predicting_and_recommending_import_no_fastai(model):
    "A recommender answers with torch alone (fastai's dot-product layers rebuilt as `DotBias`): fastai, seconds to import, is for training."
    code = ("from fastxfer.model_folder import load_model\np = load_model(sys.argv[1]); r = p.predict([{'user': 'u3', 'item': 'i2'}])[0]\n"
            "print(type(p.rec.net.models[0]).__name__, r['cold_start'], r['rating'] > 3)")
    assert fresh_words(code, model[0]) == ['DotBias', 'False', 'True', '[]']


def test_unknown_ids_get_cold_start_answers(model):
    path, _ = model
    p = load_model(path)
    known, cold = p.predict([{'user': 'u3', 'item': 'i1'}, {'user': 'stranger', 'item': 'i1'}])
    assert known['cold_start'] is False and known['rating'] > 4
    assert cold['cold_start'] is True and cold['fallback'] == "the mean plus the item's bias" and 0.5 <= cold['rating'] <= 5
    r = run_json('collab', 'recommend', path, '--user', 'stranger', '--n', 3)
    assert r['cold_start'] is True and len(r['items']) == 3 and 'popular' in r['why']
    assert run_json('collab', 'similar', path, '--item', 'nothing')['cold_start'] is True
    one = run_json('collab', 'predict', path, '--user', 'stranger', '--item', 'unknown')['predictions'][0]
    assert one['cold_start'] is True and one['fallback'] == 'the global mean'
    r = run_cli('collab', 'predict', path, 'user=u3,item=i1', '{"user": "stranger", "item": "unknown"}', check=0)   # as explain takes them
    assert [l.split(':')[0] for l in r.stdout.splitlines()] == ['user u3, item i1', 'user stranger, item unknown'], r.stdout
    assert 'cold start: the global mean' in r.stdout.splitlines()[1]
    for args, says in ((['user=u3,item=i1', '--user', 'u3'], 'not both'), ([], 'give --user ID --item ID'), (['--user', 'u3'], 'give --user ID --item ID')):
        r = run_cli('collab', 'predict', path, *args)
        assert r.returncode == 2 and says in r.stderr.strip().splitlines()[-1], r.stderr


def test_predict_a_test_set_file_to_a_submission(model, tmp_path):
    "A table of pairs (a test set with its own id column) among PAIRS gives its rows; --out writes them with their rating."
    path, _ = model
    pd.DataFrame(dict(id=[7, 8, 9], userId=['u3', 'u30', 'stranger'], movieId=['i1', 'i1', 'i1'])).to_csv(tmp_path/'test.csv', index=False)
    r = run_json('collab', 'predict', path, tmp_path/'test.csv', '--out', tmp_path/'sub.csv')
    sub = pd.read_csv(tmp_path/'sub.csv')
    assert r['out']['written'] == 3 and list(sub.columns[:4]) == ['id', 'userId', 'movieId', 'rating'] and sub.id.tolist() == [7, 8, 9]
    assert sub.rating[0] > 4 > 2 > sub.rating[1] and sub.cold_start.tolist() == [False, False, True]   # u3 loves i1, u30 does not
    before = (tmp_path/'test.csv').read_bytes()
    for args, says in (([tmp_path/'test.csv', '--out', tmp_path/'test.csv'], 'is the file the rows come from'),
                       ([tmp_path/'sub.csv', '--out', tmp_path/'x.txt'], 'give a file ending in .csv'),
                       ([path/'card.json'], "has no column 'userId'"),
                       ([tmp_path/'test.csv', 'user=u3,item=i1', 'garbage'], "input 2: 'garbage' is not col=value"),   # its place among the pairs given
                       (['user=u3', 'item=i1'], "join its values with commas, as 'user=u3,item=i1'")):   # one pair split over two arguments
        r = run_cli('collab', 'predict', path, *args)
        assert r.returncode == 2 and says in r.stderr.strip().splitlines()[-1], r.stderr
    assert (tmp_path/'test.csv').read_bytes() == before and not (tmp_path/'x.txt').exists()


@pytest.mark.parametrize('split', ['time', 'user'])
def test_each_split(ratings, split):
    from fastxfer.collab import train_collab
    r = train_collab(ratings/'ratings.csv', split=split, out=ratings/f'm_{split}', members=1, quiet=True)   # one network: the split is what is tested
    assert r['split'].startswith(split)
    if split == 'user':   # held-out users are unknown to the model: every validation rating falls back
        assert r['cold_start_in_valid'] == r['n_valid'] and r['n_valid'] == 8*PER_USER
    else:
        assert r['cold_start_in_valid'] == 0 and r['metrics']['mse'] < r['baselines']['biases']['mse']


def test_sqlite_source_duplicates_and_dropped_ratings(tmp_path):
    from fastxfer.collab import train_collab
    df = two_groups()
    extra = pd.DataFrame([('u0', 'i0', 5.0, 1), ('u0', 'i0', 3.0, 2), ('u1', 'i5', None, 3)], columns=df.columns)
    df = pd.concat([df[~((df.userId == 'u0') & (df.movieId == 'i0'))], extra]).astype({'rating': 'object'})
    df.loc[len(df)] = ['u2', 'i3', 'great', 4]
    with sqlite3.connect(tmp_path/'r.db') as con: df.to_sql('ratings', con, index=False)
    r = train_collab(f'sqlite:///{tmp_path}/r.db?table=ratings', split='random', out=tmp_path/'m', members=1, quiet=True)
    notes = ' '.join(r['notes'])
    assert '2 rating(s) empty or not a number' in notes and "'great'" in notes
    assert '1 (user, item) pair(s) rated more than once' in notes
    card = json.loads((tmp_path/'m'/'card.json').read_text())
    assert card['n_ratings'] == len(df) - 3   # two ratings dropped, two of one pair averaged into one
    e = run_json('collab', 'evaluate', tmp_path/'m', f'sqlite:///{tmp_path}/r.db?table=ratings')
    assert e['n'] == card['n_ratings'] and e['metrics']['mse'] < e['baseline']['mse']


def test_served_model_takes_a_typed_rating_row(model):
    from fastapi.testclient import TestClient
    from fastxfer.serve import create_app
    path, _ = model
    with TestClient(create_app(path.parent, ui=False)) as c:
        doc = c.get('/openapi.json').json()
        schema = request_schema(doc, '/api/v1/models/groups/predict')
        assert set(schema['properties']) == {'user', 'item', 'timestamp'} and set(schema['required']) == {'user', 'item'}
        r = c.post('/api/v1/models/groups/predict', json={'user': 'u25', 'item': 'i15'})
        assert r.status_code == 200 and r.json()['predictions'][0]['rating'] > 4, r.text
        assert c.post('/api/v1/models/groups/predict', json={'user': 'u25'}).status_code == 422
        at = c.post('/api/v1/models/groups/predict', json={'user': 'u25', 'item': 'i15', 'timestamp': 1000}).json()['predictions'][0]
        assert 'session_bias' in at and abs(at['rating'] - min(5.0, r.json()['predictions'][0]['rating'] + at['session_bias'])) < 1e-6
        assert c.post('/api/v1/models/groups/predict', json={'user': 'u25', 'item': 'i15', 'timestamp': 'noon'}).status_code == 422
        assert c.post('/api/v1/models/groups/predict', json={'user': 'new', 'item': 'i15'}).json()['predictions'][0]['cold_start'] is True
        info = c.get('/api/v1/models/groups').json()
        assert info['queries'] == {'recommend': '/api/v1/models/groups/recommend', 'similar': '/api/v1/models/groups/similar'}
        rec = c.post(info['queries']['recommend'], json={'user': 'u25', 'n': 2.9})
        assert rec.status_code == 200, rec.text
        cli = run_json('collab', 'recommend', path, '--user', 'u25', '--n', 2)
        assert [it['item'] for it in rec.json()['result']['items']] == [it['item'] for it in cli['items']], 'REST = CLI, n rounded down'
        sim = c.post(info['queries']['similar'], json={'item': 'i2'}).json()['result']
        assert len(sim['items']) == min(10, len(sim['items'])) and 'i2' not in [it['item'] for it in sim['items']]
        for bad in ({'user': 'u25', 'n': 0}, {'user': 'u25', 'n': 'ten'}, {'n': 3}, {'user': 'u25', 'n': 101}):
            r = c.post(info['queries']['recommend'], json=bad)
            assert r.status_code == 422 and r.json()['error'], (bad, r.text)


def _bad(tmp, *args):
    out = tmp/'out'
    r = run_cli_here('collab', 'train', *args, '--out', out)
    assert r.returncode == 2, r.stderr
    assert not out.exists() and not list(tmp.glob('.out*')), 'nothing is written'
    return r.stderr


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, ratings, model):
    (tmp_path/'empty.csv').write_text('')
    assert 'is empty' in _bad(tmp_path, tmp_path/'empty.csv')
    assert "no column 'uid' (--user); its columns: userId, movieId, rating, timestamp" in _bad(tmp_path, ratings/'ratings.csv', '--user', 'uid')
    (tmp_path/'norate.csv').write_text('userId,movieId,rating\n1,2,like\n3,4,\n')
    e = _bad(tmp_path, tmp_path/'norate.csv'); assert 'no usable rating left' in e and "'like'" in e, e   # what the column holds
    two_groups().drop(columns='timestamp').to_csv(tmp_path/'nots.csv', index=False)
    assert '--split time needs a timestamp column' in _bad(tmp_path, tmp_path/'nots.csv', '--split', 'time')
    assert '--y-range 5,1: the low end must be below the high end' in _bad(tmp_path, ratings/'ratings.csv', '--y-range', '5,1')
    assert "--lr 'fast' is not a number" in _bad(tmp_path, ratings/'ratings.csv', '--lr', 'fast')
    for n, why in (('0', 'n = 0 is below 1'), ('101', 'n = 101 is above 100')):   # the bounds of the REST operation
        r = run_cli_here('collab', 'recommend', model[0], '--user', 'u1', '--n', n)
        assert r.returncode == 2 and why in r.stderr, r.stderr


def test_titles_name_the_items(ratings, tmp_path):
    from fastxfer.collab import train_collab
    pd.DataFrame({'movieId': [f'i{i}' for i in range(N_ITEMS)], 'title': [f'Film {i}' for i in range(N_ITEMS)]}).to_csv(tmp_path/'t.csv', index=False)
    train_collab(ratings/'ratings.csv', split='random', out=tmp_path/'m', titles=tmp_path/'t.csv', members=1, quiet=True)
    r = run_json('collab', 'similar', tmp_path/'m', '--item', 'i4', '--n', 2)
    assert r['title'] == 'Film 4' and all(it['title'] == f"Film {it['item'][1:]}" for it in r['items'])
    assert "no column 'name' (--title-col)" in _bad(tmp_path, ratings/'ratings.csv', '--titles', tmp_path/'t.csv', '--title-col', 'name')


def test_the_notebook_widget_asks_the_recommenders_questions(model):
    "predict_widget shows a form per query below the rating; its answers are the CLI's."
    from fastxfer.widgets import predict_widget
    path, _ = model
    w = predict_widget(path)
    rec = w.queries['recommend']
    rec.fields['user'].value, rec.fields['n'].value = 'u25', 2
    rec.button.click()
    cli = run_json('collab', 'recommend', path, '--user', 'u25', '--n', 2)
    assert [it['item'] for it in rec.result['items']] == [it['item'] for it in cli['items']]
    assert all(it['item'] in rec.output.value for it in cli['items'])
    sim = w.queries['similar']
    sim.fields['item'].value = 'never-seen'
    sim.button.click()
    assert sim.result['cold_start'] is True and '(cold start)' in sim.output.value


def moods(seed=0) -> pd.DataFrame:
    "The two groups, each user rating in two sessions a week apart: one in a good mood (+0.8), one in a bad one (-0.8)."
    d = two_groups(seed)
    rng = np.random.default_rng(seed + 1)
    first = d.groupby('userId').cumcount() < PER_USER//2
    good = d.userId.map({u: bool(rng.integers(2)) for u in d.userId.unique()}) == first
    d['timestamp'] = d.timestamp + np.where(first, 0, 7*86_400)
    d['rating'] = np.clip(d.rating + np.where(good, 0.8, -0.8), 0.5, 5)
    return d


def test_sessions_sharpen_ratings_at_a_moment_in_a_new_process(tmp_path):
    moods().to_csv(tmp_path/'moods.csv', index=False)
    on = run_json('collab', 'train', tmp_path/'moods.csv', '--split', 'random', '--members', 1, '--out', tmp_path/'on')
    off = run_json('collab', 'train', tmp_path/'moods.csv', '--split', 'random', '--members', 1, '--no-sessions', '--out', tmp_path/'off')
    assert on['metrics']['mse'] < 0.8*off['metrics']['mse'], (on['metrics'], off['metrics'])   # the moods are what the factors cannot hold
    assert not (tmp_path/'off'/'sessions.npz').exists() and json.loads((tmp_path/'on'/'card.json').read_text())['net']['members'] == 1
    d = moods()
    u = d.userId.iloc[0]; mine = d[d.userId == u]
    good_t = mine.timestamp[mine.rating >= mine.rating.median()].iloc[0]
    item = mine.movieId.iloc[0]
    ask = lambda *a: run_json('collab', 'predict', tmp_path/'on', '--user', u, '--item', item, *a)['predictions'][0]
    plain, far = ask(), ask('--timestamp', good_t + 100*86_400)
    assert 'session_bias' not in plain and far['session_bias'] == 0 and far['rating'] == plain['rating']
    sessions = [ask('--timestamp', t) for t in (mine.timestamp.iloc[0] + 1, mine.timestamp.iloc[-1] - 1)]
    biases = sorted(p['session_bias'] for p in sessions)
    assert biases[0] < -0.2 and biases[1] > 0.2, sessions   # one session of the user in a bad mood, one in a good one
    rec_on = run_json('collab', 'recommend', tmp_path/'on', '--user', u)
    assert len(rec_on['items']) == N_ITEMS - PER_USER   # rankings: every unrated item, sessions or not
