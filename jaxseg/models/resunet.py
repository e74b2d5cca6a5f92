"""ResU-Net of seed 002 (ResU-Net 2D on BraTS 2019 slices), in Flax Linen.

A U-Net whose every level is a stack of ResNet blocks, with spatial dropout
after each block. With the defaults it is the study's model: 64x64x4 input,
6,854,609 trainable parameters and 9,824 batch-norm statistics (Keras counts,
section 3.2.4 of the study).

Encoder, one level per entry of `widths` (spatial size halves each level):

    x -> ResidualStage(width, depth) -> max-pool 2 -> skip / next level

    64x64x4 -> 32x32x16 -> 16x16x32 -> 8x8x64 -> 4x4x128 -> 2x2x256

(Table 1 of the study prints 2x2x128 for level 5; the repository's final
setup and table 2's decoder input say 256, and only 256 meets both counts.
tests/models/test_resunet.py has the derivation.)

Decoder, one stage per skip, deepest first:

    x -> ConvTranspose(width, 3, stride 2) -> ReLU -> concat(skip)
      -> LayerNorm -> dropout -> ResidualStage(width, 1)

    2x2x256 -> [4x4x256] -> 4x4x128 -> ... -> [32x32x32] -> 32x32x16

Output block:

    x -> linear resize x2 -> Conv 1x1 (widths[0]) -> ReLU -> LayerNorm
      -> ResidualStage(widths[0], output_depth) -> Conv 1x1 (num_classes)

The first unit of each ResidualStage projects its shortcut with a 1x1 conv
and batch norm; the later units keep the identity shortcut. Convolutions
before a batch norm have no bias. The Keras model ended in a sigmoid; this
one returns logits.

All kernels follow the input rank, so (N, D, H, W, C) volumes work too.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.convolution import Conv
from jaxseg.models import sampling
from jaxseg.models.registry import register
from jaxseg.models.layers import NORMS, SpatialDropout  # noqa: F401 (re-export)

# Keras defaults, kept for parity with the study's training.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
LN_EPSILON = 1e-3

_kernel_init = nn.initializers.glorot_uniform()  # Keras' default.


def _norm(kind: str, train: bool, dtype: Any, name: Optional[str] = None,
          momentum: float = BN_MOMENTUM):
  """Keras-style channel normalisation: x (N, ..., C) -> same shape."""
  return layers.norm(kind, train, name=name, momentum=momentum,
                     epsilon=LN_EPSILON if kind == 'layer' else BN_EPSILON,
                     dtype=dtype)


class ResidualUnit(nn.Module):
  """conv3-norm-ReLU-conv3-norm, plus shortcut, then ReLU.

  With `project` the shortcut is conv1x1-norm (Keras 'ResidualConvBlock'),
  otherwise the identity ('ResidualLinearBlock'); convs have no bias.
  """
  features: int
  project: bool
  norm: str = 'batch'
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C_in) -> (N, *spatial, features)."""
    nd = x.ndim - 2
    conv = lambda k, name: Conv(  # noqa: E731
        self.features, (k,) * nd, padding='SAME', use_bias=False,
        kernel_init=_kernel_init, dtype=self.dtype, name=name)
    norm = lambda name: _norm(self.norm, train, self.dtype, name,  # noqa: E731
                              self.bn_momentum)
    y = conv(3, 'conv1')(x)
    y = nn.relu(norm('norm1')(y))
    y = conv(3, 'conv2')(y)
    y = norm('norm2')(y)
    if self.project:
      x = conv(1, 'proj_conv')(x)
      x = norm('proj_norm')(x)
    return nn.relu(y + x)


class ResidualStage(nn.Module):
  """`depth` residual units (the first projects), dropout after each unit."""
  features: int
  depth: int
  dropout_rate: float = 0.0
  spatial_dropout: bool = True
  norm: str = 'batch'
  dtype: Any = jnp.float32
  bn_momentum: float = BN_MOMENTUM

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C_in) -> (N, *spatial, features)."""
    for i in range(self.depth):
      x = ResidualUnit(self.features, project=i == 0, norm=self.norm,
                       dtype=self.dtype, bn_momentum=self.bn_momentum, name=f'unit_{i}')(x, train)
      if self.dropout_rate > 0.0:
        x = SpatialDropout(self.dropout_rate, self.spatial_dropout)(
            x, deterministic=not train)
    return x


# `train` (argument 2, counting self) is a Python bool: static under remat.
RematResidualStage = nn.remat(ResidualStage, static_argnums=(2,))


@register('resunet')
class ResUNet(nn.Module):
  """ResU-Net (seed 002, section 3.2): residual U-Net with spatial dropout.

  Attributes:
    num_classes: output channels (logits, no final activation).
    widths: encoder channels per level; the last is the bottleneck.
    depths: residual units per encoder level.
    decoder_widths: channels of each decoder stage, deepest first; default
      `widths[-2::-1]`, the skip widths, as in the study.
    decoder_depths: residual units per decoder stage (default 1 each).
    output_depth: residual units in the output block.
    dropout_rate: dropout after every residual unit and decoder merge.
    spatial_dropout: drop whole channels (True) or single activations.
    norm: normalisation inside the residual units ('batch' in the study).
    merge_norm: normalisation after each skip concatenation ('layer').
    bn_momentum: BatchNorm running-average momentum (Keras default 0.99).
    dtype: computation dtype; parameters stay float32, logits are float32.
    remat: recompute each stage's activations in the backward pass (less
      memory, ~1/3 more compute); every encoder, decoder and output
      residual stage is wrapped in `nn.remat`, parameter names unchanged.
  """
  num_classes: int = 1
  widths: Sequence[int] = (16, 32, 64, 128, 256)
  depths: Sequence[int] = (1, 2, 3, 4, 4)
  decoder_widths: Optional[Sequence[int]] = None
  decoder_depths: Optional[Sequence[int]] = None
  output_depth: int = 2
  dropout_rate: float = 0.1
  spatial_dropout: bool = True
  norm: str = 'batch'
  merge_norm: str = 'layer'
  bn_momentum: float = BN_MOMENTUM
  dtype: Any = jnp.float32
  remat: bool = False

  def _check(self, x):
    levels = len(self.widths)
    if len(self.depths) != levels:
      raise ValueError(f'depths {tuple(self.depths)} needs one entry per '
                       f'width {tuple(self.widths)}')
    for field in ('decoder_widths', 'decoder_depths'):
      value = getattr(self, field)
      if value is not None and len(value) != levels - 1:
        raise ValueError(f'{field} {tuple(value)} needs {levels - 1} entries '
                         '(one per skip connection)')
    for field in ('norm', 'merge_norm'):
      if getattr(self, field) not in NORMS:
        raise ValueError(f'{field}={getattr(self, field)!r}; known: '
                         f'{", ".join(NORMS)}')
    if x.ndim < 3:
      raise ValueError(f'input must be (N, *spatial, C), got {x.shape}')
    factor = 2 ** levels
    if any(s % factor for s in x.shape[1:-1]):
      raise ValueError(f'spatial size {x.shape[1:-1]} must be divisible by '
                       f'2**len(widths) = {factor}')

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, H, W, C) or (N, D, H, W, C) -> logits (N, H, W, num_classes)."""
    self._check(x)
    nd = x.ndim - 2
    levels = len(self.widths)
    dec_widths = tuple(self.decoder_widths or self.widths[-2::-1])
    dec_depths = tuple(self.decoder_depths or (1,) * (levels - 1))
    stage_cls = RematResidualStage if self.remat else ResidualStage
    stage = lambda f, d, rate, name: stage_cls(  # noqa: E731
        f, d, rate, self.spatial_dropout, self.norm, self.dtype,
        self.bn_momentum, name=name)
    x = x.astype(self.dtype)

    # Encoder: table 1 of the study (outputs after pooling).
    skips = []
    for i, (width, depth) in enumerate(zip(self.widths, self.depths)):
      x = stage(width, depth, self.dropout_rate, f'encoder_{i}')(x, train)
      x = sampling.max_pool(x, 2)
      self.sow('intermediates', f'encoder_out_{i}', x)
      skips.append(x)
    x = skips.pop()
    self.sow('intermediates', 'decoder_input', x)

    # Decoder: table 2 (the merged shapes are its rows 1-4).
    for i, (width, depth) in enumerate(zip(dec_widths, dec_depths)):
      x = sampling.ConvTranspose(width, (3,) * nd, strides=(2,) * nd,
                                 padding='SAME', kernel_init=_kernel_init,
                                 dtype=self.dtype,
                                 name=f'up_{i}')(x)
      x = jnp.concatenate([nn.relu(x), skips.pop()], axis=-1)
      x = _norm(self.merge_norm, train, self.dtype, f'merge_norm_{i}')(x)
      self.sow('intermediates', f'decoder_merge_{i}', x)
      if self.dropout_rate > 0.0:
        x = SpatialDropout(self.dropout_rate, self.spatial_dropout)(
            x, deterministic=not train)
      x = stage(width, depth, self.dropout_rate, f'decoder_{i}')(x, train)

    # Output block: upsample to the input size, then 1x1 convs.
    shape = (x.shape[0], *(2 * s for s in x.shape[1:-1]), x.shape[-1])
    x = jax.image.resize(x, shape, method='linear')
    x = Conv(self.widths[0], (1,) * nd, kernel_init=_kernel_init,
             dtype=self.dtype, name='out_conv')(x)
    x = _norm(self.merge_norm, train, self.dtype, 'out_norm')(nn.relu(x))
    self.sow('intermediates', 'output_block_input', x)
    x = stage(self.widths[0], self.output_depth, 0.0, 'output')(x, train)
    x = Conv(self.num_classes, (1,) * nd, kernel_init=_kernel_init,
             dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)
