"""Tests of the generic U-Net ('unet') and seed 000's 3D U-Net ('unet3d').

'unet' defaults = seed 003's model, `UNet(in_channels=3, out_channels=1,
init_features=32)` of mateuszbuda/brain-segmentation-pytorch (the Kaggle
LGG framework's unet.py). Its count, with f = 32 and blocks
[conv3 (no bias) - BN - ReLU] x 2:

  block(c_in, c) = 9 c_in c + 9 c c + 2 (2 c)       (two BNs: scale, bias)
  encoder  3->32: 10,048      32->64: 55,552     64->128: 221,696
          128->256: 885,760   bottleneck 256->512: 3,540,992
  up (ConvTranspose k2, bias): 512->256: 524,544   256->128: 131,200
                               128->64: 32,832     64->32: 8,224
  decoder (concat doubles the input): 512->256: 1,771,520
          256->128: 443,136   128->64: 110,976    64->32: 27,840
  head Conv1x1 32->1: 33
  total 7,763,041 trainable (+ 5,888 BN running statistics)

The test rebuilds that PyTorch model (when torch is installed), checks its
count, copies its weights into the Flax U-Net and compares the outputs.

'unet3d' (seed 000, preliminary experiment): depth 2, base width 16, ELU,
no normalisation, biased convs, nearest upsampling + conv k2: 13 convs;
with the input layer, 2 max-pools, 2 upsamplings and 2 concatenations that
is the study's "20 layers in total" (see jaxseg/models/unet.py). Count for
one input channel (3x3x3 convs, biases):
  encoder 1->16: 448 + 6,928   16->32: 13,856 + 27,680
  bottleneck 32->64: 55,360 + 110,656
  up convs (k2): 64->32: 16,416   32->16: 4,112
  decoder 64->32: 55,328 + 27,680   32->16: 13,840 + 6,928
  head 16->1: 17;  total 339,249.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import models
from jaxseg.errors import InputError
from jaxseg.models import unet
from jaxseg.models.unet import UNet, UNet3D
from model_checks import (count, dropout_outputs, gradient_steps_lower_loss,
                          init_shapes, variables)

SEED003_PARAMS = 7_763_041


def _x(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _apply(model, v, x, train=False):
  return jax.jit(functools.partial(model.apply, train=train))(v, x)


def test_seed003_parameter_count():
  v = init_shapes(UNet(), jnp.zeros((1, 64, 64, 3)))
  assert count(v['params']) == SEED003_PARAMS
  assert count(v['batch_stats']) == 2 * 2 * 32 * (1 + 2 + 4 + 8 + 16 + 8 + 4 + 2 + 1)
  # No bias before batch norm; the up-convs and the head keep theirs.
  assert 'bias' not in v['params']['encoder_0']['conv1']
  assert v['params']['up_3']['kernel'].shape == (2, 2, 512, 256)


def test_unet3d_counts_and_layers():
  model = UNet3D()
  v = init_shapes(model, jnp.zeros((1, 16, 16, 16, 1)))
  assert set(v) == {'params'}  # no normalisation
  assert count(v['params']) == 339_249
  convs = [k for k in jax.tree_util.tree_leaves_with_path(v['params'])
           if k[0][-1].key == 'kernel']
  assert len(convs) == 13
  # Input + convs + (max-pool, upsampling, concatenate) per level.
  keras_layers = 1 + len(convs) + 3 * model.depth
  assert keras_layers == 20
  assert v['params']['up_0']['kernel'].shape == (2, 2, 2, 32, 16)


@pytest.mark.slow
def test_shapes_2d_and_3d():
  out = jax.eval_shape(functools.partial(UNet().apply, train=False),
                       init_shapes(UNet(), jnp.zeros((2, 64, 64, 3))),
                       jnp.zeros((2, 64, 64, 3)))
  assert out.shape == (2, 64, 64, 1) and out.dtype == jnp.float32
  small = UNet(num_classes=3, features=4, depth=3)
  x = _x((2, 64, 64, 3))
  y, state = jax.jit(functools.partial(
      small.apply, train=False, mutable=['intermediates']))(
          variables(small, x), x)
  assert y.shape == (2, 64, 64, 3)
  inter = {k: v[0].shape[1:] for k, v in state['intermediates'].items()}
  assert inter['bottleneck_out'] == (8, 8, 32)
  assert inter['decoder_out_0'] == (64, 64, 4)
  x3 = _x((2, 16, 16, 16, 1))
  model3 = UNet3D(num_classes=2)
  y3 = _apply(model3, variables(model3, x3), x3)
  assert y3.shape == (2, 16, 16, 16, 2)
  assert np.all(np.isfinite(np.asarray(y3)))


@pytest.mark.parametrize('upsampling,up_conv_kernel', [
    ('linear', 2), ('nearest', 3), ('nearest', 0), ('transpose', 2)])
def test_upsampling_modes(upsampling, up_conv_kernel):
  model = UNet(features=4, depth=2, upsampling=upsampling,
               up_conv_kernel=up_conv_kernel, activation='elu', norm='group')
  x = jnp.zeros((1, 16, 16, 2))
  v = init_shapes(model, x)
  if up_conv_kernel == 0:
    assert 'up_0' not in v['params']
    # The decoder block sees resized deeper features (8) + skip (4).
    assert v['params']['decoder_0']['conv1']['kernel'].shape == (3, 3, 12, 4)
  else:
    k = 2 if upsampling == 'transpose' else up_conv_kernel
    assert v['params']['up_0']['kernel'].shape == (k, k, 8, 4)
  out = jax.eval_shape(functools.partial(model.apply, train=False), v, x)
  assert out.shape == (1, 16, 16, 1)


def _torch_unet(torch, in_channels, features, depth=4):
  """seed 003's PyTorch U-Net (buda's layout), written out for the test."""
  tnn = torch.nn

  def block(cin, c):
    return tnn.Sequential(
        tnn.Conv2d(cin, c, 3, padding=1, bias=False), tnn.BatchNorm2d(c),
        tnn.ReLU(), tnn.Conv2d(c, c, 3, padding=1, bias=False),
        tnn.BatchNorm2d(c), tnn.ReLU())

  class Net(tnn.Module):

    def __init__(self):
      super().__init__()
      w = [features * 2 ** i for i in range(depth + 1)]
      self.enc = tnn.ModuleList(
          [block(in_channels if i == 0 else w[i - 1], w[i]) for i in range(depth)])
      self.bottleneck = block(w[depth - 1], w[depth])
      self.up = tnn.ModuleList(
          [tnn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(depth)])
      self.dec = tnn.ModuleList([block(2 * w[i], w[i]) for i in range(depth)])
      self.head = tnn.Conv2d(features, 1, 1)

    def forward(self, x):
      skips = []
      for enc in self.enc:
        x = enc(x)
        skips.append(x)
        x = torch.nn.functional.max_pool2d(x, 2)
      x = self.bottleneck(x)
      for i in reversed(range(depth)):
        x = self.dec[i](torch.cat([self.up[i](x), skips[i]], dim=1))
      return self.head(x)  # the original applies a sigmoid here

  return Net()


def _flax_variables(net):
  """The torch U-Net's weights in the Flax U-Net's tree."""
  a = lambda t: jnp.asarray(t.detach().numpy())  # noqa: E731
  params, stats = {}, {}

  def block(seq, name):
    params[name], stats[name] = {}, {}
    for j, (c, n) in enumerate([(0, 1), (3, 4)], start=1):
      params[name][f'conv{j}'] = {'kernel': a(seq[c].weight.permute(2, 3, 1, 0))}
      params[name][f'norm{j}'] = {'scale': a(seq[n].weight), 'bias': a(seq[n].bias)}
      stats[name][f'norm{j}'] = {'mean': a(seq[n].running_mean),
                                 'var': a(seq[n].running_var)}

  for i, enc in enumerate(net.enc):
    block(enc, f'encoder_{i}')
  block(net.bottleneck, 'bottleneck')
  for i, (up, dec) in enumerate(zip(net.up, net.dec)):
    # torch (in, out, k, k) -> Flax (k, k, in, out), spatially flipped.
    params[f'up_{i}'] = {'kernel': a(up.weight.permute(2, 3, 0, 1).flip(0, 1)),
                         'bias': a(up.bias)}
    block(dec, f'decoder_{i}')
  params['head'] = {'kernel': a(net.head.weight.permute(2, 3, 1, 0)),
                    'bias': a(net.head.bias)}
  return {'params': params, 'batch_stats': stats}


@pytest.mark.slow
def test_matches_pytorch_seed003_unet():
  torch = pytest.importorskip('torch')
  torch.manual_seed(0)
  full = _torch_unet(torch, 3, 32)
  assert sum(p.numel() for p in full.parameters()) == SEED003_PARAMS

  net = _torch_unet(torch, 3, 4)
  with torch.no_grad():  # non-trivial running statistics and BN affine
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  x = np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype(np.float32)
  model = UNet(features=4)
  v = _flax_variables(net)
  assert jax.tree.map(np.shape, v) == jax.tree.map(
      np.shape, init_shapes(model, jnp.zeros((2, 32, 32, 3))))
  xj = jnp.asarray(x.transpose(0, 2, 3, 1))

  net.eval()
  with torch.no_grad():
    ref = net(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(_apply(model, v, xj)), ref, atol=1e-4)

  net.train()  # batch statistics
  with torch.no_grad():
    ref = net(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
  out, _ = jax.jit(functools.partial(model.apply, train=True,
                                     mutable=['batch_stats']))(v, xj)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


@pytest.mark.slow
def test_gradient_steps_lower_loss():
  # Group norm: after 3 steps batch norm's running statistics are still
  # near their initial values, so its eval-mode loss says little (the
  # batch-norm path is checked against PyTorch above).
  for model, x in [(UNet(features=4, depth=2, norm='group'), _x((2, 8, 8, 3))),
                   (UNet3D(features=2), _x((1, 8, 8, 8, 1)))]:
    before, after = gradient_steps_lower_loss(model, x)
    assert after < before, (type(model).__name__, before, after)


def test_dropout_keys_and_eval_determinism():
  model = UNet(features=4, depth=1, dropout_rate=0.3)
  x = _x((2, 8, 8, 3))
  a, a2, b = dropout_outputs(model, x)
  np.testing.assert_array_equal(a, a2)
  assert not np.allclose(a, b)
  v = variables(model, x)
  e1, e2 = _apply(model, v, x), _apply(model, v, x)
  np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))


def test_registry():
  model = models.build(ml_collections.ConfigDict(dict(
      name='unet', num_classes=4, features=8, depth=3, activation='elu',
      upsampling='linear', dropout_rate=0.1, dtype='float32')))
  assert isinstance(model, UNet) and model.features == 8
  assert model.norm == 'batch'
  seed000 = models.build(ml_collections.ConfigDict({'name': 'unet3d'}))
  assert isinstance(seed000, UNet3D)
  assert (seed000.activation, seed000.norm, seed000.upsampling,
          seed000.depth) == ('elu', 'none', 'nearest', 2)
  with pytest.raises(InputError):
    models.build(ml_collections.ConfigDict(dict(name='unet', width=8)))


def test_bad_input_and_fields():
  with pytest.raises(ValueError, match=r'\(40, 40\).*divisible by 16'):
    init_shapes(UNet(), jnp.zeros((1, 40, 40, 3)))
  with pytest.raises(ValueError, match='upsampling'):
    init_shapes(UNet(upsampling='bicubic'), jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match='activation'):
    init_shapes(UNet(activation='tanhh'), jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match='norm'):
    init_shapes(UNet(norm='batchnorm'), jnp.zeros((1, 16, 16, 3)))



class _Wrap(nn.Module):
  """One `conv` or `conv_transpose` helper call (cheap to initialise)."""
  transpose: bool
  initializer: str

  @nn.compact
  def __call__(self, x):
    if self.transpose:
      return unet.conv_transpose(x, 4, 2, initializer=self.initializer)
    return unet.conv(x, 4, 3, initializer=self.initializer)


def test_initializers_follow_the_framework():
  x = jnp.zeros((1, 4, 4, 3))
  init = lambda m: m.init(jax.random.key(0), x)['params']['Conv_0' if not  # noqa: E731
                                                        m.transpose else 'ConvTranspose_0']
  p = init(_Wrap(False, 'torch'))  # U(+-1/sqrt(fan_in)), fan_in = 3 * 3 * 3
  assert 0.8 / np.sqrt(27) < np.abs(np.asarray(p['kernel'])).max() <= 1 / np.sqrt(27)
  assert 0 < np.abs(np.asarray(p['bias'])).max() <= 1 / np.sqrt(27)
  p = init(_Wrap(True, 'torch'))  # torch: fan_in = out (4) * 2 * 2
  assert 0.8 / 4 < np.abs(np.asarray(p['kernel'])).max() <= 1 / 4
  assert 0 < np.abs(np.asarray(p['bias'])).max() <= 1 / 4
  p = init(_Wrap(False, 'keras'))  # Glorot uniform, zero bias
  assert not np.any(np.asarray(p['bias']))
  assert np.abs(np.asarray(p['kernel'])).max() <= np.sqrt(6 / (27 + 36))
