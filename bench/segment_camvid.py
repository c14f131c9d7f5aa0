"""camvid_tiny (../shared/data/fastai_samples/camvid_tiny: 100 images, 32 codes), fastai's seeded 80/20 split, CPU,
the images' own 96x128 size for all, in one run side by side:

- the fastai book's recipe as a user types it: `SegmentationDataLoaders.from_label_func(...)`,
  `unet_learner(dls, <the same offline EfficientNet-Lite0 encoder>)`, `fine_tune(8)`;
- fastxfer's default (`fastxfer segment train`);
- the scratch U-Net baseline (`--mode scratch`: the same U-Net from random weights);
- on request (`--only ours,cutmix,mixup`), the default with `--aug-mix cutmix` or `mixup` (`SegmentMix`).

Foreground accuracy (Void excluded) and mean IoU on the validation split, train seconds, and predict ms for one
full 720x960 image (fastxfer's ONNX path against `learn.predict` of the book's learner). JSON out.

    .venv/bin/python bench/segment_camvid.py                 # all three
    .venv/bin/python bench/segment_camvid.py --only ours     # one of book, ours, scratch

Run it alone on the machine; the load average is written with the figures.
"""
import argparse, json, os, statistics, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fastxfer.core import shared_data, set_quiet
from machine import cpu_model   # bench/machine.py, beside this script


def offline_encoder(pretrained=True):
    "The offline EfficientNet-Lite0, its stages laid out for DynamicUnet, and a pooling layer for fastai's `create_body` to cut."
    from torch import nn
    from fastxfer.segment.models import unet_encoder
    enc, _ = unet_encoder('efficientnet_lite0', pretrained)
    return nn.Sequential(*enc, nn.AdaptiveAvgPool2d(1))


def scores_of(pred, targ, codes):
    from fastxfer.metrics import confusion_matrix
    from fastxfer.segment.models import seg_scores
    return seg_scores(confusion_matrix(targ, pred, len(codes)), codes, codes.index('Void'))


def book(path, seed, big, epochs=8):
    "The book's chapter-1 recipe; the file names sorted so that its split is the one fastxfer draws."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        from fastai.vision.all import SegmentationDataLoaders, get_image_files, unet_learner, set_seed
        set_seed(seed)
        codes = np.loadtxt(path/'codes.txt', dtype=str)
        t = time.time()
        dls = SegmentationDataLoaders.from_label_func(path, bs=8, fnames=get_image_files(path/'images').sorted(),
                                                      label_func=lambda o: path/'labels'/f'{o.stem}_P{o.suffix}', codes=codes, seed=seed)
        learn = unet_learner(dls, offline_encoder)
        with learn.no_bar(), learn.no_logging(): learn.fine_tune(epochs)
        secs = time.time() - t
        with learn.no_bar():
            preds, targs = learn.get_preds(dl=dls.valid)
            ms = []
            for _ in range(3):
                t = time.perf_counter(); learn.predict(big); ms.append(1000*(time.perf_counter() - t))
    s = scores_of(preds.argmax(1).numpy(), targs.numpy(), list(codes))
    return dict(train_seconds=round(secs, 1), foreground_acc=s['foreground_acc'], mean_iou=s['mean_iou'], pixel_acc=s['pixel_acc'],
                predict_ms_720x960=round(statistics.median(ms), 1), predict_path='learn.predict (PyTorch, full size)',
                valid=sorted(str(p.name) for p in dls.valid_ds.items))


def ours(path, seed, big, mode, out, epochs=None, aug_mix='none'):
    "fastxfer's default (or `--mode scratch`, or `aug_mix`) through the family, then its ONNX predictor on the full-size image."
    from fastxfer.segment import SegmentFamily, SegmentPredictor
    from fastxfer.model_folder import ModelFolder
    t = time.time()
    r = SegmentFamily().train(str(path), codes=str(path/'codes.txt'), out=str(out), mode=mode, seed=seed, epochs=epochs, aug_mix=aug_mix)
    secs = time.time() - t
    p = SegmentPredictor(ModelFolder(out))
    p.mask(big)
    ms = []
    for _ in range(5):
        t = time.perf_counter(); p.mask(big); ms.append(1000*(time.perf_counter() - t))
    s = r['scores']
    from fastxfer.segment.data import collect_segments
    sd = collect_segments(path, path/'codes.txt', seed=seed)
    return dict(train_seconds=round(secs, 1), fit_seconds=r['train_seconds'], foreground_acc=s['foreground_acc'], mean_iou=s['mean_iou'],
                pixel_acc=s['pixel_acc'], epochs=r['epochs'], freeze_epochs=r['freeze_epochs'], lr=r['lr'], precision=r['precision'],
                predict_ms_720x960=round(statistics.median(ms), 1), predict_path=f'{p.backend} at {r["size"][0]}x{r["size"][1]}, logits upsampled',
                baseline=r['baseline'], valid=sorted(Path(sd.items[i]).name for i in sd.valid_idx))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--only', default='book,ours,scratch')
    ap.add_argument('--smoke', action='store_true', help='one epoch each: checks the script, not a figure')
    ap.add_argument('--out', default=str(ROOT/'bench'/'results'/'segment_camvid.json'))
    a = ap.parse_args()
    path = shared_data('fastai_samples/camvid_tiny')
    if path is None: print('SKIP: ../shared/data/fastai_samples/camvid_tiny not found'); return
    set_quiet(True)
    from PIL import Image
    tmp = Path(tempfile.mkdtemp(prefix='fastxfer-bench-seg-'))
    big = tmp/'full_720x960.png'
    Image.open(sorted((path/'images').iterdir())[0]).resize((960, 720), Image.BICUBIC).save(big)   # CamVid's full size
    res = dict(bench='segment_camvid', data=str(path), seed=a.seed, size=[96, 128], load_before=os.getloadavg(), cpus=os.cpu_count(), cpu=cpu_model(), runs={})
    for what in a.only.split(','):
        t = time.time()
        if what == 'book': res['runs'][what] = book(path, a.seed, big, 1 if a.smoke else 8)
        else: res['runs'][what] = ours(path, a.seed, big, 'scratch' if what == 'scratch' else 'fine_tune', tmp/what, 1 if a.smoke else None,
                                       aug_mix=what if what in ('cutmix', 'mixup') else 'none')
        print(json.dumps({what: {k: v for k, v in res['runs'][what].items() if k not in ('valid', 'baseline')}}), file=sys.stderr)
    R = res['runs']
    if 'book' in R and 'ours' in R: res['same_split'] = R['book']['valid'] == R['ours']['valid']
    res['load_after'] = os.getloadavg()
    out = Path(a.out) if not a.smoke else Path(tempfile.mkdtemp())/'smoke.json'; out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(res, indent=2))
    print('| run | foreground acc | mean IoU | train s | predict ms (720x960) |\n| --- | --- | --- | --- | --- |')
    for k, v in R.items(): print(f"| {k} | {v['foreground_acc']:.3f} | {v['mean_iou']:.3f} | {v['train_seconds']} | {v['predict_ms_720x960']} ({v['predict_path']}) |")
    print(f"load {res['load_before']} -> {res['load_after']}; same split: {res.get('same_split')}; wrote {out}")


if __name__ == '__main__':
    main()
