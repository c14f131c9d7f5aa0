"""Adversarial training, MixUp/CutMix and `vision robustness`: the attacks against captum's (a maintained library),
what each technique does to a batch, and the commands end to end on tiny images (train, predict, robustness), with
what bad input gets."""
import json

import numpy as np, pytest, torch
import torch.nn.functional as F
from PIL import Image

from conftest import coloured_squares, run_cli
from fastxfer.augment.adversarial import IMAGENET_STATS, AdversarialTraining, bounds, fgsm, pgd, training_callbacks
from fastxfer.vision import _human_robustness
from fastxfer.model_folder import load_model
from fastxfer.vision.predict import _attacked_correct, flat_gradient, vision_robustness

pytestmark = pytest.mark.usefixtures('one_torch_thread')
COLOURS = {'red': (220, 40, 40), 'blue': (40, 40, 220)}


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, 3)).eval()


class Normalized(torch.nn.Module):
    "`net` after ImageNet normalisation: a model of images in [0, 1], as captum's attacks expect."
    def __init__(self, net):
        super().__init__(); self.net = net
        self.m, self.s = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET_STATS)
    def forward(self, x): return self.net((x - self.m) / self.s)


def norm(x01):
    m, s = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET_STATS)
    return (x01 - m) / s


def same(a, b) -> bool:
    "Equal but for at most 1% of the values: where a gradient is about 0, float rounding may flip its sign."
    off = (a - b).abs() > 1e-4
    print(f'{off.float().mean():.2%} of the values differ')
    return bool(off.float().mean() < 0.01)


def test_fgsm_and_pgd_match_captum_in_pixel_space():
    from captum.robust import FGSM, PGD
    net, g = tiny_net(), torch.Generator().manual_seed(1)
    x01, y = torch.rand(8, 3, 24, 24, generator=g), torch.randint(0, 3, (8,), generator=g)
    wrapped = Normalized(net)
    ce = lambda out, t: F.cross_entropy(out, t, reduction="none")   # captum's default loss is -log(output): for probabilities, not logits
    theirs = FGSM(wrapped, loss_func=ce, lower_bound=0., upper_bound=1.).perturb(x01, 2 / 255, target=y)
    assert same(norm(theirs), fgsm(net, norm(x01), y, 2))
    theirs = PGD(wrapped, loss_func=ce, lower_bound=0., upper_bound=1.).perturb(x01, radius=4 / 255, step_size=1 / 255, step_num=5, target=y)
    ours = pgd(net, norm(x01), y, 4, steps=5, step=1, random_start=False)
    assert same(norm(theirs), ours)


def test_adversarial_examples_raise_the_loss_within_the_budget():
    net, g = tiny_net(), torch.Generator().manual_seed(2)
    lo, hi, unit = bounds()
    x = torch.rand(32, 3, 24, 24, generator=g) * (hi - lo) + lo; y = torch.randint(0, 3, (32,), generator=g)
    loss = lambda m, z: F.cross_entropy(m(z), y).item()
    for xa in (fgsm(net, x, y, 2), pgd(net, x, y, 2, steps=10, seed=0)):
        assert loss(net, xa) > loss(net, x) + 1e-3
        assert ((xa - x).abs() / unit).max() <= 2 + 1e-4 and (xa >= lo - 1e-6).all() and (xa <= hi + 1e-6).all()
    noise = torch.maximum(torch.minimum(x + 2 * unit * torch.randn(x.shape, generator=g).sign(), hi), lo)
    assert loss(net, fgsm(net, x, y, 2)) - loss(net, x) > 3 * abs(loss(net, noise) - loss(net, x))   # far more than noise of that size


def _learner():
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from torch.utils.data import TensorDataset
    g = torch.Generator().manual_seed(0)
    xs = torch.rand(32, 3, 16, 16, generator=g); ys = torch.randint(0, 3, (32,), generator=g)
    dls = DataLoaders.from_dsets(TensorDataset(xs[:24], ys[:24]), TensorDataset(xs[24:], ys[24:]), bs=8, device='cpu')
    from fastai.losses import CrossEntropyLossFlat
    return Learner(dls, tiny_net(), loss_func=CrossEntropyLossFlat())   # vision training's loss


def test_mixup_makes_convex_mixes_of_pairs_and_mixes_their_labels_in_the_loss():
    learn = _learner()
    cb, = training_callbacks('mixup'); learn.add_cb(cb)
    x, y = learn.dls.one_batch()
    learn.training, learn.xb, learn.yb = True, (x,), (y,)
    cb.before_train(); cb.before_batch()
    mixed, lam = learn.xb[0], cb.lam
    for i in range(len(x)):   # each mixed image is lam * itself + (1 - lam) * one image of the batch, that image's label in yb1
        j = int(((mixed[i] - lam[i] * x[i]).unsqueeze(0) - (1 - lam[i]) * x).flatten(1).abs().max(1).values.argmin())
        assert torch.allclose(mixed[i], lam[i] * x[i] + (1 - lam[i]) * x[j], atol=1e-5) and cb.yb1[0][i] == y[j]
    assert (lam >= 0.5).all() and (lam <= 1).all()
    pred = learn.model(mixed)
    want = (lam * F.cross_entropy(pred, y, reduction='none') + (1 - lam) * F.cross_entropy(pred, cb.yb1[0], reduction='none')).mean()
    assert torch.allclose(learn.loss_func(pred, y), want, atol=1e-5)
    cb.after_train()


def test_adversarial_training_attacks_only_its_share_of_a_training_batch():
    learn = _learner()
    cb = AdversarialTraining('fgsm', eps=3, ratio=0.5); learn.add_cb(cb)
    x, y = learn.dls.one_batch()
    lo, hi, unit = bounds()
    learn.training, learn.xb, learn.yb = True, (x,), (y,)
    cb.before_batch()
    moved = ((learn.xb[0] - x).abs() / unit).flatten(1).max(1).values
    assert (moved[:4] > 0.5).all() and (moved[:4] <= 3 + 1e-4).all() and (moved[4:] == 0).all()
    assert F.cross_entropy(learn.model(learn.xb[0][:4]), y[:4]) > F.cross_entropy(learn.model(x[:4]), y[:4])
    learn.training, learn.xb = False, (x,); cb.before_batch()
    assert torch.equal(learn.xb[0], x)   # validation batches stay as they are


def test_adversarial_training_can_keep_the_clean_images_beside_their_adversarial_versions():
    learn = _learner()
    cb = AdversarialTraining('pgd', eps=2, ratio=0.5, steps=2, keep_clean=True); learn.add_cb(cb)
    x, y = learn.dls.one_batch()
    unit = bounds()[2]
    learn.training, learn.xb, learn.yb = True, (x,), (y,)
    cb.before_batch()
    xb, yb = learn.xb[0], learn.yb[0]
    assert len(xb) == len(yb) == len(x) + 4 and torch.equal(xb[4:], x) and torch.equal(yb[:4], y[:4]) and torch.equal(yb[4:], y)
    moved = ((xb[:4] - x[:4]).abs() / unit).flatten(1).max(1).values
    assert (moved > 0.5).all() and (moved <= 2 + 1e-4).all()


@pytest.fixture(scope='module')
def squares(tmp_path_factory):
    d = tmp_path_factory.mktemp('adv')
    coloured_squares(d/'sq', COLOURS, n=16, size=64, side=24)
    return d


def test_flat_gradient_finds_the_images_no_attack_can_move():
    net, t = tiny_net(), torch.tensor([0, 1, 2, 0])
    x = norm(torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert not flat_gradient(net, x, t).any()
    with torch.no_grad(): net[0].bias.fill_(-1e3)   # every ReLU dead: the answer is the last layer's bias whatever the image
    assert flat_gradient(net, x, t).all()
    with torch.no_grad(): assert torch.equal(net(pgd(net, x, t, 16)), net(x))   # so PGD moves nothing: robustness hidden, not measured
    r = dict(attack='pgd', steps=10, restarts=1, n=4, eps=[2.], accuracy=[.5], clean_accuracy=.5, adversarial_training=None, files=[], flat_gradient=4)
    assert 'warning: 4 of 4 images have an input gradient of zero' in _human_robustness(r)
    assert 'warning' not in _human_robustness(dict(r, flat_gradient=0))


def test_train_with_adversarial_examples_then_predict_and_measure_robustness(squares, tmp_path):
    r = run_cli('vision', 'train', squares/'sq', '--mode', 'fine_tune', '--adversarial', 'pgd', '--eps', 2, '--adv-steps', 2,
                '--size', 64, '--epochs', 1, '--freeze-epochs', 0, '--out', tmp_path/'m', '--json', check=0)
    res = json.loads(r.stdout)
    assert res['adversarial'] == {'attack': 'pgd', 'eps': 2.0, 'ratio': 1.0, 'steps': 2, 'clean_kept': True, 'batch_norm': 'frozen',
                               'weight_perturbation': 1e-3}   # fine-tuning keeps batch norm's statistics; PGD adds the weight perturbation
    assert res['lr'] == 1.2e-3 and res['lr_mult'] == 1   # adversarial fine-tuning: every layer at the same rate
    assert json.loads((tmp_path/'m'/'card.json').read_text())['adversarial']['attack'] == 'pgd'
    p = json.loads(run_cli('vision', 'predict', tmp_path/'m', squares/'sq'/'red'/'red0.png', '--json', check=0).stdout)
    assert p['predictions'][0]['label'] in COLOURS
    rb = json.loads(run_cli('vision', 'robustness', tmp_path/'m', squares/'sq', '--attack', 'fgsm', '--eps', '2,8',
                            '--out', tmp_path/'rob', '--json', check=0).stdout)
    assert rb['n'] == 32 and len(rb['accuracy']) == 2 and rb['white_box'] and rb['adversarial_training']['attack'] == 'pgd'
    assert rb['accuracy'][1] <= rb['clean_accuracy'] and Image.open(tmp_path/'rob'/'robustness.png').size[0] > 300
    one, three = (vision_robustness(tmp_path/'m', squares/'sq', eps=[4], steps=2, restarts=k, out=tmp_path/f'rob{k}') for k in (1, 3))
    assert three['restarts'] == 3 and three['flat_gradient'] == 0 and 'PGD-2 x3' in _human_robustness(three)
    assert three['accuracy'][0] <= one['accuracy'][0]   # an image counts only if it survives every start, the first start included
    p = load_model(tmp_path/'m'); net, items = p.model, sorted((squares/'sq').rglob('*.png'))
    x, t = p.preprocess(items), torch.tensor([p.vocab.index(i.parent.name) for i in items])
    survived = [net(pgd(net, x, t, 4, IMAGENET_STATS, 2, seed=100_003 * r)).argmax(1) == t for r in range(3)]   # the three starts, one by one
    assert _attacked_correct(p, items, t.tolist(), 'pgd', [4], 2, IMAGENET_STATS, len(items), restarts=3)[1] == [int((survived[0] & survived[1] & survived[2]).sum())]


def test_train_with_cutmix_records_it(squares, tmp_path):
    r = json.loads(run_cli('vision', 'train', squares/'sq', '--mode', 'scratch', '--aug-mix', 'cutmix', '--size', 32, '--epochs', 1,
                           '--out', tmp_path/'m', '--json', check=0).stdout)
    assert r['aug_mix'] == 'cutmix' and json.loads((tmp_path/'m'/'card.json').read_text())['aug_mix'] == 'cutmix'


def test_train_with_mixstyle_records_it_and_predicts(squares, tmp_path):
    r = json.loads(run_cli('vision', 'train', squares/'sq', '--mode', 'fine_tune', '--aug-style', 'mixstyle', '--size', 64, '--epochs', 1,
                           '--freeze-epochs', 0, '--out', tmp_path/'m', '--json', check=0).stdout)
    assert r['aug_style'] == 'mixstyle' and json.loads((tmp_path/'m'/'card.json').read_text())['aug_style'] == 'mixstyle'
    p = json.loads(run_cli('vision', 'predict', tmp_path/'m', squares/'sq'/'blue'/'blue1.png', '--json', check=0).stdout)
    assert p['predictions'][0]['label'] in COLOURS   # the hooks are gone: the saved network is the plain one


@pytest.mark.parametrize('args,says', [
    (['--mode', 'features', '--adversarial', 'fgsm'], 'frozen feature cache'),
    (['--mode', 'features', '--aug-style', 'mixstyle'], 'frozen feature cache'),
    (['--mode', 'fine_tune', '--adversarial', 'fgsm', '--eps', '-1'], '--eps -1'),
    (['--mode', 'fine_tune', '--adversarial', 'pgd', '--eps', '65'], 'at most 64'),
    (['--mode', 'fine_tune', '--adversarial', 'fgsm', '--adv-ratio', '1.5'], '--adv-ratio 1.5'),
    (['--mode', 'fine_tune', '--adversarial', 'pgd', '--adv-awp', '0.05'], '--adv-awp 0.05'),
    (['--mode', 'fine_tune', '--adversarial', 'fgsm', '--adv-awp', '1e-3'], 'PGD fine-tuning only'),
    (['--mode', 'scratch', '--adversarial', 'pgd', '--adv-awp', '0'], 'PGD fine-tuning only'),
    (['--aug-mix', 'mixup'], 'needs --mode fine_tune or scratch'),
    (['--mode', 'fine_tune', '--aug-mix', 'mixup', '--adversarial', 'fgsm'], 'use one')])
def test_bad_training_flags_are_exit_2_and_write_nothing(args, says, squares, tmp_path):
    r = run_cli('vision', 'train', squares/'sq', *args, '--out', tmp_path/'m')
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('error:') and says in r.stderr, r.stderr[-400:]
    assert not (tmp_path/'m').exists()


@pytest.mark.parametrize('args,says', [(['--eps', '0'], 'above 0'), (['--eps', 'x'], 'give numbers'), (['--steps', '0'], '--steps 0'),
                                       (['--restarts', '0'], '--restarts 0'), (['--attack', 'fgsm', '--restarts', '3'], 'is for --attack pgd')])
def test_bad_robustness_flags_are_exit_2(args, says, squares, tmp_path):
    r = run_cli('vision', 'robustness', tmp_path/'nothing', squares/'sq', *args, '--out', tmp_path/'rob')
    assert r.returncode == 2 and says in r.stderr, r.stderr[-400:]
    assert not (tmp_path/'rob').exists()
