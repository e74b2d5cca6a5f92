"""Per-case score rows of label maps, and their summary tables.

A row holds, per region of the case's label scheme (WT; or WT, TC, ET):
dice, iou, precision, recall and the surface distances hd95 and assd in mm
on the case's voxel spacing (`surface` states the definitions: hd95 is
MONAI's per-direction 95th percentile; a region empty in both scores 0 mm,
one empty on one side only the diagonal of the field of view), then the
BraTS 2023 lesion-wise columns (3D volumes). With Monte-Carlo dropout,
`uncertainty_scores` adds the BraTS 2020 uncertainty-task score, its AUCs
and the calibration error per region.
"""

import csv
import json
import os

import numpy as np

from jaxseg import labels
from jaxseg.scoring import lesionwise
from jaxseg.scoring import metrics
from jaxseg.scoring import uncertainty


SCORES = ('dice', 'iou', 'precision', 'recall')


# Surface distances in mm (hausdorff and nsd are computed alongside).
SURFACE_SCORES = ('hd95', 'assd')


# BraTS 2023 lesion-wise columns (jaxseg/scoring/lesionwise.py) -> its score names.
LESION_SCORES = {'lesion_dice': 'lesion_dice', 'lesion_hd95': 'lesion_hd95',
                 'lesion_hd95_voxel': 'lesion_hd95_voxel',
                 'hd95_surfel': 'legacy_hd95', 'lesion_fp': 'fp',
                 'lesion_fn': 'fn'}


def lesion_columns(pred: dict, true: dict, spacing=None) -> dict:
  """BraTS 2023 lesion-wise columns of one case's region masks.

  lesion_dice_R and lesion_hd95_R are the challenge's ranking scores
  (official definition, HD95 by surfel area as its code computes it),
  lesion_hd95_voxel_R the same lesion-wise average with jaxseg's voxel HD95,
  hd95_surfel_R the official whole-region HD95, lesion_fp_R / lesion_fn_R
  the false-positive components and missed lesions.
  """
  row = {}
  for name in true:
    scores = lesionwise.region_scores(pred[name], true[name], spacing=spacing)
    row.update({f'{column}_{name}': float(scores[key])
                for column, key in LESION_SCORES.items()})
  return row


def score_case(pred_label, true_label, scheme: labels.LabelScheme, label_mode,
               spacing=None, lesion_wise: bool = True) -> dict:
  """Per-region scores of one case: {'dice_WT': ..., 'hd95_WT': ..., ...}.

  Columns: for each region (WT; or WT, TC, ET), SCORES then SURFACE_SCORES
  (mm at `spacing`, mm per axis; None: 1 mm), then with `lesion_wise` the
  BraTS 2023 lesion-wise columns (`lesion_columns`; 3D volumes only).
  """
  regions = labels.scored_regions(label_mode)
  pred = scheme.region_masks(pred_label, regions)
  true = scheme.region_masks(true_label, regions)
  row = {}
  for name in true:
    scores = metrics.volume_scores(pred[name], true[name], with_surface=True,
                                   spacing=spacing)
    row.update({f'{s}_{name}': float(scores[s])
                for s in SCORES + SURFACE_SCORES})
  if lesion_wise and np.ndim(true_label) == 3:
    row.update(lesion_columns(pred, true, spacing))
  return row


def uncertainty_scores(probs, pred_label, true_label,
                       scheme: labels.LabelScheme, label_mode, brain) -> dict:
  """Per region: QU-BraTS score, its three AUCs and the calibration error.

  The uncertainty of a region is the entropy of its (mean) probability
  scaled to 0-100 (100 at p = 0.5), as the BraTS 2020 uncertainty task
  asks for one map per region. ECE is over the brain voxels.
  """
  regions = labels.scored_regions(label_mode)
  pred = scheme.region_masks(pred_label, regions)
  true = scheme.region_masks(true_label, regions)
  prob = labels.region_probabilities(probs, label_mode, regions)
  row = {}
  for name in true:
    unc = uncertainty.uncertainty_to_percent(
        np.asarray(uncertainty.binary_entropy(prob[name])), np.log(2.0))
    qu = uncertainty.qu_brats_scores(pred[name], true[name], unc,
                                     brain_mask=brain)
    ece = uncertainty.expected_calibration_error(prob[name], true[name],
                                                 mask=brain)
    row.update({f'qu_score_{name}': float(qu['score']),
                f'dice_auc_{name}': float(qu['dice_auc']),
                f'ftp_auc_{name}': float(qu['ftp_auc']),
                f'ftn_auc_{name}': float(qu['ftn_auc']),
                f'ece_{name}': float(ece['ece'])})
  return row


def confusion_classes(cases, label_mode: str) -> tuple[int, ...]:
  """Label values of a split's confusion matrix.

  (0, 1) in binary label mode or for binary-mask datasets, else the union of
  the cases' scheme values ((0, 1, 2, 4) for BraTS 2018-21, (0, 1, 2, 3)
  for BraTS 2023+).
  """
  if label_mode == 'binary' or all(c.scheme.binary for c in cases):
    return labels.BINARY.values
  return tuple(sorted(set().union(*(c.scheme.values for c in cases))))


def class_names(classes) -> list[str]:
  """Axis names of confusion classes, e.g. '4 ET' ((0, 1): background, tumour)."""
  names = (labels.BINARY.class_names if tuple(classes) == labels.BINARY.values
           else labels.class_names())
  return [f'{v} {names[v]}' if v in names else str(v) for v in classes]


def confusion_truth(label: np.ndarray, classes) -> np.ndarray:
  """The true label map in the confusion classes (binary: label > 0)."""
  if tuple(classes) == labels.BINARY.values:
    return (label > 0).astype(np.uint8)
  return label


def summarize_rows(rows: list[dict]) -> dict:
  """Mean, median and std of every score column of per-case rows."""
  return metrics.summarize([{k: v for k, v in r.items() if k != 'case'}
                            for r in rows])


def write_table(rows: list[dict], summary: dict, csv_path: str,
                json_path: str) -> None:
  """Writes the per-case CSV and the summary JSON."""
  os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
  with open(csv_path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  with open(json_path, 'w') as f:
    json.dump(summary, f, indent=1)
