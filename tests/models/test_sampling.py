"""jaxseg.models.sampling against flax/lax's own max-pool and transposed conv.

The references are independent formulations: reduce-window with
select-and-scatter for the pool, and lax.conv_transpose (a convolution of
the stride-dilated input) for the transposed convolution. Values and
gradients (input and parameters) must agree; parameter trees must be equal,
so checkpoints and PyTorch weight ports carry over. In CPU lowerings the
transposed convolution is oneDNN's deconvolution and the pool an argmax
over reshaped windows; GPU and TPU lowerings keep XLA's ops.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_layer_matches, random_array
from jaxseg import onednn
from jaxseg.models import sampling

CONV_T = [  # (kernel, stride, padding)
    (2, 2, 'VALID'), (2, 2, 'SAME'), (3, 2, 'SAME'), (4, 2, 'SAME'),
    (3, 1, 'SAME'), (1, 2, 'SAME'), (3, 3, 'SAME'), (5, 2, 'SAME'),
    (4, 2, 'pairs'), (3, 2, 'VALID'),
]


_x = random_array


@pytest.mark.parametrize('nd', [1, 2, 3])
@pytest.mark.parametrize('kernel,stride,padding', CONV_T)
def test_conv_transpose_equals_flax(nd, kernel, stride, padding):
  if padding == 'pairs':
    padding = ((1, 2),) * nd
  kw = dict(features=4, kernel_size=(kernel,) * nd, strides=(stride,) * nd,
            padding=padding)
  assert_layer_matches(sampling.ConvTranspose(**kw),
                       nn.ConvTranspose(**kw),
                       _x((2,) + (5,) * nd + (3,)), key=jax.random.key(1),
                       atol=1e-5, grad_atol=1e-4, grad_seed=2)


def _lowered(fn, args, platform):
  traced = jax.jit(fn).trace(*args)
  lowered = (traced.lower(lowering_platforms=(platform,)) if platform
             else traced.lower())
  return lowered.as_text()


@pytest.mark.parametrize('platform,on_cpu', [(None, True), ('cuda', False),
                                              ('tpu', False)])
def test_conv_transpose_is_onednn_s_on_the_cpu_only(platform, on_cpu):
  x = _x((1, 6, 6, 2))
  layer = sampling.ConvTranspose(3, (3, 3), strides=(2, 2), padding='SAME')
  v = layer.init(jax.random.key(0), x)
  loss = lambda v, x: jnp.sum(layer.apply(v, x) ** 2)  # noqa: E731
  hlo = _lowered(jax.grad(loss, argnums=(0, 1)), (v, x), platform)
  dilated = re.findall(r'lhs_dilate = \[([0-9, ]+)\]', hlo)
  assert any(d.replace(' ', '') != '1,1' for d in dilated) == (not on_cpu)
  if onednn.available():
    assert ('jaxseg_onednn_conv' in hlo) == on_cpu


@pytest.mark.parametrize('platform,on_cpu', [(None, True), ('cuda', False),
                                              ('tpu', False)])
def test_max_pool_argmax_on_the_cpu_only(platform, on_cpu):
  x = _x((2, 8, 8, 3))
  loss = lambda x: jnp.sum(sampling.max_pool(x, 2) ** 2)  # noqa: E731
  hlo = _lowered(jax.grad(loss), (x,), platform)
  assert ('reduce_window' in hlo) == (not on_cpu)
  assert ('select_and_scatter' in hlo) == (not on_cpu)


def test_conv_transpose_matches_pytorch_3x3_stride_2():
  # lax/flax 'SAME' for kernel 3, stride 2 pads the dilated input (2, 1):
  # the first 2L outputs of torch's full transposed conv (padding=0, 2L+1
  # outputs), with the kernel flipped. (Keras' 'same' is the same crop.)
  torch = pytest.importorskip('torch')
  x = _x((2, 7, 7, 3))
  layer = torch.nn.ConvTranspose2d(3, 4, 3, stride=2)
  with torch.no_grad():
    ref = layer(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()))
  ref = ref.numpy().transpose(0, 2, 3, 1)[:, :14, :14]
  # torch weight (Cin, Cout, kh, kw) -> flax (kh, kw, Cin, Cout), flipped.
  kernel = layer.weight.detach().numpy().transpose(2, 3, 0, 1)[::-1, ::-1]
  variables = {'params': {'kernel': jnp.asarray(kernel.copy()),
                          'bias': jnp.asarray(layer.bias.detach().numpy())}}
  y = sampling.ConvTranspose(4, (3, 3), strides=(2, 2),
                             padding='SAME').apply(variables, x)
  np.testing.assert_allclose(y, ref, atol=1e-5)


@pytest.mark.parametrize('shape,window,padding', [
    ((2, 8, 8, 4), 2, 'VALID'), ((2, 9, 7, 3), 2, 'VALID'),
    ((2, 9, 9, 3), 3, 'VALID'), ((2, 6, 6, 6, 2), 2, 'VALID'),
    ((2, 10, 3), 2, 'VALID'), ((2, 8, 8, 2), 2, 'SAME'),
    ((2, 9, 9, 2), 2, 'SAME'),  # SAME, 9 not divisible: flax fallback
])
@pytest.mark.slow
def test_max_pool_equals_flax_values_and_first_max_gradient(shape, window,
                                                            padding):
  nd = len(shape) - 2
  x = jax.nn.relu(_x(shape))  # half the entries tie at zero
  ref = lambda x: nn.max_pool(x, (window,) * nd, strides=(window,) * nd,  # noqa: E731
                              padding=padding)
  ours = lambda x: sampling.max_pool(x, window, padding=padding)  # noqa: E731
  np.testing.assert_array_equal(ours(x), ref(x))
  w = _x(ref(x).shape, seed=3)
  g_ref = jax.grad(lambda x: jnp.sum(ref(x) * w))(x)
  g = jax.grad(lambda x: jnp.sum(ours(x) * w))(x)
  np.testing.assert_array_equal(g, g_ref)


def test_max_pool_gradient_goes_to_the_first_maximum_of_a_tie():
  # A hand-worked window: [[1, 3], [3, 0]] ties at 3; the first 3 (row-major)
  # takes the whole gradient, as in select-and-scatter and PyTorch.
  x = jnp.asarray([[1., 3.], [3., 0.]]).reshape(1, 2, 2, 1)
  g = jax.grad(lambda x: sampling.max_pool(x, 2).sum())(x)
  np.testing.assert_array_equal(g.reshape(2, 2), [[0., 1.], [0., 0.]])
