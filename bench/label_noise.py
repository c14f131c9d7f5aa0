"""How well `label-issues` finds labels planted wrong, and what dropping its suspects gives back: on the shared pets
(cat/dog and the 37 breeds), imdb_sample and adult_sample. Each set is split once (the seed; stratified by the clean
label) into a training part (80%) and a validation part (20%) whose labels stay clean. In the training part 10% of the
labels are changed (uniformly to another class, and for the breeds also to a look-alike: the breed of the same species
the clean out-of-fold model confuses it with most), then the out-of-fold probabilities of each family's fast path
(a logistic regression on frozen EfficientNet-Lite0 features; for the texts one on MiniLM embeddings blended with the
bag-of-words model, as `text label-issues` does; gradient boosting for the table)
on the noisy training part go to confident learning, ours and cleanlab's `find_label_issues`. Detection, per set:
precision and recall of the flagged items and at k = the number of flips, F1, seconds. Retraining (the issue's (a), (b),
(c)): the same fast-path model fitted on the whole training part with (a) the clean labels, (b) the noisy labels,
(c) the noisy labels minus the items ours flagged, scored on the clean validation part (accuracy and macro F1), and
`recovered` = (c - b) / (a - b), null (the ratio means nothing) where a - b is under one standard error of the
clean score on the validation part, sqrt(a (1 - a) / n), or under one item.
Beside (c), `cleaned_surest`: only the surest suspects dropped (scored `SUREST`, 0.75, or more: what `fastxfer review
--delete-over 0.75` and the review page's button delete), with its own `recovered_*_surest`. Experiments: the suspects
relabelled to the out-of-fold answer instead of dropped (`relabelled`), and (c)'s probabilities moved back to the
class prior of the noisy labels (`given_prior`) or to confident learning's estimate of the true one (`latent_prior`).
With `--decompose`, (c) taken apart (`taken_apart`): refitted with only the flips among the suspects dropped, only the
correctly labelled ones, every flip, and as many flips as were found picked at random.
JSON out (one object, the last line); a summary line a set on stderr.

    .venv/bin/python bench/label_noise.py                         # every set, 3 repeats: about 5 minutes on 2 cores (features cached)
    .venv/bin/python bench/label_noise.py --sets pets-catdog,imdb,adult --repeats 20 --seed 20   # the figures in bench/README.md
    .venv/bin/python bench/label_noise.py --sets pets-breeds,pets-lookalike --repeats 10 --seed 20
    .venv/bin/python bench/label_noise.py --sets pets-catdog,adult
    .venv/bin/python bench/label_noise.py --sets pets-catdog,imdb,adult --repeats 20 --seed 20 --decompose   # (c) taken apart: see taken_apart

Run it alone on the machine; the load average and CPU model are written with the figures.
"""
import argparse, json, os, sys, time
from pathlib import Path
import numpy as np, pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model   # bench/machine.py, beside this script
from fastxfer.core import shared_data
from fastxfer.label_issues import find_label_issues, issue_rows, label_quality, out_of_fold, surest


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
    "The IMDB sample's MiniLM embeddings (cached), labels and reviews."
    from fastxfer.text.models import embed_texts, get_encoder
    df = pd.read_csv(shared_data('fastai_samples/imdb_sample/texts.csv'))
    tok, enc, _ = get_encoder(); texts = df.text.astype(str).to_numpy()
    return embed_texts(tok, enc, texts.tolist()), df.label.astype(str).to_numpy(), texts


def adult_table():
    from fastxfer.tabular import _gbm_proba
    df = pd.read_csv(shared_data('fastai_samples/adult_sample/adult.csv'), skipinitialspace=True)
    X = df.drop(columns=['salary'])
    for c in X.columns:
        if not pd.api.types.is_numeric_dtype(X[c]): X[c] = X[c].astype(str).astype("category")
    return X, df.salary.astype(str).to_numpy(), lambda a, b: _gbm_proba(a, np.asarray(b))


def probe_fit(n_classes):
    "The fit `out_of_fold` uses by default (text and vision's fast path): a logistic regression, C chosen by 3-fold CV."
    from fastxfer.label_issues import fast_probe
    return lambda X, y: fast_probe(X, y, n_classes)


def take(X, ix):
    "Rows `ix` of `X`, a table (keeping its column types) or an array."
    return X.iloc[ix] if hasattr(X, 'iloc') else np.asarray(X)[ix]


def split(y, seed, validation=0.2):
    "Training and validation positions: one split, stratified by the (clean) label `y`."
    from sklearn.model_selection import train_test_split
    return train_test_split(np.arange(len(y)), test_size=validation, stratify=y, random_state=seed)


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


def detect(X, z, K, flipped, fit) -> tuple[dict, np.ndarray]:
    "Out-of-fold probabilities on the noisy labels `z`, ours and cleanlab's confident learning on them: the figures, our mask."
    from cleanlab.filter import find_label_issues as cleanlab_issues
    probs = out_of_fold(X, z, K, 5, fit=fit)
    rank = np.argsort(label_quality(probs, z), kind='stable')
    ours = find_label_issues(probs, z); theirs = cleanlab_issues(z, probs)
    return dict(oof_accuracy_noisy=round(float((probs.argmax(1) == z).mean()), 4), ours=scores(ours, rank, flipped),
                cleanlab=scores(theirs, rank, flipped), agreement=round(float((ours == theirs).mean()), 4)), ours, probs


def validation_score(fit, X_train, y_train, X_val, y_val) -> dict:
    "Accuracy and macro F1 on the validation part of the model `fit` on the training rows given."
    from sklearn.metrics import f1_score
    pred = fit(X_train, y_train)(X_val).argmax(1)
    return dict(accuracy=round(float((pred == y_val).mean()), 4), macro_f1=round(float(f1_score(y_val, pred, average='macro')), 4))


def recovered(a, b, c, n_val):
    """(c - b) / (a - b), the share of the score lost to the noise that dropping the suspects gives back; None when the loss
    a - b is within noise: under one standard error of the clean score on `n_val` items, sqrt(a (1 - a) / n_val), or one item."""
    return round((c - b) / (a - b), 3) if a - b >= max(1 / n_val, np.sqrt(a * (1 - a) / n_val)) else None


def prior_moved(fit, prior):
    """`fit` whose model's probabilities are moved from the class prior of the labels it was fitted on to `prior` (each
    class's probability times the ratio of the two priors, Saerens et al. 2002): what dropping suspects took from a class's share put back."""
    def refit(X, y):
        proba, own = fit(X, y), np.bincount(y, minlength=len(prior)) / len(y)
        return lambda Z: proba(Z) * (prior / np.maximum(own, 1e-12))
    return refit


def retrain(X_tr, y_tr, z_tr, suspects, probs, X_va, y_va, fit) -> dict:
    """The issue's (a) clean, (b) noisy, (c) noisy minus `suspects` labels: the model refitted on the training part, scored
    on validation; and, experiments beside (c): the suspects relabelled to the out-of-fold suggestion instead of dropped,
    and (c) with its prior moved back to the noisy labels' (`given_prior`) or to confident learning's estimate of the true one (`latent_prior`)."""
    from fastxfer.label_issues import confident_joint
    keep, K = np.flatnonzero(~suspects), probs.shape[1]
    clean, noisy = validation_score(fit, X_tr, y_tr, X_va, y_va), validation_score(fit, X_tr, z_tr, X_va, y_va)
    cleaned = validation_score(fit, take(X_tr, keep), z_tr[keep], X_va, y_va)
    sure = np.zeros(len(z_tr), bool)   # what `review --delete-over 0.75` deletes: the package's own rule on the report's rows
    sure[[int(r['item']) for r in surest(issue_rows(np.arange(len(z_tr)), z_tr, probs, list(range(K)), suspects))]] = True
    cleaned_surest = validation_score(fit, take(X_tr, np.flatnonzero(~sure)), z_tr[~sure], X_va, y_va)
    relabelled = validation_score(fit, X_tr, np.where(suspects, probs.argmax(1), z_tr), X_va, y_va)
    C = confident_joint(probs, z_tr, K)
    given_prior = validation_score(prior_moved(fit, np.bincount(z_tr, minlength=K) / len(z_tr)), take(X_tr, keep), z_tr[keep], X_va, y_va)
    latent_prior = validation_score(prior_moved(fit, C.sum(0) / C.sum()), take(X_tr, keep), z_tr[keep], X_va, y_va)
    out = dict(clean=clean, noisy=noisy, cleaned=cleaned, cleaned_surest=cleaned_surest, relabelled=relabelled, given_prior=given_prior, latent_prior=latent_prior,
               removed=int(suspects.sum()), removed_surest=int(sure.sum()),
               recovered_accuracy=recovered(clean['accuracy'], noisy['accuracy'], cleaned['accuracy'], len(y_va)),
               recovered_f1=recovered(clean['macro_f1'], noisy['macro_f1'], cleaned['macro_f1'], len(y_va)),
               recovered_accuracy_surest=recovered(clean['accuracy'], noisy['accuracy'], cleaned_surest['accuracy'], len(y_va)),
               recovered_f1_surest=recovered(clean['macro_f1'], noisy['macro_f1'], cleaned_surest['macro_f1'], len(y_va)))
    if out['recovered_accuracy'] is None or out['recovered_f1'] is None:
        out['recovered_note'] = 'null: clean minus noisy is within one standard error of the validation score, the ratio means nothing'
    return out


def taken_apart(fit, X_tr, z_tr, suspects, flipped, X_va, y_va, seed) -> dict:
    """(c) taken apart (`--decompose`): the model refitted with only the flips among the suspects dropped (`found_flips`),
    only the correctly labelled items among them (`flagged_clean`), every flip (what a perfect finder would drop) and
    as many flips as it found picked at random (`random_flips`: are the flips it finds worth more or less than others?)."""
    isflip = np.zeros(len(z_tr), bool); isflip[flipped] = True
    found = suspects & isflip
    rnd = np.zeros(len(z_tr), bool); rnd[np.random.default_rng(seed + 999).choice(flipped, int(found.sum()), replace=False)] = True
    drop = dict(found_flips=found, flagged_clean=suspects & ~isflip, every_flip=isflip, random_flips=rnd)
    out = {k: validation_score(fit, take(X_tr, np.flatnonzero(~d)), z_tr[~d], X_va, y_va) for k, d in drop.items()}
    return dict(out, n_found_flips=int(found.sum()), n_flagged_clean=int(drop['flagged_clean'].sum()))


def run_set(name, X, y_text, rate, seed, fit=None, lookalike_of=None, decompose=False) -> dict:
    "Split, flip the training part, detect the flips, then retrain on clean, noisy and cleaned labels."
    classes = sorted(set(y_text)); y = np.array([classes.index(v) for v in y_text]); K = len(classes)
    fit = fit or probe_fit(K)
    tr, va = split(y, seed)
    X_tr, y_tr, X_va, y_va = take(X, tr), y[tr], take(X, va), y[va]
    rng, t0 = np.random.default_rng(seed), time.time()
    look = lookalike_of(X_tr, y_tr, K) if lookalike_of else None
    z_tr, flipped = flip(y_tr, K, rate, rng, look)
    found, ours, probs = detect(X_tr, z_tr, K, flipped, fit)
    secs, t1 = time.time() - t0, time.time()
    again = retrain(X_tr, y_tr, z_tr, ours, probs, X_va, y_va, fit)
    if decompose: again['taken_apart'] = taken_apart(fit, X_tr, z_tr, ours, flipped, X_va, y_va, seed)
    return dict(set=name, n=len(y), n_train=len(tr), n_validation=len(va), classes=K, flips=len(flipped), **found,
                seconds=round(secs, 1), **again, retrain_seconds=round(time.time() - t1, 1))


def breed_lookalikes(X, y, K, species) -> dict:
    "Each breed's look-alike: the breed of the same species (`species[k]`) its photos are most often predicted as (clean out-of-fold)."
    conf = np.zeros((K, K))
    np.add.at(conf, (y, out_of_fold(X, y, K, 5).argmax(1)), 1)
    conf += np.random.default_rng(0).random((K, K)) * 1e-3   # ties: a random breed of the species
    np.fill_diagonal(conf, -1); conf[species[:, None] != species[None, :]] = -1   # the same species only
    return {k: int(conf[k].argmax()) for k in range(K)}


def recovered_interval(runs, score, n_boot=2000, seed=0, variant='cleaned'):
    """A 90% bootstrap interval of `recovered` over the runs (resampled with replacement, the ratio of their means);
    None with fewer than 5 runs. It shows how far the ratio can move with other splits and flips."""
    if len(runs) < 5: return None
    abc = np.array([[r[v][score] for v in ('clean', 'noisy', variant)] for r in runs])
    idx = np.random.default_rng(seed).integers(0, len(runs), (n_boot, len(runs)))
    a, b, c = abc[idx].mean(1).T
    ratio = (c - b) / np.where(a - b > 0, a - b, np.nan)
    lo, hi = np.nanpercentile(ratio, [5, 95])
    return [round(float(lo), 2), round(float(hi), 2)]


def repeated(name, X, y_text, a, **kw) -> dict:
    """`run_set` on `a.repeats` splits and flips (seeds a.seed, a.seed + 1, ...): each run, and their means, `recovered`
    computed on the means (the standard error then over every run's validation items)."""
    runs = [run_set(name, X, y_text, a.rate, a.seed + k, decompose=a.decompose, **kw) for k in range(a.repeats)]
    mean = lambda f: round(float(np.mean([f(r) for r in runs])), 4)
    variants = ('clean', 'noisy', 'cleaned', 'cleaned_surest', 'relabelled', 'given_prior', 'latent_prior')
    raw = {v: {s: float(np.mean([r[v][s] for r in runs])) for s in ('accuracy', 'macro_f1')} for v in variants}   # the ratios: from unrounded means
    m = {v: {s: round(raw[v][s], 4) for s in raw[v]} for v in variants}
    n_val = sum(r['n_validation'] for r in runs)
    out = dict(runs[0], **m, removed=mean(lambda r: r['removed']), removed_surest=mean(lambda r: r['removed_surest']), flips=mean(lambda r: r['flips']),
               ours={k: mean(lambda r: r['ours'][k]) for k in runs[0]['ours']}, cleanlab={k: mean(lambda r: r['cleanlab'][k]) for k in runs[0]['cleanlab']},
               oof_accuracy_noisy=mean(lambda r: r['oof_accuracy_noisy']), agreement=mean(lambda r: r['agreement']),
               seconds=mean(lambda r: r['seconds']), retrain_seconds=mean(lambda r: r['retrain_seconds']), repeats=len(runs), runs=runs)
    for s, key in (('accuracy', 'recovered_accuracy'), ('macro_f1', 'recovered_f1')):
        out[key] = recovered(raw['clean'][s], raw['noisy'][s], raw['cleaned'][s], n_val)
        out[key + '_90'] = recovered_interval(runs, s)
        out[key + '_surest'] = recovered(raw['clean'][s], raw['noisy'][s], raw['cleaned_surest'][s], n_val)
        out[key + '_surest_90'] = recovered_interval(runs, s, variant='cleaned_surest')
        out[key.replace('recovered', 'recovered_by_relabelling')] = recovered(raw['clean'][s], raw['noisy'][s], raw['relabelled'][s], n_val)
        for v in ('given_prior', 'latent_prior'): out[f'{key}_{v}'] = recovered(raw['clean'][s], raw['noisy'][s], raw[v][s], n_val)
    if a.decompose: out['taken_apart'] = taken_apart_means(runs, raw, n_val)
    return out


def taken_apart_means(runs, raw, n_val) -> dict:
    "`--decompose`: each part's mean accuracy over the runs, its `recovered` (by accuracy), and how many items it dropped a run."
    out = {}
    for k in ('found_flips', 'flagged_clean', 'every_flip', 'random_flips'):
        acc = float(np.mean([r['taken_apart'][k]['accuracy'] for r in runs]))
        out[k] = dict(accuracy=round(acc, 4), recovered_accuracy=recovered(raw['clean']['accuracy'], raw['noisy']['accuracy'], acc, n_val))
    for k in ('n_found_flips', 'n_flagged_clean'): out[k] = round(float(np.mean([r['taken_apart'][k] for r in runs])), 2)
    return out


def summary_line(r) -> str:
    "One set's figures for people: detection F1, then validation accuracy and macro F1 for clean / noisy / cleaned labels."
    c, n, d = r['clean'], r['noisy'], r['cleaned']
    return (f"{r['set']}: F1 ours {r['ours']['f1']}, cleanlab {r['cleanlab']['f1']}; precision at k {r['ours']['precision_at_k']}; "
            f"validation accuracy clean {c['accuracy']} / noisy {n['accuracy']} / cleaned {d['accuracy']} (recovered {r['recovered_accuracy']}, 90% {r.get('recovered_accuracy_90')}), "
            f"macro F1 {c['macro_f1']} / {n['macro_f1']} / {d['macro_f1']} (recovered {r['recovered_f1']}); removed {r['removed']}; "
            f"the surest only ({r['removed_surest']} removed): accuracy {r['cleaned_surest']['accuracy']} (recovered {r['recovered_accuracy_surest']}, "
            f"90% {r.get('recovered_accuracy_surest_90')}), macro F1 {r['cleaned_surest']['macro_f1']} (recovered {r.get('recovered_f1_surest')}); "
            f"suspects relabelled instead: accuracy {r['relabelled']['accuracy']} (recovered {r.get('recovered_by_relabelling_accuracy')}); "
            f"cleaned, prior moved to the given labels': {r['given_prior']['accuracy']} / {r['given_prior']['macro_f1']} (recovered {r.get('recovered_accuracy_given_prior')} / {r.get('recovered_f1_given_prior')}), "
            f"to the latent: {r['latent_prior']['accuracy']} / {r['latent_prior']['macro_f1']} (recovered {r.get('recovered_accuracy_latent_prior')} / {r.get('recovered_f1_latent_prior')})"
            + (f"; taken apart (accuracy, recovered): {t}" if (t := r.get('taken_apart')) else ''))


def main(a):
    load, out = os.getloadavg(), []
    sets = a.sets.split(',')
    if any(s.startswith('pets') for s in sets) and shared_data('pets'):
        X, m = pets_features()
        if 'pets-catdog' in sets: out.append(repeated('pets cat/dog', X, m.species.to_numpy(), a))
        if 'pets-breeds' in sets: out.append(repeated('pets 37 breeds, uniform flips', X, m.breed.to_numpy(), a))
        if 'pets-lookalike' in sets:
            sp = dict(zip(m.breed, m.species)); species = np.array([sp[b] for b in sorted(set(m.breed))])
            out.append(repeated('pets 37 breeds, look-alike flips', X, m.breed.to_numpy(), a,
                               lookalike_of=lambda X, y, K: breed_lookalikes(X, y, K, species)))
    if 'imdb' in sets and shared_data('fastai_samples/imdb_sample'):
        from fastxfer.text.models import text_fast_fit   # what `text label-issues` fits: the embeddings' probe blended with the bag of words
        E, y, texts = imdb_embeddings(); out.append(repeated('imdb_sample', np.arange(len(y)), y, a, fit=text_fast_fit(E, texts, 2)))
    if 'adult' in sets and shared_data('fastai_samples/adult_sample'):
        X, y, fit = adult_table(); out.append(repeated('adult_sample', X, y, a, fit=fit))
    for r in out: print(summary_line(r), file=sys.stderr)
    print(json.dumps(dict(bench='label_noise', rate=a.rate, seed=a.seed, repeats=a.repeats, sets=out, load_average_before=[round(v, 2) for v in load], cpu=cpu_model())))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--sets', default='pets-catdog,pets-breeds,pets-lookalike,imdb,adult')
    ap.add_argument('--rate', type=float, default=0.1); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--repeats', type=int, default=3, help='splits and flips per set (seeds seed, seed+1, ...); the figures are their means')
    ap.add_argument('--decompose', action='store_true', help='also refit with only the flips among the suspects dropped, only the correctly labelled ones, every flip, and as many flips at random')
    main(ap.parse_args())
