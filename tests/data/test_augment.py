"""Augmentation: seed-002 probabilities, cut-out sizes, noise moments and
determinism; rotation/scaling against np.rot90 and scipy.ndimage.rotate;
elastic deformation against the affine path, scipy.ndimage.shift and the
per-voxel definition; blur against a hand-built kernel and
scipy.ndimage.gaussian_filter; intensity and gamma by hand;
foreground-centred patches."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from jaxseg.data import augment
from jaxseg.errors import InputError


def _slice():
  image = np.arange(32 * 32 * 2, dtype=np.float32).reshape(32, 32, 2) + 1
  target = (np.arange(32 * 32).reshape(32, 32, 1) % 7 == 0).astype(np.float32)
  return image, target


def test_flip_rate_matches_the_configured_probability():
  cfg = augment.AugmentConfig(flip_prob=0.25, cutout_prob=0, noise_prob=0)
  image, target = _slice()
  rng = np.random.default_rng(0)
  flips, n = 0, 4000
  for _ in range(n):
    out, out_t = augment.augment_slice(image, target, cfg, rng)
    flipped_x = np.array_equal(out, image[::-1]) or np.array_equal(out, image[::-1, ::-1])
    flips += flipped_x
    # The label moves with the image.
    assert np.array_equal(out_t[..., 0] != 0, np.isin(out[..., 0], image[..., 0][target[..., 0] != 0]))
  # P(flip in x) = 0.25; 4000 draws: standard error 0.007.
  assert abs(flips / n - 0.25) < 0.03


def test_cutout_patches_are_within_limits_and_spare_the_label():
  image, target = _slice()
  rng = np.random.default_rng(1)
  for _ in range(200):
    out = augment.cutout(image, rng, max_patches=6, max_area=0.2)
    zeroed = (out == 0).all(-1)
    # At most 6 patches of at most 20 % each: at most 120 % of the image.
    assert zeroed.mean() <= 1.2
    assert zeroed.any()
  cfg = augment.AugmentConfig(flip_prob=0, cutout_prob=1.0, noise_prob=0)
  _, out_t = augment.augment_slice(image, target, cfg, rng)
  np.testing.assert_array_equal(out_t, target)


def test_single_patch_never_exceeds_max_area():
  image, _ = _slice()
  rng = np.random.default_rng(2)
  for _ in range(300):
    out = augment.cutout(image, rng, max_patches=1, max_area=0.2)
    assert (out == 0).all(-1).mean() <= 0.2 + 1 / 32   # rounding of one side


def test_noise_has_the_study_mean_and_variance():
  cfg = augment.AugmentConfig(flip_prob=0, cutout_prob=0, noise_prob=1.0)
  image = np.zeros((128, 128, 4), np.float32)
  out, _ = augment.augment_slice(image, np.zeros((128, 128, 1)), cfg,
                                 np.random.default_rng(3))
  assert abs(out.mean() - 0.05) < 0.01
  assert abs(out.var() - 0.1) < 0.005


def test_same_generator_seed_same_augmentation():
  cfg = augment.AugmentConfig(flip_prob=0.5, cutout_prob=0.5, noise_prob=0.5)
  image, target = _slice()
  a = augment.augment_slice(image, target, cfg, np.random.default_rng(7))
  b = augment.augment_slice(image, target, cfg, np.random.default_rng(7))
  np.testing.assert_array_equal(a[0], b[0])


# ------------------------------------------------ rotation, scaling, affine --

def _random_pair(shape, rng, channels=2, classes=3):
  image = rng.normal(size=shape + (channels,)).astype(np.float32)
  target = (rng.random(shape + (classes,)) < 0.4).astype(np.float32)
  return image, target


def _nested_target(shape, rng):
  """WT > TC > ET: three nested random blobs (K = 3)."""
  field = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
  levels = np.quantile(field, [0.6, 0.8, 0.93])
  return np.stack([field > t for t in levels], -1).astype(np.float32)


@pytest.mark.parametrize('n', [7, 8])
@pytest.mark.parametrize('k', [-1, 1, 2, 3])
def test_multiples_of_90_degrees_in_2d_are_rot90(n, k):
  image, target = _random_pair((n, n), np.random.default_rng(n + k))
  matrix = augment.centred_affine(augment.rotation([90 * k]), (n, n))
  out, out_t = augment.apply_affine(image, target, matrix)
  # Exact: the centre (n - 1) / 2 maps the grid onto itself, odd or even n.
  np.testing.assert_array_equal(out, np.rot90(image, k, axes=(0, 1)))
  np.testing.assert_array_equal(out_t, np.rot90(target, k, axes=(0, 1)))


@pytest.mark.parametrize('n', [5, 6])
@pytest.mark.parametrize('axis', [0, 1, 2])
@pytest.mark.parametrize('k', [1, 2])
def test_90_degrees_about_each_3d_axis_is_rot90(n, axis, k):
  image, target = _random_pair((n, n, n), np.random.default_rng(axis))
  angles = [0.0, 0.0, 0.0]
  angles[axis] = 90.0 * k
  plane = tuple(a for a in range(3) if a != axis)
  out, out_t = augment.apply_affine(
      image, target, augment.centred_affine(augment.rotation(angles), (n,) * 3))
  np.testing.assert_array_equal(out, np.rot90(image, k, axes=plane))
  np.testing.assert_array_equal(out_t, np.rot90(target, k, axes=plane))


def test_3d_angles_compose_with_the_last_axis_first():
  image, target = _random_pair((6, 6, 6), np.random.default_rng(3))
  matrix = augment.centred_affine(augment.rotation([90, 90, 0]), (6, 6, 6))
  out, _ = augment.apply_affine(image, target, matrix)
  # R0 @ R1: first 90 degrees about axis 1 (plane 0, 2), then about axis 0.
  expected = np.rot90(np.rot90(image, 1, axes=(0, 2)), 1, axes=(1, 2))
  np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('shape', [(9, 12), (5, 6, 7)])
def test_unit_scale_and_zero_rotation_is_the_identity(shape):
  image, target = _random_pair(shape, np.random.default_rng(4))
  cfg = augment.AugmentConfig(rotate_prob=1.0, rotate_degrees=0.0,
                              scale_prob=1.0, scale_range=0.0)
  matrix = augment.random_affine(shape, np.random.default_rng(5), cfg)
  np.testing.assert_array_equal(matrix, np.eye(len(shape) + 1))
  out, out_t = augment.apply_affine(image, target, matrix)
  np.testing.assert_array_equal(out, image)
  np.testing.assert_array_equal(out_t, target)


def test_scale_above_one_magnifies_about_the_centre():
  image, target = _random_pair((9, 9), np.random.default_rng(6))
  out, out_t = augment.apply_affine(
      image, target, augment.centred_affine(2.0 * np.eye(2), (9, 9)))
  # Hand-worked: output voxel 4 + 2i reads input voxel 4 + i (centre 4).
  picks = np.arange(0, 9, 2)
  np.testing.assert_array_equal(out[np.ix_(picks, picks)], image[2:7, 2:7])
  np.testing.assert_array_equal(out_t[np.ix_(picks, picks)], target[2:7, 2:7])


@pytest.mark.parametrize('degrees', [17.0, -33.0])
def test_in_plane_rotation_matches_scipy_rotate(degrees):
  image, target = _random_pair((21, 30), np.random.default_rng(7))
  out, out_t = augment.apply_affine(
      image, target,
      augment.centred_affine(augment.rotation([degrees]), (21, 30)))
  def rotate(x, order):
    return np.stack([ndimage.rotate(x[..., c], degrees, axes=(0, 1),
                                    reshape=False, order=order)
                     for c in range(x.shape[-1])], -1)
  np.testing.assert_allclose(out, rotate(image, 1), atol=1e-5)
  np.testing.assert_array_equal(out_t, rotate(target, 0))
  # 3D, about axis 0: scipy's rotation in the plane (1, 2) of every slice.
  vol, vol_t = _random_pair((4, 15, 18), np.random.default_rng(8))
  out, out_t = augment.apply_affine(
      vol, vol_t,
      augment.centred_affine(augment.rotation([degrees, 0, 0]), (4, 15, 18)))
  expected = np.stack([ndimage.rotate(vol[..., c], degrees, axes=(1, 2),
                                      reshape=False, order=1)
                       for c in range(2)], -1)
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_nearest_target_resample_matches_per_channel_scipy():
  target = _nested_target((14, 16, 18), np.random.default_rng(9))
  matrix = augment.centred_affine(
      1.07 * augment.rotation([12.0, -9.0, 5.0]), target.shape[:-1])
  _, out_t = augment.apply_affine(target[..., :1], target, matrix)
  expected = np.stack([ndimage.affine_transform(target[..., k], matrix, order=0)
                       for k in range(3)], -1)
  np.testing.assert_array_equal(out_t, expected)


def test_random_affine_draws_angles_and_factors_in_range():
  cfg = augment.AugmentConfig(rotate_prob=1.0, scale_prob=1.0)
  rng = np.random.default_rng(10)
  angles, factors = [], []
  for _ in range(300):
    pull = augment.random_affine((32, 32), rng, cfg)[:2, :2]
    forward = np.linalg.inv(pull)
    factors.append(np.sqrt(abs(np.linalg.det(forward))))
    angles.append(np.degrees(np.arctan2(forward[1, 0], forward[0, 0])))
  assert -15 <= min(angles) < -14 and 14 < max(angles) <= 15
  assert 0.95 <= min(factors) < 0.96 and 1.04 < max(factors) <= 1.05
  forward = np.linalg.inv(augment.random_affine((8, 8, 8), rng, cfg)[:3, :3])
  s = np.cbrt(np.linalg.det(forward))
  np.testing.assert_allclose(forward.T @ forward, s * s * np.eye(3), atol=1e-12)
  none = augment.AugmentConfig(rotate_prob=0.0, scale_prob=0.0)
  assert augment.random_affine((8, 8), rng, none) is None


@pytest.mark.parametrize('shape', [(24, 24), (12, 14, 16)])
def test_targets_stay_binary_and_nested_after_random_affines(shape):
  rng = np.random.default_rng(11)
  target = _nested_target(shape, rng)
  image = rng.normal(size=shape + (4,)).astype(np.float32)
  cfg = augment.AugmentConfig(rotate_prob=1.0, scale_prob=1.0,
                              rotate_degrees=40.0, scale_range=0.3)
  moved = 0
  for _ in range(10):
    out, out_t = augment.augment_slice(image, target, cfg, rng)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out_t.shape == target.shape and out_t.dtype == np.float32
    assert set(np.unique(out_t)) <= {0.0, 1.0}
    wt, tc, et = np.moveaxis(out_t, -1, 0)
    assert (et <= tc).all() and (tc <= wt).all()
    assert out_t[..., 2].any()          # something survived to compare
    moved += not np.array_equal(out_t, target)
  assert moved == 10


# ---------------------------------------------------------------- intensity --

def test_scale_shift_by_hand():
  image = np.array([[[1.0, -2.0], [0.0, 4.0]]], np.float32)   # (1, 2, C=2)
  out = augment.scale_shift(image, np.array([2.0, 0.5]), np.array([1.0, -1.0]))
  np.testing.assert_array_equal(out, [[[3.0, -2.0], [1.0, 1.0]]])
  assert out.dtype == np.float32


def test_intensity_draws_one_scale_and_shift_per_channel():
  cfg = augment.AugmentConfig(flip_prob=0, cutout_prob=0, noise_prob=0,
                              intensity_prob=1.0)
  # Pixel 0 is 0 and pixel 1 is 1 in both channels: out = (shift, scale + shift).
  image = np.array([[[0.0, 0.0], [1.0, 1.0]]], np.float32)
  rng = np.random.default_rng(12)
  draws = []
  for _ in range(2000):
    out, _ = augment.augment_slice(image, np.zeros((1, 2, 1)), cfg, rng)
    draws.append((out[0, 1] - out[0, 0], out[0, 0]))
  scale, shift = np.moveaxis(np.array(draws), 1, 0)       # (n, C) each
  assert 0.9 <= scale.min() < 0.905 and 1.095 < scale.max() <= 1.1 + 1e-6
  assert -0.1 <= shift.min() < -0.095 and 0.095 < shift.max() <= 0.1
  # U(-a, a): variance a^2 / 3; the two channels draw independently.
  np.testing.assert_allclose(scale.var(0), 0.01 / 3, rtol=0.1)
  np.testing.assert_allclose(shift.var(0), 0.01 / 3, rtol=0.1)
  assert abs(np.corrcoef(scale.T)[0, 1]) < 0.1


def test_gamma_by_hand():
  image = np.stack([np.array([0.0, 1.0, 2.0, 4.0]),       # gamma 2
                    np.array([-1.0, 0.0, 1.0, 1.0]),      # gamma 0.5
                    np.full(4, 3.0)], -1)[None]           # constant: kept
  out = augment.gamma(image.astype(np.float32), np.array([2.0, 0.5, 2.0]))
  # (x - min) / (max - min) ** gamma * (max - min) + min:
  expected = np.stack([[0.0, 0.25, 1.0, 4.0],
                       [-1.0, 2 * np.sqrt(0.5) - 1, 1.0, 1.0],
                       [3.0, 3.0, 3.0, 3.0]], -1)[None]
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_random_gamma_keeps_min_max_and_order_and_draws_in_range():
  cfg = augment.AugmentConfig(flip_prob=0, cutout_prob=0, noise_prob=0,
                              gamma_prob=1.0)
  rng = np.random.default_rng(13)
  image = rng.normal(size=(20, 20, 2)).astype(np.float32)
  image[0, 0] = [-3.0, -3.0]          # min-max: -3 and 5, so ...
  image[0, 1] = [5.0, 5.0]
  image[0, 2] = [1.0, 1.0]            # ... this pixel sits at 0.5
  gammas = []
  for _ in range(300):
    out, _ = augment.augment_slice(image, np.zeros((20, 20, 1)), cfg, rng)
    np.testing.assert_allclose(out.min((0, 1)), image.min((0, 1)), rtol=1e-6)
    np.testing.assert_allclose(out.max((0, 1)), image.max((0, 1)), rtol=1e-6)
    for c in range(2):
      np.testing.assert_array_equal(np.argsort(out[..., c], None, 'stable'),
                                    np.argsort(image[..., c], None, 'stable'))
    gammas.append(np.log((out[0, 2] + 3) / 8) / np.log(0.5))
  gammas = np.array(gammas)
  assert 0.7 - 1e-4 <= gammas.min() < 0.72 and 1.48 < gammas.max() <= 1.5 + 1e-4
  assert abs(np.corrcoef(gammas.T)[0, 1]) < 0.2       # one gamma per channel


# ----------------------------------------------- order and the old stream --

def _seed002_chain(image, target, cfg, rng):
  """augment_slice as it was before the affine/intensity/gamma steps."""
  for axis in range(image.ndim - 1):
    if rng.random() < cfg.flip_prob:
      image, target = np.flip(image, axis), np.flip(target, axis)
  if rng.random() < cfg.cutout_prob:
    image = augment.cutout(image, rng, cfg.cutout_max_patches,
                           cfg.cutout_max_area)
  if rng.random() < cfg.noise_prob:
    image = image + rng.normal(cfg.noise_mean, np.sqrt(cfg.noise_variance),
                               image.shape).astype(np.float32)
  return image, target


@pytest.mark.parametrize('shape', [(16, 20), (6, 8, 10)])
def test_new_steps_off_give_the_old_stream_and_outputs(shape):
  cfg = augment.AugmentConfig(flip_prob=0.5, cutout_prob=0.5, noise_prob=0.5)
  image, target = _random_pair(shape, np.random.default_rng(14))
  for seed in range(20):
    rng, old_rng = np.random.default_rng(seed), np.random.default_rng(seed)
    out = augment.augment_slice(image, target, cfg, rng)
    old = _seed002_chain(image, target, cfg, old_rng)
    np.testing.assert_array_equal(out[0], old[0])
    np.testing.assert_array_equal(out[1], old[1])
    assert rng.random() == old_rng.random()


def test_chain_order_affine_then_cutout_then_intensity():
  # Image values >= 10 and a label of ones. Affine first: linear
  # interpolation inside the array keeps values >= 10 and 0 outside it; then
  # cut-out boxes of exact 0; then a shift moves every 0 to one value per
  # channel. Cut-out before the affine would interpolate the box edges into
  # values between 0 and 10; a shift before cut-out would leave 0s.
  cfg = augment.AugmentConfig(flip_prob=0, cutout_prob=1.0, noise_prob=0,
                              rotate_prob=1.0, rotate_degrees=45.0,
                              scale_prob=1.0, scale_range=0.3,
                              intensity_prob=1.0, intensity_shift=0.5)
  rng = np.random.default_rng(15)
  image = (np.abs(rng.normal(size=(24, 24, 2))) + 10.0).astype(np.float32)
  for _ in range(5):
    out, _ = augment.augment_slice(image, np.ones((24, 24, 1)), cfg, rng)
    low = out[..., 0] < 5
    assert low.any() and (out[..., 0] > 5).any()
    for c in range(2):
      values = np.unique(out[..., c][low])
      assert values.size == 1 and values[0] != 0


# ------------------------------------------------------ foreground patches --

def _coordinate_volume(shape):
  """Image channels = voxel coordinates, so a patch tells where it was cut."""
  return np.moveaxis(np.indices(shape), 0, -1).astype(np.float32)


def _blob_target(shape, corner_voxel=True):
  target = np.zeros(shape + (2,), np.float32)
  target[10:13, 8:11, 9:12, 0] = 1
  target[11, 9, 10, 1] = 1
  if corner_voxel:
    target[0, 1, shape[2] - 1, 0] = 1     # a centred patch here is clipped
  return target


def test_foreground_patches_contain_foreground_centred_unless_clipped():
  shape, patch = (20, 22, 24), (8, 6, 7)
  image, target = _coordinate_volume(shape), _blob_target(shape)
  crop = augment.RandomPatch(patch, foreground_fraction=1.0)
  rng = np.random.default_rng(17)
  clipped = 0
  for _ in range(200):
    out = crop.random_map(dict(image=image, target=target), rng)
    assert out['image'].shape == patch + (3,)
    start = out['image'][0, 0, 0].astype(int)
    np.testing.assert_array_equal(out['target'], target[tuple(
        slice(a, a + p) for a, p in zip(start, patch))])
    assert out['target'].any()
    centre = tuple(start + np.array(patch) // 2)
    inside = all(0 < a < n - p for a, p, n in zip(start, patch, shape))
    if inside:
      assert target[centre].any()
    clipped += not inside
  assert 0 < clipped < 200               # the corner voxel was drawn


def test_foreground_channels_select_the_classes():
  shape, patch = (20, 22, 24), (4, 4, 4)
  image = _coordinate_volume(shape)
  tumour = _blob_target(shape, corner_voxel=False)[..., 0]
  onehot = np.stack([1 - tumour, tumour], -1)     # channel 0: background
  crop = augment.RandomPatch(patch, foreground_fraction=1.0,
                             foreground_channels=slice(1, None))
  rng = np.random.default_rng(18)
  for _ in range(50):
    start = crop.random_map(dict(image=image, target=onehot), rng)[
        'image'][0, 0, 0].astype(int)
    assert tumour[tuple(start + 2)] == 1


def test_zero_foreground_fraction_draws_the_old_uniform_patch():
  shape, patch = (20, 22, 24), (8, 6, 7)
  image, target = _coordinate_volume(shape), _blob_target(shape)
  for fraction in (0.0, 0.5):
    crop = augment.RandomPatch(patch, foreground_fraction=fraction)
    for seed in range(10):
      out = crop.random_map(dict(image=image, target=target),
                            np.random.default_rng(seed))
      rng = np.random.default_rng(seed)
      if fraction and rng.random() < fraction:
        continue                             # a foreground draw
      start = [rng.integers(0, n - p + 1) for n, p in zip(shape, patch)]
      np.testing.assert_array_equal(out['image'][0, 0, 0], start)


def test_record_without_foreground_falls_back_to_uniform():
  shape, patch = (10, 10, 10), (4, 4, 4)
  crop = augment.RandomPatch(patch, foreground_fraction=1.0)
  out = crop.random_map(dict(image=_coordinate_volume(shape),
                             target=np.zeros(shape + (3,), np.float32)),
                        np.random.default_rng(19))
  rng = np.random.default_rng(19)
  rng.random()
  start = [rng.integers(0, 7) for _ in range(3)]
  np.testing.assert_array_equal(out['image'][0, 0, 0], start)


def test_a_third_of_the_patches_are_centred_on_the_tumour():
  shape, patch = (30, 30, 30), (9, 9, 9)
  image = _coordinate_volume(shape)
  target = np.zeros(shape + (1,), np.float32)
  target[15, 14, 16] = 1                    # one voxel: centred <=> start
  crop = augment.RandomPatch(patch, foreground_fraction=0.33)
  rng = np.random.default_rng(20)
  n, centred = 1500, 0
  for _ in range(n):
    start = crop.random_map(dict(image=image, target=target), rng)[
        'image'][0, 0, 0]
    centred += np.array_equal(start, [11, 10, 12])
  # A uniform patch lands there with p = 1/22^3; standard error 0.012.
  assert abs(centred / n - 0.33) < 0.04


# ------------------------------------------------------------------ elastic --

@pytest.mark.parametrize('shape', [(21, 30), (9, 12, 14)])
def test_elastic_with_a_zero_field_is_the_affine_path_exactly(shape):
  rng = np.random.default_rng(30)
  image, target = _random_pair(shape, rng)
  d = len(shape)
  zero = np.zeros((d,) + shape, np.float32)
  for degrees in ([17.0], [90.0], [12.0, -9.0, 5.0], [90.0, 0.0, 90.0]):
    if len(degrees) != (1 if d == 2 else 3):
      continue
    matrix = augment.centred_affine(1.07 * augment.rotation(degrees), shape)
    out, out_t = augment.deform(image, target, matrix, zero)
    ref, ref_t = augment.apply_affine(image, target, matrix)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(out_t, ref_t)
  # alpha 0 draws a zero field; no matrix is the identity.
  field = augment.elastic_displacement(shape, rng, alpha=0.0, sigma=4.0)
  out, out_t = augment.deform(image, target, None, field)
  np.testing.assert_array_equal(out, image)
  np.testing.assert_array_equal(out_t, target)


@pytest.mark.parametrize('shift', [(2, -3), (1, 0, -2), (0.3, -1.6),
                                   (0.25, 1.5, -0.7)])
def test_a_constant_field_is_a_translation(shift):
  shape = (12, 15) if len(shift) == 2 else (8, 9, 10)
  rng = np.random.default_rng(31)
  image, target = _random_pair(shape, rng)
  field = np.stack([np.full(shape, t, np.float32) for t in shift])
  out, out_t = augment.deform(image, target, None, field)
  # Output x reads input x + t: scipy.ndimage.shift by -t, 0 outside.
  for c in range(image.shape[-1]):
    np.testing.assert_allclose(
        out[..., c], ndimage.shift(image[..., c], np.negative(shift), order=1,
                                   mode='constant'), atol=1e-6)
  for k in range(target.shape[-1]):
    np.testing.assert_array_equal(
        out_t[..., k], ndimage.shift(target[..., k], np.negative(shift),
                                     order=0, mode='constant'))
  if all(float(t).is_integer() for t in shift):     # by hand: a slice
    src = tuple(slice(max(int(t), 0), n + min(int(t), 0))
                for t, n in zip(shift, shape))
    dst = tuple(slice(max(-int(t), 0), n + min(-int(t), 0))
                for t, n in zip(shift, shape))
    expected = np.zeros_like(image)
    expected[dst] = image[src]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('shape', [(40, 44), (20, 22, 24)])
def test_elastic_labels_are_input_labels_next_to_the_displaced_point(shape):
  rng = np.random.default_rng(32)
  d = len(shape)
  labels = rng.integers(0, 9, size=shape + (1,)).astype(np.float32)
  image = rng.normal(size=shape + (1,)).astype(np.float32)
  matrix = augment.centred_affine(
      1.05 * augment.rotation([10.0] if d == 2 else [10.0, -5.0, 3.0]), shape)
  field = augment.elastic_displacement(shape, rng, alpha=40.0 if d == 2 else 120.0,
                                       sigma=3.0)         # std ~2 voxels
  assert np.abs(field).max() > 1.0              # a real deformation
  out, out_t = augment.deform(image, labels, matrix, field)
  # The displaced coordinate of every output voxel, by hand.
  grid = np.indices(shape, dtype=np.float64).reshape(d, -1)
  coords = (matrix[:d, :d] @ grid + matrix[:d, d:]).reshape((d,) + shape)
  coords += field
  inside = np.all([(c >= 0) & (c <= n - 1) for c, n in zip(coords, shape)], 0)
  assert inside.mean() > 0.5
  assert (out_t[~inside] == 0).all() and (out[~inside] == 0).all()
  low = np.floor(coords).astype(int)
  neighbours, values = [], []
  for corner in np.ndindex(*(2,) * d):
    index = tuple(np.clip(low[a] + corner[a], 0, shape[a] - 1)
                  for a in range(d))
    neighbours.append(labels[index + (0,)])
    values.append(image[index + (0,)])
  neighbours, values = np.stack(neighbours), np.stack(values)
  # Each label is one of the 2^d input labels around its point (within 1
  # voxel), and each image value lies between its neighbours' (linear).
  assert (neighbours == out_t[..., 0]).any(0)[inside].all()
  assert (out[..., 0] >= values.min(0) - 1e-5)[inside].all()
  assert (out[..., 0] <= values.max(0) + 1e-5)[inside].all()


def test_upsample_linear_by_hand_and_against_map_coordinates():
  coarse = np.array([0.0, 2.0, 4.0, 10.0], np.float32)
  # Nodes at 0, 2, 4, 6; voxels in between halfway.
  np.testing.assert_array_equal(augment.upsample_linear(coarse, 2, (7,)),
                                [0, 1, 2, 3, 4, 7, 10])
  assert augment.coarse_shape((7, 6, 1), 2) == (4, 4, 1)
  assert augment.coarse_shape((128,), 2) == (65,)
  rng = np.random.default_rng(33)
  shape, spacing = (10, 13, 7), 3
  coarse = rng.normal(size=(2,) + augment.coarse_shape(shape, spacing))
  out = augment.upsample_linear(coarse, spacing, shape)
  points = np.indices(shape, dtype=np.float64) / spacing
  for f in range(2):
    np.testing.assert_allclose(
        out[f], ndimage.map_coordinates(coarse[f], points, order=1), atol=1e-12)


def _autocorrelation(field, lag):
  a, b = field[..., :-lag], field[..., lag:]
  return np.mean(a * b) / np.sqrt(np.mean(a * a) * np.mean(b * b))


@pytest.mark.parametrize('shape', [(160, 160), (64, 64, 64)])
def test_coarse_elastic_field_has_the_statistics_of_the_definition(shape):
  alpha, sigma = 30.0, 4.0
  rng = np.random.default_rng(34)
  d = len(shape)
  # Theory for U(-1, 1) (variance 1/3) smoothed by the sampled kernel w:
  # std = alpha * sqrt(sum(w^2) ^ d / 3), away from the borders.
  x = np.arange(-16, 17)
  w = np.exp(-0.5 * x ** 2 / sigma ** 2)
  w /= w.sum()
  theory = alpha * np.sqrt((w ** 2).sum() ** d / 3)
  interior = (slice(None),) + (slice(8, -8),) * d   # 2 sigma off 'reflect'
  assert augment.elastic_spacing(sigma) == 2
  stats = {}
  for spacing in (1, 2):            # 1: per voxel, the plain definition
    fields = np.stack([
        augment.elastic_displacement(shape, rng, alpha, sigma, spacing)
        for _ in range(4 if d == 2 else 2)])
    assert fields.shape[1:] == (d,) + shape and fields.dtype == np.float32
    inner = fields[(slice(None),) + interior]
    stats[spacing] = (inner.std(), _autocorrelation(inner, 4),
                      _autocorrelation(inner, 8))
  np.testing.assert_allclose(stats[1][0], theory, rtol=0.1)
  np.testing.assert_allclose(stats[2][0], theory, rtol=0.1)
  # Correlation at sigma and 2 sigma: exp(-lag^2 / (4 sigma^2)) = 0.78, 0.37.
  np.testing.assert_allclose(stats[2][1:], stats[1][1:], atol=0.08)
  np.testing.assert_allclose(stats[1][1:], [np.exp(-0.25), np.exp(-1)],
                             atol=0.08)


# --------------------------------------------------------------------- blur --

def test_blur_of_an_impulse_is_the_truncated_gaussian_kernel():
  sigma = 1.3
  radius = int(4 * sigma + 0.5)                  # 5
  x = np.arange(-radius, radius + 1)
  kernel = np.exp(-x ** 2 / (2 * sigma ** 2))
  kernel /= kernel.sum()
  image = np.zeros((21, 23, 2), np.float32)
  image[10, 11, 0] = 1.0
  out = augment.blur(image, sigma)
  expected = np.zeros((21, 23))
  expected[10 - radius:11 + radius, 11 - radius:12 + radius] = np.outer(
      kernel, kernel)
  np.testing.assert_allclose(out[..., 0], expected, atol=1e-7)
  assert (out[..., 1] == 0).all() and out.dtype == np.float32   # per channel


@pytest.mark.parametrize('shape', [(17, 19, 3), (9, 10, 11, 2)])
def test_blur_is_gaussian_filter_per_channel(shape):
  image = np.random.default_rng(35).normal(size=shape).astype(np.float32)
  out = augment.blur(image, 0.8)
  for c in range(shape[-1]):
    np.testing.assert_allclose(out[..., c],
                               ndimage.gaussian_filter(image[..., c], 0.8),
                               atol=1e-6)


def test_random_blur_draws_one_sigma_per_sample_and_spares_the_label():
  cfg = augment.AugmentConfig(flip_prob=0, cutout_prob=0, noise_prob=0,
                              blur_prob=1.0, blur_sigma=(0.5, 1.5))
  image = np.zeros((31, 31, 2), np.float32)
  image[15, 15] = 1.0                   # an impulse in both channels
  target = (np.random.default_rng(36).random((31, 31, 3)) < 0.5).astype(
      np.float32)
  rng = np.random.default_rng(37)
  sigmas = []
  for _ in range(200):
    out, out_t = augment.augment_slice(image, target, cfg, rng)
    np.testing.assert_array_equal(out_t, target)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])  # one sigma
    # The peak of a blurred 2D impulse: 1 / (2 pi sigma^2), roughly.
    profile = out[15, :, 0] / out[15, 15, 0]
    sigmas.append(np.sqrt(-1 / (2 * np.log(profile[16]))))
  sigmas = np.array(sigmas)
  assert 0.45 < sigmas.min() < 0.6 and 1.4 < sigmas.max() < 1.55


def test_chain_order_elastic_gamma_blur_noise_on_one_stream():
  cfg = augment.AugmentConfig(flip_prob=0, cutout_prob=0, noise_prob=1.0,
                              rotate_prob=1.0, elastic_prob=1.0,
                              gamma_prob=1.0, blur_prob=1.0)
  rng = np.random.default_rng(38)
  image, target = _random_pair((20, 24), rng)
  out, out_t = augment.augment_slice(image, target, cfg,
                                     np.random.default_rng(5))
  # By hand, the documented order on the same generator.
  rng = np.random.default_rng(5)
  matrix = augment.random_affine((20, 24), rng, cfg)
  assert rng.random() < 1.0                     # elastic drawn
  field = augment.elastic_displacement((20, 24), rng, 30.0, 4.0)
  x, t = augment.deform(image, target, matrix, field)
  rng.random(3)                    # flip x, flip y, cut-out: probability 0
  rng.random()
  x = augment.gamma(x, rng.uniform(0.7, 1.5, size=2))
  rng.random()
  x = augment.blur(x, rng.uniform(0.5, 1.5))
  rng.random()
  x = x + rng.normal(0.05, np.sqrt(0.1), x.shape).astype(np.float32)
  np.testing.assert_array_equal(out, x)
  np.testing.assert_array_equal(out_t, t)


def _issue5_chain(image, target, cfg, rng):
  """augment_slice as it was before the elastic and blur steps."""
  matrix = augment.random_affine(image.shape[:-1], rng, cfg)
  if matrix is not None:
    image, target = augment.apply_affine(image, target, matrix)
  for axis in range(image.ndim - 1):
    if rng.random() < cfg.flip_prob:
      image, target = np.flip(image, axis), np.flip(target, axis)
  if rng.random() < cfg.cutout_prob:
    image = augment.cutout(image, rng, cfg.cutout_max_patches,
                           cfg.cutout_max_area)
  channels = image.shape[-1]
  if rng.random() < cfg.intensity_prob:
    image = augment.scale_shift(
        image, rng.uniform(0.9, 1.1, size=channels),
        rng.uniform(-0.1, 0.1, size=channels))
  if rng.random() < cfg.gamma_prob:
    image = augment.gamma(image, rng.uniform(0.7, 1.5, size=channels))
  if rng.random() < cfg.noise_prob:
    image = image + rng.normal(cfg.noise_mean, np.sqrt(cfg.noise_variance),
                               image.shape).astype(np.float32)
  return image, target


@pytest.mark.parametrize('shape', [(16, 20), (6, 8, 10)])
def test_elastic_and_blur_off_give_the_issue5_stream_and_outputs(shape):
  cfg = augment.AugmentConfig(flip_prob=0.5, cutout_prob=0.5, noise_prob=0.5,
                              rotate_prob=0.5, scale_prob=0.5,
                              intensity_prob=0.5, gamma_prob=0.5)
  assert cfg.elastic_prob == 0 and cfg.blur_prob == 0
  image, target = _random_pair(shape, np.random.default_rng(39))
  for seed in range(10):
    rng, old_rng = np.random.default_rng(seed), np.random.default_rng(seed)
    out = augment.augment_slice(image, target, cfg, rng)
    old = _issue5_chain(image, target, cfg, old_rng)
    np.testing.assert_array_equal(out[0], old[0])
    np.testing.assert_array_equal(out[1], old[1])
    assert rng.random() == old_rng.random()


@pytest.mark.parametrize('shape', [(32, 32), (14, 16, 18)])
def test_targets_stay_binary_and_nested_after_elastic(shape):
  rng = np.random.default_rng(40)
  target = _nested_target(shape, rng)
  image = rng.normal(size=shape + (2,)).astype(np.float32)
  cfg = augment.AugmentConfig(rotate_prob=1.0, scale_prob=1.0,
                              elastic_prob=1.0, elastic_alpha=300.0,
                              elastic_sigma=3.0, blur_prob=1.0)
  for _ in range(4):
    out, out_t = augment.augment_slice(image, target, cfg, rng)
    assert out.shape == image.shape and out.dtype == np.float32
    assert set(np.unique(out_t)) <= {0.0, 1.0}
    wt, tc, et = np.moveaxis(out_t, -1, 0)
    assert (et <= tc).all() and (tc <= wt).all() and et.any()


# ------------------------------------------------------------------- config --

@pytest.mark.parametrize('field,value', [
    ('rotate_prob', 1.5), ('gamma_prob', -0.1), ('gamma_range', (0.0, 1.5)),
    ('gamma_range', (1.5, 0.7)), ('scale_range', 1.0), ('rotate_degrees', -1),
    ('elastic_prob', 2.0), ('elastic_alpha', -1.0), ('elastic_sigma', 0.0),
    ('blur_prob', -0.5), ('blur_sigma', (0.0, 1.0)), ('blur_sigma', (2.0, 1.0)),
    ('blur_sigma', 1.0)])
def test_bad_augment_config_is_an_input_error(field, value):
  with pytest.raises(InputError, match=f'config.augment.{field}'):
    augment.AugmentConfig(**{field: value})
  with pytest.raises(InputError, match='foreground_fraction'):
    augment.RandomPatch((4, 4, 4), foreground_fraction=1.5)


def test_augment_config_mirrors_config_augment():
  from jaxseg import config_base
  from jaxseg.data import augment_device
  # 'where' (host or device) places the chain; every other key is a field.
  keys = set(config_base.get_config().augment.keys())
  fields = {f.name for f in dataclasses.fields(augment.AugmentConfig)}
  assert keys == fields | {'where'}
  cfg, where = augment_device.from_config(config_base.get_config().augment)
  assert where == 'auto'
  assert cfg.blur_sigma == (0.5, 1.5) and hash(cfg)      # a jit static
  assert augment.AugmentConfig(gamma_range=[0.7, 1.5]).gamma_range == (0.7, 1.5)
