"""Leave-one-season-out evaluation of the NFL models on the shared 2002-2024 standings (736 team-seasons).

    .venv/bin/python bench/nfl_evaluate.py [--variants default,layers16,pyth] [--seeds 42,1]

For each variant and seed: LOSO accuracy, log loss, Brier and calibration error of the fastai tabular_learner and of
the logistic-regression baseline, the sign-of-PD baseline, and the wall time of the 23 tabular_learner fits.
Logs go to stderr; the last line of stdout is one JSON object (with the load average: the machine may be shared)."""
import argparse, json, os, sys, time
from datetime import datetime, timezone

VARIANTS = {'default': dict(features=None, layers=None), 'layers16': dict(features=None, layers=[16]),
            'pyth': dict(features='pyth', layers=None), 'mov_pyth': dict(features='MoV,pyth', layers=None)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--variants', default='default,layers16')
    ap.add_argument('--seeds', default='42')
    args = ap.parse_args()
    from fastxfer.core import shared_data, set_quiet
    from fastxfer import nfl
    set_quiet(True)
    csv = shared_data('nfl/standings.csv')
    if csv is None:
        print(json.dumps({'skipped': 'shared data nfl/standings.csv not found'})); return
    df = nfl.read_standings_csv(csv)
    runs, load0, t00 = [], os.getloadavg(), time.time()
    for v in args.variants.split(','):
        for seed in [int(s) for s in args.seeds.split(',')]:
            t0 = time.time()
            ev = nfl.evaluate_models(df, nfl.parse_features(VARIANTS[v]['features']), seed=seed, layers=VARIANTS[v]['layers'])
            row = dict(variant=v, seed=seed, features=ev['features'], layers=VARIANTS[v]['layers'] or [],
                       seconds=round(time.time() - t0, 1), better=ev['better'],
                       **{m: dict(accuracy=round(r['accuracy'], 4), log_loss=round(r['log_loss'], 4), brier=round(r['brier'], 4),
                                  ece=round(r['calibration']['ece'], 4), fit_seconds=r['fit_seconds'])
                          for m, r in ev['models'].items()})
            print(json.dumps(row), file=sys.stderr, flush=True)
            runs.append(row)
    print(json.dumps(dict(bench='nfl_evaluate', data=str(csv), n_rows=len(df), method='leave-one-season-out (23 folds)',
                          pd_sign_accuracy=round(float(((df.PD > 0) == (df.winning_season == 1)).mean()), 4), runs=runs,
                          total_seconds=round(time.time() - t00, 1), loadavg_start=load0, loadavg_end=os.getloadavg(),
                          cpu_count=os.cpu_count(), time=datetime.now(timezone.utc).isoformat(timespec='seconds'))))


if __name__ == '__main__':
    main()
