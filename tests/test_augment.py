"""Seed-002 augmentation: probabilities, cut-out sizes, noise moments, determinism."""

import numpy as np

from jaxseg.data import augment


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
