"""Preprocessing: crop/paste round trip, label conventions, z-score statistics."""

import numpy as np

from jaxseg.data import preprocess


def _brain(shape=(40, 50, 6, 2), seed=0):
  rng = np.random.default_rng(seed)
  image = np.zeros(shape, np.float32)
  image[8:30, 5:41] = rng.normal(100, 20, (22, 36) + shape[2:])
  return image


def test_crop_box_is_the_centred_square_around_the_brain():
  image = _brain()
  box = preprocess.CropBox.around_brain(image)
  # Brain rows 8..29 (22), columns 5..40 (36): the square side is 36.
  assert box.size == 36
  cropped = box.crop(image)
  assert cropped.shape == (36, 36, 6, 2)
  # Every brain voxel survives the crop.
  assert np.count_nonzero(cropped) == np.count_nonzero(image)


def test_paste_undoes_crop_even_when_the_box_leaves_the_image():
  image = np.zeros((20, 60, 3, 1), np.float32)
  image[:, 2:58] = 1.0          # 20 rows x 56 columns: the box overhangs rows
  box = preprocess.CropBox.around_brain(image)
  assert box.size == 56 and box.x0 < 0
  np.testing.assert_array_equal(box.paste(box.crop(image)), image)


def test_slices_to_volume_inverts_case_to_slices_at_full_resolution():
  image = _brain()
  box = preprocess.CropBox.around_brain(image)
  stack = preprocess.case_to_slices(image, None, image_size=box.size,
                                    label_mode='binary')
  back = preprocess.slices_to_volume(stack.images, stack.box)
  np.testing.assert_allclose(back, preprocess.zscore(image), atol=1e-5)


def test_zscore_is_over_brain_voxels_and_keeps_background_zero():
  image = _brain()
  out = preprocess.zscore(image)
  brain = preprocess.brain_mask(image)
  np.testing.assert_allclose(out[brain].mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(out[brain].std(0), 1.0, atol=1e-4)
  assert np.all(out[~brain] == 0)


def test_dataset_statistics_pool_the_brain_voxels_of_the_given_cases():
  a, b = _brain(seed=1), _brain(seed=2) * 3
  mean, std = preprocess.dataset_statistics([a, b])
  pooled = np.concatenate([a[preprocess.brain_mask(a)], b[preprocess.brain_mask(b)]])
  np.testing.assert_allclose(mean, pooled.mean(0), rtol=1e-5)
  np.testing.assert_allclose(std, pooled.std(0), rtol=1e-4)
