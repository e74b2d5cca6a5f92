"""The per-case loop: cases in, label maps (and files, scores) out.

`predicted_cases` is the one loop that prediction, evaluation and
cross-validation consume: each case is read, predicted by one model or an
ensemble (`predictor.case_predictor`), turned into hard labels in the case's
own label scheme and post-processed (the run's settings, chosen on
validation cases, else `config.postprocess`). `predict_cases` writes each
case (`files.write_case`) and can score the labelled ones; `run_predict`
and `run_models` are `--mode=predict` and `python -m jaxseg.predict`.

Every case is read and checked (channels present, one shape and affine,
finite voxels, label values in the convention) before the first file is
written.
"""

import dataclasses
import json
import os
import time
from typing import Iterator

from absl import logging
import jax
import numpy as np

from jaxseg import model_folder
from jaxseg import parallel
from jaxseg import plots
from jaxseg.data import sources
from jaxseg.errors import InputError
from jaxseg.errors import check_writable_folder
from jaxseg.inference import files
from jaxseg.inference import predictor
from jaxseg.scoring import cases as case_scores
from jaxseg.scoring import postprocess
from jaxseg.training import state as state_lib


class CaseProgress:
  """A progress line over cases: count, seconds per case, time left."""

  def __init__(self, total: int, verb: str):
    self.total, self.verb, self.t0 = total, verb, time.time()

  def line(self, done: int, case_id: str) -> str:
    per_case = (time.time() - self.t0) / max(done, 1)
    left = (self.total - done) * per_case
    return (f'{self.verb} case {done}/{self.total} {case_id}: '
            f'{per_case:.1f} s/case, {left / 60:.1f} min left')


def input_cases(path: str, data_config) -> list[sources.Case]:
  """The cases under `path`, every one read and checked before any output.

  Headers first (every channel present, one shape and affine: fast), then
  the voxels (finite intensities, label values in the convention), so that
  a bad case anywhere in the set stops the run before the first file is
  written.
  """
  cases = sources.discover_input(path, data_config.get('formats'))
  for case in cases:
    sources.check_case(case, data_config.modalities)
  progress = CaseProgress(len(cases), 'checked')
  for i, case in enumerate(cases):
    sources.load_case(case, data_config.modalities)
    if len(cases) > 1 and ((i + 1) % 10 == 0 or i + 1 == len(cases)):
      logging.info(progress.line(i + 1, case.case_id))
  return cases


# The data settings a trained model's inputs depend on.
MODEL_VIEW_KEYS = ('modalities', 'label_mode', 'image_size', 'normalization',
                   'dims', 'depth')


def check_same_view(config, workdir: str) -> None:
  """InputError if the config preprocesses cases differently from the run.

  The model only understands inputs prepared as in training: the same
  channels in the same order, label mode, slice size, normalisation and
  (3D) depth.
  """
  trained = model_folder.split_info(workdir)['settings']
  for key in MODEL_VIEW_KEYS:
    now = json.loads(json.dumps(config.data[key]))
    was = trained.get(key, 2 if key == 'dims' else None)
    if key == 'depth' and trained.get('dims', 2) != 3:
      continue
    if was != now:
      raise InputError(f'config.data.{key}', f'is {now}, but the run in '
                       f'{workdir} was trained with {was}')


def run_normalization(workdir: str) -> tuple:
  """(mean, std) of the run's dataset normalisation, or (None, None) per case."""
  norm = model_folder.split_info(workdir)['normalization']
  if norm.get('mean') is None:
    return None, None
  return (np.asarray(norm['mean'], np.float32),
          np.asarray(norm['std'], np.float32))


def workdir_model(config, workdir: str, state) -> model_folder.Model:
  """A run's best state with its config and normalisation, as a Model."""
  mean, std = run_normalization(workdir)
  return model_folder.Model(config=config, state=state, mean=mean, std=std,
                            source=workdir, manifest={},
                            postprocess=postprocess.chosen(workdir))


@dataclasses.dataclass
class PredictedCase:
  """One case through the loop.

  Attributes:
    case, volume: the case and its voxels as read (label included).
    output: probabilities (and Monte-Carlo maps) on the case's grid.
    raw: uint8 (H, W, D) hard labels in `case.scheme`, before post-processing.
    label: the same after post-processing: the prediction.
    note: text the consumer adds to the case's progress line (e.g. scores).
  """
  case: sources.Case
  volume: sources.Volume
  output: predictor.CaseOutput
  raw: np.ndarray
  label: np.ndarray
  note: str = ''


def predicted_cases(models: list, mesh, cases, verb: str,
                    settings: dict | None = None) -> Iterator[PredictedCase]:
  """Predicts `cases` one by one; logs a progress line after each is handled.

  Args:
    models: one `model_folder.Model`, or the members of an ensemble (their
      probabilities are averaged); the first one's config decides the label
      mode, threshold and channels (`model_folder.check_ensemble` made sure
      the members agree).
    mesh: the device mesh.
    cases: the cases to predict.
    verb: the progress line's verb ('predicted', 'evaluated').
    settings: the post-processing; None: the first model's
      (`model_folder.Model.postprocess`).
  """
  config = models[0].config
  settings = models[0].postprocess if settings is None else settings
  label_mode = config.data.label_mode
  predict_volume = predictor.case_predictor(models, mesh)
  progress = CaseProgress(len(cases), verb)
  for i, case in enumerate(cases):
    volume = sources.load_case(case, config.data.modalities)
    output = predict_volume(volume)
    raw = case.scheme.from_probabilities(output.probs, label_mode,
                                         config.inference.threshold)
    item = PredictedCase(
        case=case, volume=volume, output=output, raw=raw,
        label=postprocess.for_prediction(raw, settings, case.scheme,
                                         label_mode))
    yield item
    line = progress.line(i + 1, case.case_id)
    logging.info('%s', f'{line} {item.note}' if item.note else line)


def predict_cases(models: list, mesh, cases, output_dir: str,
                  score: bool = False) -> list[str]:
  """Predicts and writes every case with one model or an ensemble; returns the paths.

  With `score`, cases that have a label are also scored as evaluation scores
  them (`cases.csv`, `summary.json`, `dice_box.png` in `output_dir`).
  """
  label_mode = models[0].config.data.label_mode
  written, rows = [], []
  for item in predicted_cases(models, mesh, cases, 'predicted'):
    case, volume = item.case, item.volume
    if jax.process_index() == 0:
      written += files.write_case(volume, case, item.output, item.label,
                                  output_dir, label_mode)
    if score and volume.label is not None:
      rows.append(dict(case=case.case_id, **case_scores.score_case(
          item.label, volume.label, case.scheme, label_mode,
          sources.voxel_spacing(volume, case.label))))
  if rows and jax.process_index() == 0:
    summary = case_scores.summarize_rows(rows)
    names = ('cases.csv', 'summary.json')
    case_scores.write_table(rows, summary,
                            *(os.path.join(output_dir, n) for n in names))
    plots.plot_score_box(rows, os.path.join(output_dir, 'dice_box.png'),
                         score='dice')
    written += [os.path.join(output_dir, n) for n in names + ('dice_box.png',)]
    logging.info('%d labelled cases: dice WT mean %.4f, lesion-wise %.4f',
                 len(rows), summary['dice_WT']['mean'],
                 summary['lesion_dice_WT']['mean'])
  return written


def run_predict(config, workdir: str, input_path: str,
                output_dir: str) -> list[str]:
  """--mode=predict: checks the input and the output folder, then predicts
  with the best checkpoint of the run in `workdir`."""
  if not input_path or not output_dir:
    raise InputError('--input/--output', '--mode=predict needs both an '
                     '--input (case folder, folder of cases or datalist) and '
                     'an --output folder')
  check_same_view(config, workdir)
  cases = input_cases(input_path, config.data)
  mesh = parallel.make_mesh(config.get('mesh'))
  state = state_lib.load_best_state(config, workdir, mesh)
  predictor.check_mc_model(state, config)
  check_writable_folder(output_dir)
  return predict_cases([workdir_model(config, workdir, state)], mesh, cases,
                       output_dir)


def run_models(model_dirs: list[str], input_path: str, output_dir: str,
               mc_samples: int | None = None, mirror: bool = False,
               score: bool = False) -> list[str]:
  """`python -m jaxseg.predict`: predicts with model folders, no config or data.

  Args:
    model_dirs: exported model folders or training workdirs; several are an
      ensemble (their probabilities are averaged on each case's grid).
    input_path: a case folder, a folder of cases or a datalist.
    output_dir: where `<case>_seg.nii.gz` and `<case>.png` go.
    mc_samples: Monte-Carlo dropout samples per member (None: the model's).
    mirror: average over every mirroring of the spatial axes.
    score: also score the cases that have labels (`predict_cases`).
  """
  if not model_dirs:
    raise InputError('-m/--model', 'give at least one model folder')
  if not input_path or not output_dir:
    raise InputError('-i/-o', 'give the cases (-i) and an output folder (-o)')
  first = None
  models = []
  for path in model_dirs:
    model = model_folder.load(path, mesh=None if first is None else first)
    config = model.config.copy_and_resolve_references()
    with config.unlocked():
      if mc_samples is not None:
        config.inference.mc_samples = mc_samples
      if mirror:
        config.inference.mirror_axes = tuple(range(config.data.dims))
    models.append(dataclasses.replace(model, config=config))
    if first is None:
      first = parallel.make_mesh(config.get('mesh'))
  model_folder.check_ensemble(models)
  cases = input_cases(input_path, models[0].config.data)
  for model in models:
    predictor.check_mc_model(model.state, model.config)
  check_writable_folder(output_dir)
  return predict_cases(models, first, cases, output_dir, score=score)
