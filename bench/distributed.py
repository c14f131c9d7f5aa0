"""1 against 2 training processes on this machine, CPU processes with gloo: vision `fine_tune` on the shared pets
(cat/dog) and text `minilm` (the default text model) on the IMDB sample.

    .venv/bin/python bench/distributed.py [--processes 1,2] [--size 224] [--families vision,text]

Each run is the command a user types, timed as a whole process (start-up, training, export):
`fastxfer vision train ../shared/data/pets --labels cat-dog --mode fine_tune --processes N --out DIR --json` and
`fastxfer text train ../shared/data/fastai_samples/imdb_sample/texts.csv --valid-col is_valid --processes N --out DIR --json`.
A 2-core machine will not show a speed-up: two processes share the same two cores. Results go to
bench/results/distributed.json and, as one JSON object, to the last line of stdout.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

FASTXFER = Path(sys.executable).parent/'fastxfer'

def commands(family, n, out, size):
    "The command line of one run, and the metric it reports."
    from fastxfer.core import shared_data
    if family == 'vision':
        pets = shared_data('pets')
        return pets and ([str(FASTXFER), 'vision', 'train', str(pets), '--labels', 'cat-dog', '--mode', 'fine_tune', '--size', size,
                          '--processes', str(n), '--out', str(out), '--json'], 'error_rate')
    imdb = shared_data('fastai_samples/imdb_sample')
    return imdb and ([str(FASTXFER), 'text', 'train', str(imdb/'texts.csv'), '--valid-col', 'is_valid',
                      '--processes', str(n), '--out', str(out), '--json'], 'accuracy')

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--processes', default='1,2')
    ap.add_argument('--size', default='224')
    ap.add_argument('--families', default='vision,text')
    a = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    tmp = Path(tempfile.mkdtemp(prefix='fastxfer-dist-'))
    res = dict(bench='distributed', time=datetime.now(timezone.utc).isoformat(timespec='seconds'), cpus=os.cpu_count(), runs=[])
    for family in a.families.split(','):
        for n in [int(x) for x in a.processes.split(',')]:
            got = commands(family, n, tmp/f'{family}{n}', a.size)
            if not got: res['runs'].append(dict(family=family, skipped='shared data not found')); continue
            cmd, metric = got
            load0, t0 = os.getloadavg(), time.time()
            r = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.time() - t0
            if r.returncode: print(r.stderr[-3000:], file=sys.stderr); raise SystemExit(r.returncode)
            j = json.loads(r.stdout)
            card = json.loads((tmp/f'{family}{n}'/'card.json').read_text())
            row = dict(family=family, processes=card['processes'], backend=card.get('distributed_backend'), metric=metric,
                       value=j[metric], train_seconds=j['train_seconds'], wall_seconds=round(wall, 1),
                       loadavg_before=[round(x, 2) for x in load0], loadavg_after=[round(x, 2) for x in os.getloadavg()],
                       command=' '.join(['fastxfer', *cmd[1:]]))
            print(json.dumps(row), file=sys.stderr, flush=True)
            res['runs'].append(row)
    out = root/'bench'/'results'/'distributed.json'; out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res))

if __name__ == '__main__': main()
