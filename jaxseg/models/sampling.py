"""Max-pooling and transposed convolution without XLA-CPU's slow paths.

Both are CPU substitutes (`kernels`): with kernels='auto' a CPU lowering
runs them and a GPU or TPU lowering runs XLA's native reduce-window pooling
and transposed convolution (a convolution with lhs_dilation); 'native' and
'cpu' force one of them everywhere.

On XLA's CPU backend (jax 0.10) `nn.max_pool` lowers to reduce-window, whose
gradient (select-and-scatter) runs 3-15x slower than PyTorch's, and
`nn.ConvTranspose` lowers to a convolution with a dilated input, whose three
pieces run 3-10x slower (see benchmarks/layer_grad.py and the README's speed
section). The same results computed another way:

  * `max_pool`: non-overlapping windows (window == stride, 'VALID') as a
    reshape and an argmax over each window, with a custom gradient that
    sends the whole gradient to the first maximum of the window, as
    select-and-scatter and PyTorch do. (jnp.max's own gradient finds the
    maxima by comparing the input with the output, which fails when XLA
    recomputes a fused input with different rounding, as it does at
    --xla_backend_optimization_level=0: a window with no match divides by
    zero.) Values and gradients equal nn.max_pool's.
  * `ConvTranspose`: `flax.linen.ConvTranspose` (same fields, parameter names,
    shapes and initialisers) computed as s^d stride-1 convolutions, one per
    output phase (sub-pixel convolution), each with the kernel taps that
    reach that phase, interleaved by a reshape. Kernel == stride (the
    U-Net's 2x2/2) becomes s^d 1x1 convolutions, i.e. matrix products. The
    result equals `lax.conv_transpose` up to float summation order; in 3D
    the phases go through `convolution`'s 2D formulation.

Settings the fast paths do not cover fall back to the flax/lax layers.
"""

import functools
import itertools
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxseg.models import convolution
from jaxseg.models import kernels as kernels_lib

Padding = Union[str, Sequence[tuple[int, int]]]


def max_pool(x, window: Union[int, Sequence[int]],
             strides: Optional[Union[int, Sequence[int]]] = None,
             padding: Padding = 'VALID', *, kernels: str = 'auto'):
  """`nn.max_pool`. x (N, *S, C) -> (N, *S', C).

  The CPU substitute (where `kernels` picks it): window == strides with
  'VALID' padding (or 'SAME' where every size divides) as reshape + max,
  the trailing remainder cropped as 'VALID' does. Other settings are
  nn.max_pool on every platform.
  """
  kernels_lib.check(kernels)
  nd = x.ndim - 2
  window = (window,) * nd if isinstance(window, int) else tuple(window)
  strides = window if strides is None else (
      (strides,) * nd if isinstance(strides, int) else tuple(strides))
  sizes = x.shape[1:-1]
  divides = all(n % w == 0 for n, w in zip(sizes, window))
  native = lambda x: nn.max_pool(x, window, strides=strides,  # noqa: E731
                                 padding=padding)
  if window != strides or not (padding == 'VALID' or
                               (padding == 'SAME' and divides)):
    return native(x)
  return kernels_lib.choose(kernels, functools.partial(_argmax_pool, window),
                            native, x)


def _argmax_pool(window: tuple, x):
  """Non-overlapping max-pool of x (N, *S, C) as reshape + argmax."""
  nd = x.ndim - 2
  sizes = x.shape[1:-1]
  out = tuple(n // w for n, w in zip(sizes, window))
  x = x[(slice(None),) + tuple(slice(0, o * w) for o, w in zip(out, window))]
  n, c = x.shape[0], x.shape[-1]
  split = (n,) + sum(((o, w) for o, w in zip(out, window)), ()) + (c,)
  # (N, o1, w1, ..., od, wd, C) -> (N, o1..od, w1..wd, C) -> (N, *o, W, C)
  order = ((0,) + tuple(1 + 2 * i for i in range(nd)) +
           tuple(2 + 2 * i for i in range(nd)) + (2 * nd + 1,))
  windows = x.reshape(split).transpose(order).reshape(
      (n,) + out + (int(np.prod(window)), c))
  return _window_max(int(np.prod(window)), windows)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _window_max(size, windows):
  """windows (..., W = size, C) -> (..., C): the max over W."""
  del size
  return windows.max(axis=-2)


def _window_max_fwd(size, windows):
  del size
  index = jnp.argmax(windows, axis=-2)
  top = jnp.take_along_axis(windows, index[..., None, :], axis=-2)[..., 0, :]
  return top, index


def _window_max_bwd(size, index, g):
  first = index[..., None, :] == jnp.arange(size)[:, None]
  return (jnp.where(first, g[..., None, :], 0).astype(g.dtype),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


def _transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
  """lax.conv_transpose's padding of the dilated input for 'SAME'/'VALID'."""
  if padding == 'SAME':
    total = k + s - 2
    lo = k - 1 if s > k - 1 else -(-total // 2)
  else:  # 'VALID'
    total = k + s - 2 + max(k - s, 0)
    lo = k - 1
  return lo, total - lo


def _phases(length: int, k: int, s: int, pad: tuple[int, int]):
  """One dimension of a transposed conv as s stride-1 correlations.

  The transposed conv is a correlation of the s-dilated, `pad`-padded input
  with the kernel. Output index o = s*i + a takes the taps t with
  (a + t - pad_lo) % s == 0, reading input i + (a + t - pad_lo) // s.
  Returns (n, [(taps, (lo, hi)) per phase a]) with n outputs per phase and
  (lo, hi) the (possibly negative) padding of that stride-1 correlation;
  None where the output length is not a multiple of s.
  """
  lo, hi = pad
  out_len = (length - 1) * s + 1 + lo + hi - k + 1
  if out_len <= 0 or out_len % s:
    return None
  n = out_len // s
  phases = []
  for a in range(s):
    taps = [t for t in range(k) if (a + t - lo) % s == 0]
    if not taps:
      phases.append(([], (0, 0)))
      continue
    first = (a + taps[0] - lo) // s
    phases.append((taps, (-first, n + first + len(taps) - 1 - length)))
  return n, phases


class ConvTranspose(nn.Module):
  """`flax.linen.ConvTranspose` as sub-pixel stride-1 convolutions.

  x (N, *S, C) -> (N, *S', features); kernel (*kernel_size, C, features),
  bias (features,): the parameters of nn.ConvTranspose with
  transpose_kernel=False, so checkpoints and weight ports carry over.
  """
  features: int
  kernel_size: Sequence[int]
  strides: Optional[Sequence[int]] = None
  padding: Padding = 'SAME'
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  def _plan(self, x):
    nd = len(self.kernel_size)
    strides = tuple(self.strides or (1,) * nd)
    if x.ndim != nd + 2:
      return None
    if isinstance(self.padding, str):
      if self.padding not in ('SAME', 'VALID'):
        return None
      pads = [_transpose_padding(k, s, self.padding)
              for k, s in zip(self.kernel_size, strides)]
    else:
      pads = [tuple(p) for p in self.padding]  # lax.conv_transpose's own
    plan = [_phases(n, k, s, p) for n, k, s, p in
            zip(x.shape[1:-1], self.kernel_size, strides, pads)]
    return None if any(p is None for p in plan) else plan

  @nn.compact
  def __call__(self, x):
    nd = len(self.kernel_size)
    kernel = self.param('kernel', self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.dtype)
    strides = tuple(self.strides or (1,) * nd)
    kernels_lib.check(self.kernels)
    native = lambda x, k: lax.conv_transpose(  # noqa: E731
        x, k, strides, self.padding)
    plan = self._plan(x)
    if plan is None:
      y = native(x, kernel)
    else:
      y = kernels_lib.choose(self.kernels,
                             functools.partial(self._sub_pixel, plan=plan),
                             native, x, kernel)
    if bias is not None:
      y = y + bias
    return y

  def _sub_pixel(self, x, kernel, plan):
    nd = len(plan)
    sizes = tuple(n for n, _ in plan)
    axes = 'DHW'[-nd:]
    specs = ('N' + axes + 'C', axes + 'IO', 'N' + axes + 'C')
    outs = []
    for phase in itertools.product(*(phases for _, phases in plan)):
      if any(not taps for taps, _ in phase):
        outs.append(jnp.zeros((x.shape[0],) + sizes + (self.features,),
                              x.dtype))
        continue
      sub = kernel[np.ix_(*(taps for taps, _ in phase))]
      # 3D phases take convolution's 2D path too (stride 1, channels-last).
      outs.append(convolution.conv_general_dilated(
          x, sub, (1,) * nd, [pad for _, pad in phase],
          dimension_numbers=specs, kernels='cpu'))
    strides = tuple(len(phases) for _, phases in plan)
    y = jnp.stack(outs).reshape(strides + outs[0].shape)
    # (s_1..s_d, N, n_1..n_d, F) -> (N, n_1, s_1, ..., n_d, s_d, F)
    order = [nd] + sum(([nd + 1 + i, i] for i in range(nd)), []) + [2 * nd + 1]
    y = y.transpose(order)
    return y.reshape((x.shape[0],) + tuple(n * s for n, s in
                                           zip(sizes, strides)) +
                     (self.features,))
