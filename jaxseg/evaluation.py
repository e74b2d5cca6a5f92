"""Evaluation: a trained model's scores on labelled cases, as tables and figures.

Whole-volume evaluation runs the training preprocessing on each case, predicts
every axial slice, maps the probabilities back onto the original voxel grid
(`preprocess.slices_to_volume`), converts them to the dataset's own label
convention and scores the regions against the label file on disk:

  binary label mode, or a binary-mask dataset:  WT
  regions / multiclass on BraTS labels:          WT, TC, ET

Per region: dice, iou, precision, recall, the surface distances hd95 and
assd in mm on the case's voxel spacing from its NIfTI header, and the BraTS
2023 lesion-wise scores (`jaxseg.scoring.cases` states the columns).

Writes under `<workdir>/eval/`:
  <split>_cases.csv       one row per case
  <split>_summary.json    mean, median, std of each column
  <split>_dice_box.png    per-case Dice per region, median and mean marked
  <split>_confusion.png   voxel confusion matrix over the split's cases, in
                          the cases' label classes (binary mode: 0 / 1),
                          row-normalised, counts annotated
  <split>_cases/<case>.png  input, label and prediction on the slice of
                          largest tumour extent

Predictions come from the per-case loop of `jaxseg.inference.cases`
(slices, whole volumes or sliding windows, mirroring, Monte-Carlo dropout
as the inference section says).
With `inference.mc_samples > 0` each row also scores the uncertainty:
the BraTS 2020 uncertainty-task score and its Dice / filtered-TP /
filtered-TN AUCs, and the expected calibration error, per region.

`evaluate_input` scores any labelled set (`--mode=evaluate --input=...`)
and writes the same files into an output folder.
"""

import dataclasses
import os

from absl import logging
import jax
import nibabel as nib
import numpy as np

from jaxseg import labels
from jaxseg import plots
from jaxseg.data import checks
from jaxseg.data import dataset
from jaxseg.data import pipeline
from jaxseg.data import preprocess
from jaxseg.data import sources
from jaxseg.errors import InputError
from jaxseg.errors import check_writable_folder
from jaxseg.inference import cases as case_loop
from jaxseg.inference import files
from jaxseg.inference import predictor
from jaxseg.scoring import cases as case_scores
from jaxseg.scoring import metrics
from jaxseg.scoring import postprocess
from jaxseg.training import validation


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


def score(case, volume, pred, label_mode: str, classes) -> tuple[dict, np.ndarray]:
  """A labelled case's score row (`scoring.cases.score_case` at its voxel
  spacing) and its (K, K) confusion counts over `classes`."""
  row = dict(case=case.case_id)
  row.update(case_scores.score_case(
      pred, volume.label, case.scheme, label_mode,
      sources.voxel_spacing(volume, case.label or case.case_id)))
  counts = metrics.confusion_matrix(
      pred, case_scores.confusion_truth(volume.label, classes), classes)
  return row, counts


def evaluate_split(models: list, cases, mesh, png_dir: str | None = None,
                   pred_dir: str | None = None,
                   settings: dict | None = None) -> SplitResult:
  """Per-case scores and the pooled confusion matrix of labelled `cases`.

  Args:
    models: one `model_folder.Model`, or the members of an ensemble (their
      probabilities are averaged, `predictor.case_predictor`); the first
      one's config decides label mode, threshold and channels.
    cases: labelled cases.
    mesh: the device mesh.
    png_dir: where `<case>.png` overlays go, or None.
    pred_dir: where `<case>_seg.nii.gz` of the predictions before
      post-processing go (to choose its thresholds), or None.
    settings: the post-processing of the scored predictions; None: the
      first model's (`model_folder.Model.postprocess`).

  With `inference.mc_samples > 0` the rows also hold the uncertainty scores
  (`scoring.cases.uncertainty_scores`).
  """
  config = models[0].config
  label_mode = config.data.label_mode
  classes = case_scores.confusion_classes(cases, label_mode)
  confusion = np.zeros((len(classes), len(classes)), np.int64)
  rows = []
  for item in case_loop.predicted_cases(models, mesh, cases, 'evaluated',
                                        settings):
    case, volume, pred = item.case, item.volume, item.label
    if pred_dir and jax.process_index() == 0:
      os.makedirs(pred_dir, exist_ok=True)
      files.write_nifti(case.to_disk(item.raw.astype(np.uint8)), volume,
                        os.path.join(pred_dir, f'{case.case_id}_seg.nii.gz'))
    row, counts = score(case, volume, pred, label_mode, classes)
    if item.output.std is not None:
      row.update(case_scores.uncertainty_scores(
          item.output.probs, pred, volume.label, case.scheme, label_mode,
          preprocess.brain_mask(volume.image)))
    rows.append(row)
    confusion += counts
    if png_dir and jax.process_index() == 0:
      files.write_case_png(volume, pred,
                           os.path.join(png_dir, f'{case.case_id}.png'),
                           label_mode, item.output, case.scheme)
    item.note = ' '.join(f'{k}={v:.4f}' for k, v in row.items()
                         if k.startswith('dice_'))
  return SplitResult(rows=rows, labels=classes, confusion=confusion)


def write_split(eval_dir: str, split: str, result: SplitResult,
                summary: dict) -> dict:
  """Writes a split's CSV, summary JSON, Dice box plot and confusion PNG.

  Files are `<split>_cases.csv`, ... (split '': `cases.csv`, ...).

  Returns:
    The box plot's drawn {region: {'median', 'mean'}} (plots.plot_score_box).
  """
  path = lambda name: os.path.join(eval_dir, f'{split}_{name}' if split else name)  # noqa: E731
  case_scores.write_table(result.rows, summary, path('cases.csv'),
                          path('summary.json'))
  marks = plots.plot_score_box(result.rows, path('dice_box.png'), score='dice')
  plots.plot_confusion(
      result.confusion, case_scores.class_names(result.labels),
      path('confusion.png'),
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
  classes = case_scores.confusion_classes(cases, label_mode)
  confusion = np.zeros((len(classes), len(classes)), np.int64)
  rows = []
  for case, (volume, raw) in zip(cases, read_predictions(
      cases, pred_dir, config.data.modalities)):
    pred = postprocess.for_prediction(raw, settings, case.scheme, label_mode)
    row, counts = score(case, volume, pred, label_mode, classes)
    rows.append(row)
    confusion += counts
  return SplitResult(rows=rows, labels=classes, confusion=confusion)


def choose_postprocessing(cases, pred_dir: str, config) -> tuple[dict, dict]:
  """Post-processing thresholds chosen on labelled cases' raw predictions.

  `postprocess.choose_thresholds` over `config.postprocess.candidates` by
  mean lesion-wise Dice. In the binary label mode only the WT threshold is
  searched. Returns (settings, table).
  """
  schemes = {c.scheme for c in cases}
  if len(schemes) > 1:
    raise InputError(pred_dir, f'the cases mix label schemes '
                     f'{sorted(s.name for s in schemes)}: choose post-processing '
                     'on cases of one scheme')
  scheme = schemes.pop()
  candidates = config.postprocess.candidates.to_dict()
  if config.data.label_mode == 'binary' or scheme.binary:
    candidates, scheme = {'WT': candidates['WT']}, labels.BINARY
  pairs = [(pred, volume.label) for volume, pred in read_predictions(
      cases, pred_dir, config.data.modalities)]
  spacing = sources.voxel_spacing(
      sources.load_case(cases[0], config.data.modalities), cases[0].label)
  return postprocess.choose_thresholds(pairs, candidates, scheme=scheme,
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
  predictor.check_mc_model(state, config)
  model = case_loop.workdir_model(config, workdir, state)
  choose = bool(config.postprocess.choose_on_validation)
  eval_dir = os.path.join(workdir, 'eval')
  results = {}
  for split in ('val', 'test'):
    ids = info['split'].get(split) or []
    if not ids:
      continue
    split_cases = [cases[i] for i in ids]
    source = pipeline.SliceSource(os.path.join(data_dir, split))
    per_slice = validation.slice_metrics(eval_fn, state, source,
                                         config.train.eval_batch_size, mesh)
    pred_dir = os.path.join(eval_dir, f'{split}_pred') if split == 'val' else None
    result = evaluate_split([model], split_cases, mesh,
                            png_dir=os.path.join(eval_dir, f'{split}_cases'),
                            pred_dir=pred_dir)
    if split == 'val' and choose:
      results['val_raw'] = dict(
          per_volume=case_scores.summarize_rows(result.rows))
      model.postprocess, table = choose_postprocessing(split_cases, pred_dir,
                                                       config)
      if jax.process_index() == 0:
        postprocess.write_chosen(workdir, model.postprocess, table, len(ids))
      logging.info('post-processing chosen on %d validation cases: %s',
                   len(ids), model.postprocess)
      result = rescore(split_cases, pred_dir, config, model.postprocess)
    summary = case_scores.summarize_rows(result.rows)
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
  case_loop.check_same_view(config, workdir)
  cases = case_loop.input_cases(input_path, config.data)
  unlabeled = [c.case_id for c in cases if not c.label]
  if unlabeled:
    raise InputError(input_path, f'case {unlabeled[0]} has no label file: '
                     'evaluation needs labels (use --mode=predict)')
  predictor.check_mc_model(state, config)
  check_writable_folder(output_dir)
  result = evaluate_split([case_loop.workdir_model(config, workdir, state)],
                          cases, mesh, png_dir=os.path.join(output_dir, 'cases'))
  summary = case_scores.summarize_rows(result.rows)
  if jax.process_index() == 0:
    write_split(output_dir, '', result, summary)
  logging.info('%d cases: dice WT mean %.4f median %.4f', len(result.rows),
               summary['dice_WT']['mean'], summary['dice_WT']['median'])
  return summary
