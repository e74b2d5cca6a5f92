"""Checks every model of the zoo must pass; the model test files call these.

`variables` builds a model's variables without compiling its initialisers
(jaxseg.models.shapes: only `eval_shape` of `init` runs).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.models import shapes


count = shapes.count
init_shapes = shapes.variable_shapes
variables = shapes.random_variables


def main_head(out):
  """The main logits of a model output (the last head under deep supervision)."""
  return out[-1] if isinstance(out, (list, tuple)) else out


def _bce(out, y):
  heads = out if isinstance(out, (list, tuple)) else [out]
  return sum(optax.sigmoid_binary_cross_entropy(h, y).mean() for h in heads)


def gradient_steps_lower_loss(model, x, steps: int = 3,
                              learning_rate: float = 1e-3) -> tuple[float, float]:
  """Adam steps on one fixed batch; returns (loss before, loss after).

  Targets are a fixed random binary map with the model's output channels.
  Dropout is on (train=True, a fixed key per step) and batch statistics are
  updated, as in training.
  """
  v = variables(model, x)
  params, state = v['params'], {k: w for k, w in v.items() if k != 'params'}
  out = jax.eval_shape(functools.partial(model.apply, train=False), v, x)
  shape = main_head(out).shape
  y = jnp.asarray(np.random.default_rng(5).random(shape) < 0.3, jnp.float32)
  tx = optax.adam(learning_rate)
  opt = tx.init(params)

  @jax.jit
  def step(params, state, opt, i):
    def loss_fn(p):
      out, new_state = model.apply(
          {'params': p, **state}, x, train=True,
          rngs={'dropout': jax.random.fold_in(jax.random.key(0), i)},
          mutable=list(state))
      return _bce(out, y), new_state
    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), dict(new_state), opt, loss

  @jax.jit
  def eval_loss(params, state):
    return _bce(model.apply({'params': params, **state}, x, train=False), y)

  before = float(eval_loss(params, state))
  for i in range(steps):
    params, state, opt, _ = step(params, state, opt, i)
  return before, float(eval_loss(params, state))


def dropout_outputs(model, x, keys=(10, 10, 11)):
  """Main-head train-mode outputs for each dropout key in `keys` (numpy)."""
  v = variables(model, x)

  @jax.jit
  def apply(key):
    out, _ = model.apply(v, x, train=True, rngs={'dropout': key},
                         mutable=['batch_stats'])
    return main_head(out)

  return [np.asarray(apply(jax.random.key(k))) for k in keys]
