"""From a model and a case to probabilities on the case's own grid.

For each case, with one model or each member of an ensemble:

  1. the training preprocessing (brain crop, z-score with the run's
     statistics, resize) gives the model's view of the case (`model_view`);
  2. 2D models predict every axial slice; 3D models predict the volume, in
     Gaussian-weighted sliding windows of `data.patch_size` when it is set
     (`windows`); `inference.mirror_axes` averages mirrored passes;
  3. the probabilities are mapped back onto the case's original grid
     (undoing the resize and the crop); an ensemble averages its members'.

With `inference.mc_samples = T > 0` the model is sampled T times with
Monte-Carlo dropout (`mc_dropout`) and the case's output also holds the
std, entropy and mutual information maps; in sliding-window inference each
window's maps come from its T samples and are blended with the same
Gaussian weights as the probabilities.
"""

import dataclasses
from typing import Callable

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from jaxseg import activations
from jaxseg import labels
from jaxseg import parallel
from jaxseg.data import preprocess
from jaxseg.data import sources
from jaxseg.inference import mc_dropout
from jaxseg.inference import windows


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
    maps = mc_dropout.mc_dropout_predict(
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
  activation = labels.activation(config.data.label_mode)
  samples = config.inference.mc_samples
  if samples:
    mc = make_mc_predict_fn(activation, samples, config.inference.mc_chunk)
    fn = on_mesh(lambda x: mc(state, x, key), mesh)
  else:
    plain = make_predict_fn(activation)
    fn = on_mesh(lambda x: plain(state, x), mesh)
  axes = tuple(config.inference.mirror_axes)
  return windows.with_mirroring(fn, axes) if axes else fn


def check_mc_model(state, config) -> None:
  """InputError when Monte-Carlo dropout is asked of a model without dropout."""
  if config.inference.mc_samples:
    mc_dropout.require_dropout(
        state.apply_fn, _variables(state),
        jnp.zeros((1,) + preprocess.model_input_shape(config.data), jnp.float32),
        where='config.inference.mc_samples')


def model_view(image: np.ndarray, config, mean=None,
               std=None) -> preprocess.SliceStack:
  """The preprocessed case the model sees: slices (2D) or one volume (3D)."""
  kwargs = dict(image_size=config.data.image_size, mean=mean, std=std)
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
    out = windows.predict_slices(predict_batch, stack.images, batch)
    return preprocess.slices_to_volume(out, stack.box)
  if config.data.patch_size:
    out = windows.sliding_window_predict(
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
  return split_outputs(out, labels.num_outputs(config.data.label_mode),
                       bool(config.inference.mc_samples))


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
