"""fastconv.conv / fastconv.Conv against lax.conv_general_dilated / flax Conv.

The reference is JAX's own convolution and its autodiff gradients (an
independent formulation: XLA's transposed convolutions); the weight
gradient is also checked against a central finite difference.
"""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from conftest import REPO

sys.path.insert(0, str(REPO / 'benchmarks'))
import fastconv  # noqa: E402  (an experiment of benchmarks/conv_*.py)


def _rel(a, b):
  return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))


def _reference(x, w):
  nd = x.ndim - 2
  sp = 'DHW'[-nd:]
  return lax.conv_general_dilated(
      x, w, (1,) * nd, 'SAME', dimension_numbers=(
          'N' + sp + 'C', sp + 'IO', 'N' + sp + 'C'),
      precision=lax.Precision.HIGHEST)


def _data(shape, kernel, cout, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel + (shape[-1], cout)), jnp.float32)
  dy = jnp.asarray(rng.normal(size=shape[:-1] + (cout,)), jnp.float32)
  return x, w, dy


CASES = [((2, 9, 7, 3), (3, 3), 4), ((2, 8, 8, 2), (1, 1), 3),
         ((1, 10, 9, 3), (5, 5), 2), ((1, 8, 8, 2), (2, 4), 3),
         ((2, 5, 6, 4, 2), (3, 3, 3), 3), ((1, 6, 5, 4, 3), (1, 3, 2), 2)]


@pytest.mark.parametrize('shape,kernel,cout', CASES)
def test_value_and_both_gradients_match_lax(shape, kernel, cout):
  x, w, dy = _data(shape, kernel, cout)
  y, vjp = jax.vjp(fastconv.conv, x, w)
  y_ref, vjp_ref = jax.vjp(_reference, x, w)
  assert y.shape == y_ref.shape
  assert _rel(y, y_ref) < 1e-4
  for g, g_ref in zip(vjp(dy), vjp_ref(dy)):
    assert g.shape == g_ref.shape
    assert _rel(g, g_ref) < 1e-4


def test_weight_gradient_matches_finite_difference():
  x, w, dy = _data((1, 5, 6, 2), (3, 3), 2, seed=3)
  x64, w64, dy64 = (np.asarray(a, np.float64) for a in (x, w, dy))
  g = np.asarray(jax.grad(lambda w: jnp.vdot(fastconv.conv(x, w), dy))(w))

  def f(wn):  # <conv(x, w), dY> by explicit loops, float64
    xp = np.pad(x64, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = sum(np.einsum('nhwc,cd->nhwd', xp[:, i:i + 5, j:j + 6], wn[i, j])
              for i in range(3) for j in range(3))
    return float(np.sum(out * dy64))

  eps = 1e-3
  for index in [(0, 0, 0, 0), (1, 2, 1, 0), (2, 1, 0, 1)]:
    e = np.zeros_like(w64)
    e[index] = eps
    fd = (f(w64 + e) - f(w64 - e)) / (2 * eps)
    assert abs(g[index] - fd) < 1e-3 * max(1.0, abs(fd))


@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize('shape,kernel', [((2, 8, 6, 3), (3, 3)),
                                          ((1, 4, 6, 5, 2), (3, 3, 3)),
                                          ((2, 7, 7, 3), (2, 2))])
def test_module_equals_flax_conv(shape, kernel, use_bias):
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  ours = fastconv.Conv(4, kernel, use_bias=use_bias)
  ref = nn.Conv(4, kernel, use_bias=use_bias)
  v = ours.init(jax.random.key(0), x)
  v_ref = ref.init(jax.random.key(0), x)
  assert jax.tree.structure(v) == jax.tree.structure(v_ref)
  for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(v_ref)):
    np.testing.assert_array_equal(a, b)
  if use_bias:  # a non-zero bias, so its gradient path is exercised
    v = jax.tree.map(lambda a: a + 0.1, v)

  def loss(variables, x, module):
    return jnp.sum(jnp.sin(module.apply(variables, x)))

  assert _rel(ours.apply(v, x), ref.apply(v, x)) < 1e-4
  g = jax.grad(loss, argnums=(0, 1))(v, x, ours)
  g_ref = jax.grad(loss, argnums=(0, 1))(v, x, ref)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    assert _rel(a, b) < 1e-4


def test_custom_rule_is_used_and_fallbacks_keep_flax_semantics():
  x = jnp.ones((1, 8, 8, 2))
  jaxpr = jax.make_jaxpr(
      lambda v: fastconv.Conv(3, (3, 3)).apply(v, x))(
          fastconv.Conv(3, (3, 3)).init(jax.random.key(0), x))
  assert 'custom_vjp_call' in str(jaxpr)
  # Strided, dilated, grouped, 'VALID' and 'CIRCULAR' convs: lax path, and
  # the same outputs and gradients as flax.
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 9, 9, 4)),
                  jnp.float32)
  for kw in [dict(strides=2), dict(kernel_dilation=2),
             dict(feature_group_count=2), dict(padding='VALID'),
             dict(padding='CIRCULAR')]:
    ours, ref = fastconv.Conv(4, (3, 3), **kw), nn.Conv(4, (3, 3), **kw)
    v = ref.init(jax.random.key(0), x)
    assert _rel(ours.apply(v, x), ref.apply(v, x)) < 1e-5
    g = jax.grad(lambda v: jnp.sum(ours.apply(v, x) ** 2))(v)
    g_ref = jax.grad(lambda v: jnp.sum(ref.apply(v, x) ** 2))(v)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
      assert _rel(a, b) < 1e-4


def test_jit_and_vmap():
  x, w, dy = _data((2, 6, 6, 3), (3, 3), 2)
  grad = jax.jit(jax.grad(lambda x, w: jnp.vdot(fastconv.conv(x, w), dy),
                          argnums=(0, 1)))
  ref = jax.grad(lambda x, w: jnp.vdot(_reference(x, w), dy), argnums=(0, 1))
  for a, b in zip(grad(x, w), ref(x, w)):
    assert _rel(a, b) < 1e-4
  # vmap over a stack of kernels: per-kernel outputs and weight gradients.
  ws = jnp.stack([w, -2 * w, w[::-1]])
  ys = jax.vmap(fastconv.conv, in_axes=(None, 0))(x, ws)
  gws = jax.vmap(jax.grad(lambda w: jnp.vdot(fastconv.conv(x, w), dy)))(ws)
  for i in range(3):
    assert _rel(ys[i], _reference(x, ws[i])) < 1e-4
    gw_ref = jax.grad(lambda w: jnp.vdot(_reference(x, w), dy))(ws[i])
    assert _rel(gws[i], gw_ref) < 1e-4
