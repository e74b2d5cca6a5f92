"""Augmentation on the device (JAX): each kernel against the host kernel or
SciPy given the same explicit parameters (matrix, displacement field,
boxes, sigma, gamma, ...), np.rot90 exactly, the drawn parameters'
ranges and rates, and the jitted batch chain (one compilation, one draw
per sample, targets kept 0/1 and nested)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxseg.data import augment
from jaxseg.data import augment_device as dev

FULL = augment.AugmentConfig(
    flip_prob=0.5, cutout_prob=0.5, noise_prob=0.5, rotate_prob=0.5,
    scale_prob=0.5, intensity_prob=0.5, gamma_prob=0.5, elastic_prob=0.5,
    blur_prob=0.5)
# One 2D shape for the chain tests: each (shape, cfg) costs a compilation.
SHAPE_2D = (24, 28)

_apply = jax.jit(dev.apply_params, static_argnums=3)
_draw = jax.jit(jax.vmap(dev.draw_params, in_axes=(0, None, None, None)),
                static_argnums=(1, 2, 3))


def _pair(shape, rng, channels=2, classes=3):
  image = ndimage.gaussian_filter(rng.normal(size=shape + (channels,)),
                                  (1,) * len(shape) + (0,)) * 3
  target = (rng.random(shape + (classes,)) < 0.4).astype(np.float32)
  return image.astype(np.float32), target


def _nested(shape, rng):
  field = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
  levels = np.quantile(field, [0.5, 0.75, 0.9])
  return np.stack([field > t for t in levels], -1).astype(np.float32)


def _near_a_tie(coords, shape, tol=1e-4):
  """Voxels whose float64 coordinate a float32 one may round differently."""
  frac = coords - np.floor(coords)
  tie = np.abs(frac - 0.5) < tol
  edge = np.stack([np.minimum(np.abs(c), np.abs(c - (n - 1))) < tol
                   for c, n in zip(coords, shape)])
  return (tie | edge).any(0)


def _assert_targets_match(out_t, host_t, coords, shape):
  differ = (np.asarray(out_t) != host_t).any(-1)
  assert not (differ & ~_near_a_tie(coords, shape)).any()
  assert differ.mean() < 1e-2


def _matrix(shape, rng, factor=1.06):
  degrees = rng.uniform(-25, 25, size=1 if len(shape) == 2 else 3)
  return augment.centred_affine(factor * augment.rotation(degrees), shape)


# ------------------------------------------------------------------ spatial --

@pytest.mark.parametrize('shape', [(21, 30), (10, 12, 14)])
def test_resample_matches_the_host_deform(shape):
  rng = np.random.default_rng(0)
  image, target = _pair(shape, rng)
  matrix = _matrix(shape, rng)
  field = augment.elastic_displacement(shape, rng, alpha=60.0 * len(shape),
                                       sigma=3.0)
  host, host_t = augment.deform(image, target, matrix, field)
  coords = dev.affine_coordinates(jnp.asarray(matrix, jnp.float32), shape)
  out, out_t = jax.jit(dev.resample)(image, target, coords + field)
  np.testing.assert_allclose(out, host, atol=2e-5)
  _assert_targets_match(out_t, host_t,
                        augment.affine_coordinates(matrix, shape) + field,
                        shape)
  # Without a field: the host's affine path.
  host, host_t = augment.apply_affine(image, target, matrix)
  out, out_t = jax.jit(dev.resample)(image, target, coords)
  np.testing.assert_allclose(out, host, atol=2e-5)
  _assert_targets_match(out_t, host_t,
                        augment.affine_coordinates(matrix, shape), shape)


@pytest.mark.parametrize('shape,angles,plane', [
    ((7, 7), [90.0], (0, 1)), ((8, 8), [-90.0], (0, 1)),
    ((6, 6, 6), [0.0, 90.0, 0.0], (0, 2)), ((5, 5, 5), [180.0, 0.0, 0.0],
                                            (1, 2))])
def test_multiples_of_90_degrees_on_the_device_are_rot90(shape, angles, plane):
  image, target = _pair(shape, np.random.default_rng(1))
  pull = dev.centred_pull(dev.rotation(jnp.asarray(angles)), 1.0, shape)
  # Snapped as the host does: cos 90 degrees is not 0 in float32.
  pull = jnp.round(pull * 1e5) / 1e5
  out, out_t = jax.jit(dev.resample)(image, target,
                                     dev.affine_coordinates(pull, shape))
  k = int(round(sum(angles) / 90))
  np.testing.assert_array_equal(out, np.rot90(image, k, axes=plane))
  np.testing.assert_array_equal(out_t, np.rot90(target, k, axes=plane))


@pytest.mark.parametrize('shape,angles', [((9, 12), [17.0]),
                                          ((5, 6, 7), [12.0, -9.0, 5.0])])
def test_device_matrix_is_the_host_centred_affine(shape, angles):
  pull = dev.centred_pull(dev.rotation(jnp.asarray(angles)), 0.97, shape)
  expected = augment.centred_affine(0.97 * augment.rotation(angles), shape)
  np.testing.assert_allclose(pull, expected, atol=2e-6)


@pytest.mark.parametrize('shape', [(40, 35), (17, 20, 23)])
def test_elastic_field_matches_the_host_given_the_same_noise(shape):
  rng = np.random.default_rng(2)
  sigma, alpha = 4.0, 30.0
  spacing = augment.elastic_spacing(sigma)
  noise = rng.uniform(-1, 1, size=(len(shape),) +
                      augment.coarse_shape(shape, spacing))
  host = augment.coarse_displacement(noise, alpha, sigma, spacing, shape)
  out = jax.jit(dev.coarse_displacement, static_argnums=(1, 2, 3, 4))(
      noise, alpha, sigma, spacing, shape)
  assert out.shape == host.shape
  np.testing.assert_allclose(out, host, atol=1e-5 * np.abs(host).max())
  coarse = rng.normal(size=(3, 5, 4)).astype(np.float32)
  np.testing.assert_allclose(dev.upsample_linear(coarse, 3, (13, 10)),
                             augment.upsample_linear(coarse, 3, (13, 10)),
                             atol=1e-6)


# --------------------------------------------------------------- intensity --

@pytest.mark.parametrize('shape', [(23, 26, 3), (11, 12, 13, 2)])
def test_blur_with_a_traced_sigma_is_gaussian_filter(shape):
  image = np.random.default_rng(3).normal(size=shape).astype(np.float32)
  blur = jax.jit(lambda x, s: dev.blur(x, s, 1.5))
  # 0.62 and 0.63 sit on both sides of a radius step (int(4 sigma + 0.5)).
  for sigma in (0.5, 0.62, 0.63, 1.0, 1.37, 1.5):
    out = blur(image, jnp.float32(sigma))
    for c in range(shape[-1]):
      np.testing.assert_allclose(
          out[..., c], ndimage.gaussian_filter(image[..., c], sigma,
                                               mode='reflect', truncate=4.0),
          atol=1e-6)


def test_gamma_and_scale_shift_match_the_host():
  rng = np.random.default_rng(4)
  image = rng.normal(size=(9, 10, 11, 3)).astype(np.float32)
  image[..., 2] = 1.5                         # a constant channel is kept
  gammas = np.array([0.7, 1.45, 1.2], np.float32)
  np.testing.assert_allclose(dev.gamma(image, gammas),
                             augment.gamma(image, gammas), atol=2e-6)
  scale, shift = rng.uniform(0.9, 1.1, 3), rng.uniform(-0.1, 0.1, 3)
  np.testing.assert_allclose(dev.scale_shift(image, scale, shift),
                             augment.scale_shift(image, scale, shift),
                             atol=1e-6)


# -------------------------------------------------- the chain, by parameters --

def _explicit_params(shape, channels, rng):
  """Parameters as draw_params returns them, chosen here."""
  d = len(shape)
  spacing = augment.elastic_spacing(FULL.elastic_sigma)
  low = np.array([[2] * d, [1] * d, [0] * d])
  high = low + np.array([[3] * d, [2] * d, [0] * d])      # 2 boxes, 1 empty
  return dict(
      matrix=_matrix(shape, rng).astype(np.float32),
      flip=np.arange(d) % 2 == 0,
      elastic=rng.uniform(-1, 1, (d,) + augment.coarse_shape(shape, spacing)),
      spatial_on=True,
      cutout_low=low.astype(np.int32), cutout_high=high.astype(np.int32),
      cutout_on=True,
      scale=rng.uniform(0.9, 1.1, channels),
      shift=rng.uniform(-0.1, 0.1, channels), intensity_on=True,
      gamma=rng.uniform(0.7, 1.5, channels), gamma_on=True,
      blur_sigma=np.float32(1.2), blur_on=True,
      noise_key=jax.random.key(0), noise_on=False)


def _host_chain(image, target, p, cfg):
  """The host kernels in the host order, with the parameters p."""
  shape = image.shape[:-1]
  spacing = augment.elastic_spacing(cfg.elastic_sigma)
  field = augment.coarse_displacement(p['elastic'], cfg.elastic_alpha,
                                      cfg.elastic_sigma, spacing, shape)
  image, target = augment.deform(image, target, p['matrix'], field)
  coords = augment.affine_coordinates(p['matrix'], shape) + field
  for a, flip in enumerate(p['flip']):
    if flip:
      image, target = np.flip(image, a), np.flip(target, a)
      coords = np.flip(coords, a + 1)
  image = image.copy()
  for lo, hi in zip(p['cutout_low'], p['cutout_high']):
    image[tuple(slice(a, b) for a, b in zip(lo, hi))] = 0.0
  image = augment.scale_shift(image, p['scale'], p['shift'])
  image = augment.gamma(image, p['gamma'])
  return augment.blur(image, float(p['blur_sigma'])), target, coords


@pytest.mark.slow
@pytest.mark.parametrize('shape', [SHAPE_2D, (10, 12, 14)])
def test_device_chain_matches_the_host_kernels_given_the_same_parameters(
    shape):
  rng = np.random.default_rng(5)
  image, target = _pair(shape, rng)
  p = _explicit_params(shape, 2, rng)
  host, host_t, coords = _host_chain(image, target, p, FULL)
  out, out_t = _apply(image, target, p, FULL)
  np.testing.assert_allclose(out, host, atol=3e-5)
  _assert_targets_match(out_t, host_t, coords, shape)


@pytest.mark.slow
def test_undrawn_steps_are_the_identity_exactly():
  image, target = _pair(SHAPE_2D, np.random.default_rng(6))
  params = _draw(jax.random.split(jax.random.key(0), 8000), SHAPE_2D, 2, FULL)
  # 10 coins of 1/2 (rotation, scaling, elastic, 2 flips, cut-out,
  # intensity, gamma, blur, noise): about 8 of 8000 samples draw none.
  none = ~np.asarray(params['spatial_on'])
  for k in ('cutout_on', 'intensity_on', 'gamma_on', 'blur_on', 'noise_on'):
    none &= ~np.asarray(params[k])
  assert none.sum() > 1
  off = {k: v[int(np.flatnonzero(none)[0])] for k, v in params.items()}
  np.testing.assert_array_equal(off['matrix'], np.eye(3))
  out, out_t = _apply(image, target, off, FULL)
  np.testing.assert_array_equal(out, image)
  np.testing.assert_array_equal(out_t, target)


# ------------------------------------------------------------------ drawing --

def test_drawn_parameters_have_the_configured_ranges_and_rates():
  n, shape = 8000, SHAPE_2D         # the batch of the test above: compiled
  params = _draw(jax.random.split(jax.random.key(1), n), shape, 2, FULL)
  p = {k: np.asarray(v) for k, v in params.items() if k != 'noise_key'}
  # Rates: 0.5 each; 8000 draws, standard error 0.006.
  for flag in ('cutout_on', 'intensity_on', 'gamma_on', 'blur_on', 'noise_on'):
    assert abs(p[flag].mean() - 0.5) < 0.03, flag
  assert np.all(np.abs(p['flip'].mean(0) - 0.5) < 0.03)
  forward = np.linalg.inv(p['matrix'][:, :2, :2].astype(np.float64))
  angle = np.degrees(np.arctan2(forward[:, 1, 0], forward[:, 0, 0]))
  factor = np.sqrt(np.abs(np.linalg.det(forward)))
  assert abs((angle == 0).mean() - 0.5) < 0.03
  assert abs((np.abs(factor - 1) < 1e-7).mean() - 0.5) < 0.03
  assert -15 - 1e-3 <= angle.min() < -14.5 and 14.5 < angle.max() <= 15 + 1e-3
  assert 0.95 - 1e-6 <= factor.min() < 0.952 and 1.048 < factor.max() <= 1.05 + 1e-6
  # Centred: the centre voxel maps onto itself.
  centre = (np.array(shape) - 1) / 2
  np.testing.assert_allclose(
      np.einsum('nij,j->ni', p['matrix'][:, :2, :2], centre) +
      p['matrix'][:, :2, 2], np.broadcast_to(centre, (n, 2)), atol=1e-4)
  elastic = np.abs(p['elastic']).reshape(n, -1).max(1)
  assert abs((elastic == 0).mean() - 0.5) < 0.03 and elastic.max() <= 1
  scale, shift = p['scale'][p['intensity_on']], p['shift'][p['intensity_on']]
  assert 0.9 <= scale.min() < 0.905 and 1.095 < scale.max() <= 1.1
  assert -0.1 <= shift.min() < -0.095 and 0.095 < shift.max() <= 0.1
  assert np.all(p['scale'][~p['intensity_on']] == 1)
  assert 0.7 <= p['gamma'].min() < 0.71 and 1.49 < p['gamma'].max() <= 1.5
  assert 0.5 <= p['blur_sigma'].min() < 0.51 and 1.49 < p['blur_sigma'].max() <= 1.5
  # Cut-out: 1..6 boxes when drawn, none otherwise, each <= 20 % (+ a side).
  sides = p['cutout_high'] - p['cutout_low']
  boxes = (sides > 0).all(-1).sum(-1)
  assert boxes[~p['cutout_on']].max() == 0
  assert boxes[p['cutout_on']].min() == 1 and boxes.max() == 6
  area = sides.prod(-1) / np.prod(shape)
  assert area.max() <= 0.2 + 1 / 24
  assert (p['cutout_low'] >= 0).all() and (p['cutout_high'] <= shape).all()


@pytest.mark.slow
def test_3d_matrices_are_scaled_rotations():
  cfg = augment.AugmentConfig(rotate_prob=0.5, scale_prob=0.5)
  params = _draw(jax.random.split(jax.random.key(2), 200), (8, 9, 10), 1, cfg)
  pull = np.asarray(params['matrix'][:, :3, :3], np.float64)
  s2 = np.einsum('nij,nij->n', pull, pull) / 3
  np.testing.assert_allclose(np.einsum('nji,njk->nik', pull, pull),
                             s2[:, None, None] * np.eye(3), atol=1e-6)
  assert 1 / 1.05 - 1e-5 <= np.sqrt(s2).min() and np.sqrt(s2).max() <= 1 / 0.95 + 1e-5


def test_a_step_with_probability_0_is_left_out():
  seed002 = augment.AugmentConfig()        # flips, cut-out, noise only
  params = jax.jit(dev.draw_params, static_argnums=(1, 2, 3))(
      jax.random.key(3), (8, 8), 2, seed002)
  assert set(params) == {'flip', 'spatial_on', 'cutout_on', 'cutout_low',
                         'cutout_high', 'noise_on', 'noise_key'}
  nothing = augment.AugmentConfig(flip_prob=0, cutout_prob=0, noise_prob=0)
  image, target = _pair((8, 8), np.random.default_rng(7))
  out, out_t = dev.augment_batch(jax.random.key(4), image[None], target[None],
                                 nothing)
  np.testing.assert_array_equal(out[0], image)
  np.testing.assert_array_equal(out_t[0], target)


# -------------------------------------------------------------- batch chain --

def _batch_2d(rng):
  """Six copies of one slice, and the nested target's copies."""
  image = rng.normal(size=SHAPE_2D + (2,)).astype(np.float32)
  target = _nested(SHAPE_2D, rng)
  return (np.broadcast_to(image, (6,) + image.shape),
          np.broadcast_to(target, (6,) + target.shape))


@pytest.mark.slow
def test_batch_chain_compiles_once_and_draws_per_sample(monkeypatch):
  dev.augment_batch.clear_cache()
  traces = []
  draw = dev.draw_params
  monkeypatch.setattr(dev, 'draw_params',
                      lambda *a, **k: traces.append(1) or draw(*a, **k))
  images, targets = _batch_2d(np.random.default_rng(8))
  outs = [dev.augment_batch(jax.random.key(k), images, targets, FULL)
          for k in range(3)]
  assert len(traces) == 1
  for out, out_t in outs:
    assert out.shape == images.shape and out_t.shape == targets.shape
    flat = np.asarray(out).reshape(6, -1)
    for i in range(6):
      for j in range(i):
        assert not np.array_equal(flat[i], flat[j])
  assert not np.array_equal(outs[0][0], outs[1][0])
  # The batch path (a lax.cond per step) equals the per-sample chain.
  monkeypatch.undo()
  params = _draw(jax.random.split(jax.random.key(0), 6), SHAPE_2D, 2, FULL)
  for i in range(6):
    out, out_t = _apply(images[i], targets[i],
                        {k: v[i] for k, v in params.items()}, FULL)
    np.testing.assert_allclose(outs[0][0][i], out, atol=1e-5)
    np.testing.assert_array_equal(outs[0][1][i], out_t)


@pytest.mark.slow
@pytest.mark.parametrize('shape', [SHAPE_2D, (12, 14, 16)])
def test_device_chain_keeps_targets_binary_nested_and_one_hot(shape):
  rng = np.random.default_rng(9)
  if len(shape) == 2:
    images, nested = _batch_2d(rng)
  else:
    images = rng.normal(size=(2,) + shape + (2,)).astype(np.float32)
    nested = np.stack([_nested(shape, rng)] * 2)
  onehot = np.concatenate([1 - nested[..., :1], nested[..., :1] -
                           nested[..., 1:2], nested[..., 1:2]], -1)
  moved = 0
  for key in range(3):
    _, out_n = dev.augment_batch(jax.random.key(key), images, nested, FULL)
    _, out_h = dev.augment_batch(jax.random.key(key), images, onehot, FULL)
    out_n, out_h = np.asarray(out_n), np.asarray(out_h)
    assert set(np.unique(out_n)) <= {0.0, 1.0}
    wt, tc, et = np.moveaxis(out_n, -1, 0)
    assert (et <= tc).all() and (tc <= wt).all() and et.any()
    total = out_h.sum(-1)             # one class inside, nothing outside
    assert set(np.unique(total)) <= {0.0, 1.0} and total.mean() > 0.4
    # Same key, same draws: the one-hot classes are the nested regions'.
    np.testing.assert_array_equal(out_h[..., 2], out_n[..., 1])
    moved += (out_n != nested).any(tuple(range(1, out_n.ndim))).sum()
  assert moved >= len(images)


def test_device_noise_has_the_study_mean_and_variance():
  cfg = augment.AugmentConfig(flip_prob=0, cutout_prob=0, noise_prob=1.0)
  out, _ = dev.augment_batch(jax.random.key(6), np.zeros((2, 96, 96, 4),
                                                         np.float32),
                             np.zeros((2, 96, 96, 1), np.float32), cfg)
  assert abs(float(out.mean()) - 0.05) < 0.01
  assert abs(float(out.var()) - 0.1) < 0.005


@pytest.mark.slow
@pytest.mark.parametrize('shape', [SHAPE_2D, (6, 7, 8)])
def test_a_batch_that_only_flips_skips_the_resample_with_the_same_values(
    shape):
  """warp_on false for every sample: the batch flips instead of resampling."""
  cfg = augment.AugmentConfig(flip_prob=0.5, cutout_prob=0.0, noise_prob=0.0,
                              rotate_prob=1e-9, elastic_prob=1e-9)
  rng = np.random.default_rng(10)
  images = rng.normal(size=(4,) + shape + (2,)).astype(np.float32)
  targets = (rng.random((4,) + shape + (3,)) < 0.3).astype(np.float32)
  draw = jax.jit(jax.vmap(dev.draw_params, in_axes=(0, None, None, None)),
                 static_argnums=(1, 2, 3))
  params = draw(jax.random.split(jax.random.key(0), 4), shape, 2, cfg)
  assert not np.any(params['warp_on']) and np.any(params['flip'])
  out, out_t = jax.jit(dev.apply_params_batch, static_argnums=3)(
      images, targets, params, cfg)
  for i in range(4):
    one = {k: v[i] for k, v in params.items()}
    image, target = _apply(images[i], targets[i], one, cfg)
    np.testing.assert_array_equal(out[i], image)
    np.testing.assert_array_equal(out_t[i], target)
    expected = images[i]
    for a in range(len(shape)):
      if one['flip'][a]:
        expected = np.flip(expected, a)
    np.testing.assert_array_equal(out[i], expected)
