"""Segmentation losses: pure, jit-able jax.numpy functions by family, and a registry.

Conventions (shared by every loss here):

* `logits` and `targets` are channels-last, (N, *spatial, C), with 2D or 3D
  spatial dimensions. Losses take logits, never probabilities (the models
  return logits; a probability-input variant would only add a clipping
  problem).
* `activation='sigmoid'`: every channel is an independent binary problem
  (binary masks, or the overlapping BraTS regions WT/TC/ET); targets in {0, 1}.
  `activation='softmax'`: the channels are mutually exclusive classes; targets
  are one-hot. Losses that take an `activation` argument work for both; the
  others have one fixed activation: `LOSSES`, the registry, says which of
  the three each loss is, and `activation_of(config.loss)` gives the one a
  configured loss applies (`jaxseg.activations` computes it).
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

The families are modules of this package:

  distribution.py  bce, weighted_bce, balanced_bce, softmax_ce, focal,
                   keras_focal (voxel-wise; optax's log-space cross entropies)
  overlap.py       dice, iou, tversky, focal_tversky, log_cosh_dice,
                   sensitivity_specificity, generalized_dice
  boundary.py      shape_aware, boundary, hausdorff_dt (distance maps on the
                   host through `jax.pure_callback`)
  compound.py      focal_dice (seed 002), dice_focal (MONAI), dice_ce, combo,
                   exp_log
  common.py        input checks, masked means, region sums

`build(config.loss)` turns a config (`name` plus the loss's keyword arguments)
into `loss_fn(logits, targets, mask=None) -> scalar`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxseg import activations
from jaxseg import errors
from jaxseg.losses.boundary import (boundary_loss, distance_map,
                                    hausdorff_dt_loss, shape_aware_loss)
from jaxseg.losses.compound import (combo_loss, dice_focal_loss,
                                    exp_log_loss, focal_dice_loss,
                                    softmax_dice_ce)
from jaxseg.losses.distribution import (
    balanced_binary_cross_entropy, binary_cross_entropy, focal_loss,
    keras_focal_loss, sigmoid_focal_loss, softmax_cross_entropy,
    softmax_focal_loss, weighted_binary_cross_entropy)
from jaxseg.losses.overlap import (WEIGHT_TYPES, focal_tversky_loss,
                                   generalized_dice_loss, log_cosh_dice_loss,
                                   sensitivity_specificity_loss,
                                   soft_dice_loss, soft_iou_loss,
                                   tversky_loss)

Array = jax.Array
LossFn = Callable[..., Array]
ACTIVATIONS = tuple(activations.ACTIVATIONS)

# The `activation` column: 'any' for losses that take an `activation`
# argument (their default is what a config that sets none gets), else the
# one activation the loss applies.
ANY = 'any'


@dataclasses.dataclass(frozen=True)
class Loss:
  """A registered loss: its function, family and activation."""
  fn: LossFn
  family: str
  activation: str      # 'sigmoid', 'softmax' or ANY


# ------------------------------------------------------------- the registry

REGISTRY: dict[str, Loss] = {
    'bce': Loss(binary_cross_entropy, 'distribution', 'sigmoid'),
    'weighted_bce': Loss(weighted_binary_cross_entropy, 'distribution', 'sigmoid'),
    'balanced_bce': Loss(balanced_binary_cross_entropy, 'distribution', 'sigmoid'),
    'softmax_ce': Loss(softmax_cross_entropy, 'distribution', 'softmax'),
    'focal': Loss(focal_loss, 'distribution', ANY),
    'keras_focal': Loss(keras_focal_loss, 'distribution', 'sigmoid'),
    'dice': Loss(soft_dice_loss, 'overlap', ANY),
    'iou': Loss(soft_iou_loss, 'overlap', ANY),
    'tversky': Loss(tversky_loss, 'overlap', ANY),
    'focal_tversky': Loss(focal_tversky_loss, 'overlap', ANY),
    'log_cosh_dice': Loss(log_cosh_dice_loss, 'overlap', ANY),
    'sensitivity_specificity': Loss(sensitivity_specificity_loss, 'overlap', ANY),
    'generalized_dice': Loss(generalized_dice_loss, 'overlap', ANY),
    'shape_aware': Loss(shape_aware_loss, 'boundary', ANY),
    'boundary': Loss(boundary_loss, 'boundary', ANY),
    'hausdorff_dt': Loss(hausdorff_dt_loss, 'boundary', ANY),
    'focal_dice': Loss(focal_dice_loss, 'compound', 'sigmoid'),
    'dice_focal': Loss(dice_focal_loss, 'compound', ANY),
    'dice_ce': Loss(softmax_dice_ce, 'compound', ANY),
    'combo': Loss(combo_loss, 'compound', ANY),
    'exp_log': Loss(exp_log_loss, 'compound', ANY),
}
LOSSES: dict[str, LossFn] = {name: loss.fn for name, loss in REGISTRY.items()}
# Derived views of the activation column, for messages.
SIGMOID_LOSSES = tuple(n for n, l in REGISTRY.items() if l.activation == 'sigmoid')
SOFTMAX_LOSSES = tuple(n for n, l in REGISTRY.items() if l.activation == 'softmax')

# Parameters whose value must be one of a few strings (checked by `build`).
_CHOICES = {'activation': ACTIVATIONS, 'weight_type': WEIGHT_TYPES}


def activation_of(loss_config: Any) -> str | None:
  """'sigmoid' or 'softmax': what the configured loss applies to the logits."""
  name = loss_config.get('name')
  if name not in REGISTRY:
    return loss_config.get('activation', 'sigmoid')
  fixed = REGISTRY[name].activation
  if fixed != ANY:
    return fixed
  return loss_config.get('activation', loss_params(name).get('activation',
                                                             'sigmoid'))

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


# The public names: the registry, `build`, and every loss function.
__all__ = sorted(
    ['LOSSES', 'REGISTRY', 'SIGMOID_LOSSES', 'SOFTMAX_LOSSES', 'Loss',
     'activation_of', 'build', 'deep_supervision', 'distance_map',
     'loss_params', 'sigmoid_focal_loss', 'softmax_focal_loss'] +
    [loss.fn.__name__ for loss in REGISTRY.values()])
