"""The two 3D U-Nets of seed 000 (BraTS 2015, one modality, 96x144x144x1).

`residual_unet3d`: after Kayalibay, Jensen & van der Smagt 2017 ("CNN-based
segmentation of medical imaging data", arXiv 1701.03056; their BRATS model
`fcn_rffc4` in bkayalibay/CNNbasedMedicalSegmentation/model_defs.py). A U-Net
of residual blocks; 1x1 segmentation maps of the last `num_stage_maps`
decoder stages are up-sampled (linear) and summed, deepest first, into the
output:

    level 0:  ResBlock(f0) x blocks                      -> skip 0
    level i:  down(f_{i-1} -> f_i) -> ResBlock(f_i) x blocks -> skip i
              down = conv3 stride 2-norm-act ('strided', the paper's)
                   | max-pool 2 (the first block then projects, 'maxpool')
    stage j:  up(f_{i+1} -> f_i)-norm-act -> concat(skip i)
              -> ResBlock(f_i) x decoder_blocks -> map_j = conv1x1(classes)
              up = ConvTranspose(3, stride 2) ('transpose') | nearest + conv3
    output:   sum of the maps, each up-sampled (linear) to the input size

    ResBlock: conv3-norm-act-conv3-norm + shortcut (1x1 conv if the width
              changes), then act.

The defaults are the seed's Keras replication as far as its text allows:
it gives only "130M+" parameters with strided convolutions and "90M+" with
max-pools ("and shifted a few layers"). Kayalibay's own BRATS net is tiny
(features (8, 16, 32, 64), ~0.5M here); the seed's counts need U-Net widths:
with Ronneberger's (64, 128, 256, 512, 1024), one block per level, this
module has 141,832,515 (strided) and 104,925,635 (maxpool) parameters for
one input channel, the seed's magnitudes and order (its ratio ~0.69, here
0.74). Kayalibay's net: features=(8, 16, 32, 64), num_stage_maps=3 (he used
PReLU, and a 1x1 reduction before each transposed conv: not modelled).

`dilated_unet3d`: after Henry et al. 2020 ("Brain tumor segmentation with
self-ensembled, deeply-supervised 3D U-net neural networks: a BraTS 2020
challenge solution"; lescientifik/open_brats2020, src/models/unet.py
`Unet` and `EquiUnet`, width 48), features (w, 2w, 4w, 8w):

    enc1..3:  UBlock(in, mid, f_i) -> max-pool 2  (UBlock: 2x conv3-norm-ReLU)
    enc4:     UBlock(4w, mid, 8w)                 at 1/8, no pooling
    bottom:   UBlock(8w, 8w, 8w), dilation 2      at 1/8
    bottom_2: ConvNormReLU(cat(enc4, bottom) 16w -> 4w)
    dec3..1:  UBlock(cat(skip, upsample2(x)))  (trilinear, align_corners)
              -> 2w, w, last (w // 2 or w)
    out:      conv1x1(num_classes)

`equal_widths=True` is `EquiUnet` (every block of a level at the level's
width: encoder mid = out, last decoder width w), the model Henry's README
trains (`--width 48 --arch EquiUnet`) and the seed's "23M+": 23,148,577
parameters for one input channel and one class (Henry's 4 -> 3:
23,152,563); `equal_widths=False` is `Unet` (encoder mid = out // 2, last
decoder width w // 2): 19,165,825 (4 -> 3: 19,167,819). Both counts equal
those of Henry's PyTorch modules (tests/models/test_unet3d.py builds them).

Both follow the conventions of layers.py: channels-last, 2D or 3D inputs,
logits out, deep-supervision heads (train mode) main head LAST.
"""

from typing import Any, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.convolution import Conv
from jaxseg.models import sampling
from jaxseg.models.registry import register

# Keras' BatchNorm defaults: the seed replicated both models in Keras.
KERAS_BN_MOMENTUM = 0.99
KERAS_BN_EPSILON = 1e-3

def _tuple(value, n: int, field: str) -> tuple:
  """An int repeated n times, or a sequence of length n."""
  if isinstance(value, int):
    return (value,) * n
  value = tuple(value)
  if len(value) != n:
    raise ValueError(f'{field} {value} needs {n} entries (one per level)')
  return value


# ----------------------------------------------------------------------------
# residual_unet3d (Kayalibay et al. 2017)
# ----------------------------------------------------------------------------


class ResidualBlock(nn.Module):
  """conv3-norm-act-conv3-norm, plus shortcut, then act.

  The shortcut is the identity when the width is unchanged, else a 1x1 conv.
  Convs before a norm have no bias (unless norm='none').
  """
  features: int
  norm: str = 'batch'
  activation: str = 'relu'
  bn_momentum: float = KERAS_BN_MOMENTUM
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C_in) -> (N, *spatial, features)."""
    nd = x.ndim - 2
    act = layers.activation(self.activation)
    bias = self.norm == 'none'
    norm = lambda name: layers.norm(  # noqa: E731
        self.norm, train, name=name, momentum=self.bn_momentum,
        epsilon=KERAS_BN_EPSILON, dtype=self.dtype)
    y = Conv(self.features, (3,) * nd, use_bias=bias, dtype=self.dtype,
             name='conv1')(x)
    y = act(norm('norm1')(y))
    y = Conv(self.features, (3,) * nd, use_bias=bias, dtype=self.dtype,
             name='conv2')(y)
    y = norm('norm2')(y)
    if x.shape[-1] != self.features:
      x = Conv(self.features, (1,) * nd, dtype=self.dtype, name='proj')(x)
    return act(y + x)


# `train` (argument 2, counting self) is a Python bool: static under remat.
RematResidualBlock = nn.remat(ResidualBlock, static_argnums=(2,))


@register('residual_unet3d')
class ResidualUNet3D(nn.Module):
  """Residual 3D U-Net with summed multi-stage segmentation maps (Kayalibay).

  Attributes:
    num_classes: output channels (logits).
    features: widths per level, full resolution first; the input size must
      be divisible by 2 ** (len(features) - 1).
    blocks: residual blocks per encoder level (int or one per level).
    decoder_blocks: residual blocks per decoder stage.
    downsampling: 'strided' (conv3 stride 2-norm-act, the paper's) or
      'maxpool' (the seed's lighter variant; the next block projects).
    upsampling: 'transpose' (ConvTranspose 3, stride 2) or 'nearest'
      (nearest x2 then conv3); either is followed by norm-act.
    num_stage_maps: how many decoder stages (the finest ones) give a 1x1
      segmentation map to the summed output (Kayalibay: 3).
    deep_supervision: in train mode also return the deeper stage maps
      (each up-sampled to the input size) as heads; the summed output LAST.
    norm: normalisation ('batch' in the paper).
    activation: 'relu', 'elu' or 'leaky_relu'.
    bn_momentum: BatchNorm running-average momentum (Keras default 0.99).
    dropout_rate: dropout after every residual block (0: none).
    spatial_dropout: drop whole channels (True) or single activations.
    dtype: computation dtype; logits are float32.
    remat: recompute each stage's activations in the backward pass (less
      memory, ~1/3 more compute); every encoder and decoder residual block
      is wrapped in `nn.remat`, parameter names unchanged.
  """
  num_classes: int = 1
  features: Sequence[int] = (64, 128, 256, 512, 1024)
  blocks: Union[int, Sequence[int]] = 1
  decoder_blocks: int = 1
  downsampling: str = 'strided'
  upsampling: str = 'transpose'
  num_stage_maps: int = 3
  deep_supervision: bool = False
  norm: str = 'batch'
  activation: str = 'relu'
  bn_momentum: float = KERAS_BN_MOMENTUM
  dropout_rate: float = 0.0
  spatial_dropout: bool = True
  dtype: Any = jnp.float32
  remat: bool = False

  def _check(self, x):
    levels = len(self.features)
    if levels < 2:
      raise ValueError(f'features {tuple(self.features)} needs >= 2 levels')
    if self.downsampling not in ('strided', 'maxpool'):
      raise ValueError(f'downsampling={self.downsampling!r}; known: '
                       'strided, maxpool')
    if self.upsampling not in ('transpose', 'nearest'):
      raise ValueError(f'upsampling={self.upsampling!r}; known: '
                       'transpose, nearest')
    if not 1 <= self.num_stage_maps <= levels - 1:
      raise ValueError(f'num_stage_maps={self.num_stage_maps} must be in '
                       f'[1, {levels - 1}] (one per decoder stage)')
    blocks = _tuple(self.blocks, levels, 'blocks')
    if min(blocks) < 1 or self.decoder_blocks < 1:
      raise ValueError(f'blocks {self.blocks} and decoder_blocks '
                       f'{self.decoder_blocks} must be >= 1')
    layers.check_norm(self.norm)
    layers.activation(self.activation)
    layers.check_divisible(x, 2 ** (levels - 1),
                           f'2**(len(features) - 1), features '
                           f'{tuple(self.features)}')

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C) -> logits (N, *spatial, num_classes), or a list
    of such (deep supervision, train mode), the summed output last."""
    self._check(x)
    nd = x.ndim - 2
    levels = len(self.features)
    blocks = _tuple(self.blocks, levels, 'blocks')
    act = layers.activation(self.activation)
    bias = self.norm == 'none'
    norm = lambda name: layers.norm(  # noqa: E731
        self.norm, train, name=name, momentum=self.bn_momentum,
        epsilon=KERAS_BN_EPSILON, dtype=self.dtype)
    block_cls = RematResidualBlock if self.remat else ResidualBlock
    block = lambda f, name: block_cls(  # noqa: E731
        f, self.norm, self.activation, self.bn_momentum, self.dtype,
        name=name)
    drop = lambda y: layers.dropout(  # noqa: E731
        y, self.dropout_rate, self.spatial_dropout, train)
    x = x.astype(self.dtype)

    skips = []
    for i, width in enumerate(self.features):
      if i > 0:
        if self.downsampling == 'strided':
          x = Conv(width, (3,) * nd, strides=(2,) * nd, use_bias=bias,
                   dtype=self.dtype, name=f'down_{i}')(x)
          x = act(norm(f'down_norm_{i}')(x))
        else:
          x = sampling.max_pool(x, 2)
      for b in range(blocks[i]):
        x = drop(block(width, f'encoder_{i}_{b}')(x, train))
      skips.append(x)

    x = skips.pop()
    maps = []
    for j, i in enumerate(range(levels - 2, -1, -1)):
      width = self.features[i]
      if self.upsampling == 'transpose':
        x = sampling.ConvTranspose(width, (3,) * nd, strides=(2,) * nd,
                                   padding='SAME', use_bias=bias,
                                   dtype=self.dtype,
                                   name=f'up_{j}')(x)
      else:
        x = layers.upsample(x, 2, 'nearest')
        x = Conv(width, (3,) * nd, use_bias=bias, dtype=self.dtype,
                 name=f'up_{j}')(x)
      x = act(norm(f'up_norm_{j}')(x))
      x = jnp.concatenate([skips.pop(), x], axis=-1)
      for b in range(self.decoder_blocks):
        x = drop(block(width, f'decoder_{j}_{b}')(x, train))
      if i < self.num_stage_maps:
        maps.append(Conv(self.num_classes, (1,) * nd, dtype=self.dtype,
                         name=f'map_{j}')(x))

    # Each map up-sampled (linear) to the input size, summed. (Kayalibay
    # up-samples the running sum x2 per stage: the same up to rounding at
    # the borders of the linear interpolation.)
    size = maps[-1].shape[1:-1]
    heads = [layers.resize_to(m, size, 'linear').astype(jnp.float32)
             for m in maps[:-1]]
    out = sum(heads, maps[-1].astype(jnp.float32))
    if self.deep_supervision and train:
      return heads + [out]
    return out


# ----------------------------------------------------------------------------
# dilated_unet3d (Henry et al. 2020)
# ----------------------------------------------------------------------------


def henry_groups(channels: int, groups: int = 16) -> int:
  """Henry's `default_norm_layer` group count: min(groups, C), else C // d
  for the largest d in 16, 8, 4, ... that divides C."""
  g = min(groups, channels)
  if channels % g:
    divisor = 16
    while channels % divisor:
      divisor //= 2
    g = channels // divisor
  return g


class ConvNormReLU(nn.Module):
  """Henry's ConvBnRelu: conv3 (dilated)-norm-ReLU-dropout."""
  features: int
  norm: str = 'group'
  groups: int = 16
  dilation: int = 1
  dropout_rate: float = 0.0
  spatial_dropout: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C_in) -> (N, *spatial, features)."""
    nd = x.ndim - 2
    x = Conv(self.features, (3,) * nd, kernel_dilation=self.dilation,
             use_bias=self.norm == 'none', dtype=self.dtype, name='conv')(x)
    if self.norm == 'group':
      groups = henry_groups(self.features, self.groups)
      x = layers.norm('group', train, name='norm', dtype=self.dtype,
                      group_size=self.features // groups)(x)
    else:
      x = layers.norm(self.norm, train, name='norm', dtype=self.dtype)(x)
    x = nn.relu(x)
    return layers.dropout(x, self.dropout_rate, self.spatial_dropout, train)


class UBlock(nn.Module):
  """Henry's UBlock: ConvNormReLU(mid) -> ConvNormReLU(out)."""
  mid: int
  features: int
  dilation: int = 1
  norm: str = 'group'
  groups: int = 16
  dropout_rate: float = 0.0
  spatial_dropout: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C_in) -> (N, *spatial, features)."""
    for k, width in enumerate((self.mid, self.features)):
      x = ConvNormReLU(width, self.norm, self.groups, self.dilation,
                       self.dropout_rate, self.spatial_dropout, self.dtype, name=f'conv_{k}')(x, train)
    return x


# `train` (argument 2, counting self) is a Python bool: static under remat.
RematUBlock = nn.remat(UBlock, static_argnums=(2,))
RematConvNormReLU = nn.remat(ConvNormReLU, static_argnums=(2,))


@register('dilated_unet3d')
class DilatedUNet3D(nn.Module):
  """Henry et al.'s BraTS 2020 U-Net: 3 poolings, a dilated bottom block.

  Attributes:
    num_classes: output channels (logits).
    width: features of the first level; levels have (w, 2w, 4w, 8w). The
      input size must be divisible by 8.
    equal_widths: True: Henry's `EquiUnet` (encoder blocks UBlock(in, out,
      out), last decoder width w; the README's model, 23.1M parameters at
      width 48, the seed's "23M+"); False: `Unet` (UBlock(in, out // 2,
      out), last decoder width w // 2; 19.2M).
    dilation: dilation of the bottom block's convs.
    norm: 'group' (Henry: `groups` groups, see `henry_groups`), or any of
      layers.NORMS.
    groups: group count for norm='group'.
    align_corners: trilinear up-sampling as torch's align_corners=True
      (Henry); False: half-pixel (jax.image.resize).
    deep_supervision: in train mode also return Henry's four auxiliary
      heads (deep_bottom, deep_bottom2, deep3, deep2: 1x1 convs on bottom,
      bottom_2, dec3 and dec2 outputs, up-sampled), main head LAST.
    dropout_rate: dropout after every conv-norm-ReLU (Henry: 0).
    spatial_dropout: drop whole channels (True) or single activations
      (False, torch nn.Dropout as in Henry).
    dtype: computation dtype; logits are float32.
    remat: recompute each stage's activations in the backward pass (less
      memory, ~1/3 more compute); the encoder, bottom, bottom_2 and decoder
      blocks are wrapped in `nn.remat`, parameter names unchanged.
  """
  num_classes: int = 1
  width: int = 48
  equal_widths: bool = True
  dilation: int = 2
  norm: str = 'group'
  groups: int = 16
  align_corners: bool = True
  deep_supervision: bool = False
  dropout_rate: float = 0.0
  spatial_dropout: bool = False
  dtype: Any = jnp.float32
  remat: bool = False

  def _up(self, x, spatial_shape):
    if self.align_corners:
      return layers.resize_align_corners(x, spatial_shape)
    return layers.resize_to(x, spatial_shape, 'linear')

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C) -> logits (N, *spatial, num_classes), or a list
    of five (deep supervision, train mode), the main head last."""
    layers.check_norm(self.norm)
    layers.check_divisible(x, 8, 'three 2x poolings')
    nd = x.ndim - 2
    w = self.width
    f = [w, 2 * w, 4 * w, 8 * w]
    mid = f if self.equal_widths else [c // 2 for c in f]
    last = w if self.equal_widths else w // 2
    ublock_cls = RematUBlock if self.remat else UBlock
    cnr_cls = RematConvNormReLU if self.remat else ConvNormReLU
    ublock = lambda m, o, name, dilation=1: ublock_cls(  # noqa: E731
        m, o, dilation, self.norm, self.groups, self.dropout_rate,
        self.spatial_dropout, self.dtype, name=name)
    pool = lambda y: sampling.max_pool(y, 2)  # noqa: E731
    up = lambda y, like: self._up(y, like.shape[1:-1])  # noqa: E731
    x = x.astype(self.dtype)

    down1 = ublock(mid[0], f[0], 'encoder1')(x, train)
    down2 = ublock(mid[1], f[1], 'encoder2')(pool(down1), train)
    down3 = ublock(mid[2], f[2], 'encoder3')(pool(down2), train)
    down4 = ublock(mid[3], f[3], 'encoder4')(pool(down3), train)
    bottom = ublock(f[3], f[3], 'bottom', self.dilation)(down4, train)
    bottom_2 = cnr_cls(f[2], self.norm, self.groups, 1, self.dropout_rate,
                       self.spatial_dropout, self.dtype,
                       name='bottom_2')(
                           jnp.concatenate([down4, bottom], -1), train)
    up3 = ublock(f[2], f[1], 'decoder3')(
        jnp.concatenate([down3, up(bottom_2, down3)], -1), train)
    up2 = ublock(f[1], f[0], 'decoder2')(
        jnp.concatenate([down2, up(up3, down2)], -1), train)
    up1 = ublock(f[0], last, 'decoder1')(
        jnp.concatenate([down1, up(up2, down1)], -1), train)
    conv1x1 = lambda name: Conv(  # noqa: E731
        self.num_classes, (1,) * nd, dtype=self.dtype, name=name)
    out = conv1x1('outconv')(up1).astype(jnp.float32)

    if not self.deep_supervision:
      return out
    # The heads' parameters exist in both modes (init may run with
    # train=False); eval returns the main head only.
    heads = [conv1x1(name)(y) for name, y in (
        ('deep_bottom', bottom), ('deep_bottom2', bottom_2), ('deep3', up3),
        ('deep2', up2))]
    if not train:
      return out
    return [up(h, x).astype(jnp.float32) for h in heads] + [out]
