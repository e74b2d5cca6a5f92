"""Seed 001's three PyTorch encoder-decoders (no skip connections).

The study's torchsummary tables (figures 2, 5 and 8; 256x256 grey input)
give every layer; the models ended in a sigmoid, these return logits.

'simple_encoder_decoder' (figure 2, 27,169 parameters) and
'deep_encoder_decoder' (figure 5, 133,857) are one `EncoderDecoder`:

    encoder, per width w:  Conv3(w) -> ReLU -> max-pool 2
    decoder, per width w of widths[-2::-1]:  ConvTranspose(w, 2, s2) -> ReLU
    head: ConvTranspose(num_classes, 2, s2)

    simple: 256x256x1 -> 128x128x32 -> 64x64x64 -> 128x128x32 -> 256x256x1
    deep:   ... -> 32x32x128 -> 64x64x64 -> 128x128x32 -> 256x256x1

'resnet_encoder_decoder' (figure 8, 435,553) is `ResNetEncoderDecoder`:

    ResidualBlock(32) at 256 -> max-pool 2 -> ResidualBlock(128) at 128
    -> max-pool 4 (32x32x128) -> ConvTranspose(32, 4, s4) (128x128x32)
    -> ResidualBlock(32) -> ConvTranspose(num_classes, 2, s2) (256x256x1)

All convs are biased (PyTorch default), 'same' padded, PyTorch-initialised;
kernels follow the input rank, so (N, D, H, W, C) volumes work too.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.registry import register
from jaxseg.models.unet import conv, conv_transpose, max_pool


class EncoderDecoder(nn.Module):
  """Plain conv encoder / transposed-conv decoder (seed 001, figures 2 and 5).

  Attributes:
    num_classes: output channels (logits).
    widths: encoder widths, one conv + pool 2 each; the decoder mirrors them.
    kernel_size: encoder conv kernel.
    norm: normalisation after each conv / transposed conv ('none' in the
      study), before the ReLU.
    conv_bias: bias in those layers; None: only when `norm` is 'none'.
    dropout_rate: dropout after each ReLU (0 in the study).
    spatial_dropout: drop whole channels (True) or single activations.
    dtype: computation dtype; parameters and logits are float32.
  """
  num_classes: int = 1
  widths: Sequence[int] = (32, 64)
  kernel_size: int = 3
  norm: str = 'none'
  conv_bias: Optional[bool] = None
  dropout_rate: float = 0.0
  spatial_dropout: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, H, W, C) or (N, D, H, W, C) -> logits (..., num_classes)."""
    layers.check_norm(self.norm)
    if not self.widths:
      raise ValueError('widths must name at least one encoder level')
    layers.check_divisible(x, 2 ** len(self.widths),
                           f'2**len(widths), widths={tuple(self.widths)}')
    use_bias = self.conv_bias
    if use_bias is None:
      use_bias = self.norm == 'none'

    def finish(x, i, part):
      x = layers.norm(self.norm, train, name=f'{part}_norm_{i}',
                      dtype=self.dtype)(x)
      return layers.dropout(nn.relu(x), self.dropout_rate,
                            self.spatial_dropout, train)

    x = x.astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = conv(x, width, self.kernel_size, use_bias=use_bias,
               dtype=self.dtype, name=f'encoder_conv_{i}')
      x = max_pool(finish(x, i, 'encoder'), 2)
      self.sow('intermediates', f'encoder_out_{i}', x)
    for i, width in enumerate(self.widths[-2::-1]):
      x = conv_transpose(x, width, 2, dtype=self.dtype, name=f'decoder_up_{i}')
      x = finish(x, i, 'decoder')
      self.sow('intermediates', f'decoder_out_{i}', x)
    x = conv_transpose(x, self.num_classes, 2, dtype=self.dtype, name='head')
    return x.astype(jnp.float32)


@register('simple_encoder_decoder')
class SimpleEncoderDecoder(EncoderDecoder):
  """Seed 001, figure 2: two levels (latent 64x64x64), 27,169 parameters."""
  widths: Sequence[int] = (32, 64)


@register('deep_encoder_decoder')
class DeepEncoderDecoder(EncoderDecoder):
  """Seed 001, figure 5: three levels (latent 32x32x128), 133,857 parameters."""
  widths: Sequence[int] = (32, 64, 128)


class ResidualBlock(nn.Module):
  """Seed 001's ResidualBlock, in the order torchsummary lists its layers.

      h = Conv3(x)  if C_in != features  else x      (projection)
      y = ReLU(Conv3(Dropout(ReLU(Conv3(norm(h))))))
      out = y + h

  The table shows no layer after the last ReLU, so the sum is not
  activated; the projected input is the shortcut (the only tensor of the
  right width). x (N, *spatial, C_in) -> (N, *spatial, features).
  """
  features: int
  kernel_size: int = 3
  norm: str = 'batch'
  dropout_rate: float = 0.2
  spatial_dropout: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    c = lambda y, name: conv(y, self.features, self.kernel_size,  # noqa: E731
                             dtype=self.dtype, name=name)
    h = c(x, 'proj') if x.shape[-1] != self.features else x
    y = layers.norm(self.norm, train, name='norm', dtype=self.dtype)(h)
    y = nn.relu(c(y, 'conv1'))
    y = layers.dropout(y, self.dropout_rate, self.spatial_dropout, train)
    y = nn.relu(c(y, 'conv2'))
    return y + h


@register('resnet_encoder_decoder')
class ResNetEncoderDecoder(nn.Module):
  """Seed 001, figure 8: residual encoder-decoder, 435,553 parameters.

  Attributes:
    num_classes: output channels (logits).
    widths: encoder ResidualBlock widths; block i is followed by max-pool
      `pools[i]`.
    pools: pooling factors (2, 4 in the study: 256 -> 128 -> 32).
    decoder_widths: widths after the transposed convs but the last, each
      followed by a ResidualBlock; the transposed convs undo `pools` in
      reverse (kernel = stride = factor), the last one to num_classes.
    kernel_size: ResidualBlock conv kernel.
    norm: the ResidualBlock's normalisation ('batch').
    dropout_rate: the ResidualBlock's Dropout2d rate; the study does not
      give it, 0.2 is a guess.
    spatial_dropout: drop whole channels (Dropout2d) or single activations.
    dtype: computation dtype; parameters and logits are float32.
  """
  num_classes: int = 1
  widths: Sequence[int] = (32, 128)
  pools: Sequence[int] = (2, 4)
  decoder_widths: Sequence[int] = (32,)
  kernel_size: int = 3
  norm: str = 'batch'
  dropout_rate: float = 0.2
  spatial_dropout: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    """x: (N, H, W, C) or (N, D, H, W, C) -> logits (..., num_classes)."""
    layers.check_norm(self.norm)
    if not self.widths or len(self.pools) != len(self.widths):
      raise ValueError(f'pools {tuple(self.pools)} needs one entry per width '
                       f'{tuple(self.widths)}')
    if len(self.decoder_widths) != len(self.widths) - 1:
      raise ValueError(f'decoder_widths {tuple(self.decoder_widths)} needs '
                       f'{len(self.widths) - 1} entries')
    total = 1
    for p in self.pools:
      total *= p
    layers.check_divisible(x, total, f'product of pools {tuple(self.pools)}')
    block = lambda w, name: ResidualBlock(  # noqa: E731
        w, self.kernel_size, self.norm, self.dropout_rate, self.spatial_dropout,
        self.dtype, name=name)

    x = x.astype(self.dtype)
    for i, (width, pool) in enumerate(zip(self.widths, self.pools)):
      x = max_pool(block(width, f'encoder_{i}')(x, train), pool)
      self.sow('intermediates', f'encoder_out_{i}', x)
    ups = tuple(self.pools[::-1])
    for i, width in enumerate(self.decoder_widths):
      x = conv_transpose(x, width, ups[i], dtype=self.dtype, name=f'up_{i}')
      x = block(width, f'decoder_{i}')(x, train)
      self.sow('intermediates', f'decoder_out_{i}', x)
    x = conv_transpose(x, self.num_classes, ups[-1], dtype=self.dtype,
                       name='head')
    return x.astype(jnp.float32)
