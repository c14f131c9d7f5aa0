"""Vision benchmark on the shared pets photos (cat vs dog, offline EfficientNet-Lite0, CPU).

For each mode (features, fine_tune, scratch; and auto, the default): validation error, training wall time,
training images/s frozen and unfrozen, predict latency p50/p95 for one image (decode + resize + network) and
throughput for a batch of 64, with the exported model's fast path (ONNX Runtime) and learn.predict for reference.
Also the 37-breed run of the default command (auto: every backbone candidate with its errors, feature seconds and
latency, and the chosen one), and what test-time augmentation gains on the validation photos for the cat/dog auto
model and the breeds model: none, flip (the image and its mirror), crops (12 views). Prints progress to stderr and
one JSON object as the last stdout line.

usage: .venv/bin/python bench/vision_pets.py [--modes auto,features,fine_tune,scratch] [--size 224] [--breeds/--no-breeds]
"""
import argparse, json, os, statistics, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path


def latency(pred, imgs, n=40):
    ts = []
    for i in range(n + 3):
        t = time.perf_counter(); pred.predict([imgs[i % len(imgs)]]); ts.append(time.perf_counter() - t)
    ts = sorted(ts[3:])
    return dict(p50_ms=round(1000*statistics.median(ts), 1), p95_ms=round(1000*ts[int(0.95*(len(ts)-1))], 1))


def throughput(pred, imgs, bs=64, reps=2):
    batch = [imgs[i % len(imgs)] for i in range(bs)]
    pred.predict(batch)
    t = time.perf_counter()
    for _ in range(reps): pred.predict(batch)
    return round(bs*reps/(time.perf_counter() - t), 1)


def train_speed(learn, dls):
    "Training images/s for one pass of a few batches, frozen then unfrozen (no metric, no validation)."
    import torch
    res = {}
    xb, yb = dls.one_batch()
    for phase in ('frozen', 'unfrozen'):
        if phase == 'frozen': learn.freeze()
        else: learn.unfreeze()
        learn.create_opt(); learn.model.train()
        t = time.perf_counter(); n = 0
        for _ in range(3):
            loss = learn.loss_func(learn.model(xb), yb); loss.backward(); learn.opt.step(); learn.opt.zero_grad(); n += len(xb)
        res[f'train_img_s_{phase}'] = round(n/(time.perf_counter() - t), 1)
    return res


def tta_gains(pred, vd):
    "Validation error and seconds of `pred` without TTA and with each TTA method."
    import numpy as np
    items = vd.valid_items(); y = np.array([pred.vocab.index(vd.labels[i]) for i in vd.valid_idx])
    res = {}
    for t in ('none', 'flip', 'crops'):
        t0 = time.perf_counter(); p = pred.predict_proba(items, tta=t)
        res[t] = dict(error_rate=round(float((p.argmax(1) != y).mean()), 4), seconds=round(time.perf_counter() - t0, 1))
    print('tta', json.dumps(res), file=sys.stderr, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--modes', default='auto,features,fine_tune,scratch')
    ap.add_argument('--size', type=int, default=None, help='image size in pixels (default: auto)')
    ap.add_argument('--scratch-epochs', type=int, default=5)
    ap.add_argument('--no-breeds', action='store_true')
    a = ap.parse_args()
    from fastxfer.core import shared_data, versions
    from fastxfer.model_folder import load_model
    from fastxfer.vision import train_vision, export_vision, make_dls, collect_data, vision_learner_for
    pets = shared_data('pets')
    if pets is None: print(json.dumps({'error': 'shared pets data not found'})); return 1
    imgs = sorted((pets/'images').glob('*.jpg'))[:64]
    out = dict(bench='vision_pets', started=datetime.now(timezone.utc).isoformat(timespec='seconds'),
               loadavg_start=os.getloadavg(), cpus=os.cpu_count(), size=a.size, versions=versions(), modes={})
    tmp = Path(tempfile.mkdtemp(prefix='fastxfer-bench-'))
    import torch
    out['torch_threads'] = torch.get_num_threads()
    for mode in a.modes.split(','):
        print(f'== {mode}', file=sys.stderr, flush=True)
        kw = dict(epochs=a.scratch_epochs) if mode == 'scratch' else {}
        os.environ['FASTXFER_CACHE'] = str(tmp/f'cache-{mode}')  # cold feature cache: honest timings
        learn, res, plots, vd = train_vision(pets, 'cat-dog', mode=mode, size=a.size, quiet=True, **kw)
        d = export_vision(learn, res, tmp/mode, vd, plots)
        p = load_model(d)
        row = dict(mode=res['mode'], error_rate=res['error_rate'], n_valid=res['n_valid'], train_seconds=res['train_seconds'],
                   backend=p.backend, auto_reason=res.get('auto_reason'), tried=res.get('tried'))
        row.update({f'predict_1_{k}': v for k,v in latency(p, imgs).items()})
        row['predict_batch64_img_s'] = throughput(p, imgs)
        if mode in ('fine_tune', 'scratch'): row.update(train_speed(learn, learn.dls))
        if mode == 'fine_tune':
            t = time.perf_counter()
            for im in imgs[:10]: learn.predict(im)
            row['learn_predict_ms'] = round(100*(time.perf_counter() - t), 1)
        if mode == 'auto': row['tta'] = tta_gains(p, vd)
        out['modes'][mode] = row
        print(json.dumps(row), file=sys.stderr, flush=True)
    if not a.no_breeds:
        print('== breeds (37 classes, the default command: auto)', file=sys.stderr, flush=True)
        os.environ['FASTXFER_CACHE'] = str(tmp/'cache-breeds')
        learn, res, plots, vd = train_vision(pets, 'breed', quiet=True)
        for c in res.get('candidates') or []: print('candidate', json.dumps(c), file=sys.stderr, flush=True)
        p = load_model(export_vision(learn, res, tmp/'breeds', vd, plots))
        out['breeds'] = dict(mode=res['mode'], arch=res['arch'], error_rate=res['error_rate'], n_valid=res['n_valid'],
                             train_seconds=res['train_seconds'], candidates=res.get('candidates'),
                             backbone_reason=res.get('backbone_reason'), auto_reason=res.get('auto_reason'),
                             predict_1_p50_ms=latency(p, imgs)['p50_ms'], tta=tta_gains(p, vd))
    out['loadavg_end'] = os.getloadavg()
    out['finished'] = datetime.now(timezone.utc).isoformat(timespec='seconds')
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
