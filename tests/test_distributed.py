"""Data-parallel training on 2 CPU processes (gloo): `--processes 2`, torchrun and accelerate launch each write one
working model folder; a failing launch says why once and writes nothing. Tiny subsets of the shared pets, 64 px."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from conftest import FASTXFER, run_cli, run_json, shared_or_skip

BIN = Path(sys.executable).parent
TRAIN = ['--labels', 'cat-dog', '--mode', 'fine_tune', '--size', '64', '--bs', '8', '--epochs', '1']


@pytest.fixture(scope='module')
def pets24(tmp_path_factory):
    d = tmp_path_factory.mktemp('pets24')
    imgs = sorted((shared_or_skip('pets')/'images').glob('*.jpg'))
    for p in [p for p in imgs if p.name[0].isupper()][:12] + [p for p in imgs if p.name[0].islower()][:12]: shutil.copy(p, d/p.name)
    return d


def _check_folder(out: Path, data: Path):
    "One model folder, trained by 2 processes, that loads in a fresh process and whose stored error is a fresh evaluation's."
    from fastxfer.model_folder import ModelFolder, load_model
    from fastxfer.vision import collect_data
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], 'one folder, no leftovers'
    card = ModelFolder(out).card
    assert card['processes'] == 2 and card['distributed_backend'] == 'gloo'
    img = sorted(data.glob('*.jpg'))[0]
    r = run_json('vision', 'predict', out, img, fresh=True)
    assert r['predictions'][0]['label'] in ('cat', 'dog')
    vd = collect_data(data, 'cat-dog', 0.2, card['seed'])
    p = load_model(out)
    y = np.array([p.vocab.index(vd.labels[i]) for i in vd.valid_idx])
    err = float((p.predict_proba(vd.valid_items()).argmax(1) != y).mean())
    assert abs(err - card['metrics']['error_rate']) < 1e-6, (err, card['metrics'])
    return card


def test_processes_2_writes_one_working_folder(pets24, tmp_path):
    out = tmp_path/'models'/'pets2'
    r = run_json('vision', 'train', pets24, *TRAIN, '--processes', '2', '--out', out, fresh=True)   # rank 0 prints to the inherited stdout
    assert r['processes'] == 2 and r['model_dir'] == str(out)
    _check_folder(out, pets24)


def test_a_failing_launch_says_why_once_and_writes_nothing(pets24, tmp_path):
    one = tmp_path/'one'; one.mkdir()
    for p in sorted(pets24.glob('*.jpg'))[:6]: shutil.copy(p, one/p.name)   # six cats: one class
    r = run_cli('vision', 'train', one, *TRAIN, '--processes', '2', '--out', tmp_path/'m', check=2, fresh=True)
    assert r.stderr.count('error:') == 1 and 'Traceback' not in r.stderr, r.stderr
    assert 'class' in r.stderr and not (tmp_path/'m').exists()


@pytest.mark.slow
@pytest.mark.parametrize('launcher', ['torchrun', 'accelerate'])
def test_torchrun_and_accelerate_launch(pets24, tmp_path, launcher):
    out = tmp_path/'models'/launcher
    cmd = ([str(BIN/'torchrun'), '--nproc_per_node', '2'] if launcher == 'torchrun' else
           [str(BIN/'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2'])   # --multi_gpu: torchrun's launcher; on CPUs fastxfer asks for gloo
    r = subprocess.run([*cmd, '-m', 'fastxfer', 'vision', 'train', str(pets24), *TRAIN, '--out', str(out), '--json'],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)['processes'] == 2, 'one report, from rank 0'
    _check_folder(out, pets24)
