"""Tests of UNet++ (jaxseg.models.unetpp), the U-Net++ of seed 003, section 9.

Parameter counts. Seed 003 gives no count; its code is PyTorch and the usual
PyTorch UNet++ is `NestedUNet` of 4uiiurz1/pytorch-nested-unet (archs.py):
nb_filter (32, 64, 128, 256, 512), VGGBlock = conv3x3 (bias)-BN-ReLU x2,
MaxPool2d(2), Upsample(bilinear, align_corners=True), 1x1 heads. `_torch_
nested_unet` below rebuilds it (same modules, same concatenation order
[X^{i,0}, ..., X^{i,j-1}, up(X^{i+1,j-1})]); with 3 input channels and one
class it has 9,163,329 parameters (+3 x 33 = 9,163,428 with the four deep-
supervision heads). Per node X^{i,j} with c_in input channels and f = nb_
filter[i] outputs: 9 c_in f + f (conv1) + 9 f^2 + f (conv2) + 4 f (two BNs),
c_in = 3 for X^{0,0}, nb_filter[i-1] for X^{i,0}, j f + nb_filter[i+1] for
j >= 1; plus 32 + 1 per head. The Flax model's `params` must match exactly
(BN running statistics, 7,296 here, are `batch_stats`, not torch
parameters), and with the torch weights copied in, its outputs must match
within 1e-4 (eval mode, also every deep-supervision head).

The reference Keras code (MrGiovanni/UNetPlusPlus, helper_functions.py)
prints "Standard UNet++ ... Total params: 9,041,601" for its UNetPlusPlus
(1 input channel, 1 class, no BN, Conv2DTranspose(nb_filter[i], 2, stride
2) upsampling, so X^{i,j} reads (j + 1) nb_filter[i] channels): the option
norm='none', upsampling='transpose' must give exactly that.
"""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import models
from jaxseg.models.layers import resize_align_corners
from jaxseg.models.unetpp import UNetPlusPlus

import model_checks as mc

TORCH_NESTED_UNET = 9_163_329   # computed by building the torch model.
KERAS_UNETPP = 9_041_601        # MrGiovanni/UNetPlusPlus helper_functions.py

TINY = dict(features=(4, 8, 8), norm='batch')


def _torch_nested_unet(torch, in_channels=3, deep_supervision=False,
                       nb_filter=(32, 64, 128, 256, 512)):
  """4uiiurz1/pytorch-nested-unet's NestedUNet, written for any depth."""
  nn = torch.nn

  class VGGBlock(nn.Module):

    def __init__(self, cin, cmid, cout):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cmid, 3, padding=1)
      self.bn1 = nn.BatchNorm2d(cmid)
      self.conv2 = nn.Conv2d(cmid, cout, 3, padding=1)
      self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
      x = torch.relu(self.bn1(self.conv1(x)))
      return torch.relu(self.bn2(self.conv2(x)))

  class NestedUNet(nn.Module):

    def __init__(self):
      super().__init__()
      f = nb_filter
      self.depth = len(f) - 1
      self.pool = nn.MaxPool2d(2, 2)
      self.up = nn.Upsample(scale_factor=2, mode='bilinear',
                            align_corners=True)
      blocks = {}
      for d in range(self.depth + 1):
        for j in range(d + 1):
          i = d - j
          if j == 0:
            cin = in_channels if i == 0 else f[i - 1]
          else:
            cin = j * f[i] + f[i + 1]
          blocks[f'conv{i}_{j}'] = VGGBlock(cin, f[i], f[i])
      self.blocks = nn.ModuleDict(blocks)
      heads = self.depth if deep_supervision else 1
      self.finals = nn.ModuleList(
          [nn.Conv2d(f[0], 1, kernel_size=1) for _ in range(heads)])

    def forward(self, x):
      b = self.blocks
      n = {(0, 0): b['conv0_0'](x)}
      for d in range(1, self.depth + 1):
        n[d, 0] = b[f'conv{d}_0'](self.pool(n[d - 1, 0]))
        for j in range(1, d + 1):
          i = d - j
          cat = [n[i, k] for k in range(j)] + [self.up(n[i + 1, j - 1])]
          n[i, j] = b[f'conv{i}_{j}'](torch.cat(cat, 1))
      if deep_supervision:
        return [h(n[0, j + 1]) for j, h in enumerate(self.finals)]
      return self.finals[0](n[0, self.depth])

  return NestedUNet()


def _randomise_bn(torch, model):
  """Non-trivial BN statistics and affine parameters (eval mode uses them)."""
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        c = m.num_features
        m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
        m.running_var.copy_(0.5 + torch.rand(c, generator=g))
        m.weight.copy_(1.0 + 0.1 * torch.randn(c, generator=g))
        m.bias.copy_(0.1 * torch.randn(c, generator=g))


def _flax_variables(model):
  """The torch model's weights in the Flax model's layout."""
  params, stats = {}, {}
  t = lambda a: jnp.asarray(a.detach().numpy())  # noqa: E731
  for name, block in model.blocks.items():
    node = name[len('conv'):]
    p, s = {}, {}
    for k in (1, 2):
      conv, bn = getattr(block, f'conv{k}'), getattr(block, f'bn{k}')
      p[f'conv{k}'] = {'kernel': t(conv.weight.permute(2, 3, 1, 0)),
                       'bias': t(conv.bias)}
      p[f'norm{k}'] = {'scale': t(bn.weight), 'bias': t(bn.bias)}
      s[f'norm{k}'] = {'mean': t(bn.running_mean), 'var': t(bn.running_var)}
    params[f'x{node}'], stats[f'x{node}'] = p, s
  heads = ['head'] if len(model.finals) == 1 else [
      f'head_{j + 1}' for j in range(len(model.finals))]
  for name, conv in zip(heads, model.finals):
    params[name] = {'kernel': t(conv.weight.permute(2, 3, 1, 0)),
                    'bias': t(conv.bias)}
  return {'params': params, 'batch_stats': stats}


@pytest.mark.parametrize('deep_supervision', [False, True])
def test_parameter_count_matches_torch_nested_unet(deep_supervision):
  torch = pytest.importorskip('torch')
  reference = sum(p.numel() for p in _torch_nested_unet(
      torch, deep_supervision=deep_supervision).parameters())
  assert reference == TORCH_NESTED_UNET + (99 if deep_supervision else 0)
  v = mc.init_shapes(UNetPlusPlus(deep_supervision=deep_supervision),
                     jnp.zeros((1, 32, 32, 3)))
  assert set(v) == {'params', 'batch_stats'}
  assert mc.count(v['params']) == reference
  assert mc.count(v['batch_stats']) == 7_296  # 2 x 3,648 BN channels.


def test_parameter_count_matches_keras_reference():
  model = UNetPlusPlus(norm='none', upsampling='transpose')
  v = mc.init_shapes(model, jnp.zeros((1, 32, 32, 1)))
  assert set(v) == {'params'}
  assert mc.count(v['params']) == KERAS_UNETPP


@pytest.mark.slow
def test_outputs_match_torch_nested_unet():
  torch = pytest.importorskip('torch')
  torch.manual_seed(0)
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2))

  ref = _torch_nested_unet(torch).eval()
  _randomise_bn(torch, ref)
  with torch.no_grad():
    expected = ref(xt).numpy().transpose(0, 2, 3, 1)
  out = UNetPlusPlus().apply(_flax_variables(ref), x, train=False)
  np.testing.assert_allclose(np.asarray(out), expected, atol=1e-4, rtol=1e-4)

  ref = _torch_nested_unet(torch, deep_supervision=True).eval()
  _randomise_bn(torch, ref)
  with torch.no_grad():
    heads = [h.numpy().transpose(0, 2, 3, 1) for h in ref(xt)]
  v = _flax_variables(ref)
  check = lambda got, want: np.testing.assert_allclose(  # noqa: E731
      np.asarray(got), want, atol=1e-4, rtol=1e-4)
  check(UNetPlusPlus(deep_supervision=True, mode='accurate').apply(
      v, x, train=False), np.mean(heads, axis=0))
  check(UNetPlusPlus(deep_supervision=True, mode='fast').apply(
      v, x, train=False), heads[3])
  check(UNetPlusPlus(deep_supervision=True, prune_level=2).apply(
      v, x, train=False), heads[1])


@pytest.mark.parametrize('shape', [(1, 5, 7, 3), (1, 1, 4, 3), (1, 3, 4, 5, 2)])
def test_align_corners_resize_matches_torch(shape):
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  out_shape = tuple(2 * s for s in shape[1:-1])
  mode = 'bilinear' if len(shape) == 4 else 'trilinear'
  xt = torch.from_numpy(np.moveaxis(x, -1, 1))
  want = torch.nn.functional.interpolate(
      xt, size=out_shape, mode=mode, align_corners=True).numpy()
  got = resize_align_corners(jnp.asarray(x), out_shape)
  np.testing.assert_allclose(np.asarray(got), np.moveaxis(want, 1, -1),
                             atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('upsampling', ['linear_align_corners', 'transpose'])
def test_shapes_2d_3d_and_deep_supervision_contract(upsampling):
  for x in (jnp.ones((2, 16, 16, 3)), jnp.ones((1, 8, 8, 8, 2))):
    model = UNetPlusPlus(num_classes=3, deep_supervision=True,
                         upsampling=upsampling, **TINY)
    v = mc.variables(model, x)
    nd = x.ndim - 2
    assert v['params']['x0_0']['conv1']['kernel'].shape == (
        (3,) * nd + (x.shape[-1], 4))
    # X^{0,2} reads X^{0,0}, X^{0,1} and Up(X^{1,1}).
    up_channels = 4 if upsampling == 'transpose' else 8
    assert v['params']['x0_2']['conv1']['kernel'].shape[-2] == (
        2 * 4 + up_channels)
    heads, _ = model.apply(v, x, train=True, mutable=['batch_stats'])
    assert isinstance(heads, list) and len(heads) == 2
    for h in heads:
      assert h.shape == x.shape[:-1] + (3,) and h.dtype == jnp.float32
    out = model.apply(v, x, train=False)
    assert out.shape == x.shape[:-1] + (3,)
  single = UNetPlusPlus(num_classes=2, **TINY)
  x = jnp.ones((1, 8, 8, 1))
  v = mc.variables(single, x)
  assert 'head_1' not in v['params']
  out, _ = single.apply(v, x, train=True, mutable=['batch_stats'])
  assert out.shape == (1, 8, 8, 2)


@pytest.mark.slow
def test_eval_modes_and_pruning():
  model = UNetPlusPlus(deep_supervision=True, mode='accurate',
                       features=(4, 8, 8, 16))
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16, 16, 1)),
                  jnp.float32)
  v = mc.variables(model, x)
  out, sown = model.apply(v, x, train=False, mutable=['intermediates'])
  heads = [np.asarray(sown['intermediates'][f'logits_{j}'][0])
           for j in (1, 2, 3)]
  assert not np.allclose(heads[0], heads[2])
  np.testing.assert_allclose(np.asarray(out), np.mean(heads, axis=0),
                             rtol=1e-6, atol=1e-6)
  fast = model.clone(mode='fast').apply(v, x, train=False)
  np.testing.assert_allclose(np.asarray(fast), heads[2], rtol=1e-6)
  for level in (1, 2):
    # UNet++ L needs only the nodes X^{i,j} with i + j <= L and head L.
    kept = {k: w for k, w in v['params'].items() if k == f'head_{level}' or (
        k.startswith('x') and sum(map(int, k[1:].split('_'))) <= level)}
    stats = {k: w for k, w in v['batch_stats'].items() if k in kept}
    pruned = model.clone(prune_level=level).apply(
        {'params': kept, 'batch_stats': stats}, x, train=False)
    np.testing.assert_allclose(np.asarray(pruned), heads[level - 1],
                               rtol=1e-5, atol=1e-6)
  # Training is never pruned: all heads come back.
  train_heads, _ = model.clone(prune_level=1).apply(
      v, x, train=True, mutable=['batch_stats'])
  assert len(train_heads) == 3


@pytest.mark.slow
def test_gradient_steps_lower_loss():
  model = UNetPlusPlus(features=(4, 8), deep_supervision=True)
  before, after = mc.gradient_steps_lower_loss(model, jnp.asarray(
      np.random.default_rng(3).normal(size=(2, 16, 16, 3)), jnp.float32),
      learning_rate=1e-2)
  assert after < before


def test_dropout_keys_and_deterministic_eval():
  model = UNetPlusPlus(features=(4, 8), dropout_rate=0.3,
                       spatial_dropout=True)
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 3)),
                  jnp.float32)
  a, b, c = mc.dropout_outputs(model, x)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  v = mc.variables(model, x)
  e1 = model.apply(v, x, train=False)
  e2 = model.apply(v, x, train=False)
  np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
  assert not np.allclose(np.asarray(e1), a)


def test_registry_builds_from_config():
  model = models.build(ml_collections.ConfigDict(dict(
      name='unetpp', num_classes=2, features=[8, 16, 32],
      deep_supervision=True, mode='accurate', prune_level=2,
      upsampling='transpose', dtype='float32')))
  assert isinstance(model, UNetPlusPlus)
  assert model.features == (8, 16, 32) and model.prune_level == 2
  seed = models.build(ml_collections.ConfigDict({'name': 'unetpp'}))
  assert seed.features == (32, 64, 128, 256, 512)
  assert seed.mode == 'fast' and not seed.deep_supervision
  assert seed.upsampling == 'linear_align_corners' and seed.norm == 'batch'


@pytest.mark.parametrize('kwargs, shape, match', [
    (dict(prune_level=2), (1, 16, 16, 1), 'deep_supervision'),
    (dict(deep_supervision=True, prune_level=3), (1, 16, 16, 1), '1..2'),
    (dict(mode='slow'), (1, 16, 16, 1), 'mode'),
    (dict(upsampling='cubic'), (1, 16, 16, 1), 'upsampling'),
    (dict(norm='batchnorm'), (1, 16, 16, 1), 'norm'),
    (dict(), (1, 16, 18, 1), r'\(16, 18\)'),
])
def test_bad_settings_fail_clearly(kwargs, shape, match):
  model = UNetPlusPlus(**{**TINY, **kwargs})
  with pytest.raises(ValueError, match=match):
    mc.init_shapes(model, jnp.zeros(shape))
