"""Whole-volume evaluation: the slice -> grid mapping and per-region scores."""

import numpy as np
import pytest

from jaxseg import labels
from jaxseg import config_base
from jaxseg.scoring import cases as case_scores
from jaxseg import evaluation
from jaxseg.inference import predictor
from jaxseg.data import sources
def _ellipsoid(shape, centre, radii):
  grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing='ij'), -1)
  return (((grid - centre) / radii) ** 2).sum(-1) <= 1.0


def test_predictions_return_to_the_original_grid():
  """A 'model' that predicts the brain mask must give back the brain on the grid."""
  shape = (120, 100, 10)
  brain = _ellipsoid(shape, (50, 55, 5), (40, 30, 30))
  image = np.where(brain[..., None], 1.0 + np.random.default_rng(0).random(shape + (2,)),
                   0.0).astype(np.float32)

  def predict_batch(images):                         # (N, 64, 64, C) -> (N, 64, 64, 1)
    return (np.abs(images[..., :1]) > 0).astype(np.float32)

  config = config_base.get_config()
  config.data.image_size = 64
  config.train.eval_batch_size = 4
  probs = predictor.case_probabilities(predict_batch, image, config)
  assert probs.shape == shape + (1,)
  pred = probs[..., 0] > 0.5
  dice = 2 * (pred & brain).sum() / (pred.sum() + brain.sum())
  assert dice > 0.97                                   # only resampling losses
  assert not pred[:5].any() and not pred[-5:].any()    # nothing outside the box


def test_region_scores_by_hand():
  #              0  1  2  3  4  5  6  7
  true = np.array([0, 1, 2, 4, 4, 2, 0, 0])
  pred = np.array([0, 1, 2, 2, 4, 0, 0, 4])
  row = case_scores.score_case(pred, true, scheme=labels.BRATS, label_mode='regions')
  # WT true {1,2,3,4,5}, pred {1,2,3,4,7}: tp 4 -> 2*4/(5+5) = 0.8
  # TC true {1,3,4},     pred {1,4,7}:     tp 2 -> 2*2/(3+3) = 0.667
  # ET true {3,4},       pred {4,7}:       tp 1 -> 2*1/(2+2) = 0.5
  assert row['dice_WT'] == pytest.approx(0.8)
  assert row['dice_TC'] == pytest.approx(2 / 3)
  assert row['dice_ET'] == pytest.approx(0.5)
  assert row['recall_ET'] == pytest.approx(0.5)


def test_binary_mode_scores_whole_tumour_only():
  true = np.array([0, 1, 2, 4])
  row = case_scores.score_case(np.array([0, 1, 1, 0], np.uint8), true, labels.BRATS, 'binary')
  assert set(k.split('_')[1] for k in row) == {'WT'}
  assert row['dice_WT'] == pytest.approx(2 * 2 / (2 + 3))


def test_empty_enhancing_tumour_predicted_empty_scores_one():
  # As in tcga_4mod/TCGA-DU-7294: no enhancing tumour in the label.
  true = np.array([0, 1, 2, 2])
  row = case_scores.score_case(true.copy(), true, labels.BRATS, 'regions')
  assert row['dice_ET'] == 1.0
  row = case_scores.score_case(np.array([0, 1, 2, 4]), true, labels.BRATS, 'regions')
  assert row['dice_ET'] == 0.0


# ------------------------------------------------ surface columns and output


def test_score_case_columns_and_surface_distances_by_hand():
  #                0  1  2  3  4  5  6  7
  true = np.array([0, 1, 2, 4, 4, 2, 0, 0])
  pred = np.array([0, 1, 2, 2, 4, 0, 0, 4])
  row = case_scores.score_case(pred, true, scheme=labels.BRATS, label_mode='regions',
                            spacing=(2.0,))
  assert list(row) == [f'{s}_{r}' for r in ('WT', 'TC', 'ET')
                       for s in ('dice', 'iou', 'precision', 'recall', 'hd95',
                                 'assd')]
  # ET, 2 mm voxels: true {3, 4}, pred {4, 7}; every voxel is surface.
  # d(pred->true) = [0, 3 voxels] = [0, 6] mm, d(true->pred) = [2, 0] mm.
  # hd95 = max(q95([0, 6]), q95([0, 2])) = max(5.7, 1.9) = 5.7 (linear
  # interpolation at position 0.95); assd = (0 + 6 + 2 + 0) / 4 = 2.
  assert row['hd95_ET'] == pytest.approx(5.7)
  assert row['assd_ET'] == pytest.approx(2.0)
  # WT: true {1..5}, pred {1..4, 7}: surfaces {1, 5} and {1, 4, 7};
  # d(pred->true) = [0, 1, 2] voxels, d(true->pred) = [0, 1] -> hd95
  # max(q95([0, 2, 4]) = 3.8, q95([0, 2]) = 1.9) mm; assd (0+2+4+0+2)/5 mm.
  assert row['hd95_WT'] == pytest.approx(3.8)
  assert row['assd_WT'] == pytest.approx(8 / 5)


def test_empty_enhancing_tumour_distances():
  true = np.array([0, 1, 2, 2])
  both_empty = case_scores.score_case(true.copy(), true, labels.BRATS, 'regions')
  assert both_empty['hd95_ET'] == 0.0 and both_empty['assd_ET'] == 0.0
  pred_only = case_scores.score_case(np.array([0, 1, 2, 4]), true, labels.BRATS, 'regions',
                                  spacing=(1.5,))
  # One side empty: the field-of-view diagonal, 4 voxels * 1.5 mm.
  assert pred_only['hd95_ET'] == pred_only['assd_ET'] == pytest.approx(6.0)


def test_voxel_spacing_from_the_header():
  import nibabel as nib
  from jaxseg.errors import InputError
  img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8),
                        np.diag([-1.0, 1.5, 2.5, 1.0]))
  volume = sources.Volume(image=None, label=None, affine=img.affine,
                          header=img.header, case_id='c')
  assert sources.voxel_spacing(volume, 'c.nii.gz') == (1.0, 1.5, 2.5)
  bad = img.header.copy()
  bad.set_zooms((1.0, 0.0, 1.0))
  volume.header = bad
  with pytest.raises(InputError) as info:
    sources.voxel_spacing(volume, 'c.nii.gz')
  assert info.value.where == 'c.nii.gz' and 'positive' in info.value.problem


def test_confusion_classes_and_names():

  def case(values, et):
    return sources.Case('c', {}, 'l', labels.LabelScheme(values, et))

  brats, brats23 = case((0, 1, 2, 4), 4), case((0, 1, 2, 3), 3)
  binary = case((0, 1), None)
  assert case_scores.confusion_classes([brats], 'regions') == (0, 1, 2, 4)
  assert case_scores.confusion_classes([brats23], 'multiclass') == (0, 1, 2, 3)
  assert case_scores.confusion_classes([brats], 'binary') == (0, 1)
  assert case_scores.confusion_classes([binary], 'regions') == (0, 1)
  assert case_scores.confusion_classes([brats, brats23], 'regions') == (
      0, 1, 2, 3, 4)
  assert case_scores.class_names((0, 1, 2, 4)) == ['0 BG', '1 NCR', '2 ED', '4 ET']
  assert case_scores.class_names((0, 1)) == ['0 BG', '1 tumour']
  np.testing.assert_array_equal(
      case_scores.confusion_truth(np.array([0, 1, 2, 4]), (0, 1)), [0, 1, 1, 1])


def _png_size(path):
  from PIL import Image
  with Image.open(path) as im:
    pixels = np.asarray(im.convert('L'), np.float64)
    return im.size, pixels.std()


def test_write_split_outputs(tmp_path):
  import csv
  import json
  from jaxseg import plots
  rng = np.random.default_rng(0)
  rows = []
  for i in range(7):
    row = dict(case=f'case{i}')
    for region in ('WT', 'TC', 'ET'):
      row.update({f'dice_{region}': float(rng.uniform()),
                  f'hd95_{region}': float(rng.uniform(0, 20)),
                  f'assd_{region}': float(rng.uniform(0, 5))})
    rows.append(row)
  counts = np.array([[90, 5, 3, 2], [4, 10, 1, 0], [0, 0, 0, 0], [1, 2, 3, 4]])
  result = evaluation.SplitResult(rows=rows, labels=(0, 1, 2, 4),
                                confusion=counts)
  summary = case_scores.summarize_rows(rows)
  marks = evaluation.write_split(str(tmp_path), 'val', result, summary)

  with open(tmp_path / 'val_cases.csv') as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == list(rows[0])
  saved = json.loads((tmp_path / 'val_summary.json').read_text())
  for region in ('WT', 'TC', 'ET'):
    values = np.array([float(r[f'dice_{region}']) for r in table])
    # The drawn median and mean (matplotlib's own) match the CSV's numbers.
    assert marks[region]['median'] == pytest.approx(np.median(values), abs=1e-12)
    assert marks[region]['mean'] == pytest.approx(np.mean(values), abs=1e-12)
    assert saved[f'dice_{region}']['median'] == pytest.approx(np.median(values))
    assert saved[f'hd95_{region}']['mean'] == pytest.approx(
        np.mean([float(r[f'hd95_{region}']) for r in table]))

  size, spread = _png_size(tmp_path / 'val_dice_box.png')
  w, h = plots.box_figsize(3)
  assert size == (w * plots.FIGURE_DPI, h * plots.FIGURE_DPI) and spread > 0
  size, spread = _png_size(tmp_path / 'val_confusion.png')
  w, h = plots.confusion_figsize(4)
  assert size == (w * plots.FIGURE_DPI, h * plots.FIGURE_DPI) and spread > 0
  assert not list(tmp_path.glob('*.tmp.png'))


def test_row_normalize():
  from jaxseg import plots
  got = plots.row_normalize([[3, 1], [0, 0], [0, 5]])
  np.testing.assert_array_equal(got, [[0.75, 0.25], [0, 0], [0, 1]])


# ------------------------------------------------- BraTS 2023 lesion-wise


def test_lesion_wise_columns_equal_the_official_numbers(shared_data):
  """TCGA-FG-6692, algorithm isen-20 vs the majority vote: one 46-voxel
  oedema blob away from the tumour halves the lesion-wise WT Dice. The
  numbers are those of the official BraTS 2023 code (tests/scoring/test_lesionwise.py)."""
  import nibabel as nib
  folder = shared_data / 'tcga_4mod' / 'TCGA-FG-6692'
  true = np.asarray(nib.load(folder / 'TCGA-FG-6692_seg.nii.gz').dataobj).astype(np.uint8)
  (algo,) = sorted((folder / 'algorithms').glob('*isen*'))
  pred = np.asarray(nib.load(algo).dataobj).astype(np.uint8)
  row = case_scores.score_case(pred, true, labels.BRATS, 'regions', spacing=(1.0, 1.0, 1.0))
  assert row['dice_WT'] == pytest.approx(0.91395, abs=5e-6)
  assert row['lesion_dice_WT'] == pytest.approx(0.45729, abs=5e-6)
  assert row['lesion_hd95_WT'] == pytest.approx(190.5, abs=1e-3)
  assert row['lesion_fp_WT'] == 1 and row['lesion_fn_WT'] == 0
  assert row['lesion_dice_TC'] == pytest.approx(0.96692, abs=5e-6)
  assert row['lesion_dice_ET'] == pytest.approx(0.94593, abs=5e-6)
  # With the false-positive blob removed (post-processing), WT recovers.
  from jaxseg.scoring import postprocess
  cleaned = postprocess.for_prediction(
      pred, dict(min_component_voxels=dict(WT=50, TC=0, ET=0),
                 et_to_ncr_below=0), labels.BRATS, 'regions')
  row = case_scores.score_case(cleaned, true, labels.BRATS, 'regions')
  assert row['lesion_fp_WT'] == 0 and row['lesion_dice_WT'] > 0.91
