"""Volume inference: sliding windows, test-time mirroring, slice-wise batches.

A `predict_fn` is any callable mapping a float32 batch (B, *window, C) to
probabilities (B, *window, K), channels last, e.g. a jitted model apply
followed by a sigmoid or softmax. Every function here calls it with one
fixed batch size (the last batch is zero-padded and its extra rows dropped),
so a jitted `predict_fn` compiles once. Inputs and outputs at the boundary
are NumPy float32; calls to `predict_fn` are issued one batch ahead of the
host-side stitching, so JAX's asynchronous dispatch overlaps the two.

Sliding windows follow MONAI's `monai.inferers.sliding_window_inference`
(MONAI 1.6.1) exactly:

* Along each spatial axis of size n, a window w and an overlap o in [0, 1):
  an axis shorter than the window is first padded with zeros to w, half
  (rounded down) before and the rest after, and cropped back at the end.
  On the padded size n' = max(n, w) the step is int(w * (1 - o)) (at least
  1; w itself when n' == w), the windows start at 0, step, 2 step, ... and
  the last one is moved back to end flush with the volume (n' - w).
* Windows are the Cartesian product of the per-axis starts, last axis
  fastest.
* Each window's probabilities are weighted by an importance map and the
  volume is the weighted sum divided by the summed weights:
  'constant': all ones; 'gaussian': the product over axes of
  exp(-x^2 / (2 sigma^2)), x the offset from the window centre
  ((w - 1) / 2), sigma = sigma_scale * w, then clamped below at
  max(min of the map, 1e-3). The peak is 1 for odd windows, slightly less
  for even ones; only ratios matter.

Test-time mirroring (`with_mirroring`, `mirror_predict`) averages the
predictions over the flips of every subset of the given spatial axes
(numbered from 0 = the first spatial axis), each flipped back before the
mean: () is the plain prediction, 3 axes make 8 passes.
"""

from collections.abc import Callable, Sequence
import itertools

import jax.numpy as jnp
import numpy as np

from jaxseg.errors import InputError

# -----------------------------------------------------------------------------
# Volume inference core: window positions, importance maps, stitching,
# mirroring and slice batches. Self-contained: NumPy in and out, `predict_fn`
# any callable (B, *window, C) -> (B, *window, K).
# -----------------------------------------------------------------------------

PredictFn = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]
BLEND_MODES = ('gaussian', 'constant')
# MONAI's floor for importance weights (compute_importance_map).
MIN_IMPORTANCE = 1e-3


def _check_overlap(overlap: float) -> float:
  if not 0.0 <= overlap < 1.0:
    raise InputError('inference.overlap',
                     f'must be in [0, 1), got {overlap}')
  return overlap


def _check_window(window: Sequence[int], rank: int) -> tuple[int, ...]:
  window = tuple(int(w) for w in window)
  if len(window) != rank or any(w < 1 for w in window):
    raise InputError('data.patch_size',
                     f'the window {window} must be {rank} positive sizes, one '
                     'per spatial axis of the volume')
  return window


def _check_batch_size(batch_size: int, where: str) -> int:
  if batch_size < 1:
    raise InputError(where, f'must be at least 1, got {batch_size}')
  return int(batch_size)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
  """Start indices of the windows along one axis (MONAI's positions).

  Args:
    size: the axis length. An axis shorter than the window is padded to it
      (see `pad_to_window`), so the positions are on max(size, window).
    window: the window length along this axis.
    overlap: the fraction of the window shared by neighbours, in [0, 1).

  Returns:
    Increasing starts; the last window ends at max(size, window).
  """
  _check_overlap(overlap)
  size = max(int(size), int(window))
  if window == size:
    return [0]
  step = max(int(window * (1 - overlap)), 1)
  starts = []
  for start in range(0, size, step):
    starts.append(min(start, size - window))
    if start + window >= size:
      break
  return starts


def sliding_windows(spatial_shape: Sequence[int], window: Sequence[int],
                    overlap: float) -> list[tuple[slice, ...]]:
  """Every window as a tuple of slices, in MONAI's order (last axis fastest).

  The slices index the volume padded by `pad_to_window` (the volume itself
  where no axis is shorter than the window).
  """
  window = _check_window(window, len(spatial_shape))
  per_axis = [[slice(s, s + w) for s in window_starts(n, w, overlap)]
              for n, w in zip(spatial_shape, window)]
  return list(itertools.product(*per_axis))


def pad_to_window(volume: np.ndarray, window: Sequence[int]
                  ) -> tuple[np.ndarray, tuple[slice, ...]]:
  """Zero-pads the spatial axes of (*spatial, C) shorter than the window.

  As MONAI: half the missing length (rounded down) before, the rest after.

  Returns:
    The padded volume and the slices that crop a (*padded, K) array back to
    the original spatial shape.
  """
  pads, crop = [], []
  for n, w in zip(volume.shape[:-1], window):
    missing = max(w - n, 0)
    pads.append((missing // 2, missing - missing // 2))
    crop.append(slice(missing // 2, missing // 2 + n))
  if any(sum(p) for p in pads):
    volume = np.pad(volume, pads + [(0, 0)])
  return volume, tuple(crop)


def gaussian_importance(window: Sequence[int],
                        sigma_scale: float | Sequence[float] = 0.125
                        ) -> np.ndarray:
  """MONAI's Gaussian importance map (*window), float32.

  The product over axes of exp(-x^2 / (2 sigma^2)), x the offset from the
  window centre, sigma = sigma_scale * window (per axis when a sequence),
  clamped below at max(its minimum, 1e-3).
  """
  window = tuple(int(w) for w in window)
  scales = (tuple(sigma_scale) if isinstance(sigma_scale, Sequence)
            else (sigma_scale,) * len(window))
  if len(scales) != len(window) or any(s <= 0 for s in scales):
    raise InputError('inference.gaussian_sigma_scale',
                     f'must be positive (one value or one per axis of the '
                     f'window {window}), got {sigma_scale}')
  weights = np.ones((), np.float64)
  for w, scale in zip(window, scales):
    x = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
    line = np.exp(-x**2 / (2.0 * (scale * w)**2))
    weights = np.multiply.outer(weights, line)
  weights = np.maximum(weights, max(weights.min(), MIN_IMPORTANCE))
  return weights.astype(np.float32)


def importance_map(window: Sequence[int], mode: str = 'gaussian',
                   sigma_scale: float | Sequence[float] = 0.125
                   ) -> np.ndarray:
  """Blending weights (*window): 'gaussian' or 'constant' (all ones)."""
  if mode == 'gaussian':
    return gaussian_importance(window, sigma_scale)
  if mode == 'constant':
    return np.ones(tuple(window), np.float32)
  raise ValueError(f'mode must be one of {BLEND_MODES}, got {mode!r}')


def _batches(items: Sequence, batch_size: int):
  for start in range(0, len(items), batch_size):
    yield items[start:start + batch_size]


def _call_padded(predict_fn: PredictFn, rows: np.ndarray, batch_size: int):
  """predict_fn on `rows` zero-padded to `batch_size` rows (not synced)."""
  if len(rows) < batch_size:
    pad = np.zeros((batch_size - len(rows),) + rows.shape[1:], rows.dtype)
    rows = np.concatenate([rows, pad])
  return predict_fn(rows)


def _fetch(probs, count: int, expected: tuple[int, ...]) -> np.ndarray:
  """The first `count` rows of a predict_fn output on the host, checked."""
  probs = np.asarray(probs, np.float32)
  if probs.shape[:-1] != expected:
    raise ValueError(f'predict_fn returned shape {probs.shape}; expected '
                     f'{expected} + (K,)')
  return probs[:count]


def _pipelined(predict_fn: PredictFn, batches, batch_size: int):
  """Yields (batch index, host probabilities) with one call in flight.

  `batches` yields (B <= batch_size, ...) arrays; batch i + 1 is dispatched
  before batch i's result is pulled to the host.
  """
  pending = None
  for index, rows in enumerate(batches):
    probs = _call_padded(predict_fn, rows, batch_size)
    if pending is not None:
      yield pending[0], _fetch(*pending[1:])
    pending = (index, probs, len(rows), (batch_size,) + rows.shape[1:-1])
  if pending is not None:
    yield pending[0], _fetch(*pending[1:])


def sliding_window_predict(predict_fn: PredictFn, volume: np.ndarray,
                           window: Sequence[int], *, overlap: float = 0.5,
                           sigma_scale: float | Sequence[float] = 0.125,
                           batch_size: int = 2, mode: str = 'gaussian',
                           progress: Progress | None = None) -> np.ndarray:
  """Probabilities (*spatial, K) of a volume (*spatial, C) by sliding windows.

  Args:
    predict_fn: (batch_size, *window, C) float32 -> (batch_size, *window, K);
      always called with exactly `batch_size` rows.
    volume: the input, any spatial rank (2D, 3D), channels last.
    window: the window size, one per spatial axis.
    overlap: fraction of the window shared by neighbouring windows, [0, 1).
    sigma_scale: Gaussian sigma as a fraction of the window ('gaussian').
    batch_size: windows per predict_fn call.
    mode: 'gaussian' or 'constant' blending (see the module docstring).
    progress: called as progress(done windows, total windows) after each
      batch is stitched.

  Returns:
    float32 (*spatial, K): the importance-weighted mean of the window
    predictions covering each voxel, as MONAI's sliding_window_inference.
  """
  volume = np.asarray(volume, np.float32)
  window = _check_window(window, volume.ndim - 1)
  batch_size = _check_batch_size(batch_size, 'inference.window_batch_size')
  weights = importance_map(window, mode, sigma_scale)
  padded, crop = pad_to_window(volume, window)
  windows = sliding_windows(padded.shape[:-1], window, overlap)
  norm = np.zeros(padded.shape[:-1], np.float32)
  for sl in windows:
    norm[sl] += weights
  chunks = list(_batches(windows, batch_size))
  rows = (np.stack([padded[sl] for sl in chunk]) for chunk in chunks)
  total, out = 0, None
  for index, probs in _pipelined(predict_fn, rows, batch_size):
    if out is None:
      out = np.zeros(padded.shape[:-1] + probs.shape[-1:], np.float32)
    for sl, p in zip(chunks[index], probs):
      out[sl] += p * weights[..., None]
    total += len(chunks[index])
    if progress is not None:
      progress(total, len(windows))
  out /= norm[..., None]
  return out[crop]


def _mirror_subsets(axes: Sequence[int]) -> list[tuple[int, ...]]:
  """Every subset of `axes`, () first: 2^len(axes) flips."""
  axes = tuple(int(a) for a in axes)
  if len(set(axes)) != len(axes) or any(a < 0 for a in axes):
    raise InputError('inference.mirror_axes',
                     f'must be distinct spatial axes >= 0, got {axes}')
  return [s for r in range(len(axes) + 1)
          for s in itertools.combinations(axes, r)]


def with_mirroring(predict_fn: PredictFn, axes: Sequence[int]) -> PredictFn:
  """A predict_fn averaging `predict_fn` over the flips of subsets of `axes`.

  Axes are spatial (0 = the first axis after the batch). The returned
  function is built from jax.numpy and is jittable when `predict_fn` is
  (`jax.jit(with_mirroring(apply, axes))` compiles all passes into one
  program). With axes () it returns `predict_fn` itself.
  """
  subsets = _mirror_subsets(axes)
  if len(subsets) == 1:
    return predict_fn

  def mirrored(x):
    rank = len(x.shape) - 2
    if max(max(s, default=0) for s in subsets) >= rank:
      raise InputError('inference.mirror_axes',
                       f'{tuple(axes)} names an axis beyond the {rank} '
                       'spatial axes of the input')
    total = None
    for subset in subsets:
      flip = tuple(a + 1 for a in subset)
      probs = predict_fn(jnp.flip(x, flip) if flip else x)
      probs = jnp.flip(probs, flip) if flip else jnp.asarray(probs)
      total = probs if total is None else total + probs
    return total / len(subsets)

  return mirrored


def mirror_predict(predict_fn: PredictFn, x: np.ndarray,
                   axes: Sequence[int]) -> np.ndarray:
  """Mean over flips of `x` (B, *spatial, C) -> float32 (B, *spatial, K).

  Each subset of the spatial `axes` is flipped in, predicted and flipped
  back; the 2^len(axes) results are averaged. axes () is the plain
  prediction.
  """
  return np.asarray(with_mirroring(predict_fn, axes)(x), np.float32)


def predict_slices(predict_fn: PredictFn, slices: np.ndarray,
                   batch_size: int) -> np.ndarray:
  """Probabilities (S, H, W, K) of slices (S, H, W, C) in fixed-size batches.

  predict_fn is always called with exactly `batch_size` rows; the last
  batch is zero-padded and its padding dropped.
  """
  slices = np.asarray(slices, np.float32)
  batch_size = _check_batch_size(batch_size, 'batch_size')
  if not len(slices):
    raise ValueError('predict_slices got no slices')
  out = [probs for _, probs in
         _pipelined(predict_fn, _batches(slices, batch_size), batch_size)]
  return np.concatenate(out)
