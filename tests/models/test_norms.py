"""jaxseg.models.norms against flax's own normalisation layers.

The fused CPU formulation (one-pass float32 statistics, a closed-form
backward pass) must give flax's values, gradients (input, scale, bias),
batch statistics, parameter trees and auto-names; in float64 to rounding
of the formulas, in float32 and bf16 to float noise. The non-CPU branch is
flax's formulas themselves.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import random_array
from jaxseg.models import layers
from jaxseg.models import norms


def _pair(kind, **kw):
  """(flax module, jaxseg module) of one kind with the same settings."""
  if kind == 'batch':
    return (nn.BatchNorm(use_running_average=False, momentum=0.9, **kw),
            norms.BatchNorm(use_running_average=False, momentum=0.9, **kw))
  if kind == 'layer':
    return nn.LayerNorm(**kw), norms.LayerNorm(**kw)
  if kind == 'instance':
    return nn.InstanceNorm(**kw), norms.InstanceNorm(**kw)
  if kind == 'group':
    return (nn.GroupNorm(num_groups=None, group_size=4, **kw),
            norms.GroupNorm(num_groups=None, group_size=4, **kw))
  raise ValueError(kind)


def _value_and_grads(module, variables, x, w):
  def loss(params, x):
    y, updates = module.apply({**variables, 'params': params}, x,
                              mutable=['batch_stats'])
    return jnp.sum(jax.nn.relu(y) * w), (y, updates)
  (_, (y, updates)), grads = jax.value_and_grad(
      loss, argnums=(0, 1), has_aux=True)(variables['params'], x)
  return y, updates, grads


def _compare(kind, shape, x_dtype, atol=None, **kw):
  ref, ours = _pair(kind, **kw)
  x = (random_array(shape) * 2 + 0.7).astype(x_dtype)
  variables = ref.init(jax.random.key(0), x)
  assert (jax.tree.map(np.shape, ours.init(jax.random.key(0), x)) ==
          jax.tree.map(np.shape, variables))
  # Non-trivial scale and bias.
  variables = {**variables, 'params': jax.tree.map(
      lambda p: (p + 0.3 * random_array(p.shape, seed=4)).astype(p.dtype),
      variables['params'])}
  w = random_array(shape, seed=5).astype(x_dtype)
  expected = _value_and_grads(ref, variables, x, w)
  got = _value_and_grads(ours, variables, x, w)
  assert got[0].dtype == expected[0].dtype
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, atol=atol * scale, rtol=0)


KINDS = ['batch', 'layer', 'instance', 'group']
SHAPES = [(4, 6, 5, 16), (2, 4, 3, 5, 8)]


@pytest.mark.slow
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('kind', KINDS)
def test_fused_norm_equals_flax_in_float64(kind, shape):
  with jax.enable_x64(True):
    _compare(kind, shape, jnp.float64, atol=1e-12, param_dtype=jnp.float64)


@pytest.mark.slow
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('kind', KINDS)
def test_fused_norm_equals_flax_in_float32(kind, shape):
  _compare(kind, shape, jnp.float32, atol=2e-5)


@pytest.mark.parametrize('kind', KINDS)
def test_fused_norm_equals_flax_in_bfloat16(kind):
  # bf16 activations, float32 statistics and parameters, as layers.norm
  # builds them under config.train.precision=bfloat16.
  _compare(kind, (4, 6, 5, 16), jnp.bfloat16, atol=2e-2, dtype=jnp.bfloat16)


def test_inference_mode_batch_norm_is_flax_itself():
  x = random_array((4, 6, 5, 16))
  ref = nn.BatchNorm(use_running_average=True)
  ours = norms.BatchNorm(use_running_average=True)
  variables = ref.init(jax.random.key(0), x)
  np.testing.assert_array_equal(ours.apply(variables, x),
                                ref.apply(variables, x))


FLAX = {'batch': lambda **kw: nn.BatchNorm(use_running_average=False, **kw),
        'instance': nn.InstanceNorm, 'layer': nn.LayerNorm,
        'group': lambda **kw: nn.GroupNorm(num_groups=None, group_size=4, **kw)}


@pytest.mark.parametrize('kind', KINDS)
def test_layers_norm_keeps_flax_names_and_variables(kind):
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = layers.norm(kind, True, group_size=4)(x)
      return layers.norm(kind, True, group_size=4, name='named')(x)

  class Ref(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = FLAX[kind]()(x)
      return FLAX[kind](name='named')(x)

  x = random_array((2, 4, 4, 8))
  shapes = lambda m: jax.tree.map(  # noqa: E731
      np.shape, m.init(jax.random.key(0), x))
  assert shapes(Net()) == shapes(Ref())


def test_fused_backward_is_one_custom_vjp_on_the_cpu_only():
  x = random_array((2, 4, 4, 8))
  module = norms.BatchNorm(use_running_average=False)
  variables = module.init(jax.random.key(0), x)

  def loss(p, x):
    y, _ = module.apply({**variables, 'params': p}, x,
                        mutable=['batch_stats'])
    return jnp.sum(y ** 2)
  traced = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(
      variables['params'], x)
  cpu = traced.lower().as_text()
  cuda = traced.lower(lowering_platforms=('cuda',)).as_text()
  # The fused backward has no (x - mean)^2 derivative of a mean of
  # squares: its one reduction pass over dy is sum(dy), sum(dy * (x - m)).
  assert cpu != cuda
  np.testing.assert_allclose(
      jax.jit(jax.grad(loss))(variables['params'], x)['scale'],
      jax.grad(lambda p, x: jnp.sum(nn.BatchNorm(use_running_average=False)
                                    .apply({**variables, 'params': p}, x,
                                           mutable=['batch_stats'])[0] ** 2))(
                                               variables['params'], x)['scale'],
      atol=1e-4)
