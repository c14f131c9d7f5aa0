"""Check a built documentation site: links, anchors and images from the files, then in a real browser.

    python docs/check_site.py _docs/site [--screenshot _docs/screenshot.png] [--no-browser]

The file check: every internal link points at a page that exists and, with `#anchor`, at an id on it; every image
and script is internal (or inline data). The browser check (Debian's Chromium through Playwright, the site served
on 127.0.0.1): every page loads with no request outside 127.0.0.1, every image has a non-zero natural size, the
search box finds `fine_tune` and `tabular`, and a screenshot of the front page is written.
"""
from __future__ import annotations
import argparse, functools, http.server, shutil, sys, threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run']
SEARCHES = ('fine_tune', 'tabular')
# the tutorials and the catalogue: once executed, each shows at least one figure
FIGURE_PAGES = ('07d_vision.html', '12c_segment.html', '08c_tabular.html', '10c_text.html', '11c_collab.html',
                '09c_nfl.html', '03_augment.html')


class _Page(HTMLParser):
    "The ids, links and embedded resources of one HTML page."
    def __init__(self):
        super().__init__(); self.ids, self.links, self.resources = set(), [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ('id', 'name'):
            if a.get(k) and (k == 'id' or tag == 'a'): self.ids.add(a[k])
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        if tag in ('img', 'script', 'iframe') and a.get('src'): self.resources.append(a['src'])
        if tag == 'link' and a.get('href') and 'stylesheet' in (a.get('rel') or ''): self.resources.append(a['href'])


@functools.lru_cache(maxsize=None)
def parse(path:Path) -> _Page:
    p = _Page(); p.feed(path.read_text(errors='replace')); return p


def pages(site:Path) -> list[Path]:
    "The site's HTML pages (not mkdocs' 404 page)."
    return sorted(p for p in site.glob('*.html') if p.name != '404.html')


def file_problems(site:Path) -> list[str]:
    "Broken internal links and anchors, and resources that are not internal, on every page."
    out = []
    for page in pages(site):
        doc = parse(page)
        for href in doc.links:
            u = urlsplit(href)
            if u.scheme or href.startswith('//'): continue          # a link out, not a request
            target = page if not u.path else (page.parent/unquote(u.path)).resolve()
            if target.is_dir(): target = target/'index.html'
            if not target.exists(): out.append(f'{page.name}: broken link {href}'); continue
            if u.fragment and target.suffix == '.html' and unquote(u.fragment) not in parse(target).ids:
                out.append(f'{page.name}: no anchor #{u.fragment} in {target.name}')
        for src in doc.resources:
            u = urlsplit(src)
            if u.scheme == 'data': continue
            if u.scheme or src.startswith('//'): out.append(f'{page.name}: external resource {src}')
            elif not (page.parent/unquote(u.path)).exists(): out.append(f'{page.name}: missing resource {src}')
    return out


def missing_figures(site:Path) -> list[str]:
    "The tutorial pages that show no image (for an executed site)."
    return [f'{p}: no figure' for p in FIGURE_PAGES
            if not (site/p).exists() or not any(r.startswith('data:image') or r.endswith(('.png', '.jpg', '.svg'))
                                                for r in parse(site/p).resources)]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


def serve(site:Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    "The site on 127.0.0.1 at a free port, in a daemon thread."
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f'http://127.0.0.1:{srv.server_address[1]}'


def search_hits(page, base:str, term:str) -> int:
    "How many results the search box lists for `term` on the front page."
    page.goto(base + '/index.html', wait_until='networkidle')
    page.locator('label.md-search__icon, .md-search__input').first.click()
    page.locator('input.md-search__input').press_sequentially(term, delay=20)   # keystrokes, as a user types
    try: page.wait_for_selector('.md-search-result__item', timeout=20_000)
    except Exception: return 0
    return page.locator('.md-search-result__item').count()


def browser_problems(site:Path, screenshot:Path|None=None, names:list[str]|None=None) -> list[str]:
    "What a real browser finds wrong: requests outside 127.0.0.1, pages that fail, images of size 0, empty search (on the pages `names`, default all)."
    from playwright.sync_api import sync_playwright
    srv, base = serve(site)
    out, outside = [], []
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = b.new_context(viewport={'width': 1280, 'height': 900}).new_page()
            def route(r):
                if urlsplit(r.request.url).hostname in ('127.0.0.1', None): r.continue_()
                else: outside.append(r.request.url); r.abort()
            page.route('**/*', route)
            for p in [p for p in pages(site) if names is None or p.name in names]:
                resp = page.goto(f'{base}/{p.name}', wait_until='load')
                if resp is None or resp.status != 200: out.append(f'{p.name}: HTTP {resp and resp.status}'); continue
                bad = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                                    ".map(i => i.src.slice(0, 80))")
                out += [f'{p.name}: image of size 0: {s}' for s in bad]
            for term in SEARCHES:
                if not search_hits(page, base, term): out.append(f'search finds nothing for {term!r}')
            if screenshot:
                page.goto(base + '/index.html', wait_until='networkidle')
                screenshot.parent.mkdir(parents=True, exist_ok=True); page.screenshot(path=str(screenshot))
            b.close()
    finally: srv.shutdown()
    return out + [f'request outside 127.0.0.1: {u}' for u in sorted(set(outside))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('site', type=Path, help='the built site folder')
    ap.add_argument('--screenshot', type=Path, help='write a PNG of the front page here')
    ap.add_argument('--no-browser', action='store_true', help='the file check only')
    ap.add_argument('--executed', action='store_true', help='also require a figure on every tutorial page')
    a = ap.parse_args(argv)
    n = len(pages(a.site))
    problems = file_problems(a.site) + (missing_figures(a.site) if a.executed else [])
    if not a.no_browser:
        if not Path(CHROMIUM).is_file(): print('note: no Chromium, browser check skipped (apt-get install chromium)')
        else: problems += browser_problems(a.site, a.screenshot)
    for p in problems: print('problem:', p)
    print(f'{n} pages checked, {len(problems)} problems' + (f'; screenshot {a.screenshot}' if a.screenshot else ''))
    return 1 if problems or not n else 0


if __name__ == '__main__': sys.exit(main())
