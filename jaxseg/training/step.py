"""The jitted steps: one optimisation step and one evaluation step.

`train_step` runs the model in training mode on a (global) batch, with
optional device-side augmentation and gradient accumulation; `eval_step`
gives the loss and metrics in inference mode. Both return
`scoring.metrics.SegMetrics` to merge over an epoch.
"""

import functools

import jax
import jax.numpy as jnp

from jaxseg import labels
from jaxseg import losses
from jaxseg.data import augment as augment_lib
from jaxseg.data import augment_device
from jaxseg.scoring import metrics
from jaxseg.training.state import TrainState


def main_head(logits):
  """The main logits of a model output: the last head under deep supervision."""
  return logits[-1] if isinstance(logits, (list, tuple)) else logits


def _mask(batch):
  """(N,) sample weights -> (N, *spatial) voxel mask."""
  weight = batch['weight']
  return jnp.broadcast_to(
      weight.reshape(weight.shape + (1,) * (batch['target'].ndim - 2)),
      batch['target'].shape[:-1])


def _grads_and_metrics(state: TrainState, params, batch_stats, batch: dict,
                       key, loss_fn, activation: str):
  """Gradients, new batch statistics and metrics of one (micro-)batch."""

  def compute_loss(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': batch_stats}, batch['image'],
        train=True, rngs={'dropout': key}, mutable=['batch_stats'])
    loss = loss_fn(logits, batch['target'], _mask(batch))
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(
      compute_loss, has_aux=True)(params)
  step_metrics = metrics.SegMetrics.single_from_model_output(
      loss=loss, logits=main_head(logits), targets=batch['target'],
      mask=_mask(batch), activation=activation)
  return grads, updates.get('batch_stats', {}), step_metrics


def micro_batches(batch: dict, steps: int) -> dict:
  """(B, ...) -> (steps, B / steps, ...); micro-batch j holds rows j, j + steps, ...

  Taking every `steps`-th row keeps each device's rows on that device when
  the batch is split over devices in contiguous blocks (B / devices a
  multiple of `steps`), so no rows move between devices.
  """
  def split(x):
    x = x.reshape((x.shape[0] // steps, steps) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(split, batch)


def train_step(state: TrainState, batch: dict, dropout_key, *, loss_fn,
               activation: str, grad_accum_steps: int = 1,
               augment: augment_lib.AugmentConfig | None = None):
  """One optimisation step on a (global) batch; returns the state and metrics.

  With `augment` (`config.augment.where` 'device') the batch is first
  augmented on the device (`augment_device.augment_train_batch`: sample i
  of step s draws from fold_in(fold_in(dropout_key, AUGMENT_STREAM), s), i),
  so the draws do not depend on the device count and a resumed run repeats
  them.

  With `grad_accum_steps` k > 1 the batch runs as k micro-batches in a
  `lax.scan` (activations of one micro-batch in memory at a time); their
  mean gradient is applied once, batch statistics are updated after each
  micro-batch, and the metrics are merged over them. For a loss that is a
  mean over samples this is the gradient of the whole batch.
  """
  if augment is not None:
    batch = augment_device.augment_train_batch(batch, dropout_key, state.step,
                                               augment)
  key = jax.random.fold_in(dropout_key, state.step)
  if grad_accum_steps == 1:
    grads, batch_stats, step_metrics = _grads_and_metrics(
        state, state.params, state.batch_stats, batch, key, loss_fn,
        activation)
    return state.apply_gradients(grads=grads,
                                 batch_stats=batch_stats), step_metrics

  def body(carry, inputs):
    grad_sum, batch_stats, merged = carry
    index, micro = inputs
    grads, batch_stats, step_metrics = _grads_and_metrics(
        state, state.params, batch_stats, micro,
        jax.random.fold_in(key, index), loss_fn, activation)
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    return (grad_sum, batch_stats, merged.merge(step_metrics)), None

  micro = micro_batches(batch, grad_accum_steps)
  first = jax.tree.map(lambda x: x[0], micro)
  # The metrics' pytree structure, zeroed, as the scan's starting value.
  empty = jax.tree.map(jnp.zeros_like, jax.eval_shape(
      lambda: _grads_and_metrics(state, state.params, state.batch_stats,
                                 first, key, loss_fn, activation)[2]))
  zeros = jax.tree.map(jnp.zeros_like, state.params)
  (grad_sum, batch_stats, step_metrics), _ = jax.lax.scan(
      body, (zeros, state.batch_stats, empty),
      (jnp.arange(grad_accum_steps), micro))
  grads = jax.tree.map(lambda g: g / grad_accum_steps, grad_sum)
  return state.apply_gradients(grads=grads,
                               batch_stats=batch_stats), step_metrics


def eval_step(state: TrainState, batch: dict, *, loss_fn, activation: str):
  """Loss and metrics of the model in inference mode on a (padded) batch."""
  logits = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batch['image'], train=False)
  loss = loss_fn(logits, batch['target'], _mask(batch))
  return metrics.SegMetrics.single_from_model_output(
      loss=loss, logits=logits, targets=batch['target'], mask=_mask(batch),
      activation=activation)


def make_eval_fn(config):
  """The jitted eval step for a config."""
  return jax.jit(functools.partial(
      eval_step, loss_fn=losses.build(config.loss),
      activation=labels.activation(config.data.label_mode)))
