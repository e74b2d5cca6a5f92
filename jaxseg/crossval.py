"""k-fold cross-validation: every fold, the pooled out-of-fold scores, the fold ensemble.

    python -m jaxseg.crossval --config=configs/brats21_regions_sample.py \
        --workdir=runs/cv [--folds=5] [--config.*=...]

For fold i of K (`data.folds`, `data.fold`: case-level, seeded, or a
datalist's "fold" keys) an ordinary run trains in `<workdir>/fold_<i>/`
(resumable; a finished fold is read, not retrained). Then:

  oof_cases.csv, oof_summary.json, oof_dice_box.png
      every case scored once, by the fold that did not train on it (the
      out-of-fold predictions, `fold_<i>/eval/val_pred/`), pooled;
  postprocess.json
      with `postprocess.choose_on_validation`: the post-processing
      thresholds chosen on all out-of-fold predictions by mean lesion-wise
      Dice (the folds themselves do not choose), applied to the pooled
      scores and to the ensemble;
  ensemble_test_cases.csv, ensemble_test_summary.json, ...
      when the split holds test cases (the test share of `data.split`, or a
      datalist's test list, held out of every fold): the K fold models as
      one ensemble (mean probabilities), scored on them;
  crossval.md / crossval.json
      per fold and pooled: cases, best epoch, mean Dice and lesion-wise Dice.

Every fold is exported to `fold_<i>/model/` with the pooled
post-processing; predict with the ensemble from those folders alone:
`python -m jaxseg.predict -i IN -o OUT -m <workdir>/fold_0/model -m <workdir>/fold_1/model ...`
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections

from jaxseg import cli
from jaxseg import config_base
from jaxseg import config_flags
from jaxseg import model_folder
from jaxseg import parallel
from jaxseg import plots
from jaxseg.scoring import postprocess
from jaxseg.data import dataset
from jaxseg.data import sources
from jaxseg.errors import InputError
from jaxseg.scoring import cases as case_scores
from jaxseg import evaluation
from jaxseg import modes

FLAGS = flags.FLAGS
SCORES = ('dice', 'lesion_dice')


def define_flags() -> None:
  """The command line's flags (only when run as a program)."""
  config_flags.define_config()
  flags.DEFINE_string('workdir', None, 'Folder for the folds and the tables.')
  flags.DEFINE_integer('folds', None, 'Number of folds (default: the '
                       "config's data.folds).")
  flags.mark_flags_as_required(['config', 'workdir'])


def fold_config(config, folds: int, fold: int) -> ml_collections.ConfigDict:
  """The config of fold `fold`: data.folds/fold set, choosing left to the pool."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.data.folds, out.data.fold = folds, fold
  out.postprocess.choose_on_validation = False
  return out


def fold_dir(workdir: str, fold: int) -> str:
  return os.path.join(workdir, f'fold_{fold}')


def run_fold(config, workdir: str) -> dict:
  """Trains (or resumes) one fold; a finished fold's results.json is read."""
  path = os.path.join(workdir, 'results.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return modes.train(config, workdir)


def _read_rows(path: str) -> list[dict]:
  """The rows of an evaluation CSV, numbers as floats."""
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  return [{k: (v if k == 'case' else float(v)) for k, v in r.items()}
          for r in rows]


def _mean(summary: dict, key: str):
  return summary.get(key, {}).get('mean')


def _fmt(value) -> str:
  return '-' if value is None else (f'{value:.4f}' if isinstance(value, float)
                                    else str(value))


def table(folds: list[dict], pooled: dict, ensemble: dict | None,
          regions) -> str:
  """The Markdown table: one row per fold, the pooled row, the ensemble row."""
  columns = [f'{s}_{r}' for s in SCORES for r in regions]
  head = ['', 'cases', 'best epoch'] + [c.replace('_', ' ') for c in columns]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in folds + [pooled] + ([ensemble] if ensemble else []):
    values = [row['name'], row['cases'], row.get('best_epoch')]
    values += [_mean(row['summary'], c) for c in columns]
    lines.append('| ' + ' | '.join(_fmt(v) for v in values) + ' |')
  return '\n'.join(lines) + '\n'


def run_crossval(config, workdir: str, folds: int | None = None) -> dict:
  """Runs every fold, then the pooled out-of-fold table and the test ensemble."""
  folds = folds or config.data.get('folds') or 0
  if folds < 2:
    raise InputError('--folds', f'cross-validation needs at least 2 folds, '
                     f'got {folds}: give --folds=5 or --config.data.folds=5')
  dataset.check_folds(folds, 0)
  # Bad keys and values stop before the first fold trains.
  config_base.check_config(config)
  dataset.check_config(fold_config(config, folds, 0).data)
  os.makedirs(workdir, exist_ok=True)
  fold_rows, oof_rows, oof_pairs = [], [], []
  for i in range(folds):
    t0 = time.time()
    logging.info('fold %d/%d', i + 1, folds)
    results = run_fold(fold_config(config, folds, i), fold_dir(workdir, i))
    logging.info('fold %d done in %.0f s', i, time.time() - t0)
    rows = _read_rows(os.path.join(fold_dir(workdir, i), 'eval',
                                   'val_cases.csv'))
    fold_rows.append(dict(name=f'fold {i}', cases=len(rows),
                          best_epoch=results.get('best_epoch'),
                          summary=case_scores.summarize_rows(rows)))
    oof_rows += rows
    oof_pairs.append((i, [r['case'] for r in rows]))

  info = dataset.prepare(fold_config(config, folds, 0).data, fold_dir(workdir, 0),
                         config.seed)
  cases = {c.case_id: c for c in sources.discover_cases(
      info['root'], config.data.get('formats'))}
  settings = postprocess.settings_of(config.postprocess)
  oof_result = None
  if config.postprocess.choose_on_validation:
    settings, chosen_table, oof_result = _choose_on_oof(config, workdir,
                                                        oof_pairs, cases)
    if jax.process_index() == 0:
      postprocess.write_chosen(workdir, settings, chosen_table, len(oof_rows))
    oof_rows = oof_result.rows
  pooled = dict(name='out-of-fold (pooled)', cases=len(oof_rows),
                summary=case_scores.summarize_rows(oof_rows))
  if jax.process_index() == 0:
    if oof_result is None:
      case_scores.write_table(oof_rows, pooled['summary'],
                           os.path.join(workdir, 'oof_cases.csv'),
                           os.path.join(workdir, 'oof_summary.json'))
      plots.plot_score_box(oof_rows, os.path.join(workdir, 'oof_dice_box.png'),
                           score='dice')
    else:
      evaluation.write_split(workdir, 'oof', oof_result, pooled['summary'])

  # Every fold as a model folder carrying the pooled post-processing.
  exported = [model_folder.export(fold_config(config, folds, i),
                                  fold_dir(workdir, i), postprocess=settings)
              for i in range(folds)]
  ensemble = None
  test_ids = info['split'].get('test') or []
  if test_ids:
    mesh = parallel.make_mesh(config.get('mesh'))
    members = [model_folder.load(path, mesh) for path in exported]
    result = evaluation.evaluate_split(
        members, [cases[i] for i in test_ids], mesh,
        png_dir=os.path.join(workdir, 'ensemble_test_cases'), settings=settings)
    summary = case_scores.summarize_rows(result.rows)
    if jax.process_index() == 0:
      evaluation.write_split(workdir, 'ensemble_test', result, summary)
    ensemble = dict(name=f'ensemble of {folds} on test', cases=len(result.rows),
                    summary=summary)

  regions = sorted({k.rsplit('_', 1)[1] for k in pooled['summary']
                    if k.startswith('dice_')},
                   key=lambda r: ('WT', 'TC', 'ET').index(r))
  markdown = table(fold_rows, pooled, ensemble, regions)
  out = dict(folds=fold_rows, pooled=pooled, ensemble=ensemble,
             postprocess=settings, models=exported)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'crossval.md'), 'w') as f:
      f.write(markdown)
    with open(os.path.join(workdir, 'crossval.json'), 'w') as f:
      json.dump(out, f, indent=1)
  print(markdown)
  return out


def _choose_on_oof(config, workdir: str, oof_pairs, cases):
  """Thresholds chosen on every fold's validation predictions, pooled."""
  # The pooled raw predictions live in each fold's eval/val_pred/.
  pooled_dir = os.path.join(workdir, 'oof_pred')
  os.makedirs(pooled_dir, exist_ok=True)
  ordered = []
  for i, ids in oof_pairs:
    for case_id in ids:
      name = f'{case_id}_seg.nii.gz'
      target = os.path.join(pooled_dir, name)
      if not os.path.exists(target):
        shutil.copyfile(os.path.join(fold_dir(workdir, i), 'eval', 'val_pred',
                                     name), target)
      ordered.append(cases[case_id])
  settings, chosen_table = evaluation.choose_postprocessing(ordered, pooled_dir,
                                                          config)
  result = evaluation.rescore(ordered, pooled_dir, config, settings)
  return settings, chosen_table, result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.setup()
  def start():
    parallel.initialize(None, None, None)
    return run_crossval(FLAGS.config, FLAGS.workdir, FLAGS.folds)
  cli.run_in_workdir(FLAGS.workdir, start)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
