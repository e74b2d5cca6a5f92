"""jaxseg.models.convolution.Conv and jaxseg.models.ops against flax's nn.Conv.

The reference is XLA's own convolution (lax.conv_general_dilated) and its
autodiff gradients. On the CPU, Conv runs oneDNN's kernels (jaxseg.onednn,
tested pass by pass in test_onednn.py): values, gradients and parameter
trees must equal nn.Conv's. The dispatch is per lowering platform: a CPU
lowering calls the oneDNN custom call, a GPU or TPU lowering XLA's
convolution, and what oneDNN does not run (float64, feature groups) stays
lax's everywhere.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_layer_matches, random_array
from jaxseg import onednn
from jaxseg.models import convolution
from jaxseg.models import ops

needs_onednn = pytest.mark.skipif(
    not onednn.available(),
    reason=f'oneDNN extension not available: {onednn.unavailable_reason()}')
_x = random_array
_3D = ('NDHWC', 'DHWIO', 'NDHWC')


@pytest.mark.parametrize('kernel,padding,strides,dilation,shape', [
    ((3, 3, 3), 'SAME', 1, 1, (2, 6, 7, 5, 3)),
    ((3, 3, 3), 'VALID', 1, 1, (2, 6, 7, 5, 3)),
    ((1, 1, 1), 'SAME', 1, 1, (2, 4, 4, 4, 3)),
    ((2, 2, 2), 'SAME', 1, 1, (2, 6, 6, 6, 3)),
    ((3, 1, 3), ((1, 1), (0, 0), (2, 0)), 1, 1, (2, 6, 6, 6, 3)),
    ((3, 3, 3), 'CIRCULAR', 1, 1, (2, 6, 6, 6, 3)),
    ((3, 3, 3), 'SAME', 2, 1, (2, 6, 6, 6, 3)),
    ((3, 3, 3), 'SAME', 1, 2, (2, 6, 6, 6, 3)),
    ((3, 3), 'SAME', 1, 1, (2, 6, 6, 3)),
    ((3, 3), 'SAME', 2, 1, (2, 7, 6, 3)),
    ((3, 3, 3), 'SAME', 1, 1, (2, 5, 6, 4, 16)),
])
@pytest.mark.slow
def test_conv_equals_flax_conv(kernel, padding, strides, dilation, shape):
  kw = dict(features=4, kernel_size=kernel, padding=padding, strides=strides,
            kernel_dilation=dilation)
  # Kernel gradients reach ~50 here (sums of ~1600 products): 1e-4 is 2e-6
  # relative, float32 summation order.
  assert_layer_matches(convolution.Conv(**kw), nn.Conv(**kw),
                       _x(shape), key=jax.random.key(0), atol=5e-6,
                       grad_atol=1e-4, grad_seed=1)


def _conv_hlo(platform=None, dtype=jnp.float32, groups=1):
  """The StableHLO of a 3D convolution's forward and backward pass."""
  x = _x((1, 4, 6, 6, 2)).astype(dtype)
  k = _x((3, 3, 3, 2 // groups, 4)).astype(dtype)

  def loss(x, k):
    return (ops.conv_general_dilated(x, k, (1, 1, 1), 'SAME',
                                    dimension_numbers=_3D,
                                    feature_group_count=groups) ** 2).sum()
  traced = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, k)
  lowered = (traced.lower(lowering_platforms=(platform,)) if platform
             else traced.lower())
  return lowered.as_text()


@needs_onednn
def test_a_cpu_lowering_calls_onednn_for_all_three_passes():
  hlo = _conv_hlo()
  for target in ('jaxseg_onednn_conv_fwd', 'jaxseg_onednn_conv_bwd_data',
                 'jaxseg_onednn_conv_bwd_weights'):
    assert target in hlo
  assert 'stablehlo.convolution' not in hlo


@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
def test_gpu_and_tpu_lowerings_run_xla_s_convolution(platform):
  hlo = _conv_hlo(platform)
  assert 'stablehlo.convolution' in hlo
  assert 'jaxseg_onednn' not in hlo


def test_what_onednn_does_not_run_stays_lax_s():
  with jax.enable_x64(True):
    hlo = _conv_hlo(dtype=jnp.float64)
  assert 'jaxseg_onednn' not in hlo and 'stablehlo.convolution' in hlo
  hlo = _conv_hlo(groups=2)  # feature groups: no zoo model uses them
  assert 'jaxseg_onednn' not in hlo and 'stablehlo.convolution' in hlo


def test_float64_values_are_lax_s_exactly():
  with jax.enable_x64(True):
    x, k = _x((1, 4, 5, 6, 2)).astype(jnp.float64), _x((3, 3, 3, 2, 3)).astype(jnp.float64)
    ours = ops.conv_general_dilated(x, k, (1, 1, 1), 'SAME', dimension_numbers=_3D)
    ref = jax.lax.conv_general_dilated(x, k, (1, 1, 1), 'SAME', dimension_numbers=_3D)
    np.testing.assert_array_equal(ours, ref)
