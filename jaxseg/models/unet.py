"""A generic U-Net, 2D or 3D ('unet'), and seed 000's plain 3D U-Net ('unet3d').

'unet' with its defaults is seed 003's model, `unet.py` of the Kaggle LGG
framework (mateuszbuda/brain-segmentation-pytorch: `UNet(in_channels=3,
out_channels=1, init_features=32)`), 7,763,041 parameters for 3 input
channels:

    level i = 0..depth-1 (width features * 2**i):
      block(i) = [Conv3 (no bias) -> BatchNorm -> ReLU] x 2 -> skip_i
      -> max-pool 2
    bottleneck: block(depth), width features * 2**depth
    decoder, i = depth-1..0:
      up(x) to features * 2**i -> concat(up, skip_i) -> block(i)
    head: Conv 1x1 -> num_classes logits (the original ends in a sigmoid)

`upsampling` picks `up`:
  * 'transpose': ConvTranspose(kernel 2, stride 2), no activation (seed 003).
  * 'nearest' / 'linear': resize x2, then a Conv(`up_conv_kernel`) to the
    level's width followed by the activation (Keras `Conv(UpSampling(x))`,
    as in the common Keras U-Net); `up_conv_kernel=0` concatenates the
    resized tensor as it is (no conv, the decoder block sees 3x the width).

'unet3d' is the same definition with seed 000's defaults (see `UNet3D`).

Initialisation follows the framework of each study: 'torch' (PyTorch's
default: kernels U(+-1/sqrt(fan_in)), biases likewise) or 'keras' (Glorot
uniform kernels, zero biases). Kernels follow the input rank, so
(N, H, W, C) and (N, D, H, W, C) inputs both work.
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.convolution import Conv
from jaxseg.models import sampling
from jaxseg.models.registry import register

UPSAMPLING = ('transpose', 'nearest', 'linear')
INITIALIZERS = ('torch', 'keras')


def _uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def conv(x, features: int, kernel: int, *, use_bias: bool = True,
         initializer: str = 'torch', dtype: Any = jnp.float32,
         name: Optional[str] = None):
  """Stride-1 'same' conv (torch padding k // 2); call in a compact method.

  x (N, *spatial, C) -> (N, *spatial, features); kernel `(kernel,) * nd`.
  """
  nd = x.ndim - 2
  if initializer == 'torch':
    fan_in = x.shape[-1] * kernel ** nd
    kernel_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')
    bias_init = _uniform(1 / math.sqrt(fan_in))
  elif initializer == 'keras':
    kernel_init = nn.initializers.glorot_uniform()
    bias_init = nn.initializers.zeros
  else:
    raise ValueError(f'initializer={initializer!r}; known: '
                     f'{", ".join(INITIALIZERS)}')
  return Conv(features, (kernel,) * nd, padding='SAME', use_bias=use_bias,
              kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
              name=name)(x)


def conv_transpose(x, features: int, factor: int, *, initializer: str = 'torch',
                   dtype: Any = jnp.float32, name: Optional[str] = None):
  """ConvTranspose, kernel = stride = factor (torch `ConvTranspose(k, s=k)`).

  x (N, *spatial, C) -> (N, *(factor * spatial), features), with bias. The
  kernel is (k, ..., C, features); a torch weight (C, features, k, ...) maps
  to it by moving the channel axes last and flipping the spatial axes.
  """
  nd = x.ndim - 2
  if initializer == 'torch':
    # torch computes fan_in of a transposed conv from weight.size(1) = out.
    fan_in = features * factor ** nd
    kernel_init = nn.initializers.variance_scaling(
        1 / 3, 'fan_in', 'uniform', in_axis=-1, out_axis=-2)
    bias_init = _uniform(1 / math.sqrt(fan_in))
  elif initializer == 'keras':
    kernel_init = nn.initializers.glorot_uniform()
    bias_init = nn.initializers.zeros
  else:
    raise ValueError(f'initializer={initializer!r}; known: '
                     f'{", ".join(INITIALIZERS)}')
  return sampling.ConvTranspose(features, (factor,) * nd,
                                strides=(factor,) * nd, padding='VALID',
                                kernel_init=kernel_init, bias_init=bias_init,
                                dtype=dtype, name=name)(x)


def max_pool(x, factor: int):
  """Max-pooling, window = stride = factor. x (N, *S, C) -> (N, *S/f, C)."""
  return sampling.max_pool(x, factor)


class ConvBlock(nn.Module):
  """[Conv(k) -> norm -> activation] x 2, then dropout.

  x (N, *spatial, C_in) -> (N, *spatial, features).
  """
  features: int
  kernel_size: int = 3
  norm: str = 'batch'
  activation: str = 'relu'
  use_bias: bool = False
  dropout_rate: float = 0.0
  spatial_dropout: bool = True
  initializer: str = 'torch'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    act = layers.activation(self.activation)
    for i in (1, 2):
      x = conv(x, self.features, self.kernel_size, use_bias=self.use_bias,
               initializer=self.initializer, dtype=self.dtype, name=f'conv{i}')
      x = layers.norm(self.norm, train, name=f'norm{i}', dtype=self.dtype)(x)
      x = act(x)
    return layers.dropout(x, self.dropout_rate, self.spatial_dropout, train)


# `train` (argument 2, counting self) is a Python bool: static under remat.
RematConvBlock = nn.remat(ConvBlock, static_argnums=(2,))


@register('unet')
class UNet(nn.Module):
  """U-Net (seed 003: buda's `UNet`, 7,763,041 parameters for RGB input).

  Attributes:
    num_classes: output channels (logits).
    features: width of level 0; level i has features * 2**i.
    depth: number of pooling levels (the bottleneck is level `depth`).
    kernel_size: kernel of the block convolutions.
    norm: normalisation after each block conv (layers.norm).
    activation: 'relu', 'elu', 'leaky_relu' or 'silu'.
    conv_bias: bias in the block convs; None: only when `norm` is 'none'.
    upsampling: 'transpose', 'nearest' or 'linear' (module docstring).
    up_conv_kernel: conv kernel after 'nearest'/'linear' resizing; 0: none.
    dropout_rate: dropout after every block (0 in seed 003).
    spatial_dropout: drop whole channels (True) or single activations.
    initializer: 'torch' or 'keras' default initialisation.
    dtype: computation dtype; parameters and logits are float32.
    remat: recompute each stage's activations in the backward pass (less
      memory, ~1/3 more compute); every encoder, bottleneck and decoder
      block is wrapped in `nn.remat`, parameter names unchanged.
  """
  num_classes: int = 1
  features: int = 32
  depth: int = 4
  kernel_size: int = 3
  norm: str = 'batch'
  activation: str = 'relu'
  conv_bias: Optional[bool] = None
  upsampling: str = 'transpose'
  up_conv_kernel: int = 2
  dropout_rate: float = 0.0
  spatial_dropout: bool = True
  initializer: str = 'torch'
  dtype: Any = jnp.float32
  remat: bool = False

  def _check(self, x):
    layers.check_norm(self.norm)
    layers.activation(self.activation)
    if self.upsampling not in UPSAMPLING:
      raise ValueError(f'upsampling={self.upsampling!r}; known: '
                       f'{", ".join(UPSAMPLING)}')
    if self.initializer not in INITIALIZERS:
      raise ValueError(f'initializer={self.initializer!r}; known: '
                       f'{", ".join(INITIALIZERS)}')
    if self.depth < 0:
      raise ValueError(f'depth={self.depth} must be >= 0')
    layers.check_divisible(x, 2 ** self.depth, f'2**depth, depth={self.depth}')

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, H, W, C) or (N, D, H, W, C) -> logits (..., num_classes)."""
    self._check(x)
    use_bias = self.conv_bias
    if use_bias is None:
      use_bias = self.norm == 'none'
    block_cls = RematConvBlock if self.remat else ConvBlock
    block = lambda i, name: block_cls(  # noqa: E731
        self.features * 2 ** i, self.kernel_size, self.norm, self.activation,
        use_bias, self.dropout_rate, self.spatial_dropout, self.initializer,
        self.dtype, name=name)
    x = x.astype(self.dtype)

    skips = []
    for i in range(self.depth):
      x = block(i, f'encoder_{i}')(x, train)
      self.sow('intermediates', f'encoder_out_{i}', x)
      skips.append(x)
      x = max_pool(x, 2)
    x = block(self.depth, 'bottleneck')(x, train)
    self.sow('intermediates', 'bottleneck_out', x)

    for i in reversed(range(self.depth)):
      width = self.features * 2 ** i
      if self.upsampling == 'transpose':
        x = conv_transpose(x, width, 2, initializer=self.initializer,
                           dtype=self.dtype, name=f'up_{i}')
      else:
        x = layers.upsample(x, 2, self.upsampling)
        if self.up_conv_kernel > 0:
          x = conv(x, width, self.up_conv_kernel, initializer=self.initializer,
                   dtype=self.dtype, name=f'up_{i}')
          x = layers.activation(self.activation)(x)
      x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = block(i, f'decoder_{i}')(x, train)
      self.sow('intermediates', f'decoder_out_{i}', x)

    x = conv(x, self.num_classes, 1, initializer=self.initializer,
             dtype=self.dtype, name='head')
    return x.astype(jnp.float32)


@register('unet3d')
class UNet3D(UNet):
  """Seed 000's preliminary "simple U-Net" (Keras, (96, 96, 96, 1) volumes).

  The study names its layers, "convolution with elu activation, maxpooling,
  upsampling and concatenation layers (20 in total)" between an input layer
  and a sigmoid output layer, and nothing else. These defaults give exactly
  20 Keras layers with the input and output layers counted:

    Input; 2 x [Conv, Conv, MaxPool]; Conv, Conv (bottleneck);
    2 x [UpSampling, Conv, Concatenate, Conv, Conv]; Conv 1x1 (output)
    = 1 + 6 + 2 + 10 + 1 = 20

  (two convs per block, the Keras U-Net's conv after each UpSampling3D).
  No other plain layout with two convs per block reaches 20: without the
  up-conv a depth-d net has 7d + 4 layers (18, 25), with it 8d + 4.
  The base width is not given; 16 is a guess that fits 96**3 volumes at
  batch 8 on the study's Colab GPU. No normalisation, biased convs, ELU,
  Keras (Glorot) initialisation; logits instead of the sigmoid.

  Fields as `UNet`, including remat: recompute each stage's activations in
  the backward pass (less memory, ~1/3 more compute).
  """
  features: int = 16
  depth: int = 2
  norm: str = 'none'
  activation: str = 'elu'
  upsampling: str = 'nearest'
  initializer: str = 'keras'
