"""Model variables without running initialisers: shapes, counts, stand-in values.

Compiling a large model's random initialisers takes minutes on a small CPU;
counting parameters or timing a step does not need their values. These
helpers run `model.init` only under `jax.eval_shape`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def count(tree) -> int:
  """Number of scalars in a pytree of arrays or shape structs."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def variable_shapes(model, x):
  """The variables of `model.init` for input x (N, ..., C), as shape structs."""
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  x = jax.ShapeDtypeStruct(x.shape, x.dtype)
  return jax.eval_shape(lambda x: model.init(rngs, x, train=False), x)


def random_variables(model, x, seed: int = 0):
  """Variables with `init`'s structure: fan-in scaled normal weights, unit scales.

  Weights of two or more dimensions get N(0, 1/fan_in); norm scales and
  running variances 1; biases and running means 0.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = getattr(path[-1], 'key', str(path[-1]))
    if name in ('scale', 'var'):
      return jnp.ones(leaf.shape, leaf.dtype)
    if len(leaf.shape) >= 2:
      fan_in = math.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(fan_in),
                         leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, variable_shapes(model, x))
