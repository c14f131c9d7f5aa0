"""Conformal prediction sets and intervals on data the models never saw, with each set's default model. Adult census
(../shared/data/fastai_samples/adult_sample/adult.csv): the salary classifier and an `hours-per-week` regressor,
`train_table` on 70% of the rows. Pets (../shared/data/pets, 600 photos): cat/dog and the 37 breeds, `vision train`
(mode auto; `--pets-mode`) on 70% of the photos. imdb_sample: `text train` (minilm) on its 800 training reviews,
the 200 validation reviews the pool. MovieLens sample: `collab train` on 70% of the ratings. No model keeps a
calibration split of its own; the rest of the data (the pool) no model sees. Over 20 random re-splits of the pool
into calibration items (1,000 rows for Adult, half the pool elsewhere) and test items, the same for every method:
the empirical coverage and mean set size (interval width) at 0.8/0.9/0.95 for each conformity score, beside crepes
(a maintained conformal library) on the same scores, and ours over 1,000 re-splits. JSON out.

    .venv/bin/python bench/conformal.py                  # every set, about 9 minutes on 2 cores (3 of them minilm)
    .venv/bin/python bench/conformal.py --sets pets --raps-grid

Run it alone on the machine; the load average and CPU model are written with the figures.
"""
import argparse, json, os, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model   # bench/machine.py, beside this script
from fastxfer.core import shared_data
from fastxfer.conformal import COVERAGES, METHODS, Conformal, label_scores
from fastxfer.model_folder import load_model
from fastxfer.tabular import train_table
from fastxfer.tabular.data import parse_source, read_table


def pool_predictions(df, target, out, seed):
    "Train on 70% of `df` (calibration split off: the pool is the calibration data here); the model's output and targets on the other 30%."
    rng = np.random.default_rng(seed)
    pool = rng.random(len(df)) < 0.3
    with tempfile.TemporaryDirectory() as tmp:
        df[~pool].to_csv(Path(tmp)/'train.csv', index=False)
        t = time.time()
        r = train_table(Path(tmp)/'train.csv', target, out, seed=seed, calib_pct=0, quiet=True)
        secs = time.time() - t
    p = load_model(out)
    preds, _, _ = p.predict_frame(df[pool].reset_index(drop=True))
    y = df[pool][target]
    if p.task == 'classification':
        return np.array([[q['probs'][c] for c in p.classes] for q in preds]), np.array([p.classes.index(str(v).strip()) for v in y]), r, secs
    return np.array([q['value'] for q in preds]), y.to_numpy(dtype='float64'), r, secs


def pets_predictions(labels, out, seed, mode='features'):
    "`vision train --mode MODE` on 70% of the shared pets (as `labels`); the model's probabilities and labels on the other 30%."
    from fastxfer.family import get_family
    from fastxfer.vision.data import label_function
    imgs = sorted((shared_data('pets')/'images').glob('*.jpg'))
    pool = np.random.default_rng(seed).random(len(imgs)) < 0.3
    with tempfile.TemporaryDirectory() as tmp:
        for f, q in zip(imgs, pool):
            if not q: (Path(tmp)/f.name).symlink_to(f)
        t = time.time()
        r = get_family('vision').train(tmp, labels=labels, mode=mode, seed=seed, calib_pct=0, out=str(out))   # the pool calibrates
        secs = time.time() - t
    p, test = load_model(out), [f for f, q in zip(imgs, pool) if q]
    fn, classes = label_function(labels), [str(c) for c in p.classes]
    return p.predict_proba(test), np.array([classes.index(str(fn(f))) for f in test]), r, secs


MANY = 1000   # re-splits for the long-run average beside the 20: one pool's 20 re-splits vary by about a point


def resplits(n, n_cal, reps, seed) -> list:
    "`reps` random (calibration, test) index pairs of `n` items, the same for every method and coverage."
    rng = np.random.default_rng(seed)
    return [(i[:n_cal], i[n_cal:]) for i in (rng.permutation(n) for _ in range(reps))]


def covered(sets, y) -> tuple:
    "Coverage and mean size of boolean sets (n, K) for true labels `y`."
    return sets[np.arange(len(y)), y].mean(), sets.sum(1).mean()


def classify_runs(P, Y, n_cal, reps, seed):
    "Coverage and mean set size over `reps` re-splits, ours and crepes', per method and coverage; ours over MANY re-splits too."
    from crepes import ConformalClassifier
    few, many, out = resplits(len(Y), n_cal, reps, seed), resplits(len(Y), n_cal, MANY, seed + 1), {}
    for m in METHODS:
        S = label_scores(P, m)
        for c in COVERAGES:
            rows = []
            for cal, test in few:
                ours = Conformal.for_classifier(P[cal], Y[cal], m).sets(P[test], c)
                theirs = ConformalClassifier().fit(S[cal, Y[cal]]).predict_set(S[test], confidence=c, smoothing=False).astype(bool)
                rows.append([*covered(ours, Y[test]), *covered(theirs, Y[test])])
            r = np.mean(rows, 0)
            lr = np.mean([covered(Conformal.for_classifier(P[cal], Y[cal], m).sets(P[test], c), Y[test]) for cal, test in many], 0)
            out[f'{m}@{c:g}'] = dict(coverage=r[0], mean_size=r[1], crepes_coverage=r[2], crepes_mean_size=r[3],
                                     coverage_many=lr[0], mean_size_many=lr[1])
    return out


def raps_grid(P, Y, n_cal, reps, seed, coverage=0.9):
    "RAPS's `lam` and `k_reg` (Angelopoulos et al. 2021): coverage and mean set size at `coverage` for each pair, over MANY re-splits."
    many, out = resplits(len(Y), n_cal, MANY, seed + 1), {}
    for lam in (0.001, 0.01, 0.05, 0.1, 0.2, 0.5):
        for k in (1, 2, 3, 5):
            r = np.mean([covered(Conformal.for_classifier(P[cal], Y[cal], 'raps', lam=lam, k_reg=k).sets(P[test], coverage), Y[test])
                         for cal, test in many], 0)
            out[f'lam={lam:g},k_reg={k}'] = dict(coverage=r[0], mean_size=r[1])
    return out


def regress_runs(V, Y, n_cal, reps, seed):
    "Coverage and mean interval width over `reps` re-splits, ours and crepes'; ours over MANY re-splits too."
    from crepes import ConformalRegressor
    few, many, out = resplits(len(Y), n_cal, reps, seed), resplits(len(Y), n_cal, MANY, seed + 1), {}
    def ours(cal, test, c):
        lo, hi = Conformal.for_regressor(V[cal], Y[cal]).intervals(V[test], c)
        return ((lo <= Y[test]) & (Y[test] <= hi)).mean(), (hi - lo).mean()
    for c in COVERAGES:
        rows = []
        for cal, test in few:
            iv = ConformalRegressor().fit(Y[cal] - V[cal]).predict_int(V[test], confidence=c)
            rows.append([*ours(cal, test, c), ((iv[:, 0] <= Y[test]) & (Y[test] <= iv[:, 1])).mean(), (iv[:, 1] - iv[:, 0]).mean()])
        r, lr = np.mean(rows, 0), np.mean([ours(cal, test, c) for cal, test in many], 0)
        out[f'{c:g}'] = dict(coverage=r[0], mean_width=r[1], crepes_coverage=r[2], crepes_mean_width=r[3], coverage_many=lr[0], mean_width_many=lr[1])
    return out


def imdb(a, res):
    "The default text model (minilm + bag of words) trained on the IMDB sample's 800 training reviews; the 200 validation reviews are the pool."
    from fastxfer.text.models import train_text
    path = shared_data('fastai_samples/imdb_sample/texts.csv')
    if path is None: print('SKIP: ../shared/data/fastai_samples/imdb_sample/texts.csv not found'); return
    df = pd.read_csv(path)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        r = train_text(path, out=str(Path(tmp)/'imdb'), valid_col='is_valid', calib_pct=0, seed=a.seed)   # the pool calibrates
        secs = time.time() - t
        p, pool = load_model(Path(tmp)/'imdb'), df[df.is_valid]
        P = p.predict_probs(pool.text.tolist())[0]
    Y = np.array([p.classes.index(l) for l in pool.label])
    res['sets']['imdb_sample'] = dict(model=r['model'], accuracy=r.get('accuracy'), pool=len(Y), n_cal=len(Y) // 2, train_seconds=round(secs, 1),
                                      runs=classify_runs(P, Y, len(Y) // 2, a.reps, a.seed))


def movielens(a, res):
    "The default collab model trained on 70% of the MovieLens sample's ratings (random split inside); the other 30% are the pool."
    from fastxfer.collab import train_collab
    path = shared_data('fastai_samples/movie_lens_sample/ratings.csv')
    if path is None: print('SKIP: ../shared/data/fastai_samples/movie_lens_sample/ratings.csv not found'); return
    df = pd.read_csv(path)
    pool = np.random.default_rng(a.seed).random(len(df)) < 0.3
    with tempfile.TemporaryDirectory() as tmp:
        df[~pool].to_csv(Path(tmp)/'train.csv', index=False)
        t = time.time()
        r = train_collab(str(Path(tmp)/'train.csv'), out=str(Path(tmp)/'ml'), split='random', seed=a.seed, calib_pct=0, quiet=True)
        secs = time.time() - t
        p = load_model(Path(tmp)/'ml')
        rows = [dict(user=u, item=i) for u, i in zip(df[pool].userId, df[pool].movieId)]
        V = np.array([q['rating'] for q in p.predict(rows)])
    Y = df[pool].rating.to_numpy(dtype='float64')
    res['sets']['movielens ratings'] = dict(model='collab (the defaults)', rmse=r['metrics'].get('rmse'), pool=len(Y),
                                            n_cal=len(Y) // 2, train_seconds=round(secs, 1), runs=regress_runs(V, Y, len(Y) // 2, a.reps, a.seed))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--reps', type=int, default=20)
    ap.add_argument('--n-cal', type=int, default=1000)
    ap.add_argument('--sets', default='adult,pets,imdb,movielens', help='comma-separated: adult, pets, imdb, movielens')
    ap.add_argument('--pets-mode', default='auto', help='vision train --mode for the pets sets: auto (the default model), features (the quickest), fine_tune')
    ap.add_argument('--raps-grid', action='store_true', help="pets: RAPS's lam and k_reg, each pair's coverage and set size at 0.9")
    ap.add_argument('--save-probs', default=None, help="pets: write the pool's probabilities and labels (pets_LABELS.npz) into this folder")
    ap.add_argument('--out', default=str(ROOT/'bench'/'results'/'conformal.json'))
    a = ap.parse_args()
    warnings.filterwarnings('ignore')
    res = dict(seed=a.seed, reps=a.reps, n_cal=a.n_cal, cpu=cpu_model(), load_before=os.getloadavg(), sets={})
    if 'adult' in a.sets: adult(a, res)
    if 'pets' in a.sets: pets(a, res)
    if 'imdb' in a.sets: imdb(a, res)
    if 'movielens' in a.sets: movielens(a, res)
    res['load_after'] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, default=float))
    for name, s in res['sets'].items():
        print(f"{name}: {s['model']}, pool {s['pool']} items, {a.reps} re-splits, {s['n_cal']} calibration items")
        for k, v in s['runs'].items():
            size = 'mean_size' if 'mean_size' in v else 'mean_width'
            print(f"  {k:10s} coverage {v['coverage']:.4f} {size} {v[size]:.3f} | crepes {v['crepes_coverage']:.4f} {v['crepes_' + size]:.3f}"
                  f" | {MANY} re-splits {v['coverage_many']:.4f} {v[size + '_many']:.3f}")
    print(f"load {res['load_before']} -> {res['load_after']}, {res['cpu']}; {a.out}")


def pets(a, res):
    if shared_data('pets') is None: print('SKIP: ../shared/data/pets not found'); return
    with tempfile.TemporaryDirectory() as tmp:
        for labels in ('cat-dog', 'breed'):
            P, Y, r, secs = pets_predictions(labels, Path(tmp)/labels, a.seed, a.pets_mode)
            res['sets'][f'pets {labels}'] = dict(model=f"{r.get('mode', a.pets_mode)} {r.get('arch', '')}", error_rate=r['metrics'].get('error_rate'), pool=len(Y),
                                                 n_cal=len(Y)//2, train_seconds=round(secs, 1), runs=classify_runs(P, Y, len(Y)//2, a.reps, a.seed))
            if a.raps_grid: res['sets'][f'pets {labels}']['raps_grid'] = raps_grid(P, Y, len(Y)//2, a.reps, a.seed)
            if a.save_probs: np.savez(Path(a.save_probs)/f'pets_{labels}.npz', P=P, Y=Y)


def adult(a, res):
    path = shared_data('fastai_samples/adult_sample/adult.csv')
    if path is None: print('SKIP: ../shared/data/fastai_samples/adult_sample/adult.csv not found'); return
    df = read_table(parse_source(path))   # as `fastxfer tabular` reads it (category cells stripped), for training and the pool alike
    with tempfile.TemporaryDirectory() as tmp:
        P, Y, r, secs = pool_predictions(df, 'salary', Path(tmp)/'salary', a.seed)
        res['sets']['salary'] = dict(model=r['chosen'], accuracy=r['metrics']['accuracy'], pool=len(Y), n_cal=a.n_cal, train_seconds=round(secs, 1),
                                     runs=classify_runs(P, Y, a.n_cal, a.reps, a.seed))
        V, Yr, r, secs = pool_predictions(df, 'hours-per-week', Path(tmp)/'hours', a.seed)
        res['sets']['hours-per-week'] = dict(model=r['chosen'], rmse=r['metrics'].get('rmse'), pool=len(Yr), n_cal=a.n_cal, train_seconds=round(secs, 1),
                                             runs=regress_runs(V, Yr, a.n_cal, a.reps, a.seed))


if __name__ == '__main__': main()
