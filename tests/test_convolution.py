"""jaxseg.models.convolution.Conv against flax's nn.Conv (lax.conv_general_dilated).

The reference is XLA's own 3D convolution and its autodiff gradients; the
2D formulation must give the same values and gradients, the same parameter
tree, and leave every setting it does not handle to lax unchanged. It is a
CPU substitute: kernels='auto' uses it where the program is lowered for the
CPU only, 'native' never, 'cpu' everywhere (jaxseg.models.kernels).
"""

import flax.linen as nn
import jax
import pytest

from conftest import assert_layer_matches, random_array
from jaxseg.models import convolution


_x = random_array


@pytest.mark.parametrize('kernel,padding,strides,dilation,shape', [
    ((3, 3, 3), 'SAME', 1, 1, (2, 6, 7, 5, 3)),
    ((3, 3, 3), 'VALID', 1, 1, (2, 6, 7, 5, 3)),
    ((1, 1, 1), 'SAME', 1, 1, (2, 4, 4, 4, 3)),
    ((2, 2, 2), 'SAME', 1, 1, (2, 6, 6, 6, 3)),
    ((3, 1, 3), ((1, 1), (0, 0), (2, 0)), 1, 1, (2, 6, 6, 6, 3)),
    ((3, 3, 3), 'CIRCULAR', 1, 1, (2, 6, 6, 6, 3)),
    ((3, 3, 3), 'SAME', 2, 1, (2, 6, 6, 6, 3)),   # strided: lax itself
    ((3, 3, 3), 'SAME', 1, 2, (2, 6, 6, 6, 3)),   # dilated: lax itself
    ((3, 3), 'SAME', 1, 1, (2, 6, 6, 3)),         # 2D: lax itself
    # C_in * kd >= 48: one 2D convolution per depth tap, shifted outputs.
    ((3, 3, 3), 'SAME', 1, 1, (2, 5, 6, 4, 16)),
    ((3, 3, 3), 'VALID', 1, 1, (1, 6, 5, 5, 16)),
    ((2, 2, 2), 'SAME', 1, 1, (1, 5, 4, 4, 24)),
    ((3, 1, 3), ((2, 0), (0, 0), (1, 1)), 1, 1, (1, 4, 4, 4, 16)),
])
@pytest.mark.parametrize('kernels', ['cpu', 'native'])
def test_conv_equals_flax_conv(kernel, padding, strides, dilation, shape,
                               kernels):
  kw = dict(features=4, kernel_size=kernel, padding=padding, strides=strides,
            kernel_dilation=dilation)
  # Kernel gradients reach ~50 here (sums of ~1600 products): 1e-4 is 2e-6
  # relative, float32 summation order (2e-5 failed on a Zen 5 CPU by 2.7e-5).
  assert_layer_matches(convolution.Conv(**kw, kernels=kernels), nn.Conv(**kw),
                       _x(shape), key=jax.random.key(0), atol=2e-6,
                       grad_atol=1e-4, grad_seed=1)


def _conv_hlo(kernels, platform=None):
  """The StableHLO of a 3D stride-1 convolution's forward and backward."""
  x, k = _x((1, 4, 6, 6, 2)), _x((3, 3, 3, 2, 3))

  def loss(x, k):
    return convolution.conv_general_dilated(
        x, k, (1, 1, 1), 'SAME', dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'),
        kernels=kernels).sum()
  traced = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, k)
  lowered = (traced.lower(lowering_platforms=(platform,)) if platform
             else traced.lower())
  return lowered.as_text()


@pytest.mark.parametrize('kernels,platform,in_2d', [
    ('auto', None, True),       # this CPU
    ('cpu', None, True),
    ('native', None, False),
    ('auto', 'cuda', False),    # lowered here for a GPU
    ('auto', 'tpu', False),
    ('cpu', 'cuda', True),
])
def test_3d_stride_1_convolution_is_computed_in_2d_on_cpu_only(
    kernels, platform, in_2d):
  hlo = _conv_hlo(kernels, platform)
  assert 'stablehlo.convolution' in hlo
  assert ('[b, 0, 1, f]' in hlo) == in_2d
  assert ('[b, 0, 1, 2, f]' in hlo) == (not in_2d)


def test_unknown_kernels_setting_is_one_clear_error():
  with pytest.raises(ValueError, match=r"kernels='gpu'; known: auto, native"):
    convolution.Conv(4, (3, 3, 3), kernels='gpu')
