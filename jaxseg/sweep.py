r"""Grid runs: one base config, named variants, one comparison table.

    python -m jaxseg.sweep --config=configs/lgg_unet.py \
        --sweep=sweeps/seed003_losses_optimizers.py --workdir=runs/seed003

A sweep file defines `get_sweep()` -> list of (variant name, overrides),
where overrides map dotted config keys to values ('optimizer.name': 'sgd');
a key naming a whole section ('loss') replaces that section. Each variant
trains in `<workdir>/<name>/` exactly as `jaxseg.main` would (rerunning
resumes; a finished variant is read, not retrained), then one table
compares them:

    <workdir>/sweep.md, sweep.csv   variant, best validation Dice per volume
                                    (mean, median), epoch of convergence (the
                                    best epoch), epochs run, seconds per epoch

`--config.*` flags apply to every variant (e.g. a smaller image size).
"""

import csv
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import ml_collections

from jaxseg import config_base
from jaxseg import config_flags
from jaxseg import cli
from jaxseg import losses
from jaxseg.errors import InputError
from jaxseg import models
from jaxseg import modes

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags (defined only when run as a program, since
  jaxseg.main defines a --config of its own)."""
  config_flags.define_config(help_string='Base config file.', lock=False)
  flags.DEFINE_string('sweep', None, 'Sweep file defining get_sweep().')
  flags.DEFINE_string('workdir', None, 'Folder for the variants and the table.')
  flags.DEFINE_list('only', None, 'Check and run only these variants '
                    '(the table lists all finished ones).')
  flags.mark_flags_as_required(['config', 'sweep', 'workdir'])

COLUMNS = ('variant', 'dice_mean', 'dice_median', 'best_epoch', 'epochs_run',
           'seconds_per_epoch', 'stopped_early')


def load_sweep(path: str) -> list[tuple[str, dict]]:
  """The (name, overrides) variants of a sweep file."""
  if not os.path.isfile(path):
    raise InputError(path, 'sweep file not found')
  module = config_base.load_module(path)
  if not hasattr(module, 'get_sweep'):
    raise InputError(path, 'defines no get_sweep()')
  variants = list(module.get_sweep())
  names = [name for name, _ in variants]
  if len(set(names)) != len(names):
    raise InputError(path, f'variant names repeat: {names}')
  return variants


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict,
                    where: str) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted-key overrides; unknown keys are refused."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      if part not in node:
        raise InputError(f'{where}: {key}', f"config has no section '{part}'")
      node = node[part]
    free = parents and parents[0] in config_base.FREE_SECTIONS
    if leaf not in node and not free:
      raise InputError(f'{where}: {key}', 'unknown config key')
    if isinstance(value, dict):
      value = ml_collections.ConfigDict(value)
    with node.ignore_type():
      node[leaf] = value
  config_base.check_config(config)
  try:   # the free sections are checked by their registries
    losses.build(config.loss)
    models.from_config(config)
  except InputError as e:
    raise InputError(f'{where}: {e.where}', e.problem) from None
  return config


def run_variant(config, workdir: str) -> dict:
  """Trains (or resumes) one variant; returns its results.json contents."""
  results_path = os.path.join(workdir, 'results.json')
  if os.path.exists(results_path):
    with open(results_path) as f:
      return json.load(f)
  os.makedirs(workdir, exist_ok=True)
  return modes.train(config, workdir)


def table_row(name: str, results: dict) -> dict:
  """One table row from a variant's results.json."""
  dice = results.get('val', {}).get('per_volume', {}).get('dice_WT', {})
  epochs = results.get('epochs_run') or 0
  return dict(variant=name, dice_mean=dice.get('mean'),
              dice_median=dice.get('median'),
              best_epoch=results.get('best_epoch'), epochs_run=epochs,
              seconds_per_epoch=(results.get('train_seconds', 0.0) / epochs
                                 if epochs else None),
              stopped_early=results.get('stopped_early'))


def _fmt(value) -> str:
  if isinstance(value, float):
    return f'{value:.4f}' if value < 10 else f'{value:.1f}'
  return '-' if value is None else str(value)


def write_table(rows: list[dict], workdir: str, title: str) -> str:
  """Writes sweep.csv and sweep.md; returns the Markdown."""
  with open(os.path.join(workdir, 'sweep.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  lines = [f'### {title}', '',
           '| variant | val Dice mean (per volume) | median | best epoch | '
           'epochs run | s / epoch |', '|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['variant']} | {_fmt(r['dice_mean'])} | "
                 f"{_fmt(r['dice_median'])} | {_fmt(r['best_epoch'])} | "
                 f"{_fmt(r['epochs_run'])} | {_fmt(r['seconds_per_epoch'])} |")
  markdown = '\n'.join(lines) + '\n'
  with open(os.path.join(workdir, 'sweep.md'), 'w') as f:
    f.write(markdown)
  return markdown


def run_sweep(config, variants, workdir: str, only=None, title: str = '') -> list[dict]:
  """Runs every variant (or those in `only`) and writes the table of all done."""
  os.makedirs(workdir, exist_ok=True)
  # Every variant to run is checked before the first one trains.
  configs = {name: apply_overrides(config, overrides, f'variant {name}')
             for name, overrides in variants if not only or name in only}
  rows = []
  for i, (name, _) in enumerate(variants):
    variant_dir = os.path.join(workdir, name)
    done = os.path.join(variant_dir, 'results.json')
    if name not in configs:
      if os.path.exists(done):
        with open(done) as f:
          rows.append(table_row(name, json.load(f)))
      continue
    t0 = time.time()
    logging.info('variant %d/%d: %s', i + 1, len(variants), name)
    results = run_variant(configs[name], variant_dir)
    logging.info('variant %s done in %.0f s', name, time.time() - t0)
    rows.append(table_row(name, results))
  print(write_table(rows, workdir, title or os.path.basename(workdir)))
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.setup()
  cli.run_in_workdir(FLAGS.workdir, lambda: run_sweep(
      FLAGS.config, load_sweep(FLAGS.sweep), FLAGS.workdir, FLAGS.only,
      title=os.path.splitext(os.path.basename(FLAGS.sweep))[0]))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
