"""fastxfer.augment: every technique checked for what it does (images, tables, texts, sounds), the presets in a real
fastai training loop, validation untouched, same seed same batch, and `fastxfer augment preview` end to end."""
import math, random
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, run_json, shared_or_skip

from fastxfer.core import FastxferError
from fastxfer.augment.image import (PRESETS, FastAug, GaussianNoise, SaltPepper, aug_preset, apply_tfms, preview_images,
                                    shift_mat, shear_mat, zoom_xy_mat)
from fasttransform import Pipeline
from fastai.torch_core import TensorImage


# ---------------------------------------------------------------- images: helpers
def ident(n):
    "FastAug parameters that change nothing."
    z, o = torch.zeros(n), torch.ones(n)
    return dict(flip=torch.zeros(n, dtype=torch.bool), warp_x=z, warp_y=z, rotate=z, zoom=o, zoom_col=o*.5, zoom_row=o*.5,
                shift_x=z, shift_y=z, shear=z, brightness=o*.5, contrast=o)

def dot_image(h=33, w=33, r=10, c=20):
    "One bright pixel at (r, c) on black, as a (1,1,h,w) float batch."
    x = torch.zeros(1, 1, h, w); x[0, 0, r, c] = 1.; return x

def centroid(x):
    "(row, col) centre of mass of a (1,1,h,w) image."
    h, w = x.shape[-2:]
    m = x[0, 0].clamp(min=0); s = m.sum()
    rr, cc = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing='ij')
    return float((m*rr).sum()/s), float((m*cc).sum()/s)

def smooth_batch(n=4, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, h//4, w//4, generator=g), size=(h, w), mode='bilinear', align_corners=False)


# ---------------------------------------------------------------- images: geometric and colour, one by one
def test_identity_parameters_change_nothing():
    x = smooth_batch()
    assert torch.allclose(FastAug().apply(x, ident(4)), x, atol=1e-5)

def test_horizontal_flip_mirrors_exactly():
    x = smooth_batch(); p = ident(4); p['flip'] = torch.tensor([True, False, True, False])
    y = FastAug().apply(x, p)
    assert torch.allclose(y[0], x[0].flip(-1), atol=1e-5) and torch.allclose(y[1], x[1], atol=1e-5)

def test_vertical_flip_via_the_dihedral_option():
    from fastai.vision.augment import Dihedral
    x = TensorImage(smooth_batch(1, 32, 32))
    t = Dihedral(p=1., draw=[2])        # dihedral index 2 = vertical flip
    y = Pipeline([t], split_idx=0)(x)
    assert torch.allclose(y, x.flip(-2), atol=1e-5)
    p = ident(1); p['dihedral'] = torch.tensor([2])           # the same in FastAug(flip_vert=True)
    assert torch.allclose(FastAug(flip_vert=True).apply(x.as_subclass(torch.Tensor), p), x.flip(-2), atol=1e-5)
    torch.manual_seed(0); d = FastAug(flip_vert=True).draw(8000)['dihedral']
    assert abs((d == 0).float().mean() - (0.5 + 0.5/8)) < 0.02 and set(d.tolist()) == set(range(8))

def test_rotation_by_90_degrees_turns_the_image():
    x = smooth_batch(1, 33, 33); p = ident(1); p['rotate'] = torch.tensor([90.])
    y = FastAug(pad_mode='zeros').apply(x, p)
    assert min((y - torch.rot90(x, k, (-2, -1))).abs().max().item() for k in (1, 3)) < 1e-4

def test_zoom_2x_is_a_centre_crop_scaled_up():
    x = dot_image(33, 33, 12, 20); p = ident(1); p['zoom'] = torch.tensor([2.])
    r, c = centroid(FastAug().apply(x, p))
    assert abs(r - (16 + 2*(12-16))) < 0.5 and abs(c - (16 + 2*(20-16))) < 0.5      # distances from the centre double

def test_translation_moves_content_by_the_fraction():
    x = dot_image(33, 33, 16, 16); fa = FastAug(max_shift=0.25); p = ident(1)
    p['shift_x'] = torch.tensor([0.25]); p['shift_y'] = torch.tensor([-0.125])
    r, c = centroid(fa.apply(x, p))
    assert abs(abs(c - 16) - 0.25*32) < 0.5 and abs(abs(r - 16) - 0.125*32) < 0.5
    assert (c - 16)*(r - 16) < 0      # opposite directions for opposite signs

def test_shear_shifts_rows_in_proportion_to_their_height():
    fa = FastAug(max_shear=0.5); p = ident(1); p['shear'] = torch.tensor([0.5])
    top = centroid(fa.apply(dot_image(33, 33, 4, 16), p)); mid = centroid(fa.apply(dot_image(33, 33, 16, 16), p))
    bot = centroid(fa.apply(dot_image(33, 33, 28, 16), p))
    assert abs(mid[1] - 16) < 0.5 and abs(top[1] - 16) > 4 and abs((top[1] - 16) + (bot[1] - 16)) < 0.5
    assert abs(top[0] - 4) < 0.5 and abs(bot[0] - 28) < 0.5     # horizontal shear: rows stay

def test_perspective_warp_keeps_lines_straight_but_not_parallel():
    from fastxfer.augment.image import homography_grid
    fa = FastAug(); p = ident(1); p['warp_x'] = torch.tensor([0.2]); p['warp_y'] = torch.tensor([0.1])
    g = homography_grid(fa.matrices(p, 33, 33), 33, 33)[0]            # (h, w, 2) sampling points
    row = g[5]                                                         # one output row
    d1, d2 = row[1:] - row[:1], row[-1] - row[0]
    assert (d1[:, 0]*d2[1] - d1[:, 1]*d2[0]).abs().max() < 1e-4       # collinear: a straight line stays straight
    slope = lambda r: (r[-1, 1] - r[0, 1])/(r[-1, 0] - r[0, 0])
    assert abs(slope(g[2]) - slope(g[30])) > 0.01                      # two parallel rows are no longer parallel
    assert (g[1:, :, 0] - g[:-1, :, 0]).diff(dim=0).abs().max() > 1e-5  # not affine
    assert not torch.allclose(fa.apply(smooth_batch(1, 33, 33), p), smooth_batch(1, 33, 33), atol=1e-2)

def test_brightness_and_contrast_in_logit_space():
    x = smooth_batch(); p = ident(4)
    p['brightness'] = torch.tensor([0.6, 0.4, 0.5, 0.5]); p['contrast'] = torch.tensor([1., 1., 1.25, 0.8])
    y = FastAug().apply(x, p)
    assert y[0].mean() > x[0].mean() + 0.02 and y[1].mean() < x[1].mean() - 0.02
    lx = torch.logit(x.clamp(1e-7, 1-1e-7))
    assert torch.allclose(y[2], torch.sigmoid(lx[2]*1.25), atol=1e-5) and y[3].std() < x[3].std()

def test_saturation_and_hue_in_the_heavy_preset_change_colour_not_grey():
    from fastai.vision.augment import Saturation, Hue
    x = TensorImage(smooth_batch(2, 32, 32)); grey = TensorImage(x.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous())
    names = [type(t).__name__ for t in aug_preset('heavy')]
    assert 'Saturation' in names and 'Hue' in names
    sat = Pipeline([Saturation(p=1., draw=[1.5, 1.5])], split_idx=0)
    y = sat(x.clone())
    assert (y.std(1).mean() > x.std(1).mean())                      # more colourful
    assert torch.allclose(sat(grey.clone()), grey, atol=1e-4)        # grey stays grey
    h = Pipeline([Hue(p=1., draw=[0.3, 0.3])], split_idx=0)(x.clone())
    assert not torch.allclose(h, x, atol=1e-2) and torch.allclose(h.max(1)[0], x.max(1)[0], atol=1e-3)   # value kept

def test_random_resized_crop_in_heavy_preset_outputs_size():
    tf = aug_preset('heavy', size=24)
    assert type(tf[0]).__name__ == 'RandomResizedCropGPU'
    y = apply_tfms(TensorImage(torch.randint(0, 256, (3, 3, 40, 48), dtype=torch.uint8)), tf)
    assert y.shape == (3, 3, 24, 24)


# ---------------------------------------------------------------- images: FastAug == fastai's aug_transforms
def test_fastaug_matches_fastai_given_the_same_draws():
    from fastai.vision.augment import Flip, Warp, Rotate, Zoom, Brightness, Contrast, setup_aug_tfms
    x = smooth_batch(8, 40, 56, seed=1); fa = FastAug(); torch.manual_seed(1); p = fa.draw(8)
    L_ = lambda t: t.float().tolist()
    theirs = setup_aug_tfms([Flip(p=1., draw=L_(p['flip'])), Warp(0.2, p=1., draw_x=L_(p['warp_x']), draw_y=L_(p['warp_y'])),
        Rotate(10, p=1., draw=L_(p['rotate'])), Zoom(1., 1.1, p=1., draw=L_(p['zoom']), draw_x=L_(p['zoom_col']), draw_y=L_(p['zoom_row'])),
        Brightness(0.2, p=1., draw=L_(p['brightness'])), Contrast(0.2, p=1., draw=L_(p['contrast']))])
    ref = Pipeline(theirs, split_idx=0)(TensorImage(x.clone()))
    assert (fa.apply(x, p) - ref).abs().max() < 1e-4

def test_fastaug_draws_fastai_ranges_and_probabilities():
    torch.manual_seed(0); p = FastAug().draw(20000)
    assert p['rotate'].abs().max() <= 10 and abs((p['rotate'] != 0).float().mean() - 0.75) < 0.02
    assert p['zoom'].min() >= 1 and p['zoom'].max() <= 1.1 and abs((p['zoom'] != 1).float().mean() - 0.75) < 0.02
    assert abs(p['flip'].float().mean() - 0.5) < 0.02
    assert p['warp_y'].abs().max() <= 0.2 and abs((p['warp_y'] != 0).float().mean() - 0.75) < 0.02
    assert 0.4 <= p['brightness'].min() and p['brightness'].max() <= 0.6 and abs((p['brightness'] != 0.5).float().mean() - 0.75) < 0.02
    assert 0.8 - 1e-6 <= p['contrast'].min() and p['contrast'].max() <= 1.25 + 1e-6

def test_fastaug_output_size_and_validation_resize():
    y = FastAug(size=(20, 30)).apply(smooth_batch(2, 40, 48), FastAug().draw(2))
    assert y.shape == (2, 3, 20, 30)
    x = TensorImage(smooth_batch(2, 40, 48))
    v = Pipeline([FastAug(size=(20, 30))], split_idx=1)(x)     # validation: resized like fastai, not augmented
    assert torch.allclose(v, F.interpolate(x.as_subclass(torch.Tensor), size=(20, 30), mode='bilinear', align_corners=True), atol=1e-5)
    for name in PRESETS:
        assert apply_tfms(TensorImage(torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8)), aug_preset(name, size=24), split_idx=1).shape[-2:] == (24, 24)


# ---------------------------------------------------------------- images: keras preset
def test_keras_preset_parameter_ranges():
    x = torch.zeros(5000, 3, 8, 8)
    t = shift_mat(x, 0.2, p=1.)
    assert t[:, 0, 2].abs().max() <= 0.4 + 1e-6 and t[:, 0, 2].abs().max() > 0.38 and t[:, 1, 2].abs().max() > 0.38
    s = shear_mat(x, 0.2, p=1.)
    assert s[:, 0, 1].abs().max() <= 0.2 and s[:, 0, 1].abs().max() > 0.19 and (s[:, 1, 0] == 0).all()
    z = zoom_xy_mat(x, 0.8, 1.2, p=1.)
    assert (1/z[:, 0, 0]).min() >= 0.8 - 1e-6 and (1/z[:, 0, 0]).max() <= 1.2 + 1e-6 and not torch.equal(z[:, 0, 0], z[:, 1, 1])
    k = aug_preset('keras')
    assert len(k) == 1 and len(k[0].aff_fs) == 5 and k[0].pad_mode == 'border'    # one warp per batch, Keras' 'nearest' fill
    from fastai.vision.augment import rotate_mat
    rot = [f for f in k[0].aff_fs if getattr(f, 'func', None) is rotate_mat][0]
    assert rot.keywords['max_deg'] == 40 and rot.keywords['p'] == 1.

def test_unknown_preset_lists_the_names():
    with pytest.raises(FastxferError) as e: aug_preset('wild')
    assert all(n in str(e.value) for n in PRESETS)


# ---------------------------------------------------------------- images: noise
def test_gaussian_noise_has_the_requested_std_and_skips_validation():
    x = TensorImage(torch.full((8, 3, 64, 64), 0.5))
    torch.manual_seed(0)
    y = Pipeline([GaussianNoise(std=0.05, p=1.)], split_idx=0)(x)
    assert abs((y - 0.5).std().item() - 0.05) < 0.002 and abs((y - 0.5).mean().item()) < 0.002
    assert torch.equal(Pipeline([GaussianNoise(std=0.05, p=1.)], split_idx=1)(x), x)
    torch.manual_seed(0)
    y = Pipeline([GaussianNoise(std=0.05, p=0.5)], split_idx=0)(TensorImage(torch.full((400, 3, 4, 4), 0.5)))
    assert 0.4 < ((y != 0.5).flatten(1).any(1)).float().mean() < 0.6

def test_salt_and_pepper_sets_the_fraction_to_black_or_white():
    x = TensorImage(torch.full((4, 3, 100, 100), 0.5))
    torch.manual_seed(0)
    y = Pipeline([SaltPepper(frac=0.1, p=1.)], split_idx=0)(x)
    changed = (y != 0.5).any(1)
    assert abs(changed.float().mean().item() - 0.1) < 0.01
    px = y.permute(0, 2, 3, 1)[changed]
    assert ((px == 0).all(1) | (px == 1).all(1)).all()          # whole pixels, black or white
    assert abs((px == 0).all(1).float().mean().item() - 0.5) < 0.05
    assert torch.equal(Pipeline([SaltPepper(frac=0.1, p=1.)], split_idx=1)(x), x)

def test_noise_on_uint8_batches_stays_uint8():
    x = TensorImage(torch.full((2, 3, 8, 8), 128, dtype=torch.uint8))
    y = Pipeline([SaltPepper(frac=0.5, p=1.)], split_idx=0)(x)
    assert y.dtype == torch.uint8 and set(y.unique().tolist()) <= {0, 128, 255}


# ---------------------------------------------------------------- images: in a real fastai pipeline
@pytest.fixture(scope='module')
def tiny_images(tmp_path_factory):
    "12 small images in two classes."
    from PIL import Image
    d = tmp_path_factory.mktemp('imgs'); rng = np.random.default_rng(0)
    for cls in ('a', 'b'):
        (d/cls).mkdir()
        for i in range(6):
            a = (rng.random((12, 12, 3))*255).astype(np.uint8)
            Image.fromarray(a).resize((40, 40), Image.BILINEAR).save(d/cls/f'{i}.png')
    return d

def _dls(path, preset, bs=4):
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, get_image_files, parent_label, IndexSplitter, Resize
    files = sorted(get_image_files(path))
    db = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda p: files, get_y=parent_label,
                   splitter=IndexSplitter([0, 1, 6, 7]), item_tfms=Resize(32), batch_tfms=aug_preset(preset))
    return db.dataloaders(path, bs=bs, num_workers=0)

@pytest.mark.parametrize('preset', PRESETS)
def test_validation_and_prediction_never_augmented(tiny_images, preset):
    from fastai.vision.all import set_seed
    dls = _dls(tiny_images, preset); plain = _dls(tiny_images, 'none')
    vx = dls.valid.one_batch()[0]; px = plain.valid.one_batch()[0]
    assert torch.equal(vx, px)
    tdl = dls.test_dl(sorted(tiny_images.glob('a/*.png'))[:3]); ptdl = plain.test_dl(sorted(tiny_images.glob('a/*.png'))[:3])
    assert torch.equal(tdl.one_batch()[0], ptdl.one_batch()[0])
    train, ptrain = dls.train.new(shuffle=False), plain.train.new(shuffle=False)   # fastai's shuffle has its own RNG
    set_seed(7); a = train.one_batch()[0]
    set_seed(7); b = train.one_batch()[0]
    assert torch.equal(a, b)                                  # same seed, same augmented batch
    set_seed(7); c = ptrain.one_batch()[0]
    if preset != 'none': assert not torch.allclose(a, c, atol=1e-3)

def test_presets_train_export_and_predict(tiny_images, tmp_path):
    "Each preset inside a real Learner: one epoch, export (pickles the transforms), load, predict."
    from fastai.vision.all import Learner, load_learner, accuracy
    import torch.nn as nn
    for preset in PRESETS:
        dls = _dls(tiny_images, preset)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        learn = Learner(dls, model, metrics=accuracy)
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
        learn.dls.get_idxs = None
        fn = tmp_path/f'{preset}.pkl'
        learn.export(fn)
        l2 = load_learner(fn)
        pred = l2.predict(sorted(tiny_images.glob('b/*.png'))[0])
        assert pred[0] in ('a', 'b')


# ---------------------------------------------------------------- images: preview
def test_preview_images_none_is_the_original_and_default_differs():
    img = shared_or_skip('pets/images')
    f = sorted(img.glob('*.jpg'))[0]
    ims = preview_images(f, 'none', n=3, size=64)
    assert len(ims) == 4 and all(np.array_equal(i, ims[0]) for i in ims)
    ims = preview_images(f, 'default', n=6, size=64, seed=1)
    diffs = [np.abs(i.astype(int) - ims[0].astype(int)).mean() for i in ims[1:]]
    assert sum(d > 2 for d in diffs) >= 3 and ims[1].shape == (64, 64, 3)
    assert all(np.array_equal(a, b) for a, b in zip(ims, preview_images(f, 'default', n=6, size=64, seed=1)))
    ims = preview_images(f, 'heavy', n=2, size=48, presize=64)      # presize > size: random resized crop down to size
    assert ims[0].shape == (64, 64, 3) and ims[1].shape == (48, 48, 3)

def test_cli_preview_writes_png(tmp_path):
    img = sorted(shared_or_skip('pets/images').glob('*.jpg'))[0]
    out = tmp_path/'grid.png'
    r = run_json('augment', 'preview', img, '--aug', 'heavy', '--n', '4', '--size', '96', '--presize', '128', '--out', out)
    assert r['out'] == str(out.resolve()) and r['n'] == 4 and r['aug'] == 'heavy' and (r['size'], r['presize']) == (96, 128)
    from PIL import Image
    im = Image.open(out)
    assert im.format == 'PNG' and im.size[0] > im.size[1] > 100

def test_cli_preview_errors(tmp_path):
    r = run_cli('augment', 'preview', tmp_path/'nope.jpg', '--out', tmp_path/'g.png')
    assert r.returncode == 2 and 'image not found' in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path/'g.png').exists()

def test_preview_errors_in_process(tmp_path):
    (tmp_path/'bad.jpg').write_text('not an image')
    with pytest.raises(FastxferError, match='cannot read'): preview_images(tmp_path/'bad.jpg')
    img = sorted(shared_or_skip('pets/images').glob('*.jpg'))[0]
    with pytest.raises(FastxferError, match='keras'): preview_images(img, 'wild')
    with pytest.raises(FastxferError, match='at least 1'): preview_images(img, n=0)


# ---------------------------------------------------------------- tables
def test_tabular_procs_fit_on_training_split_only():
    from fastxfer.augment.tabular import feature_procs, tabular_split
    df = pd.DataFrame({'PF': [300., 400, 500, np.nan, 9000, 50], 'PA': [200., 400, 100, 300, 10, 20]})
    tr, va, to = tabular_split(df, feature_procs('PF-PA,impute:mean,winsor:0.0:1.0,minmax'), ['PF', 'PA'], splits=[[0, 1, 2, 3], [4, 5]])
    assert tr['PF'].min() == 0 and tr['PF'].max() == 1        # training range
    assert va['PF'].tolist() == [1, 0]                         # clipped to the training range by winsorize(0, 1)
    assert tr['PF_na'].tolist() == [0, 0, 0, 1] and abs(tr['PF'].iloc[3] - 0.5) < 1e-6   # mean 400 of 300..500

def test_tabular_onehot_label_log_and_dropna():
    from fastxfer.augment.tabular import OneHot, LabelEncode, ColumnTransform, DropMissing, Standardize, tabular_split
    df = pd.DataFrame({'t': ['x', 'y', 'x', 'z'], 'v': [0., 3., np.nan, 8.]})
    dm = DropMissing()
    tr, va, to = tabular_split(df, [dm, OneHot('t'), ColumnTransform('log1p', 'v'), Standardize('v')], ['v'], cat_names=['t'],
                               splits=[[0, 1, 2], [3]])
    assert dm.n_dropped == {'train': 1, 'valid': 0} and len(tr) == 2
    assert tr['t=x'].tolist() == [1, 0] and va[['t=x', 't=y']].to_numpy().sum() == 0
    lv = np.log1p([0., 3.]); assert np.allclose(va['v'], (np.log1p(8) - lv.mean())/lv.std())
    tr, va, _ = tabular_split(df, [LabelEncode('t')], ['v'], cat_names=['t'], splits=[[0, 1, 2], [3]])
    assert tr['t'].tolist() == [1, 2, 1] and va['t'].tolist() == [0]


# ---------------------------------------------------------------- texts
from fastxfer.augment import text as T

def _need_wordnet():
    if T.find_wordnet() is None:
        reason = 'WordNet not installed (apt-get install wordnet-base)'
        print(f'SKIP: {reason}'); pytest.skip(reason)

def test_swap_and_deletion_do_what_they_say():
    w = 'one two three four five six seven eight nine ten'.split()
    s = T.random_swap(w, 2, random.Random(0))
    assert sorted(s) == sorted(w) and 2 <= sum(a != b for a, b in zip(s, w)) <= 4
    d = T.random_deletion(w, 0.5, random.Random(0))
    assert 0 < len(d) < len(w) and [x for x in w if x in d] == d        # order kept, only deletions

def test_synonyms_from_wordnet_files():
    _need_wordnet()
    assert {'car', 'auto', 'machine', 'motorcar'} <= set(T.synonyms('automobile'))
    assert 'glad' in T.synonyms('happy') and 'happy' not in T.synonyms('happy')
    assert 'car' in T.synonyms('automobiles')

def test_synonym_replacement_and_insertion():
    _need_wordnet()
    w = 'The quick dog ran home'.split()
    r = T.synonym_replacement(w, 1, random.Random(3))
    changed = [(a, b) for a, b in zip(w, r) if a != b]
    assert len(r) == len(w) and len(changed) == 1
    a, b = changed[0]
    assert b.lower() in [s.lower() for s in T.synonyms(a)] and a != 'The'
    i = T.random_insertion(w, 2, random.Random(0))
    added = list(i)
    for x in w: added.remove(x)
    # each inserted word is a synonym of a word of the sentence as it was (which may include the first insertion)
    assert len(added) == 2 and all(any(x in T.synonyms(y) for y in w + added) for x in added)

def test_eda_contract():
    t = 'the acting was wonderful and the story kept me guessing until the end'
    a = T.eda(t, n_aug=4, alpha=0.2, seed=0)
    assert len(a) == 4 and a == T.eda(t, n_aug=4, alpha=0.2, seed=0) and all(isinstance(x, str) for x in a)
    assert sum(x != t for x in a) >= 3
    with pytest.raises(FastxferError): T.eda(t, alpha=2)

def test_back_translation_says_no_model_is_installed():
    with pytest.raises(FastxferError, match='none is installed'):
        T.back_translate(['hello'], models=('/nonexistent/a', '/nonexistent/b'))


# ---------------------------------------------------------------- sounds
from fastxfer.augment import audio as A
SR = 16000

def test_pitch_shift_octave_doubles_the_peak():
    y = A.tone(440, SR)
    up = A.pitch_shift(y, SR, 12)
    assert up.shape == y.shape and abs(A.peak_hz(up, SR)/880 - 1) < 0.01
    assert abs(A.peak_hz(A.pitch_shift(y, SR, 7), SR)/(440*2**(7/12)) - 1) < 0.01

def test_time_stretch_halves_duration_keeps_peak():
    y = A.tone(440, SR)
    f = A.time_stretch(y, 2.0)
    assert abs(len(f) - len(y)/2) <= 1 and abs(A.peak_hz(f, SR)/440 - 1) < 0.01

def test_noise_at_requested_snr():
    y = A.tone(300, SR)
    for snr in (-5, 0, 10, 25): assert abs(A.snr_db(y, A.add_noise(y, snr, seed=snr + 10)) - snr) < 0.5

def test_time_shift():
    y = A.tone(300, SR)
    assert np.array_equal(A.time_shift(y, 0.1)[1600:], y[:-1600])
    z = A.time_shift(torch.from_numpy(y), -50, roll=False)
    assert torch.equal(z[:-50], torch.from_numpy(y[50:])) and not z[-50:].any()
