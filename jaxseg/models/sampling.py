"""Max-pooling and transposed convolution as the models use them.

  * `max_pool`: in CPU lowerings, non-overlapping windows (window == stride,
    'VALID') as a reshape and an argmax over each window, with a custom
    gradient that sends the whole gradient to the first maximum of the
    window, as select-and-scatter and PyTorch do. XLA:CPU's reduce-window
    gradient (select-and-scatter) is several times slower (docs/speed.md).
    (jnp.max's own gradient finds the maxima by comparing the input with the
    output, which fails when XLA recomputes a fused input with different
    rounding, as it does at --xla_backend_optimization_level=0: a window
    with no match divides by zero.) Values and gradients equal
    nn.max_pool's; other platforms run nn.max_pool itself.
  * `ConvTranspose`: `flax.linen.ConvTranspose` (same fields, parameter
    names, shapes and initialisers), its convolution through
    jaxseg.models.ops: oneDNN's deconvolution on the CPU, XLA's elsewhere.
    (flax's module cannot take another convolution function.)
"""

import functools
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import ops

Padding = Union[str, Sequence[tuple[int, int]]]


def max_pool(x, window: Union[int, Sequence[int]],
             strides: Optional[Union[int, Sequence[int]]] = None,
             padding: Padding = 'VALID'):
  """`nn.max_pool`. x (N, *S, C) -> (N, *S', C).

  In CPU lowerings window == strides with 'VALID' padding (or 'SAME' where
  every size divides) runs as reshape + max, the trailing remainder cropped
  as 'VALID' does. Other settings and other platforms: nn.max_pool.
  """
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
  return ops.on_cpu(functools.partial(_argmax_pool, window), native, x)


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


class ConvTranspose(nn.Module):
  """`flax.linen.ConvTranspose` through jaxseg.models.ops.conv_transpose.

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
    y = ops.conv_transpose(x, kernel, tuple(self.strides or (1,) * nd),
                           self.padding)
    if bias is not None:
      y = y + bias
    return y
