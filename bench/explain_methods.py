"""Which saliency method vision's `explain` uses, measured: on images whose class (red, green or blue) is a coloured
square at a random place on grey noise, how often each method's map peaks inside the square (a random point: about
10%), for a trained EfficientNet-Lite0 features model and for the same network with every weight re-initialised (the
sanity check of Adebayo et al. 2018: a method that still finds the square ignores the model). Also the share of the
map's mass inside the square, and the seconds per explanation. JSON out (one object, the last line).

    .venv/bin/python bench/explain_methods.py                 # about 2 minutes on 2 cores
    .venv/bin/python bench/explain_methods.py --size 224 --side 56 --n-train 40

Run it alone on the machine; the load average and CPU model are written with the figures.
"""
import argparse, copy, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model   # bench/machine.py, beside this script
from fastxfer.explain import attribution_map, grad_cam, integrated_gradients, smoothgrad
from fastxfer.model_folder import load_model

COLOURS = {'red': (220, 30, 30), 'green': (30, 200, 30), 'blue': (30, 30, 220)}
METHODS = {'gradcam': lambda net, x, t: grad_cam(net, x, t),
           'integrated-gradients': lambda net, x, t: attribution_map(integrated_gradients(net, x, t)),
           'gradient': lambda net, x, t: attribution_map(smoothgrad(net, x, t, n=1, sigma=0.0)),
           'smoothgrad': lambda net, x, t: attribution_map(smoothgrad(net, x, t))}


def square_images(root:Path, n:int, size:int, side:int, seed:int) -> list:
    "`n` images per colour under `root/<colour>/`: grey noise with a `side`-pixel square; `[(path, colour, (x, y))]`."
    rng, out = np.random.default_rng(seed), []
    for c, rgb in COLOURS.items():
        (root/c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(60, 196, (size, size, 1)).repeat(3, 2).astype(np.uint8)
            x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
            a[y:y + side, x:x + side] = rgb
            Image.fromarray(a).save(root/c/f'{c}{i}.png'); out.append((root/c/f'{c}{i}.png', c, (x, y)))
    return out


def randomised(net):
    "A copy of `net` with every layer's weights re-initialised (seeded)."
    r = copy.deepcopy(net)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for m in r.modules():
            if hasattr(m, 'reset_parameters'): m.reset_parameters()
    return r.eval()


def score(p, net, images, side:int, method:str) -> dict:
    "Peak-in-square rate, the map's mass in the square, and seconds per image, about each image's true class."
    hits, mass, t = [], [], time.time()
    for f, c, (x, y) in images:
        xb = p.preprocess([f])
        m = METHODS[method](net, xb, p.vocab.index(c))
        py, px = np.unravel_index(int(m.argmax()), m.shape)
        hits.append(m.max() > 0 and x <= px < x + side and y <= py < y + side)
        mass.append(float(m[y:y + side, x:x + side].sum() / max(m.sum(), 1e-12)))
    return dict(peak_in_square=round(float(np.mean(hits)), 3), mass_in_square=round(float(np.mean(mass)), 3),
                seconds_per_image=round((time.time() - t) / len(images), 3))


def main(a):
    load, t0 = os.getloadavg(), time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        square_images(tmp/'train', a.n_train, a.size, a.side, seed=0)
        valid = square_images(tmp/'valid', a.n_valid, a.size, a.side, seed=1)
        cmd = [str(Path(sys.executable).parent/'fastxfer'), 'vision', 'train', str(tmp/'train'), '--mode', a.mode, '--size', str(a.size),
               '--out', str(tmp/'model'), '--quiet', '--json']
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        trained = json.loads(r.stdout.strip().splitlines()[-1])
        p = load_model(tmp/'model')
        net, rnd = p.model, randomised(p.model)
        res = {m: dict(trained=score(p, net, valid, a.side, m), random_weights=score(p, rnd, valid, a.side, m)) for m in METHODS}
    out = dict(bench='explain_methods', task=f'{len(COLOURS)} colours, {a.n_train} training and {a.n_valid} new images each, '
               f'{a.size} px, a {a.side}-px square', mode=a.mode, model_error_rate=trained.get('error_rate'),
               chance=round(a.side ** 2 / a.size ** 2, 3), methods=res, seconds=round(time.time() - t0, 1),
               load_average_before=[round(v, 2) for v in load], cpu=cpu_model(), torch_threads=torch.get_num_threads())
    print(json.dumps(out))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--size', type=int, default=128); ap.add_argument('--side', type=int, default=40)
    ap.add_argument('--n-train', type=int, default=30); ap.add_argument('--n-valid', type=int, default=20)
    ap.add_argument('--mode', default='features', choices=['features', 'fine_tune'])
    main(ap.parse_args())
