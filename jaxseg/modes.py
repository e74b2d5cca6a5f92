"""One function per mode of `python -m jaxseg.main` (and of crossval, sweep).

    train      train (or resume) a run, then evaluate its best checkpoint
    evaluate   the best checkpoint on the run's val/test splits, or on a
               labelled set (`input_path`)
    predict    segment the cases of `input_path` into `output_dir`
    export     the best model as a model folder for `python -m jaxseg.predict`
    benchmark  time the train step, the loader and FLOP/s

Every mode checks the config first; bad input raises `errors.InputError`.
"""

import json
import os

import jax

from jaxseg import benchmark as benchmark_lib
from jaxseg import config_base
from jaxseg import evaluation
from jaxseg import model_folder
from jaxseg import parallel
from jaxseg import plots
from jaxseg.inference import cases
from jaxseg.training import loop
from jaxseg.training import state as state_lib
from jaxseg.training import step

MODES = ('train', 'evaluate', 'predict', 'export', 'benchmark')


def train(config, workdir: str) -> dict:
  """Trains (or resumes), evaluates the best checkpoint on the val and test
  splits, writes results.json and curves.png; returns the results ({} when
  `train.halt_after_steps` stopped the run)."""
  config_base.check_config(config)
  trained = loop.train(config, workdir)
  if trained is None:
    return {}
  results = dict(trained.results)
  results.update(evaluation.evaluate_workdir(
      config, workdir, trained.state, trained.mesh, eval_fn=trained.eval_fn))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=1)
    plots.plot_curves(os.path.join(workdir, 'metrics.jsonl'),
                      os.path.join(workdir, 'curves.png'),
                      results['best_epoch'])
  return results


def evaluate(config, workdir: str, input_path: str | None = None,
             output_dir: str | None = None) -> dict:
  """The best checkpoint's scores: on the run's val/test splits, or on the
  labelled set `input_path` (written to `output_dir`, default
  `<workdir>/eval/<input name>`)."""
  config_base.check_config(config)
  if not input_path:
    cases.check_same_view(config, workdir)
  mesh = parallel.make_mesh(config.get('mesh'))
  state = state_lib.load_best_state(config, workdir, mesh)
  if input_path:
    output_dir = output_dir or os.path.join(
        workdir, 'eval', os.path.basename(os.path.normpath(input_path)))
    return evaluation.evaluate_input(config, workdir, state, mesh, input_path,
                                     output_dir)
  return evaluation.evaluate_workdir(config, workdir, state, mesh,
                                     eval_fn=step.make_eval_fn(config))


def predict(config, workdir: str, input_path: str | None,
            output_dir: str | None) -> list[str]:
  """Segments the cases of `input_path` into `output_dir`; returns the paths."""
  config_base.check_config(config)
  return cases.run_predict(config, workdir, input_path, output_dir)


def export(config, workdir: str, output_dir: str | None = None) -> str:
  """Writes the best model as a model folder; returns its path."""
  config_base.check_config(config)
  path = model_folder.export(config, workdir, output_dir)
  print(f'exported the best model of {workdir} to {path}')
  return path


def benchmark(config, workdir: str, steps: int = 10) -> dict:
  """Times the train step and the loader; prints and returns the table's data."""
  config_base.check_config(config)
  result = benchmark_lib.run_benchmark(config, workdir, steps=steps)
  print(benchmark_lib.format_table(result))
  return result


def run(config, workdir: str, mode: str, input_path: str | None = None,
        output_dir: str | None = None, benchmark_steps: int = 10):
  """Runs one mode; returns its results (dict) or the written paths (predict)."""
  if mode == 'train':
    return train(config, workdir)
  if mode == 'benchmark':
    return benchmark(config, workdir, benchmark_steps)
  if mode == 'predict':
    return predict(config, workdir, input_path, output_dir)
  if mode == 'export':
    return export(config, workdir, output_dir)
  if mode == 'evaluate':
    return evaluate(config, workdir, input_path, output_dir)
  raise ValueError(f'unknown mode {mode!r}; known: {MODES}')
