"""Benchmark: predicting with a text model folder on a CPU, ONNX Runtime (`model.onnx`) against the PyTorch network
(what a GPU, or a folder written before `model.onnx`, runs): one short text at a time, and the IMDB sample's 1,000
reviews in one call; and `auto`, what `TextPredictor` does (ONNX under `BULK_WINDOWS` windows a call, else the
PyTorch networks, loaded on first use and counted in its time). All must give the same probabilities.

usage: .venv/bin/python bench/text_predict.py MODEL_DIR [--repeats 30] [--json-out bench/results/text_predict.json]

MODEL_DIR: a text folder written by this release (`fastxfer text train ...`: it has `model.onnx`). Prints one JSON
object on stdout, also written to `--json-out`, with the CPU model and the load average before and after. Run it
with nothing else on the machine.
"""
import argparse, json, os, statistics, sys, time
from datetime import datetime, timezone
from pathlib import Path


def timed(fn, repeats:int=1) -> list[float]:
    "Seconds of each of `repeats` calls of `fn`, after one warm-up call."
    fn(); out = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('model_dir')
    ap.add_argument('--repeats', type=int, default=30, help='single-text predictions timed per path')
    ap.add_argument('--json-out', default='bench/results/text_predict.json')
    a = ap.parse_args()
    import numpy as np, pandas as pd
    sys.path.insert(0, str(Path(__file__).parent))
    from machine import cpu_model
    from fastxfer.core import shared_data
    from fastxfer.model_folder import load_model
    csv = shared_data('fastai_samples/imdb_sample/texts.csv')
    if csv is None: print(json.dumps({'skipped': 'shared data fastai_samples/imdb_sample not found'})); return
    texts, one = pd.read_csv(csv).text.tolist(), ['A wonderful film, I loved every minute of it.']
    load0 = os.getloadavg()
    onnx = load_model(a.model_dir)
    if not onnx.sessions: raise SystemExit(f'{a.model_dir} has no model.onnx: train it with this release')
    torch_ = load_model(a.model_dir); torch_.load_networks()
    import fastxfer.text.models as tm
    bulk_windows, rows = tm.BULK_WINDOWS, {}
    tm.BULK_WINDOWS = 10**9   # ONNX alone
    for name, p in (('onnx', onnx), ('pytorch', torch_)):
        single = timed(lambda: p.predict_probs(one), a.repeats)
        t = time.perf_counter(); probs = p.predict_probs(texts)[0]; bulk = time.perf_counter() - t
        rows[name] = dict(single_text_ms=round(1000*statistics.median(single), 1), single_text_ms_min=round(1000*min(single), 1),
                          bulk_seconds=round(bulk, 1), texts_per_second=round(len(texts)/bulk, 1))
        rows[name]['probs'] = probs
    tm.BULK_WINDOWS = bulk_windows
    auto = load_model(a.model_dir)
    t = time.perf_counter(); probs = auto.predict_probs(texts)[0]; bulk = time.perf_counter() - t
    rows['auto'] = dict(bulk_windows=bulk_windows, bulk_seconds=round(bulk, 1), texts_per_second=round(len(texts)/bulk, 1))
    diff = float(max(np.abs(probs - rows['pytorch']['probs']).max(), np.abs(rows['onnx'].pop('probs') - rows['pytorch'].pop('probs')).max()))
    res = dict(when=datetime.now(timezone.utc).isoformat(timespec='seconds'), cpu=cpu_model(), cores=os.cpu_count(),
               load_before=[round(x, 2) for x in load0], load_after=[round(x, 2) for x in os.getloadavg()],
               model_dir=str(a.model_dir), model=onnx.card.get('model'), bow=bool(onnx.card.get('bow')), texts=len(texts),
               max_abs_diff=diff, **rows)
    if a.json_out: Path(a.json_out).parent.mkdir(parents=True, exist_ok=True); Path(a.json_out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == '__main__': main()
