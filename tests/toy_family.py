"""A toy family that lives outside the package: it proves the family contract is real.

`FASTXFER_PLUGINS=toy_family` (with this folder on `PYTHONPATH`) registers it; then, with no edit to
`fastxfer.serve`, `fastxfer.widgets` or `fastxfer.cli`, it is trained, evaluated and predicted from the command
line, served over REST with its own typed schema, shown as a Gradio tab and driven in the notebook widget.

The model: one threshold on a number `x`, chosen on the training rows to maximise accuracy ('high' above it).
"""
import json, math
from pathlib import Path

import pandas as pd

from fastxfer.core import FastxferError
from fastxfer.family import Family, TrainReport, EvalReport, register_family, from_settings
from fastxfer.inputs import Column, RowInput
from fastxfer.model_folder import Predictor, model_writer, load_model, data_fingerprint

CLASSES = ['low', 'high']


def read_rows(path, x_col='x', label_col='label') -> pd.DataFrame:
    p = Path(path)
    if not p.is_file(): raise FastxferError(f'{path}: no such file')
    df = pd.read_csv(p)
    missing = [c for c in (x_col, label_col) if c not in df.columns]
    if missing: raise FastxferError(f'{path}: no column {", ".join(missing)} (columns: {", ".join(map(str, df.columns))})')
    bad = sorted(set(df[label_col].astype(str)) - set(CLASSES))
    if bad: raise FastxferError(f'{path}: labels must be low or high, found {", ".join(bad[:5])}')
    return df


class ThresholdPredictor(Predictor):
    "'high' when x is above the learned threshold; the probability rises smoothly across it."
    input_type = 'tabular'
    @property
    def input(self): return RowInput([Column('x', description='the number to classify', example=float(self.card['threshold']) + 1)], name='ToyRow')
    def predict(self, items, **kw):
        t, s = float(self.card['threshold']), float(self.card['scale'])
        out = []
        for it in items:
            z = max(-60.0, min(60.0, (float(it['x']) - t) / s))   # clipped: no overflow for huge x
            p = 1 / (1 + math.exp(-z))
            out.append(dict(label=CLASSES[int(p > 0.5)], probs={'low': 1 - p, 'high': p}, threshold=t))
        return out
    def examples(self): return [{'x': round(float(self.card['threshold']) - 2, 3)}, {'x': round(float(self.card['threshold']) + 2, 3)}]
    def headline(self, pred): return f"x is {'above' if pred['label'] == 'high' else 'below'} the threshold {pred['threshold']:g}"
    def describe(self): return {'rule': f"x > {self.card['threshold']:g}"}


@register_family
class ToyFamily(Family):
    "Thresholds on one number."
    name, title, help, predictor = 'toy', 'Toy', 'a one-number threshold classifier (a test plug-in)', ThresholdPredictor
    extra_verbs = ('rule',)
    data_parallel = True   # `--processes N` from the contract (each process fits the same threshold; rank 0 writes)

    def train(self, data:str, # a CSV with a number column and a low/high label column
              *, out:str, # the model folder to write
              x_col:str='x', # the number column
              label_col:str='label', # the label column
              scale:float=0.5, # how quickly the probability rises across the threshold
              seed:int=from_settings('seed', int), # recorded in the card (the fit is deterministic)
              ) -> dict:
        "Choose the threshold on x with the best training accuracy and write the model folder."
        df = read_rows(data, x_col, label_col)
        if len(df) < 2: raise FastxferError(f'{data}: need at least 2 rows, found {len(df)}')
        xs, ys = df[x_col].astype(float).tolist(), (df[label_col].astype(str) == 'high').tolist()
        cands = sorted(set(xs))
        best = max(cands, key=lambda t: sum((x > t) == y for x, y in zip(xs, ys)))
        acc = sum((x > best) == y for x, y in zip(xs, ys)) / len(xs)
        base = max(sum(ys), len(ys) - sum(ys)) / len(ys)
        with model_writer(out, kind='toy', predictor=f'{ThresholdPredictor.__module__}.ThresholdPredictor') as w:
            w.card.update(classes=CLASSES, threshold=best, scale=scale, seed=seed, metrics={'accuracy': acc},
                          baseline={'accuracy': base}, data_fingerprint=data_fingerprint(zip(xs, ys)), train_seconds=0.0)
        return TrainReport('toy', str(out), CLASSES, {'accuracy': acc}, 0.0, baseline={'accuracy': base},
                           extra={'threshold': best, 'seed': seed}).to_dict()

    def evaluate(self, model_dir:str, # a toy model folder
                 data:str, # a labelled CSV
                 x_col:str='x', # the number column
                 label_col:str='label', # the label column
                 ) -> dict:
        "Accuracy of a saved model on a labelled CSV, with the majority-class baseline."
        p = load_model(model_dir)
        df = read_rows(data, x_col, label_col)
        preds = p.predict([{'x': x} for x in df[x_col].astype(float)])
        ys = df[label_col].astype(str).tolist()
        acc = sum(pr['label'] == y for pr, y in zip(preds, ys)) / len(ys)
        base = max(ys.count('high'), ys.count('low')) / len(ys)
        return EvalReport('toy', str(model_dir), len(ys), {'accuracy': acc}, {'accuracy': base}).to_dict()

    def rule(self, model_dir:str, # a toy model folder
             ) -> dict:
        "The rule the model learned."
        card = json.loads((Path(model_dir)/'card.json').read_text())
        return {'rule': f"x > {card['threshold']:g}", 'threshold': card['threshold']}
