"""The family contract is real: a family defined here, outside the package (`tests/toy_family.py`), works
end to end with no edit to `fastxfer.serve`, `fastxfer.widgets` or `fastxfer.cli`: trained, evaluated and
predicted from the command line, served over REST with its own typed schema, driven in the notebook widget
(the Gradio tab is checked in a real browser in `test_browser.py`)."""
import json, os, re, sys
from pathlib import Path

import httpx, pytest

from conftest import run_cli, run_json, toy_csv, PLUGIN_ENV, request_schema
from test_serve import Server

@pytest.fixture(scope='module')
def toy_model(tmp_path_factory):
    d = tmp_path_factory.mktemp('toy')
    data = toy_csv(d/'rows.csv')
    r = run_json('toy', 'train', data, '--out', d/'models'/'toy', env=PLUGIN_ENV)
    return d, data, d/'models'/'toy', r


def test_the_plugin_is_a_command(toy_model):
    r = run_cli('--help', env=PLUGIN_ENV, check=0, fresh=True)     # new processes: whether the plug-in loads depends on the environment
    assert 'toy' in r.stdout and 'a one-number threshold classifier' in r.stdout
    r = run_cli('toy', '--help', env=PLUGIN_ENV, check=0, fresh=True)
    assert all(v in r.stdout for v in ('train', 'evaluate', 'predict', 'rule'))
    assert 'toy' not in run_cli('--help', check=0, fresh=True).stdout    # without the plug-in it is not there


def test_train_evaluate_predict_from_the_command_line(toy_model):
    d, data, model, r = toy_model
    assert r['kind'] == 'toy' and r['model_dir'] == str(model) and r['metrics']['accuracy'] == 1.0
    assert r['baseline']['accuracy'] == pytest.approx(26 / 40) and 1.1 < r['threshold'] < 1.5
    card = json.loads((model/'card.json').read_text())
    assert card['predictor'] == 'toy_family.ThresholdPredictor' and card['threshold'] == r['threshold']
    ev = run_json('toy', 'evaluate', model, data, env=PLUGIN_ENV)                    # a new process
    assert ev['n'] == 40 and ev['metrics']['accuracy'] == 1.0 and ev['baseline']['accuracy'] == pytest.approx(0.65)
    pr = run_json('toy', 'predict', model, 'x=4', '{"x": -3}', env=PLUGIN_ENV)
    assert [p['label'] for p in pr['predictions']] == ['high', 'low']
    human = run_cli('toy', 'predict', model, 'x=4', env=PLUGIN_ENV, check=0).stdout
    assert human.startswith('x=4: high')
    pr = run_json('toy', 'predict', model, 'x=4', '{"x": -3}', '--out', model.parent/'toy.jsonl', env=PLUGIN_ENV)   # any family's answers as a table
    assert [json.loads(l)['label'] for l in (model.parent/'toy.jsonl').read_text().splitlines()] == ['high', 'low'] and pr['out']['written'] == 2
    assert run_json('toy', 'rule', model, env=PLUGIN_ENV)['rule'].startswith('x > ')


def test_bad_input_is_a_user_error(toy_model, tmp_path):
    d, data, model, _ = toy_model
    (tmp_path/'bad.csv').write_text('y,label\n1,low\n')
    r = run_cli('toy', 'train', tmp_path/'bad.csv', '--out', tmp_path/'m', env=PLUGIN_ENV)
    assert r.returncode == 2 and 'no column x' in r.stderr and 'Traceback' not in r.stderr and not (tmp_path/'m').exists()
    r = run_cli('toy', 'predict', model, 'x=lots', env=PLUGIN_ENV)
    assert r.returncode == 2 and "'x' must be a finite number" in r.stderr
    r = run_cli('toy', 'train', data, env=PLUGIN_ENV)
    assert r.returncode == 2 and '--out' in r.stderr                                   # a required flag


def test_help_shows_the_defaults_the_code_uses(toy_model):
    "Every verb of every family (the built-in ones and the plug-in): the default printed in --help is the value the verb is called with."
    import argparse, inspect
    from fastxfer.cli import build_parser, effective_default
    import toy_family  # noqa: F401  (registers the family in this process)
    from fastxfer.family import FAMILIES, family_names, get_family
    checked = 0
    for fam in [get_family(n) for n in family_names()]:
        parser = build_parser([fam.name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[fam.name]
        verbs = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices
        for verb, vp in verbs.items():
            fn = vp.get_default('load_verb')()
            sig = inspect.signature(fn)
            for act in vp._actions:
                if act.dest not in sig.parameters or act.required or not act.option_strings: continue
                want = effective_default(sig.parameters[act.dest].default)
                assert act.default == want, (fam.name, verb, act.dest, act.default, want)
                m = re.search(r'\(default: ([^)]*?)(?: from settings \w+)?\)', act.help or '')
                shown = m.group(1) if m else None
                if isinstance(want, bool): assert shown == ('on' if want else 'off'), (fam.name, verb, act.dest, act.help)
                elif want is None: assert shown is None, (fam.name, verb, act.dest, act.help)   # no value claimed
                else: assert shown == str(want), (fam.name, verb, act.dest, act.help, want)
                checked += 1
    assert checked >= 40 and {'vision', 'text', 'nfl', 'toy'} <= set(FAMILIES)


def test_served_over_rest_with_its_own_schema(toy_model):
    d, data, model, _ = toy_model
    s = Server('--models', d/'models', '--no-ui', env=PLUGIN_ENV, cwd=d)
    try:
        spec = httpx.get(s.url + '/openapi.json').json()
        op = spec['paths']['/api/v1/models/toy/predict']['post']
        schema = request_schema(spec, '/api/v1/models/toy/predict')
        assert set(schema['properties']) == {'x'} and schema['properties']['x']['type'] == 'number'
        assert schema['required'] == ['x'] and schema['additionalProperties'] is False
        r = httpx.post(s.url + '/api/v1/models/toy/predict', json={'x': 5})
        assert r.status_code == 200 and r.json()['label'] == 'high' and r.json()['kind'] == 'toy'
        r = httpx.post(s.url + '/api/v1/models/toy/predict/batch', json={'rows': [{'x': -5}, {'x': 5}]})
        assert [p['label'] for p in r.json()['predictions']] == ['low', 'high']
        assert httpx.post(s.url + '/api/v1/models/toy/predict', json={'x': 'five'}).status_code == 422
        assert httpx.post(s.url + '/api/v1/predict/toy', json={'x': 5}).json()['label'] == 'high'   # the alias
        [m] = httpx.get(s.url + '/api/v1/models').json()['models']
        assert m['kind'] == 'toy' and m['card']['threshold'] > 1
    finally:
        s.stop()


def test_driven_in_the_widget(toy_model):
    import toy_family  # noqa: F401
    import ipywidgets as W
    from fastxfer.widgets import predict_widget
    w = predict_widget(toy_model[2])
    assert set(w.fields) == {'x'} and isinstance(w.fields['x'], W.FloatText)
    w.fields['x'].value = 4.0
    w.button.click()
    assert w.result['label'] == 'high' and 'above the threshold' in w.output.value
    w.fields['x'].value = -4.0
    w.button.click()
    assert w.result['label'] == 'low'


def test_train_reports_carry_the_common_fields_and_a_baseline(tmp_path):
    "vision, text and nfl `train` return the TrainReport fields (kind, metrics, train seconds, data fingerprint, plots, baseline)."
    from fastxfer.family import get_family
    from conftest import shared_or_skip
    toy = tmp_path/'texts.csv'
    toy.write_text('text,label,is_valid\n' + ''.join(f'"{w} film",{l},{int(i % 5 == 0)}\n' for i, (w, l) in enumerate(
        [('great', 'pos'), ('awful', 'neg'), ('lovely', 'pos'), ('dull', 'neg')] * 5)))
    r = get_family('text').train(str(toy), valid_col='is_valid', model='embed-logreg', max_len=32, out=str(tmp_path/'t'))
    assert r['kind'] == 'text' and r['data_fingerprint'] and r['train_seconds'] is not None and 'accuracy' in r['metrics']
    assert r['baseline']['accuracy'] == 0.5 and 'most frequent class' in r['baseline']['what']   # 2 pos / 2 neg in validation
    r = get_family('nfl').train(standings=str(shared_or_skip('nfl/standings.csv')), out=str(tmp_path/'n'), evaluate=False)
    assert r['kind'] == 'nfl' and r['data_fingerprint'] and r['model_dir'] == str(tmp_path/'n')
