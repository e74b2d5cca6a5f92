"""Segmentation losses: pure, jit-able jax.numpy functions and a registry.

Conventions (shared by every loss here):

* `logits` and `targets` are channels-last, (N, *spatial, C), with 2D or 3D
  spatial dimensions. Losses take logits, never probabilities.
* `activation='sigmoid'`: every channel is an independent binary problem
  (binary masks, or the overlapping BraTS regions WT/TC/ET); targets in {0, 1}.
  `activation='softmax'`: the channels are mutually exclusive classes; targets
  are one-hot.
* `mask` (optional) is (N, *spatial) (or (N, *spatial, C)) with 1 for voxels
  that count and 0 for voxels to ignore. Voxel-wise losses average over the
  counted voxels (and channels); Dice sums only over counted voxels.
* Every loss returns a float32 scalar. String arguments (`activation`) are
  Python values, so they are static under `jax.jit`.

The element-wise cross entropies and the focal term come from optax (log-space,
stable for any logit); this module adds the masking, the reductions and Dice.

`build(config.loss)` turns a config (`name` plus the loss's keyword arguments)
into `loss_fn(logits, targets, mask=None) -> scalar`.
"""

import functools
import inspect
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxseg import errors

Array = jax.Array
LossFn = Callable[..., Array]

ACTIVATIONS = ('sigmoid', 'softmax')


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


def _safe_ratio(num: Array, den: Array, empty: float) -> Array:
  """num / den, and `empty` where den == 0 (no nan, no nan gradient)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), empty)


def _probabilities(logits: Array, activation: str) -> Array:
  if activation == 'sigmoid':
    return jax.nn.sigmoid(logits)
  if activation == 'softmax':
    return jax.nn.softmax(logits, axis=-1)
  raise ValueError(f'unknown activation {activation!r}; known: {ACTIVATIONS}')


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


def softmax_cross_entropy(logits: Array, targets: Array,
                          mask: Array | None = None) -> Array:
  """Softmax cross entropy over the channel axis, mean over voxels.

  Args:
    logits: (N, *spatial, C) class logits.
    targets: (N, *spatial, C) one-hot (or class probabilities).
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar mean over the included voxels of -sum_c y_c log softmax(logits)_c.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  loss = optax.softmax_cross_entropy(logits, targets)[..., None]
  if mask is not None:
    mask = mask[..., :1]
  return _masked_mean(loss, mask)


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
    include_background: with 'softmax', False drops channel 0 from the loss.

  Returns:
    Scalar loss.
  """
  logits, targets, mask = _check_inputs(logits, targets, mask)
  probs = _probabilities(logits, activation)
  if not include_background:
    if logits.shape[-1] < 2:
      raise ValueError('include_background=False needs at least 2 channels')
    probs, targets = probs[..., 1:], targets[..., 1:]
    if mask is not None and mask.shape[-1] > 1:
      mask = mask[..., 1:]
  if mask is not None:
    probs, targets = probs * mask, targets * mask
  axes = tuple(range(1, probs.ndim - 1)) if per_sample else tuple(
      range(probs.ndim - 1))
  intersection = jnp.sum(probs * targets, axis=axes)
  if squared:
    denominator = jnp.sum(probs**2, axis=axes) + jnp.sum(targets**2, axis=axes)
  else:
    denominator = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes)
  dice = _safe_ratio(2.0 * intersection + smooth, denominator + smooth, 1.0)
  if log:
    return jnp.mean(-jnp.log(dice))
  return jnp.mean(1.0 - dice)


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
  (`per_sample=False`).

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


def softmax_dice_ce(logits: Array, targets: Array, dice_weight: float = 1.0,
                    ce_weight: float = 1.0, smooth: float = 1.0,
                    squared: bool = False, per_sample: bool = False,
                    include_background: bool = True,
                    mask: Array | None = None) -> Array:
  """Multi-class Dice + cross entropy (nnU-Net / MONAI DiceCELoss style).

  Args:
    logits: (N, *spatial, C) class logits.
    targets: (N, *spatial, C) one-hot.
    dice_weight: weight of the softmax soft Dice loss.
    ce_weight: weight of the softmax cross entropy.
    smooth: Dice smoothing term.
    squared: squared Dice denominator.
    per_sample: Dice per sample instead of pooled over the batch.
    include_background: False drops channel 0 from the Dice term.
    mask: optional (N, *spatial) voxels to include (1) or ignore (0).

  Returns:
    Scalar loss.
  """
  dice = soft_dice_loss(logits, targets, activation='softmax', smooth=smooth,
                        squared=squared, per_sample=per_sample, mask=mask,
                        include_background=include_background)
  ce = softmax_cross_entropy(logits, targets, mask=mask)
  return dice_weight * dice + ce_weight * ce


LOSSES: dict[str, LossFn] = {
    'focal_dice': focal_dice_loss,
    'focal': sigmoid_focal_loss,
    'dice': soft_dice_loss,
    'bce': binary_cross_entropy,
    'softmax_ce': softmax_cross_entropy,
    'dice_ce': softmax_dice_ce,
}

# The activation each loss assumes ('dice' takes it as a parameter).
SIGMOID_LOSSES = ('focal_dice', 'focal', 'bce')
SOFTMAX_LOSSES = ('softmax_ce', 'dice_ce')


def activation_of(loss_config: Any) -> str | None:
  """'sigmoid' or 'softmax': what the configured loss applies to the logits."""
  name = loss_config.get('name')
  if name in SIGMOID_LOSSES:
    return 'sigmoid'
  if name in SOFTMAX_LOSSES:
    return 'softmax'
  return loss_config.get('activation', 'sigmoid')

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
    errors.InputError: unknown name, unknown key or unknown activation.
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
  if 'activation' in params and params['activation'] not in ACTIVATIONS:
    raise errors.InputError(
        'config.loss.activation',
        f"unknown activation {params['activation']!r}; known: "
        f"{', '.join(ACTIVATIONS)}")

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
