"""Style-transfer augmentation (AdaIN, `fastxfer.augment.style`, `fastxfer augment style`): AdaIN's statistics, the
shipped decoder, the files `augment_style` and the command write (a folder `vision train` reads, a preview, a record),
and the bad inputs refused before anything is written."""
import json
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import run_cli
from fastxfer.core import FastxferError, embedded_data
from fastxfer.augment.style import (DECODER_FILE, adain, augment_style, channel_stats, load_decoder, read_image, style_decoder,
                                    style_encoder, stylize)

pytestmark = pytest.mark.usefixtures('one_torch_thread')

def _z(x):
    m, s = channel_stats(x)
    return (x - m) / s


def test_adain_gives_the_style_statistics_and_keeps_the_content_pattern():
    g = torch.Generator().manual_seed(0)
    # channel scales from 0.25 to 4.25: far above the eps in the standard deviations (1e-5 on variances), so the normalised
    # patterns agree to 1e-3; a channel of scale 0.04 would differ by 0.01 from that eps alone
    fc = torch.randn(3, 40, 12, 10, generator=g) * (torch.rand(3, 40, 1, 1, generator=g) * 4 + 0.25) + torch.randn(3, 40, 1, 1, generator=g)
    fs = torch.randn(3, 40, 7, 9, generator=g) * 0.3 + 2          # another size: only its statistics count
    t = adain(fc, fs)
    (tm, ts), (sm, ss), (cm, _) = channel_stats(t), channel_stats(fs), channel_stats(fc)
    assert (cm - sm).abs().max() > 0.5                             # the content's statistics were far from the style's
    assert torch.allclose(tm, sm, atol=1e-4) and torch.allclose(ts, ss, atol=1e-3)
    assert torch.allclose(_z(t), _z(fc), atol=1e-3)                # the normalised pattern is the content's
    assert torch.allclose(adain(fc, channel_stats(fs)), t, atol=1e-6)   # statistics instead of feature maps: the same


def test_alpha_blends_and_zero_keeps_the_content_features():
    g = torch.Generator().manual_seed(1)
    fc, fs = torch.randn(2, 40, 6, 6, generator=g) + 3, torch.randn(2, 40, 6, 6, generator=g) * 2
    assert torch.equal(adain(fc, fs, alpha=0.), fc)
    assert torch.allclose(adain(fc, fs, alpha=0.25), 0.75 * fc + 0.25 * adain(fc, fs), atol=1e-5)
    enc, dec = style_encoder(), style_decoder()
    x, s = torch.rand(3, 32, 40, generator=g), torch.rand(3, 32, 32, generator=g)
    with torch.no_grad(): plain = dec(enc(x[None])[-1])[0].clamp(0, 1)
    assert torch.allclose(stylize(x, s, 0., enc, dec), plain, atol=1e-6)   # alpha 0: the decoder sees the content's own features
    assert not torch.allclose(stylize(x, s, 1., enc, dec), plain, atol=1e-3)


def _photo_like(h=96, w=128, seed=0) -> torch.Tensor:
    "A synthetic picture with smooth shading, shapes and a little texture, (3, h, w) in [0, 1]."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a = np.stack([0.3 + 0.5 * xx, 0.2 + 0.6 * yy, 0.6 - 0.3 * xx * yy], -1)
    a[(yy - 0.35) ** 2 + (xx - 0.4) ** 2 < 0.03] = (0.9, 0.75, 0.2)          # a disc
    a[int(h * .55):int(h * .85), int(w * .6):int(w * .9)] = (0.15, 0.2, 0.55)   # a rectangle
    a += rng.normal(0, 0.03, a.shape)
    return torch.tensor(a.clip(0, 1), dtype=torch.float32).permute(2, 0, 1)


def test_shipped_decoder_redraws_a_photo_better_than_a_random_one():
    """The shipped decoder, given a photo's own features and statistics, draws the photo back: its error well below a
    random decoder's and below the photo's mean colour everywhere. Photos of the shared pets (what it was trained on;
    the test skips without them): on saturated synthetic colours, far from its training images, it does much worse."""
    from conftest import shared_or_skip
    dec, meta = load_decoder()
    info = json.loads(embedded_data(DECODER_FILE).with_suffix('.json').read_text())
    assert info['steps'] > 0 and info['decoder']['parameters'] == sum(p.numel() for p in dec.parameters())
    photos = [read_image(f, 128) for f in sorted(shared_or_skip('pets/images').glob('*.jpg'))[::200][:3]]
    assert len(photos) == 3
    enc = style_encoder(meta['encoder'])
    err = lambda d: sum(float(((stylize(x, x, 1., enc, d) - x) ** 2).mean()) for x in photos) / len(photos)
    torch.manual_seed(0)
    random_errs = [err(style_decoder().eval()) for _ in range(3)]
    flat = sum(float(((x - x.mean((1, 2), keepdim=True)) ** 2).mean()) for x in photos) / len(photos)   # the mean colour everywhere
    assert err(dec) < 0.5 * min(random_errs) and err(dec) < 0.5 * flat, (err(dec), random_errs, flat)


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('style')
    for i, cls in enumerate(['cat', 'dog']):
        for j in range(2):
            _save(root/'content'/cls/f'{cls}{j}.png', (_photo_like(48, 64, i * 2 + j).permute(1, 2, 0).numpy() * 255))
    rng = np.random.default_rng(0)
    for k, base in enumerate([(220, 30, 30), (210, 40, 60), (230, 60, 20)]):   # three red textures
        _save(root/'style'/f'red{k}.jpg', rng.normal(base, 40, (40, 56, 3)))
    (root/'empty').mkdir()
    return root


def test_augment_style_writes_copies_in_class_folders_a_preview_and_a_summary(folders, tmp_path):
    out = tmp_path/'styled'
    res = augment_style(folders/'content', folders/'style', out, alpha=1., n=2, size=48, seed=3)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file())
    copies = sorted(f'images/{c}/{c}{j}-style{k}.png' for c in ('cat', 'dog') for j in range(2) for k in (1, 2))
    assert names == sorted(copies + ['preview.png', 'style.json'])
    assert res['kind'] == 'style' and res['inputs'] == 4 and res['styles'] == 3 and res['n'] == 2 and res['alpha'] == 1.
    assert sorted(res['written']) == [str(out/n) for n in copies] and res['preview'] == str(out/'preview.png') and res['images'] == str(out/'images')
    assert Image.open(out/'images'/'cat'/'cat0-style1.png').size == (64, 48)
    pw, ph = Image.open(out/'preview.png').size
    assert ph > pw                                                      # four rows (one per content image) of three pictures
    content = read_image(folders/'content'/'cat'/'cat0.png', 48)
    styled = read_image(out/'images'/'cat'/'cat0-style1.png', 48)
    red = lambda t: float(t[0].mean() - t[2].mean())
    assert red(styled) > red(content) + 0.15, (red(content), red(styled))  # the red styles made it redder
    saved = json.loads((out/'style.json').read_text())
    assert [c['file'] for c in saved['copies']] == [n.removeprefix('images/') for n in copies]
    for a, b in zip(saved['copies'][::2], saved['copies'][1::2]):        # the two copies of an image: two different style images
        assert a['content'] == b['content'] and a['style'] != b['style'] and a['style'] in ('red0.jpg', 'red1.jpg', 'red2.jpg')
    assert (saved['alpha'], saved['n'], saved['size'], saved['seed'], saved['inputs']) == (1., 2, 48, 3, 4)
    again = augment_style(folders/'content', folders/'style', tmp_path/'again', alpha=1., n=2, size=48, seed=3)
    assert (tmp_path/'again'/'images'/'dog'/'dog1-style2.png').read_bytes() == (out/'images'/'dog'/'dog1-style2.png').read_bytes()
    assert again['styles_used'] == 3


@pytest.mark.parametrize('content,style,kw,says', [
    ('content', 'empty', {}, 'no style images'),
    ('content', 'nowhere', {}, 'no such folder'),
    ('empty', 'style', {}, 'no content images'),
    ('nowhere', 'style', {}, 'no such folder'),
    ('content', 'style', dict(alpha=1.2), '--alpha 1.2'),
    ('content', 'style', dict(alpha=-0.5), '--alpha -0.5'),
    ('content', 'style', dict(n=0), '--n 0'),
    ('content', 'style', dict(size=16), '--size 16'),
    ('content', 'style', dict(size=50_000), '--size 50000'),
])
def test_bad_input_is_refused_and_nothing_is_written(folders, tmp_path, content, style, kw, says):
    out = tmp_path/'out'
    with pytest.raises(FastxferError, match=says.replace('.', r'\.')):
        augment_style(folders/content, folders/style, out, **{'size': 48, **kw})
    assert not out.exists()


def test_an_unreadable_image_is_refused_before_anything_is_written(folders, tmp_path):
    bad = tmp_path/'bad'; bad.mkdir(); (bad/'a.jpg').write_bytes(b'not a picture')
    with pytest.raises(FastxferError, match='not an image'):
        augment_style(folders/'content', bad, tmp_path/'out', size=48)
    assert not (tmp_path/'out').exists()


def test_out_inside_the_content_folder_is_refused(folders):
    with pytest.raises(FastxferError, match='inside the content folder'):
        augment_style(folders/'content', folders/'style', folders/'content'/'styled', size=48)
    assert not (folders/'content'/'styled').exists()


def test_names_keep_the_labels_read_from_them(tmp_path):
    "Pets-style names in one folder: the copies' names give the same breed and species as the originals'."
    from fastxfer.vision.data import collect_data
    for i, name in enumerate(['Abyssinian_1', 'Abyssinian_2', 'beagle_1', 'beagle_2']):
        _save(tmp_path/'pets'/f'{name}.jpg', _photo_like(32, 40, i).permute(1, 2, 0).numpy() * 255)
    _save(tmp_path/'style'/'s.png', np.random.default_rng(0).normal((40, 200, 40), 30, (32, 32, 3)))
    res = augment_style(tmp_path/'pets', tmp_path/'style', tmp_path/'out', size=32)
    assert sorted(Path(f).name for f in res['written']) == ['Abyssinian_1-style1.png', 'Abyssinian_2-style1.png', 'beagle_1-style1.png', 'beagle_2-style1.png']
    breeds = collect_data(res['images'], 'breed', 0.5, 0)
    assert breeds.classes == ['Abyssinian', 'beagle'] and sorted(breeds.labels) == ['Abyssinian', 'Abyssinian', 'beagle', 'beagle']
    assert sorted(collect_data(res['images'], 'cat-dog', 0.5, 0).labels) == ['cat', 'cat', 'dog', 'dog']


def test_style_is_a_verb_of_the_augment_command():
    "`fastxfer augment style` reaches `fastxfer.augment.commands.style` (fastxfer.cli.TOOLS, nbs/15_cli.ipynb)."
    from fastxfer.cli import TOOLS
    assert TOOLS['augment'][0] == 'fastxfer.augment.commands' and TOOLS['augment'][2].get('style') == 'style'


def test_augment_style_command_writes_a_folder_vision_train_reads(folders, tmp_path):
    "The console script in a new process (as a user runs it): --json, the files, and vision train's reader on OUT/images."
    from fastxfer.augment.commands import _wrote
    from fastxfer.vision.data import collect_data
    out = tmp_path/'styled'
    r = run_cli('augment', 'style', folders/'content', folders/'style', '--out', out, '--alpha', 0.7, '--n', 2, '--size', 48,
                '--seed', 1, '--json', fresh=True, check=0)
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, r.stdout
    res = json.loads(lines[0])
    assert res['kind'] == 'style' and (res['inputs'], res['n'], res['alpha'], res['size'], res['seed']) == (4, 2, 0.7, 48, 1)
    assert sorted(p.name for p in out.iterdir()) == ['images', 'preview.png', 'style.json']   # the preview and record beside the images
    assert sorted(p.relative_to(out/'images').as_posix() for p in (out/'images').rglob('*') if p.is_file()) == \
        sorted(f'{c}/{c}{j}-style{k}.png' for c in ('cat', 'dog') for j in range(2) for k in (1, 2))
    assert sorted(res['written']) == sorted(str(p) for p in (out/'images').rglob('*.png'))
    pw, ph = Image.open(res['preview']).size
    assert pw > 300 and ph > pw and res['preview'] == str(out/'preview.png')
    saved = json.loads((out/'style.json').read_text())
    assert saved['command'] == 'fastxfer augment style' and len(saved['copies']) == 8 and saved['alpha'] == 0.7
    assert 'styled images (4 x 2' in _wrote(res) and str(out/'images') in _wrote(res)
    vd = collect_data(out/'images', 'folder', 0.2, 0)   # vision train's reader: the class folders and nothing else
    assert vd.classes == ['cat', 'dog'] and len(vd.items) == 8 and vd.skipped == [] and vd.n_valid == 2


@pytest.mark.parametrize('args,says', [
    (['{d}/content', '{d}/empty'], 'no style images'),
    (['{d}/content', '{d}/nowhere'], 'no such folder'),
    (['{d}/nowhere', '{d}/style'], 'no such folder'),
    (['{d}/content', '{b}'], 'not an image'),
    (['{d}/content', '{d}/style', '--alpha', '1.5'], '--alpha 1.5'),
    (['{d}/content', '{d}/style', '--alpha', '-0.2'], '--alpha -0.2'),
    (['{d}/content', '{d}/style', '--n', '0'], '--n 0'),
    (['{d}/content', '{d}/style', '--size', '8'], '--size 8'),
    (['{d}/content', '{d}/style', '--size', '100000'], '--size 100000'),
    (['{d}/content', '{d}/style', '--out', '{d}/content/styled'], 'inside the content folder'),
])
def test_bad_style_input_is_exit_2_and_writes_nothing(folders, tmp_path, args, says):
    bad = tmp_path/'bad'; bad.mkdir(); (bad/'a.jpg').write_bytes(b'not a picture')
    before = sorted(folders.rglob('*'))
    args = [a.format(d=folders, b=bad) for a in args]
    r = run_cli('augment', 'style', *args, *([] if '--out' in args else ['--out', tmp_path/'out']))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('error:') and says in r.stderr, r.stderr[-500:]
    assert not (tmp_path/'out').exists() and sorted(folders.rglob('*')) == before
