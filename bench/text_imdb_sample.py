"""Benchmark: the three text models on fastai's IMDB sample (800 train / 200 valid by `is_valid`), CPU.

usage: .venv/bin/python bench/text_imdb_sample.py [--models minilm,embed-logreg,awd_lstm] [--seeds 42] [--max-len 256]
       [--window 128] [--epochs N] [--lr default|auto|FLOAT] [--precision auto|fp32|bf16] [--ensemble N] [--no-bow]

Prints one line per run on stderr and one JSON object (the table) as the last line of stdout; it is also
written to `bench/results/text_imdb_sample.json` (`--json-out`). With several `--seeds` each model is trained once per seed and the rows say which. Other
jobs on the same CPU slow it down: the load average before and after each run is recorded.
"""
import argparse, json, os, platform, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--models', default='minilm,embed-logreg,awd_lstm')
    ap.add_argument('--max-len', type=int, default=None)
    ap.add_argument('--window', type=int, default=None, help='minilm, embed-logreg: tokens per encoder pass (default 128)')
    ap.add_argument('--epochs', type=int, default=None)
    ap.add_argument('--seeds', default='42', help='comma-separated seeds; one run per model and seed')
    ap.add_argument('--lr', default='default')
    ap.add_argument('--precision', default=None, help='auto (default) | fp32 | bf16')
    ap.add_argument('--ensemble', type=int, default=1, help='minilm: models per ensemble (default 1)')
    ap.add_argument('--json-out', default='bench/results/text_imdb_sample.json', help='also write the JSON table here ("" for no file)')
    ap.add_argument('--bs', type=int, default=None)
    ap.add_argument('--no-bow', action='store_true', help='minilm: the encoder alone, without the bag-of-words model')
    ap.add_argument('--out', default=None, help='folder for the model folders (default: a temporary one)')
    ap.add_argument('--warm-cache', action='store_true', help='keep the embeddings cache of data/ (default: a fresh, empty one per run)')
    a = ap.parse_args()
    import torch
    from fastxfer.core import shared_data, versions, set_quiet
    from fastxfer.text import train_text
    csv = shared_data('fastai_samples/imdb_sample/texts.csv')
    if csv is None: print(json.dumps({'skipped': 'shared data fastai_samples/imdb_sample not found'})); return
    out = Path(a.out or tempfile.mkdtemp(prefix='fastxfer-bench-text-'))
    rows = []
    for m in a.models.split(','):
      for seed in [int(x) for x in a.seeds.split(',')]:
        if not a.warm_cache: os.environ['FASTXFER_DATA_DIR'] = tempfile.mkdtemp(prefix='fastxfer-bench-data-')  # cold embeddings cache
        load0, t0, c0 = os.getloadavg(), time.time(), time.process_time()
        r = train_text(csv, out/f'{m}-{seed}', model=m, text_col='text', label_col='label', valid_col='is_valid',
                       max_len=a.max_len, epochs=a.epochs, lr=a.lr, bs=a.bs, seed=seed, precision=a.precision,
                       **({'ensemble': a.ensemble, 'bow': not a.no_bow} if m == 'minilm' else {}), **({'window': a.window} if m != 'awd_lstm' else {}))
        row = dict(model=m, seed=seed, accuracy=round(r['accuracy'], 4), n_valid=r['n'], train_seconds=round(r['train_seconds'], 1),
                   wall_seconds=round(time.time()-t0, 1), process_cpu_seconds=round(time.process_time()-c0, 1), max_len=r['max_len'], loadavg_before=[round(x, 2) for x in load0],
                   loadavg_after=[round(x, 2) for x in os.getloadavg()], confusion_matrix=r['confusion_matrix'])
        for k in ('pretrained', 'precision', 'lr', 'epochs', 'ensemble', 'window'):
            if k in r: row[k] = r[k]
        if r.get('bow'): row.update(minilm_accuracy=r['bow'].get('minilm_valid_accuracy'), bow_accuracy=r['bow'].get('valid_accuracy'),
                                    bow_seconds=r['bow']['seconds'], bow_weight=r['bow']['weight'])
        rows.append(row)
        parts = f" (minilm {row['minilm_accuracy']:.4f}, bag of words {row['bow_accuracy']:.4f})" if row.get('bow_accuracy') is not None else ''
        print(f"{m} seed {seed}: accuracy {row['accuracy']:.4f}{parts}  train {row['train_seconds']:.0f}s  load {row['loadavg_before'][0]}->{row['loadavg_after'][0]}",
              file=sys.stderr, flush=True)
    res = dict(bench='text_imdb_sample', data=str(csv), rows=rows, cpu_count=os.cpu_count(),
               torch_threads=torch.get_num_threads(), machine=platform.machine(),
               time=datetime.now(timezone.utc).isoformat(timespec='seconds'), versions=versions())
    if a.json_out: Path(a.json_out).parent.mkdir(parents=True, exist_ok=True); Path(a.json_out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res))

if __name__ == '__main__': main()
