"""`fastxfer augment gan` (issue #31): a small class-conditional GAN, on tiny coloured squares made here. A training step
lowers the discriminator's loss, the generator learns each class's colour, the Fréchet distance agrees with the textbook
computation, the command writes class folders that vision train's reader takes, and bad input is exit 2 with nothing written."""
import json

import numpy as np, pytest, torch
from PIL import Image

from conftest import coloured_squares, run_cli, run_json

pytestmark = pytest.mark.usefixtures('one_torch_thread')
COLOURS = {'red': (220, 30, 30), 'blue': (30, 30, 220)}


@pytest.fixture(scope='module')
def squares(tmp_path_factory):
    "8 pictures a class: grey noise with a red or a blue 20-pixel square."
    return coloured_squares(tmp_path_factory.mktemp('gan')/'squares', COLOURS, n=8, size=32, side=20)


def tensors(root):
    from fastxfer.augment.gan import load_images
    items = sorted(root.rglob('*.png'))
    return load_images(items, 32), torch.tensor([['blue', 'red'].index(p.parent.name) for p in items])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_a_training_step_lowers_the_discriminators_loss_on_a_fixed_batch(squares, seed):
    from fastxfer.augment.gan import Z_DIM, d_loss, gan_step, make_gan, to_unit
    x, y = tensors(squares)
    torch.manual_seed(seed)
    G, D, opt_g, opt_d = make_gan(2, size=32, width=8)
    real, fake = to_unit(x), G(torch.randn(len(x), Z_DIM), y).detach()
    def plain():     # no augmentation, spectral norms as they stand
        D.eval(); l = d_loss(D, real, fake, y, augment=False).item(); D.train(); return l
    def augmented():  # DiffAugment drawn the same each time
        torch.manual_seed(99); return d_loss(D, real, fake, y).item()
    before = plain(), augmented()
    torch.manual_seed(5); gan_step(G, D, opt_g, opt_d, real, y)   # the step makes its own generated batch
    after = plain(), augmented()
    assert after[0] < before[0] and after[1] < before[1], (before, after)


def test_the_generator_makes_images_of_each_class(squares):
    from fastxfer.augment.gan import Generator, Z_DIM, generate, train_gan
    x, y = tensors(squares)
    torch.manual_seed(0)
    G, z = Generator(2, size=32, width=8).eval(), torch.randn(4, Z_DIM)
    out = G(z, torch.zeros(4, dtype=torch.long))
    assert out.shape == (4, 3, 32, 32) and out.min() >= -1 and out.max() <= 1
    assert not torch.allclose(out, G(z, torch.ones(4, dtype=torch.long)))   # the same noise, another class: another image
    G, facts = train_gan(x, y, 2, minutes=1, seed=0, bs=16, width=16, max_steps=150)
    made = generate(G, [0, 1], 16)
    assert facts['steps'] == 150 and made.shape == (32, 3, 32, 32) and made.dtype == torch.uint8
    blue_minus_red = made[:, 2].float().mean((1, 2)) - made[:, 0].float().mean((1, 2))
    assert blue_minus_red[:16].mean() > blue_minus_red[16:].mean() + 10, blue_minus_red   # class 0 (blue) bluer than class 1 (red)


def textbook_frechet(a, b):
    from scipy import linalg
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * linalg.sqrtm(sa @ sb).real)


def test_frechet_distance_is_zero_for_one_set_and_agrees_with_the_textbook():
    from fastxfer.augment.gan import frechet_distance
    r = np.random.default_rng(0)
    a = r.normal(size=(500, 5)) @ r.normal(size=(5, 5))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert frechet_distance(a, a + [2, 0, 1, 0, 0]) == pytest.approx(5, rel=1e-6)   # a shift: its squared length
    b = r.normal(size=(300, 5)) * 1.5 + .5
    assert frechet_distance(a, b) == pytest.approx(textbook_frechet(a, b), rel=1e-6) and frechet_distance(a, b) > 1
    c, d = r.normal(size=(12, 30)), r.normal(size=(9, 30)) * 2   # fewer rows than features, as with a few hundred images
    assert frechet_distance(c, d) == pytest.approx(textbook_frechet(c, d), rel=1e-4)


def test_augment_gan_writes_class_folders_vision_reads(squares, tmp_path):
    from fastxfer.augment.commands import _wrote
    from fastxfer.vision.data import collect_data
    out = tmp_path/'gan'
    r = run_json('augment', 'gan', squares, '--out', out, '--size', 32, '--per-class', 3, '--minutes', 0.02)
    assert sorted(p.relative_to(out).as_posix() for p in (out/'images').rglob('gan_*.png')) == [f'images/{c}/gan_000{i}.png' for c in ('blue', 'red') for i in range(3)]
    assert Image.open(out/'images'/'red'/'gan_0002.png').size == (32, 32) and Image.open(out/'preview.png').size[0] > 500
    saved = json.loads((out/'gan.json').read_text())
    fd = saved['frechet']
    assert np.isfinite(fd['distance']) and fd['distance'] > 0 and fd['n_generated'] == 6 and 'not Inception' in fd['features']
    assert saved['steps'] >= 1 and saved['size'] == 32 and saved['train_images'] == {'blue': 6, 'red': 6} == r['train_images']   # 2 of 8 left for validation
    assert 'Fréchet distance' in _wrote(r)
    assert sorted(p.name for p in out.iterdir()) == ['gan.json', 'images', 'preview.png'] and r['images'] == str(out/'images')
    vd = collect_data(r['images'])   # vision train's reader: the class folders and nothing else
    assert vd.classes == ['blue', 'red'] and len(vd.items) == 6 and vd.skipped == []


def test_vision_train_adds_the_made_images_to_training_only(squares, tmp_path):
    "`vision train --extra DIR`: the GAN's images join the training split (never validation), the card says so; a class DATA lacks is exit 2."
    out = tmp_path/'gan'
    run_json('augment', 'gan', squares, '--out', out, '--size', 32, '--per-class', 3, '--minutes', 0.02)
    r = run_json('vision', 'train', squares, '--extra', out/'images', '--mode', 'features', '--calib-pct', 0, '--out', tmp_path/'m')
    assert (r['n_train'], r['n_valid']) == (12 + 6, 4) and r['extra']['per_class'] == {'blue': 3, 'red': 3}, r
    assert json.loads((tmp_path/'m'/'card.json').read_text())['extra']['images'] == 6
    coloured_squares(tmp_path/'other', {'green': (30, 220, 30)}, n=2, size=16, side=8)
    bad = run_cli('vision', 'train', squares, '--extra', tmp_path/'other', '--mode', 'features', '--out', tmp_path/'m2')
    assert bad.returncode == 2 and 'classes DATA does not have: green' in bad.stderr and not (tmp_path/'m2').exists(), bad.stderr[-400:]


@pytest.mark.parametrize('args,says', [
    (['{d}/one_blue'], "'blue' (1)"),
    (['{d}/squares', '--size', '48'], '--size 48'),
    (['{d}/squares', '--per-class', '0'], '--per-class 0'),
    (['{d}/squares', '--minutes', '0'], '--minutes 0'),
    (['{d}/squares', '--minutes', '-1'], '--minutes -1'),
    (['{d}/nothing'], 'no such folder'),
    (['{d}/empty'], 'no readable images'),
    (['{d}/squares', '--out', '{d}/squares/gan'], 'inside DATA')])
def test_bad_gan_input_is_exit_2_and_writes_nothing(args, says, tmp_path):
    coloured_squares(tmp_path/'squares', COLOURS, n=3, size=16, side=8)
    coloured_squares(tmp_path/'one_blue', {'red': COLOURS['red']}, n=4, size=16, side=8)
    coloured_squares(tmp_path/'one_blue', {'blue': COLOURS['blue']}, n=1, size=16, side=8)
    (tmp_path/'empty').mkdir()
    args = [a.format(d=tmp_path) for a in args]
    r = run_cli('augment', 'gan', *args, *([] if '--out' in args else ['--out', tmp_path/'out']))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('error:') and says in r.stderr, r.stderr[-500:]
    assert not (tmp_path/'out').exists() and not (tmp_path/'squares'/'gan').exists()


def test_gan_is_a_verb_of_the_augment_command():
    "`fastxfer augment gan` reaches `fastxfer.augment.commands.gan` (fastxfer.cli.TOOLS, nbs/15_cli.ipynb)."
    from fastxfer.cli import TOOLS
    assert TOOLS['augment'][0] == 'fastxfer.augment.commands' and TOOLS['augment'][2].get('gan') == 'gan'
