"""Label issues (#29): confident learning agrees with cleanlab on the same probabilities, and each family's
`label-issues` verb finds labels planted wrong (images, a table, texts), writes its CSV, contact sheet and JSON, and
refuses bad input with exit 2."""
import csv, json, re
import numpy as np, pytest
from PIL import Image
from conftest import run_cli, run_json

COLOURS = {'red': (220, 30, 30), 'green': (30, 200, 30), 'blue': (30, 30, 220)}


def noisy_probs(rng, K, n=300, noise=0.1):
    "Probabilities of a fair model of `K` classes, the true classes and labels with `noise` of them changed."
    truth = rng.integers(0, K, n); logits = rng.normal(0, 1, (n, K)); logits[np.arange(n), truth] += rng.uniform(0.5, 3)
    p = np.exp(logits); p /= p.sum(1, keepdims=True)
    y = truth.copy(); f = rng.random(n) < noise; y[f] = (y[f] + rng.integers(1, K, f.sum())) % K
    return p, y, f


def f1(found, flipped) -> float:
    tp = (found & flipped).sum(); return 2 * tp / max(1, found.sum() + flipped.sum())


def test_confident_learning_agrees_with_cleanlab():
    cleanlab = pytest.importorskip('cleanlab.filter', reason='cleanlab is not installed (it is in the dev extras)')
    from fastxfer.label_issues import find_label_issues
    rng, agree, gap = np.random.default_rng(1), [], []
    for _ in range(20):
        p, y, flipped = noisy_probs(rng, int(rng.integers(2, 6)))
        ours, theirs = find_label_issues(p, y), cleanlab.find_label_issues(y, p)
        agree.append((ours == theirs).mean()); gap.append(f1(ours, flipped) - f1(theirs, flipped))
    print(f'agreement {np.mean(agree):.4f}, F1 ours - cleanlab: mean {np.mean(gap):+.4f}, worst {min(gap):+.4f}')
    assert min(agree) >= 0.98 and np.mean(gap) >= -0.005 and min(gap) >= -0.02


def _square(path, colour, rng, size=128, side=40):
    a = rng.integers(60, 196, (size, size, 1)).repeat(3, 2).astype(np.uint8)
    x, y = rng.integers(0, size - side, 2)
    a[y:y + side, x:x + side] = COLOURS[colour]
    Image.fromarray(a).save(path)


@pytest.fixture(scope='module')
def noisy_images(tmp_path_factory):
    "20 images a colour in folders named by colour; 3 moved to a wrong folder, one copied into another, one unreadable file."
    d, rng = tmp_path_factory.mktemp('noisy_images'), np.random.default_rng(0)
    for c in COLOURS:
        (d/c).mkdir()
        for i in range(20): _square(d/c/f'{c}{i}.png', c, rng)
    moved = [('red', 'red1.png', 'blue'), ('green', 'green2.png', 'red'), ('blue', 'blue3.png', 'green')]
    for src, name, dst in moved: (d/src/name).rename(d/dst/name)
    (d/'blue'/'copy_of_red5.png').write_bytes((d/'red'/'red5.png').read_bytes())
    (d/'red'/'broken.png').write_text('not an image')
    return d, {str(d/dst/name) for _, name, dst in moved}


def test_vision_label_issues_finds_the_moved_images(noisy_images, tmp_path):
    d, moved = noisy_images
    r = run_json('vision', 'label-issues', d, '--size', 128, '--out', tmp_path/'out')
    found = {x['item']: x for x in r['issues']}
    assert moved <= set(found) and len(found) <= 10, (list(found), moved)   # every moved image, among few suspects
    assert all(found[m]['suggested'] == re.match(r'[a-z]+', m.split('/')[-1]).group() for m in moved)   # the suggestion: its true colour
    pair = {p['a'].split('/')[-1] for p in r['duplicates']} | {p['b'].split('/')[-1] for p in r['duplicates']}
    assert {'red5.png', 'copy_of_red5.png'} <= pair             # the copied image, under two labels
    assert any(u.endswith('broken.png') for u in r['unreadable'])
    rows = list(csv.DictReader(open(tmp_path/'out'/'label_issues.csv')))
    assert [x['item'] for x in rows] == [x['item'] for x in r['issues']] and rows[0]['given'] and rows[0]['suggested']
    assert Image.open(tmp_path/'out'/'suspects.png').size[0] > 200
    assert json.loads((tmp_path/'out'/'label_issues.json').read_text())['n_issues'] == r['n_issues']


def test_table_label_issues_finds_the_flipped_rows(tmp_path):
    rng = np.random.default_rng(0); n = 400
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    label = np.where(x1 + 0.5 * x2 > 0, 'yes', 'no'); flipped = rng.choice(n, 20, replace=False)
    label[flipped] = np.where(label[flipped] == 'yes', 'no', 'yes')
    colour = rng.choice(['a', 'b', 'c'], n)
    (tmp_path/'t.csv').write_text('x1,x2,colour,label\n' + ''.join(f'{a:.4f},{b:.4f},{c},{l}\n' for a, b, c, l in zip(x1, x2, colour, label)))
    r = run_json('tabular', 'label-issues', tmp_path/'t.csv', '--target', 'label', '--out', tmp_path/'out')
    top = {int(x['item'].split()[1]) - 2 for x in r['issues'][:20]}   # row 2: the first under the header
    print(f"precision at 20: {len(top & set(flipped.tolist())) / 20:.2f}")
    assert len(top & set(flipped.tolist())) >= 14 and (tmp_path/'out'/'label_issues.csv').is_file()


def test_text_label_issues_finds_the_flipped_texts(tmp_path):
    rng = np.random.default_rng(0)
    good = ['a wonderful film', 'great acting and a moving story', 'I loved every minute', 'a delightful and funny movie',
            'brilliant, beautiful and touching', 'the best film of the year']
    bad = ['a terrible film', 'boring and far too long', 'I hated every minute', 'a dull and stupid movie',
           'awful acting, awful story', 'the worst film of the year']
    rows = [(t + f' (take {i})', 'pos') for i in range(8) for t in good] + [(t + f' (take {i})', 'neg') for i in range(8) for t in bad]
    flipped = {3, 20, 60, 77}
    rows = [(t, {'pos': 'neg', 'neg': 'pos'}[l] if i in flipped else l) for i, (t, l) in enumerate(rows)]
    with open(tmp_path/'texts.csv', 'w', newline='') as f: csv.writer(f).writerows([('text', 'label'), *rows])
    r = run_json('text', 'label-issues', tmp_path/'texts.csv', '--out', tmp_path/'out')
    found = [int(x['item'].split()[1]) - 2 for x in r['issues']]   # row 2: the first under the header
    assert len(set(found) & flipped) >= 3 and len(found) <= 8, (found, flipped)   # most flips, few false alarms
    assert r['issues'][0]['text'] and (tmp_path/'out'/'label_issues.json').is_file()


@pytest.mark.parametrize('args,says', [
    (['vision', 'label-issues', '{d}', '--folds', '1'], '--folds 1: give at least 2'),
    (['vision', 'label-issues', '{d}/red'], 'found 1 class'),
    (['tabular', 'label-issues', '{d}/nothing.csv', '--target', 'y'], 'nothing.csv'),
    (['text', 'label-issues', '{d}'], 'not the IMDB layout'),
    (['tabular', 'label-issues', '{t}', '--target', 'price'], "'price' holds numbers (30 distinct values)"),
    (['tabular', 'label-issues', '{t}', '--target', 'kind'], '1 class(es) with a single item (rare)'),
    (['tabular', 'label-issues', '{t}', '--target', 'kind,price'], 'several targets are not supported here')])
def test_bad_label_issues_input_is_exit_2(args, says, noisy_images, tmp_path):
    d, _ = noisy_images
    t = tmp_path/'t.csv'   # a price to predict (not classes), and a class of one row
    t.write_text('size,kind,price\n' + ''.join(f'{i},{"rare" if i == 0 else "ab"[i % 2]},{1000 + 37.5 * i}\n' for i in range(30)))
    args = [a.replace('{t}', str(t)) for a in args]
    r = run_cli(*[a.format(d=d) for a in args], '--out', tmp_path/'out')
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith('error:') and says in r.stderr, r.stderr[-500:]
    assert not (tmp_path/'out').exists()   # nothing written


def test_several_labels_per_item_are_refused_before_the_work(noisy_images, tmp_path):
    "label-issues looks for one wrong label an item: a text column holding several labels, or images labelled multi:, get exit 2 saying so."
    (tmp_path/'e.csv').write_text('text,labels\n' + ''.join(f'comment {i},{l}\n' for i, l in enumerate(['joy', 'anger', 'joy anger', 'joy', 'anger'] * 4)))
    r = run_cli('text', 'label-issues', tmp_path/'e.csv', '--label-col', 'labels', '--out', tmp_path/'out')
    assert r.returncode == 2 and "'joy anger' is several labels" in r.stderr and 'text_embeddings' not in r.stderr, r.stderr
    (tmp_path/'l.csv').write_text('fname,labels\n')
    r = run_cli('vision', 'label-issues', noisy_images[0], '--labels', f"multi:csv:{tmp_path/'l.csv'}", '--out', tmp_path/'out')
    assert r.returncode == 2 and 'several labels per image are not supported' in r.stderr and not (tmp_path/'out').exists(), r.stderr
