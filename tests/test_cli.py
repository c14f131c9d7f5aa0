"""The `fastxfer` command line: help, version, info, errors, settings overrides."""
import json, os, subprocess, sys, time
from conftest import run_cli, run_json, FASTXFER, ROOT


def test_help_lists_commands_and_is_fast():
    t = time.time()
    r = run_cli('--help', check=0)
    assert 'info' in r.stdout and 'usage: fastxfer' in r.stdout
    assert time.time() - t < 5, 'fastxfer --help must not import torch/fastai'


def test_a_family_help_is_fast_and_the_written_spec_is_current():
    "`fastxfer tabular train --help` reads fastxfer/_cli_spec.py instead of importing fastai; the file must say what the signatures say."
    from fastxfer.cli import cli_spec
    from fastxfer._cli_spec import SPEC
    now = cli_spec()
    stale = sorted(n for n in now.keys() | SPEC.keys() if now.get(n) != SPEC.get(n))
    assert not stale, f'fastxfer/_cli_spec.py is out of date for {", ".join(stale)}: run `make cli-spec`'
    t = time.time()
    r = run_cli('tabular', 'train', '--help', check=0)
    assert '--target TARGET' in r.stdout and '(default: auto)' in r.stdout
    assert time.time() - t < 5, 'fastxfer tabular train --help must not import torch/fastai'


def test_version_matches_package():
    from fastxfer import __version__
    r = run_cli('--version', check=0)
    assert r.stdout.strip() == f'fastxfer {__version__}'


def test_info_json_has_the_fields():
    r = run_json('info')
    assert set(r['versions']) >= {'fastxfer', 'fastai', 'torch', 'timm', 'gradio'}
    assert all(r['versions'][k] for k in ('fastxfer', 'fastai', 'torch', 'timm', 'gradio'))
    assert r['device'] in ('cpu', 'cuda')
    assert r['offline_weights']['efficientnet_lite0'] is True
    assert r['settings']['arch'] == 'efficientnet_lite0'
    assert 'shared_data' in r


def test_env_overrides_settings_ini():
    r = run_json('info', env={'FASTXFER_PORT': '8123', 'FASTXFER_SIZE': '160'})
    assert r['settings']['port'] == '8123' and r['settings']['size'] == '160'


def test_settings_ini_matches_builtin_defaults():
    import configparser
    from fastxfer.core import DEFAULT_SETTINGS
    cp = configparser.ConfigParser(); cp.read(ROOT/'settings.ini')
    assert dict(cp['fastxfer']) == DEFAULT_SETTINGS


def test_user_error_exits_2_without_traceback():
    r = run_cli('info', '--device', 'cuda:7') if not _has_cuda() else run_cli('info', '--device', 'nonsense:0')
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith('error:') and 'Traceback' not in r.stderr


def test_user_error_with_json_prints_error_object():
    if _has_cuda(): return
    r = run_cli('info', '--device', 'cuda', '--json')
    assert r.returncode == 2 and 'error' in json.loads(r.stdout)


def test_unknown_command_is_a_usage_error():
    r = run_cli('frobnicate')
    assert r.returncode == 2 and 'invalid choice' in r.stderr


def _has_cuda():
    import torch
    return torch.cuda.is_available()


def test_an_unknown_flag_is_the_verbs_usage_error_with_the_nearest_flag():
    "A typo in a verb's flag shows the verb's usage (not the top-level one) and the flag meant; nothing runs (no model folder is written)."
    r = run_cli('tabular', 'predict', 'no-such-model', '--write-too', 'x.db')
    assert r.returncode == 2, r.stderr
    assert 'usage: fastxfer tabular predict' in r.stderr
    assert r.stderr.strip().splitlines()[-1] == ('fastxfer tabular predict: error: unrecognized arguments: --write-too x.db '
                                                 '(did you mean --write-to?)')
    r = run_cli('tabular', 'predict', 'no-such-model', '--sheet', 'Sheet2')
    assert r.returncode == 2 and r.stderr.strip().endswith('unrecognized arguments: --sheet Sheet2'), r.stderr   # no flag near it
