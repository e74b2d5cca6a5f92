"""Overlap (region) losses: Dice and its relatives, reduced per channel.

  dice, iou, tversky, focal_tversky, log_cosh_dice, sensitivity_specificity,
  generalized_dice
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.losses import common

Array = jax.Array

# Generalized Dice class weights: 1/n^2, 1/n, or 1.
WEIGHT_TYPES = ('square', 'simple', 'uniform')


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
  probs, targets = common.region_inputs(logits, targets, mask, activation,
                                  include_background)
  dice = common.dice_scores(probs, targets, smooth, squared, per_sample)
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
  probs, targets = common.region_inputs(logits, targets, mask, activation,
                                  include_background)
  axes = common.region_axes(probs.ndim, per_sample)
  intersection = jnp.sum(probs * targets, axis=axes)
  power = 2 if squared else 1
  union = (jnp.sum(probs**power, axis=axes) +
           jnp.sum(targets**power, axis=axes) - intersection)
  iou = common.safe_ratio(intersection + smooth, union + smooth, 1.0)
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
  probs, targets = common.region_inputs(logits, targets, mask, activation,
                                  include_background)
  ti = common.tversky_scores(probs, targets, alpha, beta, smooth, per_sample)
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
  probs, targets = common.region_inputs(logits, targets, mask, activation,
                                  include_background)
  ti = common.tversky_scores(probs, targets, alpha, beta, smooth, per_sample)
  return jnp.mean(common.safe_pow(1.0 - ti, gamma))


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
  probs, targets = common.region_inputs(logits, targets, mask, activation,
                                  include_background)
  dice = common.dice_scores(probs, targets, smooth, squared, per_sample)
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
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  probs = common.probabilities(logits, activation)
  probs, targets, mask = common.drop_background(probs, targets, mask,
                                          include_background)
  counted = jnp.ones_like(targets) if mask is None else jnp.broadcast_to(
      mask, targets.shape)
  axes = common.region_axes(probs.ndim, per_sample)
  error = (targets - probs)**2 * counted
  positives = targets * counted
  negatives = (1.0 - targets) * counted
  sensitivity = common.safe_ratio(jnp.sum(error * positives, axis=axes),
                            jnp.sum(positives, axis=axes), 0.0)
  specificity = common.safe_ratio(jnp.sum(error * negatives, axis=axes),
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
  probs, targets = common.region_inputs(logits, targets, mask, activation,
                                  include_background)
  axes = common.region_axes(probs.ndim, per_sample)
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
  return jnp.mean(1.0 - common.safe_ratio(numerator, denominator, 1.0))
