"""Shared helpers for the end-to-end tests: the command line in a subprocess, and the shared reference data."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FASTXFER = Path(sys.executable).parent/'fastxfer'


def shared_or_skip(name: str = '') -> Path:
    "Path of `../shared/data/<name>`; skips the test, saying why, when it is absent."
    from fastxfer.core import shared_data
    p = shared_data(name)
    if p is None:
        reason = f"shared reference data {name!r} not found (set FASTXFER_SHARED or put shared/ next to the project)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return p


# `fastxfer ...` runs in the test process by default (the same `cli.main` the console script calls): a new
# interpreter costs about 5 s of imports here, and the suite runs a hundred commands. The tests about a new
# process (`fresh=True`) and FASTXFER_TEST_SUBPROCESS=1 (every command) run the installed console script.
SUBPROCESS = os.environ.get('FASTXFER_TEST_SUBPROCESS', '') not in ('', '0')

def run_cli(*args, cwd=None, env=None, timeout=600, check=None, fresh=False):
    "Run `fastxfer ARGS` (in this process, or the installed console script in a new one when `fresh`); returns the CompletedProcess."
    if fresh or SUBPROCESS:
        e = {**os.environ, **(env or {})}
        r = subprocess.run([str(FASTXFER), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)
    else: r = run_cli_here(*args, env=env, cwd=cwd)
    if check is not None and r.returncode != check:
        raise AssertionError(f"fastxfer {' '.join(map(str, args))} exited {r.returncode} (expected {check})\n"
                             f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return r


def run_cli_here(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    """`fastxfer ARGS` in this process: the same `fastxfer.cli.main` the console script calls, without a new
    interpreter's import time (about 5 s here). For the many quick error paths; the happy paths run `run_cli`."""
    import contextlib, io
    from fastxfer.cli import main
    from fastxfer.core import set_quiet
    out, err, old = io.StringIO(), io.StringIO(), {k: os.environ.get(k) for k in (env or {})}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    here = os.getcwd()
    try:
        if cwd is not None: os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try: code = main([str(a) for a in args])
            except SystemExit as e: code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1   # as the interpreter exits
    finally:
        os.chdir(here)
        set_quiet(False)
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    return subprocess.CompletedProcess(['fastxfer', *map(str, args)], code, out.getvalue(), err.getvalue())


def run_json(*args, **kwargs) -> dict:
    "Run `fastxfer ... --json` (as `run_cli`), check it succeeded and return the one JSON object it printed."
    r = run_cli(*args, '--json', check=0, **kwargs)
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"--json must print exactly one line on stdout, got:\n{r.stdout}"
    return json.loads(lines[0])


def fresh_words(code:str, *args, timeout:int=120) -> list[str]:
    "The words `code` prints in a new Python process (`args` as `sys.argv[1:]`), then the fastai modules it imported ('[]': none)."
    code = f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'fastai')[:3])"
    r = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def request_schema(doc:dict, path:str, ctype='application/json') -> dict:
    "The request body's schema of `POST path` in the OpenAPI document `doc`, its `$ref` followed."
    sch = doc['paths'][path]['post']['requestBody']['content'][ctype]['schema']
    return doc['components']['schemas'][sch['$ref'].split('/')[-1]] if '$ref' in sch else sch


@pytest.fixture
def cli():
    return run_cli


HERE = Path(__file__).resolve().parent
# the toy family of `toy_family.py`, a plug-in that lives outside the package (see test_family_contract.py)
PLUGIN_ENV = {'FASTXFER_PLUGINS': 'toy_family', 'PYTHONPATH': os.pathsep.join(filter(None, [str(HERE), os.environ.get('PYTHONPATH', '')]))}


ADULT_COLUMNS = ['age', 'workclass', 'education', 'sex', 'hours-per-week', 'salary']

def adult_csv(path, n=400, columns=ADULT_COLUMNS) -> Path:
    "The first `n` rows of the shared Adult census sample, a few columns, with an `id` column."
    import pandas as pd
    df = pd.read_csv(shared_or_skip('fastai_samples/adult_sample/adult.csv'), skipinitialspace=True, nrows=n)[list(columns)]
    df.insert(0, 'id', range(len(df)))
    df.to_csv(path, index=False)
    return Path(path)

def coloured_squares(root, colours: dict, n: int, size: int, side: int, seed: int = 0) -> Path:
    "`n` images a colour under `root/<colour>/`: grey noise with a `side`-pixel square of the colour at a random place."
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    for c, rgb in colours.items():
        (Path(root)/c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(60, 196, (size, size, 1)).repeat(3, 2).astype(np.uint8)
            x, y = rng.integers(0, size - side, 2); a[y:y + side, x:x + side] = rgb
            Image.fromarray(a).save(Path(root)/c/f'{c}{i}.png')
    return Path(root)


def toy_csv(path, n=40):
    "x from -5 to 5; 'high' above 1.5 (so the learned threshold is the largest x at or below 1.5)."
    xs = [round(-5 + 10 * i / (n - 1), 3) for i in range(n)]
    Path(path).write_text('x,label\n' + ''.join(f"{x},{'high' if x > 1.5 else 'low'}\n" for x in xs))
    return Path(path)


def _train_pets(d: Path):
    pets = shared_or_skip('pets/images')
    (d/'pets40').mkdir(parents=True, exist_ok=True)
    for f in sorted(pets.iterdir())[::15][:40]:
        if not (d/'pets40'/f.name).exists(): (d/'pets40'/f.name).symlink_to(f)
    run_cli('vision', 'train', d/'pets40', '--labels', 'cat-dog', '--mode', 'features', '--size', '128',
            '--out', d/'models'/'pets', '--quiet', check=0)

def _train_reviews(d: Path):
    import pandas as pd
    df = pd.read_csv(shared_or_skip('fastai_samples/imdb_sample/texts.csv'))
    df = pd.concat([df[df.label == l].head(30) for l in ('positive', 'negative')])
    df['text'] = df.text.str.slice(0, 200)
    df[['label', 'text']].to_csv(d/'reviews.csv', index=False)
    run_cli('text', 'train', d/'reviews.csv', '--model', 'embed-logreg', '--out', d/'models'/'reviews', '--quiet', check=0)

def _train_camvid(d: Path):
    cam = shared_or_skip('fastai_samples/camvid_tiny')
    (d/'camvid12'/'images').mkdir(parents=True, exist_ok=True); (d/'camvid12'/'labels').mkdir(exist_ok=True)
    for f in sorted((cam/'images').iterdir())[:12]:
        shutil.copyfile(f, d/'camvid12'/'images'/f.name); shutil.copyfile(cam/'labels'/f'{f.stem}_P.png', d/'camvid12'/'labels'/f'{f.stem}_P.png')
    run_cli('segment', 'train', d/'camvid12', '--codes', cam/'codes.txt', '--size', '64,96', '--epochs', 1, '--freeze-epochs', 1,
            '--bs', 4, '--out', d/'models'/'camvid', '--quiet', check=0)

def _train_planet(d: Path):
    "A multi-label model: 150 Planet chips, frozen features at 64 px (labels from the shared CSV)."
    planet = shared_or_skip('multilabel/planet')
    (d/'planet150').mkdir(parents=True, exist_ok=True)
    for f in sorted((planet/'images').iterdir())[:150]:
        if not (d/'planet150'/f.name).exists(): (d/'planet150'/f.name).symlink_to(f)
    run_cli('vision', 'train', d/'planet150', '--labels', f"multi:csv:{planet/'labels.csv'}", '--mode', 'features', '--size', '64',
            '--out', d/'models'/'planet', '--quiet', check=0)

def _train_emotions(d: Path):
    "A multi-label text model: 600 GoEmotions comments (labels space-separated)."
    import pandas as pd
    pd.read_csv(shared_or_skip('multilabel/goemotions/texts.csv')).head(600).to_csv(d/'emotions600.csv', index=False)   # embed-logreg: the cheaper model, quick for the suite
    run_cli('text', 'train', d/'emotions600.csv', '--label-col', 'labels', '--label-delim', ' ', '--model', 'embed-logreg',
            '--out', d/'models'/'emotions', '--quiet', check=0)

REAL_MODELS = {   # the folder under models/ -> how it is trained (each in its own `fastxfer` process)
    'pets': _train_pets, 'reviews': _train_reviews,
    'nfl': lambda d: run_cli('nfl', 'train', '--standings', shared_or_skip('nfl/standings.csv'), '--no-evaluate',
                             '--out', d/'models'/'nfl', '--quiet', check=0),
    'toy': lambda d: run_cli('toy', 'train', toy_csv(d/'toy.csv'), '--out', d/'models'/'toy', '--quiet', env=PLUGIN_ENV, check=0),
    'adult': lambda d: run_cli('tabular', 'train', adult_csv(d/'adult400.csv'), '--target', 'salary', '--out', d/'models'/'adult',
                               '--quiet', check=0),
    'ml': lambda d: run_cli('collab', 'train', shared_or_skip('fastai_samples/movie_lens_sample/ratings.csv'), '--split', 'random',
                            '--members', 1, '--out', d/'models'/'ml', '--quiet', check=0),
    'camvid': _train_camvid, 'planet': _train_planet, 'emotions': _train_emotions}

def build_real_models(d: Path, names=None) -> Path:
    "Real vision (40 pets, cat/dog), text (60 short IMDB reviews), NFL, toy, tabular (400 census rows), collab (the MovieLens sample) and segment (12 CamVid images) model folders under `d/models`."
    d.mkdir(parents=True, exist_ok=True)
    for name in names or REAL_MODELS: REAL_MODELS[name](d)
    return d/'models'


@pytest.fixture(scope='session')
def real_models(tmp_path_factory):
    "Real model folders of every kind, trained once per test run (the browser, the API fuzzer and the slow tests share them, on any worker)."
    worker = os.environ.get('PYTEST_XDIST_WORKER')
    if not worker: return build_real_models(tmp_path_factory.mktemp('real'))
    from filelock import FileLock
    shared = tmp_path_factory.getbasetemp().parent/'real'   # the run's folder, above each worker's own
    shared.mkdir(exist_ok=True)
    names = list(REAL_MODELS)[::1 if int(worker.lstrip('gw') or 0) % 2 == 0 else -1]   # two workers train from both ends at once
    for name in names:
        with FileLock(str(shared/name) + '.lock'):          # one worker trains each model, the other waits for it and reuses it
            if not (shared/f'{name}.done').exists(): build_real_models(shared, [name]); (shared/f'{name}.done').touch()
    return shared/'models'


# The suite runs its files on two workers (pyproject's addopts: `-n auto --dist loadfile`): most of its time is
# new interpreters, servers and a browser starting, which one core leaves the other free for. Each worker's torch
# then takes its share of the cores.
def pytest_xdist_auto_num_workers(config):
    "Workers for `-n auto`: FASTXFER_TEST_WORKERS (0 or 1: none, the files run in this process), else 2 or the CPUs if fewer."
    n = int(os.environ.get('FASTXFER_TEST_WORKERS', 2))
    return 0 if n <= 1 else min(n, os.cpu_count() or 1)


# The longest files first. With `--dist loadfile` a worker takes the next file as it nears the end of its own, so the
# files start in collection order; xdist's default (`--loadscope-reorder`, by number of tests) put the two longest
# files, of two and four tests, near the end, where one worker ran them while the other had nothing left (pytest took
# 9 min 9 s on a 2-core Xeon without AMX, 2026-12-07). The order is each file's time in that run, longest first; the
# files not named follow, in name order. `--no-loadscope-reorder` in pyproject's addopts keeps this order.
LONGEST_FIRST = ('test_browser.py', 'test_api_fuzz.py', 'test_text.py', 'test_distributed.py', 'test_serve.py', 'test_collab.py',
                 'test_multilabel.py', 'test_tabular.py', 'test_review.py', 'test_vision.py', 'test_explain_vision.py', 'test_nfl.py',
                 'test_adversarial.py', 'test_segment.py', 'test_safe_folders.py', 'test_gan.py')

def pytest_collection_modifyitems(config, items):
    "Collect the files in `LONGEST_FIRST` order (stable: a file's tests keep theirs)."
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_configure(config):
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 0) or 0)
    if workers > 1:
        import torch
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault('OMP_NUM_THREADS', str(threads))   # and the processes a test starts (servers, the CLI): no more threads than cores


# ---- earlier releases, from this repository's own history (the upgrade tests)
PICKLE_RELEASE = 'b185d9d'   # the last commit whose model folders hold pickles (processor.pkl, gbm.pkl, bow.pkl, model.pkl, ...)

def old_release(tmp: Path, commit: str = PICKLE_RELEASE) -> Path:
    "The fastxfer package of `commit`, unpacked under `tmp` from this repository's history (skips when it is not there)."
    import io, subprocess, tarfile
    r = subprocess.run(['git', '-C', str(ROOT), 'archive', commit, 'fastxfer', 'data'], capture_output=True)
    if r.returncode != 0:
        reason = f'git history with {commit} not available ({r.stderr.decode()[:200].strip()})'
        print('SKIP:', reason); pytest.skip(reason)
    tarfile.open(fileobj=io.BytesIO(r.stdout)).extractall(tmp)
    return tmp

def run_old(pkg: Path, code: str, *args, cwd=None):
    "Run `code` in a new interpreter that imports fastxfer from `pkg`; the JSON of its last line."
    import os, subprocess, sys
    head = f'import sys; sys.path.insert(0, {str(pkg)!r}); import fastxfer; assert fastxfer.__file__.startswith({str(pkg)!r})\n'
    r = subprocess.run([sys.executable, '-c', head + code, *map(str, args)], capture_output=True, text=True, timeout=900, cwd=cwd,
                       env={**os.environ, 'FASTXFER_DATA_DIR': str(pkg/'fxdata'), 'FASTXFER_MODELS_DIR': str(pkg/'fxmodels')})
    assert r.returncode == 0, f'the old release failed:\n{r.stderr[-3000:]}'
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def one_torch_thread():
    "One torch thread for a module (as each of the suite's two workers has): with two on a busy machine every small op waits for the other."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
