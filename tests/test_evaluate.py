"""Whole-volume evaluation: the slice -> grid mapping and per-region scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import evaluate
from jaxseg import parallel


def _ellipsoid(shape, centre, radii):
  grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing='ij'), -1)
  return (((grid - centre) / radii) ** 2).sum(-1) <= 1.0


def test_predictions_return_to_the_original_grid():
  """A 'model' that predicts the brain mask must give back the brain on the grid."""
  shape = (120, 100, 10)
  brain = _ellipsoid(shape, (50, 55, 5), (40, 30, 30))
  image = np.where(brain[..., None], 1.0 + np.random.default_rng(0).random(shape + (2,)),
                   0.0).astype(np.float32)

  class FakeState:
    pass

  def predict_fn(state, images):                     # (N, 64, 64, C) -> (N, 64, 64, 1)
    return (jnp.abs(images[..., :1]) > 0).astype(jnp.float32)

  probs = evaluate.predict_volume(jax.jit(predict_fn, static_argnums=()),
                                  None, image, image_size=64, batch_size=4,
                                  mesh=parallel.make_mesh())
  assert probs.shape == shape + (1,)
  pred = probs[..., 0] > 0.5
  dice = 2 * (pred & brain).sum() / (pred.sum() + brain.sum())
  assert dice > 0.97                                   # only resampling losses
  assert not pred[:5].any() and not pred[-5:].any()    # nothing outside the box


def test_region_scores_by_hand():
  #              0  1  2  3  4  5  6  7
  true = np.array([0, 1, 2, 4, 4, 2, 0, 0])
  pred = np.array([0, 1, 2, 2, 4, 0, 0, 4])
  row = evaluate.score_case(pred, true, et_label=4, label_mode='regions')
  # WT true {1,2,3,4,5}, pred {1,2,3,4,7}: tp 4 -> 2*4/(5+5) = 0.8
  # TC true {1,3,4},     pred {1,4,7}:     tp 2 -> 2*2/(3+3) = 0.667
  # ET true {3,4},       pred {4,7}:       tp 1 -> 2*1/(2+2) = 0.5
  assert row['dice_WT'] == pytest.approx(0.8)
  assert row['dice_TC'] == pytest.approx(2 / 3)
  assert row['dice_ET'] == pytest.approx(0.5)
  assert row['recall_ET'] == pytest.approx(0.5)


def test_binary_mode_scores_whole_tumour_only():
  true = np.array([0, 1, 2, 4])
  row = evaluate.score_case(np.array([0, 1, 1, 0], np.uint8), true, 4, 'binary')
  assert set(k.split('_')[1] for k in row) == {'WT'}
  assert row['dice_WT'] == pytest.approx(2 * 2 / (2 + 3))


def test_empty_enhancing_tumour_predicted_empty_scores_one():
  # As in tcga_4mod/TCGA-DU-7294: no enhancing tumour in the label.
  true = np.array([0, 1, 2, 2])
  row = evaluate.score_case(true.copy(), true, 4, 'regions')
  assert row['dice_ET'] == 1.0
  row = evaluate.score_case(np.array([0, 1, 2, 4]), true, 4, 'regions')
  assert row['dice_ET'] == 0.0
