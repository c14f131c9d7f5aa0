"""Shared helpers for the end-to-end tests: the command line in a subprocess, and the shared reference data."""
import json, os, subprocess, sys
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


def run_cli(*args, cwd=None, env=None, timeout=600, check=None):
    "Run the installed `fastxfer` console script in a new process; returns the CompletedProcess."
    e = {**os.environ, **(env or {})}
    r = subprocess.run([str(FASTXFER), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)
    if check is not None and r.returncode != check:
        raise AssertionError(f"fastxfer {' '.join(map(str, args))} exited {r.returncode} (expected {check})\n"
                             f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return r


def run_json(*args, **kwargs) -> dict:
    "Run `fastxfer ... --json`, check it succeeded and return the one JSON object it printed."
    r = run_cli(*args, '--json', check=0, **kwargs)
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"--json must print exactly one line on stdout, got:\n{r.stdout}"
    return json.loads(lines[0])


@pytest.fixture
def cli():
    return run_cli
