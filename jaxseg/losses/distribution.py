"""Distribution (voxel-wise) losses: cross entropies and focal losses.

  bce, weighted_bce, balanced_bce, softmax_ce, focal, keras_focal

The element-wise cross entropies and the sigmoid focal term come from optax
(log-space, stable for any logit); these functions add masking and reduction.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from jaxseg.losses import common

Array = jax.Array


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
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  loss = optax.sigmoid_binary_cross_entropy(logits, targets)
  return common.masked_mean(loss, mask)




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
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  pos = jnp.asarray(pos_weight, logits.dtype)
  return common.masked_mean(common.weighted_bce(logits, targets, pos, 1.0), mask)


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
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  if beta is None:
    axes = common.region_axes(logits.ndim, per_sample=True)
    counted = jnp.ones_like(targets) if mask is None else jnp.broadcast_to(
        mask, targets.shape)
    positives = jnp.sum(targets * counted, axis=axes, keepdims=True)
    total = jnp.sum(counted, axis=axes, keepdims=True)
    beta = 1.0 - common.safe_ratio(positives, total, 0.0)
  loss = common.weighted_bce(logits, targets, beta, 1.0 - beta)
  return common.masked_mean(loss, mask)


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
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  if class_weights is None:
    loss = optax.softmax_cross_entropy(logits, targets)[..., None]
  else:
    w = jnp.asarray(class_weights, logits.dtype)
    loss = -jnp.sum(w * targets * jax.nn.log_softmax(logits, axis=-1),
                    axis=-1, keepdims=True)
  return common.masked_mean(loss, common.voxel_mask(mask))


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
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  loss = optax.sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
  return common.masked_mean(loss, mask)


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
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  log_p, log_q = common.log_probs(logits, 'softmax')
  weight = common.class_balance(logits.shape[-1], alpha, logits.dtype)
  loss = -weight * jnp.exp(gamma * log_q) * targets * log_p
  if not include_background:
    loss = loss[..., 1:]
  return common.masked_mean(jnp.sum(loss, axis=-1, keepdims=True),
                      common.voxel_mask(mask))


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
  common.check_activation(activation)
  if activation == 'softmax':
    return softmax_focal_loss(logits, targets, alpha=alpha, gamma=gamma,
                              include_background=include_background,
                              mask=mask)
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  logits, targets, mask = common.drop_background(logits, targets, mask,
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
  logits, targets, mask = common.check_inputs(logits, targets, mask)
  targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
  return sigmoid_focal_loss(logits, targets,
                            alpha=alpha if apply_class_balancing else None,
                            gamma=gamma, mask=mask)
