"""What FGM adversarial training does to a text model: on fastai's IMDB sample (800 train / 200 valid by `is_valid`),
`text train --model minilm` as it is and with `--adversarial fgm` at each `--eps`, the same seeds; each model's
validation accuracy clean and under `text robustness`'s perturbations (typos, and EDA's synonym replacement,
insertion, swap and deletion, each changing `--alpha` of the words; black-box), how often each flipped the answer,
and the training seconds. JSON out (one object, the last line; also `--json-out`); a line a run on stderr.

    .venv/bin/python bench/text_robustness.py                          # seeds 42 and 1, eps 1
    .venv/bin/python bench/text_robustness.py --eps 0.5,1,2 --seeds 42 --alpha 0.2

Run it alone on the machine; the load average and CPU model are written with the figures.
"""
import argparse, contextlib, json, os, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model   # bench/machine.py, beside this script


def run(csv, out, seed, eps, a) -> dict:
    "Train minilm (FGM at `eps`, or none when None) and score it clean and perturbed."
    from fastxfer.text import train_text, text_robustness
    load0, t0 = os.getloadavg(), time.time()
    with contextlib.redirect_stdout(sys.stderr):
        r = train_text(csv, out, model='minilm', valid_col='is_valid', seed=seed, epochs=a.epochs,
                       **({'adversarial': 'fgm', 'eps': eps} if eps else {}))
        rob = text_robustness(out, csv, ops=a.ops, alpha=a.alpha, split='valid', seed=seed, out=out.parent/f'{out.name}-robustness')
    row = dict(variant=f'fgm eps {eps:g}' if eps else 'default', seed=seed, accuracy=round(r['accuracy'], 4),
               minilm_accuracy=(r.get('bow') or {}).get('minilm_valid_accuracy'), train_seconds=round(r['train_seconds'], 1),
               perturbed={p['op']: dict(accuracy=round(p['accuracy'], 4), flipped=round(p['flipped'], 4)) for p in rob['perturbations']},
               skipped=rob['skipped'], n_valid=rob['n'], wall_seconds=round(time.time() - t0, 1),
               loadavg_before=[round(x, 2) for x in load0], loadavg_after=[round(x, 2) for x in os.getloadavg()])
    print(f"{row['variant']} seed {seed}: clean {row['accuracy']:.3f}  " + '  '.join(f"{k} {v['accuracy']:.3f} ({v['flipped']:.0%} flipped)"
          for k, v in row['perturbed'].items()) + f"  train {row['train_seconds']:.0f}s  load {row['loadavg_before'][0]}", file=sys.stderr, flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seeds', default='42,1', help='comma-separated seeds; every variant once per seed')
    ap.add_argument('--eps', default='1', help='FGM budgets to compare with the default, comma-separated')
    ap.add_argument('--no-default', action='store_true', help='only the FGM variants (the default measured before)')
    ap.add_argument('--epochs', type=int, default=None, help='fine-tuning epochs (default: the tested 2)')
    ap.add_argument('--ops', default='ty,sr,ri,rs,rd', help='perturbations, as text robustness takes them')
    ap.add_argument('--alpha', type=float, default=0.1, help='the share of words each perturbation changes')
    ap.add_argument('--json-out', default='bench/results/text_robustness.json', help='also write the JSON here ("" for none)')
    a = ap.parse_args()
    from fastxfer.core import shared_data, set_quiet, versions
    csv = shared_data('fastai_samples/imdb_sample/texts.csv')
    if csv is None: print(json.dumps({'skipped': 'shared data fastai_samples/imdb_sample not found'})); return
    set_quiet(True)
    tmp = Path(tempfile.mkdtemp(prefix='fastxfer-bench-textrob-'))
    rows = [run(csv, tmp/f'{eps or "default"}-{seed}', int(seed), eps, a)
            for seed in a.seeds.split(',') for eps in [None] * (not a.no_default) + [float(e) for e in a.eps.split(',')]]
    res = dict(bench='text_robustness', data=str(csv), ops=a.ops, alpha=a.alpha, rows=rows, cpu=cpu_model(), cpu_count=os.cpu_count(),
               time=datetime.now(timezone.utc).isoformat(timespec='seconds'), versions=versions())
    if a.json_out: Path(a.json_out).parent.mkdir(parents=True, exist_ok=True); Path(a.json_out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


if __name__ == '__main__': main()
