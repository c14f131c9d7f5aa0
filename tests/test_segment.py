"""The segmentation family: a U-Net trained once through the command line on a tiny CamVid subset at a small size,
then predicted in a new process (mask and overlay files), scored, served over REST and checked against its ONNX
export; the data checks and bad input (a clear message, exit 2, nothing written); and the mask-aware batch
augmentation on a synthetic image whose mask is known (a warped image and its warped mask still line up)."""
import base64, datetime, io, json, shutil
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from conftest import fresh_words, run_cli, run_cli_here, run_json, shared_or_skip

from fastxfer.core import FastxferError
from fastxfer.segment.data import collect_segments, synthetic_segments, make_seg_dls


@pytest.fixture(scope='module')
def camvid(tmp_path_factory):
    "16 CamVid-tiny images and their masks (the shared data), in CamVid's layout."
    src = shared_or_skip('fastai_samples/camvid_tiny')
    d = tmp_path_factory.mktemp('camvid')/'camvid16'
    (d/'images').mkdir(parents=True); (d/'labels').mkdir()
    for p in sorted((src/'images').iterdir())[:16]:
        shutil.copyfile(p, d/'images'/p.name); shutil.copyfile(src/'labels'/f'{p.stem}_P.png', d/'labels'/f'{p.stem}_P.png')
    shutil.copyfile(src/'codes.txt', d/'codes.txt')
    return d


@pytest.fixture(scope='module')
def model(camvid):
    "Trained once through the command line, at 64x96, one frozen epoch and three more, as a user would (the codes: the folder's codes.txt)."
    r = run_json('segment', 'train', camvid, '--out', camvid.parent/'models'/'camvid',
                 '--size', '64,96', '--epochs', 3, '--freeze-epochs', 1, '--lr', '1e-2', '--bs', 4)
    return camvid.parent/'models'/'camvid', r


def test_train_reports_scores_beside_the_baseline(model):
    path, r = model
    s, b = r['scores'], r['baseline']
    assert r['void'] == 'Void' and r['size'] == [64, 96] and r['n_valid'] == 3 and r['onnx'] is True
    assert 0 < s['foreground_acc'] <= 1 and 0 <= s['mean_iou'] <= 1 and s['n_classes_present'] >= 3
    assert 'Void' not in s['iou'] and b['what'].startswith('majority class')
    assert s['foreground_acc'] > b['foreground_acc'], 'a trained U-Net beats painting everything one class'
    card = json.loads((path/'card.json').read_text())
    assert {'model.safetensors', 'model.onnx', 'plots/results.png', 'plots/iou.png', 'plots/loss_curves.png'} <= set(card['files'])
    assert card['format'] == 2 and not [f for f in card['files'] if f.endswith('.pkl')]
    assert card['onnx']['max_abs_diff'] < 1e-4 and len(card['palette']) == 32 and card['palette'][card['codes'].index('Void')] == [0, 0, 0]


def test_predict_in_a_new_process_writes_a_full_size_mask_and_overlay(model, camvid, tmp_path):
    path, _ = model
    img = camvid/'images'/sorted(p.name for p in (camvid/'images').iterdir())[0]
    big = tmp_path/'big.png'
    Image.open(img).resize((480, 360)).save(big)          # another size than the model's: the mask follows the image
    r = run_json('segment', 'predict', path, img, big, '--out', tmp_path/'out', fresh=True)
    assert [Path(p['mask']).name for p in r['predictions']] == [f'{img.stem}_mask.png', 'big_mask.png']
    for p, size in zip(r['predictions'], [Image.open(img).size, (480, 360)]):
        m, o = Image.open(p['mask']), Image.open(p['overlay'])
        assert m.mode == 'P' and m.size == size and o.size == size and o.mode == 'RGB'
        assert abs(sum(p['shares'].values()) - 1) < 0.01 and p['label'] in p['shares'] and p['label'] != 'Void'
        assert set(np.unique(np.asarray(m))) <= set(range(32))


def test_predicting_imports_no_fastai(model, camvid):
    "A segmentation folder predicts with ONNX Runtime and NumPy: fastai (seconds to import) is for training."
    code = 'from fastxfer.model_folder import load_model\np = load_model(sys.argv[1]); p.predict([sys.argv[2]]); p.explain(sys.argv[2])\nprint(p.backend)'
    assert fresh_words(code, model[0], sorted((camvid/'images').iterdir())[0]) == ['onnx', '[]']


def test_onnx_and_pytorch_give_the_same_masks(model, camvid):
    from fastxfer.model_folder import ModelFolder
    from fastxfer.segment import SegmentPredictor
    path, _ = model
    onnx, torch_ = SegmentPredictor(ModelFolder(path)), SegmentPredictor(ModelFolder(path), backend='torch')
    assert (onnx.backend, torch_.backend) == ('onnx', 'torch')
    for p in sorted((camvid/'images').iterdir())[:3]:
        a, b = onnx.mask(p)[0], torch_.mask(p)[0]
        assert a.shape == b.shape and (a == b).mean() > 0.999


def test_evaluate_scores_a_labelled_folder(model, camvid):
    path, _ = model
    e = run_json('segment', 'evaluate', path, camvid)
    assert e['n'] == 16 and e['metrics']['foreground_acc'] > e['baseline']['foreground_acc']


def test_served_model_takes_an_image_and_answers_class_shares(model, camvid):
    from fastapi.testclient import TestClient
    from fastxfer.serve import create_app
    path, _ = model
    img = sorted((camvid/'images').iterdir())[0]
    with TestClient(create_app(path.parent, ui=False)) as c:
        r = c.post('/api/v1/models/camvid/predict', files={'file': (img.name, img.read_bytes(), 'image/png')})
        assert r.status_code == 200, r.text
        p = r.json()['predictions'][0]
        assert p['label'] in p['probs'] and abs(sum(p['probs'].values()) - 1) < 1e-6 and (p['width'], p['height']) == Image.open(img).size
        bad = c.post('/api/v1/models/camvid/predict', files={'file': ('x.png', b'not an image', 'image/png')})
        assert bad.status_code in (400, 415, 422) and bad.json()['error']
        mask = Image.open(io.BytesIO(base64.b64decode(p['mask_png'])))
        assert mask.mode == 'P' and mask.size == Image.open(img).size
        png = c.post('/api/v1/models/camvid/predict?format=png', files={'file': (img.name, img.read_bytes(), 'image/png')})
        assert png.status_code == 200 and png.headers['content-type'] == 'image/png'
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), np.asarray(mask)), 'the PNG answer is the JSON mask'
        for url in ('/api/v1/models/camvid/predict?format=gif', '/api/v1/models/camvid/predict/batch?format=png'):
            r = c.post(url, files={'file': (img.name, img.read_bytes(), 'image/png')})
            assert r.status_code == 422 and 'format' in r.json()['error'], (url, r.text)
        op = c.get('/openapi.json').json()['paths']['/api/v1/models/camvid/predict']['post']
        assert [q['name'] for q in op['parameters']] == ['format'] and 'image/png' in op['responses']['200']['content']
        schema = c.get('/openapi.json').json()['components']['schemas']['CamvidPrediction']
        assert {'mask_png', 'height', 'width'} <= set(schema['properties'])


def test_the_notebook_widget_shows_the_overlay(model, camvid):
    from fastxfer.widgets import predict_widget
    path, _ = model
    img = sorted((camvid/'images').iterdir())[0]
    w = predict_widget(path)
    w.input.value = ({'name': img.name, 'type': 'image/png', 'size': img.stat().st_size, 'content': memoryview(img.read_bytes()),
                      'last_modified': datetime.datetime.now(datetime.timezone.utc)},)
    assert w.error is None and w.result['label'] in w.result['probs']
    pic = Image.open(io.BytesIO(w.picture.value))
    assert pic.size == Image.open(img).size and w.result['label'] in w.legend.value


def test_a_warped_image_and_its_warped_mask_still_line_up(tmp_path):
    "Each class of the synthetic set has its own colour, so a warped pixel's colour says which class its mask must hold."
    import torch
    from fastai.torch_core import TensorImage, TensorMask
    from fastxfer.augment.image import FastAug, aug_preset
    sd = collect_segments(synthetic_segments(tmp_path/'s', n=8, size=(64, 48)), 'grey,red,blue', valid_pct=0.25)
    x, y = make_seg_dls(sd, size=(48, 64), bs=6, aug='none', device='cpu').one_batch()
    raw = x*torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    for tfm in (FastAug(max_rotate=30., min_zoom=0.8, max_zoom=1.5, max_warp=0.3, p_affine=1., max_lighting=0.), aug_preset('keras')[0]):
        torch.manual_seed(1)
        wx, wy = tfm((TensorImage(raw.clone()), TensorMask(y.clone())), split_idx=0)
        assert not torch.equal(wy, y), 'the batch was warped'
        cls = torch.where(wx[:, 0] > 0.7, 1, torch.where(wx[:, 2] > 0.7, 2, 0))
        pure = ((wx[:, 0] - 0.86).abs() < 0.03) | ((wx[:, 2] - 0.86).abs() < 0.03) | ((wx - 0.35).abs() < 0.03).all(1)
        agree = (cls == wy.as_subclass(torch.Tensor))[pure].float().mean().item()
        assert pure.float().mean() > 0.5 and agree > 0.99, (type(tfm).__name__, agree)
    # the validation split is never augmented
    vx, vy = aug_preset('default')[0]((TensorImage(raw.clone()), TensorMask(y.clone())), split_idx=1)
    assert torch.equal(vy.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)) and torch.allclose(vx, raw)


def _bad(tmp, data, *args, codes='grey,red,blue'):
    out = tmp/'out'
    r = run_cli_here('segment', 'train', data, *(['--codes', codes] if codes else []), '--out', out, *args)
    assert r.returncode == 2, r.stderr
    assert not out.exists() and not list(tmp.glob('.out*')), 'nothing is written'
    return r.stderr


def test_bad_data_is_a_clear_error_naming_the_files(tmp_path):
    d = synthetic_segments(tmp_path/'a', n=5)
    (d/'labels'/'im3_P.png').unlink()
    assert 'without a mask' in _bad(tmp_path, d) and 'im3.png' in _bad(tmp_path, d)
    d = synthetic_segments(tmp_path/'b', n=5)
    Image.new('L', (20, 20)).save(d/'labels'/'im1_P.png')
    e = _bad(tmp_path, d); assert 'differ in size' in e and 'im1_P.png' in e and '20x20' in e
    d = synthetic_segments(tmp_path/'c', n=5)
    Image.new('RGB', (48, 32), (200, 0, 0)).save(d/'labels'/'im2_P.png')
    e = _bad(tmp_path, d); assert 'RGB' in e and 'im2_P.png' in e
    d = synthetic_segments(tmp_path/'d', n=5)
    e = _bad(tmp_path, d, codes='grey,red'); assert 'outside the 2 codes' in e and 'value 2' in e
    e = _bad(tmp_path, synthetic_segments(tmp_path/'e', n=5), '--void', 'Void'); assert "--void 'Void' is not one of the codes" in e
    e = _bad(tmp_path, synthetic_segments(tmp_path/'f', n=5), '--size', 'big'); assert '--size' in e
    e = _bad(tmp_path, tmp_path/'nowhere'); assert 'no such folder' in e
    e = _bad(tmp_path, synthetic_segments(tmp_path/'g', n=5), codes='only'); assert 'at least 2' in e
    e = _bad(tmp_path, synthetic_segments(tmp_path/'h', n=5), codes=None); assert 'put a codes.txt in the data folder' in e
    d = synthetic_segments(tmp_path/'i', n=5); (d/'codes.txt').write_text('grey\nred\n')   # no --codes: the folder's codes.txt is read
    e = _bad(tmp_path, d, codes=None); assert 'outside the 2 codes' in e


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    d = synthetic_segments(tmp_path/'s', n=6)
    (d/'images'/'broken.png').write_bytes(b'not a png')
    sd = collect_segments(d, 'grey,red,blue')
    assert len(sd.items) == 6 and [p.name for p in sd.skipped] == ['broken.png']
    grey = Image.open(d/'images'/'im0.png').convert('L'); grey.save(d/'images'/'im0.png')   # greyscale images are converted
    x, _ = make_seg_dls(collect_segments(d, 'grey,red,blue'), size=(32, 48), bs=2, aug='none', device='cpu').one_batch()
    assert x.shape[1] == 3


def test_predict_rejects_a_corrupt_image_and_a_missing_file(model, tmp_path):
    path, _ = model
    (tmp_path/'bad.png').write_bytes(b'\x89PNG garbage')
    r = run_cli_here('segment', 'predict', path, tmp_path/'bad.png', '--out', tmp_path/'o')
    assert r.returncode == 2 and 'not a readable image' in r.stderr, r.stderr
    r = run_cli_here('segment', 'predict', path, tmp_path/'missing.png')
    assert r.returncode == 2 and 'no such image' in r.stderr


@pytest.mark.parametrize('mix', ['cutmix', 'mixup'])
def test_cutmix_and_mixup_train_record_and_predict(tmp_path, mix):
    "A box of another image with its mask (CutMix) or two images blended (MixUp) in every training batch: trained, recorded, predicting."
    d = synthetic_segments(tmp_path/'s', n=8)
    r = run_json('segment', 'train', d, '--codes', 'grey,red,blue', '--out', tmp_path/'m', '--size', '32,48', '--epochs', 1,
                 '--freeze-epochs', 1, '--bs', 4, '--aug-mix', mix)
    assert r['aug_mix'] == mix and json.loads((tmp_path/'m'/'card.json').read_text())['aug_mix'] == mix
    p = run_json('segment', 'predict', tmp_path/'m', sorted((d/'images').iterdir())[0], '--out', tmp_path/'o')
    assert len(p['predictions']) == 1 and Path(p['predictions'][0]['mask']).exists(), p
    bad = run_cli('segment', 'train', d, '--codes', 'grey,red,blue', '--out', tmp_path/'b', '--aug-mix', 'blend')
    assert bad.returncode == 2 and "error: argument --aug-mix: invalid choice: 'blend'" in bad.stderr.strip().splitlines()[-1] and not (tmp_path/'b').exists()


def test_a_folder_with_two_images_of_one_name_keeps_both_masks(model, camvid, tmp_path):
    path, _ = model
    first, second = sorted((camvid/'images').iterdir())[:2]
    for sub, img in (('a', first), ('b', second)): (tmp_path/'in'/sub).mkdir(parents=True); shutil.copy(img, tmp_path/'in'/sub/'x.png')
    r = run_json('segment', 'predict', path, tmp_path/'in', '--out', tmp_path/'out')
    assert [Path(p['mask']).name for p in r['predictions']] == ['a_x_mask.png', 'b_x_mask.png']
    assert sorted(f.name for f in (tmp_path/'out').iterdir()) == ['a_x_mask.png', 'a_x_overlay.png', 'b_x_mask.png', 'b_x_overlay.png']


def _as_other_tools_write_them(src:Path, d:Path) -> Path:
    "The synthetic set laid out as Carvana's: photos/<stem>.jpg and masks/<stem>_mask.<ext>, one class 255 and the rest 0: BMPs, one a grey TIFF saved as RGB."
    (d/'photos').mkdir(parents=True); (d/'masks').mkdir()
    for i, p in enumerate(sorted((src/'images').iterdir())):
        Image.open(p).save(d/'photos'/f'{p.stem}.jpg', quality=95)
        m = Image.fromarray(((np.asarray(Image.open(src/'labels'/f'{p.stem}_P.png')) == 1) * 255).astype(np.uint8))
        (m.convert('RGB').save(d/'masks'/f'{p.stem}_mask.tif') if i == 0 else m.save(d/'masks'/f'{p.stem}_mask.bmp'))
    return d


def test_masks_as_other_tools_write_them(tmp_path):
    "Black-and-white (0/255) BMP and TIFF masks in other folders train and evaluate; palette masks reach the batches as their indices; JPEG masks and VOC's 255 get their own errors."
    d = _as_other_tools_write_them(synthetic_segments(tmp_path/'s', n=8), tmp_path/'carvana')
    flags = ('--images', 'photos', '--masks', 'masks', '--mask-suffix', '_mask')
    sd = collect_segments(d, 'background,red', masks='masks', mask_suffix='_mask', images='photos')
    assert sd.values == [0, 255] and {m.suffix for m in sd.masks} == {'.tif', '.bmp'} and set(np.unique(sd.mask(0))) == {0, 1}
    r = run_json('segment', 'train', d, '--codes', 'background,red', '--out', tmp_path/'m', '--size', '32,48', '--epochs', 1, '--bs', 4, *flags)
    assert json.loads((tmp_path/'m'/'card.json').read_text())['mask_values'] == [0, 255] and r['scores']['iou']['red'] > 0
    e = run_json('segment', 'evaluate', tmp_path/'m', d, *flags)
    assert e['n'] == 8 and np.asarray(e['confusion_matrix']).sum() == 8 * 32 * 48 and e['metrics']['mean_iou'] > 0
    # its predicted masks hold the values it was trained on (0/255), and read back as a mask of the set does
    p = run_json('segment', 'predict', tmp_path/'m', sorted((d/'photos').iterdir())[0], '--out', tmp_path/'o')
    w = Image.open(p['predictions'][0]['mask'])
    assert w.mode == 'P' and set(np.unique(np.asarray(w))) <= {0, 255} and w.getpalette()[255 * 3:256 * 3] != [0, 0, 0]
    # the masks beside their images in a folder per patient (Kaggle's LGG MRI set: <case>/<case>_1.tif and <case>_1_mask.tif)
    for i, (img, msk) in enumerate(zip(sorted((d/'photos').iterdir()), sorted((d/'masks').iterdir()))):
        case = d/'lgg'/f'case{i % 2}'; case.mkdir(parents=True, exist_ok=True)
        shutil.copy(img, case/f'{img.stem}.jpg'); shutil.copy(msk, case/msk.name)
    (d/'lgg'/'data.csv').write_text('patient\n1\n')
    sd = collect_segments(d, 'background,red', masks='lgg', mask_suffix='_mask', images='lgg')
    assert len(sd.items) == 8 and sd.values == [0, 255] and all(m.parent == i.parent and m.stem == i.stem + '_mask' for i, m in zip(sd.items, sd.masks))
    assert 'give --mask-suffix' in _bad(tmp_path, d, '--images', 'lgg', '--masks', 'lgg', '--mask-suffix', '', codes='background,red')
    # an indexed PNG whose palette is not grey: fastai's PILMask would read its colours' brightness (index 1 under dark red: 38)
    p = synthetic_segments(tmp_path/'p', n=4)
    for f in (p/'labels').iterdir():
        m = Image.fromarray(np.asarray(Image.open(f)), mode='P'); m.putpalette([0, 0, 0, 128, 0, 0, 0, 0, 128] + [0] * 759); m.save(f)
    sd = collect_segments(p, 'grey,red,blue', valid_pct=0.25)
    _, y = make_seg_dls(sd, size=(32, 48), bs=4, aug='none', device='cpu').train.one_batch()
    assert set(np.unique(y.numpy())) == {0, 1, 2}
    for f in (d/'masks').iterdir(): Image.open(f).convert('L').save(f.with_suffix('.jpg')); f.unlink()
    e = _bad(tmp_path, d, *flags, codes='background,red'); assert 'JPEG' in e and 'save the masks as PNG' in e
    v = synthetic_segments(tmp_path/'v', n=5); m = np.asarray(Image.open(v/'labels'/'im0_P.png')).copy(); m[0] = 255
    Image.fromarray(m).save(v/'labels'/'im0_P.png')
    e = _bad(tmp_path, v, codes='grey,red,blue'); assert 'value 255 (in' in e and 'add a last code void' in e
