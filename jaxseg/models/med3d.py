"""Med3DUNet (seed 004): a MedicalNet 3D ResNet per MRI modality + a 3D U-Net.

The backbone, `ResNet3D`, is MedicalNet's 3D ResNet (Chen et al. 2019,
"Med3D"; Tencent/MedicalNet models/resnet.py) without its segmentation head
`conv_seg`, laid out so that every parameter path maps 1:1 to a key of the
released PyTorch checkpoints (`jaxseg.models.medicalnet.load_medicalnet`):

    conv1 7^3 stride 2 pad 3 (64, no bias) -> bn1 -> ReLU      'conv1'  1/2
    max-pool 3^3 stride 2 pad 1
    layer1: 64 planes                                          'layer1' 1/4
    layer2: 128 planes, stride 2                               'layer2' 1/8
    layer3: 256 planes, stride 1, dilation 2                   'layer3' 1/8
    layer4: 512 planes, stride 1, dilation 4                   'layer4' 1/8

  torch key                          Flax path
  conv1.weight                       params/conv1/kernel
  bn1.{weight,bias}                  params/bn1/{scale,bias}
  bn1.running_{mean,var}             batch_stats/bn1/{mean,var}
  layer2.0.conv1.weight              params/layer2_0/conv1/kernel
  layer2.0.downsample.0.weight       params/layer2_0/downsample_0/kernel
  layer2.0.downsample.1.weight       params/layer2_0/downsample_1/scale

Blocks (planes x expansion output channels): BasicBlock (expansion 1;
conv3-bn-ReLU-conv3-bn, + shortcut, ReLU) for depths 10/18/34 with [1,1,1,1],
[2,2,2,2], [3,4,6,3] blocks; Bottleneck (expansion 4; conv1-bn-ReLU-conv3
(stride, dilation)-bn-ReLU-conv1-bn, + shortcut, ReLU) for 50/101/152/200.
A block's shortcut is projected when its stride is not 1 or its width
changes: shortcut 'A' subsamples and zero-pads the channels (no parameters),
'B' is conv1x1 (stride)-BN. MedicalNet's README gives the type of each
released checkpoint: resnet_10 B, resnet_18 A, resnet_34 A, resnet_50 (and
101/152/200) B; `shortcut_type=None` picks that per depth. All paddings are
PyTorch's symmetric ones, so any input size gives ceil(n/2), ceil(n/4),
ceil(n/8) as in PyTorch.

Med3DUNet, per the seed (the study's code is not public; its report gives
the structure in words):

  * The backbone (one submodule, 'backbone', shared by all modalities) runs
    on each input channel x[..., c:c+1] separately, as the study fed T1,
    T1ce, T2 and FLAIR one by one to the Med3D net; in training each call
    normalises with its own modality's batch statistics and updates the
    running averages in turn, as consecutive PyTorch calls do. Each stage's
    features are concatenated over modalities (modality-major).
  * Bottleneck: the concatenated layer4 features (1/8) go through a 1x1x1
    conv to `bottleneck_features` channels (4: the report took "the
    bottleneck of the resnet to be with 4 channels"); linear, like the
    Med3D segmentation output it replaces.
  * A light parallel U-Net encoder on the raw input: a double conv at full
    size, then (max-pool 2 -> double conv) three times, to the backbone's
    1/8 ("down sampled and convolved our original 4 3d images ... to match
    the size of the output from the med3D"). Its 1/8 output is
    concatenated with the reduced bottleneck.
  * Decoder, three times ("repeating this 3 times until we reached the size
    of our original mask label"): ConvTranspose 2^3 stride 2, then the
    concatenation of the up-sampled map, the concatenated backbone features
    at that scale (layer1 at 1/4, the conv1 stem at 1/2; none at full size)
    and the parallel path's map, then a double conv (conv3-norm-ReLU x 2)
    and dropout. Where an up-sampled map is not the size of its skip (input
    sizes not divisible by 8) it is linearly interpolated to it, "as in
    Unet 2d we interpolated the images to match the concatenation".
  * Head: a 1x1x1 conv to `num_classes` logits at the input size (the
    study: ET/TC/WT sigmoid channels, trained with BCE-with-logits).

The report's Med3D output was at 1/4 (MedicalNet's own conv_seg head
up-samples layer4 once), so it down-sampled its parallel path twice; without
that head the backbone ends at 1/8, so the parallel path here down-samples
three times and the decoder's three up-samplings end at the input size, as
the report says. The U-Net widths are not given in the report; `features`
(16, 32, 64, 128) is a light choice. Norm and dropout are not given either:
batch norm as in the backbone and in MedicalNet's head, no dropout.

All kernels follow the input rank, so (N, H, W, C) images work too (2D
ResNet, no pretrained weights for it).
"""

from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.convolution import Conv
from jaxseg.models import sampling
from jaxseg.models.registry import register

# depth -> (block kind, blocks per layer); MedicalNet models/resnet.py.
DEPTHS: Dict[int, tuple] = {
    10: ('basic', (1, 1, 1, 1)),
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
    200: ('bottleneck', (3, 24, 36, 3)),
}
# The shortcut type of MedicalNet's released checkpoint of each depth (README).
DEFAULT_SHORTCUT: Dict[int, str] = {
    10: 'B', 18: 'A', 34: 'A', 50: 'B', 101: 'B', 152: 'B', 200: 'B'}
EXPANSION = {'basic': 1, 'bottleneck': 4}
PLANES = (64, 128, 256, 512)
STRIDES = (1, 2, 1, 1)
DILATIONS = (1, 1, 2, 4)
STAGES = ('conv1', 'layer1', 'layer2', 'layer3', 'layer4')

# MedicalNet: kaiming_normal(mode='fan_out') for every conv ('normal' is
# untruncated, as torch's).
_kaiming_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def resolve(depth: int, shortcut_type: Optional[str]) -> tuple:
  """(block kind, blocks per layer, shortcut type) of a MedicalNet depth."""
  if depth not in DEPTHS:
    raise ValueError(f'depth={depth!r}; MedicalNet depths: '
                     f'{", ".join(map(str, DEPTHS))}')
  shortcut = DEFAULT_SHORTCUT[depth] if shortcut_type is None else shortcut_type
  if shortcut not in ('A', 'B'):
    raise ValueError(f"shortcut_type={shortcut_type!r}; known: 'A', 'B' "
                     '(None: the released checkpoint\'s)')
  kind, blocks = DEPTHS[depth]
  return kind, blocks, shortcut


def _conv(features: int, kernel: int, nd: int, dtype: Any, name: str,
          stride: int = 1, dilation: int = 1) -> nn.Conv:
  """nn.Conv3d(..., padding=dilation * (kernel - 1) // 2, bias=False)."""
  pad = dilation * (kernel - 1) // 2
  return Conv(features, (kernel,) * nd, strides=(stride,) * nd,
              kernel_dilation=(dilation,) * nd, padding=((pad, pad),) * nd,
              use_bias=False, kernel_init=_kaiming_fan_out, dtype=dtype,
              name=name)


def _shortcut(x, features: int, stride: int, kind: str, norm: str,
              train: bool, dtype: Any):
  """A block's projected shortcut: (N, *S, C) -> (N, *ceil(S/stride), features).

  'A': subsample by `stride` and zero-pad the channels (MedicalNet's
  downsample_basic_block); 'B': conv1x1 (stride) 'downsample_0' + norm
  'downsample_1' (nn.Sequential(Conv3d, BatchNorm3d)). Called inside a
  block's compact method, so the layers belong to the block.
  """
  nd = x.ndim - 2
  if kind == 'B':
    x = _conv(features, 1, nd, dtype, 'downsample_0', stride=stride)(x)
    return layers.norm(norm, train, name='downsample_1', dtype=dtype)(x)
  x = x[(slice(None),) + (slice(None, None, stride),) * nd]
  return jnp.pad(x, ((0, 0),) * (nd + 1) + ((0, features - x.shape[-1]),))


class BasicBlock(nn.Module):
  """conv3 (stride, dilation)-bn-ReLU-conv3 (dilation)-bn, + shortcut, ReLU."""
  planes: int
  stride: int = 1
  dilation: int = 1
  shortcut: Optional[str] = None  # None: identity; 'A' or 'B': projected.
  norm: str = 'batch'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *S, C) -> (N, *ceil(S / stride), planes)."""
    nd = x.ndim - 2
    bn = lambda name: layers.norm(self.norm, train, name=name,  # noqa: E731
                                  dtype=self.dtype)
    y = _conv(self.planes, 3, nd, self.dtype, 'conv1', self.stride,
              self.dilation)(x)
    y = nn.relu(bn('bn1')(y))
    y = _conv(self.planes, 3, nd, self.dtype, 'conv2', 1, self.dilation)(y)
    y = bn('bn2')(y)
    if self.shortcut is not None:
      x = _shortcut(x, self.planes, self.stride, self.shortcut, self.norm,
                    train, self.dtype)
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  """conv1-bn-ReLU-conv3 (stride, dilation)-bn-ReLU-conv1 (4 planes)-bn.

  Plus the shortcut, then ReLU (MedicalNet's Bottleneck, expansion 4).
  """
  planes: int
  stride: int = 1
  dilation: int = 1
  shortcut: Optional[str] = None
  norm: str = 'batch'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, *S, C) -> (N, *ceil(S / stride), 4 planes)."""
    nd = x.ndim - 2
    bn = lambda name: layers.norm(self.norm, train, name=name,  # noqa: E731
                                  dtype=self.dtype)
    y = nn.relu(bn('bn1')(_conv(self.planes, 1, nd, self.dtype, 'conv1')(x)))
    y = _conv(self.planes, 3, nd, self.dtype, 'conv2', self.stride,
              self.dilation)(y)
    y = nn.relu(bn('bn2')(y))
    y = bn('bn3')(_conv(4 * self.planes, 1, nd, self.dtype, 'conv3')(y))
    if self.shortcut is not None:
      x = _shortcut(x, 4 * self.planes, self.stride, self.shortcut,
                    self.norm, train, self.dtype)
    return nn.relu(y + x)


# `train` (argument 2, counting self) is a Python bool: static under remat.
REMAT_BLOCKS = {cls: nn.remat(cls, static_argnums=(2,))
                for cls in (BasicBlock, Bottleneck)}


class ResNet3D(nn.Module):
  """MedicalNet's 3D ResNet backbone (no segmentation head).

  Attributes:
    depth: 10, 18, 34, 50, 101, 152 or 200.
    shortcut_type: 'A' (zero-padded identity) or 'B' (conv1x1 + BN); None:
      the type of MedicalNet's released checkpoint of that depth (10: B,
      18: A, 34: A, 50 and deeper: B).
    norm: normalisation ('batch' as in MedicalNet; others cannot load its
      checkpoints).
    dtype: computation dtype (parameters stay float32).
    remat: recompute each stage's activations in the backward pass (less
      memory, ~1/3 more compute); every residual block is wrapped in
      `nn.remat`, parameter paths (and MedicalNet key mapping) unchanged.
  """
  depth: int = 10
  shortcut_type: Optional[str] = None
  norm: str = 'batch'
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, train: bool) -> Dict[str, Any]:
    """x (N, D, H, W, C), C = 1 for MedicalNet's weights -> each stage's output.

    Returns:
      {'conv1': (N, D/2, H/2, W/2, 64) after bn1 + ReLU (before the pool),
       'layer1': 1/4, 64 e; 'layer2': 1/8, 128 e; 'layer3': 1/8, 256 e;
       'layer4': 1/8, 512 e}, e the block expansion (1 basic, 4 bottleneck),
      sizes rounded up.
    """
    kind, blocks, shortcut = resolve(self.depth, self.shortcut_type)
    layers.check_norm(self.norm)
    if x.ndim < 3:
      raise ValueError(f'input must be (N, *spatial, C), got {x.shape}')
    nd = x.ndim - 2
    block_cls = BasicBlock if kind == 'basic' else Bottleneck
    if self.remat:
      block_cls = REMAT_BLOCKS[block_cls]
    expansion = EXPANSION[kind]
    x = x.astype(self.dtype)
    x = _conv(64, 7, nd, self.dtype, 'conv1', stride=2)(x)
    x = nn.relu(layers.norm(self.norm, train, name='bn1', dtype=self.dtype)(x))
    out = {'conv1': x}
    x = nn.max_pool(x, (3,) * nd, strides=(2,) * nd, padding=((1, 1),) * nd)
    inplanes = 64
    for i, (planes, n, stride, dilation) in enumerate(
        zip(PLANES, blocks, STRIDES, DILATIONS)):
      for j in range(n):
        s = stride if j == 0 else 1
        project = j == 0 and (s != 1 or inplanes != planes * expansion)
        x = block_cls(planes, s, dilation, shortcut if project else None,
                      self.norm, self.dtype,
                      name=f'layer{i + 1}_{j}')(x, train)
        inplanes = planes * expansion
      out[f'layer{i + 1}'] = x
    return out


class DoubleConv(nn.Module):
  """(conv3 - norm - ReLU) x 2: x (N, *S, C) -> (N, *S, features)."""
  features: int
  norm: str = 'batch'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    nd = x.ndim - 2
    for i in range(2):
      x = Conv(self.features, (3,) * nd, padding='SAME',
               use_bias=self.norm == 'none', kernel_init=_kaiming_fan_out,
               dtype=self.dtype, name=f'conv{i + 1}')(x)
      x = nn.relu(layers.norm(self.norm, train, name=f'norm{i + 1}',
                              dtype=self.dtype)(x))
    return x


RematDoubleConv = nn.remat(DoubleConv, static_argnums=(2,))


@register('med3d_unet')
class Med3DUNet(nn.Module):
  """Seed 004: shared MedicalNet ResNet per modality + a 3D U-Net decoder.

  Attributes:
    num_classes: output channels (logits; the study: ET/TC/WT, 3).
    depth: backbone depth (10, the study's best model; it also tried 18, 50).
    shortcut_type: backbone shortcut, 'A' or 'B'; None: the released
      MedicalNet checkpoint's for `depth`.
    bottleneck_features: width of the 1x1x1 reduction of the concatenated
      layer4 features (4, the study's).
    features: widths of the parallel encoder / decoder at 1, 1/2, 1/4 and
      1/8 of the input size (not in the study; a light choice).
    norm: normalisation of the U-Net part ('batch').
    backbone_norm: normalisation inside the backbone ('batch'; MedicalNet's
      weights need it).
    freeze_backbone_stats: if True the backbone's batch norms use their
      running statistics also in training (a fixed feature extractor); the
      default, False, lets them follow the data as PyTorch's train() does.
    dropout_rate: dropout after every decoder double conv (0: none, as in
      the study).
    spatial_dropout: drop whole channels (True) or single activations.
    dtype: computation dtype; parameters stay float32, logits are float32.
    remat: recompute each stage's activations in the backward pass (less
      memory, ~1/3 more compute); the backbone's residual blocks and the
      U-Net's encoder and decoder double convs are wrapped in `nn.remat`,
      parameter names unchanged.
  """
  num_classes: int = 3
  depth: int = 10
  shortcut_type: Optional[str] = None
  bottleneck_features: int = 4
  features: Sequence[int] = (16, 32, 64, 128)
  norm: str = 'batch'
  backbone_norm: str = 'batch'
  freeze_backbone_stats: bool = False
  dropout_rate: float = 0.0
  spatial_dropout: bool = True
  dtype: Any = jnp.float32
  remat: bool = False

  def _check(self, x):
    resolve(self.depth, self.shortcut_type)
    layers.check_norm(self.norm)
    layers.check_norm(self.backbone_norm, 'backbone_norm')
    if len(self.features) != 4:
      raise ValueError(f'features {tuple(self.features)} needs 4 entries '
                       '(sizes 1, 1/2, 1/4, 1/8 of the input)')
    if x.ndim < 3 or x.shape[-1] < 1:
      raise ValueError(f'input must be (N, *spatial, C), got {x.shape}')

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, D, H, W, C), a channel per modality -> (N, D, H, W, classes)."""
    self._check(x)
    nd = x.ndim - 2
    x = x.astype(self.dtype)

    # The shared backbone, one modality at a time.
    backbone = ResNet3D(self.depth, self.shortcut_type, self.backbone_norm,
                        self.dtype, self.remat, name='backbone')
    double_conv = RematDoubleConv if self.remat else DoubleConv
    bb_train = train and not self.freeze_backbone_stats
    per_modality = [backbone(x[..., c:c + 1], bb_train)
                    for c in range(x.shape[-1])]
    feats = {k: jnp.concatenate([f[k] for f in per_modality], axis=-1)
             for k in STAGES}
    bottleneck = Conv(self.bottleneck_features, (1,) * nd,
                      dtype=self.dtype, name='bottleneck')(feats['layer4'])

    # The parallel encoder on the raw input: full size, 1/2, 1/4, 1/8.
    enc = []
    y = x
    for level, width in enumerate(self.features):
      if level:
        y = sampling.max_pool(y, 2, padding='SAME')
      y = double_conv(width, self.norm, self.dtype,
                      name=f'encoder_{level}')(y, train)
      self.sow('intermediates', f'encoder_out_{level}', y)
      enc.append(y)

    y = jnp.concatenate([bottleneck, enc[3]], axis=-1)
    self.sow('intermediates', 'bottleneck_merge', y)
    backbone_skips = {2: feats['layer1'], 1: feats['conv1'], 0: None}
    for i, level in enumerate((2, 1, 0)):
      width = self.features[level]
      y = sampling.ConvTranspose(width, (2,) * nd, strides=(2,) * nd,
                                 padding='VALID', kernel_init=_kaiming_fan_out,
                                 dtype=self.dtype,
                                 name=f'up_{i}')(y)
      y = layers.resize_to(y, enc[level].shape[1:-1])
      skip = backbone_skips[level]
      y = jnp.concatenate([y] + ([] if skip is None else [skip]) + [enc[level]],
                          axis=-1)
      self.sow('intermediates', f'decoder_merge_{i}', y)
      y = double_conv(width, self.norm, self.dtype,
                      name=f'decoder_{i}')(y, train)
      y = layers.dropout(y, self.dropout_rate, self.spatial_dropout, train)

    y = Conv(self.num_classes, (1,) * nd, dtype=self.dtype, name='head')(y)
    return y.astype(jnp.float32)
