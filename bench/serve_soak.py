"""Soak test of `fastxfer serve`: a 2-process server with API keys under a steady mix of valid, invalid and writing requests.

    .venv/bin/python bench/serve_soak.py [--seconds 600] [--clients 16] [--processes 2]

Everything stays on 127.0.0.1. The server is `fastxfer serve --demo --processes 2 --api-key-file KEYS` (the NFL demo
model, trained first into a temporary folder; its `record` operation writes rows into the demo's NFL.db). Each of
--clients closed-loop clients sends, one after another, requests drawn with fixed shares: valid predictions (one
row, a batch of 8), valid writes (`record` with the key, a team name used once), and invalid requests (no key,
a wrong key, broken JSON, a deep nesting, a wrong type, an unknown model, a 3 MB field). The run is bounded
by --seconds. It checks that no answer is a 5xx, that every write answered 200 is in NFL.db exactly once (and no
refused write is), and that the server's resident memory (all its processes, sampled every 5 s) at the end is
within 10% of its mean over the first minute. The last line of stdout is one JSON object.
"""
import argparse, asyncio, json, os, random, secrets, signal, socket, sqlite3, subprocess, sys, tempfile, time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx

FASTXFER = Path(sys.executable).parent/'fastxfer'
ROW = dict(team='Soakers', pf=400, pa=350, sos=0.5)
MIX = [('predict', 40), ('batch', 15), ('record', 15), ('no_key', 5), ('wrong_key', 5), ('bad_json', 5), ('deep', 5),
       ('wrong_type', 4), ('unknown_model', 3), ('long_field', 3)]


def log(*a): print(*a, file=sys.stderr, flush=True)

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def tree_rss_mb(pid: int) -> float:
    "Resident memory of process `pid` and all its descendants, in MB (from /proc)."
    kids = {}
    for p in Path('/proc').iterdir():
        if not p.name.isdigit(): continue
        try:
            st = (p/'stat').read_text(); kids.setdefault(int(st.rsplit(')', 1)[1].split()[1]), []).append(int(p.name))
        except OSError: pass
    todo, total = [pid], 0
    while todo:
        q = todo.pop(); todo += kids.get(q, [])
        try: total += int(next(l for l in (Path('/proc')/str(q)/'status').read_text().splitlines() if l.startswith('VmRSS')).split()[1])
        except (OSError, StopIteration): pass
    return total / 1024

def request(kind: str, key: str, client: int, n: int) -> tuple[str, str, dict, str|None]:
    "`(method, path, httpx keyword arguments, team written or None)` for a request of `kind`."
    auth = {'Authorization': f'Bearer {key}'}
    if kind == 'predict': return 'POST', '/api/v1/models/nfl/predict', dict(json=ROW), None
    if kind == 'batch': return 'POST', '/api/v1/models/nfl/predict/batch', dict(json={'rows': [ROW] * 8}), None
    if kind == 'record':
        team = f'soak-{client}-{n}'
        return 'POST', '/api/v1/models/nfl/record', dict(json={**ROW, 'team': team}, headers=auth), team
    if kind == 'no_key': return 'POST', '/api/v1/models/nfl/record', dict(json={**ROW, 'team': f'refused-{client}-{n}'}), None
    if kind == 'wrong_key':
        return 'POST', '/api/v1/models/nfl/record', dict(json={**ROW, 'team': f'refused-{client}-{n}'}, headers={'Authorization': 'Bearer nope'}), None
    if kind == 'bad_json': return 'POST', '/api/v1/models/nfl/predict', dict(content=b'{"team": "x", "pf": ', headers={'content-type': 'application/json'}), None
    if kind == 'deep': return 'POST', '/api/v1/models/nfl/predict', dict(content=b'{"rows": ' + b'[' * 50_000 + b']' * 50_000 + b'}', headers={'content-type': 'application/json'}), None
    if kind == 'wrong_type': return 'POST', '/api/v1/models/nfl/predict', dict(json={**ROW, 'pf': 'many'}), None
    if kind == 'unknown_model': return 'POST', '/api/v1/models/nope/predict', dict(json=ROW), None
    return 'POST', '/api/v1/models/nfl/predict', dict(content=b'{"team": "' + b'x' * 3_000_000 + b'"}', headers={'content-type': 'application/json'}), None

async def client_loop(i: int, url: str, key: str, until: float, stats: dict, seed: int):
    rng = random.Random(seed + i)
    kinds, weights = zip(*MIX)
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        n = 0
        while time.monotonic() < until:
            kind = rng.choices(kinds, weights)[0]
            method, path, kw, team = request(kind, key, i, n); n += 1
            t = time.perf_counter()
            try: r = await c.request(method, path, **kw); status = r.status_code
            except httpx.HTTPError as e: status = f'error:{type(e).__name__}'
            stats['lat'].append(time.perf_counter() - t)
            stats['status'][(kind, status)] += 1
            if team is not None and status == 200: stats['written'].append(team)
            if isinstance(status, int) and status >= 500: stats['5xx'].append((kind, status, r.text[:200]))

async def sample_rss(pid: int, until: float, t0: float, out: list):
    while time.monotonic() < until:
        out.append((round(time.monotonic() - t0, 1), round(tree_rss_mb(pid), 1)))
        await asyncio.sleep(5)

async def soak(url: str, key: str, pid: int, seconds: float, clients: int, seed: int) -> dict:
    stats = dict(lat=[], status=Counter(), written=[], **{'5xx': []})
    rss, t0 = [], time.monotonic()
    until = t0 + seconds
    await asyncio.gather(sample_rss(pid, until, t0, rss), *[client_loop(i, url, key, until, stats, seed) for i in range(clients)])
    rss.append((round(time.monotonic() - t0, 1), round(tree_rss_mb(pid), 1)))
    return stats | {'rss': rss, 'wall': time.monotonic() - t0}

def recorded_teams(db: Path) -> Counter:
    with sqlite3.connect(db) as con:
        return Counter(r[0] for r in con.execute("SELECT Tm FROM stats WHERE is_hypothetical = 1 AND (Tm LIKE 'soak-%' OR Tm LIKE 'refused-%')"))

def wait_up(url: str, proc, timeout: float = 600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise SystemExit(f'the server exited with {proc.returncode}')
        try:
            if httpx.get(url + '/api/v1/health', timeout=2).status_code == 200: return
        except httpx.HTTPError: pass
        time.sleep(1)
    raise SystemExit('the server did not come up')

def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(q/100*(len(xs) - 1))))] if xs else None

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seconds', type=float, default=600); ap.add_argument('--clients', type=int, default=16)
    ap.add_argument('--processes', type=int, default=2); ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix='fastxfer-soak-'))
    key = secrets.token_urlsafe(24)
    (work/'keys.txt').write_text(key + '\n')
    port = free_port(); url = f'http://127.0.0.1:{port}'
    env = {**os.environ, 'FASTXFER_DATA_DIR': str(work/'data')}
    logf = open(work/'serve.log', 'w')
    proc = subprocess.Popen([str(FASTXFER), 'serve', '--demo', '--models', str(work/'models'), '--host', '127.0.0.1', '--port', str(port),
                             '--processes', str(a.processes), '--api-key-file', str(work/'keys.txt'), '--no-ui', '--quiet'],
                            stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_up(url, proc)
        log(f'server up on {url} ({a.processes} processes); soaking {a.seconds:.0f} s with {a.clients} clients ...')
        s = asyncio.run(soak(url, key, proc.pid, a.seconds, a.clients, a.seed))
        healthy = httpx.get(url + '/api/v1/health', timeout=10).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(30)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
    db = work/'data'/'NFL.db'
    rows = recorded_teams(db)
    written = Counter(s['written'])
    refused_written = sorted(t for t in rows if t.startswith('refused-'))
    twice = sorted(t for t, c in rows.items() if c > 1)
    lost = sorted(t for t in written if rows.get(t, 0) != 1)
    first = [m for t, m in s['rss'] if t <= 60] or [s['rss'][0][1]]
    rss_first, rss_end = sum(first)/len(first), s['rss'][-1][1]
    n = sum(s['status'].values())
    by_kind = {}
    for (kind, status), c in sorted(s['status'].items(), key=str): by_kind.setdefault(kind, {})[str(status)] = c
    res = dict(bench='serve_soak', date=datetime.now(timezone.utc).isoformat(timespec='seconds'), seconds=round(s['wall'], 1),
               clients=a.clients, processes=a.processes, requests=n, req_per_s=round(n/s['wall'], 1),
               p50_ms=round(pct(s['lat'], 50)*1000, 1), p99_ms=round(pct(s['lat'], 99)*1000, 1), statuses=by_kind,
               server_errors=len(s['5xx']), first_5xx=s['5xx'][:3], writes_answered_200=len(written), writes_in_db=sum(c for t, c in rows.items() if t.startswith('soak-')),
               writes_recorded_twice=twice[:5], writes_lost=lost[:5], refused_writes_in_db=refused_written[:5],
               rss_first_minute_mb=round(rss_first, 1), rss_end_mb=rss_end, rss_change=round(rss_end/rss_first - 1, 4),
               healthy_after=healthy, cpu=_cpu(), load_average=[round(x, 2) for x in os.getloadavg()])
    res['passed'] = (res['server_errors'] == 0 and not twice and not lost and not refused_written and healthy
                     and abs(res['rss_change']) <= 0.10)
    print(json.dumps(res))
    return 0 if res['passed'] else 1

def _cpu() -> str:
    try: return next(l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name'))
    except (OSError, StopIteration): return 'unknown'

if __name__ == '__main__': sys.exit(main())
