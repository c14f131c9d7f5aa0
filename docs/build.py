"""Build README.md from nbs/index.ipynb, and the documentation site from the notebooks executed, offline.

    python docs/build.py readme            # README.md from nbs/index.ipynb          (make readme)
    python docs/build.py readme --check    # exit 1 when README.md is not what index.ipynb makes
    python docs/build.py site              # execute changed notebooks, stage, mkdocs -> _docs/site   (make docs)
    python docs/build.py site --no-exec --out DIR   # the same site from the unexecuted notebooks (the fast test)

Why these tools: nbdev-docs needs Quarto, which no package registry ships; mkdocs-material (theme and offline
search) with mkdocs-jupyter (notebooks as pages) install from PyPI and need no network at build or read time.
Notebooks are executed here, not by mkdocs-jupyter, with nbdev's own executor and skip rules (what nbdev-test
runs: `#| eval: false` and `#| slow` cells are left out), and cached by content under _docs/cache/, so a second
build re-executes only notebooks that changed.
"""
from __future__ import annotations
import argparse, hashlib, json, os, re, shutil, subprocess, sys, time, tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, DOCS, OUT = ROOT/'nbs', ROOT/'docs', ROOT/'_docs'
REPO_URL = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['urls']['Repository'].rstrip('/')
SITE_NAMES = {'bench/README.md': 'bench.md', 'README.md': 'index.md', 'nbs/index.ipynb': 'index.md'}
QUARTO_ATTR = re.compile(r'\{target="_blank"[^}]*\}')
LINK = re.compile(r'(\]\()([^)\s]+)(\))')
MATHJAX_STUB = 'assets/no-mathjax.js'   # the notebooks have no maths; nbconvert would fetch MathJax from a CDN


def site_name(rel:str) -> str|None:
    "The page a repository file becomes in the site (all pages sit in one folder), or None when it is not a page."
    if rel in SITE_NAMES: return SITE_NAMES[rel]
    p = Path(rel)
    if p.parent.name == 'nbs' and p.suffix == '.ipynb' and len(p.parts) == 2: return p.name
    if p.parent.name == 'docs' and p.suffix == '.md' and len(p.parts) == 2: return p.name
    return None


def rewrite_links(text:str, src_dir:str, to:str) -> str:
    "Rewrite the markdown links of a file in `src_dir` (repo-relative) for the README (`to='readme'`) or the site."
    def fix(m):
        target = m.group(2)
        if re.match(r'^([a-z]+:|#|/)', target): return m.group(0)
        path, _, anchor = target.partition('#')
        rel = os.path.normpath(os.path.join(src_dir, path)).replace(os.sep, '/')
        if to == 'readme': new = 'README.md' if rel == 'nbs/index.ipynb' else rel
        else:
            page = site_name(rel)
            if page is None: new = f"{REPO_URL}/{'tree' if (ROOT/rel).is_dir() else 'blob'}/main/{rel}"
            elif to == 'site-notebook': new = page.rsplit('.', 1)[0] + '.html'   # nbconvert leaves links as they are
            else: new = page                                                      # mkdocs checks and converts these
        return m.group(1) + new + (f'#{anchor}' if anchor else '') + m.group(3)
    return LINK.sub(fix, text)


def directives(src:str) -> dict:
    "The `#| key: value` lines at the top of a cell."
    out = {}
    for line in src.splitlines():
        m = re.match(r'#\|\s*([\w-]+):?\s*(.*)', line)
        if not m: break
        out[m.group(1)] = m.group(2).strip()
    return out


def index_markdown(nb_path:Path=NBS/'index.ipynb') -> str:
    "index.ipynb as markdown (links as written in nbs/): its markdown cells, and its shown code cells as Python blocks."
    parts = []
    for c in json.loads(nb_path.read_text())['cells']:
        src = ''.join(c['source']).strip()
        if not src or 'hide' in directives(src): continue
        parts.append(src if c['cell_type'] == 'markdown' else f'```python\n{src}\n```')
    return '\n\n'.join(parts)


def readme_text() -> str:
    "README.md as index.ipynb makes it: its markdown with links from the repository root, and a generated-by note."
    note = '<!-- generated from nbs/index.ipynb by `make readme`: edit the notebook, not this file -->'
    return rewrite_links(index_markdown(), 'nbs', 'readme') + '\n\n' + note + '\n'


def readme(check:bool=False) -> int:
    "Write README.md from index.ipynb; with `check`, only say whether it is up to date."
    want, path = readme_text(), ROOT/'README.md'
    if check:
        ok = path.exists() and path.read_text() == want
        print('README.md is in sync with nbs/index.ipynb' if ok else 'README.md is out of date: run `make readme`')
        return 0 if ok else 1
    path.write_text(want)
    print(f'wrote README.md ({len(want.splitlines())} lines, {len(want.encode())} bytes)')
    return 0


def execute(src:str, dest:str) -> str|None:
    "Run notebook `src` in nbs/ as nbdev-test does (same skipped cells); save it with its outputs to `dest`."
    from fastcore.nbio import write_nb
    from fastcore.xtras import working_directory
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    from nbdev.config import get_config
    from nbdev.test import _skip_cell
    nb = NBProcessor(src, rm_directives=False, process=True).nb
    skip = get_config(NBS).tst_flags                 # what nbdev-test leaves out: tst_flags in [tool.nbdev]
    if isinstance(skip, str): skip = skip.split()
    try:
        with working_directory(NBS): CaptureShell(src).run_all(nb, exc_stop=True, preproc=_skip_cell(nb, skip))
    except Exception as e: return f'{type(e).__name__}: {e}'
    write_nb(nb, dest)


THREAD_VARS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')

def execute_in_process(src:Path, dest:Path, threads:int|None=None) -> tuple[str, float, str|None]:
    """`execute` in a fresh interpreter (IPython takes over `__main__`; one notebook's state never leaks into the next),
    with at most `threads` math threads: notebooks run side by side that each take every core wait on each other's
    spinning threads (a 2-core build took 587 s for one notebook that needs 39 s)."""
    t0 = time.time()
    env = {**os.environ, **({v: str(threads) for v in THREAD_VARS} if threads else {})}
    r = subprocess.run([sys.executable, __file__, 'execute', str(src), str(dest)], capture_output=True, text=True, env=env)
    err = None if r.returncode == 0 and dest.exists() else (r.stdout + r.stderr).strip()[-2000:] or f'exit {r.returncode}'
    return src.name, time.time() - t0, err


def executed(notebooks:list[Path], workers:int=2) -> dict[str, Path]:
    "Each notebook executed, from the cache when its content has not changed since the last build."
    cache = OUT/'cache'; cache.mkdir(parents=True, exist_ok=True)
    out, todo = {}, []
    for nb in notebooks:
        key = hashlib.sha256(nb.read_bytes()).hexdigest()[:16]
        out[nb.name] = dest = cache/f'{nb.stem}.{key}.ipynb'
        if not dest.exists(): todo.append((nb, dest))
    print(f'executing {len(todo)} of {len(notebooks)} notebooks ({len(notebooks) - len(todo)} unchanged, cached)',
          flush=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        threads = max(1, (os.cpu_count() or 1) // workers)   # the cores shared out among the notebooks run at once
        for name, secs, err in pool.map(lambda t: execute_in_process(*t, threads), todo):
            print(f'  {name:32} {secs:6.1f} s{"  FAILED: " + err if err else ""}', flush=True)
            if err: raise SystemExit(f'error: {name} failed to execute: {err}')
    for nb in notebooks:   # drop the stale versions
        for old in cache.glob(f'{nb.stem}.*.ipynb'):
            if old != out[nb.name]: old.unlink()
    return out


def page_cells(nb:dict) -> dict:
    "A notebook as a page: hidden and exported cells out (show_doc documents what they define), directives out."
    cells = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        d = directives(src)
        if c['cell_type'] == 'code' and ({'hide', 'export', 'exporti', 'default_exp'} & d.keys()): continue
        lines = [l for l in src.splitlines(keepends=True) if not l.startswith('#|')]
        if c['cell_type'] == 'markdown':   # code spans out of headings: mkdocs-jupyter's TOC drops them, the ids keep them
            lines = [l.replace('`', '') if l.startswith('#') else l for l in lines]
            lines = [rewrite_links(''.join(lines), 'nbs', 'site-notebook')]
        if not ''.join(lines).strip(): continue
        for o in c.get('outputs', []):     # show_doc's `[source](url){target=...}` is Quarto's syntax, noise here
            md = o.get('data', {}).get('text/markdown')
            if md: o['data']['text/markdown'] = QUARTO_ATTR.sub('', ''.join(md))
        stmts = [t.strip() for l in lines for t in l.split(';') if t.strip()]
        only_docs = c['cell_type'] == 'code' and all(t.startswith(('show_doc(', 'from nbdev.showdoc')) for t in stmts)
        meta = {'tags': ['hide-input']} if only_docs else {}       # show_doc's output is the page; its call is noise
        cells.append({**c, 'source': ''.join(lines), 'metadata': meta})   # (execnb's timings are not valid nbformat)
    return {**nb, 'cells': cells}


def stage(src_dir:Path, notebooks:dict[str, Path]):
    "The site's sources in one folder: the pages from docs/, bench/README.md, the home page and the notebooks."
    if src_dir.exists(): shutil.rmtree(src_dir)
    (src_dir/'assets').mkdir(parents=True)
    (src_dir/MATHJAX_STUB).write_text('// MathJax is not used: the notebooks have no maths.\n')
    (src_dir/'index.md').write_text(rewrite_links(index_markdown(), 'nbs', 'site'))
    (src_dir/'bench.md').write_text(rewrite_links((ROOT/'bench/README.md').read_text(), 'bench', 'site'))
    for md in sorted(DOCS.glob('*.md')): (src_dir/md.name).write_text(rewrite_links(md.read_text(), 'docs', 'site'))
    for name, path in notebooks.items():
        if name == 'index.ipynb': continue
        (src_dir/name).write_text(json.dumps(page_cells(json.loads(path.read_text())), indent=1))


def nav_pages(config:Path=ROOT/'mkdocs.yml') -> set[str]:
    "The page files the nav of mkdocs.yml names."
    return set(re.findall(r':\s*([\w.-]+\.(?:md|ipynb))\s*$', config.read_text(), re.M))


def site(out:Path=OUT, execute_nbs:bool=True, force:bool=False, workers:int=2) -> int:
    "Build the site into `out`/site: execute (cached), stage into `out`/src, run mkdocs in strict mode."
    t0 = time.time()
    notebooks = sorted(NBS.glob('*.ipynb'))
    missing = {p.name for p in notebooks if p.name != 'index.ipynb'} | {p.name for p in DOCS.glob('*.md')}
    missing -= nav_pages()
    if missing: raise SystemExit(f'error: mkdocs.yml nav does not list {sorted(missing)}')
    if force and (OUT/'cache').exists(): shutil.rmtree(OUT/'cache')
    nbs = executed(notebooks, workers) if execute_nbs else {p.name: p for p in notebooks}
    out.mkdir(parents=True, exist_ok=True)
    stage(out/'src', nbs)
    cfg = out/'mkdocs.yml'
    cfg.write_text(f'INHERIT: {ROOT/"mkdocs.yml"}\ndocs_dir: src\nsite_dir: site\n')
    r = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-f', str(cfg)], cwd=out, text=True,
                       capture_output=True, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'})
    for line in (r.stdout + r.stderr).splitlines():   # mkdocs' warnings and errors; its INFO lines are noise
        if not line.startswith('INFO') and line.strip(): print(line)
    if r.returncode: return r.returncode
    print(f'built {out/"site"} in {time.time() - t0:.0f} s; open {out/"site"/"index.html"}')
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='what', required=True)
    r = sub.add_parser('readme', help='README.md from nbs/index.ipynb')
    r.add_argument('--check', action='store_true', help='only check that README.md is in sync')
    s = sub.add_parser('site', help='the documentation site')
    s.add_argument('--out', type=Path, default=OUT, help='folder for src/ and site/')
    s.add_argument('--no-exec', action='store_true', help='build from the notebooks as they are, unexecuted')
    s.add_argument('--force', action='store_true', help='re-execute every notebook')
    s.add_argument('--workers', type=int, default=2, help='notebooks executed at once')
    e = sub.add_parser('execute', help='execute one notebook (what `site` runs per notebook)')
    e.add_argument('src'); e.add_argument('dest')
    a = ap.parse_args(argv)
    if a.what == 'readme': return readme(a.check)
    if a.what == 'execute':
        err = execute(a.src, a.dest)
        if err: print(err, file=sys.stderr)
        return 1 if err else 0
    return site(a.out.resolve(), not a.no_exec, a.force, a.workers)


if __name__ == '__main__': sys.exit(main())
