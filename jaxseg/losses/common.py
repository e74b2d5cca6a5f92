"""What every loss family shares: input checks, masked means, activations, region sums.

See `jaxseg.losses` for the conventions (shapes, masks, reductions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg import activations

Array = jax.Array


def check_inputs(logits: Array, targets: Array, mask: Array | None):
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


def masked_mean(values: Array, mask: Array | None) -> Array:
  """Mean of (N, *spatial, C) values over the voxels (and channels) in mask.

  Returns 0 when the mask selects nothing.
  """
  if mask is None:
    return jnp.mean(values)
  mask = jnp.broadcast_to(mask, values.shape)
  count = jnp.sum(mask)
  return jnp.sum(values * mask) / jnp.maximum(count, 1.0)


def voxel_mask(mask: Array | None) -> Array | None:
  """(N, *spatial, 1) mask for per-voxel (not per-channel) values."""
  return None if mask is None else mask[..., :1]


def safe_ratio(num: Array, den: Array, empty: float) -> Array:
  """num / den, and `empty` where den == 0 (no nan, no nan gradient)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), empty)


def safe_pow(x: Array, gamma: float) -> Array:
  """x ** gamma for x >= 0 with a finite gradient at x == 0 for gamma < 1."""
  ok = x > 0
  return jnp.where(ok, jnp.where(ok, x, 1.0)**gamma, 0.0)


check_activation = activations.check
probabilities = activations.probabilities


def drop_background(probs: Array, targets: Array, mask: Array | None,
                     include_background: bool):
  """Drops channel 0 of probs, targets (and a per-channel mask) if asked."""
  if include_background:
    return probs, targets, mask
  if probs.shape[-1] < 2:
    raise ValueError('include_background=False needs at least 2 channels')
  if mask is not None and mask.shape[-1] > 1:
    mask = mask[..., 1:]
  return probs[..., 1:], targets[..., 1:], mask


def region_inputs(logits: Array, targets: Array, mask: Array | None,
                   activation: str, include_background: bool):
  """Probabilities and targets for region scores, ignored voxels zeroed."""
  logits, targets, mask = check_inputs(logits, targets, mask)
  probs = probabilities(logits, activation)
  probs, targets, mask = drop_background(probs, targets, mask,
                                          include_background)
  if mask is not None:
    probs, targets = probs * mask, targets * mask
  return probs, targets


def region_axes(ndim: int, per_sample: bool) -> tuple[int, ...]:
  """Spatial axes (per sample) or batch and spatial axes (pooled)."""
  return tuple(range(1, ndim - 1)) if per_sample else tuple(range(ndim - 1))


def dice_scores(probs: Array, targets: Array, smooth: float, squared: bool,
                 per_sample: bool) -> Array:
  """(2 sum p y + smooth) / (sum p + sum y + smooth) per channel (and sample).

  0/0 (smooth = 0, both empty) counts as 1.
  """
  axes = region_axes(probs.ndim, per_sample)
  intersection = jnp.sum(probs * targets, axis=axes)
  if squared:
    denominator = jnp.sum(probs**2, axis=axes) + jnp.sum(targets**2, axis=axes)
  else:
    denominator = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes)
  return safe_ratio(2.0 * intersection + smooth, denominator + smooth, 1.0)


def tversky_scores(probs: Array, targets: Array, alpha: float, beta: float,
                    smooth: float, per_sample: bool) -> Array:
  """(TP + smooth) / (TP + alpha FP + beta FN + smooth) per channel."""
  axes = region_axes(probs.ndim, per_sample)
  tp = jnp.sum(probs * targets, axis=axes)
  fp = jnp.sum(probs * (1.0 - targets), axis=axes)
  fn = jnp.sum((1.0 - probs) * targets, axis=axes)
  return safe_ratio(tp + smooth, tp + alpha * fp + beta * fn + smooth, 1.0)


def log_probs(logits: Array, activation: str):
  """(log p, log(1 - p)) of each channel, computed stably from logits."""
  check_activation(activation)
  if activation == 'sigmoid':
    return jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  # log(1 - p_c) = logsumexp_{k != c} log p_k, finite for any logits.
  classes = logits.shape[-1]
  others = jnp.where(jnp.eye(classes, dtype=bool), -jnp.inf, 0.0)
  log_q = jax.nn.logsumexp(log_p[..., None, :] + others, axis=-1)
  return log_p, log_q


def class_balance(classes: int, alpha: float | None, dtype) -> Array:
  """Softmax class weights: 1 - alpha for class 0, alpha for the others."""
  if alpha is None:
    return jnp.ones((classes,), dtype)
  return jnp.asarray([1.0 - alpha] + [alpha] * (classes - 1), dtype)


def weighted_bce(logits: Array, targets: Array, pos: Array | float,
                  neg: Array | float) -> Array:
  """Element-wise -(pos y log p + neg (1 - y) log(1 - p)), from logits."""
  return -(pos * targets * jax.nn.log_sigmoid(logits) +
           neg * (1.0 - targets) * jax.nn.log_sigmoid(-logits))


def voxel_cross_entropy(logits: Array, targets: Array, activation: str,
                         pos: Array | float = 1.0,
                         neg: Array | float = 1.0) -> Array:
  """Cross entropy per element ('sigmoid', (N, *S, C)) or voxel ('softmax').

  'sigmoid': -(pos y log p + neg (1 - y) log(1 - p)) per channel.
  'softmax': -sum_c pos_c y_c log p_c, shape (N, *S, 1) (`neg` unused).
  """
  check_activation(activation)
  if activation == 'sigmoid':
    return weighted_bce(logits, targets, pos, neg)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(pos * targets * log_p, axis=-1, keepdims=True)
