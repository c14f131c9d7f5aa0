"""1 against 2 training processes on this machine: vision `fine_tune` on the shared pets (cat/dog), CPU processes with gloo.

    .venv/bin/python bench/distributed.py [--processes 1,2] [--size 224]

Each run is the command a user types, `fastxfer vision train ../shared/data/pets --labels cat-dog --mode fine_tune
--processes N --out DIR --json`, timed as a whole process (start-up, training, export). A 2-core machine will not
show a speed-up: two processes share the same two cores. The last line of stdout is one JSON object (the text
family is not data-parallel yet).
"""
import argparse, json, os, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

FASTXFER = Path(sys.executable).parent/'fastxfer'

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--processes', default='1,2')
    ap.add_argument('--size', default='224')
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastxfer.core import shared_data
    pets = shared_data('pets')
    if pets is None: print(json.dumps({'skipped': 'shared pets not found'})); return
    tmp = Path(tempfile.mkdtemp(prefix='fastxfer-dist-'))
    res = dict(bench='distributed', time=datetime.now(timezone.utc).isoformat(timespec='seconds'), cpus=os.cpu_count(), runs=[])
    for n in [int(x) for x in a.processes.split(',')]:
        cmd = [str(FASTXFER), 'vision', 'train', str(pets), '--labels', 'cat-dog', '--mode', 'fine_tune', '--size', a.size,
               '--processes', str(n), '--out', str(tmp/f'p{n}'), '--json']
        load0, t0 = os.getloadavg(), time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        if r.returncode: print(r.stderr[-3000:], file=sys.stderr); raise SystemExit(r.returncode)
        j = json.loads(r.stdout)
        row = dict(processes=n, backend=j.get('distributed_backend'), error_rate=j['error_rate'], train_seconds=j['train_seconds'],
                   wall_seconds=round(wall, 1), loadavg_before=[round(x, 2) for x in load0], loadavg_after=[round(x, 2) for x in os.getloadavg()],
                   command=' '.join(['fastxfer', *cmd[1:]]))
        print(json.dumps(row), file=sys.stderr, flush=True)
        res['runs'].append(row)
    print(json.dumps(res))

if __name__ == '__main__': main()
