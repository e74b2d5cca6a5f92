"""jaxseg.models.convolution.Conv against flax's nn.Conv (lax.conv_general_dilated).

The reference is XLA's own 3D convolution and its autodiff gradients; the
2D formulation must give the same values and gradients, the same parameter
tree, and leave every setting it does not handle to lax unchanged.
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
])
def test_conv_equals_flax_conv(kernel, padding, strides, dilation, shape):
  kw = dict(features=4, kernel_size=kernel, padding=padding, strides=strides,
            kernel_dilation=dilation)
  assert_layer_matches(convolution.Conv(**kw), nn.Conv(**kw), _x(shape),
                       key=jax.random.key(0), atol=2e-6, grad_atol=2e-5,
                       grad_seed=1)


def test_3d_stride_1_convolution_is_computed_in_2d():
  x, k = _x((1, 4, 6, 6, 2)), _x((3, 3, 3, 2, 3))
  hlo = jax.jit(lambda x, k: convolution.conv_general_dilated(
      x, k, (1, 1, 1), 'SAME', dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))
                ).lower(x, k).as_text()
  assert 'stablehlo.convolution' in hlo
  assert '[b, 0, 1, f]' in hlo and '[b, 0, 1, 2, f]' not in hlo
