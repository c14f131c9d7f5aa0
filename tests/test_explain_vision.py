"""`explain` for the vision and segment families: on a synthetic task (a coloured square on grey noise, its colour the
class) the saliency map's peak falls in the square, and not for the same network with random weights (the sanity check
of Adebayo et al. 2018); Grad-CAM and integrated gradients equal the reference libraries' (grad-cam, captum); the
command line writes the pictures and refuses bad targets and files with exit 2."""
import copy, json
import numpy as np, pytest
from PIL import Image
from conftest import run_cli, run_json, shared_or_skip

SIZE, SIDE = 128, 40   # the images' side (the model's size: the peak's fractions are the image's), the square's
COLOURS = {'red': (220, 30, 30), 'green': (30, 200, 30), 'blue': (30, 30, 220)}


def square_image(colour:str, seed:int):
    "Grey noise with a `SIDE`-pixel square of `colour` at a random place: the PIL image and the square's `(x, y)`."
    rng = np.random.default_rng(seed)
    a = rng.integers(60, 196, (SIZE, SIZE, 1)).repeat(3, 2).astype(np.uint8)
    x, y = (int(v) for v in rng.integers(0, SIZE - SIDE + 1, 2))
    a[y:y + SIDE, x:x + SIDE] = COLOURS[colour]
    return Image.fromarray(a), (x, y)


def peak_in_square(peak, xy) -> bool:
    "`peak` ([x, y], fractions of the image) inside the square at `xy` (None, an empty map: no)."
    if peak is None: return False
    px, py = int(peak[0] * SIZE), int(peak[1] * SIZE)
    return xy[0] <= px < xy[0] + SIDE and xy[1] <= py < xy[1] + SIDE


def mass_in_square(heatmap, xy) -> float:
    "The share of the grid's total that lies in the cells whose centre is inside the square."
    h = np.asarray(heatmap, dtype=np.float64)
    rows, cols = [(np.arange(n) + .5) * SIZE / n for n in h.shape]
    inside = ((rows >= xy[1]) & (rows < xy[1] + SIDE))[:, None] & ((cols >= xy[0]) & (cols < xy[0] + SIDE))[None, :]
    return float(h[inside].sum() / max(h.sum(), 1e-12))


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def squares(tmp_path_factory):
    "A features-mode model trained on 3 colours x 30 images; 30 new images (another seed) it never saw; the folder."
    d = tmp_path_factory.mktemp('squares')
    for ci, c in enumerate(COLOURS):
        (d/'train'/c).mkdir(parents=True)
        for i in range(30): square_image(c, 1000 * ci + i)[0].save(d/'train'/c/f'{i}.png')
    run_cli('vision', 'train', d/'train', '--mode', 'features', '--size', SIZE, '--out', d/'m', '--quiet',
            env={'FASTXFER_CACHE': str(d/'cache')}, check=0)
    from fastxfer.model_folder import load_model
    valid = [(c, *square_image(c, 10**6 + 1000 * ci + i)) for ci, c in enumerate(COLOURS) for i in range(10)]
    return load_model(d/'m'), valid, d


def randomised(p):
    "A copy of the predictor `p` whose PyTorch network has every layer's weights re-initialised (seeded)."
    import torch
    net = copy.deepcopy(p.model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for m in net.modules():
            if hasattr(m, 'reset_parameters'): m.reset_parameters()
    q = copy.copy(p); q._model = net.eval()
    return q


def hits_and_mass(p, valid) -> tuple[float, float]:
    "The share of `valid`'s images whose map's peak (about the true class) is in the square, and the maps' mean mass there."
    es = [p.explain(im, target=c) for c, im, _ in valid]
    return (float(np.mean([peak_in_square(e['peak'], xy) for e, (_, _, xy) in zip(es, valid)])),
            float(np.mean([mass_in_square(e['heatmap'], xy) for e, (_, _, xy) in zip(es, valid)])))


def test_saliency_finds_the_square_and_not_with_random_weights(squares):
    p, valid, _ = squares
    e = p.explain(valid[0][1], target='red')
    assert e['target'] == 'red' and e['label'] in COLOURS and 0 <= e['probability'] <= 1 and e['method'] and e['summary']
    h = np.asarray(e['heatmap'])
    assert h.shape[0] <= 32 and h.shape[1] <= 32 and h.min() >= 0 and h.max() <= 1 and h.max() > 0.5
    assert abs(e['probability'] - p.predict([valid[0][1]])[0]['probs']['red']) < 1e-5
    json.dumps(e)
    hit, mass = hits_and_mass(p, valid)
    rand_hit, rand_mass = hits_and_mass(randomised(p), valid)
    print(f'peak in the square: trained {hit:.2f}, random weights {rand_hit:.2f}; map mass in it: {mass:.2f} vs {rand_mass:.2f}')
    assert hit >= 0.9, hit
    assert rand_hit < 0.6 and rand_hit <= hit - 0.3, (hit, rand_hit)       # the map depends on what the network learned
    assert rand_mass < mass - 0.1 and mass > 1.5 * (SIDE / SIZE) ** 2, (mass, rand_mass)   # the square is ~10% of the image
    assert p.explain(valid[0][1], target='red')['heatmap'] == e['heatmap']   # the randomised copy left `p`'s network alone


def test_bad_method_is_an_error(squares):
    from fastxfer.core import FastxferError
    p, valid, _ = squares
    with pytest.raises(FastxferError, match='smoothgrad'): p.explain(valid[0][1], method='lime')


def test_grad_cam_equals_the_grad_cam_package(squares):
    try:
        import torch
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError: print('SKIP: grad-cam is not installed'); pytest.skip('grad-cam is not installed')
    from fastxfer.explain import grad_cam, heatmap_grid
    p, valid, _ = squares
    net = p.model.to(memory_format=torch.contiguous_format)
    for c, im, _ in valid[::10]:
        x, t = p.preprocess([im]), p.vocab.index(c)
        mine = grad_cam(net, x, t)
        with GradCAM(model=net, target_layers=[net[0]]) as cam: ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(t)])[0]
        ref = (ref - ref.min()) / max(ref.max() - ref.min(), 1e-12)
        assert mine.shape == ref.shape == (SIZE, SIZE) and mine.max() == 1
        assert np.abs(mine - ref).max() < 0.05 or np.corrcoef(mine.ravel(), ref.ravel())[0, 1] > 0.99, np.abs(mine - ref).max()
        e = p.explain(im, target=c, method='gradcam')   # the predictor's map is this one, made into the grid
        assert np.abs(np.asarray(e['heatmap']) - np.asarray(heatmap_grid(mine))).max() < 0.01


def test_integrated_gradients_equal_captums(squares):
    try:
        import torch
        from captum.attr import IntegratedGradients
    except ImportError: print('SKIP: captum is not installed'); pytest.skip('captum is not installed')
    from fastxfer.explain import attribution_map, heatmap_grid, integrated_gradients
    p, valid, _ = squares
    net = p.model.to(memory_format=torch.contiguous_format)
    c, im, _ = valid[15]
    x, t = p.preprocess([im]), p.vocab.index(c)
    mine = integrated_gradients(net, x, t)
    ig = IntegratedGradients(lambda z: torch.log_softmax(net(z), 1))
    ref = ig.attribute(x, baselines=0, target=t, n_steps=16, method='riemann_middle').sum(1)[0].detach().numpy()
    assert mine.shape == ref.shape == (SIZE, SIZE) and np.abs(ref).max() > 0
    assert np.allclose(mine, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max()), np.abs(mine - ref).max()
    e = p.explain(im, target=c, method='integrated-gradients')
    assert np.abs(np.asarray(e['heatmap']) - np.asarray(heatmap_grid(attribution_map(ref)))).max() < 0.01


def test_vision_explain_from_the_command_line(squares, tmp_path):
    p, valid, d = squares
    files = []
    for i, (c, im, _) in enumerate(valid[:2]):
        im.save(tmp_path/f'{c}{i}.png'); files.append(tmp_path/f'{c}{i}.png')
    r = run_json('vision', 'explain', d/'m', *files, '--out', tmp_path/'pics')
    es = r['explanations']
    assert [e['input'] for e in es] == [str(f) for f in files] and len(list((tmp_path/'pics').glob('*.png'))) == 2
    for e in es:
        assert {'label', 'target', 'probability', 'method', 'summary', 'heatmap', 'peak', 'picture'} <= set(e)
        assert e['target'] == e['label'] and all(0 <= v <= 1 for v in e['peak'])
        with Image.open(e['picture']) as pic: assert min(pic.size) >= 256 and pic.format == 'PNG'
    other = next(c for c in p.vocab if c != es[0]['label'])
    o = run_json('vision', 'explain', d/'m', files[0], '--target', other, '--out', tmp_path/'pics')['explanations'][0]
    assert o['target'] == other and o['label'] == es[0]['label'] and o['heatmap'] != es[0]['heatmap']
    out = run_cli('vision', 'explain', d/'m', files[0], '--out', tmp_path/'human', check=0).stdout
    assert out.startswith(f'{files[0]}: ') and f"picture: {tmp_path/'human'}" in out
    g = run_json('vision', 'explain', d/'m', files[0], '--method', 'gradcam', '--out', tmp_path/'pics')['explanations'][0]
    assert g['method'].startswith('Grad-CAM') and g['heatmap'] != es[0]['heatmap']   # --method chooses the map


def test_bad_vision_explain_is_exit_2(squares, tmp_path):
    p, valid, d = squares
    valid[0][1].save(tmp_path/'ok.png')
    r = run_cli('vision', 'explain', d/'m', tmp_path/'ok.png', '--target', 'nope', '--out', tmp_path)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith('error: ') and 'nope' in last and all(c in last for c in COLOURS), r.stderr
    (tmp_path/'notes.txt').write_text('not an image'); (tmp_path/'broken.png').write_bytes(b'\x89PNG but not really')
    for bad in ('notes.txt', 'broken.png'):
        r = run_cli('vision', 'explain', d/'m', tmp_path/bad, '--out', tmp_path/'pics')
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('error: '), (bad, r.returncode, r.stderr[-2000:])
    assert not (tmp_path/'pics').exists() or not list((tmp_path/'pics').iterdir())
    r = run_cli('vision', 'explain', d/'m', tmp_path/'ok.png', '--method', 'lime', '--out', tmp_path/'pics')
    assert r.returncode == 2 and 'invalid choice' in r.stderr


# ---- segment ------------------------------------------------------------------------------------------------
def test_segment_explain_from_the_command_line(real_models, tmp_path):
    from fastxfer.model_folder import load_model
    image = sorted((shared_or_skip('fastai_samples/camvid_tiny')/'images').iterdir())[-1]   # not one of the 12 it trained on
    e = run_json('segment', 'explain', real_models/'camvid', image, '--out', tmp_path)['explanations'][0]
    heat, ent = np.asarray(e['heatmap']), np.asarray(e['entropy'])
    assert heat.shape == ent.shape and heat.ndim == 2 and max(heat.shape) <= 64 and min(heat.shape) >= 16
    assert 0 <= heat.min() <= heat.max() <= 1 and 0 <= ent.min() <= ent.max() <= 1 and heat.max() > 0.5
    assert abs(sum(r['share'] for r in e['rows']) - 1) < 1e-6 and e['target'] == e['label'] in [r['code'] for r in e['rows']]
    assert all(0 < r['mean_probability'] <= 1 for r in e['rows'])
    codes = [str(c) for c in load_model(real_models/'camvid').codes]
    # where the class has probability >= q the entropy is at most that of q and the rest spread evenly (a cell's average too)
    q, k = 0.9, len(codes)
    assert (heat >= q).any() and ent[heat >= q].max() <= (-q * np.log(q) - (1 - q) * np.log((1 - q) / (k - 1))) / np.log(k) + 0.002
    with Image.open(e['picture']) as pic: assert pic.format == 'PNG' and pic.width > pic.height
    other = next((r['code'] for r in e['rows'] if r['code'] != e['label']), next(c for c in codes if c != e['label']))
    o = run_json('segment', 'explain', real_models/'camvid', image, '--target', other, '--out', tmp_path)['explanations'][0]
    assert o['target'] == other and o['label'] == e['label'] and o['heatmap'] != e['heatmap']
    r = run_cli('segment', 'explain', real_models/'camvid', image, '--target', 'nope', '--out', tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('error: ') and codes[0] in r.stderr, r.stderr[-2000:]
