"""`fastxfer text`: data sources, bad input, each model type on a tiny set, export and load in a fresh process."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from conftest import run_cli, run_cli_here, run_json, shared_or_skip, FASTXFER

IMDB = 'fastai_samples/imdb_sample/texts.csv'


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    return tmp_path_factory.mktemp('text')


@pytest.fixture(scope='module')
def env(work):
    # embeddings cache and models under the test's own folder
    return {'FASTXFER_DATA_DIR': str(work/'data'), 'FASTXFER_MODELS_DIR': str(work/'models')}


@pytest.fixture(scope='module')
def toy(work):
    from fastxfer.text import toy_texts_csv
    return toy_texts_csv(work/'toy.csv')


@pytest.fixture(scope='module')
def imdb_small(work):
    "60 real IMDB reviews (40 train, 20 valid) from the shared sample."
    df = pd.read_csv(shared_or_skip(IMDB))
    small = pd.concat([df[~df.is_valid].groupby('label').head(20), df[df.is_valid].groupby('label').head(10)])
    p = work/'imdb_small.csv'; small.to_csv(p, index=False)
    return p


@pytest.fixture(scope='module')
def logreg_model(work, toy, env):
    out = work/'m_logreg'
    r = run_json('text', 'train', toy, '--valid-col', 'is_valid', '--model', 'embed-logreg', '--max-len', '64', '--out', out, env=env)
    return out, r


# ---- data sources ---------------------------------------------------------------------------------------------

def test_csv_with_valid_col_and_with_valid_pct(toy):
    from fastxfer.text import load_text_data
    d = load_text_data(toy, valid_col='is_valid')
    assert (d.n_train, d.n_valid, d.classes) == (18, 6, ['negative', 'positive'])
    a, b = load_text_data(toy, valid_pct=0.25, seed=3), load_text_data(toy, valid_pct=0.25, seed=3)
    assert a.n_valid == 6 and a.valid_texts == b.valid_texts            # seeded split is repeatable
    assert load_text_data(toy, valid_pct=0.25, seed=4).valid_texts != a.valid_texts


def test_multiclass_csv_and_dropped_rows(work):
    from fastxfer.text import load_text_data
    rows = [dict(review=f'{c} text {i}', topic=c) for c in ('sport', 'politics', 'music') for i in range(6)]
    rows += [dict(review='', topic='sport'), dict(review=None, topic='music'), dict(review='no label', topic=None)]
    p = work/'multi.tsv'; pd.DataFrame(rows).to_csv(p, sep='\t', index=False)
    d = load_text_data(p, text_col='review', label_col='topic', valid_pct=0.2, seed=0)
    assert d.classes == ['music', 'politics', 'sport'] and d.n_train + d.n_valid == 18
    assert d.dropped == {'empty_text': 2, 'missing_label': 1}


def test_a_table_with_its_own_column_names(work, capsys):
    "Kaggle's IMDB file (review, sentiment): the texts and labels found, said; a name given that is not there is an error."
    from fastxfer.text import load_text_data
    rows = [dict(review=f'a {w} film, {w} from the first scene to the last', sentiment=l, id=i)
            for i, (w, l) in enumerate([('wonderful', 'positive'), ('dreadful', 'negative')] * 6)]
    p = work/'IMDB Dataset.csv'; pd.DataFrame(rows).to_csv(p, index=False)
    d = load_text_data(p, valid_pct=0.25, seed=0)
    assert d.classes == ['negative', 'positive'] and d.n_train + d.n_valid == 12 and d.source['text_col'] == 'review'
    err = capsys.readouterr().err
    assert "no column 'text'; the texts are in 'review'" in err and "no column 'label'; the labels are in 'sentiment'" in err, err
    with pytest.raises(Exception, match="--text-col 'body' is not a column"): load_text_data(p, text_col='body')


def test_imdb_folder_layout(work):
    from fastxfer.text import load_text_data
    root = work/'imdb_folder'
    for split, n in (('train', 5), ('test', 2)):
        for lbl in ('pos', 'neg'):
            (root/split/lbl).mkdir(parents=True)
            for i in range(n): (root/split/lbl/f'{i}_7.txt').write_text(f'{lbl} review {i}')
    (root/'unsup').mkdir(); (root/'unsup'/'0_0.txt').write_text('an unlabelled review')
    d = load_text_data(root)
    assert (d.n_train, d.n_valid, d.classes, d.unlabelled) == (10, 4, ['neg', 'pos'], ['an unlabelled review'])
    # no test/ folder: a random split of train/
    root2 = work/'imdb_folder2'; (root2/'train').mkdir(parents=True)
    os.symlink(root/'train'/'pos', root2/'train'/'pos'); os.symlink(root/'train'/'neg', root2/'train'/'neg')
    d2 = load_text_data(root2, valid_pct=0.2, seed=1)
    assert (d2.n_train, d2.n_valid) == (8, 2)



def test_texts_saved_on_windows_read_as_written(work, capsys):
    "A review saved in Windows-1252 (its 'é' one byte) and one with Excel's UTF-8 byte-order mark: read as written, the first said."
    from fastxfer.core import is_quiet, set_quiet
    from fastxfer.text import load_text_data
    root = work/'imdb_windows'
    for lbl in ('pos', 'neg'):
        (root/'train'/lbl).mkdir(parents=True)
        for i in range(5): (root/'train'/lbl/f'{i}.txt').write_text(f'{lbl} review {i}')
    (root/'train'/'pos'/'0.txt').write_bytes('un café crème, parfait'.encode('cp1252'))
    (root/'train'/'neg'/'0.txt').write_bytes('\ufeffa dull café'.encode('utf-8'))
    was = is_quiet(); set_quiet(False)
    try: d = load_text_data(root, valid_pct=0.2, seed=1)
    finally: set_quiet(was)
    texts = d.train_texts + d.valid_texts
    assert 'un café crème, parfait' in texts and 'a dull café' in texts, texts
    assert f"{root/'train'/'pos'}: 1 file(s) not in UTF-8" in capsys.readouterr().err


# ---- bad input: clear errors, exit status 2 ---------------------------------------------------------------------

def _fails(*args, env=None):
    r = run_cli_here('text', *args, env=env)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr[-2000:])
    assert 'Traceback' not in r.stderr, r.stderr
    return r.stderr


def test_bad_input_in_process(toy, work):
    from fastxfer.core import FastxferError
    from fastxfer.text import load_text_data
    def err(*a, **k):
        with pytest.raises(FastxferError) as e: load_text_data(*a, **k)
        return str(e.value)
    assert 'available columns: text, label, is_valid' in err(toy, label_col='sentiment')
    assert "--valid-col 'split' is not a column" in err(toy, valid_col='split')
    one = work/'one.csv'; pd.DataFrame(dict(text=['a', 'b', 'c'], label=['x']*3)).to_csv(one, index=False)
    assert 'at least two' in err(one)
    assert 'no such file' in err(work/'nope.csv')
    notimdb = work/'empty_folder'; notimdb.mkdir()
    assert 'IMDB layout' in err(notimdb)
    nonbool = work/'nonbool.csv'; pd.DataFrame(dict(text=['a', 'b'], label=['x', 'y'], v=['maybe', 'no'])).to_csv(nonbool, index=False)
    assert 'must be boolean' in err(nonbool, valid_col='v')


def test_bad_input_on_the_command_line(toy, work, env):
    err = _fails('train', toy, '--text-col', 'review', '--out', work/'x', env=env)
    assert "--text-col 'review' is not a column" in err and 'available columns: text, label, is_valid' in err
    bad = work/'bad.csv'; bad.write_bytes(b'\xff\xfe\x00garbage\x00\x81\xff\n\x00\x00')
    assert 'cannot read' in _fails('train', bad, '--out', work/'x', env=env)
    assert "--lr must be default, auto or a number, got 'fast'" in _fails('train', toy, '--lr', 'fast', '--out', work/'x', env=env)
    assert 'out of range' in _fails('train', toy, '--lr', '3', '--out', work/'x', env=env)
    assert '--ensemble must be at least 1' in _fails('train', toy, '--ensemble', '0', '--out', work/'x', env=env)
    assert '--ensemble is for --model minilm' in _fails('train', toy, '--model', 'embed-logreg', '--ensemble', '2', '--out', work/'x', env=env)
    assert '--window 4 is too small' in _fails('train', toy, '--model', 'embed-logreg', '--window', '4', '--out', work/'x', env=env)
    assert '--window is for minilm and embed-logreg' in _fails('train', toy, '--model', 'awd_lstm', '--window', '64', '--out', work/'x', env=env)
    assert not (work/'x').exists()


def test_predict_errors(logreg_model, work):
    out, _ = logreg_model
    assert 'no texts to predict' in _fails('predict', out)
    assert 'text 2 of those given is empty' in _fails('predict', out, 'a film', '  ')   # once predicted, as if it said something
    assert 'not a model folder' in _fails('predict', work, 'hello')


# ---- each model type on a tiny set; export and load in a fresh process ------------------------------------------

def test_embed_logreg_train_predict_evaluate(logreg_model, toy, work):
    out, r = logreg_model
    assert {'accuracy', 'train_seconds', 'model_dir'} <= set(r) and r['model'] == 'embed-logreg'
    assert r['accuracy'] >= 5/6 and r['n'] == 6 and Path(r['model_dir']) == out
    card = json.loads((out/'card.json').read_text())
    assert card['kind'] == 'text' and card['predictor'] == 'fastxfer.text.TextPredictor' and card['max_len'] == 64 and card['window'] == 128
    assert card['classes'] == ['negative', 'positive'] and {'head.pt', 'encoder/model.safetensors', 'card.json'} <= set(card['files'])
    # predict: arguments (a fresh process), one long text truncated
    p = run_json('text', 'predict', out, 'a wonderful, moving film', 'boring, dull and pointless. ' * 40)
    a, b = p['predictions']
    assert a['label'] == 'positive' and b['label'] == 'negative'
    assert set(a['probs']) == {'negative', 'positive'} and abs(sum(a['probs'].values()) - 1) < 1e-5
    assert a['truncated'] is False and b['truncated'] is True
    # texts from arguments and --file (one per line, blank lines skipped) together; then stdin
    f = work/'texts.txt'; f.write_text('I loved every minute of it\n\nterrible acting and a stupid script\n')
    p = run_json('text', 'predict', out, 'a joy to watch', '--file', f)['predictions']
    assert [x['label'] for x in p] == ['positive', 'positive', 'negative']
    r2 = subprocess.run([str(FASTXFER), 'text', 'predict', str(out), '-', '--json'], input=f.read_text(),
                        capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr
    assert [x['label'] for x in json.loads(r2.stdout)['predictions']] == ['positive', 'negative']
    # files and folders among the arguments are read, not predicted as their names: a table's text column (a Kaggle
    # 'review' column), a file's lines, a folder's .txt files; a word and a long text stay texts
    pd.DataFrame({'id': [7, 8], 'review': ['I loved every minute of this film', 'a terrible, stupid, boring script']}).to_csv(work/'kag.csv', index=False)
    (work/'docs'/'sub').mkdir(parents=True); (work/'docs'/'a.txt').write_text('a joy to watch'); (work/'docs'/'sub'/'b.txt').write_text('terrible acting')
    long = 'a wonderful and moving film ' * 20
    p = run_json('text', 'predict', out, work/'kag.csv', work/'docs', f, 'great', long)['predictions']
    assert [x.get('source') for x in p] == [f'{work}/kag.csv row 2', f'{work}/kag.csv row 3', f'{work}/docs/a.txt', f'{work}/docs/sub/b.txt',
                                            f'{f} line 1', f'{f} line 3', None, None]
    assert [x['label'] for x in p] == ['positive', 'negative', 'positive', 'negative', 'positive', 'negative', 'positive', 'positive']
    assert p[0]['text'] == 'I loved every minute of this film' and p[6]['text'] == 'great'
    o = run_json('text', 'predict', out, work/'kag.csv', '--out', work/'kag_preds.tsv')['out']
    t = pd.read_csv(work/'kag_preds.tsv', sep='\t')
    assert o['written'] == 2 and list(t.columns[:5]) == ['id', 'source', 'text', 'label', 'probability'] and t.label.tolist() == ['positive', 'negative']
    assert t.id.tolist() == [7, 8] and 'review' not in t.columns   # the CSV's own columns first (a submission's id), its text once
    before = (work/'kag.csv').read_bytes()   # never over a file the texts come from
    assert 'is the file the rows come from' in _fails('predict', out, work/'kag.csv', '--out', work/'kag.csv') and (work/'kag.csv').read_bytes() == before
    (work/'empty').mkdir(); assert 'no texts in it (a text is a .txt file)' in _fails('predict', out, work/'empty')
    # evaluate: the validation rows (the card remembers --valid-col)
    e = run_json('text', 'evaluate', out, toy)
    assert e['split'] == 'valid' and e['n'] == 6 and e['accuracy'] == r['accuracy']
    assert sum(map(sum, e['confusion_matrix'])) == 6 and e['classes'] == ['negative', 'positive']


def test_evaluate_a_folder_of_class_folders_and_of_one_class(logreg_model, work):
    "Scoring takes what a user holds out: an IMDB-style folder's test/ itself (<class>/*.txt), and texts of one class."
    out, _ = logreg_model
    texts = {'positive': ['a joy to watch, funny and warm', 'superb direction, great music', 'great fun from start to finish'],
             'negative': ['a boring, pointless film', 'awful direction, annoying music']}
    for lbl, ts in texts.items():
        for i, t in enumerate(ts): (work/'held'/'test'/lbl).mkdir(parents=True, exist_ok=True); (work/'held'/'test'/lbl/f'{i}.txt').write_text(t)
    e = run_json('text', 'evaluate', out, work/'held'/'test')
    assert e['n'] == 5 and e['split'] == 'all' and sum(map(sum, e['confusion_matrix'])) == 5 and e['accuracy'] >= 0.8
    assert e['baseline']['accuracy'] in {0.4, 0.6} and 'training_data_note' not in e   # the majority class at training, on these 5
    shutil.copytree(work/'held'/'test'/'positive', work/'held1'/'positive')
    e = run_json('text', 'evaluate', out, work/'held1')   # one class: scored, not refused
    assert e['n'] == 3 and [sum(r) for r in e['confusion_matrix']] == [0, 3]
    assert 'no <class>/*.txt files in it' in _fails('evaluate', out, work/'held1'/'positive')


def test_minilm_tiny_fine_tune_and_fresh_process_predict(imdb_small, work, env):
    out = work/'m_minilm'
    r = run_json('text', 'train', imdb_small, '--valid-col', 'is_valid', '--epochs', '1', '--max-len', '48',
                 '--bs', '8', '--out', out, env={**env, 'FASTXFER_DATA_DIR': str(work/'data_minilm')})  # its probe's cache apart
    assert len(list((work/'data_minilm'/'cache'/'text_embeddings').glob('*.npy'))) == 1   # the probe's training embeddings
    assert r['model'] == 'minilm' and r['n'] == 20 and 0 <= r['accuracy'] <= 1 and r['train_seconds'] > 0
    card = json.loads((out/'card.json').read_text())
    assert card['model'] == 'minilm' and card['max_len'] == 48 and card['hparams']['lr'] == 3e-3
    assert card['window'] == 128 and card['stride'] == 1.0
    assert card['hparams']['lr_from'] == 'default' and card['hparams']['probe_C'] > 0
    assert len(card['history']) == 1       # the linear probe, then 1 fine-tuning epoch
    assert card['precision'] in ('bf16', 'fp32')
    p = run_json('text', 'predict', out, 'a wonderful, moving film', fresh=True)['predictions'][0]
    assert p['label'] in ('positive', 'negative') and set(p['probs']) == {'positive', 'negative'}
    # the default blends the encoder with the bag-of-words model: 70% / 30%, in a fresh process too
    assert card['bow']['weight'] == 0.3 and card['bow']['file'] == 'bow.json' and {'bow.json', 'bow.safetensors'} <= set(card['files'])
    assert card['format'] == 2 and not [f for f in card['files'] if f.endswith('.pkl')]   # no pickle written
    assert 0 <= card['bow']['valid_accuracy'] <= 1 and 0 <= card['bow']['minilm_valid_accuracy'] <= 1
    import numpy as np
    from fastxfer.model_folder import ModelFolder
    from fastxfer.text import TextPredictor
    from fastxfer.text.bow import NBLogReg
    pred = TextPredictor(ModelFolder(out))
    texts = ['a wonderful, moving film', 'dull and far too long', 'word ' * 300]
    blended = pred.predict_probs(texts)[0]
    pred.bow = None
    alone = pred.predict_probs(texts)[0]
    bow = NBLogReg.load(out/'bow.json').predict_proba(texts)
    assert np.allclose(blended, 0.7*alone + 0.3*bow, atol=1e-5) and not np.allclose(blended, alone, atol=1e-3)
    i = pred.classes.index('positive')
    assert abs(p['probs']['positive'] - blended[0, i]) < 1e-4      # the fresh process blended the same way
    code = ("import sys\nfrom fastxfer.model_folder import load_model\nload_model(sys.argv[1]).predict(['a film'])\n"
            "print(sorted(m for m in ('skops', 'transformers') if m in sys.modules))")
    r2 = subprocess.run([sys.executable, '-c', code, str(out)], capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0 and r2.stdout.split() == ['[]'], r2.stdout + r2.stderr   # the bag of words is read as JSON, scored in NumPy
    # the accuracy in the report is the blend's, scored on the validation texts
    v = pd.read_csv(imdb_small); v = v[v.is_valid]
    assert abs(r['accuracy'] - TextPredictor(ModelFolder(out)).evaluate(v.text.tolist(), v.label.tolist())['accuracy']) < 1e-9
    # a folder whose card names a missing bow.json says so
    import shutil
    broken = work/'m_minilm_broken'; shutil.copytree(out, broken); (broken/'bow.json').unlink()
    e = run_cli('text', 'predict', broken, 'a film', check=2)
    assert 'bow.json' in e.stderr and 'missing' in e.stderr


def test_minilm_no_bow_is_the_encoder_alone(toy, work, env):
    out = work/'m_minilm_nobow'
    r = run_json('text', 'train', toy, '--valid-col', 'is_valid', '--epochs', '1', '--max-len', '32', '--bs', '8', '--no-bow',
                 '--out', out, env=env)
    card = json.loads((out/'card.json').read_text())
    assert 'bow' not in card and not (out/'bow.json').exists() and r['bow'] is None
    p = run_json('text', 'predict', out, 'a joy to watch')['predictions'][0]
    assert set(p['probs']) == {'negative', 'positive'}


def test_awd_lstm_tiny_from_random_weights(toy, work, env):
    out = work/'m_awd'
    r = run_cli('text', 'train', toy, '--valid-col', 'is_valid', '--model', 'awd_lstm', '--epochs', '1', '--max-len', '32',
                '--bs', '8', '--lr', 'auto', '--out', out, '--json', env={**env, 'FASTXFER_OFFLINE': '1'}, check=0)
    res = json.loads(r.stdout)
    assert res['model'] == 'awd_lstm' and res['pretrained'] is False and res['n'] == 6
    assert 'starting from RANDOM weights' in r.stderr
    card = json.loads((out/'card.json').read_text())
    assert card['model'] == 'awd_lstm' and {'awd.json', 'awd.safetensors'} <= set(card['files']) and card['pretrained'] is False
    assert card['format'] == 2 and not [f for f in card['files'] if f.endswith('.pkl')]   # no pickled learner
    assert card['hparams']['lr_from'] == 'lr finder' and 'plots/lr_find.png' in card['files'] and 'lr finder' in r.stderr
    p = run_json('text', 'predict', out, 'a joy to watch', 'word ' * 60)['predictions']
    assert p[1]['truncated'] and not p[0]['truncated'] and set(p[0]['probs']) == {'negative', 'positive'}


def test_aug_eda_adds_training_texts_and_embeddings_are_cached(toy, work, env, logreg_model):
    try: import fastxfer.augment.text as at; assert hasattr(at, 'eda')
    except (ImportError, AssertionError): pytest.skip('fastxfer.augment.text.eda not available')
    assert len(list((work/'data'/'cache'/'text_embeddings').glob('*.npy'))) == 2   # from logreg_model: train, valid
    r = run_cli('text', 'train', toy, '--valid-col', 'is_valid', '--model', 'embed-logreg', '--max-len', '64',
                '--aug', 'eda', '--n-aug', '2', '--out', work/'m_eda', '--json', env=env, check=0)
    res = json.loads(r.stdout)
    assert res['n_train'] == 14*3 and res['n_calib'] == 4 and res['n'] == 6   # 4 of the 18 training texts calibrate; the other 14 get two copies each
    assert 'from the cache' in r.stderr          # the validation texts were embedded before


# ---- the Done-when commands on the real IMDB sample (slow) ------------------------------------------------------

@pytest.mark.slow
def test_done_when_imdb_sample_minilm(work, env):
    csv = shared_or_skip(IMDB)
    out = work/'imdb'
    r = run_json('text', 'train', csv, '--text-col', 'text', '--label-col', 'label', '--valid-col', 'is_valid',
                 '--out', out, env=env, timeout=3600)
    assert r['accuracy'] >= 0.85 and r['n'] == 200, r
    p = run_json('text', 'predict', out, 'a wonderful, moving film')['predictions'][0]
    assert p['label'] == 'positive'


@pytest.mark.slow
def test_imdb_sample_embed_logreg(work, env):
    csv = shared_or_skip(IMDB)
    r = run_json('text', 'train', csv, '--valid-col', 'is_valid', '--model', 'embed-logreg', '--out', work/'imdb_lr', env=env)
    assert r['accuracy'] >= 0.7, r


# ---- folders of an earlier release (pickles) are converted once and predict the same -----------------------------

OLD_TEXT = """
import json, os, sys
os.environ['FASTXFER_OFFLINE'] = '1'
from fastxfer.text import train_text
from fastxfer.model_folder import load_model
toy, models, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
train_text(toy, out=f'{models}/awd', valid_col='is_valid', model='awd_lstm', epochs=1, max_len=32, bs=8)
train_text(toy, out=f'{models}/minilm', valid_col='is_valid', model='minilm', epochs=1, max_len=32, bs=8)
print(json.dumps({m: load_model(f'{models}/{m}').predict_probs(texts)[0].tolist() for m in ('awd', 'minilm')}))
"""

@pytest.mark.slow   # 25 s: training two text models with the earlier release; the awd_lstm conversion is also checked by 10b's hidden test
def test_upgrade_converts_an_earlier_release_and_predicts_the_same(tmp_path, toy):
    import numpy as np
    from conftest import old_release, run_old
    from fastxfer.core import FastxferError
    from fastxfer.model_folder import load_model
    pkg = old_release(tmp_path/'release')
    texts = ['a wonderful, moving film', 'boring, dull and pointless. ' * 20, 'zebra quantum', 'I LOVED it!!!', 'meh']
    old = run_old(pkg, OLD_TEXT, toy, tmp_path/'models', json.dumps(texts))
    for m, pickle_file, new_files in (('awd', 'model.pkl', ['awd.json', 'awd.safetensors']), ('minilm', 'bow.pkl', ['bow.json', 'bow.safetensors'])):
        d = tmp_path/'models'/m
        assert (d/pickle_file).is_file()
        with pytest.raises(FastxferError, match='fastxfer upgrade'): load_model(d).predict_probs(texts)
        u = run_json('upgrade', d, '--trust')
        assert u['upgraded'] and u['removed'] == [pickle_file] and sorted(u['wrote']) == new_files
        c = run_json('check', d)
        assert c['safe'] and c['pickles'] == [] and c['format'] == 2, c
        if m == 'minilm': assert json.loads((d/'card.json').read_text())['bow']['file'] == 'bow.json'
        after = load_model(d).predict_probs(texts)[0]
        assert np.abs(after - np.array(old[m])).max() < 1e-5, (m, after, old[m])


# ---- adversarial training (FGM) and the black-box robustness check ------------------------------------------

def test_fgm_moves_the_embeddings_where_the_loss_rises_most():
    "On the packaged MiniLM with a random head: FGM's move of the token embeddings raises the loss more than a random move of the same length."
    import torch, torch.nn.functional as F
    from fastxfer.augment.adversarial import l2_step
    from fastxfer.text.models import TransformerClassifier, get_encoder
    tok, enc, _ = get_encoder()
    torch.manual_seed(0)
    m = TransformerClassifier(enc, 2, pad_id=tok.pad_token_id).eval()
    ids = torch.as_tensor(tok(['a wonderful, moving film', 'dull and far too long', 'the best acting of the year', 'I want my money back'],
                              padding=True)['input_ids'])
    y = torch.tensor([1, 0, 1, 0])
    emb, seen = enc.get_input_embeddings(), {}
    def loss(delta=None):
        h = emb.register_forward_hook(lambda mod, i, o: (seen.setdefault('o', o), o + delta)[1] if delta is not None else seen.update(o=o))
        try: return F.cross_entropy(m(ids), y)
        finally: h.remove()
    clean = loss()
    g = torch.autograd.grad(clean, seen['o'])[0]
    with torch.no_grad():
        up = loss(l2_step(g, 1.)); rand = loss(l2_step(torch.randn_like(g), 1.))
    assert up > clean and up - clean > 3 * abs(rand - clean), (float(clean), float(up), float(rand))


def test_minilm_with_fgm_records_it_then_text_robustness(imdb_small, work, env):
    out = work/'m_fgm'
    r = run_json('text', 'train', imdb_small, '--valid-col', 'is_valid', '--epochs', '1', '--max-len', '32', '--bs', '8', '--no-bow',
                 '--calib-pct', '0', '--adversarial', 'fgm', '--eps', '0.5', '--out', out, env={**env, 'FASTXFER_DATA_DIR': str(work/'data_fgm')})
    card = json.loads((out/'card.json').read_text())
    assert card['adversarial'] == {'attack': 'fgm', 'eps': 0.5, 'on': 'token embeddings', 'ratio': 1.0} and 0 <= r['accuracy'] <= 1
    rob = run_json('text', 'robustness', out, imdb_small, '--ops', 'ty,rs,rd', '--alpha', '0.3', '--out', work/'rob')
    assert rob['n'] == 20 and rob['split'] == 'valid' and [p['op'] for p in rob['perturbations']] == ['ty', 'rs', 'rd']
    assert rob['black_box'] and rob['adversarial_training']['eps'] == 0.5 and (work/'rob'/'robustness.png').read_bytes()[:4] == b'\x89PNG'
    human = run_cli('text', 'robustness', out, imdb_small, '--ops', 'ty', '--out', work/'rob', check=0).stdout
    assert 'black-box' in human and 'typos' in human and 'trained with FGM at eps 0.5' in human, human


def test_fgm_and_robustness_bad_input(toy, logreg_model, work, env):
    assert '--adversarial fgm needs --model minilm (embed-logreg trains no encoder' in _fails('train', toy, '--model', 'embed-logreg', '--adversarial', 'fgm', '--out', work/'y', env=env)
    assert '--eps 0.0: give the L2 length' in _fails('train', toy, '--adversarial', 'fgm', '--eps', '0', '--out', work/'y', env=env)
    assert '--eps 50.0' in _fails('train', toy, '--adversarial', 'fgm', '--eps', '50', '--out', work/'y', env=env)
    assert not (work/'y').exists()
    out, _ = logreg_model
    assert 'choose from ty, sr, ri, rs, rd' in _fails('robustness', out, toy, '--ops', 'ty,zz', '--out', work/'r2')
    assert '--alpha 1.5' in _fails('robustness', out, toy, '--alpha', '1.5', '--out', work/'r2')
    assert 'no such file' in _fails('robustness', out, work/'none.csv', '--out', work/'r2')
    assert not (work/'r2').exists()


def test_predicting_runs_onnx_without_transformers(logreg_model, toy):
    "A folder's network is also written as model.onnx, which predicting runs on a CPU: no transformers, the PyTorch network's probabilities, every file readable by others."
    import numpy as np
    from fastxfer.model_folder import load_model
    out, _ = logreg_model
    card = json.loads((out/'card.json').read_text())
    assert card['onnx']['exported'] and card['onnx']['max_abs_diff'] < 1e-3 and 'model.onnx' in card['files']
    umask = os.umask(0); os.umask(umask)   # every file has the mode a new file gets (transformers writes its weights 0600)
    assert {f.stat().st_mode & 0o777 for f in out.rglob('*') if f.is_file()} == {0o666 & ~umask}
    texts = ['a wonderful, moving film', 'boring, dull and pointless. ' * 40, 'Café naïve, ünïcödé and 東京', '']
    code = ("import json, sys\nfrom fastxfer.model_folder import load_model\np = load_model(sys.argv[1])\n"
            "print(json.dumps(dict(probs=p.predict_probs(json.loads(sys.argv[2]))[0].tolist(), onnx=p.sessions is not None,\n"
            "                      transformers='transformers' in sys.modules)))")
    r = subprocess.run([sys.executable, '-c', code, str(out), json.dumps(texts)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got['onnx'] and not got['transformers']
    p = load_model(out); p.load_networks()   # the PyTorch network, as on a GPU
    assert p.sessions is None and np.allclose(got['probs'], p.predict_probs(texts)[0], atol=1e-4)
    from fastxfer.text.models import Windowing
    q = load_model(out)
    for x in (p, q): x.max_len, x.win = 400, Windowing.for_tokenizer(x.tok, 32)   # several windows a text, averaged
    assert q.sessions and np.allclose(q.predict_probs(texts)[0], p.predict_probs(texts)[0], atol=1e-4)
    import fastxfer.text.models as tm
    r = load_model(out); few = r.predict_probs(texts)[0]
    assert getattr(r, 'models', None) is None   # a few windows: ONNX alone
    old, tm.BULK_WINDOWS = tm.BULK_WINDOWS, len(texts)
    try: bulk = r.predict_probs(texts)[0]   # as many windows as that: the PyTorch networks, loaded once
    finally: tm.BULK_WINDOWS = old
    assert len(r.models) == 1 and r.sessions and np.allclose(bulk, few, atol=1e-4) and not np.array_equal(bulk, few)


def test_json_tokenizer_gives_the_transformers_tokens():
    "The tokenizer predicting reads without transformers cuts the IMDB sample's reviews into the same token ids."
    from transformers import AutoTokenizer
    from fastxfer.text.models import JsonTokenizer, encoder_source, tokenize_texts
    texts = pd.read_csv(shared_or_skip(IMDB)).text.tolist()
    a, b = AutoTokenizer.from_pretrained(encoder_source('minilm')), JsonTokenizer(encoder_source('minilm'))
    assert tokenize_texts(a, texts, None) == tokenize_texts(b, texts, None) and b.pad_token_id == a.pad_token_id
    assert max(map(len, tokenize_texts(b, texts, None)[0])) > 512   # long reviews stay whole (max_len cuts them later)


def test_bag_of_words_scores_as_scikit_learn():
    "The bag-of-words model, fitted on the IMDB sample, reads each review's n-grams and scores them as scikit-learn's vectorizer and regressions do."
    import numpy as np
    from fastxfer.text.bow import NBLogReg, sklearn_proba
    df = pd.read_csv(shared_or_skip(IMDB))
    tr, va = df[~df.is_valid], df[df.is_valid]
    m = NBLogReg().fit(tr.text.tolist(), (tr.label == 'positive').astype(int).tolist(), 2)
    vec, models = m.sklearn
    texts = va.text.tolist() + ['', 'Zebra!! quantum?']
    want = vec.transform(texts)
    assert (m.features(texts) != want).nnz == 0 and want.nnz > 50_000
    assert np.abs(m.predict_proba(texts) - sklearn_proba(vec, models, m.ratios, 2, texts)).max() < 1e-6
