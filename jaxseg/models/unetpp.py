"""UNet++ (Zhou et al. 2018, "UNet++: A Nested U-Net Architecture").

The U-Net++ of seed 003 (section 9): trained on the Kaggle LGG slices
(256x256x3 TIFF) in "fast mode", i.e. one output on the full-depth node. The
defaults are the widely used PyTorch `NestedUNet` (4uiiurz1/pytorch-nested-
unet, archs.py), the usual PyTorch port of the reference Keras code
(MrGiovanni/UNetPlusPlus): nb_filter (32, 64, 128, 256, 512), VGG blocks
conv3x3(bias)-BN-ReLU x2, bilinear upsampling with align_corners=True, no
dropout. With 3 input channels and 1 class it has 9,163,329 parameters
(tests/models/test_unetpp.py builds the torch model and compares counts and
outputs).

Nodes X^{i,j} (i: depth, 0 = full resolution; j: position on the skip path):

    X^{i,0} = H(pool(X^{i-1,0}))                      (backbone; X^{0,0} = H(x))
    X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})])      j >= 1

H is [conv3x3-norm-ReLU(-dropout)] x2 with `features[i]` channels, Up a x2
upsampling ('linear_align_corners': torch's Upsample(bilinear,
align_corners=True); 'linear': jax.image.resize; 'nearest'; 'transpose':
ConvTranspose(features[i], 2, stride 2) as in the Keras reference). With
depth D = len(features) - 1 (4 by default) the heads are 1x1 convs on
X^{0,1}, ..., X^{0,D}.

Outputs:
  * deep_supervision=False: one head on X^{0,D}, in train and eval.
  * deep_supervision=True, train=True: [head(X^{0,1}), ..., head(X^{0,D})]
    (the full-depth head last, layers.py's contract).
  * deep_supervision=True, train=False: mode 'accurate' averages the D heads'
    logits, mode 'fast' returns head(X^{0,D}); with `prune_level` L it runs
    only the nodes X^{i,j} with i + j <= L (UNet++ L) and returns head L.
The heads computed are also sown to 'intermediates' as 'logits_{j}'.

All kernels follow the input rank: (N, H, W, C) and (N, D, H, W, C) work.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models import sampling
from jaxseg.models.convolution import Conv
from jaxseg.models.registry import register

UPSAMPLING = ('linear_align_corners', 'linear', 'nearest', 'transpose')
MODES = ('accurate', 'fast')


class ConvBlock(nn.Module):
  """H: [conv3x3 - norm - ReLU - dropout] x 2 (the VGG block of UNet++).

  Attributes:
    features: output channels (also the middle channels).
    norm: layers.NORMS entry.
    use_bias: conv bias (the PyTorch NestedUNet keeps it before BN).
    dropout_rate / spatial_dropout: dropout after each ReLU (Keras
      reference: element-wise 0.5; PyTorch NestedUNet: none).
  """
  features: int
  norm: str = 'batch'
  use_bias: bool = True
  dropout_rate: float = 0.0
  spatial_dropout: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C_in) -> (N, *spatial, features)."""
    nd = x.ndim - 2
    for k in (1, 2):
      x = Conv(self.features, (3,) * nd, padding='SAME',
               use_bias=self.use_bias, dtype=self.dtype, name=f'conv{k}')(x)
      x = layers.norm(self.norm, train, name=f'norm{k}', dtype=self.dtype)(x)
      x = nn.relu(x)
      x = layers.dropout(x, self.dropout_rate, self.spatial_dropout, train)
    return x


@register('unetpp')
class UNetPlusPlus(nn.Module):
  """UNet++ with dense nested skips; see the module docstring.

  Attributes:
    num_classes: output channels (logits).
    features: channels of H per depth i; len(features) - 1 = depth D.
    norm: normalisation in H ('batch' as in NestedUNet).
    conv_bias: bias in H's convs (True in NestedUNet and the Keras code).
    deep_supervision: heads on every X^{0,j} (train: list of D heads).
    mode: eval output with deep supervision: 'accurate' (mean of the heads'
      logits) or 'fast' (the X^{0,D} head; seed 003's choice).
    prune_level: None, or L in 1..D: eval runs the pruned UNet++ L and
      returns head L (needs deep_supervision; training is never pruned).
    upsampling: 'linear_align_corners' (NestedUNet), 'linear', 'nearest' or
      'transpose' (Keras reference).
    dropout_rate / spatial_dropout: dropout after every conv of H.
    dtype: computation dtype; logits are float32.
  """
  num_classes: int = 1
  features: Sequence[int] = (32, 64, 128, 256, 512)
  norm: str = 'batch'
  conv_bias: bool = True
  deep_supervision: bool = False
  mode: str = 'fast'
  prune_level: Optional[int] = None
  upsampling: str = 'linear_align_corners'
  dropout_rate: float = 0.0
  spatial_dropout: bool = False
  dtype: Any = jnp.float32

  def _check(self, x):
    depth = len(self.features) - 1
    if depth < 1:
      raise ValueError(f'features {tuple(self.features)} needs at least 2 '
                       'levels')
    layers.check_norm(self.norm)
    if self.mode not in MODES:
      raise ValueError(f'mode={self.mode!r}; known: {", ".join(MODES)}')
    if self.upsampling not in UPSAMPLING:
      raise ValueError(f'upsampling={self.upsampling!r}; known: '
                       f'{", ".join(UPSAMPLING)}')
    if self.prune_level is not None:
      if not self.deep_supervision:
        raise ValueError('prune_level needs deep_supervision=True (the '
                         'pruned heads X^{0,L}, L < depth, exist only then)')
      if not 1 <= self.prune_level <= depth:
        raise ValueError(f'prune_level={self.prune_level} must be in '
                         f'1..{depth} (len(features) - 1)')
    layers.check_divisible(x, 2 ** depth, f'2**(len(features) - 1) = '
                           f'{2 ** depth}')

  def _up(self, x, i: int, j: int):
    """Up(X^{i+1,j-1}) for node X^{i,j}: x2 spatially."""
    if self.upsampling == 'transpose':
      nd = x.ndim - 2
      return sampling.ConvTranspose(self.features[i], (2,) * nd,
                                    strides=(2,) * nd, padding='SAME',
                                    dtype=self.dtype,
                                    name=f'up{i}_{j}')(x)
    if self.upsampling == 'linear_align_corners':
      return layers.resize_align_corners(
          x, tuple(2 * s for s in x.shape[1:-1]))
    return layers.upsample(x, 2, self.upsampling)

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *spatial, C) -> logits (N, *spatial, num_classes), or the list
    of D heads (deep supervision, train)."""
    self._check(x)
    nd = x.ndim - 2
    depth = len(self.features) - 1
    full = train or self.is_initializing() or self.prune_level is None
    last = depth if full else self.prune_level
    block = lambda i, j: ConvBlock(  # noqa: E731
        self.features[i], self.norm, self.conv_bias, self.dropout_rate,
        self.spatial_dropout, self.dtype, name=f'x{i}_{j}')
    x = x.astype(self.dtype)

    # Diagonal d adds backbone node X^{d,0}, then X^{d-1,1}, ..., X^{0,d}.
    nodes = {(0, 0): block(0, 0)(x, train)}
    for d in range(1, last + 1):
      down = sampling.max_pool(nodes[d - 1, 0], 2)
      nodes[d, 0] = block(d, 0)(down, train)
      for j in range(1, d + 1):
        i = d - j
        inputs = [nodes[i, k] for k in range(j)]
        inputs.append(self._up(nodes[i + 1, j - 1], i, j))
        nodes[i, j] = block(i, j)(jnp.concatenate(inputs, axis=-1), train)

    head = lambda j, name: Conv(  # noqa: E731
        self.num_classes, (1,) * nd, dtype=self.dtype, name=name)(
            nodes[0, j]).astype(jnp.float32)
    if not self.deep_supervision:
      return head(depth, 'head')

    if train or self.is_initializing():
      wanted = range(1, depth + 1)
    elif self.prune_level is not None:
      wanted = [self.prune_level]
    elif self.mode == 'fast':
      wanted = [depth]
    else:
      wanted = range(1, depth + 1)
    heads = []
    for j in wanted:
      heads.append(head(j, f'head_{j}'))
      self.sow('intermediates', f'logits_{j}', heads[-1])
    if train:
      return heads
    if self.prune_level is not None:
      return heads[-1] if len(heads) == 1 else heads[self.prune_level - 1]
    if self.mode == 'fast':
      return heads[-1]
    return sum(heads) / len(heads)
