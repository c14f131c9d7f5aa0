"""Phone photos: a portrait photo is stored sideways with an EXIF orientation that every viewer applies. How a cat/dog
model does on the same photos stored upright and stored as a phone stores them (the pixels turned a quarter to the
left, orientation 6: turn them right to show). The model: `vision train --mode features` (EfficientNet-Lite0 features
and a logistic regression) on every second photo of the shared pets (../shared/data/pets/images), cat or dog by the
file name's first letter; scored on the other half, each written upright and tagged (JPEG, quality 95). JSON out.

    .venv/bin/python bench/exif_orientation.py            # about 2 minutes on 2 cores

The accuracy does not depend on the load; the load average and CPU model are written with the figures.
"""
import argparse, json, math, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model   # bench/machine.py, beside this script
from PIL import Image
from fastxfer.core import shared_data
from fastxfer.model_folder import load_model

def label(p:Path) -> str: return 'cat' if p.name[0].isupper() else 'dog'   # Oxford-IIIT Pet: capitalised names are cats


def write_copies(photos:list, d:Path) -> dict:
    "Each photo written upright and as a phone stores it: `{'upright': [...], 'tagged': [...]}`."
    out = {'upright': [], 'tagged': []}
    (d/'upright').mkdir(parents=True); (d/'tagged').mkdir()
    for f in photos:
        im = Image.open(f).convert('RGB')
        im.save(d/'upright'/f.name, quality=95); out['upright'].append(d/'upright'/f.name)
        ex = Image.Exif(); ex[0x0112] = 6
        im.transpose(Image.Transpose.ROTATE_90).save(d/'tagged'/f.name, quality=95, exif=ex); out['tagged'].append(d/'tagged'/f.name)
    return out


def score(model, files:list) -> dict:
    "Accuracy and mean log loss of `model` on `files`."
    probs = load_model(model).predict_proba(files)
    classes = load_model(model).classes
    y = [classes.index(label(f)) for f in files]
    acc = sum(int(p.argmax() == t) for p, t in zip(probs, y)) / len(y)
    return dict(n=len(y), accuracy=round(acc, 4), log_loss=round(-sum(math.log(max(p[t], 1e-12)) for p, t in zip(probs, y)) / len(y), 4))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(ROOT/'bench'/'results'/'exif_orientation.json'))
    args = ap.parse_args()
    pets = shared_data('pets/images')
    if pets is None: print('SKIP: shared pets photos not found'); return
    photos = sorted(f for f in pets.iterdir() if f.suffix == '.jpg')
    load, t0 = os.getloadavg()[0], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in photos[::2]:
            (tmp/'train'/label(f)).mkdir(parents=True, exist_ok=True); (tmp/'train'/label(f)/f.name).symlink_to(f)
        subprocess.run([str(Path(sys.executable).parent/'fastxfer'), 'vision', 'train', str(tmp/'train'), '--mode', 'features',
                        '--out', str(tmp/'model'), '--quiet'], check=True)   # as a user trains it
        copies = write_copies(photos[1::2], tmp/'test')
        res = {k: score(tmp/'model', v) for k, v in copies.items()}
    rec = dict(cpu=cpu_model(), load_average=round(load, 2), seconds=round(time.time() - t0, 1), train=len(photos[::2]), **res)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))


if __name__ == '__main__': main()
