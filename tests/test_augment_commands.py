"""`fastxfer augment image|text|audio|table`: every augmentation from the command line, on real small inputs, and
what bad input gets (exit 2, nothing written)."""
import csv, json

import numpy as np, pytest
from PIL import Image
from scipy.io import wavfile

from conftest import run_cli


def run_json(*args) -> dict:
    return json.loads(run_cli('augment', *args, '--json', check=0).stdout)


def test_augment_a_folder_of_images(tmp_path):
    (tmp_path/'in').mkdir()
    for name, rgb in (('red', (200, 40, 40)), ('blue', (40, 40, 200))):
        a = np.random.default_rng(0).integers(0, 255, (80, 120, 3)).astype(np.uint8); a[20:60, 30:90] = rgb
        Image.fromarray(a).save(tmp_path/'in'/f'{name}.png')
    r = run_json('image', tmp_path/'in', '--out', tmp_path/'out', '--aug', 'heavy', '--n', 3, '--size', 64)
    assert r['inputs'] == 2 and len(r['written']) == 6 and Image.open(tmp_path/'out'/'red_aug3.png').size == (64, 64)
    copies = [np.asarray(Image.open(tmp_path/'out'/f'red_aug{i}.png')) for i in (1, 2, 3)]
    assert not np.array_equal(copies[0], copies[1])                  # each copy augmented its own way
    assert Image.open(tmp_path/'out'/'preview.png').size[0] > 300


def test_augment_texts_keeps_their_labels(tmp_path):
    with open(tmp_path/'t.csv', 'w', newline='') as f:
        csv.writer(f).writerows([('text', 'label'), ('a wonderful and moving film with great acting', 'pos'), ('dull, slow and far too long', 'neg')])
    r = run_json('text', tmp_path/'t.csv', '--out', tmp_path/'t_eda.csv', '--ops', 'rs,rd', '--n', 2, '--alpha', 0.3)
    rows = list(csv.DictReader(open(tmp_path/'t_eda.csv')))
    assert len(rows) == 6 and [x['label'] for x in rows] == ['pos', 'neg', 'pos', 'pos', 'neg', 'neg'] and r['copies'] == 4
    assert rows[2]['text'] != rows[0]['text'] and set(rows[2]['text'].split()) <= set(rows[0]['text'].split())   # swaps and deletions only
    (tmp_path/'lines.txt').write_text('one good line of text here\nanother line of words\n')
    run_cli('augment', 'text', tmp_path/'lines.txt', '--out', tmp_path/'lines_eda.txt', '--ops', 'rs', check=0)
    assert len((tmp_path/'lines_eda.txt').read_text().splitlines()) == 4


def test_augment_a_wav_file(tmp_path):
    sr = 16000
    wavfile.write(tmp_path/'tone.wav', sr, (np.sin(2 * np.pi * 440 * np.arange(sr) / sr) * 12000).astype(np.int16))
    r = run_json('audio', tmp_path/'tone.wav', '--out', tmp_path/'out', '--n', 3, '--p', 1.0)
    assert len(r['written']) == 3 and (tmp_path/'out'/'preview.png').is_file()
    rate, y = wavfile.read(tmp_path/'out'/'tone_aug1.wav')
    assert rate == sr and len(y) == sr and not np.allclose(y, wavfile.read(tmp_path/'tone.wav')[1], atol=200)   # changed, same length


def test_augment_a_table_with_a_feature_spec(tmp_path):
    (tmp_path/'g.csv').write_text('team,PF,PA\na,300,310\nb,410,290\nc,280,350\n')
    r = run_json('table', tmp_path/'g.csv', '--out', tmp_path/'g2.csv', '--ops', 'PF-PA,log1p:PF')
    rows = list(csv.DictReader(open(tmp_path/'g2.csv')))
    assert r['rows'] == 3 and r['new_columns'] and len(rows[0]) > 3
    # Excel on Windows: ';' between cells, decimal commas, Windows-1252 (once "could not convert string to float: '3,5'")
    (tmp_path/'eu.csv').write_bytes('équipe;PF;PA\r\na;300,5;310\r\nb;410;290,25\r\n'.encode('cp1252'))
    r = run_json('table', tmp_path/'eu.csv', '--out', tmp_path/'eu2.csv', '--ops', 'PF-PA')
    rows = list(csv.DictReader(open(tmp_path/'eu2.csv', encoding='utf-8')))
    assert r['new_columns'] == ['PF-PA'] and [float(x['PF-PA']) for x in rows] == [-9.5, 119.75] and rows[0]['équipe'] == 'a'


@pytest.mark.parametrize('args,says', [
    (['image', '{d}/nothing.png'], 'no such file'),
    (['text', '{d}/t.csv', '--text-col', 'body'], "--text-col 'body'"),
    (['text', '{d}/t.csv', '--ops', 'sr,xx'], 'xx'),
    (['audio', '{d}/t.csv'], 'not a WAV file'),
    (['audio', '{d}/tone.wav', '--p', '2'], '--p 2'),
    (['table', '{d}/t.csv', '--ops', 'nosuchcol-label'], 'nosuchcol')])
def test_bad_augment_input_is_exit_2_and_writes_nothing(args, says, tmp_path):
    (tmp_path/'t.csv').write_text('text,label\nsome words here,pos\n')
    wavfile.write(tmp_path/'tone.wav', 8000, np.zeros(800, np.int16))
    r = run_cli('augment', *[a.format(d=tmp_path) for a in args], '--out', tmp_path/'out')
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('error:') and says in r.stderr, r.stderr[-500:]
    assert not (tmp_path/'out').exists()
