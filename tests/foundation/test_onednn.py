"""jaxseg.onednn: oneDNN's convolutions (XLA FFI) against lax's.

Values and gradients (input and weights) of every convolution setting of
the model zoo, 2D and 3D, f32 and bf16, under vmap, through flax, and on an
8-device mesh (in a subprocess: this file run as a script with
--multidevice). Skipped where the extension is not built.
"""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax import lax

from jaxseg import onednn

pytestmark = pytest.mark.skipif(
    not onednn.available(),
    reason=f'jaxseg.onednn not available: {onednn.unavailable_reason()}')

DN = {2: ('NHWC', 'HWIO', 'NHWC'), 3: ('NDHWC', 'DHWIO', 'NDHWC')}


def _arrays(x_shape, w_shape, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=x_shape)
  w = rng.normal(size=w_shape) / np.sqrt(np.prod(w_shape[:-1]))
  return jnp.asarray(x, dtype), jnp.asarray(w, dtype)


def _value_and_grads(conv, x, w, dy_seed=1):
  """conv(x, w), d<conv, dy>/dx, d<conv, dy>/dw, jitted as one program."""
  def f(x, w):
    y, vjp = jax.vjp(conv, x, w)
    dy = jnp.asarray(np.random.default_rng(dy_seed).normal(size=y.shape),
                     y.dtype)
    return (y,) + vjp(dy)
  return jax.jit(f)(x, w)


def _assert_close(ours, ref, tol):
  for name, a, b in zip(('y', 'dx', 'dw'), ours, ref):
    assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape)
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    scale = max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, atol=tol * scale, err_msg=name)


def _compare(x_shape, w_shape, strides, padding, lhs_dilation=None,
             rhs_dilation=None, tol=2e-6):
  nd = len(x_shape) - 2
  x, w = _arrays(x_shape, w_shape)
  args = dict(window_strides=strides, padding=padding,
              lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
              dimension_numbers=DN[nd])
  # fallback=False: the oneDNN path or an error, never lax's in disguise.
  ours = functools.partial(onednn.conv_general_dilated, fallback=False,
                           **args)
  ref = functools.partial(lax.conv_general_dilated, **args)
  _assert_close(_value_and_grads(ours, x, w), _value_and_grads(ref, x, w),
                tol)


# (x shape, w shape, strides, padding, rhs dilation): the zoo's convolutions
# (odd sizes, the first layer's 4 channels) in 2D and 3D.
CASES = [
    ((2, 9, 11, 4), (3, 3, 4, 8), (1, 1), 'SAME', None),        # first layer
    ((2, 8, 8, 8), (3, 3, 8, 8), (1, 1), 'SAME', None),
    ((2, 7, 9, 8), (1, 1, 8, 5), (1, 1), 'VALID', None),         # 1x1 head
    ((2, 9, 9, 4), (3, 3, 4, 8), (2, 2), 'SAME', None),          # strided
    ((2, 10, 9, 4), (3, 3, 4, 8), (2, 2), ((1, 1), (1, 1)), None),
    ((2, 10, 10, 4), (2, 2, 4, 8), (2, 2), 'VALID', None),
    ((2, 9, 10, 4), (1, 1, 4, 8), (2, 2), 'VALID', None),        # shortcut
    ((2, 11, 11, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3)), None),  # stem
    ((2, 9, 9, 4), (3, 3, 4, 8), (1, 1), ((0, 1), (2, 0)), None),  # asym.
    ((2, 9, 9, 4), (3, 3, 4, 8), (1, 1), ((-1, 2), (1, -1)), None),  # neg.
    ((2, 11, 11, 8), (3, 3, 8, 8), (1, 1), 'SAME', (2, 2)),      # dilated
    ((2, 11, 12, 8), (3, 3, 8, 8), (1, 1), ((4, 4), (4, 4)), (4, 4)),
    ((1, 5, 6, 7, 4), (3, 3, 3, 4, 8), (1, 1, 1), 'SAME', None),  # 3D
    ((1, 5, 6, 7, 8), (1, 1, 1, 8, 3), (1, 1, 1), 'VALID', None),
    ((1, 7, 6, 5, 4), (3, 3, 3, 4, 8), (2, 2, 2), 'SAME', None),
    ((1, 9, 8, 8, 1), (7, 7, 7, 1, 8), (2, 2, 2), ((3, 3),) * 3, None),
    ((1, 9, 9, 8, 8), (3, 3, 3, 8, 8), (1, 1, 1), ((2, 2),) * 3, (2, 2, 2)),
    ((1, 9, 9, 9, 4), (3, 3, 3, 4, 4), (1, 1, 1), ((4, 4),) * 3, (4, 4, 4)),
]


@pytest.mark.parametrize('x_shape, w_shape, strides, padding, dilation',
                         CASES, ids=[str(i) for i in range(len(CASES))])
def test_convolution_equals_lax(x_shape, w_shape, strides, padding,
                                dilation):
  _compare(x_shape, w_shape, strides, padding, rhs_dilation=dilation)


# flax's nn.ConvTranspose settings: (x shape, kernel, strides, padding).
TRANSPOSED = [
    ((2, 5, 6, 8), (2, 2), (2, 2), 'VALID'),
    ((2, 5, 6, 8), (2, 2), (2, 2), 'SAME'),
    ((2, 5, 6, 8), (3, 3), (2, 2), 'SAME'),
    ((2, 5, 6, 8), (3, 3), (2, 2), 'VALID'),
    ((2, 4, 5, 8), (4, 4), (4, 4), 'VALID'),
    ((2, 5, 6, 8), (3, 3), (2, 2), ((1, 2), (0, 1))),
    ((1, 3, 4, 5, 8), (2, 2, 2), (2, 2, 2), 'VALID'),
    ((1, 3, 4, 5, 8), (2, 2, 2), (2, 2, 2), 'SAME'),
    ((1, 3, 4, 5, 8), (3, 3, 3), (2, 2, 2), 'SAME'),
]


@pytest.mark.parametrize('transpose_kernel', [False, True])
@pytest.mark.parametrize('x_shape, kernel, strides, padding', TRANSPOSED,
                         ids=[str(i) for i in range(len(TRANSPOSED))])
def test_transposed_convolution_equals_lax(x_shape, kernel, strides, padding,
                                           transpose_kernel):
  nd = len(kernel)
  # transpose_kernel=True: the kernel is (..., out, in), swapped by lax.
  io = (6, x_shape[-1]) if transpose_kernel else (x_shape[-1], 6)
  x, w = _arrays(x_shape, kernel + io)
  dn = {2: ('NHWC', 'HWIO', 'NHWC'), 3: ('NDHWC', 'DHWIO', 'NDHWC')}[nd]
  args = dict(strides=strides, padding=padding, dimension_numbers=dn,
              transpose_kernel=transpose_kernel)
  ours = functools.partial(onednn.conv_transpose, fallback=False, **args)
  ref = functools.partial(lax.conv_transpose, **args)
  _assert_close(_value_and_grads(ours, x, w), _value_and_grads(ref, x, w),
                2e-6)


def test_lhs_dilation_is_a_deconvolution():
  _compare((2, 5, 5, 4), (3, 3, 4, 8), (1, 1), ((2, 1), (2, 1)),
           lhs_dilation=(2, 2))
  _compare((2, 5, 5, 4), (3, 3, 4, 8), (1, 1), ((3, 0), (0, 3)),
           lhs_dilation=(2, 3))  # output wider than the deconvolution
  _compare((2, 5, 5, 4), (3, 3, 4, 8), (1, 1), ((2, 2), (2, 2)),
           lhs_dilation=(2, 2), rhs_dilation=(2, 1))


BF16_CASES = [
    ((2, 9, 11, 4), (3, 3, 4, 16), (1, 1), 'SAME', None),
    ((2, 8, 8, 16), (3, 3, 16, 16), (2, 2), 'SAME', None),
    ((1, 5, 6, 7, 8), (3, 3, 3, 8, 8), (1, 1, 1), 'SAME', None),
]


@pytest.mark.parametrize('x_shape, w_shape, strides, padding, dilation',
                         BF16_CASES, ids=[str(i) for i in range(len(BF16_CASES))])
def test_bf16_against_f32_of_rounded_inputs(x_shape, w_shape, strides,
                                            padding, dilation):
  nd = len(x_shape) - 2
  x, w = _arrays(x_shape, w_shape, dtype=jnp.bfloat16)
  args = dict(window_strides=strides, padding=padding,
              rhs_dilation=dilation, dimension_numbers=DN[nd])
  try:
    onednn.plan(x, w, strides, padding, None, dilation, DN[nd])
  except onednn.Unsupported as e:
    pytest.skip(f'no bf16 convolution on this CPU: {e}')
  ours = _value_and_grads(functools.partial(
      onednn.conv_general_dilated, fallback=False, **args), x, w)
  assert all(a.dtype == jnp.bfloat16 for a in ours)
  ref = _value_and_grads(functools.partial(lax.conv_general_dilated, **args),
                         x.astype(jnp.float32), w.astype(jnp.float32))
  # bf16 outputs: 8 bits of mantissa (dy is rounded to bf16 too).
  _assert_close(ours, [r.astype(jnp.bfloat16) for r in ref], 2e-2)
  # f32 output of bf16 operands (preferred_element_type).
  y = onednn.conv_general_dilated(x, w, preferred_element_type=jnp.float32,
                                  fallback=False, **args)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, ref[0], atol=1e-4 * float(jnp.abs(ref[0]).max()))


def _loss(conv, w_shape):
  def f(x, w):
    y = conv(x, w, (1, 1), 'SAME', dimension_numbers=DN[2])
    return jnp.sum(jnp.sin(y))
  return f


@pytest.mark.parametrize('weights_batched', [False, True])
def test_vmap(weights_batched):
  """vmap over a leading axis of the activations (MC dropout), and of the
  weights too; values and gradients (vmap of grad, grad of vmap)."""
  x, w = _arrays((3, 2, 7, 9, 4), (3, 3, 4, 8))
  if weights_batched:
    w = jnp.stack([w, -w, 2 * w])
  axes = (0, 0 if weights_batched else None)
  for transform in (
      lambda f: jax.vmap(f, axes),
      lambda f: jax.vmap(jax.grad(f, argnums=(0, 1)), axes),
      lambda f: jax.grad(lambda x, w: jnp.sum(jax.vmap(f, axes)(x, w)),
                         argnums=(0, 1))):
    ours = jax.jit(transform(_loss(
        functools.partial(onednn.conv_general_dilated, fallback=False), None)))(x, w)
    ref = jax.jit(transform(_loss(lax.conv_general_dilated, None)))(x, w)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, atol=2e-6 * max(1.0, float(jnp.abs(b).max()))), ours, ref)


def test_vmap_of_activations_is_one_call():
  x, w = _arrays((5, 2, 8, 8, 4), (3, 3, 4, 8))
  conv = functools.partial(onednn.conv_general_dilated, window_strides=(1, 1),
                           padding='SAME', dimension_numbers=DN[2])
  hlo = jax.jit(jax.vmap(conv, (0, None))).lower(x, w).as_text()
  assert hlo.count('jaxseg_onednn_conv_fwd') == 1
  assert 'tensor<10x8x8x4xf32>' in hlo  # the vmapped axis folded into N


@pytest.mark.slow
def test_flax_conv_with_onednn_equals_nn_conv():
  import flax.linen as nn
  from conftest import assert_layer_matches  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 10, 4)),
                  jnp.float32)
  for kwargs in (dict(features=8, kernel_size=(3, 3)),
                 dict(features=8, kernel_size=(3, 3), strides=2,
                      use_bias=False),
                 dict(features=6, kernel_size=(3, 3), kernel_dilation=2,
                      padding=((2, 2), (2, 2)))):
    assert_layer_matches(
        nn.Conv(conv_general_dilated=onednn.conv_general_dilated, **kwargs),
        nn.Conv(**kwargs), x, key=jax.random.key(0), atol=2e-6,
        grad_atol=2e-5, grad_seed=1)


def test_unsupported_settings_fall_back_to_lax():
  x, w = _arrays((2, 8, 8, 4), (3, 3, 2, 8))
  kw = dict(window_strides=(1, 1), padding='SAME', dimension_numbers=DN[2],
            feature_group_count=2)
  with pytest.raises(onednn.Unsupported, match='feature_group_count'):
    onednn.conv_general_dilated(x, w, fallback=False, **kw)
  np.testing.assert_array_equal(onednn.conv_general_dilated(x, w, **kw),
                                lax.conv_general_dilated(x, w, **kw))
  x, w = _arrays((2, 4, 8, 8), (8, 4, 3, 3))
  with pytest.raises(onednn.Unsupported, match='NHWC/HWIO/NHWC only'):
    onednn.plan(x, w, (1, 1), 'SAME', dimension_numbers=('NCHW', 'OIHW', 'NCHW'))
  x, w = _arrays((2, 8, 8, 4), (3, 3, 4, 8), dtype=jnp.float16)
  with pytest.raises(onednn.Unsupported, match='float16'):
    onednn.plan(x, w, (1, 1), 'SAME', dimension_numbers=DN[2])


def test_primitives_are_cached():
  x, w = _arrays((2, 12, 12, 4), (3, 3, 4, 4))
  conv = lambda x, w: onednn.conv_general_dilated(  # noqa: E731
      x, w, (1, 1), 'SAME', dimension_numbers=DN[2])
  f = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(conv(x, w) ** 2),
                                 argnums=(0, 1)))
  jax.block_until_ready(f(x, w))
  before = onednn.cache_size()
  for _ in range(3):
    jax.block_until_ready(f(x, w))
  g = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w)), argnums=(0, 1)))
  jax.block_until_ready(g(x, w))  # a new program, the same three passes
  assert onednn.cache_size() == before


def test_oneDNN_picks_its_fast_kernels():
  """The weights in oneDNN's own layout get jit/brgconv kernels for all three
  passes (plain HWIO weights would give gemm for the backward passes)."""
  x, w = _arrays((4, 16, 16, 32), (3, 3, 32, 32))
  impls = onednn.describe(x, w, (1, 1), 'SAME', dimension_numbers=DN[2])
  for name, impl in impls.items():
    assert 'gemm' not in impl and 'ref' not in impl, (name, impl)


@pytest.mark.slow
def test_eight_device_mesh():
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8 '
             '--xla_backend_optimization_level=0')
  out = subprocess.run([sys.executable, __file__, '--multidevice'], env=env,
                       check=True, capture_output=True, text=True, timeout=300)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['devices'] == 8
  assert result['all_gather'] == 0, result
  assert result['kernel_batch_sizes'] == [2], result  # 16 / 8 per device
  assert result['max_rel_diff'] < 1e-5, result


def _multidevice_main():
  """Value and gradients of a conv stack, jitted with the batch sharded over
  8 devices, against the same program on one device. Prints one JSON line."""
  import re  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  def loss(x, w1, w2, w3):
    conv = functools.partial(onednn.conv_general_dilated, fallback=False,
                             dimension_numbers=DN[2])
    y = jax.nn.relu(conv(x, w1, (1, 1), 'SAME'))
    y = jax.nn.relu(conv(y, w2, (2, 2), 'SAME'))
    y = onednn.conv_transpose(y, w3, (2, 2), 'SAME', dimension_numbers=DN[2],
                              fallback=False)
    return jnp.mean(y ** 2)

  rng = np.random.default_rng(0)
  args = [jnp.asarray(rng.normal(size=s) / np.sqrt(np.prod(s[:-1])),
                      jnp.float32)
          for s in ((16, 12, 12, 4), (3, 3, 4, 8), (3, 3, 8, 8),
                    (2, 2, 8, 4))]
  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
  ref = step(*args)
  mesh = Mesh(np.array(jax.devices()), ('data',))
  sharded = [jax.device_put(args[0], NamedSharding(mesh, P('data')))] + [
      jax.device_put(a, NamedSharding(mesh, P())) for a in args[1:]]
  hlo = step.lower(*sharded).compile().as_text()
  out = step(*sharded)
  rel = max(float(jnp.max(jnp.abs(a - b)) / max(1e-30, float(jnp.max(jnp.abs(b)))))
            for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)))
  batches = sorted({int(m) for m in re.findall(
      r'f32\[(\d+),[^\]]*\][^\n]*custom_call_target="jaxseg_onednn_conv_'
      r'(?:fwd|bwd_data)"', hlo)})
  print(json.dumps(dict(devices=jax.device_count(),
                        all_gather=hlo.count('all-gather'),
                        kernel_batch_sizes=batches, max_rel_diff=rel)))


if __name__ == '__main__':
  if '--multidevice' in sys.argv:
    _multidevice_main()
