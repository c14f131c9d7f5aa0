"""Adult census (../shared/data/fastai_samples/adult_sample/adult.csv, 32,561 rows, target `salary`) on one fixed
stratified 80/20 split (seed 42): fastai's tutorial recipe as a user types it, beside fastxfer's tabular, gbm,
linear and auto on all columns. Accuracy, log loss, ECE and train seconds for each, as JSON.

    .venv/bin/python bench/tabular_adult.py                      # the side-by-side table
    .venv/bin/python bench/tabular_adult.py --rows 1000000       # scale: auto on a synthetic table made from adult's columns
    .venv/bin/python bench/tabular_adult.py --split-seed 7       # the same on another random split (models still seed 42)

Run it alone on the machine; the load average is written with the figures.
"""
import argparse, json, os, resource, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fastxfer.core import shared_data
from fastxfer import metrics
from fastxfer.tabular.data import read_table, infer_roles, split_rows
from fastxfer.tabular.models import fit_models, ece

CAT = ['workclass', 'education', 'marital-status', 'occupation', 'relationship', 'race']
CONT = ['age', 'fnlwgt', 'education-num']


def tutorial(df, tr, va, seed):
    "fastai's tabular tutorial: TabularDataLoaders.from_df, tabular_learner(dls, metrics=accuracy), fit_one_cycle(3)."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        from fastai.tabular.all import TabularDataLoaders, Categorify, FillMissing, Normalize, tabular_learner, accuracy, set_seed
        set_seed(seed)
        t = time.time()
        dls = TabularDataLoaders.from_df(df, y_names='salary', cat_names=CAT, cont_names=CONT,
                                         procs=[Categorify, FillMissing, Normalize], splits=(list(tr), list(va)))
        learn = tabular_learner(dls, metrics=accuracy)
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3)
        secs = time.time() - t
        p, y = learn.get_preds()
    p, y = p.numpy(), y.numpy().ravel()
    vocab = list(dls.vocab)
    return dict(accuracy=metrics.accuracy(y, p), log_loss=metrics.log_loss(y, p), ece=ece(y, p), train_seconds=round(secs, 1),
                classes=vocab)


def synthetic(df, rows, seed):
    "A bigger table from adult's columns: rows resampled, numbers jittered, a few categories swapped (noise)."
    rng = np.random.default_rng(seed)
    out = df.iloc[rng.integers(0, len(df), rows)].reset_index(drop=True)
    for c in ('age', 'fnlwgt', 'hours-per-week'):
        out[c] = (out[c] * rng.normal(1, 0.05, rows)).round()
    swap = rng.random(rows) < 0.05
    out.loc[swap, 'occupation'] = out['occupation'].sample(int(swap.sum()), random_state=seed, replace=True).to_numpy()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--split-seed', type=int, default=None, help='seed of the 80/20 split (default: --seed); the models keep --seed')
    ap.add_argument('--rows', type=int, default=None, help='scale run: auto on a synthetic table of this many rows')
    ap.add_argument('--out', default=str(ROOT/'bench'/'results'/'tabular_adult.json'))
    a = ap.parse_args()
    path = shared_data('fastai_samples/adult_sample/adult.csv')
    if path is None: print('SKIP: ../shared/data/fastai_samples/adult_sample/adult.csv not found'); return
    split_seed = a.seed if a.split_seed is None else a.split_seed
    res = dict(data=str(path), seed=a.seed, split_seed=split_seed, load_before=os.getloadavg(), cpus=os.cpu_count(), runs=[])
    t = time.time()
    raw = read_table(path)
    if a.rows:
        raw = synthetic(raw, a.rows, a.seed)
        res['rows'] = a.rows
    df, roles = infer_roles(raw, 'salary')
    tr, va, how = split_rows(df, roles, 0.2, seed=split_seed)
    res.update(split=how, n_train=len(tr), n_valid=len(va), read_seconds=round(time.time() - t, 1))
    if not a.rows:
        r = tutorial(df, tr, va, a.seed)
        res['runs'].append(dict(model='fastai tutorial (6 cat + 3 cont, fit_one_cycle(3))', **r))
        print(json.dumps(res['runs'][-1]), file=sys.stderr)
    for model in (['tabular', 'gbm', 'linear', 'auto'] if not a.rows else ['auto']):
        t = time.time()
        f = fit_models(df, roles, tr, va, ('tabular', 'gbm', 'linear') if model == 'auto' else (model,), seed=a.seed, quiet=True)
        secs = time.time() - t
        m = f.candidates[f.chosen]['metrics']
        res['runs'].append(dict(model=f'fastxfer {model}', chosen=f.chosen, accuracy=m['accuracy'], log_loss=m['log_loss'],
                                ece=m['ece'], train_seconds=round(secs, 1), seconds=f.seconds,
                                candidates={k: v['metrics'] for k, v in f.candidates.items()} if model == 'auto' else None))
        print(json.dumps({k: v for k, v in res['runs'][-1].items() if k != 'candidates'}), file=sys.stderr)
    res['baseline'] = f.baseline
    res['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)
    res['load_after'] = os.getloadavg()
    out = Path(a.out if not a.rows else a.out.replace('.json', f'_{a.rows}.json'))
    if split_seed != a.seed: out = out.with_name(out.stem + f'_split{split_seed}.json')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f'| model | accuracy | log loss | ECE | train s |\n| --- | --- | --- | --- | --- |')
    for r in res['runs']:
        print(f"| {r['model']}{' -> ' + r['chosen'] if r.get('chosen') and 'auto' in r['model'] else ''} | {r['accuracy']:.4f} | "
              f"{r['log_loss']:.4f} | {r['ece']:.4f} | {r['train_seconds']} |")
    print(f"split: {how}, {len(tr)} train / {len(va)} valid; peak RSS {res['peak_rss_mb']} MB; load {res['load_before']} -> {res['load_after']}")
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
