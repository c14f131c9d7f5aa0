"""MovieLens sample (../shared/data/fastai_samples/movie_lens_sample/ratings.csv, 6,031 ratings) over several seeds:
the fastai book's recipe as a user types it, beside fastxfer's default on the same random split and on the `time`
split, with the global-mean and bias-only baselines and the ranking scores against popularity. JSON out.

    .venv/bin/python bench/collab_movielens.py                           # seeds 42, 1, 2
    .venv/bin/python bench/collab_movielens.py --synthetic 1000000       # scale: seconds per epoch and peak memory

Run it alone on the machine; the load average is written with the figures.
"""
import argparse, json, os, resource, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fastxfer.core import shared_data, set_quiet


def book(df, seed):
    "The book's recipe: CollabDataLoaders.from_df(ratings), collab_learner(dls, y_range=(0.5, 5.5)), fine_tune(10)."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        from fastai.collab import CollabDataLoaders, collab_learner
        from fastai.torch_core import set_seed
        set_seed(seed)
        t = time.time()
        dls = CollabDataLoaders.from_df(df, bs=64, seed=seed)
        learn = collab_learner(dls, y_range=(0.5, 5.5))
        with learn.no_bar(), learn.no_logging():
            learn.fine_tune(10)
            secs = time.time() - t
            mse = float(learn.validate()[0])
    return dict(mse=mse, train_seconds=round(secs, 1))


def ours(r, tr, va, seed):
    "fastxfer's default model on the given split: the scores `train` reports."
    from fastxfer.collab import fit_recommender, _evaluate
    from fastxfer.collab.models import y_range_of
    df = r.df
    t = time.time()
    rec = fit_recommender(df, tr, va, r.scale, y_range_of(r.scale), seed=seed)   # what `train` does: networks, biases, sessions
    secs = time.time() - t
    ev = _evaluate(rec, df.iloc[tr].reset_index(drop=True), df.iloc[va].reset_index(drop=True), seed=seed)
    net = rec.net
    return dict(train_seconds=round(secs, 1), epochs=net.epochs_used, bs=net.bs_used, members=net.members_used,
                sessions=rec.session.n if rec.session else 0, **ev)


def spread(xs): return dict(mean=float(np.mean(xs)), std=float(np.std(xs)), min=float(np.min(xs)), max=float(np.max(xs)), runs=[float(x) for x in xs])


def synthetic(n, seed=42, users=10_000, items=5_000, k=8):
    "Ratings from a low-rank taste model plus noise, on a 0.5-5 scale in half stars."
    rng = np.random.default_rng(seed)
    U, V = rng.normal(0, 0.5, (users, k)), rng.normal(0, 0.5, (items, k))
    bu, bi = rng.normal(0, 0.4, users), rng.normal(0, 0.4, items)
    pop = (np.arange(items) + 1.0)**-0.7; pop /= pop.sum()          # a few items are far more rated than most
    pairs = np.unique(rng.integers(0, users, int(n*1.3))*items + rng.choice(items, int(n*1.3), p=pop))
    pairs = rng.permutation(pairs)[:n]                               # distinct (user, item) pairs
    u, i = pairs//items, pairs % items
    n = len(pairs)
    r = 3.5 + bu[u] + bi[i] + (U[u]*V[i]).sum(1) + rng.normal(0, 0.5, n)
    return pd.DataFrame({'userId': u, 'movieId': i, 'rating': np.clip(np.round(r*2)/2, 0.5, 5), 'timestamp': rng.permutation(n)})


def scale_run(n, epochs, out):
    "One synthetic size, in this process: seconds per epoch and peak RSS."
    from fastxfer.collab.data import read_ratings, split_ratings
    from fastxfer.collab.models import CollabNet, y_range_of
    path = Path(out).with_suffix('').parent/f'collab_synthetic_{n}.csv'
    t = time.time(); synthetic(n).to_csv(path, index=False); make = time.time() - t
    t = time.time(); r = read_ratings(path); tr, va, how = split_ratings(r, 'random'); read = time.time() - t
    t = time.time(); net = CollabNet(epochs=epochs, members=1).fit(r.df, tr, va, y_range_of(r.scale)); fit = time.time() - t   # one network
    path.unlink()
    return dict(ratings=len(r.df), users=int(r.df.user.nunique()), items=int(r.df.item.nunique()), epochs=epochs, bs=net.bs_used,
                seconds_per_epoch=round(fit/epochs, 2), fit_seconds=round(fit, 1), read_seconds=round(read, 1), make_seconds=round(make, 1),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seeds', default='42,1,2')
    ap.add_argument('--synthetic', default=None, help='scale: comma-separated numbers of synthetic ratings, each run in its own process')
    ap.add_argument('--epochs', type=int, default=2, help='epochs of the scale runs')
    ap.add_argument('--one', type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument('--out', default=str(ROOT/'bench'/'results'/'collab_movielens.json'))
    a = ap.parse_args()
    set_quiet(True)
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    if a.one:
        print(json.dumps(scale_run(a.one, a.epochs, a.out))); return
    if a.synthetic:
        res = dict(bench='collab_synthetic', load_before=os.getloadavg(), cpus=os.cpu_count(), runs=[])
        for n in [int(x) for x in a.synthetic.split(',')]:
            p = subprocess.run([sys.executable, __file__, '--one', str(n), '--epochs', str(a.epochs), '--out', a.out], capture_output=True, text=True)
            if p.returncode: sys.exit(p.stderr[-3000:])
            res['runs'].append(json.loads(p.stdout.strip().splitlines()[-1])); print(json.dumps(res['runs'][-1]), file=sys.stderr)
        res['load_after'] = os.getloadavg()
        o = out.with_name('collab_synthetic.json'); o.write_text(json.dumps(res, indent=2))
        print('| ratings | users | items | batch | s per epoch | peak RSS |\n| --- | --- | --- | --- | --- | --- |')
        for r in res['runs']: print(f"| {r['ratings']:,} | {r['users']:,} | {r['items']:,} | {r['bs']} | {r['seconds_per_epoch']} | {r['peak_rss_mb']} MB |")
        print(f"load {res['load_before']} -> {res['load_after']}; wrote {o}"); return
    path = shared_data('fastai_samples/movie_lens_sample/ratings.csv')
    if path is None: print('SKIP: ../shared/data/fastai_samples/movie_lens_sample/ratings.csv not found'); return
    from fastai.data.transforms import RandomSplitter
    from fastcore.basics import range_of
    from fastxfer.collab.data import read_ratings, split_ratings
    raw = pd.read_csv(path)
    r = read_ratings(path)
    assert len(r.df) == len(raw), 'the sample has no duplicates: rows line up with the CSV'
    seeds = [int(s) for s in a.seeds.split(',')]
    res = dict(data=str(path), n=len(raw), seeds=seeds, load_before=os.getloadavg(), cpus=os.cpu_count(), runs=[])
    for seed in seeds:
        b = book(raw, seed)
        tr, va = (np.array(list(s)) for s in RandomSplitter(valid_pct=0.2, seed=seed)(range_of(raw)))   # the book's own split
        rnd = ours(r, tr, va, seed)
        ttr, tva, _ = split_ratings(r, 'time', seed=seed)
        tim = ours(r, ttr, tva, seed)
        row = dict(seed=seed, book=b, random=rnd, time=tim)
        res['runs'].append(row)
        print(json.dumps(dict(seed=seed, book=b['mse'], ours_random=rnd['model']['mse'], ours_time=tim['model']['mse'],
                              seconds=[b['train_seconds'], rnd['train_seconds'], tim['train_seconds']])), file=sys.stderr)
    R = res['runs']
    res['summary'] = {
        'book recipe (random split)': spread([x['book']['mse'] for x in R]),
        'fastxfer (random split)': spread([x['random']['model']['mse'] for x in R]),
        'biases alone (random split)': spread([x['random']['biases']['mse'] for x in R]),
        'global mean (random split)': spread([x['random']['global_mean']['mse'] for x in R]),
        'fastxfer (time split)': spread([x['time']['model']['mse'] for x in R]),
        'biases alone (time split)': spread([x['time']['biases']['mse'] for x in R]),
        'global mean (time split)': spread([x['time']['global_mean']['mse'] for x in R])}
    res['ratio_to_book'] = spread([x['random']['model']['mse']/x['book']['mse'] for x in R])
    res['ranking_time'] = {w: {m: spread([x['time']['ranking'][w][m] for x in R]) for m in ('precision@10', 'recall@10', 'ndcg@10')}
                           for w in ('model', 'popularity')}
    res['seconds'] = dict(book=spread([x['book']['train_seconds'] for x in R]), fastxfer=spread([x['random']['train_seconds'] for x in R]))
    res['load_after'] = os.getloadavg()
    out.write_text(json.dumps(res, indent=2))
    print('| validation MSE | mean | spread (min-max) |\n| --- | --- | --- |')
    for k, v in res['summary'].items(): print(f"| {k} | {v['mean']:.4f} | {v['min']:.4f}-{v['max']:.4f} |")
    print(f"fastxfer / book, same split: {res['ratio_to_book']['mean']:.3f} (min {res['ratio_to_book']['min']:.3f}, max {res['ratio_to_book']['max']:.3f})")
    for w, m in res['ranking_time'].items(): print(f'ranking on the time split, {w}: ' + ', '.join(f"{k} {v['mean']:.3f}+-{v['std']:.3f}" for k, v in m.items()))
    print(f"train seconds: book {res['seconds']['book']['mean']:.1f}, fastxfer {res['seconds']['fastxfer']['mean']:.1f}; load {res['load_before']} -> {res['load_after']}")
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
