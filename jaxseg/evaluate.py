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
  <split>_cases/<case>.png  input, label and prediction on the slice of
                          largest tumour extent

Predictions come from `jaxseg.predict` (slices, whole volumes or sliding
windows, mirroring, Monte-Carlo dropout as the inference section says).
With `inference.mc_samples > 0` each row also scores the uncertainty:
the BraTS 2020 uncertainty-task score and its Dice / filtered-TP /
filtered-TN AUCs, and the expected calibration error, per region.

`evaluate_input` scores any labelled set (`--mode=evaluate --input=...`)
and writes the same files into an output folder.
"""

import csv
import dataclasses
import json
import os

from absl import logging
import jax
import nibabel as nib
import numpy as np

from jaxseg import lesionwise
from jaxseg import metrics
from jaxseg import parallel
from jaxseg import plots
from jaxseg import postprocess
from jaxseg import predict
from jaxseg import uncertainty
from jaxseg.data import checks
from jaxseg.data import dataset
from jaxseg.data import pipeline
from jaxseg.data import preprocess
from jaxseg.data import sources
from jaxseg.errors import InputError
from jaxseg.errors import check_writable_folder

SCORES = ('dice', 'iou', 'precision', 'recall')
# Surface distances in mm (hausdorff and nsd are computed alongside).
SURFACE_SCORES = ('hd95', 'assd')
# Class names on the confusion-matrix axes.
BRATS_CLASS_NAMES = plots.BRATS_CLASS_NAMES
BINARY_CLASS_NAMES = plots.BINARY_CLASS_NAMES


def slice_metrics(eval_fn, state, source: pipeline.SliceSource, batch_size: int,
                  mesh) -> dict:
  """SegMetrics (pooled over all voxels) on every record of a prepared split."""
  merged = None
  for batch in pipeline.eval_batches(source, batch_size):
    out = eval_fn(state, parallel.to_global(parallel.local_rows(batch), mesh))
    merged = out if merged is None else merged.merge(out)
  return {k: float(v) for k, v in merged.compute().items()}


def region_masks(label: np.ndarray, et_label, regions) -> dict:
  """{region name: bool mask} of a label map in its own convention."""
  if et_label is None:
    return {'WT': label > 0}
  masks = metrics.brats_regions(label, 'brats23' if et_label == 3 else 'brats')
  return {name: masks[..., i] for i, name in enumerate(preprocess.REGION_NAMES)
          if name in regions}


# BraTS 2023 lesion-wise columns (jaxseg/lesionwise.py) -> its score names.
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


def score_case(pred_label, true_label, et_label, label_mode,
               spacing=None, lesion_wise: bool = True) -> dict:
  """Per-region scores of one case: {'dice_WT': ..., 'hd95_WT': ..., ...}.

  Columns: for each region (WT; or WT, TC, ET), SCORES then SURFACE_SCORES
  (mm at `spacing`, mm per axis; None: 1 mm), then with `lesion_wise` the
  BraTS 2023 lesion-wise columns (`lesion_columns`; 3D volumes only).
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
  if lesion_wise and np.ndim(true_label) == 3:
    row.update(lesion_columns(pred, true, spacing))
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


def region_probabilities(probs: np.ndarray, label_mode: str, regions) -> dict:
  """{region: (H, W, D) probability} of (H, W, D, K) model probabilities.

  Sigmoid modes: the region's channel (binary: WT). Multiclass softmax over
  (background, 1, 2, ET): WT = 1 - p_background, TC = p_1 + p_ET, ET = p_ET.
  """
  if label_mode == 'binary':
    return {'WT': probs[..., 0]}
  if label_mode == 'regions':
    return {name: probs[..., i] for i, name in enumerate(preprocess.REGION_NAMES)
            if name in regions}
  by_name = dict(WT=1.0 - probs[..., 0], TC=probs[..., 1] + probs[..., 3],
                 ET=probs[..., 3])
  return {name: by_name[name] for name in regions}


def uncertainty_scores(probs, pred_label, true_label, et_label, label_mode,
                       brain) -> dict:
  """Per region: QU-BraTS score, its three AUCs and the calibration error.

  The uncertainty of a region is the entropy of its (mean) probability
  scaled to 0-100 (100 at p = 0.5), as the BraTS 2020 uncertainty task
  asks for one map per region. ECE is over the brain voxels.
  """
  regions = ('WT',) if label_mode == 'binary' else preprocess.REGION_NAMES
  pred = region_masks(pred_label, et_label, regions)
  true = region_masks(true_label, et_label, regions)
  prob = region_probabilities(probs, label_mode, regions)
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


def evaluate_split(models: list, cases, mesh, png_dir: str | None = None,
                   pred_dir: str | None = None,
                   settings: dict | None = None) -> SplitResult:
  """Per-case scores and the pooled confusion matrix of labelled `cases`.

  Args:
    models: one `model_folder.Model`, or the members of an ensemble (their
      probabilities are averaged, `predict.case_predictor`); the first
      one's config decides label mode, threshold and channels.
    cases: labelled cases.
    mesh: the device mesh.
    png_dir: where `<case>.png` overlays go, or None.
    pred_dir: where `<case>_seg.nii.gz` of the predictions before
      post-processing go (to choose its thresholds), or None.
    settings: the post-processing of the scored predictions; None: the
      first model's (`model_folder.Model.postprocess`).

  With `inference.mc_samples > 0` the rows also hold the uncertainty scores
  (`uncertainty_scores`).
  """
  config = models[0].config
  settings = models[0].postprocess if settings is None else settings
  label_mode = config.data.label_mode
  labels = confusion_classes(cases, label_mode)
  confusion = np.zeros((len(labels), len(labels)), np.int64)
  predict_volume = predict.case_predictor(models, mesh)
  progress = predict.CaseProgress(len(cases), 'evaluated')
  rows = []
  for i, case in enumerate(cases):
    volume = sources.load_case(case, config.data.modalities)
    output = predict_volume(volume)
    raw = predict.hard_label(output.probs, label_mode, case.et_label,
                             config.inference.threshold)
    if pred_dir and jax.process_index() == 0:
      os.makedirs(pred_dir, exist_ok=True)
      predict.write_nifti(case.to_disk(raw.astype(np.uint8)), volume,
                          os.path.join(pred_dir, f'{case.case_id}_seg.nii.gz'))
    pred = postprocess.for_prediction(raw, settings, case.et_label, label_mode)
    spacing = voxel_spacing(volume, case.label or case.case_id)
    row = dict(case=case.case_id)
    row.update(score_case(pred, volume.label, case.et_label, label_mode,
                          spacing))
    if output.std is not None:
      row.update(uncertainty_scores(output.probs, pred, volume.label,
                                    case.et_label, label_mode,
                                    preprocess.brain_mask(volume.image)))
    rows.append(row)
    confusion += metrics.confusion_matrix(
        pred, confusion_truth(volume.label, labels), labels)
    if png_dir and jax.process_index() == 0:
      predict.write_case_png(volume, pred,
                             os.path.join(png_dir, f'{case.case_id}.png'),
                             label_mode, output)
    logging.info('%s %s', progress.line(i + 1, case.case_id),
                 ' '.join(f'{k}={v:.4f}' for k, v in row.items()
                          if k.startswith('dice_')))
  return SplitResult(rows=rows, labels=labels, confusion=confusion)


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


def write_split(eval_dir: str, split: str, result: SplitResult,
                summary: dict) -> dict:
  """Writes a split's CSV, summary JSON, Dice box plot and confusion PNG.

  Files are `<split>_cases.csv`, ... (split '': `cases.csv`, ...).

  Returns:
    The box plot's drawn {region: {'median', 'mean'}} (plots.plot_score_box).
  """
  path = lambda name: os.path.join(eval_dir, f'{split}_{name}' if split else name)  # noqa: E731
  write_table(result.rows, summary, path('cases.csv'), path('summary.json'))
  marks = plots.plot_score_box(result.rows, path('dice_box.png'), score='dice')
  plots.plot_confusion(
      result.confusion, class_names(result.labels), path('confusion.png'),
      title=f'{split or "input"}: voxels over {len(result.rows)} cases, '
      'row-normalised')
  return marks


def read_predictions(cases, pred_dir: str, modalities) -> list[tuple]:
  """(volume, prediction) of each case: its label and the `pred_dir` file.

  The prediction comes back in the label's convention (`checks.check_label`
  maps the written file values as the case's reader does).
  """
  out = []
  for case in cases:
    volume = sources.load_case(case, modalities)
    path = os.path.join(pred_dir, f'{case.case_id}_seg.nii.gz')
    pred = checks.check_label(np.asarray(nib.load(path).dataobj), case, path)
    out.append((volume, pred.reshape(volume.label.shape)))
  return out


def rescore(cases, pred_dir: str, config, settings: dict) -> SplitResult:
  """The scores of `pred_dir`'s predictions post-processed with `settings`."""
  label_mode = config.data.label_mode
  labels = confusion_classes(cases, label_mode)
  confusion = np.zeros((len(labels), len(labels)), np.int64)
  rows = []
  for case, (volume, raw) in zip(cases, read_predictions(
      cases, pred_dir, config.data.modalities)):
    pred = postprocess.for_prediction(raw, settings, case.et_label, label_mode)
    row = dict(case=case.case_id)
    row.update(score_case(pred, volume.label, case.et_label, label_mode,
                          voxel_spacing(volume, case.label)))
    rows.append(row)
    confusion += metrics.confusion_matrix(
        pred, confusion_truth(volume.label, labels), labels)
  return SplitResult(rows=rows, labels=labels, confusion=confusion)


def choose_postprocessing(cases, pred_dir: str, config) -> tuple[dict, dict]:
  """Post-processing thresholds chosen on labelled cases' raw predictions.

  `postprocess.choose_thresholds` over `config.postprocess.candidates` by
  mean lesion-wise Dice. In the binary label mode only the WT threshold is
  searched. Returns (settings, table).
  """
  et_labels = {c.et_label for c in cases}
  if len(et_labels) > 1:
    raise InputError(pred_dir, f'the cases mix enhancing-tumour labels '
                     f'{sorted(map(str, et_labels))}: choose post-processing on '
                     'cases of one convention')
  et_label = et_labels.pop()
  candidates = config.postprocess.candidates.to_dict()
  if config.data.label_mode == 'binary' or et_label is None:
    candidates, et_label = {'WT': candidates['WT']}, 4
  pairs = [(pred, volume.label) for volume, pred in read_predictions(
      cases, pred_dir, config.data.modalities)]
  spacing = voxel_spacing(sources.load_case(cases[0], config.data.modalities),
                          cases[0].label)
  return postprocess.choose_thresholds(pairs, candidates, et_label=et_label,
                                       spacing=spacing)


def evaluate_workdir(config, workdir: str, state, mesh, eval_fn) -> dict:
  """Per-slice and per-volume results on the val and test splits of a workdir.

  The validation predictions (before post-processing) are kept in
  `eval/val_pred/`. With `postprocess.choose_on_validation` the thresholds
  are chosen on them (`<workdir>/postprocess.json`), the validation cases
  are scored with them (the raw scores stay in results as 'val_raw') and
  the test cases and later predictions use them.
  """
  data_dir = os.path.join(workdir, 'data')
  # The run's split, checked against the data the config points at now.
  info = dataset.prepare(config.data, workdir, config.seed)
  cases = {c.case_id: c for c in sources.discover_cases(
      info['root'], config.data.get('formats'))}
  predict.check_mc_model(state, config)
  model = predict.workdir_model(config, workdir, state)
  choose = bool(config.postprocess.choose_on_validation)
  eval_dir = os.path.join(workdir, 'eval')
  results = {}
  for split in ('val', 'test'):
    ids = info['split'].get(split) or []
    if not ids:
      continue
    split_cases = [cases[i] for i in ids]
    source = pipeline.SliceSource(os.path.join(data_dir, split))
    per_slice = slice_metrics(eval_fn, state, source,
                              config.train.eval_batch_size, mesh)
    pred_dir = os.path.join(eval_dir, f'{split}_pred') if split == 'val' else None
    result = evaluate_split([model], split_cases, mesh,
                            png_dir=os.path.join(eval_dir, f'{split}_cases'),
                            pred_dir=pred_dir)
    if split == 'val' and choose:
      results['val_raw'] = dict(per_volume=summarize_rows(result.rows))
      model.postprocess, table = choose_postprocessing(split_cases, pred_dir,
                                                       config)
      if jax.process_index() == 0:
        postprocess.write_chosen(workdir, model.postprocess, table, len(ids))
      logging.info('post-processing chosen on %d validation cases: %s',
                   len(ids), model.postprocess)
      result = rescore(split_cases, pred_dir, config, model.postprocess)
    summary = summarize_rows(result.rows)
    if jax.process_index() == 0:
      write_split(eval_dir, split, result, summary)
    results[split] = dict(
        per_slice=per_slice, per_volume=summary, cases=len(result.rows),
        confusion=dict(labels=[int(v) for v in result.labels],
                       counts=result.confusion.tolist()))
    logging.info('%s: dice per slice %.4f, per volume (WT) mean %.4f median %.4f',
                 split, per_slice['dice'], summary['dice_WT']['mean'],
                 summary['dice_WT']['median'])
  return results


def evaluate_input(config, workdir: str, state, mesh, input_path: str,
                   output_dir: str) -> dict:
  """--mode=evaluate --input: scores a labelled set with a run's best model.

  Writes `cases.csv`, `summary.json`, `dice_box.png`, `confusion.png` and
  `cases/<case>.png` into `output_dir`; returns the summary.
  """
  predict.check_same_view(config, workdir)
  cases = predict.input_cases(input_path, config.data)
  unlabeled = [c.case_id for c in cases if not c.label]
  if unlabeled:
    raise InputError(input_path, f'case {unlabeled[0]} has no label file: '
                     'evaluation needs labels (use --mode=predict)')
  predict.check_mc_model(state, config)
  check_writable_folder(output_dir)
  result = evaluate_split([predict.workdir_model(config, workdir, state)],
                          cases, mesh, png_dir=os.path.join(output_dir, 'cases'))
  summary = summarize_rows(result.rows)
  if jax.process_index() == 0:
    write_split(output_dir, '', result, summary)
  logging.info('%d cases: dice WT mean %.4f median %.4f', len(result.rows),
               summary['dice_WT']['mean'], summary['dice_WT']['median'])
  return summary
