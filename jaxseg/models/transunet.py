"""TransUNet (Chen et al. 2021), a small CPU-sized variant; seed 003's next step.

Seed 003 (sections 9-10) names TransUNet as the model to try after U-Net++
but gives no configuration. This module keeps the layout of the reference
code (Beckschen/TransUNet, networks/vit_seg_modeling.py) at a small size:

    x -> CNN stem: len(stem_features) levels, each
         conv3x3/2-norm-ReLU, conv3x3-norm-ReLU        skips at 1/2, 1/4, 1/8
      -> ViT encoder on the last stem map:
         patch embedding Conv(hidden, p, stride p) -> tokens (N, T, hidden)
         + learned position embedding (1, T, hidden) -> dropout
         -> num_layers pre-norm blocks:
              x + Drop(MHSA(LN(x)))  then  x + MLP(LN(x)),
              MLP = Dense(mlp_dim)-GELU-Drop-Dense(hidden)-Drop
         -> LayerNorm -> reshape to the token grid (N, *grid, hidden)
      -> conv3x3-norm-ReLU to bottleneck_features ("conv_more")
      -> cascaded upsampler: per stage upsample x2, concat the stem skip of
         that resolution (if any), [conv3x3-norm-ReLU] x2
      -> Conv(num_classes, head_kernel_size) logits at full resolution.

With 3 stem levels and patch_size 2 the tokens sit at 1/16 and the decoder
has 4 stages (to 1/8 + skip, 1/4 + skip, 1/2 + skip, 1/1 without skip),
exactly the reference layout (R50 stem with skips at 1/8, 1/4, 1/2; 1x1
patches on its 1/16 map). In general the decoder has len(stem_features) +
log2(patch_size) stages, one per entry of `decoder_features`.

The original R50-ViT-B/16 has ~105M parameters (105.28M is the usual
quote; by hand: 85.06M in the 12 ViT-B blocks, ~11.9M in the ResNet-50
stages, ~7.4M in the decoder, ~0.9M in the embeddings). The closest setting
here (a plain conv stem instead of the ResNet-50 bottleneck stages):

    TransUNet(stem_features=(64, 256, 512), hidden_size=768, num_layers=12,
              num_heads=12, mlp_dim=3072, patch_size=2,
              bottleneck_features=512, decoder_features=(256, 128, 64, 16),
              head_kernel_size=3)

which at 224x224x3 input (196 tokens, as in the paper) and one class has
98,485,649 parameters, 85,056,000 of them in the 12 blocks and final
LayerNorm (tests/models/test_transunet.py checks both). The defaults (3.44M
parameters at 256x256x3) are the same layout at ViT-Tiny-like width.

The position embedding is sized from the input at init, so the input size
must be the same at init and apply: a different token count raises a
ValueError. (A transposed grid with the same token count, e.g. 32x64 vs
64x32, is not detected.)

Ranks: the stem, decoder and patch embedding follow the input rank and the
tokens are the flattened grid, so (N, D, H, W, C) volumes work too (3D
support comes for free; the reference is 2D only).
"""

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.convolution import Conv
from jaxseg.models.registry import register

UPSAMPLING = ('linear_align_corners', 'linear', 'nearest')
LN_EPSILON = 1e-6  # the reference's LayerNorm(eps=1e-6).


class ConvNormReLU(nn.Module):
  """conv (k, stride) - norm - ReLU; no conv bias under a normalisation."""
  features: int
  strides: int = 1
  norm: str = 'batch'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C) -> (N, *spatial / strides, features)."""
    nd = x.ndim - 2
    x = Conv(self.features, (3,) * nd, strides=(self.strides,) * nd,
             padding=((1, 1),) * nd, use_bias=self.norm == 'none',
             dtype=self.dtype, name='conv')(x)
    x = layers.norm(self.norm, train, name='norm', dtype=self.dtype)(x)
    return nn.relu(x)


class DoubleConv(nn.Module):
  """[conv3x3-norm-ReLU] x2 (the first may stride), then dropout."""
  features: int
  strides: int = 1
  norm: str = 'batch'
  dropout_rate: float = 0.0
  spatial_dropout: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C) -> (N, *spatial / strides, features)."""
    x = ConvNormReLU(self.features, self.strides, self.norm, self.dtype, name='conv1')(x, train)
    x = ConvNormReLU(self.features, 1, self.norm, self.dtype,
                     name='conv2')(x, train)
    return layers.dropout(x, self.dropout_rate, self.spatial_dropout, train)


class EncoderBlock(nn.Module):
  """Pre-norm transformer block: x (N, T, hidden) -> same shape.

  Parameters: 4 h^2 + 4 h (q, k, v, out with biases) + 2 h m + h + m (MLP)
  + 4 h (two LayerNorms), h = hidden, m = mlp_dim.
  """
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    hidden = x.shape[-1]
    y = nn.LayerNorm(LN_EPSILON, dtype=self.dtype, name='attention_norm')(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        broadcast_dropout=False, dtype=self.dtype, name='attention')(
            y, deterministic=not train)
    # The reference's proj_dropout uses the attention dropout rate.
    x = x + nn.Dropout(self.attention_dropout_rate)(y, deterministic=not train)
    y = nn.LayerNorm(LN_EPSILON, dtype=self.dtype, name='mlp_norm')(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype,
                 kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(1e-6), name='mlp_in')(y)
    y = nn.Dropout(self.dropout_rate)(nn.gelu(y, approximate=False),
                                      deterministic=not train)
    y = nn.Dense(hidden, dtype=self.dtype,
                 kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(1e-6), name='mlp_out')(y)
    return x + nn.Dropout(self.dropout_rate)(y, deterministic=not train)


class ViTEncoder(nn.Module):
  """Patch embedding + position embedding + transformer blocks + LayerNorm.

  x (N, *spatial, C) -> (N, *spatial / patch_size, hidden_size).
  """
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: int = 1
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, input_size: Optional[tuple] = None):
    nd = x.ndim - 2
    p = (self.patch_size,) * nd
    x = Conv(self.hidden_size, p, strides=p, padding='VALID',
             dtype=self.dtype, name='embedding')(x)
    grid = x.shape[1:-1]
    tokens = math.prod(grid)
    if self.has_variable('params', 'pos_embedding'):
      expected = self.get_variable('params', 'pos_embedding').shape[1]
      if expected != tokens:
        raise ValueError(
            f'TransUNet was initialised for {expected} tokens, but input '
            f'spatial size {input_size or "?"} gives a token grid {grid} = '
            f'{tokens} tokens; the learned position embedding fixes the '
            'input size: apply with the size used at init')
    pos = self.param('pos_embedding', nn.initializers.normal(0.02),
                     (1, tokens, self.hidden_size))
    x = x.reshape(x.shape[0], tokens, self.hidden_size) + pos.astype(x.dtype)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    for i in range(self.num_layers):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate,
                       self.attention_dropout_rate, self.dtype,
                       name=f'block_{i}')(x, train)
    x = nn.LayerNorm(LN_EPSILON, dtype=self.dtype, name='encoder_norm')(x)
    return x.reshape(x.shape[0], *grid, self.hidden_size)


@register('transunet')
class TransUNet(nn.Module):
  """TransUNet: CNN stem + ViT encoder + cascaded upsampler (module docs).

  Attributes:
    num_classes: output channels (logits).
    stem_features: channels of each stem level (each halves the size).
    hidden_size / num_layers / num_heads / mlp_dim: the ViT encoder.
    patch_size: patch embedding size on the last stem map (power of 2).
    bottleneck_features: channels of the conv after the encoder.
    decoder_features: channels per decoder stage, deepest first; needs
      len(stem_features) + log2(patch_size) entries.
    head_kernel_size: kernel of the output conv (the reference uses 3).
    norm: normalisation of the stem and decoder convs ('batch').
    upsampling: decoder x2 upsampling: 'linear_align_corners' (the
      reference's UpsamplingBilinear2d), 'linear' or 'nearest'.
    dropout_rate: transformer dropout (embeddings, MLP); 0.1 in ViT-B.
    attention_dropout_rate: on attention weights and the attention output.
    conv_dropout_rate / spatial_dropout: dropout after every stem and
      decoder block (not in the reference: default 0).
    dtype: computation dtype; logits are float32.
  """
  num_classes: int = 1
  stem_features: Sequence[int] = (32, 64, 128)
  hidden_size: int = 192
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 768
  patch_size: int = 2
  bottleneck_features: int = 256
  decoder_features: Sequence[int] = (128, 64, 32, 16)
  head_kernel_size: int = 1
  norm: str = 'batch'
  upsampling: str = 'linear_align_corners'
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  conv_dropout_rate: float = 0.0
  spatial_dropout: bool = True
  dtype: Any = jnp.float32

  def _check(self, x) -> int:
    """Validates the settings and input; returns the number of x2 stages."""
    layers.check_norm(self.norm)
    if self.upsampling not in UPSAMPLING:
      raise ValueError(f'upsampling={self.upsampling!r}; known: '
                       f'{", ".join(UPSAMPLING)}')
    p = self.patch_size
    if p < 1 or p & (p - 1):
      raise ValueError(f'patch_size={p} must be a power of 2')
    if self.hidden_size % self.num_heads:
      raise ValueError(f'hidden_size={self.hidden_size} must be divisible by '
                       f'num_heads={self.num_heads}')
    stages = len(self.stem_features) + p.bit_length() - 1
    if len(self.decoder_features) != stages:
      raise ValueError(
          f'decoder_features {tuple(self.decoder_features)} needs {stages} '
          f'entries (len(stem_features) + log2(patch_size))')
    layers.check_divisible(x, 2 ** stages, f'2**len(stem_features) * '
                           f'patch_size = {2 ** stages}')
    return stages

  def _up(self, x):
    shape = tuple(2 * s for s in x.shape[1:-1])
    if self.upsampling == 'linear_align_corners':
      return layers.resize_align_corners(x, shape)
    return layers.resize_to(x, shape, self.upsampling)

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, H, W, C) or (N, D, H, W, C) -> logits (..., num_classes)."""
    stages = self._check(x)
    nd = x.ndim - 2
    input_size = tuple(x.shape[1:-1])
    x = x.astype(self.dtype)

    skips = []  # skips[k - 1] at 1/2**k.
    for i, f in enumerate(self.stem_features):
      x = DoubleConv(f, 2, self.norm, self.conv_dropout_rate,
                     self.spatial_dropout, self.dtype,
                     name=f'stem_{i}')(x, train)
      skips.append(x)

    x = ViTEncoder(self.hidden_size, self.num_layers, self.num_heads,
                   self.mlp_dim, self.patch_size, self.dropout_rate,
                   self.attention_dropout_rate, self.dtype,
                   name='transformer')(x, train, input_size)
    x = ConvNormReLU(self.bottleneck_features, 1, self.norm, self.dtype, name='conv_more')(x, train)

    for s, f in enumerate(self.decoder_features):
      level = stages - s - 1  # this stage's output is at 1/2**level.
      x = self._up(x)
      if 1 <= level <= len(skips):
        x = jnp.concatenate([x, skips[level - 1]], axis=-1)
      x = DoubleConv(f, 1, self.norm, self.conv_dropout_rate,
                     self.spatial_dropout, self.dtype,
                     name=f'decoder_{s}')(x, train)

    x = Conv(self.num_classes, (self.head_kernel_size,) * nd,
             padding='SAME', dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)
