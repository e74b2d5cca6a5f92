"""Segmentation metrics: confusion counts, scores, clu collections, summaries.

Conventions:

* Hard predictions and targets are boolean (N, *spatial, C), channels last.
  From logits: 'sigmoid' thresholds each channel (p > threshold, default 0.5);
  'softmax' takes the argmax over channels (one-hot), targets are one-hot.
* Scores come from voxel counts tp, fp, fn, tn. No score is ever nan; the
  empty cases are defined as follows (a case that is empty "in both" is a
  perfect answer, one that is empty on one side only is a total miss):

    dice = 2tp / (2tp + fp + fn)   1 if target and prediction are both empty
    iou  = tp / (tp + fp + fn)     1 if both empty
    f1   = same as dice (F1 of voxels is Dice)
    precision = tp / (tp + fp)     no predicted positives: 1 if the target has
                                   none either (fn == 0), else 0
    recall    = tp / (tp + fn)     no target positives: 1 if nothing is
                                   predicted (fp == 0), else 0
    specificity = tn / (tn + fp)   no target negatives: 1 if fn == 0, else 0
    accuracy  = (tp + tn) / total  1 if there are no voxels (all masked out)

* The clu `SegMetrics` pools the counts over all voxels of all samples of all
  batches it has merged (one Dice per channel for a whole evaluation, as
  seed 002's Keras metric did), then averages the channels. `dice_per_slice`
  is instead the mean over samples of each sample's Dice (channel mean), with
  the empty conventions above (a tumour-free slice predicted empty scores 1).
* Per-volume scores (`volume_scores`) are exact float64 NumPy on the host;
  with `with_surface=True` they add hd95, hausdorff, assd (mm, from the voxel
  spacing) and nsd from `jaxseg.scoring.surface`, which states their definitions and
  empty conventions (both empty: 0 mm and NSD 1; one empty: the diagonal of
  the field of view in mm and NSD 0; never nan or inf).
* `confusion_matrix` of label maps: rows true label, columns predicted (as
  sklearn), int64 voxel counts.
* Counts are float32: exact up to 2^24 voxels per channel, and after that off
  by at most ~1e-7 relative, which is far below anything a score shows.

Do not import clu.metric_writers or clu.periodic_actions here (TensorFlow).
"""
# No `from __future__ import annotations`: clu reads the Collection field
# annotations as metric classes at class-creation time.

from typing import Any, Mapping, Sequence

import clu.metrics
import clu.values
import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import activations
from jaxseg.scoring import surface

Array = jax.Array

ACTIVATIONS = tuple(activations.ACTIVATIONS)
SCORES = ('dice', 'iou', 'precision', 'recall', 'specificity', 'f1',
          'accuracy')


# ----------------------------------------------------------------- counting


def confusion_counts(pred: Array, target: Array,
                     mask: Array | None = None) -> dict[str, Array]:
  """Per-sample, per-channel voxel counts of a hard segmentation.

  Args:
    pred: bool (N, *spatial, C) prediction.
    target: bool (N, *spatial, C) ground truth.
    mask: optional (N, *spatial) voxels to count (1) or ignore (0).

  Returns:
    dict tp, fp, fn, tn of float32 (N, C) arrays (sums over spatial axes).
  """
  pred = jnp.asarray(pred).astype(bool)
  target = jnp.asarray(target).astype(bool)
  if pred.shape != target.shape:
    raise ValueError(f'pred {pred.shape} and target {target.shape} differ')
  if pred.ndim < 3:
    raise ValueError(f'expected (N, *spatial, C) arrays, got {pred.shape}')
  if mask is None:
    include = jnp.ones(pred.shape[:-1] + (1,), bool)
  else:
    include = jnp.asarray(mask).astype(bool)
    if include.shape != pred.shape[:-1]:
      raise ValueError(f'mask {include.shape} must be (N, *spatial) '
                       f'{pred.shape[:-1]}')
    include = include[..., None]
  axes = tuple(range(1, pred.ndim - 1))

  def count(x):
    return jnp.sum(x & include, axis=axes, dtype=jnp.float32)

  return dict(tp=count(pred & target), fp=count(pred & ~target),
              fn=count(~pred & target), tn=count(~pred & ~target))


# ------------------------------------------------------- scores from counts


def _xp(*arrays):
  """jax.numpy if any input is a jax array (or tracer), else numpy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _ratio(num, den, empty, xp):
  """num / den, and `empty` where den == 0."""
  if xp is np:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
  ok = den > 0
  return xp.where(ok, num / xp.where(ok, den, 1.0), empty)


def dice_from_counts(tp, fp, fn, tn=None):
  """Dice 2tp / (2tp + fp + fn); 1 when target and prediction are empty."""
  del tn
  xp = _xp(tp, fp, fn)
  return _ratio(2 * tp, 2 * tp + fp + fn, 1.0, xp)


def iou_from_counts(tp, fp, fn, tn=None):
  """IoU (Jaccard) tp / (tp + fp + fn); 1 when both are empty."""
  del tn
  xp = _xp(tp, fp, fn)
  return _ratio(tp, tp + fp + fn, 1.0, xp)


def f1_from_counts(tp, fp, fn, tn=None):
  """Voxel F1 = 2PR / (P + R), which equals Dice (same empty convention)."""
  return dice_from_counts(tp, fp, fn, tn)


def precision_from_counts(tp, fp, fn, tn=None):
  """Precision tp / (tp + fp).

  Nothing predicted: 1 if the target is empty too (fn == 0), else 0.
  """
  del tn
  xp = _xp(tp, fp, fn)
  return _ratio(tp, tp + fp, xp.where(fn == 0, 1.0, 0.0), xp)


def recall_from_counts(tp, fp, fn, tn=None):
  """Recall (sensitivity) tp / (tp + fn).

  Empty target: 1 if nothing is predicted either (fp == 0), else 0.
  """
  del tn
  xp = _xp(tp, fp, fn)
  return _ratio(tp, tp + fn, xp.where(fp == 0, 1.0, 0.0), xp)


def specificity_from_counts(tp, fp, fn, tn):
  """Specificity tn / (tn + fp).

  No target negatives: 1 if no negative is predicted either (fn == 0), else 0.
  """
  del tp
  xp = _xp(tn, fp, fn)
  return _ratio(tn, tn + fp, xp.where(fn == 0, 1.0, 0.0), xp)


def accuracy_from_counts(tp, fp, fn, tn):
  """Accuracy (tp + tn) / (tp + fp + fn + tn); 1 when there are no voxels."""
  xp = _xp(tp, fp, fn, tn)
  return _ratio(tp + tn, tp + fp + fn + tn, 1.0, xp)


SCORE_FNS = {
    'dice': dice_from_counts,
    'iou': iou_from_counts,
    'precision': precision_from_counts,
    'recall': recall_from_counts,
    'specificity': specificity_from_counts,
    'f1': f1_from_counts,
    'accuracy': accuracy_from_counts,
}


def scores_from_counts(tp, fp, fn, tn) -> dict[str, Any]:
  """All of SCORES from counts of any (matching) shape."""
  return {name: fn_(tp, fp, fn, tn) for name, fn_ in SCORE_FNS.items()}


# ------------------------------------------------------- hard predictions


def hard_predictions(logits: Array, targets: Array, activation: str = 'sigmoid',
                     threshold: float = 0.5,
                     include_background: bool | None = None):
  """Boolean (pred, target) from logits and float targets.

  Args:
    logits: (N, *spatial, C).
    targets: (N, *spatial, C) in {0, 1} ('sigmoid') or one-hot ('softmax').
    activation: 'sigmoid' (p > threshold per channel) or 'softmax' (argmax).
    threshold: probability threshold for 'sigmoid' (ignored for 'softmax').
    include_background: keep channel 0. None: True for 'sigmoid' (every
      channel is a foreground region), False for 'softmax' with C > 1
      (channel 0 is the background class).

  Returns:
    (pred, target), bool (N, *spatial, C') with C' = C or C - 1.
  """
  logits = jnp.asarray(logits)
  target = jnp.asarray(targets) > 0.5
  if activation == 'sigmoid':
    if not 0.0 < threshold < 1.0:
      raise ValueError(f'threshold must be in (0, 1), got {threshold}')
    # p > t  <=>  logit > log(t / (1 - t)); exact at t = 0.5 (logit > 0).
    logit_threshold = float(np.log(threshold) - np.log1p(-threshold))
    pred = logits > logit_threshold
    drop_background = include_background is False
  elif activation == 'softmax':
    classes = jnp.argmax(logits, axis=-1)
    pred = jax.nn.one_hot(classes, logits.shape[-1], dtype=jnp.bool_)
    drop_background = (include_background is False or
                       (include_background is None and logits.shape[-1] > 1))
  else:
    raise ValueError(f'unknown activation {activation!r}; known: {ACTIVATIONS}')
  if drop_background:
    pred, target = pred[..., 1:], target[..., 1:]
  return pred, target


# -------------------------------------------------------------- clu metrics


@flax.struct.dataclass
class ConfusionMetric(clu.metrics.Metric):
  """clu Metric accumulating pooled voxel counts and per-sample Dice.

  Fields (summed over every batch merged):
    tp, fp, fn, tn: (C,) float32 counts per channel, pooled over all voxels.
    dice_sum: sum over samples of each sample's channel-mean Dice.
    count: number of samples seen.

  `compute()` returns the SCORES (channel means of the pooled per-channel
  scores) plus 'dice_per_slice' (mean of per-sample Dice), as scalar arrays;
  all nan if no sample was merged. `per_channel()` gives (C,) scores.
  """

  tp: Array
  fp: Array
  fn: Array
  tn: Array
  dice_sum: Array
  count: Array

  @classmethod
  def empty(cls) -> 'ConfusionMetric':
    zero = jnp.zeros((), jnp.float32)
    return cls(tp=zero, fp=zero, fn=zero, tn=zero, dice_sum=zero, count=zero)

  @classmethod
  def from_model_output(cls, logits: Array, targets: Array,
                        activation: str = 'sigmoid',
                        mask: Array | None = None, threshold: float = 0.5,
                        include_background: bool | None = None,
                        **_) -> 'ConfusionMetric':
    """Counts of one batch; see `hard_predictions` for the arguments."""
    pred, target = hard_predictions(logits, targets, activation, threshold,
                                    include_background)
    counts = confusion_counts(pred, target, mask)  # each (N, C)
    per_sample = dice_from_counts(counts['tp'], counts['fp'], counts['fn'])
    return cls(
        tp=counts['tp'].sum(0), fp=counts['fp'].sum(0),
        fn=counts['fn'].sum(0), tn=counts['tn'].sum(0),
        dice_sum=jnp.sum(jnp.mean(per_sample, axis=-1)),
        count=jnp.asarray(pred.shape[0], jnp.float32))

  def merge(self, other: 'ConfusionMetric') -> 'ConfusionMetric':
    return jax.tree_util.tree_map(jnp.add, self, other)

  def per_channel(self) -> dict[str, Array]:
    """Pooled scores per channel, each (C,)."""
    return scores_from_counts(self.tp, self.fp, self.fn, self.tn)

  def compute(self) -> dict[str, Array]:
    # numpy in (after jax.device_get), numpy out: no device compilation.
    xp = _xp(self.tp, self.count)
    seen = self.count > 0
    out = {k: xp.mean(v) for k, v in self.per_channel().items()}
    out['dice_per_slice'] = self.dice_sum / xp.where(seen, self.count, 1.0)
    return {k: xp.where(seen, v, xp.nan) for k, v in out.items()}

  def compute_value(self) -> clu.values.Value:
    raise NotImplementedError('ConfusionMetric computes several scores; use '
                              'compute() or SegMetrics.compute_values()')


def _scalar_loss(loss, **_):
  # Pass mask=None explicitly: a voxel mask is not a mask for the batch loss.
  return dict(values=jnp.asarray(loss, jnp.float32), mask=None)


@flax.struct.dataclass
class SegMetrics(clu.metrics.Collection):
  """Training / evaluation metrics of a segmentation step.

  In a jitted step:
    m = SegMetrics.single_from_model_output(
        loss=loss, logits=logits, targets=targets, activation='sigmoid')
  optional extra keywords: mask (N, *spatial), threshold, include_background.
  Then `m.merge(other)` across steps and `m.compute()` (outside jit) ->
  {loss, dice, iou, precision, recall, specificity, f1, accuracy,
  dice_per_slice} as Python floats. `loss` must be a scalar (batch mean);
  it is averaged over steps, unweighted.
  """

  loss: clu.metrics.Average.from_fun(_scalar_loss)
  confusion: ConfusionMetric

  def compute_arrays(self) -> dict[str, Array]:
    """Flat dict of scalar arrays (usable inside jit)."""
    out = {}
    for name, value in super().compute().items():
      if isinstance(value, Mapping):
        out.update(value)
      else:
        out[name] = value
    return out

  def compute(self) -> dict[str, float]:  # pytype: disable=signature-mismatch
    """Python floats, computed on the host in float64 numpy."""
    host = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64)
                                  if np.issubdtype(np.asarray(x).dtype,
                                                   np.floating) else
                                  np.asarray(x), jax.device_get(self))
    with np.errstate(invalid='ignore', divide='ignore'):  # nothing seen: nan
      return {k: float(v) for k, v in host.compute_arrays().items()}

  def compute_values(self) -> dict[str, clu.values.Value]:
    return {k: clu.values.Scalar(v) for k, v in self.compute().items()}


# ------------------------------------------------------ per-volume (numpy)


def volume_scores(pred: np.ndarray, target: np.ndarray, *,
                  with_surface: bool = False, spacing=None,
                  tolerance: float = surface.NSD_TOLERANCE_MM,
                  hd95_mode: str = 'per_direction') -> dict[str, float]:
  """Scores of one hard segmentation of a case (exact, float64 numpy).

  Args:
    pred: bool (*spatial) prediction of one region / class.
    target: bool (*spatial) ground truth.
    with_surface: also the surface scores hd95, hausdorff, assd (mm) and nsd
      (`jaxseg.scoring.surface.surface_scores`, with its empty conventions).
    spacing: voxel size in mm per axis (None: 1 mm), for the surface scores.
    tolerance: NSD tolerance in mm.
    hd95_mode: 'per_direction' (MONAI, default) or 'pooled' (medpy).

  Returns:
    dict dice, iou, precision, recall, specificity, accuracy (and the
    surface scores) of Python floats, with the module's empty conventions.
  """
  pred = np.asarray(pred).astype(bool)
  target = np.asarray(target).astype(bool)
  if pred.shape != target.shape:
    raise ValueError(f'pred {pred.shape} and target {target.shape} differ')
  tp = np.count_nonzero(pred & target)
  fp = np.count_nonzero(pred & ~target)
  fn = np.count_nonzero(~pred & target)
  tn = pred.size - tp - fp - fn
  scores = {
      name: float(SCORE_FNS[name](tp, fp, fn, tn))
      for name in ('dice', 'iou', 'precision', 'recall', 'specificity',
                   'accuracy')
  }
  if with_surface:
    scores.update(surface.surface_scores(pred, target, spacing,
                                         tolerance=tolerance,
                                         hd95_mode=hd95_mode))
  return scores


def confusion_matrix(pred_label, true_label,
                     labels: Sequence[int]) -> np.ndarray:
  """Voxel confusion matrix of two integer label maps.

  As sklearn.metrics.confusion_matrix: rows are the true label, columns the
  predicted one, in the order of `labels`; voxels whose true or predicted
  value is not in `labels` are not counted.

  Args:
    pred_label: int (*spatial) predicted label map.
    true_label: int (*spatial) ground-truth label map.
    labels: the K distinct label values, e.g. (0, 1, 2, 4).

  Returns:
    int64 (K, K): [i, j] = #voxels with true labels[i] predicted labels[j].
  """
  pred_label = np.asarray(pred_label)
  true_label = np.asarray(true_label)
  if pred_label.shape != true_label.shape:
    raise ValueError(f'pred {pred_label.shape} and true {true_label.shape} '
                     'label maps differ')
  labels = np.asarray(labels).reshape(-1)
  k = labels.size
  if k == 0 or np.unique(labels).size != k:
    raise ValueError(f'labels must be distinct and non-empty, got {labels}')
  order = np.argsort(labels, kind='stable')
  ordered = labels[order]

  def index(x):
    """Row / column of each voxel and whether its value is a label."""
    pos = np.clip(np.searchsorted(ordered, x), 0, k - 1)
    return order[pos], ordered[pos] == x

  rows, true_ok = index(true_label.reshape(-1))
  cols, pred_ok = index(pred_label.reshape(-1))
  ok = true_ok & pred_ok
  counts = np.bincount(rows[ok] * k + cols[ok], minlength=k * k)
  return counts.reshape(k, k).astype(np.int64)


def summarize(
    per_case: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
  """Mean, median and std (ddof=0) of each numeric metric over cases.

  Non-numeric entries (a case id, say) are skipped. nan values propagate.

  Args:
    per_case: one dict metric -> value per case.

  Returns:
    dict metric -> {'mean', 'median', 'std'}, metrics in first-seen order.
  """
  if not per_case:
    raise ValueError('summarize() needs at least one case')
  names = []
  for case in per_case:
    for name, value in case.items():
      if name not in names and isinstance(value, (int, float, np.number)) and (
          not isinstance(value, bool)):
        names.append(name)
  summary = {}
  for name in names:
    missing = [i for i, case in enumerate(per_case) if name not in case]
    if missing:
      raise ValueError(f"metric '{name}' is missing from case(s) {missing}")
    values = np.asarray([case[name] for case in per_case], np.float64)
    summary[name] = dict(mean=float(np.mean(values)),
                         median=float(np.median(values)),
                         std=float(np.std(values)))
  return summary


