"""The label cleaner's loop, as a user runs it: `label-issues`, the review page (Chromium against `fastxfer review` on
loopback) or the notebook widget, then `train --exclude` and `apply-review` (say, --yes, --undo), for images, texts
and tables; and what a bad decisions file gets (exit 2, every bad item and label listed, nothing changed)."""
import contextlib, csv, json, os, subprocess
from pathlib import Path

import httpx, numpy as np, pytest
from PIL import Image

from conftest import FASTXFER, coloured_squares, run_cli
from test_browser import ARGS, CHROMIUM, _chromium_or_skip
from test_serve import free_port, wait_up

COLOURS = {'red': (220, 40, 40), 'green': (40, 200, 40), 'blue': (40, 40, 220)}
MOVED = [('red', 'red1.png', 'blue'), ('green', 'green2.png', 'red'), ('blue', 'blue3.png', 'green')]   # (true folder, file, wrong folder)


def run_json(*args, **kw) -> dict:
    r = run_cli(*args, '--json', check=0, **kw)
    return json.loads(r.stdout)


def files(d: Path) -> set:
    return {p.relative_to(d).as_posix() for p in d.rglob('*') if p.is_file()}


@pytest.fixture(scope='module')
def squares(tmp_path_factory):
    "20 images a colour (a coloured square on grey noise) in folders named by colour, 3 of them in a wrong folder; and their label-issues report."
    d = tmp_path_factory.mktemp('review')
    coloured_squares(d/'squares', COLOURS, n=20, size=128, side=40)
    for src, name, dst in MOVED: (d/'squares'/src/name).rename(d/'squares'/dst/name)
    r = run_json('vision', 'label-issues', 'squares', '--size', 128, '--out', 'label_issues', cwd=d)
    assert {f'squares/{dst}/{name}' for _, name, dst in MOVED} <= {x['item'] for x in r['issues']}, r['issues']
    return d, r


class ReviewServer:
    "`fastxfer review ...` in a subprocess on a free loopback port."
    def __init__(self, *args, cwd):
        self.port = free_port(); self.url = f'http://127.0.0.1:{self.port}'
        self.log = Path(cwd)/f'review-{self.port}.log'
        self.proc = subprocess.Popen([str(FASTXFER), 'review', *map(str, args), '--port', str(self.port)], cwd=cwd,
                                     stdout=open(self.log, 'w'), stderr=subprocess.STDOUT)
        wait_up(self.url, self.proc, log=self.log)
    def stop(self):
        self.proc.terminate(); self.proc.wait(20)
    @contextlib.contextmanager
    def page(self):
        "A Chromium page (Playwright) opened on the review page."
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = b.new_page(viewport={'width': 1300, 'height': 1000})
                page.goto(self.url + '/', wait_until='load'); yield page
            finally: b.close()


def test_review_page_in_a_browser_then_train_and_apply(squares, tmp_path):
    _chromium_or_skip()
    d, r = squares
    s = ReviewServer('squares', cwd=d)
    try:
        with s.page() as page:
            page.wait_for_selector('#review-image img', timeout=60_000)
            n = len(r['issues'])
            for k in range(n):   # each suspect: relabel it to the suggestion the page prefills, except the last, deleted
                page.wait_for_selector(f'#review-caption :text("{k + 1} of {n}")', timeout=30_000)
                page.locator('#review-delete' if k == n - 1 else '#review-relabel').click()
            page.wait_for_selector(f'#review-status :text("{n} of {n} decided")', timeout=30_000)
            page.screenshot(path=str(tmp_path/'review_page.png'), full_page=True)
            page.locator('#review-grid button.thumbnail-item').nth(1).click()   # the grid jumps to a suspect
            page.wait_for_selector(f'#review-caption :text("2 of {n}")', timeout=30_000)
        assert httpx.get(s.url + '/api/v1/health').json()['decided'] == n
    finally: s.stop()
    rows = list(csv.DictReader(open(d/'squares.decisions.csv')))   # beside the data
    assert [x['item'] for x in rows] == [x['item'] for x in r['issues']]
    assert [(x['decision'], x['label']) for x in rows[:-1]] == [('relabel', x['suggested']) for x in r['issues'][:-1]]
    assert rows[-1]['decision'] == 'delete'
    before = files(d/'squares')

    t = run_json('vision', 'train', 'squares', '--exclude', 'squares.decisions.csv', '--mode', 'features', '--size', 64,
                 '--out', tmp_path/'model', cwd=d)
    assert t['n_train'] + t['n_valid'] + t['n_calib'] == 59 and files(d/'squares') == before   # one left out; no file touched

    said = run_cli('vision', 'apply-review', 'squares.decisions.csv', cwd=d, check=0)
    assert 'Nothing changed yet' in said.stdout and '--yes' in said.stdout and files(d/'squares') == before
    run_cli('vision', 'apply-review', 'squares.decisions.csv', '--yes', cwd=d, check=0)
    after = files(d/'squares')
    for src, name, dst in MOVED: assert f'{src}/{name}' in after and f'{dst}/{name}' not in after   # back in their true folder
    assert f".fastxfer-removed/{rows[-1]['item'].split('squares/', 1)[1]}" in after
    again = run_cli('vision', 'apply-review', 'squares.decisions.csv', '--yes', cwd=d)
    assert again.returncode == 2 and 'applied already' in again.stderr and files(d/'squares') == after   # not twice
    run_cli('vision', 'apply-review', 'squares.decisions.csv', '--undo', cwd=d, check=0)
    assert files(d/'squares') == before


def test_review_delete_over_records_only_the_surest_and_bad_scores_exit_2(squares, tmp_path):
    d, r = squares
    dec = tmp_path/'surest.csv'
    for bad in ('1.5', '0', '-0.2'):
        said = run_cli('review', 'squares', '--delete-over', bad, '--decisions', dec, cwd=d)
        assert said.returncode == 2 and said.stderr.strip().splitlines()[-1].startswith(f'error: --delete-over {float(bad)}'), said.stderr
    assert not dec.exists()   # nothing written
    (tmp_path/'a-file').write_text('not a folder')
    said = run_cli('review', 'squares', '--delete-over', 0.75, '--decisions', tmp_path/'a-file'/'d.csv', cwd=d)
    assert said.returncode == 2 and said.stderr.strip().splitlines()[-1].startswith('error: ') and 'cannot write the decisions' in said.stderr, said.stderr
    scores = sorted({x['score'] for x in r['issues']})
    assert len(scores) >= 2, r['issues']
    over = round((scores[0] + scores[1]) / 2, 6)   # between the two lowest scores: every suspect but the least sure
    out = run_json('review', 'squares', '--delete-over', over, '--decisions', dec, cwd=d)
    want = [x['item'] for x in r['issues'] if x['score'] >= over]
    assert 0 < len(want) < len(r['issues']) and out['deleted'] == len(want) and out['counts']['delete'] == len(want), (out, r['issues'])
    rows = list(csv.DictReader(open(dec)))
    assert [x['item'] for x in rows] == want and {x['decision'] for x in rows} == {'delete'}
    assert run_json('review', 'squares', '--delete-over', over, '--decisions', dec, cwd=d)['deleted'] == 0   # again: nothing more
    said = run_cli('review', 'squares', '--delete-over', 0.01, '--decisions', dec, cwd=d, check=0)   # for people: what it did, what next
    assert f'recorded delete for {len(r["issues"]) - len(want)} suspect(s)' in said.stdout and '--exclude' in said.stdout, said.stdout


def test_the_pages_delete_the_surest_button(squares, tmp_path):
    _chromium_or_skip()
    d, r = squares
    n, sure = len(r['issues']), [x for x in r['issues'] if x['score'] >= 0.75]
    assert len(sure) >= 2, r['issues']
    page_csv = tmp_path/'page.csv'   # one of the surest kept before: the button must leave that decision as it is
    page_csv.write_text(f"item,given,decision,label\n{sure[0]['item']},{sure[0]['given']},keep,\n")
    s = ReviewServer('squares', '--decisions', page_csv, cwd=d)
    try:
        with s.page() as page:
            page.wait_for_selector('#review-status :text("undecided suspect(s) scored 0.75")', timeout=60_000)
            page.locator('#review-surest').click()
            k = len(sure)
            page.wait_for_selector(f'#review-status :text("{k} of {n} decided (1 keep, 0 relabel, {k - 1} delete)")', timeout=30_000)
    finally: s.stop()
    rows = [(x['item'], x['decision']) for x in csv.DictReader(open(page_csv))]
    assert rows == [(sure[0]['item'], 'keep')] + [(x['item'], 'delete') for x in sure[1:]], rows


def test_a_bad_decisions_file_lists_what_is_wrong_and_changes_nothing(squares, tmp_path):
    d, r = squares
    bad = tmp_path/'bad.csv'
    bad.write_text('item,given,decision,label\n'
                   f"{r['issues'][0]['item']},{r['issues'][0]['given']},relabel,purple\n"
                   'squares/red/nothere.png,red,delete,\n'
                   f"{r['issues'][1]['item']},{r['issues'][1]['given']},delete,\n")
    before = files(d/'squares')
    for verb in (['apply-review', bad, '--data', 'squares', '--yes'], ['train', 'squares', '--exclude', bad, '--out', tmp_path/'m']):
        out = run_cli('vision', *verb, cwd=d)
        assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith('error:'), out.stderr
        assert 'purple' in out.stderr and 'nothere.png' in out.stderr and 'nothing applied' in out.stderr, out.stderr
    assert files(d/'squares') == before and not (tmp_path/'m').exists()
    bad.write_text('item,decision\nsquares/red/red0.png,move\n')
    out = run_cli('vision', 'apply-review', bad, '--data', 'squares', cwd=d)
    assert out.returncode == 2 and "'move'" in out.stderr and 'line 2' in out.stderr


def test_review_a_table_in_the_widget_then_train_and_apply(tmp_path):
    from fastxfer.widgets import review_widget
    rng = np.random.default_rng(0); n = 400
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    label = np.where(x1 + 0.5 * x2 > 0, 'yes', 'no'); flipped = rng.choice(n, 20, replace=False)
    label[flipped] = np.where(label[flipped] == 'yes', 'no', 'yes')
    # the first row has no label: left out, and the rows after it keep the numbers a spreadsheet shows (the header is row 1)
    (tmp_path/'t.csv').write_text('x1,x2,label\n0.5000,0.5000,\n' + ''.join(f'{a:.4f},{b:.4f},{l}\n' for a, b, l in zip(x1, x2, label)))
    original = (tmp_path/'t.csv').read_text()
    r = run_json('tabular', 'label-issues', 't.csv', '--target', 'label', '--out', 'label_issues', cwd=tmp_path)
    line = lambda text, item: text.splitlines()[int(item.split()[1]) - 1].split(',')   # row N is the file's line N
    for x in r['issues']: assert line(original, x['item']) == [f"{x['row']['x1']:.4f}", f"{x['row']['x2']:.4f}", x['given']], x
    here = os.getcwd(); os.chdir(tmp_path)
    try:
        w = review_widget('t.csv')
        assert '<th style="text-align:left">x1</th>' in w.shown.value and r['issues'][0]['item'] in w.caption.value   # the row, as the tabular Predictor shows it
        for _ in range(len(r['issues'])): w.buttons['relabel'].click()              # the suggestion, prefilled
    finally: os.chdir(here)
    assert f"{len(r['issues'])} of {len(r['issues'])} decided" in w.status.value
    t = run_json('tabular', 'train', 't.csv', '--target', 'label', '--model', 'gbm', '--exclude', 't.csv.decisions.csv',
                 '--out', 'm', cwd=tmp_path)
    assert t['n_train'] + t['n_valid'] + t['n_calib'] == n
    run_cli('tabular', 'apply-review', 't.csv.decisions.csv', '--target', 'label', '--yes', cwd=tmp_path, check=0)
    now = (tmp_path/'t.csv').read_text()
    assert all(line(now, x['item'])[2] == x['suggested'] for x in r['issues']) and now.splitlines()[1] == '0.5000,0.5000,'
    assert (tmp_path/'t.csv.before-review').read_text() == original
    run_cli('tabular', 'apply-review', 't.csv.decisions.csv', '--undo', cwd=tmp_path, check=0)
    assert (tmp_path/'t.csv').read_text() == original and not (tmp_path/'t.csv.before-review').exists()


@pytest.mark.parametrize('sep,encoding', [(',', 'utf-8'), (';', 'utf-8'), (';', 'cp1252')])
def test_text_train_exclude_and_apply_review(tmp_path, sep, encoding):
    """Also a CSV that separates its fields with `;` (a spreadsheet in a European locale), and one Excel on Windows
    saved (Windows-1252, CRLF line ends): read as it is, written back as it was."""
    from fastxfer.review import record_decision
    rows = [('a wonderful film, truly', 'pos'), ('I hated every minute', 'pos'), ('a dull movie', 'neg'), ('great fun, crème de la crème', 'pos')] * 6
    with open(tmp_path/'texts.csv', 'w', newline='', encoding=encoding) as f: csv.writer(f, delimiter=sep).writerows([('text', 'label'), *rows])
    dec = tmp_path/'texts.csv.decisions.csv'
    for i in range(1, len(rows), 4): record_decision(dec, f'row {i + 2}', 'pos', 'relabel', 'neg')   # row 2: the first under the header
    record_decision(dec, 'row 2', 'pos', 'delete')
    t = run_json('text', 'train', 'texts.csv', '--model', 'embed-logreg', '--exclude', dec.name, '--out', 'm', cwd=tmp_path)
    assert t['n_train'] + t['n_valid'] + t.get('n_calib', 0) == len(rows) - 1
    said = run_cli('text', 'apply-review', dec.name, cwd=tmp_path, check=0)
    assert '1 delete(s), 6 relabel(s)' in said.stdout and 'texts.csv' in said.stdout
    run_cli('text', 'apply-review', dec.name, '--yes', cwd=tmp_path, check=0)
    raw = (tmp_path/'texts.csv').read_bytes()
    assert raw.startswith(f'text{sep}label\r\n'.encode()) and raw.count(b'\r\n') == len(rows)    # the header and the rows kept
    got = list(csv.DictReader(raw.decode(encoding).splitlines(), delimiter=sep))
    assert len(got) == len(rows) - 1 and all(x['label'] == 'neg' for x in got if x['text'] == 'I hated every minute')
    assert sum(x['text'] == 'great fun, crème de la crème' for x in got) == 6


def test_a_relabel_given_with_exclude_reaches_the_fine_tuning_batches(tmp_path):
    "The DataLoaders read each image's label from the data step's list, so `train --exclude`'s relabels reach fine_tune (not the old label from the path)."
    from fastxfer.vision.data import collect_data, make_dls
    for c in 'ab':
        (tmp_path/'d'/c).mkdir(parents=True)
        for k in range(6): Image.new('RGB', (16, 16), (40 * k, 0, 0)).save(tmp_path/'d'/c/f'{c}{k}.png')
    (tmp_path/'dec.csv').write_text('item,decision,label\na/a0.png,relabel,b\n')
    vd = collect_data(tmp_path/'d', valid_pct=0.3, seed=0, exclude=str(tmp_path/'dec.csv'))
    dls = make_dls(vd, size=16, bs=4, aug='none', device='cpu')
    i = [str(p) for p in vd.items].index(str(tmp_path/'d'/'a'/'a0.png'))
    ds, idx = (dls.train_ds, vd.train_idx) if i in vd.train_idx else (dls.valid_ds, vd.valid_idx)
    assert vd.labels[i] == 'b' and dls.vocab[int(ds[idx.index(i)][1])] == 'b'


def test_apply_review_to_linked_images_named_by_id_in_a_csv(tmp_path):
    "Images that are links (a subset made with `ln -s`) labelled by a Kaggle-style CSV of ids without the extension: deleted links moved, the relabelled row rewritten, undone."
    src = coloured_squares(tmp_path/'src', COLOURS, n=3, size=32, side=8)
    (tmp_path/'train').mkdir()
    rows = ['id,colour']
    for i, p in enumerate(sorted(src.rglob('*.png'))):
        (tmp_path/'train'/f'{i:03x}a.png').symlink_to(p); rows.append(f'{i:03x}a,{p.parent.name}')
    (tmp_path/'labels.csv').write_text('\n'.join(rows) + '\n'); before = (tmp_path/'labels.csv').read_text()
    (tmp_path/'d.csv').write_text('item,given,decision,label\ntrain/000a.png,blue,delete,\ntrain/001a.png,blue,relabel,green\n')
    r = run_cli('vision', 'apply-review', 'd.csv', '--data', 'train', '--labels', 'csv:labels.csv', '--yes', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'train'/'.fastxfer-removed'/'000a.png').is_symlink() and not (tmp_path/'train'/'000a.png').exists()
    assert all(p.is_file() for p in src.rglob('*.png')), 'the files the links point to are untouched'
    assert '001a,green' in (tmp_path/'labels.csv').read_text()
    run_cli('vision', 'apply-review', 'd.csv', '--undo', cwd=tmp_path, check=0)
    assert (tmp_path/'labels.csv').read_text() == before and (tmp_path/'train'/'000a.png').is_symlink()


def test_an_imdb_style_folder_label_issues_exclude_and_apply(tmp_path):
    "An IMDB-style folder's texts are named by their files: label-issues finds the ones filed under the wrong class, train --exclude and apply-review (moves, undone) use the names."
    good = ['a wonderful film', 'great acting and a moving story', 'I loved every minute', 'a delightful and funny movie',
            'brilliant, beautiful and touching', 'the best film of the year']
    bad = ['a terrible film', 'boring and far too long', 'I hated every minute', 'a dull and stupid movie',
           'awful acting, awful story', 'the worst film of the year']
    d, wrong = tmp_path/'imdb', {'train/neg/pos_3.txt', 'train/pos/neg_60.txt', 'test/neg/pos_13.txt'}
    for i, (t, label) in enumerate([(t + f' (take {k})', 'pos') for k in range(8) for t in good] + [(t + f' (take {k})', 'neg') for k in range(8) for t in bad]):
        name = f'{label}_{i}.txt'
        split = 'test' if i % 8 == 5 else 'train'
        filed = {'pos': 'neg', 'neg': 'pos'}[label] if f'{split}/{"neg" if label == "pos" else "pos"}/{name}' in wrong else label
        (d/split/filed).mkdir(parents=True, exist_ok=True); (d/split/filed/name).write_text(t)
    before = files(d)
    assert wrong <= before
    r = run_json('text', 'label-issues', d, '--out', tmp_path/'li')
    found = {x['item'] for x in r['issues']}
    assert r['n'] == 96 and r['label_col'] is None and len(found & wrong) >= 2 and len(found) <= 8, (found, wrong)
    assert found <= before and all(x['text'] for x in r['issues'])   # each suspect named by its file under the folder
    dec = tmp_path/'imdb.decisions.csv'
    dec.write_text('item,given,decision,label\ntrain/neg/pos_3.txt,neg,relabel,pos\ntrain/pos/neg_60.txt,pos,delete,\n')
    t = run_json('text', 'train', d, '--model', 'embed-logreg', '--exclude', dec, '--calib-pct', 0, '--out', tmp_path/'m')
    assert t['n_train'] + t['n_valid'] == 95 and (d/'train'/'pos'/'neg_60.txt').is_file()   # one left out, the files as they were
    said = run_cli('text', 'apply-review', dec, check=0)
    assert '1 delete(s), 1 relabel(s)' in said.stdout and files(d) == before
    run_cli('text', 'apply-review', dec, '--yes', check=0)
    assert files(d) == before - {'train/neg/pos_3.txt', 'train/pos/neg_60.txt'} | {'train/pos/pos_3.txt', '.fastxfer-removed/train/pos/neg_60.txt'}
    run_cli('text', 'apply-review', dec, '--undo', check=0)
    assert files(d) == before
    dec.write_text('item,given,decision,label\ntrain/pos/nothing.txt,pos,delete,\ntrain/neg/pos_3.txt,neg,relabel,meh\n')
    e = run_cli('text', 'apply-review', dec, '--yes', check=2)
    assert 'train/pos/nothing.txt' in e.stderr and 'meh' in e.stderr and files(d) == before
