"""Load test of `fastxfer serve` on loopback: the image endpoint with an EfficientNet-Lite0 vision model.

    .venv/bin/python bench/serve_load.py [--model-dir DIR] [--seconds 30] [--clients 1,4,16] [--batch-seconds 30] [--processes 1,2]

Closed loop: each client sends its next request when the last one is answered. Clients are keep-alive
connections sending pre-built requests, so that the load generator (on the same 2 cores) costs little CPU. Phases run one after another:
raw in-process throughput (the predictor the server calls, on already-decoded images: one image per call, then
32 per call), then, for each value of --processes (a server of that many processes), 1, 4 and 16 clients on `/api/v1/predict/{model}` (one image each), then one client on
`/api/v1/predict/{model}/batch` with 32 images per request. Everything stays on 127.0.0.1; every phase is bounded
by --seconds and --max-requests. Without --model-dir a model is trained first with `fastxfer vision train`
(EfficientNet-Lite0, 224 px, 40 shared pets photos). The last line of stdout is one JSON object.
"""
import argparse, asyncio, json, os, socket, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASTXFER = Path(sys.executable).parent/'fastxfer'


def log(*a): print(*a, file=sys.stderr, flush=True)

def pct(xs, q):
    xs = sorted(xs)
    if not xs: return None
    return xs[min(len(xs) - 1, int(round(q/100*(len(xs) - 1))))]

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def train_model(d: Path, pets: Path) -> Path:
    (d/'pets40').mkdir(parents=True, exist_ok=True)
    for f in sorted(pets.iterdir())[::15][:40]: (d/'pets40'/f.name).symlink_to(f)
    out = d/'models'/'pets'
    log('training an EfficientNet-Lite0 cat/dog model on 40 pets photos (224 px, features mode) ...')
    subprocess.run([str(FASTXFER), 'vision', 'train', str(d/'pets40'), '--labels', 'cat-dog', '--mode', 'features',
                    '--arch', 'efficientnet_lite0', '--size', '224', '--out', str(out), '--quiet'], check=True)
    return out

def raw_throughput(p, images: list, seconds: float, batch: int, max_calls: int, thread: bool = False) -> dict:
    "Images/s of `predictor.predict` called directly in this process on decoded images (in a worker thread, as the server does, with `thread`)."
    if thread:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(1) as ex: return ex.submit(raw_throughput, p, images, seconds, batch, max_calls).result() | {'thread': 'worker'}
    import io
    from PIL import Image
    ims = [Image.open(io.BytesIO(b)).convert('RGB') for b in images]
    p.predict(ims[:batch])  # warm up
    n = calls = 0; lat = []; t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and calls < max_calls:
        items = [ims[(n + i) % len(ims)] for i in range(batch)]
        t = time.perf_counter(); p.predict(items); lat.append(time.perf_counter() - t)
        n += batch; calls += 1
    wall = time.perf_counter() - t0
    return dict(batch=batch, thread='main', calls=calls, images=n, seconds=round(wall, 2), images_per_s=round(n/wall, 2),
                p50_ms=round(pct(lat, 50)*1000, 1), p99_ms=round(pct(lat, 99)*1000, 1))

def build_request(host: str, port: int, path: str, images: list, field: str) -> bytes:
    "One complete HTTP/1.1 multipart request, built once so that the client spends almost no CPU per request."
    boundary = 'fxbench7d1c0a'
    parts = [b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%d.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
             % (boundary.encode(), field.encode(), i) + data + b'\r\n' for i, data in enumerate(images)]
    body = b''.join(parts) + b'--%s--\r\n' % boundary.encode()
    head = (f'POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n'
            f'Content-Length: {len(body)}\r\n\r\n').encode()
    return head + body

async def load_phase(host: str, port: int, path: str, images: list, clients: int, seconds: float, max_requests: int, batch: int = 0) -> dict:
    """`clients` keep-alive connections in a closed loop; each sends pre-built requests (cycling through the images)
    and checks the status and the number of predictions in every answer."""
    if batch: reqs = [build_request(host, port, path, [images[(k + j) % len(images)] for j in range(batch)], 'files') for k in range(0, len(images), 7)]
    else: reqs = [build_request(host, port, path, [im], 'file') for im in images]
    lat, errors, codes, sent = [], 0, {}, 0
    deadline = time.perf_counter() + seconds
    async def client(k):
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection(host, port)
        i = k
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                t = time.perf_counter()
                try:
                    writer.write(reqs[i % len(reqs)]); await writer.drain()
                    head = await reader.readuntil(b'\r\n\r\n')
                    lines = head.decode('latin-1').split('\r\n')
                    status = int(lines[0].split()[1])
                    n = int(next(l.split(':', 1)[1] for l in lines if l.lower().startswith('content-length:')))
                    body = await reader.readexactly(n)
                    ok = status == 200 and len(json.loads(body)['predictions']) == (batch or 1)
                    codes[status] = codes.get(status, 0) + 1
                except Exception as e:
                    ok = False; codes[type(e).__name__] = codes.get(type(e).__name__, 0) + 1
                    writer.close(); reader, writer = await asyncio.open_connection(host, port)
                if ok: lat.append(time.perf_counter() - t)
                else: errors += 1
                i += clients
        finally: writer.close()
    t0 = time.perf_counter()
    await asyncio.gather(*[client(k) for k in range(clients)])
    wall = time.perf_counter() - t0
    n = len(lat)
    return dict(clients=clients, batch=batch or 1, requests=n + errors, ok=n, errors=errors, codes={str(k): v for k, v in codes.items()},
                seconds=round(wall, 2), requests_per_s=round(n/wall, 2), images_per_s=round(n*(batch or 1)/wall, 2),
                p50_ms=round(pct(lat, 50)*1000, 1) if lat else None, p95_ms=round(pct(lat, 95)*1000, 1) if lat else None,
                p99_ms=round(pct(lat, 99)*1000, 1) if lat else None)

def serve_phases(a, tmp, models_root, images, processes) -> dict:
    "Start `fastxfer serve --processes N` on a free port, run the one-image phases and the batch phase, stop it."
    import httpx
    port = free_port(); url = f'http://127.0.0.1:{port}'
    cmd = [str(FASTXFER), 'serve', '--models', str(models_root), '--host', '127.0.0.1', '--port', str(port), '--no-ui', '--quiet',
           '--processes', str(processes)]
    if a.workers: cmd += ['--workers', str(a.workers)]
    log_file = tmp/f'server-{processes}.log'
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log_file, 'w'))
    res = dict(processes=processes, load=[])
    try:
        t = time.time()
        while True:
            if server.poll() is not None: raise SystemExit(f'server exited: {log_file.read_text()[-2000:]}')
            try:
                if httpx.get(url + '/api/v1/health', timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            if time.time() - t > 300: raise SystemExit('server did not start in 300 s')
            time.sleep(0.5)
        time.sleep(2 if processes > 1 else 0)   # the other processes finish loading
        asyncio.run(load_phase('127.0.0.1', port, '/api/v1/predict/bench', images, 2, 3, 50))  # warm up
        for n in [int(x) for x in a.clients.split(',')]:
            log(f'{n} client(s) x {a.seconds:g} s ...')
            r = asyncio.run(load_phase('127.0.0.1', port, '/api/v1/predict/bench', images, n, a.seconds, a.max_requests))
            log(f"  {r['requests_per_s']} req/s  p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms  p99 {r['p99_ms']} ms  errors {r['errors']}")
            res['load'].append(r)
        log(f'batch endpoint: 1 client x {a.batch_seconds:g} s, {a.batch_size} images per request ...')
        res['batch'] = asyncio.run(load_phase('127.0.0.1', port, '/api/v1/predict/bench/batch', images, 1, a.batch_seconds, a.max_requests, a.batch_size))
        log(f"  {res['batch']['images_per_s']} img/s  p50 {res['batch']['p50_ms']} ms  errors {res['batch']['errors']}")
    finally:
        server.terminate()
        try: server.wait(20)
        except subprocess.TimeoutExpired: server.kill()
    return res

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model-dir', default=None, help='an image model folder (default: train one)')
    ap.add_argument('--seconds', type=float, default=30, help='length of each load phase')
    ap.add_argument('--clients', default='1,4,16')
    ap.add_argument('--batch-seconds', type=float, default=30)
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--raw-seconds', type=float, default=20)
    ap.add_argument('--max-requests', type=int, default=20_000, help='cap per phase')
    ap.add_argument('--workers', type=int, default=None, help='server inference workers (default: the server default)')
    ap.add_argument('--processes', default='1', help='server processes, comma-separated: one server run per value, e.g. 1,2')
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from fastxfer.core import shared_data
    pets = shared_data('pets/images')
    if pets is None: print(json.dumps({'skipped': 'shared pets images not found'})); return
    images = [f.read_bytes() for f in sorted(pets.iterdir())[:64]]
    tmp = Path(tempfile.mkdtemp(prefix='serve_load_'))
    model_dir = Path(a.model_dir) if a.model_dir else train_model(tmp, pets)
    card = json.loads((model_dir/'card.json').read_text())
    models_root = tmp/'served'; models_root.mkdir(); (models_root/'bench').symlink_to(model_dir.resolve())
    res = dict(bench='serve_load', time=datetime.now(timezone.utc).isoformat(timespec='seconds'), model=str(model_dir),
               arch=card.get('arch'), size=card.get('size'), mode=card.get('mode'), cpus=os.cpu_count(),
               loadavg_start=[round(x, 2) for x in os.getloadavg()])
    log('raw in-process throughput (main thread, then a worker thread as in the server; the faster is the reference) ...')
    from fastxfer.model_folder import load_model
    p = load_model(model_dir)
    res['raw_backend'] = getattr(p, 'backend', None)
    for key, b in (('raw_one', 1), ('raw_batch', a.batch_size)):
        runs = [raw_throughput(p, images, a.raw_seconds/2, b, a.max_requests, thread=t) for t in (False, True)]
        res[key + '_runs'] = runs
        res[key] = max(runs, key=lambda r: r['images_per_s'])
    del p
    log(f"raw: one image {res['raw_one']['images_per_s']} img/s, batch of {a.batch_size} {res['raw_batch']['images_per_s']} img/s")
    res['processes'] = {}
    for procs in [int(x) for x in a.processes.split(',')]:
        log(f'== fastxfer serve --processes {procs}')
        res['processes'][str(procs)] = serve_phases(a, tmp, models_root, images, procs)
    first = res['processes'][a.processes.split(',')[0]]
    res['load'], res['batch'] = first['load'], first['batch']
    best_one = max(r['images_per_s'] for r in res['load'])
    res['ratios'] = dict(
        one_image_vs_raw={str(r['clients']): round(r['images_per_s']/res['raw_one']['images_per_s'], 3) for r in res['load']},
        best_one_image_vs_raw=round(best_one/res['raw_one']['images_per_s'], 3),
        batch_vs_raw_batch=round(res['batch']['images_per_s']/res['raw_batch']['images_per_s'], 3))
    res['errors_total'] = sum(sum(r['errors'] for r in ph['load']) + ph['batch']['errors'] for ph in res['processes'].values())
    res['targets'] = dict(zero_errors=res['errors_total'] == 0, one_image_ge_70pct=res['ratios']['best_one_image_vs_raw'] >= 0.7,
                          batch_ge_80pct=res['ratios']['batch_vs_raw_batch'] >= 0.8)
    res['loadavg_end'] = [round(x, 2) for x in os.getloadavg()]
    if not a.model_dir: res['model'] = 'trained for this run (removed)'
    import shutil; shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))

if __name__ == '__main__':
    main()
