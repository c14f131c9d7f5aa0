"""How well `label-issues` finds labels planted wrong: on the shared pets (cat/dog and the 37 breeds), imdb_sample
and adult_sample, 10% of the labels are changed (a fixed seed; uniformly to another class, and for the breeds also to a
look-alike: the breed of the same species the clean out-of-fold model confuses it with most), then each family's
out-of-fold probabilities (the verbs' own fast paths: frozen EfficientNet-Lite0 features or MiniLM embeddings with a
logistic regression, gradient boosting for the table) go to confident learning, ours and cleanlab's
`find_label_issues`. Reported per set: precision and recall of the flagged items and at k = the number of flips,
F1, seconds. JSON out (one object, the last line). Not measured here yet: the score of a model retrained without
the suspects (the issue's (a) clean, (b) noisy, (c) noisy minus suspects).

    .venv/bin/python bench/label_noise.py                         # every set, about 5 minutes on 2 cores (cold caches)
    .venv/bin/python bench/label_noise.py --sets pets-catdog,adult

Run it alone on the machine; the load average and CPU model are written with the figures.
"""
import argparse, json, os, sys, time
from pathlib import Path
import numpy as np, pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model   # bench/machine.py, beside this script
from fastxfer.core import shared_data
from fastxfer.label_issues import find_label_issues, label_quality, out_of_fold


def pets_features():
    "EfficientNet-Lite0 features of the 600 shared pets photos (cached) and the manifest."
    from fastxfer.backbones import create_body
    from fastxfer.vision.data import collect_data, make_dls
    from fastxfer.vision.train import many_body_features
    pets = shared_data('pets')
    m = pd.read_csv(pets/'manifest.csv')
    vd = collect_data(pets/'images', 'cat-dog')
    order = {Path(p).name: i for i, p in enumerate(vd.items)}
    X = many_body_features(make_dls(vd, size=224), {'lite0': create_body('efficientnet_lite0')[0].eval()}, vd.items)['lite0']
    return X[[order[f] for f in m.filename]], m


def imdb_embeddings():
    from fastxfer.text.models import embed_texts, get_encoder
    df = pd.read_csv(shared_data('fastai_samples/imdb_sample/texts.csv'))
    tok, enc, _ = get_encoder()
    return embed_texts(tok, enc, df.text.astype(str).tolist()), df.label.astype(str).to_numpy()


def adult_table():
    from fastxfer.tabular import _gbm_proba
    df = pd.read_csv(shared_data('fastai_samples/adult_sample/adult.csv'), skipinitialspace=True)
    X = df.drop(columns=['salary'])
    for c in X.columns:
        if not pd.api.types.is_numeric_dtype(X[c]): X[c] = X[c].astype(str).astype("category")
    return X, df.salary.astype(str).to_numpy(), lambda a, b: _gbm_proba(a, np.asarray(b))


def flip(y, K, rate, rng, lookalike=None):
    "`y` with `rate` of it changed to another class (uniformly, or to `lookalike[class]` when given); the changed positions."
    idx = rng.choice(len(y), int(round(rate * len(y))), replace=False)
    z = y.copy()
    z[idx] = [lookalike[v] if lookalike is not None else (v + rng.integers(1, K)) % K for v in y[idx]]
    return z, idx


def scores(mask, rank, flipped) -> dict:
    "Precision, recall and F1 of `mask`; precision at k = the number of flips of the ranking `rank` (most suspect first)."
    f, k = set(flipped.tolist()), len(flipped)
    found = set(np.flatnonzero(mask).tolist()); tp = len(found & f)
    p, r = tp / max(1, len(found)), tp / k
    return dict(flagged=len(found), precision=round(p, 3), recall=round(r, 3), f1=round(2 * p * r / max(p + r, 1e-12), 3),
                precision_at_k=round(len(set(rank[:k].tolist()) & f) / k, 3))


def run_set(name, X, y_text, rate, seed, fit=None, lookalike_of=None) -> dict:
    "Flip, out-of-fold probabilities, then ours and cleanlab's confident learning on them."
    from cleanlab.filter import find_label_issues as cleanlab_issues
    classes = sorted(set(y_text)); y = np.array([classes.index(v) for v in y_text]); K = len(classes)
    rng, t0 = np.random.default_rng(seed), time.time()
    look = lookalike_of(X, y, K) if lookalike_of else None
    z, idx = flip(y, K, rate, rng, look)
    probs = out_of_fold(X, z, K, 5, fit=fit)
    secs = time.time() - t0
    rank = np.argsort(label_quality(probs, z), kind='stable')
    ours = find_label_issues(probs, z); theirs = cleanlab_issues(z, probs)
    return dict(set=name, n=len(y), classes=K, flips=len(idx), oof_accuracy_noisy=round(float((probs.argmax(1) == z).mean()), 4),
                ours=scores(ours, rank, idx), cleanlab=scores(theirs, rank, idx), agreement=round(float((ours == theirs).mean()), 4),
                seconds=round(secs, 1))


def breed_lookalikes(X, y, K, species) -> dict:
    "Each breed's look-alike: the breed of the same species (`species[k]`) its photos are most often predicted as (clean out-of-fold)."
    conf = np.zeros((K, K))
    np.add.at(conf, (y, out_of_fold(X, y, K, 5).argmax(1)), 1)
    conf += np.random.default_rng(0).random((K, K)) * 1e-3   # ties: a random breed of the species
    np.fill_diagonal(conf, -1); conf[species[:, None] != species[None, :]] = -1   # the same species only
    return {k: int(conf[k].argmax()) for k in range(K)}


def main(a):
    load, out = os.getloadavg(), []
    sets = a.sets.split(',')
    if any(s.startswith('pets') for s in sets) and shared_data('pets'):
        X, m = pets_features()
        if 'pets-catdog' in sets: out.append(run_set('pets cat/dog', X, m.species.to_numpy(), a.rate, a.seed))
        if 'pets-breeds' in sets: out.append(run_set('pets 37 breeds, uniform flips', X, m.breed.to_numpy(), a.rate, a.seed))
        if 'pets-lookalike' in sets:
            sp = dict(zip(m.breed, m.species)); species = np.array([sp[b] for b in sorted(set(m.breed))])
            out.append(run_set('pets 37 breeds, look-alike flips', X, m.breed.to_numpy(), a.rate, a.seed,
                               lookalike_of=lambda X, y, K: breed_lookalikes(X, y, K, species)))
    if 'imdb' in sets and shared_data('fastai_samples/imdb_sample'):
        E, y = imdb_embeddings(); out.append(run_set('imdb_sample', E, y, a.rate, a.seed))
    if 'adult' in sets and shared_data('fastai_samples/adult_sample'):
        X, y, fit = adult_table(); out.append(run_set('adult_sample', X, y, a.rate, a.seed, fit=fit))
    for r in out: print(f"{r['set']}: F1 ours {r['ours']['f1']}, cleanlab {r['cleanlab']['f1']}; precision at k {r['ours']['precision_at_k']}", file=sys.stderr)
    print(json.dumps(dict(bench='label_noise', rate=a.rate, seed=a.seed, sets=out, load_average_before=[round(v, 2) for v in load], cpu=cpu_model())))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--sets', default='pets-catdog,pets-breeds,pets-lookalike,imdb,adult')
    ap.add_argument('--rate', type=float, default=0.1); ap.add_argument('--seed', type=int, default=0)
    main(ap.parse_args())
