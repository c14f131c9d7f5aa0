"""Multi-label, side by side on one split and seed (80% training, 20% validation, seed 42):

- planet (600 Planet chips, 17 tags): the fastai book's chapter-6 recipe as a user types it (`ImageDataLoaders.from_df(...,
  label_delim=' ', valid_col=...)`, chapter 6's `RandomResizedCrop(min_scale=0.35)` at 224 px and `aug_transforms()`, a learner
  on the same offline EfficientNet-Lite0 body, `metrics=partial(accuracy_multi, thresh=0.2)`, `fine_tune(3, base_lr=3e-3,
  freeze_epochs=4)`), scored at the book's threshold 0.2 and at 0.5; against fastxfer's default (`vision train --labels
  multi:csv:...`: frozen features, a logistic head per label, thresholds from out-of-fold answers on the training chips).
- goemotions (5,985 comments, 28 labels): a one-vs-rest logistic regression on TF-IDF word 1-2-grams (scikit-learn) at 0.5
  and with per-label F1-best thresholds from 5-fold out-of-fold answers on the training comments; against fastxfer's
  default (`text train --label-delim ' '`: MiniLM fine-tuned, thresholds on training comments kept out of fine-tuning)
  and its cheaper `--model embed-logreg`.

Every model is scored on the same validation items with `fastxfer.multilabel.multilabel_scores` (micro-F1, macro-F1 over
the labels the items hold, F2 per item averaged, mAP); fastxfer's models also at a plain 0.5, to check that the tuned
thresholds beat 0.5 on items they were not tuned on. Train seconds are wall time of each fit. JSON out (one object, the
last line); a line a model on stderr.

    .venv/bin/python bench/multilabel.py                      # both sets: about 15 minutes on 2 cores
    .venv/bin/python bench/multilabel.py --sets planet

Run it alone on the machine; the load average and CPU model are written with the figures.
"""
import argparse, json, os, sys, tempfile, time
from functools import partial
from pathlib import Path
import numpy as np, pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model   # bench/machine.py, beside this script
from fastxfer.core import shared_data
from fastxfer.multilabel import multilabel_scores, label_matrix, split_labels, choose_thresholds

KEEP = ('micro_f1', 'macro_f1', 'f2', 'mAP', 'hamming_loss', 'subset_accuracy')


def _row(name, P, Y, T, classes, secs, **more) -> dict:
    s = multilabel_scores(P, Y, T, classes)
    r = dict(model=name, **{k: round(s[k], 4) for k in KEEP}, train_seconds=None if secs is None else round(secs, 1), **more)
    print(f"{name:<48} micro-F1 {r['micro_f1']:.3f}  macro-F1 {r['macro_f1']:.3f}  F2 {r['f2']:.3f}  mAP {r['mAP']:.3f}  {r['train_seconds']} s", file=sys.stderr)
    return r


def planet(seed: int) -> dict:
    from fastxfer.vision.multilabel import collect_multilabel, train_multilabel_vision
    d = shared_data('multilabel/planet')
    labels = f"multi:csv:{d/'labels.csv'}"
    vd = collect_multilabel(d/'images', labels, 0.2, seed)
    classes, va = vd.classes, vd.valid_idx
    Y = label_matrix([vd.label_lists[i] for i in va], classes)
    rows, freq = [], label_matrix([vd.label_lists[i] for i in vd.train_idx], classes).mean(0)
    rows.append(_row('trivial: labels over 50% in training', np.tile(freq, (len(va), 1)), Y, np.full(len(classes), 0.5), classes, 0.))
    # fastxfer's default, as `fastxfer vision train` runs it
    t = time.time()
    learn, res, _, vd2 = train_multilabel_vision(d/'images', labels, seed=seed, quiet=True)
    secs = time.time() - t
    assert vd2.valid_idx == va and vd2.classes == classes
    from fastxfer.multilabel import Platt
    P = Platt.from_dict(res['multilabel']['calibration'], len(classes)).probs(_valid_logits_of(learn))
    rows.append(_row(f"fastxfer default ({res['mode']}, tuned thresholds)", P, Y, np.array(res['multilabel']['thresholds']), classes, secs))
    rows.append(_row('fastxfer default at 0.5', P, Y, np.full(len(classes), 0.5), classes, secs))
    # the fastai book's chapter-6 recipe
    P, secs, vocab_note = fastai_recipe(d, vd, seed)
    rows.append(_row('fastai chapter-6 recipe at 0.2', P, Y, np.full(len(classes), 0.2), classes, secs, vocab=vocab_note))
    rows.append(_row('fastai chapter-6 recipe at 0.5', P, Y, np.full(len(classes), 0.5), classes, secs))
    return dict(n_train=vd.n_train, n_valid=vd.n_valid, labels=len(classes), valid_only=vd.notes['valid_only'], rows=rows)


def _valid_logits_of(learn) -> np.ndarray:
    "The features model's validation logits, from the network as exported (body + linear head)."
    import torch
    learn.model.eval()
    out = []
    with torch.no_grad():
        for xb, _ in learn.dls.valid: out.append(learn.model(xb).float().numpy())
    return np.concatenate(out)


def fastai_recipe(d: Path, vd, seed: int) -> tuple:
    "fastai's multi-label recipe on the same split: `(validation probabilities in vd.classes order, train seconds, vocabulary note)`."
    import torch
    from fastai.vision.all import (ImageDataLoaders, RandomResizedCrop, aug_transforms, accuracy_multi, BCEWithLogitsLossFlat, set_seed, Normalize)
    from fastxfer.backbones import get_arch
    from fastxfer.vision.train import vision_learner_for
    set_seed(seed, reproducible=True)
    df = pd.read_csv(d/'labels.csv', dtype=str, keep_default_na=False)
    valid = {p.name for p in vd.valid_items()}
    df = df[df.fname.isin({p.name for p in vd.items})].copy(); df['is_valid'] = df.fname.isin(valid)
    stats = get_arch('efficientnet_lite0').stats   # what fastai's vision_learner adds for a pretrained body: its normalisation
    dls = ImageDataLoaders.from_df(df, d/'images', fn_col='fname', label_col='labels', label_delim=' ', valid_col='is_valid',
                                   item_tfms=RandomResizedCrop(224, min_scale=0.35), batch_tfms=[*aug_transforms(), Normalize.from_stats(*stats)],
                                   bs=32, num_workers=0)
    vocab = list(dls.vocab)
    note = f'{len(vocab)} labels in its vocabulary (from training and validation labels); ' + ('the same as fastxfer' if vocab == vd.classes else f'fastxfer has {len(vd.classes)}')
    learn, _ = vision_learner_for(dls, 'efficientnet_lite0', 'fine_tune', quiet=True)   # fastai's head on the offline body, frozen
    learn.loss_func, learn.metrics = BCEWithLogitsLossFlat(), [partial(accuracy_multi, thresh=0.2)]
    t = time.time()
    learn.fine_tune(3, base_lr=3e-3, freeze_epochs=4)
    secs = time.time() - t
    probs, _ = learn.get_preds(ds_idx=1)
    order = {n: i for i, n in enumerate(dls.valid.items['fname'])}
    idx = [order[p.name] for p in vd.valid_items()]
    P = probs.numpy()[idx][:, [vocab.index(c) for c in vd.classes]]
    return P, secs, note


def goemotions(seed: int) -> dict:
    from fastxfer.text.multilabel import read_multilabel_texts, train_multilabel_text, _split
    from fastxfer.model_folder import load_model
    from fastxfer.multilabel import check_label_lists
    d = shared_data('multilabel/goemotions')
    texts, lists, _ = read_multilabel_texts(d/'texts.csv', label_col='labels', label_delim=' ')
    tr, va = _split(texts, lists, None, 0.2, seed)
    classes, _ = check_label_lists([lists[i] for i in tr], [lists[i] for i in va])
    Y, rows = label_matrix(lists, classes), []
    rows += tfidf_ovr(texts, Y, tr, va, classes, seed)
    for model in ('minilm', 'embed-logreg'):
        with tempfile.TemporaryDirectory() as out:
            t = time.time()
            r = train_multilabel_text(d/'texts.csv', Path(out)/'m', label_col='labels', label_delim=' ', seed=seed, model=model)
            secs = time.time() - t
            p = load_model(Path(out)/'m')
            P, _ = p.predict_probs([texts[i] for i in va])
            rows.append(_row(f'fastxfer {model}{" (default)" if model == "minilm" else ""}, tuned thresholds', P, Y[va], p.multi.thresholds, classes, secs))
            rows.append(_row(f'fastxfer {model} at 0.5', P, Y[va], np.full(len(classes), 0.5), classes, secs))
    return dict(n_train=len(tr), n_valid=len(va), labels=len(classes), rows=rows)


def tfidf_ovr(texts, Y, tr, va, classes, seed) -> list:
    "One-vs-rest logistic regression on TF-IDF (scikit-learn) at 0.5 and with per-label F1-best thresholds from 5-fold out-of-fold answers."
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    t = time.time()
    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), OneVsRestClassifier(LogisticRegression(max_iter=1000)))
    X = [texts[i] for i in tr]
    oof = cross_val_predict(pipe, X, Y[tr], cv=KFold(5, shuffle=True, random_state=seed), method='predict_proba')
    pipe.fit(X, Y[tr])
    secs = time.time() - t
    P = pipe.predict_proba([texts[i] for i in va])
    own = choose_thresholds(oof, Y[tr], classes, shrink=0, min_tune=1)['thresholds']   # each label's own F1-best threshold, no shrinking
    return [_row('tf-idf + one-vs-rest logistic regression at 0.5', P, Y[va], np.full(len(classes), 0.5), classes, secs),
            _row('tf-idf + one-vs-rest logistic regression, tuned', P, Y[va], own, classes, secs)]


def main(a):
    os.environ['FASTXFER_CACHE'] = tempfile.mkdtemp(prefix='fastxfer-bench-')   # no cached features or embeddings: honest train seconds
    load, res = os.getloadavg(), {}
    for s in a.sets.split(','):
        if shared_data(f'multilabel/{s}') is None: print(f'skipped {s}: ../shared/data/multilabel/{s} is not here', file=sys.stderr); continue
        res[s] = {'planet': planet, 'goemotions': goemotions}[s](a.seed)
    print(json.dumps(dict(bench='multilabel', seed=a.seed, sets=res, load_average_before=[round(v, 2) for v in load],
                          load_average_after=[round(v, 2) for v in os.getloadavg()], cpu=cpu_model(), cores=os.cpu_count(),
                          date=time.strftime('%Y-%m-%d'))))


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--sets', default='planet,goemotions')
    p.add_argument('--seed', type=int, default=42)
    main(p.parse_args())
