"""Building blocks shared by the model zoo.

Conventions every model in `jaxseg.models` follows:

  * Inputs are channels-last, (N, H, W, C) or (N, D, H, W, C); one module
    definition serves both ranks wherever the architecture is the same
    (kernels are `(k,) * (x.ndim - 2)`).
  * `__call__(x, train)`: `train` is explicit; dropout draws from the
    'dropout' RNG stream; batch statistics live in the 'batch_stats'
    collection. With `train=False` and an 'mc_dropout' RNG, dropout samples
    while batch norm uses its running statistics (Monte-Carlo dropout).
  * Outputs are logits (no final sigmoid/softmax), float32.
  * Deep supervision: with `deep_supervision=True` a model returns, when
    `train=True`, a list of logits, one per head, every head already at the
    input's spatial size, the main (full-depth) head LAST. With
    `train=False` it returns one logits array. The loss weights the heads
    (`config.loss.deep_supervision_weights`, same order).
  * Normalisation ('batch', 'instance', 'group', 'layer', 'none') and dropout
    (spatial: whole channels; element: single activations) are fields.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import norms

NORMS = ('batch', 'instance', 'group', 'layer', 'none')
ACTIVATIONS = {
    'relu': nn.relu,
    'elu': nn.elu,
    'leaky_relu': nn.leaky_relu,  # slope 0.01, PyTorch's default
    'silu': nn.silu,
}

# PyTorch's defaults (momentum 0.1 there is 0.9 here); Keras' differ (see
# resunet.py).
TORCH_BN_MOMENTUM = 0.9
TORCH_BN_EPSILON = 1e-5


def activation(name: str):
  """The activation function called `name` (one of ACTIVATIONS)."""
  if name not in ACTIVATIONS:
    raise ValueError(f'activation={name!r}; known: {", ".join(ACTIVATIONS)}')
  return ACTIVATIONS[name]


def check_norm(kind: str, field: str = 'norm') -> None:
  if kind not in NORMS:
    raise ValueError(f'{field}={kind!r}; known: {", ".join(NORMS)}')


def norm(kind: str, train: bool, *, name: Optional[str] = None,
         momentum: float = TORCH_BN_MOMENTUM, epsilon: float = TORCH_BN_EPSILON,
         group_size: int = 8, dtype: Any = jnp.float32):
  """A channel normalisation layer: x (N, ..., C) -> same shape.

  'group' uses groups of `group_size` channels (fewer channels: one group);
  'instance' normalises each channel of each sample over its spatial axes.
  The layers are jaxseg.models.norms' (flax's, with a one-pass formulation
  on the CPU).
  """
  lib, extra = norms, {}
  if kind == 'batch':
    return lib.BatchNorm(use_running_average=not train, momentum=momentum,
                         epsilon=epsilon, dtype=dtype, name=name, **extra)
  if kind == 'instance':
    return lib.InstanceNorm(epsilon=epsilon, dtype=dtype, name=name, **extra)
  if kind == 'group':
    def group(x):
      size = min(group_size, x.shape[-1])
      return lib.GroupNorm(num_groups=None, group_size=size, epsilon=epsilon,
                           dtype=dtype, name=name, **extra)(x)
    return group
  if kind == 'layer':
    return lib.LayerNorm(epsilon=epsilon, dtype=dtype, name=name, **extra)
  if kind == 'none':
    return lambda x: x
  check_norm(kind)


# The RNG stream that turns dropout on in inference mode (Monte-Carlo
# dropout): `apply(..., train=False, rngs={MC_DROPOUT: key})` keeps batch
# norm on its running statistics and samples the dropout masks.
MC_DROPOUT = 'mc_dropout'


class SpatialDropout(nn.Module):
  """Dropout of whole channels (Keras SpatialDropout2D/3D, torch Dropout2d/3d).

  One keep/drop draw per (sample, channel), broadcast over the spatial axes;
  kept channels are scaled by 1 / (1 - rate). Uses the 'dropout' RNG stream
  in training; in inference mode it is the identity unless an 'mc_dropout'
  RNG is given (Monte-Carlo dropout, `jaxseg.inference.mc_dropout`).

  Attributes:
    rate: probability of dropping a channel.
    spatial: if False, plain element-wise dropout.
  """
  rate: float
  spatial: bool = True

  @nn.compact
  def __call__(self, x, deterministic: bool):
    """x: (N, *spatial, C) -> same shape."""
    broadcast = tuple(range(1, x.ndim - 1)) if self.spatial else ()
    stream = 'dropout'
    if deterministic and self.has_rng(MC_DROPOUT):
      deterministic, stream = False, MC_DROPOUT
    return nn.Dropout(self.rate, broadcast_dims=broadcast,
                      rng_collection=stream)(x, deterministic=deterministic)


def dropout(x, rate: float, spatial: bool, train: bool):
  """Applies (spatial) dropout inside a compact module; identity if rate 0."""
  if rate <= 0.0:
    return x
  return SpatialDropout(rate, spatial)(x, deterministic=not train)


def resize_to(x, spatial_shape, method: str = 'linear'):
  """Resizes x (N, *spatial, C) to (N, *spatial_shape, C)."""
  shape = (x.shape[0], *spatial_shape, x.shape[-1])
  if tuple(x.shape) == shape:
    return x
  return jax.image.resize(x, shape, method=method)


def resize_align_corners(x, spatial_shape):
  """Multi-linear resize with align_corners=True semantics (PyTorch).

  x: (N, *spatial, C) -> (N, *spatial_shape, C). Output sample k of an axis
  of n -> m samples reads input position k * (n - 1) / (m - 1), so the corner
  samples coincide. Separable gathers and lerps (exact float32 everywhere,
  no matmul precision caveats).
  """
  for axis, m in enumerate(spatial_shape, start=1):
    n = x.shape[axis]
    if n == m:
      continue
    src = (np.arange(m) * ((n - 1) / (m - 1)) if m > 1
           else np.zeros((1,)))
    i0 = np.minimum(np.floor(src).astype(np.int32), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (src - i0).astype(np.float32)
    bshape = [1] * x.ndim
    bshape[axis] = m
    w = jnp.asarray(w.reshape(bshape), x.dtype)
    x0 = jnp.take(x, i0, axis=axis)
    x1 = jnp.take(x, i1, axis=axis)
    x = x0 + (x1 - x0) * w
  return x


def upsample(x, factor: int = 2, method: str = 'nearest'):
  """x (N, *spatial, C) -> (N, *(factor * spatial), C) ('nearest' or 'linear')."""
  return resize_to(x, tuple(factor * s for s in x.shape[1:-1]), method)


def check_divisible(x, factor: int, what: str) -> None:
  """Raises a ValueError naming the input size if it is not divisible."""
  if x.ndim < 3:
    raise ValueError(f'input must be (N, *spatial, C), got {x.shape}')
  if any(s % factor for s in x.shape[1:-1]):
    raise ValueError(f'spatial size {tuple(x.shape[1:-1])} must be divisible '
                     f'by {factor} ({what})')
