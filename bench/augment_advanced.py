"""What the advanced augmentations do to accuracy and robustness: on the shared pets (cat/dog and the 37 breeds),
`vision train --mode fine_tune` (EfficientNet-Lite0) with the default augmentation, + MixUp, + CutMix, + MixStyle, + adversarial
training (FGSM, and PGD-3, at eps 2: `vision train`'s recipe, the adversarial versions of each batch added beside it, with PGD
a small adversarial weight perturbation), the same split and seeds; each model's validation error
clean, under FGSM at eps 1, 2, 4 and under PGD-10 at eps 2, from one random start and the worst of three (white-box, `fastxfer.augment.adversarial`; eps in pixel
steps of 1/255), and its training seconds. JSON out (one object, the last line); a line a run on stderr.

    .venv/bin/python bench/augment_advanced.py                                      # cat/dog, seeds 0 and 1, every technique
    .venv/bin/python bench/augment_advanced.py --tasks catdog,breeds --seeds 0,1 --size 224 --epochs 2

`gan`: `fastxfer augment gan` trained on the same split's training images for `--gan-minutes`, its `--gan-per-class`
images a class added to training with `--extra` (its seconds are counted in the train seconds).
Run it alone on the machine; the load average and CPU model are written with the figures.
"""
import argparse, contextlib, json, os, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model   # bench/machine.py, beside this script
from fastxfer.core import set_quiet, shared_data

TECHNIQUES = {'default': {}, 'mixup': dict(aug_mix='mixup'), 'cutmix': dict(aug_mix='cutmix'), 'mixstyle': dict(aug_style='mixstyle'),
              'fgsm': dict(adversarial='fgsm', eps=2.0), 'pgd': dict(adversarial='pgd', eps=2.0, adv_steps=3), 'gan': {}}
LABELS = {'catdog': 'cat-dog', 'breeds': 'breed'}
ATTACKS = [('fgsm', 1, 1), ('fgsm', 2, 1), ('fgsm', 4, 1), ('pgd', 2, 1), ('pgd', 2, 3)]   # (attack, eps, random starts)


def train(pets, task, technique, seed, a) -> tuple:
    "Fine-tune on the pets with `technique`; the exported folder and the training report."
    from fastxfer.family import get_family
    out = Path(tempfile.mkdtemp(prefix=f'adv-{task}-{technique}-'))/'model'
    extra = made_images(pets, task, seed, out.parent/'gan', a) if technique == 'gan' else None
    with contextlib.redirect_stdout(sys.stderr):
        r = get_family('vision').train(str(pets), out=str(out), labels=LABELS[task], mode='fine_tune', arch=a.arch, extra=extra,
                                       size=str(a.size), epochs=a.epochs, freeze_epochs=1, seed=seed, calib_pct=0.0, lr=a.lr,
                                       **{**TECHNIQUES[technique], **({'adv_ratio': a.adv_ratio, 'eps': a.adv_eps} if 'adversarial' in TECHNIQUES[technique] else {}),
                                          **({'adv_steps': a.adv_steps} if technique == 'pgd' else {}),
                                          **({'adv_awp': a.adv_awp} if technique == 'pgd' and a.adv_awp is not None else {})})
    return out, r


def made_images(pets, task, seed, out, a) -> str:
    "`augment gan` on the training split of `pets` (the split vision train makes with `seed`): the folder of made images."
    from fastxfer.augment.commands import gan
    with contextlib.redirect_stdout(sys.stderr):
        r = gan(str(pets), out=str(out), labels=LABELS[task], per_class=a.gan_per_class, minutes=a.gan_minutes, seed=seed)
    print(f"gan: {r['steps']} steps, Fréchet distance {r['frechet']['distance']} (real halves {r['frechet']['real_halves']})", file=sys.stderr)
    return r['images']


def attacked_errors(model_dir, pets, task, seed, a, on='valid') -> dict:
    "Error clean and under each attack of `ATTACKS` on the split's validation images (`on='train'`: its first `--train-check` training images)."
    from fastxfer.model_folder import load_model
    from fastxfer.vision.data import collect_data
    from fastxfer.vision.predict import _attacked_correct
    p = load_model(model_dir)
    vd = collect_data(pets, LABELS[task], seed=seed)
    idx = vd.valid_idx if on == 'valid' else vd.train_idx[:a.train_check]
    items, y = [vd.items[i] for i in idx], [p.vocab.index(vd.labels[i]) for i in idx]
    norm = p.card['normalization']; stats = (norm['mean'], norm['std'])
    out, clean = {}, None
    for attack, eps, starts in ATTACKS:
        c, hit, flat = _attacked_correct(p, items, y, attack, [eps], 10, stats, 32, restarts=starts)
        clean = c; out[f'{attack}{"-10" if attack == "pgd" else ""}{f" x{starts}" if starts > 1 else ""} eps {eps}'] = round(1 - hit[0] / len(items), 4)
    return dict(clean=round(1 - clean / len(items), 4), **out, n_valid=len(items), flat_gradient=flat)   # flat: images no gradient attack can move


def main(a):
    pets, load, runs = shared_data('pets/images'), os.getloadavg(), []
    if pets is None: print('SKIP: the shared pets photos are not here', file=sys.stderr); return
    set_quiet(True)
    for task in a.tasks.split(','):
        for seed in map(int, a.seeds.split(',')):
            for technique in a.techniques.split(','):
                t0 = time.time(); folder, r = train(pets, task, technique, seed, a)
                secs = time.time() - t0
                err = attacked_errors(folder, pets, task, seed, a)
                runs.append(dict(task=task, seed=seed, technique=technique, train_seconds=round(secs, 1), error=err))
                if a.train_check: runs[-1]['error_on_training_images'] = attacked_errors(folder, pets, task, seed, a, on='train')
                print(f"{task} seed {seed} {technique}: " + ', '.join(f'{k} {v:.3f}' for k, v in err.items() if k not in ('n_valid', 'flat_gradient'))
                      + f"; flat gradient {err['flat_gradient']}; trained in {secs:.0f} s" + (f"; on training images: " + ', '.join(f'{k} {v:.3f}' for k, v in runs[-1]['error_on_training_images'].items()
                      if k not in ('n_valid', 'flat_gradient')) if a.train_check else ''), file=sys.stderr, flush=True)
    print(json.dumps(dict(bench='augment_advanced', size=a.size, epochs=a.epochs, adv_ratio=a.adv_ratio, adv_eps=a.adv_eps, adv_steps=a.adv_steps, adv_awp=a.adv_awp, lr=a.lr, arch=a.arch, runs=runs, load_average_before=[round(v, 2) for v in load],
                          cpu=cpu_model(), torch_threads=__import__('torch').get_num_threads())))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--tasks', default='catdog'); ap.add_argument('--seeds', default='0,1')
    ap.add_argument('--techniques', default=','.join(TECHNIQUES)); ap.add_argument('--size', type=int, default=160)
    ap.add_argument('--epochs', type=int, default=1, help='unfrozen epochs after one frozen epoch')
    ap.add_argument('--gan-minutes', type=float, default=5.0); ap.add_argument('--gan-per-class', type=int, default=100)
    ap.add_argument('--adv-ratio', type=float, default=1.0, help='the share of each batch whose adversarial versions are added to it (fgsm, pgd)')
    ap.add_argument('--adv-eps', type=float, default=2.0, help='the training budget of fgsm and pgd (the attacks after training stay as listed)')
    ap.add_argument('--lr', default='default', help="vision train's --lr")
    ap.add_argument('--arch', default='efficientnet_lite0', help="vision train's --arch")
    ap.add_argument('--adv-steps', type=int, default=3, help='the PGD steps of pgd training (the attacks after training stay as listed)')
    ap.add_argument('--adv-awp', type=float, default=None, help="vision train's --adv-awp for pgd (not given: its default; 0: off)")
    ap.add_argument('--train-check', type=int, default=0, help='also attack this many training images (the gap between training and validation robustness)')
    main(ap.parse_args())
