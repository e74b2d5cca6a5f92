"""Whole-case prediction: probabilities on the original grid, NIfTI and PNG files.

    python -m jaxseg.main --config=configs/brats19_resunet.py --workdir=runs/x \
        --mode=predict --input=path/to/cases --output=path/to/predictions
    python -m jaxseg.predict -i path/to/cases -o path/to/predictions \
        -m runs/x/model [-m runs/y/model ...]      # model folders alone

`--input` is one case folder, a folder of case folders or a datalist. For
each case, with the best checkpoint of `--workdir` (or each model folder of
an ensemble, `jaxseg.model_folder`):

  1. the training preprocessing (brain crop, z-score with the run's
     statistics, resize) gives the model's view of the case;
  2. 2D models predict every axial slice; 3D models predict the volume, in
     Gaussian-weighted sliding windows of `data.patch_size` when it is set
     (`jaxseg.inference`); `inference.mirror_axes` averages mirrored passes;
  3. the probabilities are mapped back onto the case's original grid
     (undoing the resize and the crop) and thresholded (sigmoid modes) or
     arg-maxed (softmax) into the case's own label convention (BraTS 0/1/2/4,
     BraTS 2023 0/1/2/3, or 0/1 masks); an ensemble averages its members'
     probabilities first, and `jaxseg.postprocess` then applies the run's
     post-processing (chosen on validation cases, else `config.postprocess`);
  4. `<case>_seg.nii.gz` is written with the affine and header of the
     case's first channel, so it overlays the input in ITK-SNAP or 3D Slicer,
     and `<case>.png` shows the input with the prediction (and the label when
     the case has one) on the axial slice of largest tumour extent.

With `inference.mc_samples = T > 0` the model is sampled T times with
Monte-Carlo dropout (`jaxseg.uncertainty`), the segmentation is taken from
the mean probability, and these are written beside it (float32):

  <case>_mc_mean.nii.gz      (H, W, D, K) mean probability
  <case>_mc_std.nii.gz       (H, W, D, K) standard deviation over samples
  <case>_entropy.nii.gz      (H, W, D)    predictive entropy (nats)
  <case>_mutual_info.nii.gz  (H, W, D)    mutual information (nats)

In sliding-window inference each window's maps are computed from its T
samples and the windows' maps are blended with the same Gaussian weights as
the probabilities.

Every file is written under a temporary name and renamed, and every case is
read and checked (channels present, one shape and affine, finite voxels,
label values in the convention) before the first file is written.
"""

import dataclasses
import json
import os
import tempfile
import time
from typing import Callable

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import nibabel as nib
import numpy as np

from jaxseg import activations
from jaxseg import inference
from jaxseg import model_folder
from jaxseg import parallel
from jaxseg import plots
from jaxseg import postprocess
from jaxseg import uncertainty
from jaxseg.data import preprocess
from jaxseg.data import sources
from jaxseg.errors import InputError
from jaxseg.errors import check_writable_folder

# The per-case uncertainty files of Monte-Carlo dropout.
MC_FILES = dict(mean='mc_mean', std='mc_std', entropy='entropy',
                mutual_information='mutual_info')


@dataclasses.dataclass
class CaseOutput:
  """A case's prediction on its original (H, W, D) grid.

  Attributes:
    probs: (H, W, D, K) float32 probabilities (the MC mean when sampled).
    std, entropy, mutual_information: Monte-Carlo dropout maps,
      (H, W, D, K), (H, W, D) and (H, W, D); None without sampling.
  """
  probs: np.ndarray
  std: np.ndarray | None = None
  entropy: np.ndarray | None = None
  mutual_information: np.ndarray | None = None


# ---------------------------------------------------------------- the model


def _variables(state):
  return {'params': state.params, 'batch_stats': state.batch_stats}


def make_predict_fn(activation: str):
  """A jitted (state, images (N, *spatial, C)) -> probabilities (N, *spatial, K)."""
  def predict(state, images):
    logits = state.apply_fn(_variables(state), images, train=False)
    return activations.probabilities(logits, activation)
  return jax.jit(predict)


def make_mc_predict_fn(activation: str, num_samples: int, chunk: int = 0):
  """A jitted (state, images, key) -> (N, *spatial, 2K + 2) Monte-Carlo maps.

  The channels are [mean (K), std (K), entropy (1), mutual information (1)],
  so that windows and slices stitch them like probabilities.
  """
  def predict(state, images, key):
    maps = uncertainty.mc_dropout_predict(
        state.apply_fn, _variables(state), images, key, num_samples,
        activation, chunk=chunk)
    return jnp.concatenate([maps['mean'], maps['std'],
                            maps['entropy'][..., None],
                            maps['mutual_information'][..., None]], axis=-1)
  return jax.jit(predict)


def on_mesh(fn: Callable, mesh) -> Callable:
  """Wraps a jitted fn(x_global) as numpy (B, ...) -> numpy (B, ...).

  The batch is padded to a multiple of the device count, sharded over the
  mesh's 'data' axis (each process passes the whole batch and contributes
  its rows) and gathered back.
  """
  n = mesh.devices.size

  def run(x: np.ndarray) -> np.ndarray:
    b = len(x)
    pad = (-b) % n
    if pad:
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    out = fn(parallel.to_global(parallel.local_rows({'x': x}), mesh)['x'])
    if jax.process_count() > 1:
      out = multihost_utils.process_allgather(out, tiled=True)
    return np.asarray(out, np.float32)[:b]
  return run


def batch_predictor(state, mesh, config, key=None) -> Callable:
  """numpy (B, *spatial, C) -> (B, *spatial, K') for the config's inference settings.

  K' = K, or 2K + 2 Monte-Carlo channels when `inference.mc_samples > 0`
  (then `key` seeds the dropout masks). Mirroring is applied on top.
  """
  activation = preprocess.activation(config.data.label_mode)
  samples = config.inference.mc_samples
  if samples:
    mc = make_mc_predict_fn(activation, samples, config.inference.mc_chunk)
    fn = on_mesh(lambda x: mc(state, x, key), mesh)
  else:
    plain = make_predict_fn(activation)
    fn = on_mesh(lambda x: plain(state, x), mesh)
  axes = tuple(config.inference.mirror_axes)
  return inference.with_mirroring(fn, axes) if axes else fn


def model_input_shape(config) -> tuple:
  """One model input: (size, size, C), or the 3D patch or volume + (C,)."""
  channels = len(config.data.modalities)
  if config.data.dims == 2:
    return (config.data.image_size,) * 2 + (channels,)
  spatial = config.data.patch_size or (config.data.depth,
                                       config.data.image_size,
                                       config.data.image_size)
  return tuple(spatial) + (channels,)


def check_mc_model(state, config) -> None:
  """InputError when Monte-Carlo dropout is asked of a model without dropout."""
  if config.inference.mc_samples:
    uncertainty.require_dropout(
        state.apply_fn, _variables(state),
        jnp.zeros((1,) + model_input_shape(config), jnp.float32),
        where='config.inference.mc_samples')


# ---------------------------------------------------------------- one case


def model_view(image: np.ndarray, config, mean=None,
               std=None) -> preprocess.SliceStack:
  """The preprocessed case the model sees: slices (2D) or one volume (3D)."""
  kwargs = dict(image_size=config.data.image_size, label_mode='binary',
                et_label=None, mean=mean, std=std)
  if config.data.dims == 3:
    return preprocess.case_to_volume(image, None, depth=config.data.depth,
                                     **kwargs)
  return preprocess.case_to_slices(image, None, **kwargs)


def case_probabilities(predict_batch: Callable, image: np.ndarray, config,
                       mean=None, std=None) -> np.ndarray:
  """(H, W, D, K') model outputs of one case (H, W, D, C) on its own grid.

  Args:
    predict_batch: numpy (B, *spatial, C) -> (B, *spatial, K'), e.g.
      `batch_predictor`.
    image: the case's channels as read from disk.
    config: data.dims / image_size / depth / patch_size and the inference
      section decide slices, whole volume or sliding windows.
    mean, std: (C,) dataset statistics of the run, or None (per case).
  """
  stack = model_view(image, config, mean, std)
  batch = config.train.eval_batch_size
  if config.data.dims == 2:
    out = inference.predict_slices(predict_batch, stack.images, batch)
    return preprocess.slices_to_volume(out, stack.box)
  if config.data.patch_size:
    out = inference.sliding_window_predict(
        predict_batch, stack.images, tuple(config.data.patch_size),
        overlap=config.inference.overlap,
        sigma_scale=config.inference.gaussian_sigma_scale,
        batch_size=config.inference.window_batch_size)
  else:
    out = predict_batch(stack.images[None])[0]
  return preprocess.volume_to_grid(out, stack.box)


def split_outputs(out: np.ndarray, num_classes: int,
                  sampled: bool) -> CaseOutput:
  """CaseOutput from (H, W, D, K) probabilities or (H, W, D, 2K + 2) MC maps."""
  if not sampled:
    return CaseOutput(probs=out)
  k = num_classes
  return CaseOutput(probs=out[..., :k], std=out[..., k:2 * k],
                    entropy=out[..., 2 * k], mutual_information=out[..., 2 * k + 1])


def predict_case(predict_batch: Callable, volume: sources.Volume, config,
                 mean=None, std=None) -> CaseOutput:
  """The CaseOutput of one loaded case."""
  out = case_probabilities(predict_batch, volume.image, config, mean, std)
  return split_outputs(out, preprocess.num_outputs(config.data.label_mode),
                       bool(config.inference.mc_samples))


def hard_label(probs: np.ndarray, label_mode: str, et_label,
               threshold: float = 0.5) -> np.ndarray:
  """(H, W, D, K) probabilities -> uint8 label map in the source convention."""
  if label_mode == 'multiclass':
    return preprocess.target_to_label(probs.argmax(-1), label_mode, et_label)
  return preprocess.target_to_label(probs > threshold, label_mode, et_label)


# ---------------------------------------------------------------- files


def write_nifti(data: np.ndarray, reference: sources.Volume, path: str) -> None:
  """Writes (H, W, D[, K]) `data` on the grid of `reference`, atomically.

  The affine and header come from the reference's first channel (formats
  other than NIfTI have no header: a fresh one is made); the data type is
  `data`'s and no intensity scaling is stored.
  """
  header = None
  if isinstance(reference.header, nib.Nifti1Header):
    header = reference.header.copy()
    header.set_data_dtype(data.dtype)
  image = nib.Nifti1Image(data, reference.affine, header)
  image.header.set_slope_inter(1.0, 0.0)
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.nii.gz', dir=folder)
  os.close(fd)
  try:
    os.chmod(tmp, 0o666 & ~_umask())      # mkstemp makes it private
    nib.save(image, tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def display_channel(modalities) -> int:
  """The channel to draw under overlays: FLAIR if present, else the first."""
  names = [sources.canonical_modality(m) for m in modalities]
  return names.index('flair') if 'flair' in names else 0


def write_case_png(volume: sources.Volume, pred_label: np.ndarray, path: str,
                   label_mode: str, output: CaseOutput | None = None) -> None:
  """`path`: the input with label and prediction on the slice of largest tumour.

  In binary label mode a sub-region label is drawn as its whole tumour, as
  the model sees it, and the legend names it 'tumour'.
  """
  label = volume.label
  if label is not None and label_mode == 'binary':
    label = (label > 0).astype(np.uint8)
  uncertainty_map = None if output is None else output.entropy
  plots.plot_case(volume.image[..., display_channel(volume.modalities)],
                  label, pred_label, path, uncertainty=uncertainty_map,
                  title=volume.case_id,
                  names=(plots.BINARY_CLASS_NAMES if label_mode == 'binary'
                         else plots.BRATS_CLASS_NAMES))


def write_case(volume: sources.Volume, case: sources.Case, output: CaseOutput,
               pred_label: np.ndarray, folder: str,
               label_mode: str) -> list[str]:
  """Writes a case's segmentation, MC maps and PNG into `folder`; returns the paths."""
  paths = [os.path.join(folder, f'{case.case_id}_seg.nii.gz')]
  write_nifti(case.to_disk(pred_label.astype(np.uint8)), volume, paths[0])
  if output.std is not None:
    for field, name in MC_FILES.items():
      data = output.probs if field == 'mean' else getattr(output, field)
      path = os.path.join(folder, f'{case.case_id}_{name}.nii.gz')
      write_nifti(np.asarray(data, np.float32), volume, path)
      paths.append(path)
  png = os.path.join(folder, f'{case.case_id}.png')
  write_case_png(volume, pred_label, png, label_mode, output)
  return paths + [png]


# ---------------------------------------------------------------- many cases


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


def mean_output(outputs: list[CaseOutput]) -> CaseOutput:
  """The ensemble of case outputs: the mean of each map over the members.

  The probabilities are averaged (what the ensemble predicts); Monte-Carlo
  maps, where every member has them, are averaged too.
  """
  if len(outputs) == 1:
    return outputs[0]
  def avg(field):
    maps = [getattr(o, field) for o in outputs]
    return None if any(m is None for m in maps) else np.mean(maps, axis=0)
  return CaseOutput(probs=avg('probs'), std=avg('std'), entropy=avg('entropy'),
                    mutual_information=avg('mutual_information'))


def case_predictor(models: list, mesh) -> Callable[[sources.Volume], CaseOutput]:
  """volume -> CaseOutput of one model or the mean of an ensemble's.

  Args:
    models: `model_folder.Model`s (config, state, normalisation); each
      member preprocesses the case its own way and maps its probabilities
      back onto the case's grid before they are averaged.
  """
  fns = [batch_predictor(m.state, mesh, m.config,
                         key=jax.random.key(m.config.seed)) for m in models]

  def run(volume: sources.Volume) -> CaseOutput:
    return mean_output([predict_case(fn, volume, m.config, m.mean, m.std)
                        for fn, m in zip(fns, models)])
  return run


def workdir_model(config, workdir: str, state) -> model_folder.Model:
  """A run's best state with its config and normalisation, as a Model."""
  mean, std = run_normalization(workdir)
  return model_folder.Model(config=config, state=state, mean=mean, std=std,
                            source=workdir, manifest={},
                            postprocess=postprocess.chosen(workdir))


def predict_cases(models: list, mesh, cases, output_dir: str,
                  score: bool = False) -> list[str]:
  """Predicts and writes every case with one model or an ensemble; returns the paths.

  The first model's config decides the label mode, threshold and channels
  (`model_folder.check_ensemble` made sure the members agree). With
  `score`, cases that have a label are also scored as evaluation scores
  them (`cases.csv`, `summary.json`, `dice_box.png` in `output_dir`).
  """
  from jaxseg import evaluate  # pylint: disable=g-import-not-at-top
  config = models[0].config
  predict_volume = case_predictor(models, mesh)
  progress = CaseProgress(len(cases), 'predicted')
  written, rows = [], []
  for i, case in enumerate(cases):
    volume = sources.load_case(case, config.data.modalities)
    output = predict_volume(volume)
    pred = hard_label(output.probs, config.data.label_mode, case.et_label,
                      config.inference.threshold)
    pred = postprocess.for_prediction(pred, models[0].postprocess,
                                      case.et_label, config.data.label_mode)
    if jax.process_index() == 0:
      written += write_case(volume, case, output, pred, output_dir,
                            config.data.label_mode)
    if score and volume.label is not None:
      rows.append(dict(case=case.case_id, **evaluate.score_case(
          pred, volume.label, case.et_label, config.data.label_mode,
          evaluate.voxel_spacing(volume, case.label))))
    logging.info(progress.line(i + 1, case.case_id))
  if rows and jax.process_index() == 0:
    summary = evaluate.summarize_rows(rows)
    names = ('cases.csv', 'summary.json')
    evaluate.write_table(rows, summary, *(os.path.join(output_dir, n) for n in names))
    plots.plot_score_box(rows, os.path.join(output_dir, 'dice_box.png'), score='dice')
    written += [os.path.join(output_dir, n) for n in names + ('dice_box.png',)]
    logging.info('%d labelled cases: dice WT mean %.4f, lesion-wise %.4f',
                 len(rows), summary['dice_WT']['mean'],
                 summary['lesion_dice_WT']['mean'])
  return written


def run_predict(config, workdir: str, input_path: str, output_dir: str,
                load_state: Callable) -> list[str]:
  """--mode=predict: checks the input and the output folder, then predicts.

  Args:
    load_state: (config, workdir, mesh) -> the run's best TrainState.
  """
  if not input_path or not output_dir:
    raise InputError('--input/--output', '--mode=predict needs both an '
                     '--input (case folder, folder of cases or datalist) and '
                     'an --output folder')
  check_same_view(config, workdir)
  cases = input_cases(input_path, config.data)
  mesh = parallel.make_mesh(config.get('mesh'))
  state = load_state(config, workdir, mesh)
  check_mc_model(state, config)
  check_writable_folder(output_dir)
  return predict_cases([workdir_model(config, workdir, state)], mesh, cases,
                       output_dir)


# ------------------------------------------------- from model folders alone


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
    check_mc_model(model.state, model.config)
  check_writable_folder(output_dir)
  return predict_cases(models, first, cases, output_dir, score=score)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_multi_string('model', None, 'A model folder (--mode=export) or '
                            'a training workdir; repeat for an ensemble.',
                            short_name='m')
  flags.DEFINE_string('input', None, 'A case folder, a folder of cases or a '
                      'datalist .json.', short_name='i')
  flags.DEFINE_string('output', None, 'The folder for <case>_seg.nii.gz and '
                      '<case>.png.', short_name='o')
  flags.DEFINE_integer('mc_samples', None, 'Monte-Carlo dropout samples per '
                       'model (writes the uncertainty maps too).')
  flags.DEFINE_bool('mirror', False, 'Test-time mirroring over every '
                    'spatial axis.')
  flags.DEFINE_bool('score', False, 'Also score the cases that have labels '
                    '(cases.csv, summary.json, dice_box.png in --output).')
  return flags.FLAGS


def main_cli() -> None:
  """`python -m jaxseg.predict -i IN -o OUT -m MODEL [-m ...]`."""
  import sys  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  from jaxseg import cli  # pylint: disable=g-import-not-at-top
  options = _define_flags()

  def main(argv):
    if len(argv) > 1:
      print(f'jaxseg: error: unexpected arguments: {argv[1:]}', file=sys.stderr)
      sys.exit(2)
    cli.setup()
    paths = cli.run_in_workdir(options.output, lambda: run_models(
        options.model, options.input, options.output, options.mc_samples,
        options.mirror, options.score))
    logging.info('wrote %d files to %s', len(paths), options.output)

  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  # Run the functions of the imported module, not of this __main__ copy.
  from jaxseg import predict as _predict  # pylint: disable=g-import-not-at-top
  _predict.main_cli()
