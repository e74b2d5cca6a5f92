"""Tests of seed 001's encoder-decoders (jaxseg.models.encoder_decoder).

The counts are the torchsummary totals of the study (figures 2, 5, 8; input
1x256x256, PyTorch convs with biases):

  simple (fig. 2): Conv3 1->32: 320, Conv3 32->64: 18,496,
    ConvT2 64->32: 64*32*4 + 32 = 8,224, ConvT2 32->1: 129   = 27,169
  deep (fig. 5): Conv3 1->32: 320, 32->64: 18,496, 64->128: 73,856,
    ConvT2 128->64: 32,832, 64->32: 8,224, 32->1: 129        = 133,857
  resnet (fig. 8): ResidualBlock(in, out) = [Conv3 in->out if in != out]
    + BN(out) (2 out) + 2 x Conv3 out->out
    1->32: 320 + 64 + 2 x 9,248 = 18,880
    32->128: 36,992 + 256 + 2 x 147,584 = 332,416
    ConvT4 128->32: 128*32*16 + 32 = 65,568
    32->32 (no projection): 64 + 2 x 9,248 = 18,560
    ConvT2 32->1: 129                                        = 435,553
  The paper's models end in a sigmoid (no parameters); these give logits.
  BN's running statistics (2 x (32 + 128 + 32) = 384) are not trainable,
  as torchsummary's "Non-trainable params: 0" (it omits buffers) agrees.

The shapes are the tables' "Output Shape" column. The ResNet is also
compared with a PyTorch model written from figure 8 (when torch is
installed), weights copied.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import models
from jaxseg.models.encoder_decoder import (DeepEncoderDecoder, ResidualBlock,
                                           ResNetEncoderDecoder,
                                           SimpleEncoderDecoder)
from model_checks import (count, dropout_outputs, gradient_steps_lower_loss,
                          init_shapes, variables)

PAPER = {
    'simple_encoder_decoder': 27_169,
    'deep_encoder_decoder': 133_857,
    'resnet_encoder_decoder': 435_553,
}
X256 = jnp.zeros((1, 256, 256, 1))


def _x(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize('name', sorted(PAPER))
def test_parameter_counts_match_paper(name):
  model = models.build(ml_collections.ConfigDict({'name': name}))
  v = init_shapes(model, X256)
  assert count(v['params']) == PAPER[name]
  if name == 'resnet_encoder_decoder':
    assert count(v['batch_stats']) == 384
  else:
    assert set(v) == {'params'}


def _intermediate_shapes(model):
  def run(x):
    v = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)},
                   x, train=False)
    return model.apply(v, x, train=False, mutable=['intermediates'])

  out, state = jax.eval_shape(run, X256)
  return out.shape, {k: v[0].shape[1:]
                     for k, v in state['intermediates'].items()}


def test_shapes_match_the_tables():
  out, s = _intermediate_shapes(SimpleEncoderDecoder())  # figure 2
  assert out == (1, 256, 256, 1)
  assert s == {'encoder_out_0': (128, 128, 32), 'encoder_out_1': (64, 64, 64),
               'decoder_out_0': (128, 128, 32)}
  out, s = _intermediate_shapes(DeepEncoderDecoder())  # figure 5
  assert out == (1, 256, 256, 1)
  assert [s[f'encoder_out_{i}'] for i in range(3)] == [
      (128, 128, 32), (64, 64, 64), (32, 32, 128)]
  assert [s[f'decoder_out_{i}'] for i in range(2)] == [
      (64, 64, 64), (128, 128, 32)]
  out, s = _intermediate_shapes(ResNetEncoderDecoder())  # figure 8
  assert out == (1, 256, 256, 1)
  assert s == {'encoder_out_0': (128, 128, 32), 'encoder_out_1': (32, 32, 128),
               'decoder_out_0': (128, 128, 32)}


def test_residual_block_projects_only_when_widths_differ():
  v = init_shapes(ResNetEncoderDecoder(), X256)['params']
  assert v['encoder_0']['proj']['kernel'].shape == (3, 3, 1, 32)
  assert v['encoder_1']['proj']['kernel'].shape == (3, 3, 32, 128)
  assert 'proj' not in v['decoder_0']
  assert v['up_0']['kernel'].shape == (4, 4, 128, 32)
  # The shortcut is added: with zeroed convs the block returns its input.
  x = _x((1, 8, 8, 4))
  block = ResidualBlock(4)
  bv = jax.tree.map(jnp.zeros_like, variables(block, x))
  bv['batch_stats'] = jax.tree.map(jnp.ones_like, bv['batch_stats'])
  np.testing.assert_array_equal(
      np.asarray(block.apply(bv, x, train=False)), np.asarray(x))


@pytest.mark.parametrize('cls', [SimpleEncoderDecoder, DeepEncoderDecoder,
                                 ResNetEncoderDecoder])
def test_shapes_2d_and_3d(cls):
  model = cls(num_classes=2)
  for shape in [(2, 16, 16, 1), (1, 8, 8, 8, 1)]:
    v = init_shapes(model, jnp.zeros(shape))
    out = jax.eval_shape(functools.partial(model.apply, train=False), v,
                         jnp.zeros(shape))
    assert out.shape == shape[:-1] + (2,) and out.dtype == jnp.float32
  small = cls(num_classes=2, widths=(4, 8), **(
      {'decoder_widths': (4,)} if cls is ResNetEncoderDecoder else {}))
  x = _x((1, 8, 8, 8, 2))
  y = jax.jit(functools.partial(small.apply, train=False))(
      variables(small, x), x)
  assert y.shape == (1, 8, 8, 8, 2)
  assert np.all(np.isfinite(np.asarray(y)))


@pytest.mark.slow
def test_gradient_steps_lower_loss():
  x = _x((2, 16, 16, 1))
  for model in [SimpleEncoderDecoder(widths=(8, 16)),
                ResNetEncoderDecoder(widths=(4, 8), decoder_widths=(4,),
                                     norm='group')]:
    before, after = gradient_steps_lower_loss(model, x)
    assert after < before, (type(model).__name__, before, after)


@pytest.mark.parametrize('model', [
    ResNetEncoderDecoder(widths=(4, 8), decoder_widths=(4,)),  # default 0.2
    SimpleEncoderDecoder(widths=(4, 8), dropout_rate=0.3, norm='batch')])
def test_dropout_keys_and_eval_determinism(model):
  x = _x((2, 16, 16, 1))
  a, a2, b = dropout_outputs(model, x)
  np.testing.assert_array_equal(a, a2)
  assert not np.allclose(a, b)
  v = variables(model, x)
  apply = jax.jit(functools.partial(model.apply, train=False))
  np.testing.assert_array_equal(np.asarray(apply(v, x)), np.asarray(apply(v, x)))


def _torch_resnet(torch):
  """Figure 8 in PyTorch, layers in the table's order."""
  tnn = torch.nn

  class Block(tnn.Module):

    def __init__(self, cin, c):
      super().__init__()
      self.proj = tnn.Conv2d(cin, c, 3, padding=1) if cin != c else None
      self.bn = tnn.BatchNorm2d(c)
      self.conv1 = tnn.Conv2d(c, c, 3, padding=1)
      self.drop = tnn.Dropout2d(0.2)
      self.conv2 = tnn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
      h = self.proj(x) if self.proj is not None else x
      y = self.drop(torch.relu(self.conv1(self.bn(h))))
      return torch.relu(self.conv2(y)) + h

  return tnn.Sequential(
      Block(1, 32), tnn.MaxPool2d(2), Block(32, 128), tnn.MaxPool2d(4),
      tnn.ConvTranspose2d(128, 32, 4, stride=4), Block(32, 32),
      tnn.ConvTranspose2d(32, 1, 2, stride=2))


def test_matches_pytorch_figure8():
  torch = pytest.importorskip('torch')
  torch.manual_seed(0)
  net = _torch_resnet(torch)
  assert sum(p.numel() for p in net.parameters()) == PAPER[
      'resnet_encoder_decoder']
  a = lambda t: jnp.asarray(t.detach().numpy())  # noqa: E731
  conv = lambda m: {'kernel': a(m.weight.permute(2, 3, 1, 0)),  # noqa: E731
                    'bias': a(m.bias)}
  up = lambda m: {'kernel': a(m.weight.permute(2, 3, 0, 1).flip(0, 1)),  # noqa: E731
                  'bias': a(m.bias)}
  params, stats = {}, {}
  with torch.no_grad():
    for name, block in [('encoder_0', net[0]), ('encoder_1', net[2]),
                        ('decoder_0', net[5])]:
      block.bn.running_mean.uniform_(-0.5, 0.5)
      block.bn.running_var.uniform_(0.5, 2.0)
      block.bn.weight.uniform_(0.5, 1.5)
      params[name] = {'norm': {'scale': a(block.bn.weight),
                               'bias': a(block.bn.bias)},
                      'conv1': conv(block.conv1), 'conv2': conv(block.conv2)}
      if block.proj is not None:
        params[name]['proj'] = conv(block.proj)
      stats[name] = {'norm': {'mean': a(block.bn.running_mean),
                              'var': a(block.bn.running_var)}}
  params['up_0'], params['head'] = up(net[4]), up(net[6])
  v = {'params': params, 'batch_stats': stats}
  model = ResNetEncoderDecoder()
  x = np.random.default_rng(3).normal(size=(2, 1, 32, 32)).astype(np.float32)
  xj = jnp.asarray(x.transpose(0, 2, 3, 1))
  assert jax.tree.map(np.shape, v) == jax.tree.map(
      np.shape, init_shapes(model, xj))
  net.eval()
  with torch.no_grad():
    ref = net(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
  out = jax.jit(functools.partial(model.apply, train=False))(v, xj)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def test_registry_and_errors():
  model = models.build(ml_collections.ConfigDict(dict(
      name='deep_encoder_decoder', num_classes=3, widths=[8, 16, 32],
      norm='instance')))
  assert isinstance(model, DeepEncoderDecoder) and model.widths == (8, 16, 32)
  assert models.build(ml_collections.ConfigDict(
      {'name': 'simple_encoder_decoder'})).widths == (32, 64)
  resnet = models.build(ml_collections.ConfigDict(
      {'name': 'resnet_encoder_decoder', 'dropout_rate': 0.5}))
  assert resnet.dropout_rate == 0.5 and resnet.pools == (2, 4)
  with pytest.raises(ValueError, match=r'\(20, 20\).*divisible by 8'):
    init_shapes(ResNetEncoderDecoder(), jnp.zeros((1, 20, 20, 1)))
  with pytest.raises(ValueError, match=r'\(6, 6\).*divisible by 4'):
    init_shapes(SimpleEncoderDecoder(), jnp.zeros((1, 6, 6, 1)))
  with pytest.raises(ValueError, match='pools'):
    init_shapes(ResNetEncoderDecoder(pools=(2,)), jnp.zeros((1, 16, 16, 1)))
