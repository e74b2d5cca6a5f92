"""Tests of seed 000's two 3D U-Nets (jaxseg.models.unet3d).

dilated_unet3d (Henry et al. 2020, lescientifik/open_brats2020). The seed
says its replication had "23M+" parameters. Henry's code has two classes
in src/models/unet.py: `Unet` (encoder UBlock(in, out // 2, out), decoder1
out w // 2) and `EquiUnet` (encoder UBlock(in, out, out), decoder1 out w),
the one his README trains (`--width 48 --arch EquiUnet`). At width 48, one
input channel (the seed's single modality) and one class (binary tumour):

    conv3 kernels (no bias: a norm follows)      EquiUnet     Unet
      encoder1-4, bottom, bottom_2, decoder3-1  23,120,784  19,146,816
    GroupNorm scale + bias (2 per channel)          27,744      18,960
    outconv 1x1 (weights + bias)                        49          49
    total                                       23,148,577  19,165,825

Only EquiUnet gives "23M+" (Unet is 19.2M), with 1 or 4 input channels
(4 -> 3 classes, Henry's setting: 23,152,563 / 19,167,819), so
`equal_widths=True` is the default. The test below builds Henry's PyTorch
modules (transcribed here, torch installed) as an independent reference for
both counts, and copies their weights into the Flax model to compare
outputs, deep-supervision heads included.

residual_unet3d (Kayalibay et al. 2017). The seed gives "130M+" (strided
down-sampling) and "90M+" (max-pools, "and shifted a few layers"); its
widths are not stated. One residual block per level with U-Net widths (64,
128, 256, 512, 1024), one channel in, one class out: strided 141,832,515,
maxpool 104,925,635. Their difference is exact: at level i (a = f_{i-1},
f_i = 2a) the strided net has a 3x3x3 conv a -> 2a (+ norm 2 * 2a) and a
first block conv 2a -> 2a; the max-pool net a first block conv a -> 2a and
a 1x1 projection a -> 2a (+ bias 2a): 27 * 4a^2 - 2a^2 + 2a = 106 a^2 + 2a,
summed over a = 64..512: 36,906,880.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import models
from jaxseg.models.layers import resize_align_corners as resize_aligned
from jaxseg.models.unet3d import DilatedUNet3D, ResidualUNet3D, henry_groups
from model_checks import (count, dropout_outputs, gradient_steps_lower_loss,
                          init_shapes, main_head, variables)

SEED_DILATED = 23_000_000  # "23M+"
SEED_STRIDED = 130_000_000  # "130M+"
SEED_MAXPOOL = 90_000_000  # "90M+"

X3 = jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, 16, 16, 1)),
                 jnp.float32)
X2 = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 1)),
                 jnp.float32)
SEED_SHAPE = jnp.zeros((1, 96, 144, 144, 1))  # only shapes are computed


def _small_res(**kw):
  kw = {'features': (4, 8, 8), 'num_stage_maps': 2, **kw}
  return ResidualUNet3D(**kw)


def _small_dil(**kw):
  return DilatedUNet3D(width=4, **kw)


# ------------------------------------------------------------- counts ------


def test_dilated_count_matches_seed():
  params = count(init_shapes(DilatedUNet3D(), SEED_SHAPE)['params'])
  assert params == 23_148_577
  assert SEED_DILATED <= params < 24_000_000, f'{params:,}: seed says 23M+'
  henry_unet = count(init_shapes(DilatedUNet3D(equal_widths=False),
                                 SEED_SHAPE)['params'])
  assert henry_unet == 19_165_825  # not "23M+": hence the default


def test_residual_counts_match_seed():
  strided = count(init_shapes(ResidualUNet3D(), SEED_SHAPE)['params'])
  maxpool = count(init_shapes(ResidualUNet3D(downsampling='maxpool'),
                              SEED_SHAPE)['params'])
  assert (strided, maxpool) == (141_832_515, 104_925_635)
  assert strided >= SEED_STRIDED and maxpool >= SEED_MAXPOOL
  a = np.array([64, 128, 256, 512])
  assert strided - maxpool == int(np.sum(106 * a ** 2 + 2 * a))
  # Batch statistics: mean and var for every norm.
  stats = init_shapes(ResidualUNet3D(), SEED_SHAPE)['batch_stats']
  assert count(stats) > 0


# ------------------------------------------------- torch reference ---------


def _henry_torch(inplanes, num_classes, width, equi, deep_supervision):
  """Henry's Unet / EquiUnet (open_brats2020 src/models/{unet,layers}.py)."""
  torch = pytest.importorskip('torch')
  from collections import OrderedDict
  nn = torch.nn

  def norm_layer(planes, groups=16):  # default_norm_layer
    groups_ = min(groups, planes)
    if planes % groups_ > 0:
      divisor = 16
      while planes % divisor > 0:
        divisor /= 2
      groups_ = int(planes // divisor)
    return nn.GroupNorm(groups_, planes)

  def conv3x3(i, o, dilation=1):
    return nn.Conv3d(i, o, 3, padding=dilation, bias=False, dilation=dilation)

  def conv1x1(i, o):
    return nn.Conv3d(i, o, 1, bias=True)

  class ConvBnRelu(nn.Sequential):
    def __init__(self, i, o, dilation=1):
      super().__init__(OrderedDict([
          ('conv', conv3x3(i, o, dilation)), ('bn', norm_layer(o)),
          ('relu', nn.ReLU()), ('dropout', nn.Dropout(0.0))]))

  class UBlock(nn.Sequential):
    def __init__(self, i, m, o, dilation=(1, 1)):
      super().__init__(OrderedDict([
          ('ConvBnRelu1', ConvBnRelu(i, m, dilation[0])),
          ('ConvBnRelu2', ConvBnRelu(m, o, dilation[1]))]))

  def up(factor):
    return nn.Upsample(scale_factor=factor, mode='trilinear',
                       align_corners=True)

  class Unet(nn.Module):
    def __init__(self):
      super().__init__()
      f = [width * 2 ** i for i in range(4)]
      mid = f if equi else [c // 2 for c in f]
      last = f[0] if equi else f[0] // 2
      self.encoder1 = UBlock(inplanes, mid[0], f[0])
      self.encoder2 = UBlock(f[0], mid[1], f[1])
      self.encoder3 = UBlock(f[1], mid[2], f[2])
      self.encoder4 = UBlock(f[2], mid[3], f[3])
      self.bottom = UBlock(f[3], f[3], f[3], (2, 2))
      self.bottom_2 = ConvBnRelu(f[3] * 2, f[2])
      self.downsample = nn.MaxPool3d(2, 2)
      self.decoder3 = UBlock(f[2] * 2, f[2], f[1])
      self.decoder2 = UBlock(f[1] * 2, f[1], f[0])
      self.decoder1 = UBlock(f[0] * 2, f[0], last)
      self.upsample = up(2)
      self.outconv = conv1x1(last, num_classes)
      if deep_supervision:
        self.deep_bottom = nn.Sequential(conv1x1(f[3], num_classes), up(8))
        self.deep_bottom2 = nn.Sequential(conv1x1(f[2], num_classes), up(8))
        self.deep3 = nn.Sequential(conv1x1(f[1], num_classes), up(4))
        self.deep2 = nn.Sequential(conv1x1(f[0], num_classes), up(2))

    def forward(self, x):
      down1 = self.encoder1(x)
      down2 = self.encoder2(self.downsample(down1))
      down3 = self.encoder3(self.downsample(down2))
      down4 = self.encoder4(self.downsample(down3))
      bottom = self.bottom(down4)
      bottom_2 = self.bottom_2(torch.cat([down4, bottom], dim=1))
      up3 = self.decoder3(torch.cat([down3, self.upsample(bottom_2)], dim=1))
      up2 = self.decoder2(torch.cat([down2, self.upsample(up3)], dim=1))
      up1 = self.decoder1(torch.cat([down1, self.upsample(up2)], dim=1))
      out = self.outconv(up1)
      if deep_supervision:
        return out, [d(s) for s, d in zip(
            [bottom, bottom_2, up3, up2],
            [self.deep_bottom, self.deep_bottom2, self.deep3, self.deep2])]
      return out

  return Unet()


@pytest.mark.parametrize('equi,inplanes,classes,deep', [
    (True, 1, 1, False), (True, 4, 3, True), (False, 1, 1, False),
    (False, 4, 3, True)])
def test_dilated_count_matches_henry_torch(equi, inplanes, classes, deep):
  ref = _henry_torch(inplanes, classes, 48, equi, deep)
  expected = sum(p.numel() for p in ref.parameters() if p.requires_grad)
  model = DilatedUNet3D(num_classes=classes, equal_widths=equi,
                        deep_supervision=deep)
  ours = count(init_shapes(model, jnp.zeros((1, 16, 16, 16, inplanes))))
  assert ours == expected


def _torch_to_flax(state_dict):
  """Henry's state_dict -> our params tree."""
  params = {}
  for key, value in state_dict.items():
    value = value.detach().numpy()
    parts = key.split('.')
    if parts[-2] in ('conv', 'bn'):  # [block, ConvBnReluK,] conv|bn, w|b
      path = parts[:-2]
      if path[-1].startswith('ConvBnRelu'):
        path[-1] = f'conv_{int(path[-1][-1]) - 1}'
      path = path + ['conv' if parts[-2] == 'conv' else 'norm']
    else:  # outconv.weight, deep_bottom.0.weight
      path = [parts[0]]
    if value.ndim == 5:
      leaf, value = 'kernel', value.transpose(2, 3, 4, 1, 0)
    elif parts[-2] == 'bn' and parts[-1] == 'weight':
      leaf = 'scale'
    else:
      leaf = 'bias'
    node = params
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(value)
  return params


@pytest.mark.slow
def test_dilated_matches_henry_torch_outputs(equi=True):
  torch = pytest.importorskip('torch')
  torch.manual_seed(0)
  ref = _henry_torch(2, 3, 8, equi, True).eval()
  for m in ref.modules():  # non-trivial norm affines
    if isinstance(m, torch.nn.GroupNorm):
      torch.nn.init.normal_(m.weight, 1.0, 0.2)
      torch.nn.init.normal_(m.bias, 0.0, 0.2)
  x = np.random.default_rng(2).normal(size=(1, 2, 16, 16, 16))
  x = x.astype(np.float32)
  with torch.no_grad():
    out, deeps = ref(torch.from_numpy(x))
  model = DilatedUNet3D(num_classes=3, width=8, equal_widths=equi,
                        deep_supervision=True)
  params = _torch_to_flax(ref.state_dict())
  xl = jnp.asarray(x.transpose(0, 2, 3, 4, 1))
  shapes = init_shapes(model, xl)['params']
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      lambda s: s.shape, shapes)
  heads = jax.jit(functools.partial(model.apply, train=True))(
      {'params': params}, xl)
  for ours, theirs in zip(heads, deeps + [out]):
    np.testing.assert_allclose(
        np.asarray(ours), theirs.numpy().transpose(0, 2, 3, 4, 1),
        rtol=1e-4, atol=1e-4)


def test_henry_group_rule_and_aligned_resize():
  assert [henry_groups(c) for c in (4, 8, 16, 24, 48, 384)] == [
      4, 8, 16, 3, 16, 16]
  x = jnp.arange(3.0).reshape(1, 3, 1)
  np.testing.assert_allclose(np.asarray(resize_aligned(x, (5,)))[0, :, 0],
                             [0, 0.5, 1, 1.5, 2])


# ------------------------------------------------ shapes, 2D and 3D --------


@pytest.mark.slow
@pytest.mark.parametrize('make', [
    lambda: _small_res(num_classes=3),
    lambda: _small_res(num_classes=3, downsampling='maxpool',
                       upsampling='nearest', activation='elu',
                       blocks=(1, 2, 1)),
    lambda: _small_dil(num_classes=3)])
@pytest.mark.parametrize('x', [X3, X2], ids=['3d', '2d'])
def test_output_shapes(make, x):
  model = make()
  v = variables(model, x)
  kernels = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(
      v['params']) if path[-1].key == 'kernel']
  assert all(len(k) == x.ndim for k in kernels)
  out = jax.eval_shape(functools.partial(model.apply, train=False), v, x)
  assert out.shape == (*x.shape[:-1], 3) and out.dtype == jnp.float32


def test_strided_has_more_parameters_than_maxpool():
  strided = init_shapes(_small_res(), X3)['params']
  maxpool = init_shapes(_small_res(downsampling='maxpool'), X3)['params']
  assert 'down_1' in strided and 'down_1' not in maxpool
  assert 'proj' in maxpool['encoder_1_0']
  assert 'proj' not in strided['encoder_1_0']
  # f = (4, 8, 8): levels 1, 2: (27*4*8 + 16 + 27*8*8) - (27*4*8 + 4*8 + 8)
  # and (27*8*8 + 16) - 0 (no projection: width unchanged).
  assert count(strided) - count(maxpool) == (27 * 64 + 16 - 40) + (27 * 64 + 16)


# --------------------------------------------------- training behaviour ---


@pytest.mark.slow
@pytest.mark.parametrize('make', [
    lambda: _small_res(deep_supervision=True),
    lambda: _small_dil(norm='batch')])
def test_gradient_steps_lower_loss(make):
  # 2D: the same definition, and far cheaper to compile on a small CPU.
  before, after = gradient_steps_lower_loss(make(), X2, steps=3)
  assert after < before


@pytest.mark.slow
@pytest.mark.parametrize('make', [
    lambda: _small_res(features=(4, 8), num_stage_maps=1, dropout_rate=0.3),
    lambda: _small_dil(dropout_rate=0.3, spatial_dropout=True)])
def test_dropout_keys(make):
  model = make()
  a, a2, b = dropout_outputs(model, X2)
  np.testing.assert_array_equal(a, a2)
  assert not np.allclose(a, b)
  v = variables(model, X2)
  apply = jax.jit(functools.partial(model.apply, train=False))
  e1, e2 = apply(v, X2), apply(v, X2)
  np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
  assert not np.allclose(e1, a)


@pytest.mark.slow
def test_residual_deep_supervision_sums_stage_maps():
  model = _small_res(features=(4, 4, 8, 8), num_stage_maps=3, norm='group',
                     deep_supervision=True)
  v = variables(model, X3)
  train = jax.jit(functools.partial(model.apply, train=True))
  heads = train(v, X3)
  assert isinstance(heads, list) and len(heads) == 3
  assert all(h.shape == (1, 16, 16, 16, 1) for h in heads)
  out = jax.jit(functools.partial(model.apply, train=False))(v, X3)
  assert not isinstance(out, list)
  np.testing.assert_allclose(np.asarray(out), np.asarray(heads[-1]),
                             rtol=1e-5, atol=1e-5)
  # The output is the sum of the up-sampled maps: the deeper two are the
  # first heads, the last stage's map is the rest.
  last = np.asarray(heads[-1] - heads[0] - heads[1])
  assert np.abs(last).max() > 1e-3
  zeroed = jax.tree_util.tree_map_with_path(
      lambda p, w: w * 0 if p[1].key == 'map_2' else w, v)
  z = train(zeroed, X3)
  for k in (0, 1):
    np.testing.assert_array_equal(np.asarray(z[k]), np.asarray(heads[k]))
  np.testing.assert_allclose(np.asarray(z[-1]), np.asarray(z[0] + z[1]),
                             rtol=1e-5, atol=1e-6)


def test_dilated_deep_supervision_heads():
  # Values: test_dilated_matches_henry_torch_outputs; here the structure.
  model = _small_dil(deep_supervision=True)
  v = init_shapes(model, X3)
  heads = jax.eval_shape(functools.partial(model.apply, train=True), v, X3)
  assert isinstance(heads, list) and len(heads) == 5
  assert all(h.shape == (1, 16, 16, 16, 1) for h in heads)
  out = jax.eval_shape(functools.partial(model.apply, train=False), v, X3)
  assert main_head(out).shape == out.shape == heads[-1].shape
  plain = init_shapes(_small_dil(), X3)['params']
  assert set(v['params']) - set(plain) == {
      'deep_bottom', 'deep_bottom2', 'deep3', 'deep2'}


# ------------------------------------------------------------ registry ----


def test_registry():
  res = models.build(ml_collections.ConfigDict(dict(
      name='residual_unet3d', num_classes=2, features=[8, 16],
      downsampling='maxpool', num_stage_maps=1, dtype='float32')))
  assert isinstance(res, ResidualUNet3D)
  assert res.features == (8, 16) and res.num_classes == 2
  dil = models.build(ml_collections.ConfigDict(dict(
      name='dilated_unet3d', equal_widths=False)))
  assert isinstance(dil, DilatedUNet3D)
  assert (dil.width, dil.norm, dil.dilation) == (48, 'group', 2)
  seed = models.build(ml_collections.ConfigDict({'name': 'residual_unet3d'}))
  assert seed.features == (64, 128, 256, 512, 1024)
  assert seed.downsampling == 'strided' and seed.norm == 'batch'


def test_bad_input():
  with pytest.raises(ValueError, match=r'\(12, 16, 16\).*divisible by 8'):
    init_shapes(DilatedUNet3D(width=4), jnp.zeros((1, 12, 16, 16, 1)))
  with pytest.raises(ValueError, match='divisible by 4'):
    init_shapes(_small_res(), jnp.zeros((1, 16, 18, 16, 1)))
  with pytest.raises(ValueError, match='downsampling'):
    init_shapes(_small_res(downsampling='avg'), X3)
  with pytest.raises(ValueError, match='num_stage_maps'):
    init_shapes(_small_res(num_stage_maps=3), X3)
