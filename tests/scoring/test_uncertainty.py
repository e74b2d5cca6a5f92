"""Monte-Carlo dropout (jaxseg.inference.mc_dropout), uncertainty maps and scores (jaxseg.scoring.uncertainty).

References: a Python loop of plain `model.apply` calls over the same keys
(MC dropout), scipy.stats.entropy and numpy (maps), hand-worked QU-BraTS
curves (the conventions of github.com/RagMeh11/QU-BraTS), a hand-worked
ECE, a loop-based ECE and MONAI's calibration metric.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.special
import scipy.stats

from jaxseg import models
from jaxseg.inference import mc_dropout as mc
from jaxseg.scoring import uncertainty as unc
from jaxseg.errors import InputError
from jaxseg.models import shapes

LN2 = math.log(2.0)
T = 5

# ------------------------------------------------------------- MC dropout


def tiny_resunet(dropout_rate, num_classes=1):
  """A one-level ResU-Net: residual stage + spatial dropout, BN, LayerNorm."""
  return models.build(ml_collections.ConfigDict(dict(
      name='resunet', num_classes=num_classes, widths=(4,), depths=(1,),
      output_depth=1, dropout_rate=dropout_rate)))


@pytest.fixture(scope='module')
def setup():
  """Images (3, 8, 8, 2), a dropout model, its rate-0 twin, variables.

  Running means/variances are set away from init's 0/1 so that batch norm
  in inference mode is told apart from batch statistics.
  """
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 8, 8, 2)), jnp.float32)
  model = tiny_resunet(0.5)
  variables = shapes.random_variables(model, x)

  def stats(path, leaf):
    name = path[-1].key
    values = (rng.uniform(0.5, 2.0, leaf.shape) if name == 'var'
              else rng.normal(size=leaf.shape))
    return jnp.asarray(values, leaf.dtype)

  variables = dict(variables, batch_stats=jax.tree_util.tree_map_with_path(
      stats, variables['batch_stats']))
  return dict(x=x, model=model, plain=tiny_resunet(0.0), variables=variables,
              key=jax.random.key(42))


def loop_probs(model, variables, x, key, num_samples):
  """The reference: one eager apply per key, no vmap, no jit."""
  return np.stack([
      np.asarray(jax.nn.sigmoid(model.apply(
          variables, x, train=False, rngs={'mc_dropout': k})))
      for k in jax.random.split(key, num_samples)])


@pytest.mark.slow
def test_vmap_equals_loop_over_keys(setup):
  s = setup
  probs = mc.mc_dropout_probs(s['model'].apply, s['variables'], s['x'],
                               s['key'], T, 'sigmoid')
  expected = loop_probs(s['model'], s['variables'], s['x'], s['key'], T)
  assert probs.shape == (T, 3, 8, 8, 1) and probs.dtype == jnp.float32
  np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
  # The draws differ (dropout samples), so the comparison is not vacuous.
  assert np.abs(expected[0] - expected[1]).max() > 1e-3
  maps = mc.mc_dropout_predict(s['model'].apply, s['variables'], s['x'],
                                s['key'], T, 'sigmoid')
  np.testing.assert_allclose(maps['mean'], expected.mean(0), atol=1e-5)
  np.testing.assert_allclose(maps['std'], expected.std(0), atol=1e-5)


def test_chunked_equals_all_at_once(setup):
  s = setup
  args = (s['model'].apply, s['variables'], s['x'], s['key'], T, 'sigmoid')
  np.testing.assert_allclose(mc.mc_dropout_probs(*args, chunk=2),
                             mc.mc_dropout_probs(*args, chunk=0),
                             atol=1e-6, rtol=0)


def key_offset(key):
  """A number in [0, 1) read off the key's bits (cheaper than sampling)."""
  return (jax.random.key_data(key)[-1] % 1000).astype(jnp.float32) / 1000.0


def fake_apply(variables, x, train, rngs):
  """A deep-supervision-like apply: [aux head, main head = x * w + offset]."""
  assert not train
  return [jnp.zeros_like(x), x * variables['w'] + key_offset(rngs['mc_dropout'])]


@pytest.mark.parametrize('chunk', [0, 2, 7])
def test_key_contract_and_main_head(chunk):
  """Draw t sees split(key, T)[t]; padding up to chunks drops the extras."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 4)), jnp.float32)
  key = jax.random.key(7)
  probs = mc.mc_dropout_probs(fake_apply, {'w': 2.0}, x, key, T, 'softmax',
                               chunk=chunk)
  offsets = [float(key_offset(k)) for k in jax.random.split(key, T)]
  assert len(set(offsets)) == T
  expected = np.stack([scipy.special.softmax(2.0 * np.asarray(x) + o, axis=-1)
                       for o in offsets])
  np.testing.assert_allclose(probs, expected, atol=1e-6, rtol=0)


def test_batch_norm_stays_in_inference_mode(setup):
  s = setup
  # Rate 0: every draw is the plain inference output (running statistics).
  plain = jax.nn.sigmoid(s['plain'].apply(s['variables'], s['x'], train=False))
  probs = mc.mc_dropout_probs(s['plain'].apply, s['variables'], s['x'],
                               s['key'], 3, 'sigmoid')
  for draw in probs:
    np.testing.assert_allclose(draw, plain, atol=1e-6, rtol=0)
  # With dropout, image 0's draw does not depend on the rest of the batch
  # (batch statistics would couple them); same key -> same masks for row 0.
  other = s['x'].at[1:].set(s['x'][1:] * 3.0 + 1.0)
  a = mc.mc_dropout_probs(s['model'].apply, s['variables'], s['x'],
                           s['key'], T, 'sigmoid')
  b = mc.mc_dropout_probs(s['model'].apply, s['variables'], other,
                           s['key'], T, 'sigmoid')
  np.testing.assert_allclose(a[:, 0], b[:, 0], atol=1e-6, rtol=0)
  assert np.abs(a[:, 1] - b[:, 1]).max() > 1e-3


def test_has_dropout(setup):
  s = setup
  assert mc.has_dropout(s['model'].apply, s['variables'], s['x'][:1])
  assert not mc.has_dropout(s['plain'].apply, s['variables'], s['x'][:1])
  with pytest.raises(InputError, match='mc_samples.*dropout'):
    mc.require_dropout(s['plain'].apply, s['variables'], s['x'][:1])


def test_bad_arguments(setup):
  s = setup
  args = (s['model'].apply, s['variables'], s['x'], s['key'])
  with pytest.raises(ValueError, match='activation'):
    mc.mc_dropout_probs(*args, 2, 'relu')
  with pytest.raises(ValueError, match='num_samples'):
    mc.mc_dropout_probs(*args, 0, 'sigmoid')
  with pytest.raises(ValueError, match='chunk'):
    mc.mc_dropout_probs(*args, 2, 'sigmoid', chunk=-1)


# ------------------------------------------------------- uncertainty maps


def test_maps_of_opposite_sigmoid_samples():
  probs = np.array([[[0.0]], [[1.0]]], np.float32)  # T=2, (1, K=1)
  maps = unc.uncertainty_maps(probs, 'sigmoid')
  np.testing.assert_allclose(maps['mean'], [[0.5]])
  np.testing.assert_allclose(maps['std'], [[0.5]])
  np.testing.assert_allclose(maps['entropy'], [LN2], rtol=1e-6)
  np.testing.assert_allclose(maps['expected_entropy'], [0.0], atol=1e-7)
  np.testing.assert_allclose(maps['mutual_information'], [LN2], rtol=1e-6)


def test_maps_of_identical_samples_have_no_mutual_information():
  p = np.array([0.1, 0.3, 0.5, 0.9], np.float32)
  probs = np.broadcast_to(p[:, None], (4, 4, 1))  # T=4 identical draws
  maps = unc.uncertainty_maps(probs, 'sigmoid')
  hand = -(p * np.log(p) + (1 - p) * np.log(1 - p))
  np.testing.assert_allclose(maps['entropy'], hand, rtol=1e-5)
  np.testing.assert_allclose(maps['mutual_information'], 0.0, atol=1e-6)
  np.testing.assert_allclose(maps['std'], 0.0, atol=1e-7)


def test_sigmoid_channels_sum_binary_entropies():
  rng = np.random.default_rng(2)
  probs = rng.uniform(size=(6, 5, 3)).astype(np.float32)  # T=6, 5 voxels, K=3
  maps = unc.uncertainty_maps(probs, 'sigmoid')
  mean = probs.mean(0)
  per_channel = scipy.stats.entropy(np.stack([mean, 1 - mean]), axis=0)
  expected = scipy.stats.entropy(np.stack([probs, 1 - probs]), axis=0).mean(0)
  np.testing.assert_allclose(maps['entropy_per_channel'], per_channel,
                             rtol=1e-5)
  np.testing.assert_allclose(maps['entropy'], per_channel.sum(-1), rtol=1e-5)
  np.testing.assert_allclose(maps['mutual_information_per_channel'],
                             per_channel - expected, atol=1e-6)
  np.testing.assert_allclose(maps['mutual_information'],
                             (per_channel - expected).sum(-1), atol=1e-6)
  np.testing.assert_allclose(maps['std'], np.std(probs, axis=0), atol=1e-6)


def test_softmax_maps_against_scipy():
  rng = np.random.default_rng(3)
  probs = rng.dirichlet(np.ones(4) * 0.7, size=(6, 2, 3)).astype(np.float32)
  maps = unc.uncertainty_maps(probs, 'softmax')
  mean = probs.mean(0)
  entropy = scipy.stats.entropy(mean, axis=-1)
  expected = scipy.stats.entropy(probs, axis=-1).mean(0)
  np.testing.assert_allclose(maps['mean'], mean, atol=1e-6)
  np.testing.assert_allclose(maps['std'], np.std(probs, axis=0), atol=1e-6)
  np.testing.assert_allclose(maps['entropy'], entropy, rtol=1e-5)
  np.testing.assert_allclose(maps['expected_entropy'], expected, rtol=1e-5)
  np.testing.assert_allclose(maps['mutual_information'], entropy - expected,
                             atol=1e-5)
  assert np.all(np.asarray(maps['mutual_information']) >= 0)
  assert np.all(np.asarray(maps['entropy']) <= math.log(4) + 1e-6)


def test_percent_scaling():
  np.testing.assert_allclose(
      unc.uncertainty_to_percent([0.0, LN2 / 2, LN2, 1.0], LN2),
      [0.0, 50.0, 100.0, 100.0])
  assert unc.max_uncertainty('entropy', 'softmax', 4) == pytest.approx(
      math.log(4))
  assert unc.max_uncertainty('entropy', 'sigmoid', 3) == pytest.approx(
      3 * LN2)
  assert unc.max_uncertainty('std', 'sigmoid') == 0.5


# --------------------------------------------------------------- QU-BraTS

# voxel:     0  1   2   3   4  5   6   7    8   9
TARGET = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
PRED = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]  # TP 0-2, FN 3, FP 4, TN 5-9
UNC = [0, 10, 60, 80, 90, 0, 30, 55, 100, 20]


def test_qu_brats_hand_worked():
  scores = unc.qu_brats_scores(PRED, TARGET, UNC)
  # tau:   0: keeps 0, 5            -> TP 1 of 3, TN 1 of 5, Dice 2/2
  #       25: keeps 0, 1, 5, 9      -> TP 2, TN 2, Dice 4/4
  #       50: keeps 0, 1, 5, 6, 9   -> TP 2, TN 3, Dice 4/4
  #       75: keeps 0-2, 5-7, 9     -> TP 3, TN 4, Dice 6/6
  #      100: keeps all             -> TP 3, TN 5, Dice 6/8
  np.testing.assert_allclose(scores['thresholds'], [0, 25, 50, 75, 100])
  np.testing.assert_allclose(scores['dice'], [1, 1, 1, 1, 0.75])
  np.testing.assert_allclose(scores['ftp'], [2 / 3, 1 / 3, 1 / 3, 0, 0])
  np.testing.assert_allclose(scores['ftn'], [0.8, 0.6, 0.4, 0.2, 0.0])
  # Trapezoids of width 0.25.
  dice_auc = 0.25 * (1 + 1 + 1 + (1 + 0.75) / 2)
  ftp_auc = 0.25 * ((2 / 3 + 1 / 3) / 2 + 1 / 3 + (1 / 3) / 2)
  ftn_auc = 0.25 * (0.7 + 0.5 + 0.3 + 0.1)
  assert scores['dice_auc'] == pytest.approx(dice_auc)  # 0.96875
  assert scores['ftp_auc'] == pytest.approx(ftp_auc)  # 0.25
  assert scores['ftn_auc'] == pytest.approx(ftn_auc)  # 0.4
  assert scores['score'] == pytest.approx((0.96875 + 0.75 + 0.6) / 3)
  # Order of the thresholds does not matter.
  again = unc.qu_brats_scores(PRED, TARGET, UNC, thresholds=(100, 50, 0, 75, 25))
  assert again['score'] == pytest.approx(scores['score'])


def test_qu_brats_brain_mask_counts_only_brain_voxels():
  brain = np.ones(10, bool)
  brain[[8, 9]] = False  # TN left in the brain: 5, 6, 7 (u 0, 30, 55)
  scores = unc.qu_brats_scores(PRED, TARGET, UNC, brain_mask=brain)
  np.testing.assert_allclose(scores['ftn'], [2 / 3, 2 / 3, 1 / 3, 0, 0])
  np.testing.assert_allclose(scores['dice'], [1, 1, 1, 1, 0.75])


def test_qu_brats_invariants():
  rng = np.random.default_rng(4)
  pred = rng.random((6, 6, 6)) < 0.4
  target = rng.random((6, 6, 6)) < 0.4
  plain = 2 * np.sum(pred & target) / (pred.sum() + target.sum())
  certain = unc.qu_brats_scores(pred, target, np.zeros(pred.shape))
  np.testing.assert_allclose(certain['dice'], plain)
  np.testing.assert_allclose(certain['ftp'], 0.0)
  np.testing.assert_allclose(certain['ftn'], 0.0)
  assert certain['dice_auc'] == pytest.approx(plain)
  # Oracle: 100 exactly on the errors, anything below 100 elsewhere.
  oracle = np.where(pred != target, 100.0, rng.uniform(0, 99, pred.shape))
  scores = unc.qu_brats_scores(pred, target, oracle)
  np.testing.assert_allclose(scores['dice'][:-1], 1.0)
  assert scores['dice'][-1] == pytest.approx(plain)


def test_qu_brats_edge_cases():
  empty = np.zeros(8, bool)
  u = np.linspace(0, 100, 8)
  scores = unc.qu_brats_scores(empty, empty, u)
  np.testing.assert_allclose(scores['dice'], 1.0)  # empty vs empty
  np.testing.assert_allclose(scores['ftp'], 0.0)  # TP_100 = 0
  assert scores['ftn'][-1] == 0.0 and scores['ftn'][0] == pytest.approx(7 / 8)
  full = np.ones(8, bool)
  scores = unc.qu_brats_scores(full, full, u)
  np.testing.assert_allclose(scores['ftn'], 0.0)  # TN_100 = 0
  with pytest.raises(ValueError, match=r'\[0, 100\]'):
    unc.qu_brats_scores(full, full, u * 2)
  with pytest.raises(ValueError, match='shape'):
    unc.qu_brats_scores(full, full[:4], u)


# ------------------------------------------------------------- calibration


def test_ece_hand_worked():
  probs = np.array([0.1, 0.2, 0.8, 0.9, 0.95])
  target = np.array([0, 1, 1, 1, 0])
  out = unc.expected_calibration_error(probs, target, num_bins=2)
  # Bin (0, .5]: conf .15, freq 1/2; bin (.5, 1]: conf 2.65/3, freq 2/3.
  np.testing.assert_allclose(out['bin_count'], [2, 3])
  np.testing.assert_allclose(out['bin_confidence'], [0.15, 2.65 / 3])
  np.testing.assert_allclose(out['bin_accuracy'], [0.5, 2 / 3])
  assert out['ece'] == pytest.approx((2 * 0.35 + 3 * (2.65 / 3 - 2 / 3)) / 5)
  assert out['ece'] == pytest.approx(0.27)


def test_ece_bin_edges_and_mask():
  out = unc.expected_calibration_error([0.0, 0.5, 0.5001, 1.0], [0, 0, 1, 1],
                                       num_bins=2)
  np.testing.assert_allclose(out['bin_count'], [2, 2])  # (lo, hi], 0 in bin 0
  empty = unc.expected_calibration_error([0.05, 0.06], [0, 0], num_bins=4)
  assert np.isnan(empty['bin_confidence'][1]) and empty['bin_count'][1] == 0
  rng = np.random.default_rng(5)
  probs = rng.uniform(size=(4, 5, 2))
  target = rng.random((4, 5, 2)) < probs
  mask = rng.random((4, 5)) < 0.5
  masked = unc.expected_calibration_error(probs, target, mask=mask)
  subset = unc.expected_calibration_error(probs[mask], target[mask])
  assert masked['ece'] == pytest.approx(subset['ece'])


def loop_ece_softmax(probs, labels, num_bins):
  """Max-probability ECE, one voxel at a time."""
  flat = probs.reshape(-1, probs.shape[-1])
  sums = [[0, 0.0, 0.0] for _ in range(num_bins)]  # count, conf, correct
  for p, label in zip(flat, labels.ravel()):
    conf, guess = max((v, -k) for k, v in enumerate(p))
    for b in range(num_bins):
      if b / num_bins < conf <= (b + 1) / num_bins:
        sums[b][0] += 1
        sums[b][1] += conf
        sums[b][2] += float(-guess == label)
  return sum(abs(c - a) for n, c, a in sums if n) / len(flat)


def test_ece_softmax_against_loop():
  rng = np.random.default_rng(6)
  probs = rng.dirichlet(np.ones(3) * 0.5, size=(7, 9))
  labels = rng.integers(0, 3, size=(7, 9))
  out = unc.expected_calibration_error(probs, labels, num_bins=10,
                                       activation='softmax')
  assert out['ece'] == pytest.approx(loop_ece_softmax(probs, labels, 10))
  onehot = np.eye(3)[labels]
  again = unc.expected_calibration_error(probs, onehot, num_bins=10,
                                         activation='softmax')
  assert again['ece'] == pytest.approx(out['ece'])


def test_ece_binary_against_monai():
  torch = pytest.importorskip('torch')
  metrics = pytest.importorskip('monai.metrics')
  rng = np.random.default_rng(7)
  probs = rng.beta(0.5, 0.5, size=(16, 16, 8)).astype(np.float32)
  target = rng.random(probs.shape) < probs ** 1.5  # over-confident
  ours = unc.expected_calibration_error(probs, target, num_bins=15)
  metric = metrics.CalibrationErrorMetric(num_bins=15)
  metric(torch.from_numpy(probs)[None, None],
         torch.from_numpy(target.astype(np.float32))[None, None])
  theirs = float(metric.aggregate())
  assert ours['ece'] == pytest.approx(theirs, abs=1e-5)
  assert ours['ece'] > 0.01
  p, g, n = metrics.calibration_binning(
      torch.from_numpy(probs)[None, None],
      torch.from_numpy(target.astype(np.float32))[None, None], num_bins=15)
  np.testing.assert_array_equal(ours['bin_count'], n[0, 0].numpy())
  np.testing.assert_allclose(ours['bin_confidence'], p[0, 0].numpy(),
                             atol=1e-5)
