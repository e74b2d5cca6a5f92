"""Augmentation on the host or on the device (`config.augment.where`).

The device chain must draw what the host chain draws: for every step, a
read-out of its random parameters from the chain's output (the affine
matrix from resampled coordinate ramps, the elastic displacement, the
cut-out share, the intensity scale/shift and gamma from a ramp, the blur
sigma from an impulse, the noise moments), over N draws of each chain, is
compared with a two-sample Kolmogorov-Smirnov test (continuous read-outs)
and a two-proportion z-test (how often a step is drawn). Each comparison
fails at p < 1e-4, so the ~70 comparisons of this file fail by chance with
probability < 1 %; the seeds are fixed, so the outcome is reproducible, and
a last test shows the same test does reject a 15-degree against a
20-degree rotation range.

Also: 'auto' resolves by backend; the loader of 'device' cuts the patches
the host loader cuts; the train step's device augmentation is the chain on
per-sample keys that depend on the sample's row of the global batch only.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxseg import config_base
from jaxseg.data import augment
from jaxseg.data import augment_device as dev
from jaxseg.errors import InputError
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib

N = 1500          # draws per chain and comparison
P_MIN = 1e-4      # per comparison
_OFF = dict(flip_prob=0.0, cutout_prob=0.0, noise_prob=0.0)


def host_outputs(image, target, cfg, n=N, seed=0):
  """(n, *S, C) outputs of the host chain, one generator per draw."""
  return np.stack([augment.augment_slice(image, target, cfg,
                                         np.random.default_rng([seed, i]))[0]
                   for i in range(n)])


def device_outputs(image, target, cfg, n=N, seed=0):
  images = jnp.broadcast_to(image, (n,) + image.shape)
  targets = jnp.broadcast_to(target, (n,) + target.shape)
  return np.asarray(dev.augment_batch(jax.random.key(seed), images, targets,
                                      cfg)[0])


def assert_same_distribution(host, device, name):
  """KS two-sample test on a continuous read-out (n,) of each chain."""
  host, device = np.ravel(host), np.ravel(device)
  p = stats.ks_2samp(host, device).pvalue
  assert p > P_MIN, (f'{name}: KS p={p:.2e}; host mean {host.mean():.4g} '
                     f'sd {host.std():.4g}, device mean {device.mean():.4g} '
                     f'sd {device.std():.4g}')


def assert_same_rate(host, device, name):
  """Two-proportion z-test on boolean read-outs (n,): |z| < 3.9 (p > 1e-4)."""
  a, b = np.mean(host), np.mean(device)
  pooled = (np.sum(host) + np.sum(device)) / (len(host) + len(device))
  se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / len(host)
                                                       + 1 / len(device)))
  z = (a - b) / se
  assert abs(z) < 3.9, f'{name}: host rate {a:.3f}, device {b:.3f}, z={z:.2f}'


def compare(host, device, readouts):
  for name, kind in readouts:
    check = assert_same_rate if kind == 'rate' else assert_same_distribution
    check(host[name], device[name], name)


# ---------------------------------------------------------------- read-outs --

def ramps(shape):
  """Channels: the coordinate of each axis, then ones (inside the input)."""
  grid = np.indices(shape, dtype=np.float32)
  return np.concatenate([np.moveaxis(grid, 0, -1),
                         np.ones(shape + (1,), np.float32)], -1)


def affine_readout(out):
  """The output -> input map of each draw, fitted to its coordinate ramps.

  Linear interpolation of a linear ramp is exact, so inside the input the
  ramps hold the input coordinate each output voxel read. Returns the
  (n, d, d) linear parts (rotation / scale with the flips of the output).
  """
  d = out.ndim - 2
  shape = out.shape[1:-1]
  grid = np.moveaxis(np.indices(shape, dtype=np.float64), 0, -1).reshape(-1, d)
  design = np.concatenate([grid, np.ones((len(grid), 1))], 1)
  fits = []
  for o in out.reshape(len(out), -1, d + 1).astype(np.float64):
    inside = o[:, d] > 1 - 1e-5
    solution, *_ = np.linalg.lstsq(design[inside], o[inside, :d], rcond=None)
    fits.append(solution[:d].T)
  return np.stack(fits)


def spatial_stats(out):
  m = affine_readout(out)
  d = m.shape[1]
  det = np.linalg.det(m)
  factor = np.abs(det) ** (-1 / d)          # the pull is R^T F / factor
  rotation = m * factor[:, None, None]      # R^T F, F the flips
  flips = np.diagonal(rotation, axis1=1, axis2=2) < 0   # |angles| <= 15
  unflipped = rotation * np.where(flips, -1.0, 1.0)[:, None, :]
  # Rotation angle about the rotation axis: trace R = 1 + 2 cos (3D).
  trace = np.trace(unflipped, axis1=1, axis2=2)
  angle = np.degrees(np.arccos(np.clip((trace - (d - 2)) / 2, -1, 1)))
  result = dict(factor=factor, scaled=np.abs(factor - 1) > 1e-4,
                angle=angle, rotated=angle > 1e-2)
  for a in range(d):
    result[f'flip{a}'] = flips[:, a]
  for i in range(d):
    for j in range(d):
      if i != j:
        result[f'R{i}{j}'] = unflipped[:, i, j]
  return result


@pytest.mark.slow
@pytest.mark.parametrize('shape', [(20, 22), (12, 13, 14)])
def test_rotation_scaling_and_flips_draw_the_host_distribution(shape):
  cfg = augment.AugmentConfig(flip_prob=0.5, cutout_prob=0.0, noise_prob=0.0,
                              rotate_prob=0.5, rotate_degrees=15.0,
                              scale_prob=0.5, scale_range=0.1)
  image, target = ramps(shape), np.zeros(shape + (1,), np.float32)
  host = spatial_stats(host_outputs(image, target, cfg))
  device = spatial_stats(device_outputs(image, target, cfg))
  d = len(shape)
  compare(host, device,
          [('scaled', 'rate'), ('rotated', 'rate')]
          + [(f'flip{a}', 'rate') for a in range(d)])
  # The continuous parts, where drawn.
  for name, flag in (('factor', 'scaled'), ('angle', 'rotated')):
    assert_same_distribution(host[name][host[flag]],
                             device[name][device[flag]], name)
  rotated_h, rotated_d = host['rotated'], device['rotated']
  for i in range(d):
    for j in range(d):
      if i != j:
        assert_same_distribution(host[f'R{i}{j}'][rotated_h],
                                 device[f'R{i}{j}'][rotated_d], f'R{i}{j}')
  # Ranges: 10 % scaling, 15 degrees per angle (3D: three composed).
  for s in (host, device):
    assert 0.9 - 1e-3 < s['factor'].min() and s['factor'].max() < 1.1 + 1e-3
    assert s['angle'].max() < 15 * (1 if d == 2 else 3) + 0.1


@pytest.mark.slow
def test_elastic_displacement_draws_the_host_distribution():
  shape = (32, 32)
  cfg = augment.AugmentConfig(**_OFF, elastic_prob=0.5, elastic_alpha=30.0,
                              elastic_sigma=4.0)
  image, target = ramps(shape), np.zeros(shape + (1,), np.float32)

  def readout(out):
    inside = out[..., 2] > 1 - 1e-5
    grid = np.moveaxis(np.indices(shape, dtype=np.float32), 0, -1)
    shift = np.where(inside[..., None], out[..., :2] - grid, 0.0)
    count = np.maximum(inside.sum((1, 2)), 1)
    rms = np.sqrt((shift ** 2).sum((1, 2, 3)) / count)
    # Smoothness: displacement difference of neighbouring voxels.
    step = np.abs(np.diff(shift[..., 0], axis=1)).mean((1, 2))
    return dict(rms=rms, moved=rms > 1e-4, step=step,
                centre=shift[:, 16, 16, 0])

  host = readout(host_outputs(image, target, cfg))
  device = readout(device_outputs(image, target, cfg))
  compare(host, device, [('moved', 'rate')])
  for name in ('rms', 'step', 'centre'):
    assert_same_distribution(host[name][host['moved']],
                             device[name][device['moved']], name)


@pytest.mark.slow
@pytest.mark.parametrize('shape', [(24, 20), (10, 12, 11)])
def test_cutout_draws_the_host_distribution(shape):
  cfg = augment.AugmentConfig(flip_prob=0.0, noise_prob=0.0, cutout_prob=0.5)
  image = np.ones(shape + (2,), np.float32)
  target = np.zeros(shape + (1,), np.float32)

  def readout(out):
    zero = (out[..., 0] == 0).reshape(len(out), -1).mean(1)
    return dict(zero=zero, cut=zero > 0)

  host = readout(host_outputs(image, target, cfg))
  device = readout(device_outputs(image, target, cfg))
  compare(host, device, [('cut', 'rate')])
  assert_same_distribution(host['zero'][host['cut']],
                           device['zero'][device['cut']], 'cut-out share')


def test_intensity_and_gamma_draw_the_host_distribution():
  cfg = augment.AugmentConfig(**_OFF, intensity_prob=0.5, gamma_prob=0.5)
  # Each channel a ramp 0 .. 1 (0, 0.5 and 1 present): after scale s, shift
  # t and gamma g, x = 0 reads t, x = 1 reads s + t, x = 0.5 0.5^g s + t.
  ramp = np.linspace(0, 1, 21, dtype=np.float32)
  image = np.stack([np.tile(ramp, (3, 1))] * 2, -1)    # (3, 21, 2)
  target = np.zeros((3, 21, 1), np.float32)

  def readout(out):
    t = out[:, 1, 0]
    s = out[:, 1, 20] - t
    g = np.log((out[:, 1, 10] - t) / s) / np.log(0.5)
    result = {}
    for c in range(2):
      result[f'scale{c}'], result[f'shift{c}'] = s[:, c], t[:, c]
      result[f'gamma{c}'] = g[:, c]
    result['intensity'] = np.abs(t[:, 0]) > 1e-6
    result['gammad'] = np.abs(g[:, 0] - 1) > 1e-3
    return result

  host = readout(host_outputs(image, target, cfg))
  device = readout(device_outputs(image, target, cfg))
  compare(host, device, [('intensity', 'rate'), ('gammad', 'rate')])
  for c in range(2):
    for name, flag in ((f'scale{c}', 'intensity'), (f'shift{c}', 'intensity'),
                       (f'gamma{c}', 'gammad')):
      assert_same_distribution(host[name][host[flag]],
                               device[name][device[flag]], name)


@pytest.mark.slow
def test_blur_sigma_draws_the_host_distribution():
  cfg = augment.AugmentConfig(**_OFF, blur_prob=0.5)
  shape = (21, 21)
  image = np.zeros(shape + (1,), np.float32)
  image[10, 10] = 1.0                      # the centre keeps w0^2
  target = np.zeros(shape + (1,), np.float32)

  def readout(out):
    centre = out[:, 10, 10, 0]
    return dict(centre=centre, blurred=centre < 1)

  host = readout(host_outputs(image, target, cfg))
  device = readout(device_outputs(image, target, cfg))
  compare(host, device, [('blurred', 'rate')])
  assert_same_distribution(host['centre'][host['blurred']],
                           device['centre'][device['blurred']], 'blur centre')


def test_noise_draws_the_host_distribution():
  cfg = augment.AugmentConfig(flip_prob=0.0, cutout_prob=0.0, noise_prob=0.5)
  image = np.zeros((16, 16, 2), np.float32)
  target = np.zeros((16, 16, 1), np.float32)

  def readout(out):
    flat = out.reshape(len(out), -1)
    return dict(noisy=np.abs(flat).max(1) > 0, mean=flat.mean(1),
                var=flat.var(1), voxel=flat[:, 0])

  host = readout(host_outputs(image, target, cfg))
  device = readout(device_outputs(image, target, cfg))
  compare(host, device, [('noisy', 'rate')])
  for name in ('mean', 'var', 'voxel'):
    assert_same_distribution(host[name][host['noisy']],
                             device[name][device['noisy']], name)


def test_the_comparison_rejects_a_different_rotation_range():
  """Power: 15 against 20 degrees is caught by the same test."""
  shape = (20, 22)
  host_cfg = augment.AugmentConfig(**_OFF, rotate_prob=1.0)
  device_cfg = augment.AugmentConfig(**_OFF, rotate_prob=1.0,
                                     rotate_degrees=20.0)
  image, target = ramps(shape), np.zeros(shape + (1,), np.float32)
  host = spatial_stats(host_outputs(image, target, host_cfg, n=500))
  device = spatial_stats(device_outputs(image, target, device_cfg, n=500))
  with pytest.raises(AssertionError, match='KS p='):
    assert_same_distribution(host['angle'], device['angle'], 'angle')


# ---------------------------------------------------------------- placement --

def test_where_resolves_by_backend_and_rejects_unknown_values():
  assert dev.placement('auto', 'cpu') == 'host'
  assert dev.placement('auto', 'gpu') == 'device'
  assert dev.placement('auto', 'tpu') == 'device'
  assert dev.placement('auto') == ('host' if jax.default_backend() == 'cpu'
                                   else 'device')
  assert dev.placement('device', 'cpu') == 'device'
  assert dev.placement('host', 'gpu') == 'host'
  with pytest.raises(InputError, match='config.augment.where'):
    dev.placement('gpu')
  config = config_base.get_config()
  assert config.augment.where == 'auto'
  cfg, where = dev.from_config(config.augment)
  assert where == 'auto' and cfg == augment.AugmentConfig()


def test_device_loader_cuts_the_host_loaders_patches(tmp_path):
  """'device' drops the chain from the loader but not the patch draws."""
  from jaxseg.data import pipeline
  rng = np.random.default_rng(0)
  split = pipeline.PreparedSplit(
      images=rng.normal(size=(3, 12, 16, 16, 2)).astype(np.float32),
      targets=(rng.random((3, 12, 16, 16, 3)) < 0.05).astype(np.uint8),
      slices=[('a', -1), ('b', -1), ('c', -1)], records=np.arange(3))
  pipeline.write_splits({'train': split}, str(tmp_path / 'data'))
  source = pipeline.SliceSource(str(tmp_path / 'data' / 'train'))
  identity = augment.AugmentConfig(flip_prob=0.0, cutout_prob=0.0,
                                   noise_prob=0.0)

  def batches(cfg):
    it = iter(pipeline.train_loader(
        source, global_batch_size=2, seed=1, augment=cfg,
        patch_size=(8, 8, 8), foreground_fraction=0.5, label_mode='regions',
        read_ahead=4))
    return [next(it) for _ in range(6)]

  for a, b in zip(batches(identity), batches(None)):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['target'], b['target'])


def test_train_step_keys_are_the_samples_rows():
  """Sample i of step s: fold_in(fold_in(root, s), i), whatever the batch."""
  root = jax.random.key(3)
  keys = dev.sample_keys(root, 7, 5)
  expected = [jax.random.fold_in(jax.random.fold_in(root, 7), i)
              for i in range(5)]
  for k, e in zip(keys, expected):
    np.testing.assert_array_equal(jax.random.key_data(k),
                                  jax.random.key_data(e))
  # A larger batch extends the keys; the first rows keep theirs.
  np.testing.assert_array_equal(
      jax.random.key_data(dev.sample_keys(root, 7, 8)[:5]),
      jax.random.key_data(keys))
  assert not np.array_equal(jax.random.key_data(dev.sample_keys(root, 8, 5)),
                            jax.random.key_data(keys))


@pytest.mark.slow
def test_train_step_augments_on_the_device():
  """train_step(augment=cfg) = train_step on the device-augmented batch."""
  import ml_collections
  from jaxseg import losses
  from jaxseg.training import optim
  from jaxseg.models.resunet import ResUNet
  model = ResUNet(num_classes=1, widths=(4, 8), depths=(1, 1),
                  decoder_widths=(4,), decoder_depths=(1,))
  tx = optim.build(ml_collections.ConfigDict(dict(name='sgd',
                                                  learning_rate=0.1)))
  state = state_lib.create_train_state(model, tx, jax.random.key(0), (16, 16, 2))
  rng = np.random.default_rng(0)
  batch = dict(image=jnp.asarray(rng.normal(size=(4, 16, 16, 2)), jnp.float32),
               target=jnp.asarray(rng.random((4, 16, 16, 1)) > 0.7,
                                  jnp.float32),
               weight=jnp.ones(4, jnp.float32))
  cfg = augment.AugmentConfig(flip_prob=0.5, cutout_prob=0.5, noise_prob=0.5,
                              rotate_prob=0.5)
  loss_fn = losses.build(ml_collections.ConfigDict(dict(name='bce')))
  step = functools.partial(step_lib.train_step, loss_fn=loss_fn,
                           activation='sigmoid')
  key = jax.random.key(1)
  augmented_step = jax.jit(functools.partial(step, augment=cfg))
  plain_step = jax.jit(step)
  a, metrics_a = augmented_step(state, batch, key)
  augmented = jax.jit(functools.partial(dev.augment_train_batch, cfg=cfg))(
      batch, key, state.step)
  assert not np.array_equal(augmented['image'], batch['image'])
  b, metrics_b = plain_step(state, augmented, key)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(metrics_a.compute()['loss'],
                             metrics_b.compute()['loss'], rtol=1e-6)
  # The next step draws new augmentations.
  again = jax.jit(functools.partial(dev.augment_train_batch, cfg=cfg))(
      batch, key, state.step + 1)
  assert not np.array_equal(again['image'], augmented['image'])


@pytest.mark.slow
def test_device_augmentation_does_not_depend_on_the_mesh():
  """1, 4 and 2x2 (data, spatial) CPU devices augment a batch alike."""
  import json
  import os
  import subprocess
  import sys
  from pathlib import Path
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        ' --xla_force_host_platform_device_count=4').strip())
  script = Path(__file__).with_name('multidevice_augment.py')
  out = subprocess.run([sys.executable, str(script)], env=env, check=True,
                       capture_output=True, text=True, timeout=600)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  # The same draws: images within float rounding (a sharded program may
  # fuse differently: 2.4e-7 measured in 3D, 0 in 2D), targets (nearest
  # neighbour) the same but for a coordinate that rounds across a tie.
  for name, meshes in (('2d', ('four',)), ('3d', ('four', 'data_spatial'))):
    assert result[name]['changed'] > 0.5, result        # it did augment
    for mesh in meshes:
      image_diff, target_share = result[name][mesh]
      assert image_diff < 1e-5 and target_share < 1e-3, (name, mesh, result)
