"""Tests of seed 004's Med3DUNet, its MedicalNet backbone and the .pth loader.

Parameter counts. MedicalNet's README ("Computational Cost") lists 14.36,
32.99, 63.31, 46.21, 85.31, 117.51 and 126.74 M "parameters" for 3D-ResNet
10/18/34/50/101/152/200. A PyTorch transcription of its models/resnet.py
(below) gives, for the README's shortcut types (10 B, 18 A, 34 A, 50+ B):

  depth  backbone params  BN running stats  sum         conv_seg head
  10     14,355,520       5,760             14,361,280  158,944
  18     32,986,176       7,808             32,993,984  158,944
  34     63,295,808       15,232            63,311,040  158,944
  50     46,155,072       53,120            46,208,192  552,160
  101    85,201,216       105,344           85,306,560  552,160
  152    117,359,936      151,424           117,511,360 552,160
  200    126,559,552      176,000           126,735,552 552,160

So the README counts the backbone's state dict (weights + BN running
statistics) without the segmentation head: every depth rounds to the
README's figure exactly, and only with its shortcut types (18 with B would
be 33.17 M, 50 with A 43.43 M), which also confirms the README's table of
shortcut types. (With the head and 2 classes the totals would be 14.51,
33.15, 63.45 and 46.71 M.) Here params + batch_stats of ResNet3D must give
the README's figures and the backbone params the exact column above.

The conversion test builds that PyTorch transcription, randomises it
(weights and all BN statistics), saves it as the released files are stored
({'state_dict': ...} with DataParallel 'module.' keys, the conv_seg head
included), loads it with load_medicalnet and compares every stage's output
with PyTorch's in eval mode.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import models
from jaxseg.errors import InputError
from jaxseg.models import medicalnet, pretrained
from jaxseg.models.med3d import DEFAULT_SHORTCUT, Med3DUNet, ResNet3D

import model_checks as mc

README_MILLIONS = {10: 14.36, 18: 32.99, 34: 63.31, 50: 46.21, 101: 85.31,
                   152: 117.51, 200: 126.74}
BACKBONE_PARAMS = {10: 14_355_520, 18: 32_986_176, 34: 63_295_808,
                   50: 46_155_072, 101: 85_201_216, 152: 117_359_936,
                   200: 126_559_552}


def _x(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def _backbone_shapes(model, x):
  v = mc.init_shapes(model, x)
  return jax.eval_shape(functools.partial(model.apply, train=False), v, x)


# --- The backbone --------------------------------------------------------


@pytest.mark.slow
def test_backbone_stage_shapes():
  feats = _backbone_shapes(ResNet3D(depth=10), jnp.zeros((1, 16, 32, 32, 1)))
  assert {k: v.shape for k, v in feats.items()} == {
      'conv1': (1, 8, 16, 16, 64), 'layer1': (1, 4, 8, 8, 64),
      'layer2': (1, 2, 4, 4, 128), 'layer3': (1, 2, 4, 4, 256),
      'layer4': (1, 2, 4, 4, 512)}
  feats = _backbone_shapes(ResNet3D(depth=50), jnp.zeros((1, 16, 32, 32, 1)))
  assert [feats[f'layer{i}'].shape[-1] for i in range(1, 5)] == [
      256, 512, 1024, 2048]
  # PyTorch's symmetric padding: odd sizes round up at every stride.
  feats = _backbone_shapes(ResNet3D(depth=18), jnp.zeros((1, 15, 17, 9, 1)))
  assert feats['conv1'].shape[1:4] == (8, 9, 5)
  assert feats['layer1'].shape[1:4] == (4, 5, 3)
  assert feats['layer4'].shape[1:4] == (2, 3, 2)


@pytest.mark.parametrize('depth', sorted(README_MILLIONS))
def test_parameter_counts_match_medicalnet(depth):
  v = mc.init_shapes(ResNet3D(depth=depth), jnp.zeros((1, 8, 8, 8, 1)))
  params, stats = mc.count(v['params']), mc.count(v['batch_stats'])
  assert params == BACKBONE_PARAMS[depth]
  assert round((params + stats) / 1e6, 2) == README_MILLIONS[depth], (
      f'resnet{depth}: {params:,} params + {stats:,} BN statistics; '
      f'MedicalNet README says {README_MILLIONS[depth]} M')


def test_shortcut_types():
  assert DEFAULT_SHORTCUT == {10: 'B', 18: 'A', 34: 'A', 50: 'B', 101: 'B',
                              152: 'B', 200: 'B'}
  x = jnp.zeros((1, 8, 8, 8, 1))
  a = mc.init_shapes(ResNet3D(depth=10, shortcut_type='A'), x)['params']
  b = mc.init_shapes(ResNet3D(depth=10), x)['params']
  assert 'downsample_0' not in a['layer2_0']
  assert b['layer2_0']['downsample_0']['kernel'].shape == (1, 1, 1, 64, 128)
  assert 'downsample_0' not in b['layer1_0']  # 64 -> 64, stride 1: identity
  with pytest.raises(ValueError, match='shortcut_type'):
    mc.init_shapes(ResNet3D(depth=10, shortcut_type='C'), x)
  with pytest.raises(ValueError, match='depth'):
    mc.init_shapes(ResNet3D(depth=11), x)


# --- Med3DUNet -----------------------------------------------------------


@pytest.fixture(scope='module')
def small():
  model = Med3DUNet(num_classes=3)
  x = _x((1, 16, 32, 32, 2))
  return model, x, mc.variables(model, x)


@pytest.mark.slow
def test_output_and_merge_shapes_and_eval_determinism(small):
  model, x, v = small
  apply = jax.jit(functools.partial(model.apply, train=False,
                                    mutable=['intermediates']))
  out, state = apply(v, x)
  np.testing.assert_array_equal(np.asarray(apply(v, x)[0]), np.asarray(out))
  assert out.shape == (1, 16, 32, 32, 3) and out.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(out)))
  shapes = {k: s[0].shape[1:] for k, s in state['intermediates'].items()}
  # 1/8: 4 reduced backbone channels + 128 of the parallel path.
  assert shapes['bottleneck_merge'] == (2, 4, 4, 4 + 128)
  # 1/4: up 64 + layer1 of 2 modalities (2 x 64) + parallel 64.
  assert shapes['decoder_merge_0'] == (4, 8, 8, 64 + 128 + 64)
  # 1/2: up 32 + conv1 stem of 2 modalities (2 x 64) + parallel 32.
  assert shapes['decoder_merge_1'] == (8, 16, 16, 32 + 128 + 32)
  # Full size: up 16 + parallel 16.
  assert shapes['decoder_merge_2'] == (16, 32, 32, 32)


@pytest.mark.parametrize('shape', [(1, 12, 20, 20, 4), (2, 32, 32, 4)])
def test_other_sizes_and_2d(shape):
  """Sizes not divisible by 8 are interpolated; 2D images use a 2D ResNet."""
  model = Med3DUNet(num_classes=3)
  x = jnp.zeros(shape)
  out = jax.eval_shape(functools.partial(model.apply, train=False),
                       mc.init_shapes(model, x), x)
  assert out.shape == shape[:-1] + (3,)


@pytest.mark.slow
def test_backbone_weights_are_shared_across_modalities():
  counts = {}
  for c in (1, 4):
    x = jnp.zeros((1, 16, 16, 16, c))
    v = mc.init_shapes(Med3DUNet(), x)
    params = v['params']
    # One backbone, built for one channel, whatever the number of modalities.
    assert params['backbone']['conv1']['kernel'].shape == (7, 7, 7, 1, 64)
    assert mc.count(params['backbone']) == BACKBONE_PARAMS[10]
    assert not [k for k in params if k != 'backbone' and 'layer' in k]
    assert set(v['batch_stats']) >= {'backbone'}
    assert params['bottleneck']['kernel'].shape == (1, 1, 1, c * 512, 4)
    counts[c] = mc.count(params)
  # 3 more modalities add only input channels outside the backbone:
  # bottleneck 3*512*4, encoder_0 conv1 3*27*16, decoder_0 conv1 3*64*27*64,
  # decoder_1 conv1 3*64*27*32.
  assert counts[4] - counts[1] == 3 * (512 * 4 + 27 * 16 + 64 * 27 * 64
                                       + 64 * 27 * 32)


# Small U-Net widths and one modality keep the compiles short; the
# backbone is always MedicalNet's full width.
TINY = dict(num_classes=3, features=(4, 4, 4, 4))


@pytest.mark.slow
def test_gradient_steps_lower_loss():
  model = Med3DUNet(**TINY)
  # 1e-2: eval-mode losses use running statistics, which 3 steps barely
  # move (1e-3 lowers the loss by only ~3e-4).
  before, after = mc.gradient_steps_lower_loss(model, _x((1, 16, 32, 32, 1)),
                                               learning_rate=1e-2)
  assert after < before - 1e-3, (before, after)


@pytest.mark.slow
def test_dropout_keys():
  model = Med3DUNet(dropout_rate=0.3, **TINY)
  x = _x((1, 8, 16, 16, 1))
  a, b, c = mc.dropout_outputs(model, x)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


@pytest.mark.slow
@pytest.mark.parametrize('freeze', [False, True])
def test_freeze_backbone_stats(freeze):
  x = _x((1, 8, 16, 16, 1))
  model = Med3DUNet(freeze_backbone_stats=freeze, **TINY)
  v = mc.variables(model, x)
  _, state = jax.jit(functools.partial(
      model.apply, train=True, mutable=['batch_stats']))(v, x)
  old, new = v['batch_stats'], state['batch_stats']
  for stats in (old, new):
    assert set(stats['backbone']) == set(v['batch_stats']['backbone'])
  moved = lambda k: not np.allclose(old[k]['bn1']['mean'],  # noqa: E731
                                    new[k]['bn1']['mean'])
  assert moved('backbone') != freeze
  assert not np.allclose(old['encoder_0']['norm1']['mean'],
                         new['encoder_0']['norm1']['mean'])


def test_registry_builds_from_config():
  model = models.build(ml_collections.ConfigDict(dict(
      name='med3d_unet', num_classes=3, depth=18, features=[8, 8, 16, 16],
      dropout_rate=0.1, dtype='float32')))
  assert isinstance(model, Med3DUNet)
  assert model.features == (8, 8, 16, 16) and model.depth == 18
  seed = models.build(ml_collections.ConfigDict({'name': 'med3d_unet'}))
  assert (seed.depth, seed.shortcut_type, seed.bottleneck_features) == (
      10, None, 4)
  with pytest.raises(ValueError, match='features'):
    mc.init_shapes(Med3DUNet(features=(8, 8)), jnp.zeros((1, 8, 8, 8, 1)))


# --- MedicalNet checkpoints ----------------------------------------------


@functools.lru_cache(maxsize=None)
def _medicalnet_classes():
  """MedicalNet's models/resnet.py, transcribed (torch >= 1 idioms)."""
  torch = pytest.importorskip('torch')
  nn, F = torch.nn, torch.nn.functional

  def conv3x3x3(inp, out, stride=1, dilation=1):
    return nn.Conv3d(inp, out, kernel_size=3, dilation=dilation,
                     stride=stride, padding=dilation, bias=False)

  def downsample_basic_block(x, planes, stride):
    out = F.avg_pool3d(x, kernel_size=1, stride=stride)
    zero_pads = torch.zeros(out.size(0), planes - out.size(1),
                            *out.shape[2:], dtype=out.dtype)
    return torch.cat([out, zero_pads], dim=1)

  class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1,
                 downsample=None):
      super().__init__()
      self.conv1 = conv3x3x3(inplanes, planes, stride=stride,
                             dilation=dilation)
      self.bn1 = nn.BatchNorm3d(planes)
      self.relu = nn.ReLU(inplace=True)
      self.conv2 = conv3x3x3(planes, planes, dilation=dilation)
      self.bn2 = nn.BatchNorm3d(planes)
      self.downsample = downsample

    def forward(self, x):
      out = self.relu(self.bn1(self.conv1(x)))
      out = self.bn2(self.conv2(out))
      residual = x if self.downsample is None else self.downsample(x)
      return self.relu(out + residual)

  class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1,
                 downsample=None):
      super().__init__()
      self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
      self.bn1 = nn.BatchNorm3d(planes)
      self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride,
                             dilation=dilation, padding=dilation, bias=False)
      self.bn2 = nn.BatchNorm3d(planes)
      self.conv3 = nn.Conv3d(planes, planes * 4, kernel_size=1, bias=False)
      self.bn3 = nn.BatchNorm3d(planes * 4)
      self.relu = nn.ReLU(inplace=True)
      self.downsample = downsample

    def forward(self, x):
      out = self.relu(self.bn1(self.conv1(x)))
      out = self.relu(self.bn2(self.conv2(out)))
      out = self.bn3(self.conv3(out))
      residual = x if self.downsample is None else self.downsample(x)
      return self.relu(out + residual)

  class ResNet(nn.Module):

    def __init__(self, block, layers, num_seg_classes=2, shortcut_type='B'):
      super().__init__()
      self.inplanes = 64
      self.conv1 = nn.Conv3d(1, 64, kernel_size=7, stride=(2, 2, 2),
                             padding=(3, 3, 3), bias=False)
      self.bn1 = nn.BatchNorm3d(64)
      self.relu = nn.ReLU(inplace=True)
      self.maxpool = nn.MaxPool3d(kernel_size=(3, 3, 3), stride=2, padding=1)
      self.layer1 = self._make_layer(block, 64, layers[0], shortcut_type)
      self.layer2 = self._make_layer(block, 128, layers[1], shortcut_type,
                                     stride=2)
      self.layer3 = self._make_layer(block, 256, layers[2], shortcut_type,
                                     stride=1, dilation=2)
      self.layer4 = self._make_layer(block, 512, layers[3], shortcut_type,
                                     stride=1, dilation=4)
      self.conv_seg = nn.Sequential(
          nn.ConvTranspose3d(512 * block.expansion, 32, 2, stride=2),
          nn.BatchNorm3d(32), nn.ReLU(inplace=True),
          nn.Conv3d(32, 32, kernel_size=3, stride=(1, 1, 1),
                    padding=(1, 1, 1), bias=False),
          nn.BatchNorm3d(32), nn.ReLU(inplace=True),
          nn.Conv3d(32, num_seg_classes, kernel_size=1, stride=(1, 1, 1),
                    bias=False))
      for m in self.modules():
        if isinstance(m, nn.Conv3d):
          nn.init.kaiming_normal_(m.weight, mode='fan_out')

    def _make_layer(self, block, planes, blocks, shortcut_type, stride=1,
                    dilation=1):
      downsample = None
      if stride != 1 or self.inplanes != planes * block.expansion:
        if shortcut_type == 'A':
          downsample = functools.partial(
              downsample_basic_block, planes=planes * block.expansion,
              stride=stride)
        else:
          downsample = nn.Sequential(
              nn.Conv3d(self.inplanes, planes * block.expansion,
                        kernel_size=1, stride=stride, bias=False),
              nn.BatchNorm3d(planes * block.expansion))
      layers = [block(self.inplanes, planes, stride=stride,
                      dilation=dilation, downsample=downsample)]
      self.inplanes = planes * block.expansion
      for _ in range(1, blocks):
        layers.append(block(self.inplanes, planes, dilation=dilation))
      return nn.Sequential(*layers)

    def stages(self, x):
      """Each stage's output (conv1 after bn1 + ReLU), like ResNet3D's."""
      out = {'conv1': self.relu(self.bn1(self.conv1(x)))}
      x = self.maxpool(out['conv1'])
      for i in range(1, 5):
        x = out[f'layer{i}'] = getattr(self, f'layer{i}')(x)
      return out

  return torch, BasicBlock, Bottleneck, ResNet


def _torch_resnet(depth, shortcut_type, seed=0):
  """A randomised MedicalNet ResNet (weights, BN affine and running stats)."""
  torch, basic, bottleneck, resnet = _medicalnet_classes()
  torch.manual_seed(seed)
  layout = {10: (basic, [1, 1, 1, 1]), 50: (bottleneck, [3, 4, 6, 3])}[depth]
  model = resnet(*layout, shortcut_type=shortcut_type)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm3d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 2.0)
  return model.eval()


def _save(torch, model, path, legacy=False):
  """As the released files: {'state_dict': ...} with DataParallel keys.

  `legacy`: the pre-1.6 file format, the only one of PyTorch 0.4.1 (the
  version MedicalNet's README names).
  """
  state = {f'module.{k}': v for k, v in model.state_dict().items()}
  torch.save({'state_dict': state}, path,
             _use_new_zipfile_serialization=not legacy)
  return state


@pytest.fixture(scope='module')
def resnet10_file(tmp_path_factory):
  model = _torch_resnet(10, 'B')
  torch = _medicalnet_classes()[0]
  path = tmp_path_factory.mktemp('medicalnet') / 'resnet_10.pth'
  state = _save(torch, model, path)
  return model, path, state


@pytest.mark.parametrize('shortcut', ['B', 'A'])
def test_converted_weights_reproduce_pytorch(shortcut, resnet10_file,
                                             tmp_path):
  if shortcut == 'B':
    model, path, _ = resnet10_file
  else:
    model = _torch_resnet(10, 'A', seed=1)
    path = tmp_path / 'resnet_10a.pth'
    _save(_medicalnet_classes()[0], model, path, legacy=True)
  torch = _medicalnet_classes()[0]
  x = np.random.default_rng(2).normal(size=(1, 1, 16, 32, 32)).astype(
      np.float32)
  with torch.no_grad():
    want = {k: v.numpy() for k, v in model.stages(torch.from_numpy(x)).items()}

  variables = medicalnet.load_medicalnet(str(path))
  assert set(variables) == {'params', 'batch_stats'}
  assert 'conv_seg' not in variables['params']
  flax_model = ResNet3D(depth=10)
  if shortcut == 'A':  # the default for 10 is B: A must be asked for.
    flax_model = ResNet3D(depth=10, shortcut_type='A')
  got = jax.jit(functools.partial(flax_model.apply, train=False))(
      variables, jnp.asarray(np.moveaxis(x, 1, -1)))
  for stage, value in want.items():
    value = np.moveaxis(value, 1, -1)
    np.testing.assert_allclose(np.asarray(got[stage]), value, rtol=1e-4,
                               atol=1e-4, err_msg=stage)
  assert np.abs(want['layer4']).max() > 0.1  # not a trivial comparison


@pytest.mark.slow
def test_bottleneck_key_mapping():
  model = _torch_resnet(50, 'B')
  state = model.state_dict()
  variables = medicalnet.convert_state_dict(state)  # depth inferred: 50
  want = mc.init_shapes(ResNet3D(depth=50), jnp.zeros((1, 8, 8, 8, 1)))
  assert (jax.tree.map(lambda a: a.shape, variables)
          == jax.tree.map(lambda a: a.shape, want))
  params, stats = variables['params'], variables['batch_stats']
  np.testing.assert_array_equal(
      params['layer3_5']['conv3']['kernel'],
      state['layer3.5.conv3.weight'].numpy().transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(
      params['layer4_0']['downsample_0']['kernel'][0, 0, 0],
      state['layer4.0.downsample.0.weight'].numpy()[:, :, 0, 0, 0].T)
  np.testing.assert_array_equal(params['layer2_3']['bn2']['scale'],
                                state['layer2.3.bn2.weight'].numpy())
  np.testing.assert_array_equal(stats['layer1_0']['downsample_1']['var'],
                                state['layer1.0.downsample.1.running_var'])


def test_loads_into_med3d_unet(resnet10_file):
  _, path, _ = resnet10_file
  x = jnp.zeros((1, 16, 16, 16, 4))
  v = mc.variables(Med3DUNet(), x)
  config = ml_collections.ConfigDict(dict(path=str(path), format='medicalnet',
                                          into='backbone'))
  params, stats = pretrained.load_into(v['params'], v['batch_stats'], config)
  loaded = medicalnet.load_medicalnet(str(path), depth=10)
  np.testing.assert_array_equal(
      params['backbone']['layer4_0']['conv2']['kernel'],
      loaded['params']['layer4_0']['conv2']['kernel'])
  np.testing.assert_array_equal(stats['backbone']['bn1']['var'],
                                loaded['batch_stats']['bn1']['var'])


def test_bad_checkpoints_raise_input_error(resnet10_file, tmp_path):
  torch = _medicalnet_classes()[0]
  _, path, state = resnet10_file
  load = medicalnet.load_medicalnet

  with pytest.raises(InputError, match='no such file') as e:
    load(str(tmp_path / 'absent.pth'))
  assert e.value.where.endswith('absent.pth')

  corrupt = tmp_path / 'corrupt.pth'
  corrupt.write_bytes(b'not a checkpoint' * 10)
  with pytest.raises(InputError, match='cannot be read') as e:
    load(str(corrupt))
  assert e.value.where == str(corrupt)

  truncated = tmp_path / 'truncated.pth'
  truncated.write_bytes(path.read_bytes()[:100_000])
  with pytest.raises(InputError, match='cannot be read'):
    load(str(truncated))

  missing = dict(state)
  del missing['module.layer3.0.bn2.running_var']
  torch.save({'state_dict': missing}, tmp_path / 'missing.pth')
  with pytest.raises(InputError, match=r'missing layer3\.0\.bn2\.running_var'):
    load(str(tmp_path / 'missing.pth'))

  extra = dict(state)
  extra['module.fc.weight'] = torch.zeros(2, 512)
  torch.save({'state_dict': extra}, tmp_path / 'extra.pth')
  with pytest.raises(InputError, match=r'unexpected fc\.weight'):
    load(str(tmp_path / 'extra.pth'))

  with pytest.raises(InputError, match=r'resnet18 .*missing layer1\.1\.'):
    load(str(path), depth=18)

  bad_shape = dict(state)
  bad_shape['module.conv1.weight'] = torch.zeros(64, 4, 7, 7, 7)
  torch.save({'state_dict': bad_shape}, tmp_path / 'shape.pth')
  with pytest.raises(InputError,
                     match=r'conv1\.weight has shape \(64, 4, 7, 7, 7\)'):
    load(str(tmp_path / 'shape.pth'))

  odd = {k: v for k, v in state.items() if not k.startswith('module.layer4.')}
  torch.save(odd, tmp_path / 'odd.pth')  # a bare state dict works too
  with pytest.raises(InputError, match=r'match no depth'):
    load(str(tmp_path / 'odd.pth'))

  torch.save([1, 2, 3], tmp_path / 'list.pth')
  with pytest.raises(InputError, match='not a state dict'):
    load(str(tmp_path / 'list.pth'))


def test_missing_torch_gives_install_advice(monkeypatch, tmp_path):
  import builtins
  real_import = builtins.__import__

  def no_torch(name, *args, **kwargs):
    if name == 'torch' or name.startswith('torch.'):
      raise ImportError('No module named torch')
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, '__import__', no_torch)
  with pytest.raises(InputError, match='pip install torch'):
    medicalnet.load_medicalnet(str(tmp_path / 'resnet_10.pth'))

