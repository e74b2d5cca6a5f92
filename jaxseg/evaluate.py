"""Evaluation: per-slice metrics over prepared records and whole-volume scores.

Whole-volume evaluation runs the training preprocessing on each case, predicts
every axial slice, maps the probabilities back onto the original voxel grid
(`preprocess.slices_to_volume`), converts them to the dataset's own label
convention and scores the regions against the label file on disk:

  binary label mode, or a binary-mask dataset:  WT
  regions / multiclass on BraTS labels:          WT, TC, ET

Per region: dice, iou, precision, recall and the surface distances hd95 and
assd in mm on the case's voxel spacing from its NIfTI header (`jaxseg.surface`
states the definitions: hd95 is MONAI's per-direction 95th percentile; a
region empty in both scores 0 mm, one empty on one side only the diagonal of
the field of view).

Writes under `<workdir>/eval/`:
  <split>_cases.csv       one row per case
  <split>_summary.json    mean, median, std of each column
  <split>_dice_box.png    per-case Dice per region, median and mean marked
  <split>_confusion.png   voxel confusion matrix over the split's cases, in
                          the cases' label classes (binary mode: 0 / 1),
                          row-normalised, counts annotated
"""

import csv
import dataclasses
import json
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from jaxseg import metrics
from jaxseg import parallel
from jaxseg import plots
from jaxseg.data import pipeline
from jaxseg.data import preprocess
from jaxseg.data import sources
from jaxseg.errors import InputError

SCORES = ('dice', 'iou', 'precision', 'recall')
# Surface distances in mm (hausdorff and nsd are computed alongside).
SURFACE_SCORES = ('hd95', 'assd')
# Class names on the confusion-matrix axes.
BRATS_CLASS_NAMES = {0: 'BG', 1: 'NCR', 2: 'ED', 3: 'ET', 4: 'ET'}
BINARY_CLASS_NAMES = {0: 'BG', 1: 'tumour'}


def slice_metrics(eval_fn, state, source: pipeline.SliceSource, batch_size: int,
                  mesh) -> dict:
  """SegMetrics (pooled over all voxels) on every record of a prepared split."""
  merged = None
  for batch in pipeline.eval_batches(source, batch_size):
    out = eval_fn(state, parallel.to_global(parallel.local_rows(batch), mesh))
    merged = out if merged is None else merged.merge(out)
  return {k: float(v) for k, v in merged.compute().items()}


def make_predict_fn(activation: str):
  """A jitted (state, images (N, H, W, C)) -> probabilities (N, H, W, K)."""
  def predict(state, images):
    logits = state.apply_fn(
        {'params': state.params, 'batch_stats': state.batch_stats}, images,
        train=False)
    if activation == 'softmax':
      return jax.nn.softmax(logits, axis=-1)
    return jax.nn.sigmoid(logits)
  return jax.jit(predict)


def predict_slices(predict_fn, state, images: np.ndarray, batch_size: int,
                   mesh) -> np.ndarray:
  """Probabilities (S, H, W, K) for slices (S, H, W, C), in padded batches."""
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    padded = np.zeros((batch_size,) + chunk.shape[1:], np.float32)
    padded[:len(chunk)] = chunk
    probs = predict_fn(state, parallel.to_global(
        parallel.local_rows({'x': padded}), mesh)['x'])
    if jax.process_count() > 1:
      probs = multihost_utils.process_allgather(probs, tiled=True)
    out.append(np.asarray(probs)[:len(chunk)])
  return np.concatenate(out)


def predict_volume(predict_fn, state, image: np.ndarray, *, image_size: int,
                   batch_size: int, mesh, mean=None, std=None,
                   depth: int | None = None) -> np.ndarray:
  """Probabilities (H, W, D, K) on the grid of `image` (H, W, D, C).

  2D models (depth None) predict slice by slice; 3D models predict the whole
  (depth, size, size, C) volume at once.
  """
  if depth is None:
    stack = preprocess.case_to_slices(image, None, image_size=image_size,
                                      label_mode='binary', et_label=None,
                                      mean=mean, std=std)
    probs = predict_slices(predict_fn, state, stack.images, batch_size, mesh)
    return preprocess.slices_to_volume(probs, stack.box)
  stack = preprocess.case_to_volume(image, None, image_size=image_size,
                                    depth=depth, label_mode='binary',
                                    et_label=None, mean=mean, std=std)
  probs = predict_slices(predict_fn, state, stack.images[None], batch_size, mesh)
  return preprocess.volume_to_grid(probs[0], stack.box)


def hard_label(probs: np.ndarray, label_mode: str, et_label) -> np.ndarray:
  """(H, W, D, K) probabilities -> uint8 label map in the source convention."""
  if label_mode == 'multiclass':
    return preprocess.target_to_label(probs.argmax(-1), label_mode, et_label)
  return preprocess.target_to_label(probs > 0.5, label_mode, et_label)


def region_masks(label: np.ndarray, et_label, regions) -> dict:
  """{region name: bool mask} of a label map in its own convention."""
  if et_label is None:
    return {'WT': label > 0}
  masks = metrics.brats_regions(label, 'brats23' if et_label == 3 else 'brats')
  return {name: masks[..., i] for i, name in enumerate(preprocess.REGION_NAMES)
          if name in regions}


def score_case(pred_label, true_label, et_label, label_mode,
               spacing=None) -> dict:
  """Per-region scores of one case: {'dice_WT': ..., 'hd95_WT': ..., ...}.

  Columns: for each region (WT; or WT, TC, ET), SCORES then SURFACE_SCORES
  (mm at `spacing`, mm per axis; None: 1 mm).
  """
  regions = ('WT',) if label_mode == 'binary' else preprocess.REGION_NAMES
  pred = region_masks(pred_label, et_label, regions)
  true = region_masks(true_label, et_label, regions)
  row = {}
  for name in true:
    scores = metrics.volume_scores(pred[name], true[name], with_surface=True,
                                   spacing=spacing)
    row.update({f'{s}_{name}': float(scores[s])
                for s in SCORES + SURFACE_SCORES})
  return row


def voxel_spacing(volume: sources.Volume, where: str) -> tuple[float, ...]:
  """Voxel size in mm per axis (3,) from the NIfTI header of a loaded case."""
  if volume.header is not None and hasattr(volume.header, 'get_zooms'):
    zooms = tuple(float(z) for z in volume.header.get_zooms()[:3])
  else:
    zooms = tuple(float(z) for z in np.linalg.norm(volume.affine[:3, :3], axis=0))
  if len(zooms) != 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
    raise InputError(where, f'voxel spacing {zooms} in the NIfTI header must '
                     'be three positive numbers (mm)')
  return zooms


def confusion_classes(cases, label_mode: str) -> tuple[int, ...]:
  """Label values of a split's confusion matrix.

  (0, 1) in binary label mode or for binary-mask datasets, else the union of
  the cases' label conventions ((0, 1, 2, 4) for BraTS 2018-21, (0, 1, 2, 3)
  for BraTS 2023+).
  """
  if label_mode == 'binary' or all(c.et_label is None for c in cases):
    return (0, 1)
  return tuple(sorted(set().union(*(c.label_values for c in cases))))


def class_names(labels) -> list[str]:
  """Axis names of confusion classes, e.g. '4 ET' ((0, 1): background, tumour)."""
  names = BINARY_CLASS_NAMES if tuple(labels) == (0, 1) else BRATS_CLASS_NAMES
  return [f'{v} {names[v]}' if v in names else str(v) for v in labels]


def confusion_truth(label: np.ndarray, labels) -> np.ndarray:
  """The true label map in the confusion classes (binary: label > 0)."""
  if tuple(labels) == (0, 1):
    return (label > 0).astype(np.uint8)
  return label


@dataclasses.dataclass
class SplitResult:
  """Whole-volume results of one split.

  Attributes:
    rows: one dict per case: 'case' and the score_case columns.
    labels: the confusion classes (label values), K of them.
    confusion: int64 (K, K) voxel counts over all cases, rows true label,
      columns predicted label.
  """
  rows: list[dict]
  labels: tuple[int, ...]
  confusion: np.ndarray


def evaluate_cases(config, state, cases, mesh, normalization,
                   predict_fn) -> list[dict]:
  """Scores every case in `cases` on its original grid; one row per case."""
  return evaluate_split(config, state, cases, mesh, normalization,
                        predict_fn).rows


def evaluate_split(config, state, cases, mesh, normalization,
                   predict_fn) -> SplitResult:
  """Per-case scores and the pooled confusion matrix of `cases`."""
  label_mode = config.data.label_mode
  labels = confusion_classes(cases, label_mode)
  confusion = np.zeros((len(labels), len(labels)), np.int64)
  mean = normalization.get('mean')
  std = normalization.get('std')
  mean = None if mean is None else np.asarray(mean, np.float32)
  std = None if std is None else np.asarray(std, np.float32)
  rows = []
  for i, case in enumerate(cases):
    volume = sources.load_case(case, config.data.modalities)
    probs = predict_volume(predict_fn, state, volume.image,
                           image_size=config.data.image_size,
                           batch_size=config.train.eval_batch_size, mesh=mesh,
                           mean=mean, std=std,
                           depth=config.data.depth if config.data.dims == 3 else None)
    pred = hard_label(probs, label_mode, case.et_label)
    spacing = voxel_spacing(volume, case.label or case.case_id)
    row = dict(case=case.case_id)
    row.update(score_case(pred, volume.label, case.et_label, label_mode,
                          spacing))
    rows.append(row)
    confusion += metrics.confusion_matrix(
        pred, confusion_truth(volume.label, labels), labels)
    logging.info('evaluated case %d/%d %s: %s', i + 1, len(cases), case.case_id,
                 ' '.join(f'{k}={v:.4f}' for k, v in row.items()
                          if k.startswith('dice')))
  return SplitResult(rows=rows, labels=labels, confusion=confusion)


def summarize_rows(rows: list[dict]) -> dict:
  """Mean, median and std of every score column of per-case rows."""
  return metrics.summarize([{k: v for k, v in r.items() if k != 'case'}
                            for r in rows])


def write_table(rows: list[dict], summary: dict, path: str) -> None:
  """Writes the per-case CSV and the summary JSON beside it."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  with open(path.replace('_cases.csv', '_summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)


def write_split(eval_dir: str, split: str, result: SplitResult,
                summary: dict) -> dict:
  """Writes a split's CSV, summary JSON, Dice box plot and confusion PNG.

  Returns:
    The box plot's drawn {region: {'median', 'mean'}} (plots.plot_score_box).
  """
  write_table(result.rows, summary, os.path.join(eval_dir, f'{split}_cases.csv'))
  marks = plots.plot_score_box(
      result.rows, os.path.join(eval_dir, f'{split}_dice_box.png'), score='dice')
  plots.plot_confusion(
      result.confusion, class_names(result.labels),
      os.path.join(eval_dir, f'{split}_confusion.png'),
      title=f'{split}: voxels over {len(result.rows)} cases, row-normalised')
  return marks


def evaluate_workdir(config, workdir: str, state, mesh, eval_fn) -> dict:
  """Per-slice and per-volume results on the val and test splits of a workdir."""
  data_dir = os.path.join(workdir, 'data')
  with open(os.path.join(data_dir, 'split.json')) as f:
    info = json.load(f)
  cases = {c.case_id: c for c in sources.discover_cases(info['root'])}
  predict_fn = make_predict_fn(preprocess.activation(config.data.label_mode))
  results = {}
  for split in ('val', 'test'):
    ids = info['split'].get(split) or []
    if not ids:
      continue
    source = pipeline.SliceSource(os.path.join(data_dir, split))
    per_slice = slice_metrics(eval_fn, state, source,
                              config.train.eval_batch_size, mesh)
    result = evaluate_split(config, state, [cases[i] for i in ids], mesh,
                            info['normalization'], predict_fn)
    summary = summarize_rows(result.rows)
    if jax.process_index() == 0:
      write_split(os.path.join(workdir, 'eval'), split, result, summary)
    results[split] = dict(
        per_slice=per_slice, per_volume=summary, cases=len(result.rows),
        confusion=dict(labels=[int(v) for v in result.labels],
                       counts=result.confusion.tolist()))
    logging.info('%s: dice per slice %.4f, per volume (WT) mean %.4f median %.4f',
                 split, per_slice['dice'], summary['dice_WT']['mean'],
                 summary['dice_WT']['median'])
  return results
