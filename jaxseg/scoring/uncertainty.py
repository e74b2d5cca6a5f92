"""Uncertainty maps of sampled probabilities and their scores.

`uncertainty_maps` reduces a stack of T sampled probabilities (Monte-Carlo
dropout draws, `jaxseg.inference.mc_dropout`, or an ensemble's members) to
the mean, std, entropy and mutual information. Scores of an uncertainty map
against a reference segmentation: `qu_brats_scores` (the BraTS 2020
uncertainty task, QU-BraTS) and `expected_calibration_error` (binned ECE
with reliability-diagram data). `plots.plot_case` draws seed 002's figure 3
(input + label, input + prediction, uncertainty).
"""

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr

from jaxseg import activations

ACTIVATIONS = tuple(activations.ACTIVATIONS)
# The BraTS 2020 uncertainty task's thresholds (QU-BraTS paper, section 3).
QU_BRATS_THRESHOLDS = (0.0, 25.0, 50.0, 75.0, 100.0)

_check_activation = activations.check


# ----------------------------------------------------------- uncertainty maps


def binary_entropy(p):
  """Entropy (nats) of Bernoulli(p), elementwise; exactly 0 at p = 0 and 1."""
  return entr(p) + entr(1.0 - p)


def categorical_entropy(p, axis: int = -1):
  """Entropy (nats) of the categorical distributions p along `axis`."""
  return jnp.sum(entr(p), axis=axis)


@functools.partial(jax.jit, static_argnames='activation')
def uncertainty_maps(probs, activation: str) -> dict:
  """Reductions of a stack of sampled probabilities over its first axis.

  Jitted (activation static); also usable inside other jitted code.
  Conventions: natural logarithm (nats). Entropies use `x ln x -> 0` at
  x = 0 (`jax.scipy.special.entr`, as `scipy.stats.entropy`), so 0 and 1 need
  no epsilon; probabilities are only clipped to [0, 1]. `std` is the
  population standard deviation over the T samples (ddof 0, `np.std`'s
  default), the uncertainty seed 002 shows.

  'sigmoid': each channel is an independent Bernoulli; the voxel's entropy
  and mutual information are the SUMS over channels of the per-channel
  binary values (the entropy of the joint of independent channels); the
  per-channel maps are returned too. Maximum: K ln 2 (ln 2 per channel).
  'softmax': the categorical entropy over the K classes; maximum ln K.

  Mutual information (BALD, Houlsby et al. 2011) = entropy of the mean -
  mean over samples of each sample's entropy: >= 0 (concavity), clipped at
  0 against rounding. T = 1 gives std = MI = 0.

  Args:
    probs: (T, ..., K) probabilities (e.g. `mc_dropout_probs`).
    activation: 'sigmoid' or 'softmax'.

  Returns:
    dict of float32 arrays: 'mean', 'std' (..., K); 'entropy',
    'expected_entropy' (mean sample entropy, the aleatoric part),
    'mutual_information' (...); for 'sigmoid' also 'entropy_per_channel',
    'mutual_information_per_channel' (..., K).
  """
  _check_activation(activation)
  probs = jnp.clip(jnp.asarray(probs, jnp.float32), 0.0, 1.0)
  if probs.ndim < 2:
    raise ValueError(f'probs must be (T, ..., K), got shape {probs.shape}')
  mean = jnp.mean(probs, axis=0)
  maps = dict(mean=mean, std=jnp.std(probs, axis=0))
  if activation == 'sigmoid':
    entropy = binary_entropy(mean)
    expected = jnp.mean(binary_entropy(probs), axis=0)
    mi = jnp.maximum(entropy - expected, 0.0)
    maps.update(entropy=entropy.sum(-1), expected_entropy=expected.sum(-1),
                mutual_information=mi.sum(-1), entropy_per_channel=entropy,
                mutual_information_per_channel=mi)
  else:
    entropy = categorical_entropy(mean)
    expected = jnp.mean(categorical_entropy(probs), axis=0)
    maps.update(entropy=entropy, expected_entropy=expected,
                mutual_information=jnp.maximum(entropy - expected, 0.0))
  return maps


def max_uncertainty(kind: str, activation: str, num_channels: int = 1) -> float:
  """Largest value of an uncertainty map, for `uncertainty_to_percent`.

  kind 'entropy' or 'mutual_information': sigmoid K ln 2 (summed channels;
  ln 2 per channel with num_channels=1), softmax ln K. kind 'std': 0.5 (a
  [0, 1] variable's population std).
  """
  _check_activation(activation)
  if kind == 'std':
    return 0.5
  if kind not in ('entropy', 'mutual_information'):
    raise ValueError(f"kind={kind!r}; known: 'entropy', "
                     "'mutual_information', 'std'")
  if activation == 'sigmoid':
    return num_channels * math.log(2.0)
  return math.log(num_channels)


def uncertainty_to_percent(u, max_value: float):
  """Scales an uncertainty map from [0, max_value] to [0, 100] (clipped).

  QU-BraTS expects uncertainties in [0, 100]. Maxima: Bernoulli entropy
  ln 2, K-class entropy ln K, a probability's std 0.5 (`max_uncertainty`).
  """
  if not max_value > 0:
    raise ValueError(f'max_value must be > 0, got {max_value}')
  u = np.asarray(u, np.float64)
  return np.clip(100.0 * u / max_value, 0.0, 100.0)


def _auc(thresholds: np.ndarray, values: np.ndarray) -> float:
  """Trapezoid area under values over thresholds / 100 (x in [0, 1])."""
  return float(np.trapezoid(values, thresholds / 100.0))


def qu_brats_scores(pred, target, uncertainty,
                    thresholds: Sequence[float] = QU_BRATS_THRESHOLDS,
                    brain_mask=None) -> dict:
  """Scores of the BraTS 2020 uncertainty task (QU-BraTS) for one region.

  Mehta et al. 2022, "QU-BraTS: MICCAI BraTS 2020 Challenge on Quantifying
  Uncertainty in Brain Tumor Segmentation" (MELBA), with the conventions of
  its official evaluation code (github.com/RagMeh11/QU-BraTS,
  BraTS_Seg_Uncertainty.py):

    * At threshold tau the voxels with uncertainty > tau are filtered out;
      a voxel with uncertainty exactly tau stays. Uncertainties lie in
      [0, 100], so tau = 100 keeps every voxel.
    * Dice(tau) on the kept voxels; 1 when the kept target and prediction
      are both empty. The brain mask plays no part in the Dice.
    * FTP(tau) = (TP_100 - TP_tau) / TP_100 and FTN(tau) = (TN_100 -
      TN_tau) / TN_100, TP/TN counted inside the brain mask; TP_100 = 0 (or
      TN_100 = 0) gives 0 (the official code divides by count + float32
      eps, which differs from this by < 1e-7 relative).
    * AUC: trapezoid rule over the thresholds normalised to [0, 1] (the
      official sklearn `auc(thresholds, values) / 100`); the thresholds are
      sorted. score = (dice_auc + (1 - ftp_auc) + (1 - ftn_auc)) / 3: high
      Dice on confident voxels, few confident correct voxels filtered.

  The paper ranks with thresholds 0, 25, 50, 75, 100 (the default); the
  official script's default is 41 points, `np.linspace(0, 100, 41)`.

  Args:
    pred, target: bool (...) binary masks of one region (WT, TC or ET).
    uncertainty: (...) floats in [0, 100], higher = less certain.
    thresholds: at least 2 values in [0, 100].
    brain_mask: optional bool (...) mask for the TP/TN counts (the official
      code uses the brain, image > 0); None: every voxel.

  Returns:
    dict: 'thresholds' (sorted, float64), 'dice', 'ftp', 'ftn' (curves, one
    value per threshold), 'dice_auc', 'ftp_auc', 'ftn_auc', 'score'
    (floats).
  """
  pred = np.asarray(pred, bool)
  target = np.asarray(target, bool)
  unc = np.asarray(uncertainty, np.float64)
  if not pred.shape == target.shape == unc.shape:
    raise ValueError(f'pred {pred.shape}, target {target.shape} and '
                     f'uncertainty {unc.shape} must have one shape')
  if unc.size and (np.isnan(unc).any() or unc.min() < 0 or unc.max() > 100):
    raise ValueError('uncertainty must lie in [0, 100] (see '
                     f'uncertainty_to_percent), got [{np.nanmin(unc)}, '
                     f'{np.nanmax(unc)}]')
  taus = np.sort(np.asarray(thresholds, np.float64))
  if taus.size < 2 or taus[0] < 0 or taus[-1] > 100:
    raise ValueError(f'thresholds must be >= 2 values in [0, 100], got '
                     f'{tuple(thresholds)}')
  brain = (np.ones_like(pred) if brain_mask is None
           else np.asarray(brain_mask, bool))
  tp = pred & target
  tn = ~pred & ~target & brain
  tp_all, tn_all = np.sum(tp & brain), np.sum(tn)
  dice, ftp, ftn = [], [], []
  for tau in taus:
    keep = unc <= tau
    inter = np.sum(tp & keep)
    total = np.sum(pred & keep) + np.sum(target & keep)
    dice.append(1.0 if total == 0 else 2.0 * inter / total)
    ftp.append(0.0 if tp_all == 0 else
               (tp_all - np.sum(tp & brain & keep)) / tp_all)
    ftn.append(0.0 if tn_all == 0 else (tn_all - np.sum(tn & keep)) / tn_all)
  dice, ftp, ftn = (np.asarray(v, np.float64) for v in (dice, ftp, ftn))
  dice_auc, ftp_auc, ftn_auc = (_auc(taus, v) for v in (dice, ftp, ftn))
  return dict(thresholds=taus, dice=dice, ftp=ftp, ftn=ftn,
              dice_auc=dice_auc, ftp_auc=ftp_auc, ftn_auc=ftn_auc,
              score=(dice_auc + (1.0 - ftp_auc) + (1.0 - ftn_auc)) / 3.0)


def reliability_bins(confidence, outcome, num_bins: int = 15) -> dict:
  """Equal-width reliability bins of confidences in [0, 1].

  Bin b covers (b/B, (b+1)/B]; 0 falls in the first bin (sklearn's
  `calibration_curve` and MONAI's `calibration_binning` bin the same way).

  Args:
    confidence: (M,) values in [0, 1].
    outcome: (M,) 0/1 (or bool) events the confidence predicts.
    num_bins: B >= 1.

  Returns:
    dict: 'ece' = sum_b count_b |accuracy_b - confidence_b| / M (NaN if
    M = 0); 'bin_edges' (B + 1,); 'bin_confidence', 'bin_accuracy' (B,)
    means per bin, NaN for empty bins; 'bin_count' (B,) int.
  """
  if num_bins < 1:
    raise ValueError(f'num_bins must be >= 1, got {num_bins}')
  conf = np.clip(np.asarray(confidence, np.float64).ravel(), 0.0, 1.0)
  outcome = np.asarray(outcome, np.float64).ravel()
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  index = np.searchsorted(edges[1:-1], conf, side='left')
  count = np.bincount(index, minlength=num_bins)
  with np.errstate(invalid='ignore', divide='ignore'):
    bin_conf = np.bincount(index, conf, num_bins) / count
    bin_acc = np.bincount(index, outcome, num_bins) / count
  gaps = np.where(count > 0, np.abs(bin_acc - bin_conf), 0.0)
  ece = float(np.sum(count * gaps) / conf.size) if conf.size else math.nan
  return dict(ece=ece, bin_edges=edges, bin_confidence=bin_conf,
              bin_accuracy=bin_acc, bin_count=count)


def expected_calibration_error(probs, target, num_bins: int = 15,
                               mask=None, activation: str = 'sigmoid') -> dict:
  """Binned expected calibration error (Guo et al. 2017) over voxels.

  'sigmoid' (binary reliability, per-voxel binary calibration): every entry
  of probs is a probability of a positive event; bins over p compare the
  mean p with the frequency of target = 1. Channels are pooled; pass one
  channel (probs[..., c]) for a per-region ECE. 'softmax': confidence = the
  maximum class probability, outcome = (argmax == true class), the usual
  multi-class ECE. Bins as `reliability_bins`.

  Args:
    probs: sigmoid: (...) probabilities; softmax: (..., K).
    target: sigmoid: (...) 0/1 of probs' shape; softmax: integer labels
      (...) or one-hot (..., K).
    num_bins: equal-width bins on [0, 1].
    mask: optional bool voxel mask: probs' shape, or (sigmoid) probs' shape
      without the last axis (applied to every channel); softmax: (...).
    activation: 'sigmoid' or 'softmax'.

  Returns:
    `reliability_bins`' dict: 'ece' and the reliability-diagram data
    ('bin_edges', 'bin_confidence', 'bin_accuracy', 'bin_count').
  """
  _check_activation(activation)
  probs = np.asarray(probs, np.float64)
  target = np.asarray(target)
  if activation == 'sigmoid':
    if target.shape != probs.shape:
      raise ValueError(f'target {target.shape} must have probs\' shape '
                       f'{probs.shape}')
    confidence, outcome = probs, target.astype(np.float64)
  else:
    if target.shape == probs.shape:
      target = np.argmax(target, axis=-1)
    if target.shape != probs.shape[:-1]:
      raise ValueError(f'target {target.shape} must be labels '
                       f'{probs.shape[:-1]} or one-hot {probs.shape}')
    confidence = probs.max(axis=-1)
    outcome = (probs.argmax(axis=-1) == target).astype(np.float64)
  if mask is not None:
    mask = np.asarray(mask, bool)
    if mask.shape != confidence.shape:
      mask = np.broadcast_to(mask[..., None], confidence.shape)
    confidence, outcome = confidence[mask], outcome[mask]
  return reliability_bins(confidence, outcome, num_bins)
