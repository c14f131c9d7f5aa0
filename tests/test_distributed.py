"""Data-parallel training on 2 CPU processes (gloo): `--processes 2`, torchrun and accelerate launch each write one
working model folder; a failing launch says why once and writes nothing. Tiny subsets of the shared pets, 64 px."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from conftest import FASTXFER, PLUGIN_ENV, run_cli, run_json, shared_or_skip, toy_csv

BIN = Path(sys.executable).parent
TRAIN = ['--labels', 'cat-dog', '--mode', 'fine_tune', '--size', '64', '--bs', '8', '--epochs', '1']


@pytest.fixture(scope='module')
def pets24(tmp_path_factory):
    d = tmp_path_factory.mktemp('pets24')
    imgs = sorted((shared_or_skip('pets')/'images').glob('*.jpg'))
    for p in [p for p in imgs if p.name[0].isupper()][:12] + [p for p in imgs if p.name[0].islower()][:12]: shutil.copy(p, d/p.name)
    return d


def _check_folder(out: Path, data: Path):
    "One model folder, trained by 2 processes, that loads in another process and whose stored error is a fresh evaluation's."
    from fastxfer.model_folder import ModelFolder, load_model
    from fastxfer.vision import collect_data
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], 'one folder, no leftovers'
    card = ModelFolder(out).card
    assert card['processes'] == 2 and card['distributed_backend'] == 'gloo'
    img = sorted(data.glob('*.jpg'))[0]
    r = run_json('vision', 'predict', out, img)             # in this process: the training ran in others
    assert r['predictions'][0]['label'] in ('cat', 'dog')
    vd = collect_data(data, 'cat-dog', 0.2, card['seed'])
    p = load_model(out)
    y = np.array([p.vocab.index(vd.labels[i]) for i in vd.valid_idx])
    err = float((p.predict_proba(vd.valid_items()).argmax(1) != y).mean())
    assert abs(err - card['metrics']['error_rate']) < 1e-6, (err, card['metrics'])
    return card


def test_processes_2_writes_one_working_folder(pets24, tmp_path):
    out, tmp = tmp_path/'models'/'pets2', tmp_path/'tmp'; tmp.mkdir()
    r = run_json('vision', 'train', pets24, *TRAIN, '--processes', '2', '--out', out, fresh=True, env={'TMPDIR': tmp})   # rank 0 prints to the inherited stdout
    assert r['processes'] == 2 and r['model_dir'] == str(out)
    assert [p for p in tmp.iterdir() if p.name.startswith('fastxfer-')] == [], 'the ranks\' logs and checkpoint folders are removed'
    _check_folder(out, pets24)


def test_a_failing_launch_says_why_once_and_writes_nothing(tmp_path):
    "The launcher's own behaviour, with the toy plug-in family (light processes): every process fails on the same bad data."
    bad = tmp_path/'bad.csv'; bad.write_text('x,label\n1,low\n2,medium\n')
    tmp = tmp_path/'tmp'; tmp.mkdir()
    r = run_cli('toy', 'train', bad, '--processes', '2', '--out', tmp_path/'m', env={**PLUGIN_ENV, 'TMPDIR': tmp}, check=2, fresh=True)
    assert r.stderr.count('error:') == 1 and 'Traceback' not in r.stderr, r.stderr
    assert 'medium' in r.stderr and not (tmp_path/'m').exists()
    assert [p for p in tmp.iterdir() if p.name.startswith('fastxfer-')] == [], 'the ranks\' logs are removed'


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


def _features_run(data, out, cache, processes):
    "vision --mode features with its own feature cache (so nothing is read from an earlier run)."
    r = run_json('vision', 'train', data, '--labels', 'cat-dog', '--mode', 'features', '--size', '64', '--processes', processes,
                 '--out', out, env={'FASTXFER_CACHE': str(cache)}, fresh=True)
    return r, {p.name: np.load(p) for p in sorted((cache/'features').glob('*.npy'))}


@pytest.mark.slow
def test_features_split_across_2_processes_equal_1_process(pets24, tmp_path):
    import torch
    r1, f1 = _features_run(pets24, tmp_path/'m1', tmp_path/'c1', 1)
    r2, f2 = _features_run(pets24, tmp_path/'m2', tmp_path/'c2', 2)
    assert r1['processes'] == 1 and r2['processes'] == 2
    assert f1.keys() == f2.keys() and len(f1) == 2, 'train and valid features, under the same keys'
    for k in f1: np.testing.assert_allclose(f1[k], f2[k], atol=1e-5)
    from fastxfer.model_folder import load_tensors
    heads = [{k: v for k, v in load_tensors(tmp_path/m/'model.safetensors').items() if k.startswith('1.')} for m in ('m1', 'm2')]
    assert heads[0].keys() == heads[1].keys() and heads[0]
    for k in heads[0]: torch.testing.assert_close(heads[0][k], heads[1][k], atol=1e-5, rtol=0)
    assert r1['confusion_matrix'] == r2['confusion_matrix'] and sum(map(sum, r2['confusion_matrix'])) == r2['n_valid']


@pytest.fixture(scope='module')
def imdb48(tmp_path_factory):
    import pandas as pd
    df = pd.read_csv(shared_or_skip('fastai_samples/imdb_sample')/'texts.csv')
    t = pd.concat([df[~df.is_valid].groupby('label').head(16), df[df.is_valid].groupby('label').head(8)])
    p = tmp_path_factory.mktemp('imdb48')/'texts.csv'; t.to_csv(p, index=False)
    return p


@pytest.mark.slow
def test_text_minilm_on_2_processes(imdb48, tmp_path):
    out = tmp_path/'models'/'text2'
    r = run_json('text', 'train', imdb48, '--valid-col', 'is_valid', '--max-len', '64', '--epochs', '1', '--processes', '2',
                 '--out', out, fresh=True)
    assert r['model_dir'] == str(out) and sorted(p.name for p in out.parent.iterdir()) == ['text2']
    card = json.loads((out/'card.json').read_text())
    assert card['processes'] == 2 and card['distributed_backend'] == 'gloo'
    ev = run_json('text', 'evaluate', out, imdb48, fresh=True)   # a fresh process loads the folder
    assert ev['n'] == card['metrics']['n_valid'] == 16
    assert abs(ev['accuracy'] - card['metrics']['accuracy']) < 1e-9 and ev['confusion_matrix'] == card['confusion_matrix']


@pytest.mark.slow
@pytest.mark.parametrize('family', ['tabular', 'segment'])
def test_other_families_on_2_processes(family, tmp_path):
    if family == 'tabular':
        rows = (shared_or_skip('fastai_samples/adult_sample')/'adult.csv').read_text().splitlines()[:1501]
        data = tmp_path/'adult.csv'; data.write_text('\n'.join(rows) + '\n')
        args = [data, '--target', 'salary', '--model', 'tabular']
    else:
        data = shared_or_skip('fastai_samples/camvid_tiny')
        args = [data, '--codes', data/'codes.txt', '--size', '64,96', '--epochs', '1']
    out = tmp_path/'models'/family
    r = run_json(family, 'train', *args, '--processes', '2', '--out', out, fresh=True)
    card = json.loads((out/'card.json').read_text())
    assert card['processes'] == 2 and card['distributed_backend'] == 'gloo' and r['model_dir'] == str(out)
    assert sorted(p.name for p in out.parent.iterdir()) == [family]


@pytest.fixture
def ratings2000(tmp_path):
    rows = (shared_or_skip('fastai_samples/movie_lens_sample')/'ratings.csv').read_text().splitlines()[:2001]
    p = tmp_path/'ratings.csv'; p.write_text('\n'.join(rows) + '\n')
    return p


def _train_in_python(call: str, out: Path, env=None):
    "Run `r = CALL` in a new Python process; its report (metrics, model folder), the folder's card and the process's stderr."
    code = f"import json\nfrom fastxfer.family import get_family, notebook_train\nr = {call}\n" \
           "print(json.dumps(dict(metrics=r['metrics'], model_dir=r['model_dir'])))"
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert p.returncode == 0, p.stderr[-3000:]
    card = json.loads((out/'card.json').read_text())
    assert card['processes'] == 2 and card['distributed_backend'] == 'gloo'
    return json.loads(p.stdout.strip().splitlines()[-1]), card, p.stderr


def test_processes_2_from_python(tmp_path):
    "`train(..., processes=2)` from a Python session: the launcher the command line uses, rank 0's report returned (the toy plug-in: light processes)."
    out = tmp_path/'toy'
    r, card, _ = _train_in_python(f"get_family('toy').train({str(toy_csv(tmp_path/'toy.csv'))!r}, out={str(out)!r}, processes=2)", out, PLUGIN_ENV)
    assert r['model_dir'] == str(out) and r['metrics'] == card['metrics'] == {'accuracy': 1.0}
    assert sorted(q.name for q in tmp_path.iterdir()) == ['toy', 'toy.csv']


@pytest.mark.slow   # 10-12 s of the default suite's budget; the command line's and train(processes=2)'s launches stay in it
def test_notebook_train_runs_2_processes(ratings2000, tmp_path):
    "Accelerate's notebook_launcher (forked processes) from a Python session: one folder, rank 0's report."
    out = tmp_path/'ml'
    r, card, err = _train_in_python(f"notebook_train('collab', 2, data={str(ratings2000)!r}, out={str(out)!r}, epochs=2, members=1)", out)
    assert r['metrics'] == card['metrics'] and err.count('validation MSE') == 1, 'rank 0 alone logs'


AWP_RANK = """
import os, torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastxfer.augment.adversarial import AdversarialTraining
from fastxfer.distributed import distributed
torch.manual_seed(0)   # the same data and start on both ranks; each trains on its own share of every batch
data = list(zip(torch.rand(64, 3, 16, 16), torch.randint(0, 2, (64,))))
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
start = {k: v.clone() for k, v in net.state_dict().items()}
learn = Learner(DataLoaders(DataLoader(data, bs=8, shuffle=True), DataLoader(data, bs=8)), net, loss_func=torch.nn.CrossEntropyLoss(),
                cbs=AdversarialTraining('pgd', 8, 1., 1, awp=RATE))
with distributed(learn): learn.fit(1, 1e-2)
torch.save(dict(start=start, end=net.state_dict()), os.path.join(OUT, f"rank{os.environ['RANK']}.pt"))
"""


def test_weight_perturbation_keeps_the_processes_in_step(tmp_path):
    """PGD fine-tuning's weight perturbation (AWP) on 2 data-parallel processes: each moves its own weights for a step's
    gradient and puts them back, so both end with the same weights (a rank left perturbed would drift apart)."""
    import torch
    from fastxfer.distributed import launch
    assert launch(AWP_RANK.replace('RATE', '1e-2').replace('OUT', repr(str(tmp_path))), 2) == 0
    r0, r1 = (torch.load(tmp_path/f'rank{r}.pt') for r in (0, 1))
    assert all(torch.equal(r0['end'][k], r1['end'][k]) for k in r0['end']), 'the two processes drifted apart'
    assert not torch.equal(r0['end']['0.weight'], r0['start']['0.weight']), 'trained'
