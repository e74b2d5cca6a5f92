"""Tests of jaxseg.metrics against hand counts, scipy and numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import distance

from jaxseg.scoring import metrics

SCORE_NAMES = ('dice', 'iou', 'precision', 'recall', 'specificity', 'f1',
               'accuracy')


def np_counts(pred, target, mask=None):
  """Pooled (per channel) counts of bool (..., C) arrays, exact ints."""
  if mask is None:
    mask = np.ones(pred.shape[:-1], bool)
  m = mask[..., None]
  axes = tuple(range(pred.ndim - 1))
  return dict(tp=(pred & target & m).sum(axes),
              fp=(pred & ~target & m).sum(axes),
              fn=(~pred & target & m).sum(axes),
              tn=(~pred & ~target & m).sum(axes))


def np_scores(tp, fp, fn, tn):
  """Plain formulas, for counts with no empty denominators."""
  return dict(dice=2 * tp / (2 * tp + fp + fn), iou=tp / (tp + fp + fn),
              precision=tp / (tp + fp), recall=tp / (tp + fn),
              specificity=tn / (tn + fp), f1=2 * tp / (2 * tp + fp + fn),
              accuracy=(tp + tn) / (tp + fp + fn + tn))


# ------------------------------------------------------------ raw counts


counts_fn = jax.jit(metrics.confusion_counts)


def test_confusion_counts_hand_worked():
  # Sample 0 (2x2, one channel):  pred 1 1   target 1 0
  #                                     0 0          1 0
  # tp = 1 (top-left), fp = 1 (top-right), fn = 1 (bottom-left), tn = 1.
  # Sample 1: pred all 1, target all 1 -> tp = 4.
  pred = np.array([[[1, 1], [0, 0]], [[1, 1], [1, 1]]], bool)[..., None]
  target = np.array([[[1, 0], [1, 0]], [[1, 1], [1, 1]]], bool)[..., None]
  c = counts_fn(pred, target)
  assert set(c) == {'tp', 'fp', 'fn', 'tn'}
  for v in c.values():
    assert v.shape == (2, 1) and v.dtype == jnp.float32
  np.testing.assert_array_equal(c['tp'][:, 0], [1, 4])
  np.testing.assert_array_equal(c['fp'][:, 0], [1, 0])
  np.testing.assert_array_equal(c['fn'][:, 0], [1, 0])
  np.testing.assert_array_equal(c['tn'][:, 0], [1, 0])
  # Dice of sample 0 = 2*1 / (2*1 + 1 + 1) = 0.5, IoU = 1/3.
  c_np = {k: np.asarray(v) for k, v in c.items()}
  np.testing.assert_allclose(metrics.dice_from_counts(**c_np)[:, 0], [0.5, 1])
  np.testing.assert_allclose(metrics.iou_from_counts(**c_np)[:, 0], [1 / 3, 1])
  # Mask out the bottom row of sample 0: tp = 1, fp = 1, fn = 0, tn = 0.
  mask = np.ones((2, 2, 2), bool)
  mask[0, 1] = False
  c = counts_fn(pred, target, mask)
  np.testing.assert_array_equal(
      np.stack([c[k][0, 0] for k in ('tp', 'fp', 'fn', 'tn')]), [1, 1, 0, 0])


def test_confusion_counts_random_3d_matches_numpy():
  rng = np.random.default_rng(0)
  pred = rng.uniform(size=(3, 4, 5, 6, 2)) > 0.5
  target = rng.uniform(size=(3, 4, 5, 6, 2)) > 0.6
  mask = rng.uniform(size=(3, 4, 5, 6)) > 0.2
  c = counts_fn(pred, target, mask)
  for i in range(3):
    want = np_counts(pred[i], target[i], mask[i])
    for k in want:
      np.testing.assert_array_equal(c[k][i], want[k])
  total = sum(c[k] for k in c)
  np.testing.assert_array_equal(total, mask.sum((1, 2, 3))[:, None] + 0 * total)


# ------------------------------------------------------ empty conventions

# (tp, fp, fn, tn) -> expected scores, worked by hand from the conventions.
EMPTY_CASES = [
    # Both empty (tumour-free slice, nothing predicted): a perfect answer.
    ((0, 0, 0, 8), dict(dice=1, iou=1, precision=1, recall=1, specificity=1,
                        f1=1, accuracy=1)),
    # Target empty, 3 voxels predicted: precision 0/3, recall undefined -> 0
    # (fp > 0), specificity 5/8, accuracy 5/8.
    ((0, 3, 0, 5), dict(dice=0, iou=0, precision=0, recall=0,
                        specificity=5 / 8, f1=0, accuracy=5 / 8)),
    # Nothing predicted, 2 target voxels: precision undefined -> 0 (fn > 0),
    # recall 0/2, specificity 6/6, accuracy 6/8.
    ((0, 0, 2, 6), dict(dice=0, iou=0, precision=0, recall=0, specificity=1,
                        f1=0, accuracy=6 / 8)),
    # Everything is tumour and predicted so: specificity undefined -> 1.
    ((8, 0, 0, 0), dict(dice=1, iou=1, precision=1, recall=1, specificity=1,
                        f1=1, accuracy=1)),
    # Everything is tumour, half predicted: specificity undefined -> 0 (fn>0).
    ((4, 0, 4, 0), dict(dice=8 / 12, iou=0.5, precision=1, recall=0.5,
                        specificity=0, f1=8 / 12, accuracy=0.5)),
    # No voxels at all (fully masked): every score 1.
    ((0, 0, 0, 0), dict(dice=1, iou=1, precision=1, recall=1, specificity=1,
                        f1=1, accuracy=1)),
]


@pytest.mark.parametrize('counts,want', EMPTY_CASES)
def test_empty_conventions_numpy_and_jax(counts, want):
  got_np = metrics.scores_from_counts(*counts)
  got_jax = jax.jit(metrics.scores_from_counts)(
      *(jnp.float32(c) for c in counts))
  assert set(got_np) == set(SCORE_NAMES)
  for name in SCORE_NAMES:
    assert float(got_np[name]) == pytest.approx(want[name]), name
    assert float(got_jax[name]) == pytest.approx(want[name]), name
    assert np.isfinite(got_jax[name])


def test_scores_match_scipy():
  rng = np.random.default_rng(1)
  for _ in range(20):
    n = rng.integers(5, 40)
    a = rng.uniform(size=n) > rng.uniform()
    b = rng.uniform(size=n) > rng.uniform()
    if not (a.any() or b.any()):
      continue  # scipy has no convention for two empty sets
    s = metrics.volume_scores(a, b)
    assert s['dice'] == pytest.approx(1 - distance.dice(a, b))
    assert s['iou'] == pytest.approx(1 - distance.jaccard(a, b))
    assert s['accuracy'] == pytest.approx(1 - distance.hamming(a, b))


# ----------------------------------------------------------- clu metrics


@jax.jit
def _sigmoid_step(loss, logits, targets, mask):
  return metrics.SegMetrics.single_from_model_output(
      loss=loss, logits=logits, targets=targets, mask=mask,
      activation='sigmoid')


def test_seg_metrics_pooled_over_batches():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 4, 6, 6, 3)).astype(np.float32)  # 3 batches
  targets = (rng.uniform(size=logits.shape) > 0.6).astype(np.float32)
  mask = rng.uniform(size=logits.shape[:-1]) > 0.1
  batch_losses = [0.5, 0.25, 1.0]
  collected = None
  for i in range(3):
    update = _sigmoid_step(batch_losses[i], logits[i], targets[i], mask[i])
    collected = update if collected is None else collected.merge(update)
  got = collected.compute()

  assert set(got) == {'loss', 'dice_per_slice', *SCORE_NAMES}
  assert all(isinstance(v, float) for v in got.values())
  assert got['loss'] == pytest.approx(np.mean(batch_losses))

  # Reference: pool counts over all 12 slices per channel, then average the
  # channels' scores; per-slice Dice averaged over the 12 slices.
  pred, target = logits > 0, targets > 0.5
  flat = lambda a: a.reshape((-1,) + a.shape[2:])
  counts = np_counts(flat(pred), flat(target), flat(mask))
  want = {k: np.mean(v) for k, v in np_scores(**counts).items()}
  for name in SCORE_NAMES:
    assert got[name] == pytest.approx(want[name], rel=1e-5), name
  per_slice = []
  for p, t, m in zip(flat(pred), flat(target), flat(mask)):
    c = np_counts(p[None], t[None], m[None])
    per_slice.append(np.mean(2 * c['tp'] / (2 * c['tp'] + c['fp'] + c['fn'])))
  assert got['dice_per_slice'] == pytest.approx(np.mean(per_slice), rel=1e-5)
  # Pooled Dice is not the mean of per-slice Dice.
  assert abs(got['dice'] - got['dice_per_slice']) > 1e-3

  # Per channel, and the empty collection (clu style: merge onto empty).
  per_channel = jax.device_get(collected.confusion).per_channel()
  assert per_channel['dice'].shape == (3,)
  np.testing.assert_allclose(per_channel['dice'],
                             np_scores(**counts)['dice'], rtol=1e-5)
  from_empty = metrics.SegMetrics.empty()
  for i in range(3):
    from_empty = from_empty.merge(
        _sigmoid_step(batch_losses[i], logits[i], targets[i], mask[i]))
  assert from_empty.compute() == pytest.approx(got)
  # compute_arrays also works on device, inside jit (float32 there).
  on_device = jax.jit(lambda m: m.compute_arrays())(collected)
  assert {k: float(v) for k, v in on_device.items()} == pytest.approx(
      got, rel=1e-5)


def test_seg_metrics_empty_slices_and_nothing_seen():
  # One slice with tumour found exactly, one tumour-free slice predicted
  # empty: pooled Dice 1, per-slice Dice (1 + 1) / 2 = 1.
  targets = np.zeros((2, 4, 4, 1), np.float32)
  targets[0, 1:3, 1:3] = 1
  logits = np.where(targets > 0, 5.0, -5.0).astype(np.float32)
  m = _sigmoid_step(0.0, logits, targets, np.ones((2, 4, 4), bool)).compute()
  assert m['dice'] == 1.0 and m['dice_per_slice'] == 1.0
  assert m['precision'] == 1.0 and m['recall'] == 1.0
  # Tumour-free slice now with one false positive: its Dice is 0, so the
  # per-slice mean drops to 0.5; pooled Dice = 2*4 / (2*4 + 1) = 8/9.
  logits[1, 0, 0, 0] = 5.0
  m = _sigmoid_step(0.0, logits, targets, np.ones((2, 4, 4), bool)).compute()
  assert m['dice_per_slice'] == pytest.approx(0.5)
  assert m['dice'] == pytest.approx(8 / 9)
  # Nothing merged: nan (clu's Average convention), not a fake perfect 1.
  empty = metrics.SegMetrics.empty().compute()
  assert all(np.isnan(v) for v in empty.values())


def test_seg_metrics_softmax_background():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
  classes = rng.integers(0, 4, size=(2, 5, 5))
  targets = np.eye(4, dtype=np.float32)[classes]
  pred_classes = logits.argmax(-1)
  pred = np.eye(4, dtype=bool)[pred_classes]
  target = targets > 0.5

  def run(**kwargs):
    return jax.jit(lambda l, t: metrics.SegMetrics.single_from_model_output(
        loss=0.0, logits=l, targets=t, activation='softmax', **kwargs))(
            logits, targets).compute()

  counts = np_counts(pred, target)
  fg = {k: np.mean(v[1:]) for k, v in np_scores(**counts).items()}
  every = {k: np.mean(v) for k, v in np_scores(**counts).items()}
  default = run()  # softmax drops the background channel by default
  with_bg = run(include_background=True)
  for name in SCORE_NAMES:
    assert default[name] == pytest.approx(fg[name], rel=1e-5), name
    assert with_bg[name] == pytest.approx(every[name], rel=1e-5), name


def test_threshold():
  logits = np.array([-1.0, 0.5, 1.0, 3.0], np.float32).reshape(1, 4, 1)
  targets = np.array([0, 1, 1, 1], np.float32).reshape(1, 4, 1)
  # p = 0.27, 0.62, 0.73, 0.95: at 0.5 all three positives are found; at 0.9
  # only the last one -> recall 1/3, precision 1.
  step = jax.jit(metrics.SegMetrics.single_from_model_output,
                 static_argnames=('threshold',))
  half = step(loss=0.0, logits=logits, targets=targets).compute()
  high = step(loss=0.0, logits=logits, targets=targets,
              threshold=0.9).compute()
  assert half['recall'] == 1.0
  assert high['recall'] == pytest.approx(1 / 3)
  assert high['precision'] == 1.0


# --------------------------------------------------------- per volume


def test_volume_scores_hand_worked_and_empty():
  # 3x3 target square of 4 voxels, prediction 3 of them + 2 outside:
  # tp 3, fp 2, fn 1, tn 3 -> dice 6/9, iou 3/6, precision 3/5, recall 3/4,
  # specificity 3/5, accuracy 6/9.
  target = np.zeros((3, 3), bool)
  target[:2, :2] = True
  pred = np.zeros((3, 3), bool)
  pred[0, :] = True
  pred[1, 0] = True
  pred[2, 2] = True
  s = metrics.volume_scores(pred, target)
  want = dict(dice=6 / 9, iou=0.5, precision=0.6, recall=0.75,
              specificity=0.6, accuracy=6 / 9)
  assert s == pytest.approx(want)
  assert all(isinstance(v, float) for v in s.values())
  empty = np.zeros((4, 4, 4), bool)
  assert metrics.volume_scores(empty, empty)['dice'] == 1.0
  assert metrics.volume_scores(empty, empty)['precision'] == 1.0
  missed = metrics.volume_scores(empty, ~empty)
  assert missed['dice'] == 0.0 and missed['precision'] == 0.0
  with pytest.raises(ValueError):
    metrics.volume_scores(empty, empty[0])


def test_summarize():
  per_case = [dict(case='a', dice=0.9, iou=0.8),
              dict(case='b', dice=0.5, iou=0.4),
              dict(case='c', dice=0.7, iou=1.0)]
  s = metrics.summarize(per_case)
  assert list(s) == ['dice', 'iou']  # the case id is skipped
  assert s['dice'] == pytest.approx(dict(mean=0.7, median=0.7,
                                         std=np.std([0.9, 0.5, 0.7])))
  assert s['iou']['median'] == pytest.approx(0.8)
  with pytest.raises(ValueError):
    metrics.summarize([])
  with pytest.raises(ValueError, match='missing'):
    metrics.summarize([dict(dice=1.0), dict(iou=1.0)])


# ------------------------------------------------------ confusion matrix


def test_confusion_matrix_hand_worked():
  #       voxel:   0  1  2  3  4  5  6  7  8  9
  true = np.array([0, 0, 1, 2, 4, 4, 2, 0, 9, 1])
  pred = np.array([0, 1, 1, 2, 2, 4, 0, 4, 0, 3])
  # Voxel 8 (true 9) and voxel 9 (predicted 3) are outside the labels.
  # Rows true 0, 1, 2, 4; columns predicted 0, 1, 2, 4:
  #   true 0: voxels 0 -> 0, 1 -> 1, 7 -> 4
  #   true 1: voxel 2 -> 1
  #   true 2: voxels 3 -> 2, 6 -> 0
  #   true 4: voxels 4 -> 2, 5 -> 4
  want = np.array([[1, 1, 0, 1],
                   [0, 1, 0, 0],
                   [1, 0, 1, 0],
                   [0, 0, 1, 1]])
  got = metrics.confusion_matrix(pred, true, (0, 1, 2, 4))
  assert got.dtype == np.int64
  np.testing.assert_array_equal(got, want)
  # Rows and columns follow the order of `labels`.
  order = [3, 0, 2, 1]  # labels (4, 0, 2, 1)
  np.testing.assert_array_equal(
      metrics.confusion_matrix(pred, true, (4, 0, 2, 1)),
      want[np.ix_(order, order)])
  with pytest.raises(ValueError, match='distinct'):
    metrics.confusion_matrix(pred, true, (0, 1, 1))
  with pytest.raises(ValueError, match='differ'):
    metrics.confusion_matrix(pred, true[:-1], (0, 1))


def test_confusion_matrix_random_3d_matches_brute_force():
  rng = np.random.default_rng(4)
  labels = (0, 1, 2, 3)  # BraTS 2023 convention
  true = rng.choice(labels, size=(9, 8, 7))
  pred = rng.choice(labels, size=(9, 8, 7))
  got = metrics.confusion_matrix(pred.astype(np.uint8), true, labels)
  for i, a in enumerate(labels):
    for j, b in enumerate(labels):
      assert got[i, j] == np.count_nonzero((true == a) & (pred == b))
  assert got.sum() == true.size


# ------------------------------------------------ surface scores per volume


def test_volume_scores_with_surface():
  # The shifted squares of test_surface: hd95 = hausdorff = 0.5 mm,
  # assd 0.25 mm, nsd at 0.4 mm = 0.5; overlap tp 6, fp 3, fn 3.
  target = np.zeros((5, 6), bool)
  target[1:4, 1:4] = True
  pred = np.roll(target, 1, axis=1)
  plain = metrics.volume_scores(pred, target)
  assert not set(plain) & {'hd95', 'hausdorff', 'assd', 'nsd'}
  s = metrics.volume_scores(pred, target, with_surface=True,
                            spacing=(2.0, 0.5), tolerance=0.4)
  assert s == pytest.approx(dict(plain, hd95=0.5, hausdorff=0.5, assd=0.25,
                                 nsd=0.5))
  assert s['dice'] == pytest.approx(12 / 18)
  assert all(isinstance(v, float) for v in s.values())


def test_summarize_surface_columns():
  # An ET missed entirely scores the field-of-view diagonal, so the mean is
  # finite and dominated by it while the median is not.
  per_case = [dict(case='a', dice_ET=1.0, hd95_ET=0.0, assd_ET=0.0),
              dict(case='b', dice_ET=0.0, hd95_ET=373.13, assd_ET=373.13),
              dict(case='c', dice_ET=0.8, hd95_ET=2.0, assd_ET=0.5)]
  s = metrics.summarize(per_case)
  assert list(s) == ['dice_ET', 'hd95_ET', 'assd_ET']
  hd = np.array([0.0, 373.13, 2.0])
  assert s['hd95_ET'] == pytest.approx(dict(mean=hd.mean(), median=2.0,
                                            std=hd.std()))
  assert s['assd_ET']['median'] == 0.5
