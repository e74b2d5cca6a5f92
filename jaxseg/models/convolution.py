"""`Conv`: flax's nn.Conv, with 3D stride-1 convolutions computed in 2D on the CPU.

XLA's CPU backend (jax 0.10) runs 3D convolutions several times slower than
2D ones of the same arithmetic: a 3x3x3, 16->16 convolution on 2x32^3 takes
~7-10x longer forward and backward than the same work as 2D convolutions
(benchmarks/layer_grad.py, docs/speed.md). So a stride-1,
undilated, ungrouped channels-last 3D convolution with a kd x kh x kw kernel
is computed from 2D convolutions of the depth slices,

    y[n, d] = sum_t conv2d(x_pad[n, d + t], W[t]),

in one of two forms, whichever was measured faster for the input width:

  * taps on outputs (C_in * kd >= 48): one 2D convolution of the N*D
    unpadded slices per depth tap t, each output shifted by t along depth
    (zeros past the ends) and summed: no copy of the input, kd outputs of
    y's size (2.5x faster forward + backward than one convolution with the
    kd taps stacked on the output channels, the earlier form, at
    2x32^3x16 -> 16);
  * taps on inputs (narrow inputs, e.g. the first layer): the kd shifted
    depth windows concatenated on the channels (N, D', H, W, kd*C) and one
    2D convolution with the (kh, kw, kd*C, O) kernel: a deeper contraction
    for the few input channels.

Equal to lax.conv_general_dilated up to float summation order; gradients
follow by autodiff (2D convolution gradients, slices, pads, sums).
Everything else (strides, dilation, groups, 1D/2D, other layouts) is
lax.conv_general_dilated itself. `Conv` has nn.Conv's fields, parameter
names and shapes.

The 2D formulation is a CPU substitute (`kernels`): with kernels='auto' it
is what a CPU lowering runs, while a GPU or TPU lowering keeps XLA's native
3D convolution (cuDNN's, without the kd-times larger intermediate);
'native' and 'cpu' force one of them everywhere.
"""

import functools
from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxseg.models import kernels as kernels_lib

_SPECS_3D = ('NDHWC', 'DHWIO', 'NDHWC')


def _ones(values) -> bool:
  return values is None or all(v == 1 for v in values)


def _pads(padding: Union[str, Sequence[tuple[int, int]]],
          kernel: Sequence[int]):
  """Per-axis (lo, hi) padding of a stride-1 conv; None: not handled."""
  if padding == 'SAME':
    return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel]
  if padding == 'VALID':
    return [(0, 0)] * len(kernel)
  if isinstance(padding, str):
    return None
  return [tuple(p) for p in padding]


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, precision=None, *,
                         kernels: str = 'auto', **kwargs):
  """lax.conv_general_dilated; 3D stride-1 channels-last as 2D convs on CPU.

  `kernels` ('auto', 'native', 'cpu'; see `kernels`) picks where the 2D
  formulation runs; settings it does not cover are lax's convolution on
  every platform.
  """
  fallback = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, precision=precision, **kwargs)
  if lhs.ndim != 5 or kwargs or feature_group_count != 1:
    return fallback()
  if not (_ones(window_strides) and _ones(lhs_dilation) and
          _ones(rhs_dilation)):
    return fallback()
  channels_last = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _SPECS_3D)
  if dimension_numbers is None or lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, dimension_numbers) != channels_last:
    return fallback()
  pads = _pads(padding, rhs.shape[:3])
  if pads is None or any(p < 0 for pair in pads for p in pair):
    return fallback()
  return kernels_lib.choose(
      kernels, lambda x, w: _conv3d_as_2d(x, w, pads, precision),
      lambda x, w: lax.conv_general_dilated(
          x, w, window_strides, padding, lhs_dilation=lhs_dilation,
          rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
          feature_group_count=feature_group_count, precision=precision),
      lhs, rhs)


# Below this C_in * kd the depth taps go on the input channels (measured on
# a 2-core Zen 5: C_in 4, 8, 12 faster that way, 16 and 32 the other).
_TAPS_ON_INPUTS_BELOW = 48
_SPECS_2D = ('NHWC', 'HWIO', 'NHWC')


def _depth_window(y, start: int, length: int):
  """y[:, start:start + length] along axis 1, zeros outside y."""
  depth = y.shape[1]
  lo, hi = max(0, -start), max(0, start + length - depth)
  y = y[:, max(0, start):min(depth, start + length)]
  if lo or hi:
    y = jnp.pad(y, ((0, 0), (lo, hi)) + ((0, 0),) * (y.ndim - 2))
  return y


def _conv3d_as_2d(x, kernel, pads, precision):
  """x (N, D, H, W, C), kernel (kd, kh, kw, C, O) -> (N, D', H', W', O)."""
  n, depth, _, _, c = x.shape
  kd, kh, kw, _, o = kernel.shape
  lo, hi = pads[0]
  out_depth = depth + lo + hi - kd + 1
  conv2d = functools.partial(lax.conv_general_dilated, window_strides=(1, 1),
                             padding=pads[1:], dimension_numbers=_SPECS_2D,
                             precision=precision)
  if c * kd < _TAPS_ON_INPUTS_BELOW:
    windows = jnp.concatenate(
        [_depth_window(x, t - lo, out_depth) for t in range(kd)], axis=-1)
    stacked = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kd * c, o)
    y = conv2d(windows.reshape((n * out_depth,) + windows.shape[2:]), stacked)
    return y.reshape((n, out_depth) + y.shape[1:])
  slices = x.reshape((n * depth,) + x.shape[2:])
  y = None
  for t in range(kd):
    yt = conv2d(slices, kernel[t])
    yt = _depth_window(yt.reshape((n, depth) + yt.shape[1:]), t - lo,
                       out_depth)
    y = yt if y is None else y + yt
  return y


# One function object per setting, so that equal settings give equal fields.
_CONV_FNS = {k: functools.partial(conv_general_dilated, kernels=k)
             for k in kernels_lib.KERNELS}


def Conv(*args, kernels: str = 'auto', **kwargs) -> nn.Conv:  # pylint: disable=invalid-name
  """nn.Conv (same fields, parameters, auto-name) computing its convolution
  with `conv_general_dilated` under `kernels`."""
  return nn.Conv(*args, conv_general_dilated=_CONV_FNS[
      kernels_lib.check(kernels)], **kwargs)
