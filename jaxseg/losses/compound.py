"""Compound losses: weighted sums of an overlap and a distribution term.

  focal_dice (seed 002), dice_focal (MONAI), dice_ce, combo, exp_log
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxseg.losses import common
from jaxseg.losses.distribution import (binary_cross_entropy, focal_loss,
                                        sigmoid_focal_loss,
                                        softmax_cross_entropy)
from jaxseg.losses.overlap import soft_dice_loss

Array = jax.Array


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
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  if activation == 'softmax':
    pos = common.class_balance(logits.shape[-1], beta, logits.dtype)
    ce = common.voxel_cross_entropy(logits, targets, 'softmax', pos)
    mask = common.voxel_mask(mask)
  else:
    ce = common.voxel_cross_entropy(logits, targets, activation, beta, 1.0 - beta)
  return alpha * common.masked_mean(ce, mask) + (1.0 - alpha) * dice


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
  w_pos = jnp.sqrt(common.safe_ratio(total, positives, 0.0))
  if activation == 'softmax':
    return jnp.sum(w_pos * targets, axis=-1, keepdims=True)
  w_neg = jnp.sqrt(common.safe_ratio(total, total - positives, 0.0))
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
  probs, region_targets = common.region_inputs(logits, targets, mask, activation,
                                         include_background)
  dice = common.dice_scores(probs, region_targets, smooth, False, per_sample)
  dice_term = jnp.mean(common.safe_pow(-jnp.log(dice), gamma_dice))
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  ce = common.voxel_cross_entropy(logits, targets, activation)
  if activation == 'softmax':
    mask = common.voxel_mask(mask)
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
  ce_term = common.masked_mean(weights * common.safe_pow(ce, gamma_ce), mask)
  return dice_weight * dice_term + ce_weight * ce_term
