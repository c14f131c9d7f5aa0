"""The front door and the documentation site.

README.md is what `nbs/index.ipynb` makes (`make readme`), short, dateless, and its links resolve. The slow tests build
the site from the unexecuted notebooks (about a minute with its browser check on 2 cores) and check it from its files
and in Chromium: no broken link, anchor or image, no request outside 127.0.0.1, and the search box finds `fine_tune`
and `tabular`; and the executed build (`make docs`, about 6 minutes the first time), which CI runs after the tests.
"""
import importlib.util, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name:str):
    "A script of docs/ as a module (by path: PyPI's `build` package must not answer for docs/build.py)."
    spec = importlib.util.spec_from_file_location(f'fastxfer_docs_{name}', ROOT/'docs'/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); return mod


build, check_site = _load('build'), _load('check_site')


def test_readme_is_generated_from_index():
    assert (ROOT/'README.md').read_text() == build.readme_text(), 'README.md is out of date: run `make readme`'
    assert build.main(['readme', '--check']) == 0


def test_readme_is_a_front_door():
    text = (ROOT/'README.md').read_text()
    assert len(text.splitlines()) <= 200 and len(text.encode()) <= 15_000
    assert not re.search(r'\b20\d\d-\d\d-\d\d\b', text), 'dates belong in bench/README.md'
    assert 'load average' not in text.lower()
    for h in ('Quickstart: the command line', 'Quickstart: Python', 'Families', 'Serving', 'Plugging in a family',
              'Developing', 'Documentation'):
        assert f'\n## {h}\n' in text, h
    table = text.split('## Families')[1].split('\n## ')[0]
    for fam in ('vision', 'segment', 'tabular', 'text', 'collab', 'nfl'): assert f'| `{fam}` |' in table, fam


def test_readme_links_resolve():
    targets = re.findall(r'\]\(([^)\s]+)\)', (ROOT/'README.md').read_text())
    assert len(targets) >= 10
    for t in targets:
        if not re.match(r'[a-z]+:|#', t): assert (ROOT/t.split('#')[0]).exists(), t


def test_links_are_rewritten_for_the_readme_and_the_site():
    md = '[a](07d_vision.ipynb) [b](../docs/cli.md#settings) [c](../bench/README.md) [d](../tests/toy_family.py) [e](#x)'
    assert build.rewrite_links(md, 'nbs', 'readme') == ('[a](nbs/07d_vision.ipynb) [b](docs/cli.md#settings) '
                                                        '[c](bench/README.md) [d](tests/toy_family.py) [e](#x)')
    site = build.rewrite_links(md, 'nbs', 'site')
    assert '(07d_vision.ipynb)' in site and '(cli.md#settings)' in site and '(bench.md)' in site
    assert f'({build.REPO_URL}/blob/main/tests/toy_family.py)' in site
    assert '(07d_vision.html)' in build.rewrite_links(md, 'nbs', 'site-notebook')


def test_every_notebook_and_page_is_in_the_nav():
    want = {p.name for p in (ROOT/'nbs').glob('*.ipynb')} - {'index.ipynb'} | {p.name for p in (ROOT/'docs').glob('*.md')}
    assert want <= build.nav_pages()


def test_show_doc_cells_lose_their_input_and_hidden_cells_go():
    nb = {'cells': [{'cell_type': 'code', 'source': '#| export\ndef f(): pass', 'metadata': {}, 'outputs': []},
                    {'cell_type': 'code', 'source': 'show_doc(f); show_doc(g)', 'metadata': {}, 'outputs': [
                        {'output_type': 'display_data', 'metadata': {},
                         'data': {'text/markdown': '[source](u){target="_blank" style="x"}'}}]},
                    {'cell_type': 'markdown', 'source': '## The `f` function', 'metadata': {}}]}
    cells = build.page_cells(nb)['cells']
    assert len(cells) == 2 and cells[0]['metadata'] == {'tags': ['hide-input']}
    assert cells[0]['outputs'][0]['data']['text/markdown'] == '[source](u)' and cells[1]['source'] == '## The f function'


@pytest.fixture(scope='module')
def quick_site(tmp_path_factory):
    "The site from the unexecuted notebooks."
    out = tmp_path_factory.mktemp('docs')
    assert build.site(out, execute_nbs=False) == 0
    return out


@pytest.mark.slow
def test_site_says_what_the_readme_says(quick_site):
    home = (quick_site/'src'/'index.md').read_text()
    code = re.findall(r'```\w*\n(.*?)```', (ROOT/'README.md').read_text(), re.S)
    for line in ''.join(code).splitlines(): assert line in home, line
    assert (quick_site/'site'/'index.html').exists() and len(check_site.pages(quick_site/'site')) >= 45


@pytest.mark.slow
def test_site_files_have_no_broken_link_or_outside_resource(quick_site):
    assert check_site.file_problems(quick_site/'site') == []


@pytest.mark.slow
def test_site_in_a_real_browser(quick_site):
    "A sample of pages (`make docs` opens every page of the executed site): each loads, no request leaves 127.0.0.1, search finds."
    if not Path(check_site.CHROMIUM).is_file(): pytest.skip('Debian chromium is not installed (make test installs it as root)')
    shot, sample = quick_site/'front.png', ['index.html', 'serving.html', '07d_vision.html', '13_serve.html']
    assert all((quick_site/'site'/n).exists() for n in sample)
    assert check_site.browser_problems(quick_site/'site', shot, names=sample) == []
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_executed_site_shows_a_figure_on_every_tutorial():
    "`make docs`: the notebooks executed (cached under _docs/cache), every tutorial with a figure, checked in Chromium."
    assert build.site() == 0
    site = ROOT/'_docs'/'site'
    problems = check_site.file_problems(site) + check_site.missing_figures(site)
    if Path(check_site.CHROMIUM).is_file(): problems += check_site.browser_problems(site)
    assert problems == []
