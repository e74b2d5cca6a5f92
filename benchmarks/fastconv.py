"""An experiment: a convolution whose weight gradient is matrix products.

Not used by the models: on this CPU its weight gradient (one matmul per
kernel tap) is 2-3x slower than XLA's own convolution once YNNPACK is kept
off convolutions (jaxseg/xla_cpu.py), and the U-Net step gains nothing
(benchmarks/conv_step.py, README "Speed"). Kept, with its test, as the
record of that attempt.

On XLA's CPU backend (jax 0.10), the weight gradient of a stride-1 conv is
compiled to one convolution with Cin as batch, N as features and dY as a
window-sized kernel (HLO `window={size=128x128 ...}, dim_labels=
b01f_01io->b01f`), which the default pipeline hands to YNNPACK
(`__ynn_fusion`); that call runs 5-10x slower than the same convolution
through XLA's own (Eigen) runtime. See benchmarks/conv_grad.py and the
README's benchmark section.

`conv(x, kernel)` is `lax.conv_general_dilated` (stride 1, 'SAME', NHWC /
NDHWC, HWIO / DHWIO) with a `jax.custom_vjp`: forward and input gradient
are the lax convolution; the weight gradient is `weight_grad_shift`, one
(Cin, N*S) x (N*S, Cout) matmul per kernel tap, with no patch tensor.
`Conv` is `flax.linen.Conv` with that convolution (same fields, parameter
names, shapes and initialisers); settings `conv` does not cover (strides,
dilation, groups, other layouts) fall back to lax.conv_general_dilated.
"""

import functools
import itertools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# compiler_options for jax.jit(...).lower(...).compile(): YNNPACK off.
NO_YNN = {'xla_cpu_experimental_ynn_fusion_type': ''}


def _specs(nd: int):
  sp = 'DHW'[-nd:] if nd <= 3 else None
  if sp is None:
    raise ValueError(f'{nd}D convolution; only 1D, 2D and 3D')
  return ('N' + sp + 'C', sp + 'IO', 'N' + sp + 'C')


def _same_padding(kernel_shape: Sequence[int]):
  """'SAME' for stride 1: (k-1)//2 before, the rest after (as lax/flax)."""
  return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape)


def lax_conv(x, kernel, padding=None):
  """Stride-1 conv. x (N, *S, Cin), kernel (*k, Cin, Cout) -> (N, *O, Cout).

  padding: ((lo, hi),) per spatial axis; None: 'SAME'.
  """
  nd = x.ndim - 2
  if padding is None:
    padding = _same_padding(kernel.shape[:nd])
  return lax.conv_general_dilated(x, kernel, (1,) * nd, padding,
                                  dimension_numbers=_specs(nd))


def weight_grad_shift(x, dy, kernel_shape: Sequence[int], padding=None):
  """dW of `lax_conv`: x (N, *S, Cin), dY (N, *O, Cout) -> (*k, Cin, Cout).

  dW[t] = sum over n, o of x_pad[n, o + t] (outer) dY[n, o]: one matmul
  (Cin, N*O) x (N*O, Cout) per tap t of the kernel, no patch tensor.
  """
  if padding is None:
    padding = _same_padding(kernel_shape)
  out = dy.shape[1:-1]
  xp = jnp.pad(x, ((0, 0),) + tuple(map(tuple, padding)) + ((0, 0),))
  d = dy.reshape(-1, dy.shape[-1])
  taps = []
  for offset in itertools.product(*(range(k) for k in kernel_shape)):
    index = (slice(None),) + tuple(
        slice(o, o + s) for o, s in zip(offset, out))
    taps.append(xp[index].reshape(-1, x.shape[-1]).T @ d)
  return jnp.stack(taps).reshape(
      tuple(kernel_shape) + (x.shape[-1], dy.shape[-1]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x, kernel, padding=None):
  """`lax_conv` (stride 1) whose weight gradient is `weight_grad_shift`.

  x (N, *S, Cin), kernel (*k, Cin, Cout); padding ((lo, hi),) * nd or
  None ('SAME'), as a tuple (it is static).
  """
  return lax_conv(x, kernel, padding)


def _conv_fwd(x, kernel, padding):
  return lax_conv(x, kernel, padding), (x, kernel)


def _conv_bwd(padding, residuals, dy):
  x, kernel = residuals
  nd = x.ndim - 2
  _, input_vjp = jax.vjp(lambda x: lax_conv(x, kernel, padding), x)
  (dx,) = input_vjp(dy)
  dw = weight_grad_shift(x, dy, kernel.shape[:nd], padding)
  return dx, dw.astype(kernel.dtype)


conv.defvjp(_conv_fwd, _conv_bwd)


def _all_one(value) -> bool:
  if value is None:
    return True
  return all(v == 1 for v in ((value,) if isinstance(value, int) else value))


def _pads(lhs, rhs, padding):
  """'SAME' / 'VALID' / pairs -> ((lo, hi),) per axis (stride 1, channels-last)."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2],
                                  (1,) * (lhs.ndim - 2), padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, through `conv` where it applies.

  `conv` takes: channels-last lhs/rhs/out (flax's layout), stride 1, no
  dilation, one group, default precision, explicit non-negative padding;
  anything else goes to `lax.conv_general_dilated` unchanged.  'SAME' /
  'VALID' strings are resolved as lax does for stride 1.
  """
  nd = lhs.ndim - 2
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  channels_last = lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                             _specs(nd) if nd <= 3 else None)
  simple = (
      1 <= nd <= 3 and numbers == channels_last and _all_one(window_strides)
      and _all_one(lhs_dilation) and _all_one(rhs_dilation)
      and feature_group_count == 1 and batch_group_count == 1
      and precision is None and preferred_element_type is None
      and all(lo >= 0 and hi >= 0 for lo, hi in _pads(lhs, rhs, padding)))
  if not simple:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, batch_group_count, precision,
        preferred_element_type)
  return conv(lhs, rhs, _pads(lhs, rhs, padding))


class Conv(nn.Conv):
  """`flax.linen.Conv` whose convolution is `conv_general_dilated` above.

  Same fields, parameters ('kernel' (*k, Cin, Cout), 'bias' (Cout,)),
  initialisers and outputs as flax.linen.Conv; stride-1, undilated,
  ungrouped convolutions get the matmul weight gradient.
  """
  conv_general_dilated: Any = conv_general_dilated
