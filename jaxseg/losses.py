"""Segmentation losses: pure, jit-able jax.numpy functions and a registry.

Conventions (shared by every loss here):

* `logits` and `targets` are channels-last, (N, *spatial, C), with 2D or 3D
  spatial dimensions. Losses take logits, never probabilities (the models
  return logits; a probability-input variant would only add a clipping
  problem).
* `activation='sigmoid'`: every channel is an independent binary problem
  (binary masks, or the overlapping BraTS regions WT/TC/ET); targets in {0, 1}.
  `activation='softmax'`: the channels are mutually exclusive classes; targets
  are one-hot. Losses that take an `activation` argument work for both; the
  others are sigmoid-only (`SIGMOID_LOSSES`) or softmax-only
  (`SOFTMAX_LOSSES`), and `activation_of(config.loss)` says which.
* `mask` (optional) is (N, *spatial) (or (N, *spatial, C)) with 1 for voxels
  that count and 0 for voxels to ignore. Voxel-wise losses average over the
  counted voxels (and channels); region losses (Dice, IoU, Tversky, ...) sum
  only over counted voxels. Distance maps are always computed on the whole
  target (and prediction); the mask then drops ignored voxels from the mean.
* Region losses reduce per channel, over the spatial axes of each sample
  (`per_sample=True`, MONAI's `batch=False`) or over the whole batch
  (`per_sample=False`, one pooled score per channel, as the studies' Keras
  code did), then average. `include_background=False` drops channel 0 after
  the activation (softmax over all channels first, as MONAI does).
* Voxel-wise softmax losses sum over the classes of a voxel and average over
  voxels (`softmax_cross_entropy`'s convention). MONAI's FocalLoss also
  averages over the channel axis, so its softmax value is ours / C.
* Defaults: losses modelled on a MONAI class ('generalized_dice',
  'dice_focal', 'hausdorff_dt', 'boundary') take that class's defaults (smooth
  1e-5, per-sample Dice, gamma 2), except `include_background=True`
  everywhere (MONAI's HausdorffDTLoss defaults to False). The others keep this
  module's defaults (smooth 1, Dice pooled over the batch).
* Every loss returns a float32 scalar (float64 under x64). String arguments
  (`activation`, `weight_type`, ...) are Python values, so they are static
  under `jax.jit`.

Distance maps (shape-aware, boundary and Hausdorff losses) are not
differentiable functions of the logits; they are computed on the host with
scipy.ndimage.distance_transform_edt through `jax.pure_callback`, with
`stop_gradient` on both sides, so the losses work under jit, grad and vmap.
The callback gathers its input on one host: fine for one process, slow for
large 3D batches. Precomputing the target maps in the data pipeline would
avoid it for the target-only maps (shape-aware, boundary); the Hausdorff
loss also needs the map of the thresholded prediction, which only exists
inside the step.

The element-wise cross entropies and the sigmoid focal term come from optax
(log-space, stable for any logit); this module adds the masking, the
reductions, the region scores and the distance maps.

`build(config.loss)` turns a config (`name` plus the loss's keyword arguments)
into `loss_fn(logits, targets, mask=None) -> scalar`.

Registered losses (config.loss.name):

  distribution  bce, weighted_bce, balanced_bce, softmax_ce, focal,
                keras_focal
  region        dice, iou, tversky, focal_tversky, log_cosh_dice,
                sensitivity_specificity, generalized_dice
  boundary      shape_aware, boundary, hausdorff_dt
  compound      focal_dice (seed 002), dice_focal (MONAI), dice_ce, combo,
                exp_log
"""

import functools
import inspect
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import ndimage

from jaxseg import errors

Array = jax.Array
LossFn = Callable[..., Array]

ACTIVATIONS = ('sigmoid', 'softmax')
WEIGHT_TYPES = ('square', 'simple', 'uniform')


# ------------------------------------------------------------------ helpers


def _check_inputs(logits: Array, targets: Array, mask: Array | None):
  """Casts targets and mask to the logits dtype and checks the shapes."""
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    logits = logits.astype(jnp.float32)
  targets = jnp.asarray(targets).astype(logits.dtype)
  if logits.shape != targets.shape:
    raise ValueError(f'logits {logits.shape} and targets {targets.shape} must '
                     'have the same shape (N, *spatial, C)')
  if logits.ndim < 3:
    raise ValueError(f'expected (N, *spatial, C) arrays, got {logits.shape}')
  if mask is not None:
    mask = jnp.asarray(mask).astype(logits.dtype)
    if mask.shape == logits.shape[:-1]:
      mask = mask[..., None]
    if mask.shape[:-1] != logits.shape[:-1] or mask.shape[-1] not in (
        1, logits.shape[-1]):
      raise ValueError(f'mask {mask.shape} must be (N, *spatial) '
                       f'{logits.shape[:-1]} or (N, *spatial, C)')
  return logits, targets, mask


def _masked_mean(values: Array, mask: Array | None) -> Array:
  """Mean of (N, *spatial, C) values over the voxels (and channels) in mask.

  Returns 0 when the mask selects nothing.
  """
  if mask is None:
    return jnp.mean(values)
  mask = jnp.broadcast_to(mask, values.shape)
  count = jnp.sum(mask)
  return jnp.sum(values * mask) / jnp.maximum(count, 1.0)


def _voxel_mask(mask: Array | None) -> Array | None:
  """(N, *spatial, 1) mask for per-voxel (not per-channel) values."""
  return None if mask is None else mask[..., :1]


def _safe_ratio(num: Array, den: Array, empty: float) -> Array:
  """num / den, and `empty` where den == 0 (no nan, no nan gradient)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), empty)


def _safe_pow(x: Array, gamma: float) -> Array:
  """x ** gamma for x >= 0 with a finite gradient at x == 0 for gamma < 1."""
  ok = x > 0
  return jnp.where(ok, jnp.where(ok, x, 1.0)**gamma, 0.0)


def _check_activation(activation: str):
  if activation not in ACTIVATIONS:
    raise ValueError(f'unknown activation {activation!r}; known: {ACTIVATIONS}')


def _probabilities(logits: Array, activation: str) -> Array:
  _check_activation(activation)
  if activation == 'sigmoid':
    return jax.nn.sigmoid(logits)
  return jax.nn.softmax(logits, axis=-1)


def _drop_background(probs: Array, targets: Array, mask: Array | None,
                     include_background: bool):
  """Drops channel 0 of probs, targets (and a per-channel mask) if asked."""
  if include_background:
    return probs, targets, mask
  if probs.shape[-1] < 2:
    raise ValueError('include_background=False needs at least 2 channels')
  if mask is not None and mask.shape[-1] > 1:
    mask = mask[..., 1:]
  return probs[..., 1:], targets[..., 1:], mask


def _region_inputs(logits: Array, targets: Array, mask: Array | None,
                   activation: str, include_background: bool):
  """Probabilities and targets for region scores, ignored voxels zeroed."""
  logits, targets, mask = _check_inputs(logits, targets, mask)
  probs = _probabilities(logits, activation)
  probs, targets, mask = _drop_background(probs, targets, mask,
                                          include_background)
  if mask is not None:
    probs, targets = probs * mask, targets * mask
  return probs, targets


def _region_axes(ndim: int, per_sample: bool) -> tuple[int, ...]:
  """Spatial axes (per sample) or batch and spatial axes (pooled)."""
  return tuple(range(1, ndim - 1)) if per_sample else tuple(range(ndim - 1))


def _dice_scores(probs: Array, targets: Array, smooth: float, squared: bool,
                 per_sample: bool) -> Array:
  """(2 sum p y + smooth) / (sum p + sum y + smooth) per channel (and sample).

  0/0 (smooth = 0, both empty) counts as 1.
  """
  axes = _region_axes(probs.ndim, per_sample)
  intersection = jnp.sum(probs * targets, axis=axes)
  if squared:
    denominator = jnp.sum(probs**2, axis=axes) + jnp.sum(targets**2, axis=axes)
  else:
    denominator = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes)
  return _safe_ratio(2.0 * intersection + smooth, denominator + smooth, 1.0)


def _tversky_scores(probs: Array, targets: Array, alpha: float, beta: float,
                    smooth: float, per_sample: bool) -> Array:
  """(TP + smooth) / (TP + alpha FP + beta FN + smooth) per channel."""
  axes = _region_axes(probs.ndim, per_sample)
  tp = jnp.sum(probs * targets, axis=axes)
  fp = jnp.sum(probs * (1.0 - targets), axis=axes)
  fn = jnp.sum((1.0 - probs) * targets, axis=axes)
  return _safe_ratio(tp + smooth, tp + alpha * fp + beta * fn + smooth, 1.0)


def _log_probs(logits: Array, activation: str):
  """(log p, log(1 - p)) of each channel, computed stably from logits."""
  _check_activation(activation)
  if activation == 'sigmoid':
    return jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  # log(1 - p_c) = logsumexp_{k != c} log p_k, finite for any logits.
  classes = logits.shape[-1]
  others = jnp.where(jnp.eye(classes, dtype=bool), -jnp.inf, 0.0)
  log_q = jax.nn.logsumexp(log_p[..., None, :] + others, axis=-1)
  return log_p, log_q


def _class_balance(classes: int, alpha: float | None, dtype) -> Array:
  """Softmax class weights: 1 - alpha for class 0, alpha for the others."""
  if alpha is None:
    return jnp.ones((classes,), dtype)
  return jnp.asarray([1.0 - alpha] + [alpha] * (classes - 1), dtype)


# ------------------------------------------------------------ distance maps


def _host_distance_maps(binary: np.ndarray, spatial_rank: int,
                        signed: bool) -> np.ndarray:
  """Euclidean distance maps of (..., *spatial, C) masks, on the host (SciPy).

  Each (sample, channel) image is done on its own; an empty or full image
  has no boundary and gets a zero map.
  """
  binary = np.asarray(binary, bool)
  image_shape = binary.shape[-(spatial_rank + 1):-1]
  flat = binary.reshape((-1,) + image_shape + binary.shape[-1:])
  out = np.zeros(flat.shape, np.float32)
  for i in range(flat.shape[0]):
    for c in range(flat.shape[-1]):
      fg = flat[i, ..., c]
      if not fg.any() or fg.all():
        continue
      inside = ndimage.distance_transform_edt(fg)     # to the nearest bg voxel
      outside = ndimage.distance_transform_edt(~fg)   # to the nearest fg voxel
      if signed:
        out[i, ..., c] = np.where(fg, 1.0 - inside, outside)
      else:
        out[i, ..., c] = inside + outside
  return out.reshape(binary.shape)


def distance_map(binary: Array, signed: bool = False) -> Array:
  """Distance of every voxel to the other side of a binary mask's boundary.

  Computed per sample and channel with scipy.ndimage.distance_transform_edt
  (voxel units) on the host through `jax.pure_callback`, so it works under
  jit and vmap; no gradient flows through it (stop_gradient on input and
  output).

  * signed=False (MONAI HausdorffDTLoss `distance_field`): the distance from
    each voxel to the nearest voxel of the other class, >= 1 everywhere.
  * signed=True (Kervadec et al. 2019, MONAI BoundaryLoss): outside the mask
    the distance to the nearest mask voxel (>= 1), inside 1 - the distance to
    the nearest outside voxel (<= 0; 0 on the inner boundary).

  Images that are empty or full (no boundary) get a zero map.

  Args:
    binary: (N, *spatial, C) mask; nonzero (or True) is foreground.
    signed: signed map instead of the unsigned one.

  Returns:
    (N, *spatial, C) float32 map.
  """
  binary = jax.lax.stop_gradient(jnp.asarray(binary)) != 0
  if binary.ndim < 3:
    raise ValueError(f'expected (N, *spatial, C) masks, got {binary.shape}')
  host = functools.partial(_host_distance_maps, spatial_rank=binary.ndim - 2,
                           signed=signed)
  result = jax.ShapeDtypeStruct(binary.shape, jnp.float32)
  maps = jax.pure_callback(host, result, binary, vmap_method='expand_dims')
  return jax.lax.stop_gradient(maps)


# ------------------------------------------------------ distribution losses


def binary_cross_entropy(logits: Array, targets: Array,
                         mask: Array | None = None) -> Array:
  """Sigmoid cross entropy from logits, mean over voxels and channels.

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) in {0, 1}.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar mean of -(y log p + (1 - y) log(1 - p)).
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  loss = optax.sigmoid_binary_cross_entropy(logits, targets)
  return _masked_mean(loss, mask)


def _weighted_bce(logits: Array, targets: Array, pos: Array | float,
                  neg: Array | float) -> Array:
  """Element-wise -(pos y log p + neg (1 - y) log(1 - p)), from logits."""
  return -(pos * targets * jax.nn.log_sigmoid(logits) +
           neg * (1.0 - targets) * jax.nn.log_sigmoid(-logits))


def weighted_binary_cross_entropy(logits: Array, targets: Array,
                                  pos_weight: float | Sequence[float] = 1.0,
                                  mask: Array | None = None) -> Array:
  """Weighted cross entropy, -(w y log p + (1 - y) log(1 - p)), mean.

  The positive term is scaled by `pos_weight` (torch BCEWithLogitsLoss
  `pos_weight`, tf.nn.weighted_cross_entropy_with_logits); w > 1 trades
  false negatives for false positives. One weight, or one per channel.

  Args:
    logits: (N, *spatial, C) logits, one independent sigmoid per channel.
    targets: (N, *spatial, C) in {0, 1}.
    pos_weight: weight w of the positive voxels (scalar or length C).
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar mean over the included voxels and all channels.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  pos = jnp.asarray(pos_weight, logits.dtype)
  return _masked_mean(_weighted_bce(logits, targets, pos, 1.0), mask)


def balanced_binary_cross_entropy(logits: Array, targets: Array,
                                  beta: float | None = None,
                                  mask: Array | None = None) -> Array:
  """Balanced cross entropy, -(beta y log p + (1 - beta)(1 - y) log(1 - p)).

  With `beta=None`, beta is the fraction of negative voxels of each sample
  and channel (counted voxels only), as in Xie & Tu's HED and Jadon (2020),
  beta = 1 - sum y / |voxels|: the rare class gets the large weight. An image
  without positives then has beta = 1 and contributes nothing.

  Args:
    logits: (N, *spatial, C) logits, one independent sigmoid per channel.
    targets: (N, *spatial, C) in {0, 1}.
    beta: fixed weight of the positive term, or None for the per-image
      fraction of negatives (computed from the targets, no gradient).
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar mean over the included voxels and all channels.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  if beta is None:
    axes = _region_axes(logits.ndim, per_sample=True)
    counted = jnp.ones_like(targets) if mask is None else jnp.broadcast_to(
        mask, targets.shape)
    positives = jnp.sum(targets * counted, axis=axes, keepdims=True)
    total = jnp.sum(counted, axis=axes, keepdims=True)
    beta = 1.0 - _safe_ratio(positives, total, 0.0)
  loss = _weighted_bce(logits, targets, beta, 1.0 - beta)
  return _masked_mean(loss, mask)


def softmax_cross_entropy(logits: Array, targets: Array,
                          mask: Array | None = None,
                          class_weights: Sequence[float] | None = None
                          ) -> Array:
  """Softmax cross entropy over the channel axis, mean over voxels.

  Args:
    logits: (N, *spatial, C) class logits.
    targets: (N, *spatial, C) one-hot (or class probabilities).
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).
    class_weights: optional length-C weights w_c (weighted cross entropy):
      each voxel's loss is -sum_c w_c y_c log p_c; the mean stays a plain
      mean over voxels (Keras style, not torch's division by sum of weights).

  Returns:
    Scalar mean over the included voxels of -sum_c w_c y_c log p_c.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  if class_weights is None:
    loss = optax.softmax_cross_entropy(logits, targets)[..., None]
  else:
    w = jnp.asarray(class_weights, logits.dtype)
    loss = -jnp.sum(w * targets * jax.nn.log_softmax(logits, axis=-1),
                    axis=-1, keepdims=True)
  return _masked_mean(loss, _voxel_mask(mask))


def sigmoid_focal_loss(logits: Array, targets: Array,
                       alpha: float | None = 0.25, gamma: float = 1.0,
                       mask: Array | None = None) -> Array:
  """Binary focal loss of Lin et al. (2017), mean over voxels and channels.

    FL = -alpha_t (1 - p_t)^gamma log(p_t),
    p_t = p if y = 1 else 1 - p,  alpha_t = alpha if y = 1 else 1 - alpha,

  with p = sigmoid(logits), computed in log space from the logits (optax), so
  it is finite with finite gradients for any logit.

  Seed 002 (eq. 3) prints the loss as
  -alpha((1-Y)(1-Yhat)^gamma log(1-Yhat) + Y Yhat^gamma log Yhat): the exponent
  sits on the probability of the *correct* class, which would up-weight easy
  voxels, the opposite of the focal loss it cites, and alpha scales both
  terms. The study's own Keras code (github.com/Tottowich/AppliedDL-project,
  utils/loss.py, `FocalDiceLoss`) does not use that form: it calls
  `keras.losses.BinaryFocalCrossentropy(gamma=gamma, alpha=alpha)` on the
  sigmoid outputs, which is Lin's (1 - p_t)^gamma factor with
  `apply_class_balancing=False`, so alpha is ignored there. We follow Lin et
  al. (the cited reference, and the code's focal factor); `alpha=None` drops
  the alpha_t weight and reproduces what the study's code ran. The paper's
  remark that gamma=0, alpha=1 gives binary cross entropy holds for its
  alpha-on-both-terms form; here the same identity is gamma=0, alpha=None
  (alpha=1 here keeps only the positive voxels, alpha=0.5 gives BCE / 2).

  Keras' BinaryFocalCrossentropy is this loss (see `keras_focal_loss`):
  apply_class_balancing=False is alpha=None, True is alpha=alpha.

  Args:
    logits: (N, *spatial, C) logits, one independent sigmoid per channel.
    targets: (N, *spatial, C) in {0, 1} (soft labels in [0, 1] also work).
    alpha: weight of positive voxels (negatives get 1 - alpha); None: no
      weighting.
    gamma: focusing exponent; 0 gives (alpha-weighted) cross entropy.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar mean over the included voxels and all channels.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  loss = optax.sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
  return _masked_mean(loss, mask)


def softmax_focal_loss(logits: Array, targets: Array,
                       alpha: float | None = None, gamma: float = 2.0,
                       include_background: bool = True,
                       mask: Array | None = None) -> Array:
  """Multi-class focal loss, -sum_c alpha_c (1 - p_c)^gamma y_c log p_c.

  p = softmax(logits) over all channels; the per-voxel sum over classes is
  averaged over voxels, so gamma=0, alpha=None is `softmax_cross_entropy`.
  alpha_c follows MONAI's scalar convention: 1 - alpha for class 0
  (background), alpha for the others. MONAI's FocalLoss(use_softmax=True)
  also averages over channels (its value is ours / C) and, with
  include_background=False, takes the softmax over the remaining channels;
  here the softmax always covers all classes and channel 0 is then left out
  of the sum.

  Args:
    logits: (N, *spatial, C) class logits.
    targets: (N, *spatial, C) one-hot.
    alpha: class-balance weight (see above), or None for none.
    gamma: focusing exponent.
    include_background: False leaves class 0 out of the sum.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar mean over the included voxels.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  log_p, log_q = _log_probs(logits, 'softmax')
  weight = _class_balance(logits.shape[-1], alpha, logits.dtype)
  loss = -weight * jnp.exp(gamma * log_q) * targets * log_p
  if not include_background:
    loss = loss[..., 1:]
  return _masked_mean(jnp.sum(loss, axis=-1, keepdims=True),
                      _voxel_mask(mask))


def focal_loss(logits: Array, targets: Array, alpha: float | None = 0.25,
               gamma: float = 1.0, activation: str = 'sigmoid',
               include_background: bool = True,
               mask: Array | None = None) -> Array:
  """Focal loss (Lin et al. 2017) for sigmoid or softmax outputs.

  'sigmoid': `sigmoid_focal_loss` (mean over voxels and channels; equal to
  MONAI FocalLoss and, with alpha=None, to Keras BinaryFocalCrossentropy).
  'softmax': `softmax_focal_loss` (sum over classes, mean over voxels).
  Defaults are seed 002's (alpha 0.25, gamma 1).

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    alpha: positive-class (sigmoid) or foreground-class (softmax) weight,
      the other side gets 1 - alpha; None: no weighting.
    gamma: focusing exponent.
    activation: 'sigmoid' or 'softmax'.
    include_background: False drops channel 0.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  _check_activation(activation)
  if activation == 'softmax':
    return softmax_focal_loss(logits, targets, alpha=alpha, gamma=gamma,
                              include_background=include_background,
                              mask=mask)
  logits, targets, mask = _check_inputs(logits, targets, mask)
  logits, targets, mask = _drop_background(logits, targets, mask,
                                           include_background)
  return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma,
                            mask=mask)


def keras_focal_loss(logits: Array, targets: Array, gamma: float = 2.0,
                     apply_class_balancing: bool = False, alpha: float = 0.25,
                     label_smoothing: float = 0.0,
                     mask: Array | None = None) -> Array:
  """tf.keras.losses.BinaryFocalCrossentropy (seed 000), from logits.

  Keras (TF >= 2.10, Keras 3) computes, element-wise and then the mean,

    y' = y (1 - label_smoothing) + label_smoothing / 2
    p_t = y' p + (1 - y')(1 - p)
    loss = w (1 - p_t)^gamma BCE(y', p),
    w = y' alpha + (1 - y')(1 - alpha) if apply_class_balancing else 1,

  which is Lin's focal loss: this function is exactly
  `sigmoid_focal_loss(logits, y', alpha=alpha if apply_class_balancing else
  None, gamma=gamma)`. Note the defaults differ: Keras gamma 2 (seed 000),
  'focal' gamma 1 and alpha 0.25 applied (seed 002). Keras on probabilities
  (from_logits=False, what seed 000's sigmoid outputs fed it) clips p to
  [1e-7, 1 - 1e-7]; that changes the value only where |logit| > 16.1.

  Args:
    logits: (N, *spatial, C) logits, one independent sigmoid per channel.
    targets: (N, *spatial, C) in {0, 1}.
    gamma: focusing exponent (Keras default 2).
    apply_class_balancing: weight positives by alpha, negatives by 1 - alpha.
    alpha: the balancing weight (used only with apply_class_balancing).
    label_smoothing: Keras label smoothing towards 0.5.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar mean over the included voxels and all channels.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
  return sigmoid_focal_loss(logits, targets,
                            alpha=alpha if apply_class_balancing else None,
                            gamma=gamma, mask=mask)


# ------------------------------------------------------------ region losses


def soft_dice_loss(logits: Array, targets: Array, activation: str = 'sigmoid',
                   smooth: float = 1.0, squared: bool = False,
                   per_sample: bool = False, mask: Array | None = None,
                   log: bool = False, include_background: bool = True) -> Array:
  """Soft Dice loss, 1 - (2 sum p y + smooth) / (sum p + sum y + smooth).

  The sums run per channel, over the spatial axes of each sample
  (`per_sample=True`, MONAI's default `batch=False`) or over the whole batch
  (`per_sample=False`, one pooled Dice per channel, as Keras code that
  flattens the batch computes it; seed 002's code did this). The loss is the
  mean of the per-channel (and per-sample) losses. When smooth = 0 and a
  channel is empty in both prediction and target, its Dice counts as 1.
  Equal to MONAI DiceLoss(smooth_nr=smooth_dr=smooth, batch=not per_sample,
  squared_pred=squared).

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary targets ('sigmoid') or one-hot
      ('softmax').
    activation: 'sigmoid' or 'softmax' (applied to logits).
    smooth: added to numerator and denominator.
    squared: use sum p^2 + sum y^2 in the denominator (Milletari et al.).
    per_sample: Dice per sample instead of pooled over the batch.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).
    log: return -log(Dice) instead of 1 - Dice (seed 002's code used
      -log(Dice) with smooth=100); needs smooth > 0.
    include_background: False drops channel 0 from the loss.

  Returns:
    Scalar loss.
  """
  probs, targets = _region_inputs(logits, targets, mask, activation,
                                  include_background)
  dice = _dice_scores(probs, targets, smooth, squared, per_sample)
  if log:
    return jnp.mean(-jnp.log(dice))
  return jnp.mean(1.0 - dice)


def soft_iou_loss(logits: Array, targets: Array, activation: str = 'sigmoid',
                  smooth: float = 1.0, squared: bool = False,
                  per_sample: bool = False, include_background: bool = True,
                  mask: Array | None = None) -> Array:
  """Soft Jaccard (IoU) loss, 1 - (I + smooth) / (U + smooth), per channel.

  I = sum p y, U = sum p + sum y - I (squared: sum p^2 + sum y^2 - I); seed
  000's "IoU loss = 1 - IoU". MONAI DiceLoss(jaccard=True) writes
  (2I + s) / (2U + s): the same loss with s = 2 * smooth. Reductions and
  arguments as `soft_dice_loss`.

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    smooth: added to intersection and union.
    squared: squared sums in the union.
    per_sample: IoU per sample instead of pooled over the batch.
    include_background: False drops channel 0.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  probs, targets = _region_inputs(logits, targets, mask, activation,
                                  include_background)
  axes = _region_axes(probs.ndim, per_sample)
  intersection = jnp.sum(probs * targets, axis=axes)
  power = 2 if squared else 1
  union = (jnp.sum(probs**power, axis=axes) +
           jnp.sum(targets**power, axis=axes) - intersection)
  iou = _safe_ratio(intersection + smooth, union + smooth, 1.0)
  return jnp.mean(1.0 - iou)


def tversky_loss(logits: Array, targets: Array, activation: str = 'sigmoid',
                 alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0,
                 per_sample: bool = False, include_background: bool = True,
                 mask: Array | None = None) -> Array:
  """Tversky loss (Salehi et al. 2017), 1 - TI averaged over channels.

    TI = (TP + smooth) / (TP + alpha FP + beta FN + smooth),
    TP = sum p y, FP = sum p (1 - y), FN = sum (1 - p) y.

  alpha weights false positives and beta false negatives (Salehi, MONAI
  TverskyLoss); alpha = beta = 0.5 is Dice. Defaults 0.3 / 0.7 (Salehi's
  best). Jadon's and Abraham & Khan's code name them the other way round
  (their alpha = 0.7 is on FN).

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    alpha: weight of false positives.
    beta: weight of false negatives.
    smooth: added to numerator and denominator.
    per_sample: per sample instead of pooled over the batch.
    include_background: False drops channel 0.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  probs, targets = _region_inputs(logits, targets, mask, activation,
                                  include_background)
  ti = _tversky_scores(probs, targets, alpha, beta, smooth, per_sample)
  return jnp.mean(1.0 - ti)


def focal_tversky_loss(logits: Array, targets: Array,
                       activation: str = 'sigmoid', alpha: float = 0.3,
                       beta: float = 0.7, gamma: float = 0.75,
                       smooth: float = 1.0, per_sample: bool = False,
                       include_background: bool = True,
                       mask: Array | None = None) -> Array:
  """Focal Tversky loss (Abraham & Khan 2019), mean of (1 - TI)^gamma.

  TI as in `tversky_loss` (alpha on FP, beta on FN). Abraham & Khan write
  the exponent as 1/gamma with gamma = 4/3; `gamma` here is the exponent
  itself (default 0.75 = 3/4, as Jadon's code). gamma = 1 is `tversky_loss`.

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    alpha: weight of false positives.
    beta: weight of false negatives.
    gamma: exponent on 1 - TI (< 1 focuses on hard, low-TI channels).
    smooth: added to numerator and denominator.
    per_sample: per sample instead of pooled over the batch.
    include_background: False drops channel 0.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  probs, targets = _region_inputs(logits, targets, mask, activation,
                                  include_background)
  ti = _tversky_scores(probs, targets, alpha, beta, smooth, per_sample)
  return jnp.mean(_safe_pow(1.0 - ti, gamma))


def log_cosh_dice_loss(logits: Array, targets: Array,
                       activation: str = 'sigmoid', smooth: float = 1.0,
                       squared: bool = False, per_sample: bool = False,
                       include_background: bool = True,
                       mask: Array | None = None) -> Array:
  """Log-cosh Dice loss (Jadon 2020; seed 003), mean of log(cosh(1 - Dice)).

  The log-cosh is taken of each channel's (and sample's) Dice loss, then
  averaged; for one channel, pooled, it is log(cosh(`soft_dice_loss`)), as
  Jadon's code computes it.

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    smooth: Dice smoothing term.
    squared: squared Dice denominator.
    per_sample: per sample instead of pooled over the batch.
    include_background: False drops channel 0.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  probs, targets = _region_inputs(logits, targets, mask, activation,
                                  include_background)
  dice = _dice_scores(probs, targets, smooth, squared, per_sample)
  return jnp.mean(jnp.log(jnp.cosh(1.0 - dice)))


def sensitivity_specificity_loss(logits: Array, targets: Array,
                                 activation: str = 'sigmoid', r: float = 0.05,
                                 per_sample: bool = False,
                                 include_background: bool = True,
                                 mask: Array | None = None) -> Array:
  """Sensitivity-specificity loss (Brosch et al. 2015), mean over channels.

    SS = r sum (y - p)^2 y / sum y + (1 - r) sum (y - p)^2 (1 - y) / sum (1 - y)

  The first term is the squared error on the positives (sensitivity), the
  second on the negatives (specificity); r is Brosch's "sensitivity ratio"
  (0.05 as NiftyNet's implementation; the authors report 0.01-0.1 behave
  alike). A channel without positives (or negatives) gets 0 for that term.

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    r: weight of the sensitivity term (the specificity term gets 1 - r).
    per_sample: per sample instead of pooled over the batch.
    include_background: False drops channel 0.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  probs = _probabilities(logits, activation)
  probs, targets, mask = _drop_background(probs, targets, mask,
                                          include_background)
  counted = jnp.ones_like(targets) if mask is None else jnp.broadcast_to(
      mask, targets.shape)
  axes = _region_axes(probs.ndim, per_sample)
  error = (targets - probs)**2 * counted
  positives = targets * counted
  negatives = (1.0 - targets) * counted
  sensitivity = _safe_ratio(jnp.sum(error * positives, axis=axes),
                            jnp.sum(positives, axis=axes), 0.0)
  specificity = _safe_ratio(jnp.sum(error * negatives, axis=axes),
                            jnp.sum(negatives, axis=axes), 0.0)
  return jnp.mean(r * sensitivity + (1.0 - r) * specificity)


def generalized_dice_loss(logits: Array, targets: Array,
                          activation: str = 'sigmoid',
                          weight_type: str = 'square', smooth: float = 1e-5,
                          per_sample: bool = True,
                          include_background: bool = True,
                          mask: Array | None = None) -> Array:
  """Generalized Dice loss (Sudre et al. 2017), as MONAI GeneralizedDiceLoss.

    GDL = 1 - (2 sum_c w_c sum p y + smooth) / (sum_c w_c sum (p + y) + smooth)

  with w_c = 1 / (sum y)^2 ('square'), 1 / sum y ('simple') or 1
  ('uniform'), computed from the targets (no gradient). A class absent from
  the target (infinite weight) gets the largest finite weight of the other
  classes (MONAI). per_sample=True (MONAI batch=False): one GDL per sample,
  then the mean; False: one GDL over the batch. smooth is MONAI's
  smooth_nr = smooth_dr.

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    weight_type: 'square', 'simple' or 'uniform'.
    smooth: added to numerator and denominator.
    per_sample: GDL per sample instead of pooled over the batch.
    include_background: False drops channel 0.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  if weight_type not in WEIGHT_TYPES:
    raise ValueError(f'unknown weight_type {weight_type!r}; known: '
                     f'{WEIGHT_TYPES}')
  probs, targets = _region_inputs(logits, targets, mask, activation,
                                  include_background)
  axes = _region_axes(probs.ndim, per_sample)
  intersection = jnp.sum(probs * targets, axis=axes)
  denominator = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes)
  volume = jnp.sum(targets, axis=axes)
  if weight_type == 'uniform':
    weights = jnp.ones_like(volume)
  else:
    power = 2 if weight_type == 'square' else 1
    present = volume > 0
    weights = jnp.where(present,
                        1.0 / jnp.where(present, volume, 1.0)**power, 0.0)
    largest = jnp.max(weights, axis=-1, keepdims=True)
    weights = jnp.where(present, weights, largest)
  numerator = 2.0 * jnp.sum(weights * intersection, axis=-1) + smooth
  denominator = jnp.sum(weights * denominator, axis=-1) + smooth
  return jnp.mean(1.0 - _safe_ratio(numerator, denominator, 1.0))


# ---------------------------------------------------------- boundary losses


def _voxel_cross_entropy(logits: Array, targets: Array, activation: str,
                         pos: Array | float = 1.0,
                         neg: Array | float = 1.0) -> Array:
  """Cross entropy per element ('sigmoid', (N, *S, C)) or voxel ('softmax').

  'sigmoid': -(pos y log p + neg (1 - y) log(1 - p)) per channel.
  'softmax': -sum_c pos_c y_c log p_c, shape (N, *S, 1) (`neg` unused).
  """
  _check_activation(activation)
  if activation == 'sigmoid':
    return _weighted_bce(logits, targets, pos, neg)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(pos * targets * log_p, axis=-1, keepdims=True)


def shape_aware_loss(logits: Array, targets: Array,
                     activation: str = 'sigmoid', distance_weight: float = 1.0,
                     mask: Array | None = None) -> Array:
  """Shape-aware loss (Jadon 2020, seed 003 section 5.3): distance-weighted CE.

    L = mean_x (1 + distance_weight * E(x)) CE(x),

  Jadon's -sum CE - sum E_i CE, with E(x) the Euclidean distance (voxels)
  from x to the target's boundary: `distance_map(targets)`, the distance to
  the nearest voxel of the other class (1 next to the boundary; 0 for images
  with no boundary). Wrong voxels far from the true outline cost more, which
  is what the point-to-curve distance of Hayder/Al Arif's shape-aware loss
  rewards; unlike theirs, E comes from the target alone (not from the
  predicted contour), so it is a fixed per-voxel weight and the loss stays a
  weighted cross entropy. 'sigmoid': every channel with its own map;
  'softmax': each voxel weighted by the map of its true class.

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    distance_weight: scale of the distance term (0 gives plain CE).
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar mean over the included voxels (and channels, 'sigmoid').
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  distance = distance_map(targets > 0.5).astype(logits.dtype)
  ce = _voxel_cross_entropy(logits, targets, activation)
  if activation == 'softmax':
    distance = jnp.sum(distance * targets, axis=-1, keepdims=True)
    mask = _voxel_mask(mask)
  return _masked_mean((1.0 + distance_weight * distance) * ce, mask)


def boundary_loss(logits: Array, targets: Array, activation: str = 'sigmoid',
                  include_background: bool = True, region_weight: float = 0.0,
                  mask: Array | None = None) -> Array:
  """Boundary loss (Kervadec et al. 2019), as MONAI BoundaryLoss.

    L_B = mean_x p(x) phi(x) + region_weight * GDL,

  phi the signed distance map of the target (`distance_map(signed=True)`:
  <= 0 inside, > 0 outside, 0 for images with no boundary), p the sigmoid or
  softmax probabilities; mean over voxels and channels. It can be negative.
  Kervadec et al. train it next to a region loss, GDL + alpha L_B with alpha
  rising: `region_weight` adds `generalized_dice_loss` (its defaults, same
  activation and channels) and sums the two; for the paper's schedule scale
  the whole loss outside. They also keep only the foreground
  (include_background=False with softmax).

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    include_background: False drops channel 0 (after the softmax).
    region_weight: weight of the generalized Dice term (0: boundary only).
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  probs = _probabilities(logits, activation)
  probs, targets_fg, mask_fg = _drop_background(probs, targets, mask,
                                                include_background)
  phi = distance_map(targets_fg > 0.5, signed=True).astype(probs.dtype)
  region = generalized_dice_loss(logits, targets, activation=activation,
                                 include_background=include_background,
                                 mask=mask)
  return _masked_mean(probs * phi, mask_fg) + region_weight * region


def hausdorff_dt_loss(logits: Array, targets: Array,
                      activation: str = 'sigmoid', alpha: float = 2.0,
                      include_background: bool = True,
                      mask: Array | None = None) -> Array:
  """Hausdorff-distance loss (Karimi & Salcudean 2019), as MONAI computes it.

  Equal to MONAI HausdorffDTLoss:

    L = mean_x (p - y)^2 (d_p(x)^alpha + d_y(x)^alpha),

  d_y the distance map of the target and d_p of the thresholded prediction
  (p > 0.5), both `distance_map` (unsigned, 0 for images with no boundary;
  no gradient through them). Mean over voxels and channels. MONAI's default
  is include_background=False; ours is True (sigmoid regions have no
  background channel).

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    alpha: exponent of the distances (Karimi & Salcudean: 2).
    include_background: False drops channel 0 (after the softmax).
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  probs = _probabilities(logits, activation)
  probs, targets, mask = _drop_background(probs, targets, mask,
                                          include_background)
  pred_distance = distance_map(probs > 0.5).astype(probs.dtype)
  target_distance = distance_map(targets > 0.5).astype(probs.dtype)
  distance = pred_distance**alpha + target_distance**alpha
  return _masked_mean((probs - targets)**2 * distance, mask)


# ---------------------------------------------------------- compound losses


def focal_dice_loss(logits: Array, targets: Array, alpha: float | None = 0.25,
                    gamma: float = 1.0, focal_weight: float = 0.8,
                    dice_weight: float = 0.2, smooth: float = 1.0,
                    per_sample: bool = False, log_dice: bool = False,
                    mask: Array | None = None) -> Array:
  """Seed 002 eq. 4: w_F * focal + w_D * (1 - Dice), sigmoid outputs.

  Defaults are table 3 of the seed (alpha 0.25, gamma 1, w_F 0.8, w_D 0.2)
  with the focal term of `sigmoid_focal_loss` (Lin et al.) and the pooled
  soft Dice of `soft_dice_loss`. The study's Keras code differs from the
  paper's equations: alpha unused (`alpha=None`), Dice loss -log(Dice)
  (`log_dice=True`) with smooth=100, Dice pooled over the batch
  (`per_sample=False`). `dice_focal_loss` is the same sum for sigmoid or
  softmax with MONAI's defaults.

  Args:
    logits: (N, *spatial, C) logits, one independent sigmoid per channel.
    targets: (N, *spatial, C) in {0, 1}.
    alpha: focal positive-class weight, or None for no weighting.
    gamma: focal exponent.
    focal_weight: w_F.
    dice_weight: w_D.
    smooth: Dice smoothing term.
    per_sample: Dice per sample instead of pooled over the batch.
    log_dice: use -log(Dice) instead of 1 - Dice.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  focal = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma,
                             mask=mask)
  dice = soft_dice_loss(logits, targets, activation='sigmoid', smooth=smooth,
                        per_sample=per_sample, mask=mask, log=log_dice)
  return focal_weight * focal + dice_weight * dice


def dice_focal_loss(logits: Array, targets: Array, activation: str = 'sigmoid',
                    gamma: float = 2.0, alpha: float | None = None,
                    dice_weight: float = 1.0, focal_weight: float = 1.0,
                    smooth: float = 1e-5, squared: bool = False,
                    per_sample: bool = True, include_background: bool = True,
                    mask: Array | None = None) -> Array:
  """Dice + focal, as MONAI DiceFocalLoss (its defaults).

    L = dice_weight * soft Dice loss + focal_weight * focal loss,

  with `soft_dice_loss` (smooth, squared, per_sample) and `focal_loss`
  (gamma, alpha), both with the same activation and channels. 'sigmoid'
  equals MONAI DiceFocalLoss(sigmoid=True). With softmax, MONAI 1.6's
  DiceFocalLoss still applies the *sigmoid* focal loss to the logits; here
  the focal term is the softmax one (`softmax_focal_loss`, = MONAI
  FocalLoss(use_softmax=True) x C).

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    gamma: focal exponent.
    alpha: focal class weight (see `focal_loss`), or None.
    dice_weight: weight of the Dice loss (MONAI lambda_dice).
    focal_weight: weight of the focal loss (MONAI lambda_focal).
    smooth: Dice smoothing (MONAI smooth_nr = smooth_dr).
    squared: squared Dice denominator (MONAI squared_pred).
    per_sample: Dice per sample (MONAI batch=False) or pooled.
    include_background: False drops channel 0 from both terms.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  dice = soft_dice_loss(logits, targets, activation=activation, smooth=smooth,
                        squared=squared, per_sample=per_sample, mask=mask,
                        include_background=include_background)
  focal = focal_loss(logits, targets, alpha=alpha, gamma=gamma,
                     activation=activation,
                     include_background=include_background, mask=mask)
  return dice_weight * dice + focal_weight * focal


def softmax_dice_ce(logits: Array, targets: Array, dice_weight: float = 1.0,
                    ce_weight: float = 1.0, smooth: float = 1.0,
                    squared: bool = False, per_sample: bool = False,
                    include_background: bool = True,
                    mask: Array | None = None,
                    activation: str = 'softmax') -> Array:
  """Dice + cross entropy (nnU-Net / MONAI DiceCELoss style).

  'softmax' (default): softmax soft Dice + softmax cross entropy, as MONAI
  DiceCELoss(softmax=True). 'sigmoid': sigmoid soft Dice + binary cross
  entropy (mean over voxels and channels); MONAI DiceCELoss(sigmoid=True)
  does this only for one channel and otherwise still uses the softmax cross
  entropy. include_background affects the Dice term only (as MONAI).

  Args:
    logits: (N, *spatial, C) class logits.
    targets: (N, *spatial, C) one-hot ('softmax') or binary ('sigmoid').
    dice_weight: weight of the soft Dice loss.
    ce_weight: weight of the cross entropy.
    smooth: Dice smoothing term.
    squared: squared Dice denominator.
    per_sample: Dice per sample instead of pooled over the batch.
    include_background: False drops channel 0 from the Dice term.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).
    activation: 'softmax' or 'sigmoid'.

  Returns:
    Scalar loss.
  """
  dice = soft_dice_loss(logits, targets, activation=activation, smooth=smooth,
                        squared=squared, per_sample=per_sample, mask=mask,
                        include_background=include_background)
  if activation == 'softmax':
    ce = softmax_cross_entropy(logits, targets, mask=mask)
  else:
    ce = binary_cross_entropy(logits, targets, mask=mask)
  return dice_weight * dice + ce_weight * ce


def combo_loss(logits: Array, targets: Array, activation: str = 'sigmoid',
               alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0,
               per_sample: bool = False, include_background: bool = True,
               mask: Array | None = None) -> Array:
  """Combo loss (Taghanaki et al. 2019): alpha wCE + (1 - alpha)(1 - Dice).

    wCE = -mean(beta y log p + (1 - beta)(1 - y) log(1 - p))

  The paper writes alpha wCE - (1 - alpha) Dice; we use 1 - Dice, which
  differs by the constant 1 - alpha (same gradients) and keeps the loss
  >= 0: paper value = ours - (1 - alpha). beta > 0.5 penalises false
  negatives more. 'softmax': wCE = -mean_x sum_c beta_c y_c log p_c with
  beta_c = 1 - beta for class 0 (background) and beta for the others (for
  two classes exactly the binary form). Dice: `soft_dice_loss` (smooth,
  per_sample, include_background); the cross entropy keeps all channels.

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    alpha: weight of the cross entropy (the Dice term gets 1 - alpha).
    beta: weight of the positive (foreground) term of the cross entropy.
    smooth: Dice smoothing term.
    per_sample: Dice per sample instead of pooled over the batch.
    include_background: False drops channel 0 from the Dice term.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  dice = soft_dice_loss(logits, targets, activation=activation, smooth=smooth,
                        per_sample=per_sample, mask=mask,
                        include_background=include_background)
  logits, targets, mask = _check_inputs(logits, targets, mask)
  if activation == 'softmax':
    pos = _class_balance(logits.shape[-1], beta, logits.dtype)
    ce = _voxel_cross_entropy(logits, targets, 'softmax', pos)
    mask = _voxel_mask(mask)
  else:
    ce = _voxel_cross_entropy(logits, targets, activation, beta, 1.0 - beta)
  return alpha * _masked_mean(ce, mask) + (1.0 - alpha) * dice


def _frequency_weights(targets: Array, mask: Array | None,
                       activation: str) -> Array:
  """Wong et al.'s label weights ((sum_k f_k) / f_l)^0.5, per element.

  'softmax': f_l = voxels of class l in the batch. 'sigmoid': each channel
  is a two-label problem (f = its positive and its negative voxels).
  Counted voxels only; a label with no voxel gets weight 0 (it weights
  nothing). No gradient (targets only).
  """
  axes = tuple(range(targets.ndim - 1))
  counted = jnp.ones_like(targets) if mask is None else jnp.broadcast_to(
      mask, targets.shape)
  total = jnp.sum(counted, axis=axes)
  positives = jnp.sum(targets * counted, axis=axes)
  w_pos = jnp.sqrt(_safe_ratio(total, positives, 0.0))
  if activation == 'softmax':
    return jnp.sum(w_pos * targets, axis=-1, keepdims=True)
  w_neg = jnp.sqrt(_safe_ratio(total, total - positives, 0.0))
  return targets * w_pos + (1.0 - targets) * w_neg


def exp_log_loss(logits: Array, targets: Array, activation: str = 'sigmoid',
                 dice_weight: float = 0.8, ce_weight: float = 0.2,
                 gamma_dice: float = 0.3, gamma_ce: float = 0.3,
                 smooth: float = 1.0,
                 label_weights: str | Sequence[float] | None = None,
                 per_sample: bool = False, include_background: bool = True,
                 mask: Array | None = None) -> Array:
  """Exponential logarithmic loss (Wong et al. 2018).

    L = w_dice E_i[(-ln Dice_i)^gamma_dice]
        + w_ce E_x[w_l (-ln p_l(x))^gamma_ce]

  Dice_i = (2 sum p y + smooth) / (sum p + sum y + smooth) per channel i
  (smooth = 1, Wong's epsilon); l the true label of voxel x and p_l its
  probability ('sigmoid': per channel, p_l = p or 1 - p; soft labels use the
  BCE in place of -ln p_l). Defaults are the paper's (0.8, 0.2, 0.3, 0.3).
  Label weights w_l: None (all 1); 'frequency', Wong's ((sum_k f_k) / f_l)^0.5
  from the label counts f of this batch ('sigmoid': positives and negatives
  of each channel); or a sequence ('softmax': one per class; 'sigmoid': one
  per channel, on the positive voxels, negatives 1), e.g. Wong's weights
  from training-set frequencies. include_background affects the Dice term.

  Args:
    logits: (N, *spatial, C) logits.
    targets: (N, *spatial, C) binary ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' or 'softmax'.
    dice_weight: w_dice.
    ce_weight: w_ce.
    gamma_dice: exponent on -ln Dice.
    gamma_ce: exponent on the cross entropy.
    smooth: Dice smoothing term.
    label_weights: None, 'frequency' or a sequence (see above).
    per_sample: Dice per sample instead of pooled over the batch.
    include_background: False drops channel 0 from the Dice term.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  if isinstance(label_weights, str) and label_weights != 'frequency':
    raise ValueError(f"label_weights must be None, 'frequency' or a sequence,"
                     f' got {label_weights!r}')
  probs, region_targets = _region_inputs(logits, targets, mask, activation,
                                         include_background)
  dice = _dice_scores(probs, region_targets, smooth, False, per_sample)
  dice_term = jnp.mean(_safe_pow(-jnp.log(dice), gamma_dice))
  logits, targets, mask = _check_inputs(logits, targets, mask)
  ce = _voxel_cross_entropy(logits, targets, activation)
  if activation == 'softmax':
    mask = _voxel_mask(mask)
  if label_weights is None:
    weights = 1.0
  elif isinstance(label_weights, str):
    weights = _frequency_weights(targets, mask, activation)
  else:
    w = jnp.asarray(label_weights, logits.dtype)
    if activation == 'softmax':
      weights = jnp.sum(w * targets, axis=-1, keepdims=True)
    else:
      weights = targets * w + (1.0 - targets)
  ce_term = _masked_mean(weights * _safe_pow(ce, gamma_ce), mask)
  return dice_weight * dice_term + ce_weight * ce_term


# ------------------------------------------------------------- the registry

LOSSES: dict[str, LossFn] = {
    # distribution
    'bce': binary_cross_entropy,
    'weighted_bce': weighted_binary_cross_entropy,
    'balanced_bce': balanced_binary_cross_entropy,
    'softmax_ce': softmax_cross_entropy,
    'focal': focal_loss,
    'keras_focal': keras_focal_loss,
    # region
    'dice': soft_dice_loss,
    'iou': soft_iou_loss,
    'tversky': tversky_loss,
    'focal_tversky': focal_tversky_loss,
    'log_cosh_dice': log_cosh_dice_loss,
    'sensitivity_specificity': sensitivity_specificity_loss,
    'generalized_dice': generalized_dice_loss,
    # boundary
    'shape_aware': shape_aware_loss,
    'boundary': boundary_loss,
    'hausdorff_dt': hausdorff_dt_loss,
    # compound
    'focal_dice': focal_dice_loss,
    'dice_focal': dice_focal_loss,
    'dice_ce': softmax_dice_ce,
    'combo': combo_loss,
    'exp_log': exp_log_loss,
}

# Losses without an `activation` parameter, and the one they assume; every
# other loss takes `activation` (its default is what the config gets when it
# sets none).
SIGMOID_LOSSES = ('focal_dice', 'bce', 'weighted_bce', 'balanced_bce',
                  'keras_focal')
SOFTMAX_LOSSES = ('softmax_ce',)

# Parameters whose value must be one of a few strings (checked by `build`).
_CHOICES = {'activation': ACTIVATIONS, 'weight_type': WEIGHT_TYPES}


def activation_of(loss_config: Any) -> str | None:
  """'sigmoid' or 'softmax': what the configured loss applies to the logits."""
  name = loss_config.get('name')
  if name in SIGMOID_LOSSES:
    return 'sigmoid'
  if name in SOFTMAX_LOSSES:
    return 'softmax'
  default = loss_params(name).get('activation', 'sigmoid') if (
      name in LOSSES) else 'sigmoid'
  return loss_config.get('activation', default)

# Arguments that come from the data, not from the config.
_DATA_ARGS = ('logits', 'targets', 'mask')


def _params(fn: LossFn) -> list[str]:
  return [p for p in inspect.signature(fn).parameters if p not in _DATA_ARGS]


def build(loss_config: Any) -> Callable[..., Array]:
  """Loss function from a config: `name` plus that loss's keyword arguments.

  Example: ConfigDict(name='focal_dice', alpha=0.25, gamma=1.0,
  focal_weight=0.8, dice_weight=0.2). Keys left out keep the defaults.
  With `deep_supervision_weights` (one weight per head, the model's order)
  the loss takes the list of heads of a deep-supervision model.

  Args:
    loss_config: ml_collections.ConfigDict (or mapping) with key `name`.

  Returns:
    loss_fn(logits, targets, mask=None) -> scalar (logits: one array, or the
    list of heads when `deep_supervision_weights` is set).

  Raises:
    errors.InputError: unknown name, unknown key, or a bad value of a string
    parameter (activation, weight_type).
  """
  if hasattr(loss_config, 'to_dict'):
    params = dict(loss_config.to_dict())
  else:
    params = dict(loss_config)
  name = params.pop('name', None)
  weights = params.pop('deep_supervision_weights', None)
  if name not in LOSSES:
    raise errors.InputError(
        'config.loss.name',
        f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}")
  fn = LOSSES[name]
  known = _params(fn)
  for key in params:
    if key not in known:
      raise errors.InputError(
          f'config.loss.{key}',
          f"not a parameter of loss '{name}'; known: {', '.join(known)}")
  for key, choices in _CHOICES.items():
    if key in params and params[key] not in choices:
      raise errors.InputError(
          f'config.loss.{key}',
          f'unknown {key} {params[key]!r}; known: {", ".join(choices)}')

  @functools.wraps(fn)
  def loss_fn(logits: Array, targets: Array,
              mask: Array | None = None) -> Array:
    return fn(logits, targets, mask=mask, **params)

  if weights is not None:
    return deep_supervision(loss_fn, weights)
  return loss_fn


def deep_supervision(loss_fn: Callable[..., Array],
                     weights: Sequence[float]) -> Callable[..., Array]:
  """Weighted sum of `loss_fn` over the heads of a deep-supervision model.

  Every head must already have the targets' shape (N, *spatial, C); the
  weights are used as given (not normalised).

  Args:
    loss_fn: loss_fn(logits, targets, mask=None) -> scalar.
    weights: one weight per head, in the model's head order.

  Returns:
    fn(list_of_logits, targets, mask=None) -> scalar sum_i w_i loss_fn(head_i);
    given one array (the model's single eval-mode output), plain loss_fn.
  """
  weights = tuple(float(w) for w in weights)

  def supervised(logits: Sequence[Array] | Array, targets: Array,
                 mask: Array | None = None) -> Array:
    if not isinstance(logits, (list, tuple)):
      return loss_fn(logits, targets, mask=mask)   # one output (eval mode)
    heads = list(logits)
    if len(heads) != len(weights):
      raise ValueError(f'{len(heads)} heads but {len(weights)} '
                       'deep-supervision weights')
    total = jnp.zeros((), jnp.float32)
    for w, head in zip(weights, heads):
      if head.shape != targets.shape:
        raise ValueError(f'head {head.shape} does not match targets '
                         f'{targets.shape}; resize the heads first')
      total = total + w * loss_fn(head, targets, mask=mask)
    return total

  return supervised


def loss_params(name: str) -> Mapping[str, Any]:
  """Default keyword arguments of a registered loss (for docs and configs)."""
  fn = LOSSES[name]
  return {
      p.name: p.default
      for p in inspect.signature(fn).parameters.values()
      if p.name not in _DATA_ARGS
  }
