"""Tests of jaxseg.losses against hand-worked cases and numpy references."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import errors
from jaxseg import losses

# ------------------------------------------------------- numpy references
# Straight from the formulas, in float64, with explicit probabilities.


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_bce(x, y):
  p = np_sigmoid(x)
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def np_focal(x, y, alpha, gamma):
  """Lin et al. 2017: -alpha_t (1 - p_t)^gamma log p_t, element-wise."""
  p = np_sigmoid(x)
  p_t = np.where(y == 1, p, 1 - p)
  alpha_t = 1.0 if alpha is None else np.where(y == 1, alpha, 1 - alpha)
  return -alpha_t * (1 - p_t)**gamma * np.log(p_t)


def np_dice_loss(p, y, smooth, squared=False, axes=None):
  inter = (p * y).sum(axis=axes)
  if squared:
    den = (p**2).sum(axis=axes) + (y**2).sum(axis=axes)
  else:
    den = p.sum(axis=axes) + y.sum(axis=axes)
  return np.mean(1 - (2 * inter + smooth) / (den + smooth))


def random_case(seed, shape=(2, 6, 5, 3), scale=3.0, p=0.3):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape) * scale
  y = (rng.uniform(size=shape) < p).astype(np.float64)
  return x, y


def f32(*arrays):
  return [np.asarray(a, np.float32) for a in arrays]


# Jitted losses (flags static, numbers traced): one compile per shape keeps
# the suite fast; eager op-by-op dispatch compiles every op separately.
focal = jax.jit(losses.sigmoid_focal_loss)
bce = jax.jit(losses.binary_cross_entropy)
dice = jax.jit(losses.soft_dice_loss,
               static_argnames=('activation', 'squared', 'per_sample', 'log',
                                'include_background'))
focal_dice = jax.jit(losses.focal_dice_loss,
                     static_argnames=('per_sample', 'log_dice'))
softmax_ce = jax.jit(losses.softmax_cross_entropy)
dice_ce = jax.jit(losses.softmax_dice_ce,
                  static_argnames=('squared', 'per_sample',
                                   'include_background'))
focal_value_and_grad = jax.jit(jax.value_and_grad(losses.sigmoid_focal_loss))
dice_value_and_grad = jax.jit(jax.value_and_grad(losses.soft_dice_loss),
                              static_argnames=('per_sample',))


# ------------------------------------------------------------ focal loss


def test_focal_hand_worked():
  # Two voxels, logit ln 3 -> p = 0.75, alpha 0.25, gamma 1.
  # y=1: p_t = 0.75, CE = -ln 0.75 = 0.2876821, (1-p_t) = 0.25, alpha_t = 0.25
  #      -> 0.25 * 0.25 * 0.2876821 = 0.0179801
  # y=0: p_t = 0.25, CE = -ln 0.25 = 1.3862944, (1-p_t) = 0.75, alpha_t = 0.75
  #      -> 0.75 * 0.75 * 1.3862944 = 0.7797906
  # mean = (0.0179801 + 0.7797906) / 2 = 0.3988854
  x = jnp.full((1, 2, 1), math.log(3.0))
  y = jnp.array([1.0, 0.0]).reshape(1, 2, 1)
  got = focal(x, y, alpha=0.25, gamma=1.0)
  np.testing.assert_allclose(got, 0.3988854, rtol=1e-6)


@pytest.mark.parametrize('alpha', [0.25, 0.75, None])
@pytest.mark.parametrize('gamma', [0.0, 0.5, 1.0, 2.0])
def test_focal_matches_numpy(alpha, gamma):
  x, y = random_case(0)
  want = np_focal(x, y, alpha, gamma).mean()
  got = focal(*f32(x, y), alpha=alpha, gamma=gamma)
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_focal_gamma0_is_bce_identity():
  # Paper: "gamma = 0 and alpha = 1 -> binary cross entropy", true for its
  # alpha-on-both-terms eq. 3. In Lin's alpha_t form that identity is
  # alpha=None; alpha=0.5 gives BCE / 2; alpha=1 keeps only positive voxels.
  x, y = random_case(1)
  xj, yj = f32(x, y)
  want = np_bce(x, y)
  np.testing.assert_allclose(
      focal(xj, yj, alpha=None, gamma=0.0), want.mean(),
      rtol=1e-5)
  np.testing.assert_allclose(
      bce(xj, yj), want.mean(), rtol=1e-5)
  np.testing.assert_allclose(
      focal(xj, yj, alpha=0.5, gamma=0.0), want.mean() / 2,
      rtol=1e-5)
  np.testing.assert_allclose(
      focal(xj, yj, alpha=1.0, gamma=0.0),
      (want * y).sum() / y.size, rtol=1e-5)


def test_focal_down_weights_easy_voxels():
  # Lin's factor: FL / BCE = (1 - p_t)^gamma. An easy positive (logit 4) is
  # scaled by sigmoid(-4) = 0.018, a hard one (logit -4) by 0.982. The
  # printed eq. 3 (exponent on p_t) would do the reverse.
  easy = jnp.full((1, 1, 1), 4.0)
  hard = jnp.full((1, 1, 1), -4.0)
  one = jnp.ones((1, 1, 1))

  def ratio(x):
    return focal(x, one, alpha=None, gamma=1.0) / bce(x, one)

  np.testing.assert_allclose(ratio(easy), np_sigmoid(-4.0), rtol=1e-5)
  np.testing.assert_allclose(ratio(hard), np_sigmoid(4.0), rtol=1e-5)


@pytest.mark.parametrize('gamma', [0.5, 1.0, 2.0])
def test_focal_stable_for_extreme_logits(gamma):
  x = jnp.array([-200.0, -30.0, 30.0, 200.0] * 2).reshape(1, 8, 1)
  y = jnp.array([0.0] * 4 + [1.0] * 4).reshape(1, 8, 1)
  value, grad = focal_value_and_grad(x, y, alpha=0.25, gamma=gamma)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  # Wrong-sided logits of 200 cost alpha_t * 200 (focal factor ~ 1).
  np.testing.assert_allclose(value, (0.75 * 230 + 0.25 * 230) / 8, rtol=1e-5)


# ------------------------------------------------------------- Dice loss


def test_dice_hand_worked():
  # logits (ln 3, -ln 3, 0, 0) -> p = (0.75, 0.25, 0.5, 0.5); y = (1, 0, 1, 0)
  # sum p y = 0.75 + 0.5 = 1.25; sum p = 2; sum y = 2; smooth = 1
  # D = (2 * 1.25 + 1) / (2 + 2 + 1) = 3.5 / 5 = 0.7 -> loss 0.3
  # squared: sum p^2 = 0.5625 + 0.0625 + 0.25 + 0.25 = 1.125, sum y^2 = 2
  # D = 3.5 / (1.125 + 2 + 1) = 0.8484848 -> loss 0.1515152
  ln3 = math.log(3.0)
  x = jnp.array([ln3, -ln3, 0.0, 0.0]).reshape(1, 4, 1)
  y = jnp.array([1.0, 0.0, 1.0, 0.0]).reshape(1, 4, 1)
  np.testing.assert_allclose(dice(x, y), 0.3, rtol=1e-6)
  np.testing.assert_allclose(
      dice(x, y, squared=True), 0.1515152, rtol=1e-6)
  np.testing.assert_allclose(
      dice(x, y, log=True), -math.log(0.7), rtol=1e-6)


@pytest.mark.parametrize('squared', [False, True])
@pytest.mark.parametrize('smooth', [0.0, 1.0, 100.0])
def test_dice_pooled_and_per_sample_match_numpy(squared, smooth):
  x, y = random_case(2)
  p = np_sigmoid(x)
  pooled = np_dice_loss(p, y, smooth, squared, axes=(0, 1, 2))
  per_sample = np_dice_loss(p, y, smooth, squared, axes=(1, 2))
  xj, yj = f32(x, y)
  np.testing.assert_allclose(
      dice(xj, yj, smooth=smooth, squared=squared), pooled,
      rtol=1e-5)
  np.testing.assert_allclose(
      dice(xj, yj, smooth=smooth, squared=squared, per_sample=True),
      per_sample, rtol=1e-5)
  assert abs(pooled - per_sample) > 1e-4  # the two reductions really differ


def test_dice_empty_conventions():
  # Target empty and confident empty prediction: Dice ~ 1 (loss ~ 0), also
  # with smooth = 0 where 0/0 is defined as Dice 1, with a finite gradient.
  x = jnp.full((2, 4, 4, 1), -100.0)
  y = jnp.zeros((2, 4, 4, 1))
  for smooth in (0.0, 1.0):
    for per_sample in (False, True):
      value, grad = dice_value_and_grad(x, y, smooth=smooth,
                                        per_sample=per_sample)
      np.testing.assert_allclose(value, 0.0, atol=1e-6)
      assert np.all(np.isfinite(grad))
  # Prediction everywhere, target empty: Dice = smooth / (sum p + smooth).
  x = jnp.full((1, 4, 4, 1), 100.0)
  np.testing.assert_allclose(dice(x, y[:1]), 1 - 1 / 17,
                             rtol=1e-6)


def test_softmax_dice_and_ce_match_numpy():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 5, 4, 3, 4)) * 2  # 3D spatial, 4 classes
  classes = rng.integers(0, 4, size=(2, 5, 4, 3))
  y = np.eye(4)[classes]
  p = np_softmax(x)
  xj, yj = f32(x, y)
  ce = -(y * np.log(p)).sum(-1).mean()
  np.testing.assert_allclose(softmax_ce(xj, yj), ce,
                             rtol=1e-5)
  dice_all = np_dice_loss(p, y, 1.0, axes=(0, 1, 2, 3))
  dice_fg = np_dice_loss(p[..., 1:], y[..., 1:], 1.0, axes=(0, 1, 2, 3))
  np.testing.assert_allclose(
      dice(xj, yj, activation='softmax'), dice_all, rtol=1e-5)
  np.testing.assert_allclose(
      dice(xj, yj, activation='softmax', include_background=False), dice_fg,
      rtol=1e-5)
  np.testing.assert_allclose(
      dice_ce(xj, yj, dice_weight=0.3, ce_weight=2.0),
      0.3 * dice_all + 2.0 * ce, rtol=1e-5)


def test_bad_activation_raises():
  x, y = f32(*random_case(4))
  with pytest.raises(ValueError, match='activation'):
    losses.soft_dice_loss(x, y, activation='relu')


# ---------------------------------------------------------- focal + Dice


def test_focal_dice_is_weighted_sum():
  x, y = random_case(5)
  want = (0.8 * np_focal(x, y, 0.25, 1.0).mean() +
          0.2 * np_dice_loss(np_sigmoid(x), y, 1.0, axes=(0, 1, 2)))
  np.testing.assert_allclose(focal_dice(*f32(x, y)), want,
                             rtol=1e-5)


def test_focal_dice_study_code_variant():
  # The study's Keras code: no alpha, -log(Dice) with smooth 100, pooled.
  # It flattens channels too; with its single output channel that is the
  # same as our per-channel pooling.
  x, y = random_case(6, shape=(2, 6, 5, 1))
  p = np_sigmoid(x)
  inter, den = (p * y).sum(), p.sum() + y.sum()
  want = (0.8 * np_focal(x, y, None, 1.0).mean() +
          0.2 * -np.log((2 * inter + 100) / (den + 100)))
  got = focal_dice(*f32(x, y), alpha=None, smooth=100.0, log_dice=True)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_focal_dice_gradient_finite_differences():
  # Central differences in float64 along random directions v:
  # (f(x + eps v) - f(x - eps v)) / (2 eps) must equal <grad f(x), v>.
  # f adds the pooled and the per-sample variants (one compile for both).
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    x, y = random_case(7, shape=(2, 4, 4, 2), scale=2.0)
    mask = (rng.uniform(size=(2, 4, 4)) > 0.3).astype(np.float64)

    @jax.jit
    def f(x):
      pooled = losses.focal_dice_loss(x, y, mask=mask)
      per_sample = losses.focal_dice_loss(x, y, mask=mask, per_sample=True,
                                          alpha=None, gamma=2.0)
      return pooled + 3.0 * per_sample

    grad = jax.jit(jax.grad(f))(x)
    assert grad.dtype == jnp.float64
    grad = np.asarray(grad)
    eps = 1e-6
    for _ in range(4):
      v = rng.normal(size=x.shape)
      numeric = (float(f(x + eps * v)) - float(f(x - eps * v))) / (2 * eps)
      np.testing.assert_allclose(np.vdot(grad, v), numeric, rtol=1e-6,
                                 atol=1e-9)
    # The gradient vanishes on ignored voxels.
    assert np.abs(grad * (1 - mask)[..., None]).max() == 0.0


# ------------------------------------------------------------------ masks


@pytest.mark.parametrize('name', ['focal', 'bce', 'dice', 'focal_dice'])
def test_mask_equals_dropping_voxels(name):
  x, y = random_case(8, shape=(2, 5, 4, 2))
  mask = np.random.default_rng(8).uniform(size=(2, 5, 4)) > 0.4
  x_masked = np.where(mask[..., None], x, 1e4)  # garbage where ignored
  kept_x = x[mask][None]  # (1, K, C): the included voxels only
  kept_y = y[mask][None]
  fn = jax.jit(losses.build(ml_collections.ConfigDict({'name': name})))
  got = fn(*f32(x_masked, y), mask=jnp.asarray(mask))
  want = fn(*f32(kept_x, kept_y))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mask_softmax_losses():
  rng = np.random.default_rng(9)
  x = rng.normal(size=(2, 4, 4, 3))
  y = np.eye(3)[rng.integers(0, 3, size=(2, 4, 4))]
  mask = rng.uniform(size=(2, 4, 4)) > 0.5
  for name in ('softmax_ce', 'dice_ce'):
    fn = jax.jit(losses.build({'name': name}))
    got = fn(*f32(x, y), mask=jnp.asarray(mask))
    want = fn(*f32(x[mask][None], y[mask][None]))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mask_per_sample_dice():
  x, y = random_case(10, shape=(2, 4, 4, 1))
  mask = np.zeros((2, 4, 4), bool)
  mask[0, :2] = True   # 8 voxels
  mask[1, 2:] = True   # 8 other voxels
  got = dice(*f32(x, y), per_sample=True, mask=jnp.asarray(mask))
  parts = [dice(*f32(x[i][mask[i]][None], y[i][mask[i]][None]))
           for i in range(2)]
  np.testing.assert_allclose(got, np.mean(parts), rtol=1e-5)


def test_all_masked_gives_zero_not_nan():
  x, y = f32(*random_case(11))
  mask = jnp.zeros(x.shape[:-1])
  for fn in (focal, bce):
    assert float(fn(x, y, mask=mask)) == 0.0


def test_shape_errors():
  x, y = f32(*random_case(12))
  with pytest.raises(ValueError, match='same shape'):
    losses.binary_cross_entropy(x, y[..., :1])
  with pytest.raises(ValueError, match='mask'):
    losses.binary_cross_entropy(x, y, mask=jnp.ones((2, 6)))


# ------------------------------------------------------------- jit & dtype


def test_all_losses_jit():
  # Every registered loss with its defaults, targets for its activation, and
  # an all-ignoring mask (0, not nan); one compile for the lot.
  x, y = f32(*random_case(13))
  y_onehot = jax.nn.one_hot(jnp.argmax(y, -1), 3)
  none = jnp.zeros(x.shape[:-1])

  @jax.jit
  def values(x):
    out = {}
    for name, fn in losses.LOSSES.items():
      softmax = losses.activation_of({'name': name}) == 'softmax'
      target = y_onehot if softmax else y
      out[name] = fn(x, target), fn(x, target, mask=none)
    return out

  for name, (value, masked) in values(x).items():
    assert value.shape == () and value.dtype == jnp.float32, name
    assert np.isfinite(value) and np.isfinite(masked), name
    if name != 'boundary':   # the boundary loss is signed
      assert value > 0, name


# ----------------------------------------------------------- the registry


def test_build_seed_config():
  config = ml_collections.ConfigDict(
      dict(name='focal_dice', alpha=0.25, gamma=1.0, focal_weight=0.8,
           dice_weight=0.2))
  fn = losses.build(config)
  x, y = f32(*random_case(14))
  np.testing.assert_allclose(jax.jit(fn)(x, y), focal_dice(x, y), rtol=1e-6)


def test_build_passes_params():
  x, y = f32(*random_case(15))
  fn = jax.jit(losses.build({'name': 'dice', 'smooth': 0.0,
                             'per_sample': True}))
  np.testing.assert_allclose(
      fn(x, y), dice(x, y, smooth=0.0, per_sample=True), rtol=1e-6)
  assert not np.isclose(fn(x, y), dice(x, y))


def test_build_unknown_name():
  with pytest.raises(errors.InputError) as info:
    losses.build(ml_collections.ConfigDict({'name': 'hinge'}))
  assert info.value.where == 'config.loss.name'
  assert 'known:' in info.value.problem and 'focal_dice' in info.value.problem


def test_build_unknown_key():
  config = ml_collections.ConfigDict({'name': 'focal', 'alpha': 0.5,
                                      'focal_weight': 0.8})
  with pytest.raises(errors.InputError) as info:
    losses.build(config)
  assert info.value.where == 'config.loss.focal_weight'
  assert 'known: alpha, gamma' in info.value.problem


def test_build_bad_activation():
  with pytest.raises(errors.InputError) as info:
    losses.build({'name': 'dice', 'activation': 'tanh'})
  assert info.value.where == 'config.loss.activation'


def test_registry_names():
  assert set(losses.LOSSES) == {
      'bce', 'weighted_bce', 'balanced_bce', 'softmax_ce', 'focal',
      'keras_focal', 'dice', 'iou', 'tversky', 'focal_tversky',
      'log_cosh_dice', 'sensitivity_specificity', 'generalized_dice',
      'shape_aware', 'boundary', 'hausdorff_dt', 'focal_dice', 'dice_focal',
      'dice_ce', 'combo', 'exp_log'}
  assert losses.loss_params('focal_dice')['gamma'] == 1.0


# ------------------------------------------------------- deep supervision


def test_deep_supervision_weighted_sum():
  x, y = f32(*random_case(16))
  x2 = x * 0.5
  base = losses.build({'name': 'bce'})
  fn = losses.deep_supervision(base, (1.0, 0.25))
  want = base(x, y) + 0.25 * base(x2, y)
  np.testing.assert_allclose(fn([x, x2], y), want, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(fn)([x, x2], y), want, rtol=1e-6)
  with pytest.raises(ValueError, match='heads'):
    fn([x], y)
  # A single array is the model's eval-mode output: the plain loss.
  np.testing.assert_allclose(fn(x, y), base(x, y), rtol=1e-6)
  with pytest.raises(ValueError, match='does not match'):
    fn([x, x[:, :3]], y)


# ===================================================== issue 4: more losses
# Hand-worked cases on one 1-D "image" of four voxels, (N=1, 4, C=1):
#   X  = logits (ln 3, -ln 3, 0, 0)  -> p = (0.75, 0.25, 0.5, 0.5)
#   XA = logits (ln 3, ln 3, 0, -ln 3) -> p = (0.75, 0.75, 0.5, 0.25)
#   Y = (1, 0, 1, 0), Y1 = (1, 0, 0, 0), YS = (1, 1, 0, 0)
# All values come from one jitted function (one compile).

LN3 = math.log(3.0)
CE75 = -math.log(0.75)   # -ln 0.75 = 0.2876821: a voxel right with p 0.75
CE25 = -math.log(0.25)   # -ln 0.25 = 1.3862944: a voxel wrong with p 0.75
LN2 = math.log(2.0)      # a voxel at p 0.5


def column(*values):
  return np.asarray(values, np.float32).reshape(1, -1, 1)


X = column(LN3, -LN3, 0.0, 0.0)
XA = column(LN3, LN3, 0.0, -LN3)
Y = column(1, 0, 1, 0)
Y1 = column(1, 0, 0, 0)
YS = column(1, 1, 0, 0)


@pytest.fixture(scope='module')
def hand():
  @jax.jit
  def values(x, xa, y, y1, ys):
    return {
        'weighted_bce': losses.weighted_binary_cross_entropy(
            x, y, pos_weight=3.0),
        'balanced_bce': losses.balanced_binary_cross_entropy(x, y1),
        'balanced_bce_fixed': losses.balanced_binary_cross_entropy(
            x, y, beta=0.9),
        'keras_focal': losses.keras_focal_loss(x, y),
        'keras_focal_balanced': losses.keras_focal_loss(
            x, y1, apply_class_balancing=True),
        'iou': losses.soft_iou_loss(x, y),
        'iou_smooth0': losses.soft_iou_loss(x, y, smooth=0.0),
        'tversky': losses.tversky_loss(xa, y, smooth=0.0),
        'focal_tversky': losses.focal_tversky_loss(xa, y, smooth=0.0),
        'log_cosh_dice': losses.log_cosh_dice_loss(x, y),
        'sensitivity_specificity': losses.sensitivity_specificity_loss(xa, y),
        'combo': losses.combo_loss(xa, y, beta=0.7),
        'exp_log': losses.exp_log_loss(x, y),
        'exp_log_frequency': losses.exp_log_loss(
            x, y1, label_weights='frequency', dice_weight=0.0),
        'shape_aware': losses.shape_aware_loss(x, ys),
        'boundary': losses.boundary_loss(x, ys),
        'hausdorff_dt': losses.hausdorff_dt_loss(x, ys),
        'generalized_dice': losses.generalized_dice_loss(
            jnp.concatenate([x, xa], -1), jnp.concatenate([y, y1], -1),
            smooth=0.0),
    }
  return {k: float(v) for k, v in values(X, XA, Y, Y1, YS).items()}


def test_weighted_bce_hand_worked(hand):
  # -(3 y ln p + (1 - y) ln(1 - p)): positives (p .75, p .5) count 3 times.
  want = (3 * CE75 + CE75 + 3 * LN2 + LN2) / 4
  np.testing.assert_allclose(hand['weighted_bce'], want, rtol=1e-6)


def test_balanced_bce_hand_worked(hand):
  # Y1 has 1 positive of 4: beta = 3/4 on the positive term, 1/4 on the rest.
  want = (0.75 * CE75 + 0.25 * CE75 + 0.25 * LN2 * 2) / 4
  np.testing.assert_allclose(hand['balanced_bce'], want, rtol=1e-6)
  want = (0.9 * CE75 + 0.1 * CE75 + 0.9 * LN2 + 0.1 * LN2) / 4
  np.testing.assert_allclose(hand['balanced_bce_fixed'], want, rtol=1e-6)


def test_keras_focal_hand_worked(hand):
  # gamma 2: (1 - p_t)^2 CE; p_t = .75, .75, .5, .5.
  want = (0.0625 * CE75 * 2 + 0.25 * LN2 * 2) / 4
  np.testing.assert_allclose(hand['keras_focal'], want, rtol=1e-6)
  # Y1 with class balancing (alpha .25 on y=1, .75 on y=0).
  want = (0.25 * 0.0625 * CE75 + 0.75 * 0.0625 * CE75 +
          0.75 * 0.25 * LN2 * 2) / 4
  np.testing.assert_allclose(hand['keras_focal_balanced'], want, rtol=1e-6)


def test_iou_hand_worked(hand):
  # I = .75 + .5 = 1.25; U = sum p + sum y - I = 2 + 2 - 1.25 = 2.75.
  np.testing.assert_allclose(hand['iou'], 1 - 2.25 / 3.75, rtol=1e-6)
  np.testing.assert_allclose(hand['iou_smooth0'], 1 - 1.25 / 2.75, rtol=1e-6)


def test_tversky_hand_worked(hand):
  # XA, Y: TP = .75 + .5 = 1.25; FP = .75 + .25 = 1; FN = .25 + .5 = .75.
  # alpha .3 on FP, beta .7 on FN: TI = 1.25 / (1.25 + .3 + .525).
  ti = 1.25 / 2.075
  np.testing.assert_allclose(hand['tversky'], 1 - ti, rtol=1e-6)
  np.testing.assert_allclose(hand['focal_tversky'], (1 - ti)**0.75,
                             rtol=1e-6)


def test_log_cosh_dice_hand_worked(hand):
  # Dice = 0.7 (test_dice_hand_worked) -> log(cosh(0.3)).
  np.testing.assert_allclose(hand['log_cosh_dice'], math.log(math.cosh(0.3)),
                             rtol=1e-6)


def test_sensitivity_specificity_hand_worked(hand):
  # XA, Y: squared errors on positives (.25^2, .5^2) mean .15625, on
  # negatives (.75^2, .25^2) mean .3125; r = .05.
  np.testing.assert_allclose(hand['sensitivity_specificity'],
                             0.05 * 0.15625 + 0.95 * 0.3125, rtol=1e-6)


def test_combo_hand_worked(hand):
  # XA, Y, beta .7: wCE = (.7 CE75 + .3 CE25 + .7 ln2 + .3 CE75) / 4;
  # Dice = (2 * 1.25 + 1) / (2.25 + 2 + 1) = 3.5 / 5.25; alpha .5.
  wce = (0.7 * CE75 + 0.3 * CE25 + 0.7 * LN2 + 0.3 * CE75) / 4
  want = 0.5 * wce + 0.5 * (1 - 3.5 / 5.25)
  np.testing.assert_allclose(hand['combo'], want, rtol=1e-6)


def test_exp_log_hand_worked(hand):
  # Dice 0.7; CE per voxel (CE75, CE75, ln2, ln2); gammas .3, weights .8/.2.
  ce = np.array([CE75, CE75, LN2, LN2])
  want = 0.8 * (-math.log(0.7))**0.3 + 0.2 * np.mean(ce**0.3)
  np.testing.assert_allclose(hand['exp_log'], want, rtol=1e-6)
  # Y1 frequencies: 1 positive, 3 negatives of 4 -> w = sqrt(4/1), sqrt(4/3).
  ce = np.array([CE75, CE75, LN2, LN2])
  w = np.array([2.0] + [math.sqrt(4 / 3)] * 3)
  np.testing.assert_allclose(hand['exp_log_frequency'],
                             0.2 * np.mean(w * ce**0.3), rtol=1e-6)


def test_shape_aware_hand_worked(hand):
  # YS = (1, 1, 0, 0): distance to the other class (2, 1, 1, 2); weights
  # 1 + E = (3, 2, 2, 3); CE of X = (CE75, CE25, ln2, ln2).
  want = (3 * CE75 + 2 * CE25 + 2 * LN2 + 3 * LN2) / 4
  np.testing.assert_allclose(hand['shape_aware'], want, rtol=1e-6)


def test_boundary_hand_worked(hand):
  # Signed map of YS: inside 1 - (2, 1) = (-1, 0), outside (1, 2).
  # mean p * phi = (.75 * -1 + .25 * 0 + .5 * 1 + .5 * 2) / 4.
  np.testing.assert_allclose(hand['boundary'], 0.75 / 4, rtol=1e-6)


def test_hausdorff_dt_hand_worked(hand):
  # Target map (2, 1, 1, 2); prediction p > .5 = (1, 0, 0, 0) -> map
  # (1, 1, 2, 3). (p - y)^2 = (.0625, .5625, .25, .25);
  # d_p^2 + d_y^2 = (5, 2, 5, 13).
  want = (0.0625 * 5 + 0.5625 * 2 + 0.25 * 5 + 0.25 * 13) / 4
  np.testing.assert_allclose(hand['hausdorff_dt'], want, rtol=1e-6)


def test_generalized_dice_hand_worked(hand):
  # Channel 0 (X, Y): I = 1.25, sum p + sum y = 4, w = 1 / 2^2.
  # Channel 1 (XA, Y1): I = .75, sum p + sum y = 2.25 + 1, w = 1 / 1^2.
  want = 1 - 2 * (1.25 / 4 + 0.75) / (4 / 4 + 3.25)
  np.testing.assert_allclose(hand['generalized_dice'], want, rtol=1e-6)


# ----------------------------------------------------- Keras focal relation


def np_keras_focal(y, prob, gamma=2.0, balancing=False, alpha=0.25,
                   smoothing=0.0):
  """keras.losses.binary_focal_crossentropy as published, on probabilities."""
  if smoothing:
    y = y * (1.0 - smoothing) + 0.5 * smoothing
  clipped = np.clip(prob, 1e-7, 1 - 1e-7)   # backend.epsilon()
  bce = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
  p_t = y * prob + (1 - y) * (1 - prob)
  loss = (1 - p_t)**gamma * bce
  if balancing:
    loss = (y * alpha + (1 - y) * (1 - alpha)) * loss
  return loss.mean()


def test_keras_focal_matches_keras_formula_and_focal():
  x, y = random_case(20, scale=3.0)   # |logit| < 16: Keras' clip is inert
  xj, yj = f32(x, y)
  keras = jax.jit(losses.keras_focal_loss,
                  static_argnames=('apply_class_balancing',))
  settings = [dict(), dict(gamma=1.0, apply_class_balancing=True, alpha=0.4),
              dict(gamma=0.5, label_smoothing=0.2)]
  for kw in settings:
    want = np_keras_focal(y, np_sigmoid(x), kw.get('gamma', 2.0),
                          kw.get('apply_class_balancing', False),
                          kw.get('alpha', 0.25),
                          kw.get('label_smoothing', 0.0))
    np.testing.assert_allclose(keras(xj, yj, **kw), want, rtol=1e-5)
  # The relation to 'focal' (Lin): no balancing is alpha=None, balancing is
  # alpha=alpha; seed 000's config ('focal', alpha None, gamma 2) is Keras'
  # default BinaryFocalCrossentropy().
  np.testing.assert_allclose(keras(xj, yj), focal(xj, yj, alpha=None,
                                                  gamma=2.0), rtol=1e-6)
  np.testing.assert_allclose(
      keras(xj, yj, gamma=1.0, apply_class_balancing=True, alpha=0.4),
      focal(xj, yj, alpha=0.4, gamma=1.0), rtol=1e-6)


# ---------------------------------------------------------- softmax forms


def test_softmax_forms_match_binary_and_numpy():
  # Two-class softmax with logits (0, x) is the sigmoid of x: the softmax
  # focal (alpha 1 - a on class 0, a on class 1) equals the sigmoid one, and
  # the combo cross entropy (alpha=1) equals the binary one.
  x, y = random_case(21, shape=(2, 5, 4, 1))
  x2 = np.concatenate([np.zeros_like(x), x], -1)
  y2 = np.concatenate([1 - y, y], -1)
  rng = np.random.default_rng(21)
  x3 = rng.normal(size=(2, 5, 4, 3)) * 2
  y3 = np.eye(3)[rng.integers(0, 3, size=(2, 5, 4))]
  w = np.array([0.2, 1.0, 3.0])

  @jax.jit
  def values(x, y, x2, y2, x3, y3):
    return dict(
        focal_sm=losses.focal_loss(x2, y2, alpha=0.3, gamma=1.5,
                                   activation='softmax'),
        focal_sig=losses.focal_loss(x, y, alpha=0.3, gamma=1.5),
        combo_sm=losses.combo_loss(x2, y2, activation='softmax', alpha=1.0,
                                   beta=0.8),
        combo_sig=losses.combo_loss(x, y, alpha=1.0, beta=0.8),
        focal0=losses.focal_loss(x3, y3, alpha=None, gamma=0.0,
                                 activation='softmax'),
        ce_weighted=losses.softmax_cross_entropy(x3, y3, class_weights=w),
        ce=losses.softmax_cross_entropy(x3, y3))

  got = values(*f32(x, y, x2, y2, x3, y3))
  np.testing.assert_allclose(got['focal_sm'], got['focal_sig'], rtol=1e-5)
  np.testing.assert_allclose(got['combo_sm'], got['combo_sig'], rtol=1e-5)
  np.testing.assert_allclose(got['focal0'], got['ce'], rtol=1e-6)
  log_p = np.log(np_softmax(x3))
  np.testing.assert_allclose(got['ce_weighted'],
                             -(w * y3 * log_p).sum(-1).mean(), rtol=1e-5)


# ------------------------------------------------------------ distance maps


def test_distance_map_hand_worked_2d_3d():
  r2, r3 = math.sqrt(2.0), math.sqrt(3.0)
  bar = np.zeros((1, 3, 4, 3), bool)   # channel 0: a bar; 1 empty; 2 full
  bar[0, 1, 1:3, 0] = True
  bar[..., 2] = True
  unsigned = np.array([[r2, 1, 1, r2], [1, 1, 1, 1], [r2, 1, 1, r2]])
  signed = unsigned.copy()
  signed[1, 1:3] = 0.0   # inner boundary voxels: 1 - 1
  dot = np.zeros((1, 3, 3, 3, 1), bool)   # one voxel in the middle of 3^3
  dot[0, 1, 1, 1, 0] = True
  i, j, k = np.indices((3, 3, 3))
  dot_map = np.sqrt((i - 1.0)**2 + (j - 1.0)**2 + (k - 1.0)**2)
  dot_map[1, 1, 1] = 1.0   # the voxel itself: distance to the outside

  both = jax.jit(lambda b: (losses.distance_map(b),
                            losses.distance_map(b, signed=True)))
  got_unsigned, got_signed = both(bar)
  np.testing.assert_allclose(got_unsigned[0, ..., 0], unsigned, rtol=1e-6)
  np.testing.assert_allclose(got_signed[0, ..., 0], signed, rtol=1e-6)
  assert not np.any(got_unsigned[..., 1:]) and not np.any(got_signed[..., 1:])
  np.testing.assert_allclose(losses.distance_map(dot)[0, ..., 0], dot_map,
                             rtol=1e-6)
  assert float(dot_map.max()) == pytest.approx(r3)
  # Under vmap (the callback sees an extra leading axis).
  stacked = np.stack([bar, ~bar])
  mapped = jax.vmap(losses.distance_map)(stacked)
  np.testing.assert_allclose(mapped[0], got_unsigned, rtol=1e-6)
  np.testing.assert_allclose(mapped[1][..., 0], got_unsigned[..., 0],
                             rtol=1e-6)   # the complement has the same map


# ------------------------------------------------ gradients, masks, config

# (name, config) of each new loss, sigmoid and softmax where it has both.
NEW_LOSSES = [
    ('weighted_bce', dict(pos_weight=2.5)),
    ('balanced_bce', dict()),
    ('keras_focal', dict(apply_class_balancing=True, label_smoothing=0.1)),
    ('focal', dict(activation='softmax', gamma=0.5, alpha=0.3)),
    ('iou', dict(squared=True)),
    ('tversky', dict(activation='softmax', per_sample=True)),
    ('focal_tversky', dict()),
    ('log_cosh_dice', dict(activation='softmax')),
    ('sensitivity_specificity', dict(activation='softmax', r=0.2)),
    ('generalized_dice', dict(activation='softmax', weight_type='simple')),
    ('shape_aware', dict(distance_weight=0.5)),
    ('shape_aware', dict(activation='softmax')),
    ('boundary', dict(region_weight=0.5)),
    ('boundary', dict(activation='softmax', include_background=False)),
    ('hausdorff_dt', dict()),
    ('hausdorff_dt', dict(activation='softmax')),
    ('combo', dict(activation='softmax', beta=0.3)),
    ('exp_log', dict(label_weights='frequency')),
    ('exp_log', dict(activation='softmax', label_weights=(0.5, 1.0, 2.0))),
]


def new_loss_fns():
  fns = {}
  for name, params in NEW_LOSSES:
    config = dict(name=name, **params)
    key = name + ''.join(f',{k}={v}' for k, v in params.items())
    fns[key] = (losses.activation_of(config), losses.build(config))
  return fns


def softmax_case(seed, shape):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape) * 2.0
  y = np.eye(shape[-1])[rng.integers(0, shape[-1], size=shape[:-1])]
  return x, y


@pytest.mark.slow
def test_new_losses_gradients_finite_differences():
  # Float64 central differences along random directions v must equal
  # <grad, v>; all losses in one compiled value function and one compiled
  # gradient function. Also: no gradient reaches ignored voxels.
  fns = new_loss_fns()
  shape = (2, 5, 4, 3)
  with jax.enable_x64(True):
    x, y_sig = random_case(30, shape=shape, scale=2.0)
    _, y_soft = softmax_case(30, shape)
    mask = np.random.default_rng(31).uniform(size=shape[:-1]) > 0.25

    def loss(key, x):
      activation, fn = fns[key]
      return fn(x, y_soft if activation == 'softmax' else y_sig, mask=mask)

    values = jax.jit(lambda x: {k: loss(k, x) for k in fns})
    grads = jax.jit(lambda x: {
        k: jax.grad(functools.partial(loss, k))(x) for k in fns})(x)
    rng = np.random.default_rng(32)
    eps = 1e-6
    for _ in range(2):
      v = rng.normal(size=shape)
      plus, minus = values(x + eps * v), values(x - eps * v)
      for key, grad in grads.items():
        assert grad.dtype == jnp.float64, key
        numeric = (float(plus[key]) - float(minus[key])) / (2 * eps)
        np.testing.assert_allclose(np.vdot(grad, v), numeric, rtol=1e-5,
                                   atol=1e-8, err_msg=key)
    for key, grad in grads.items():
      assert np.abs(grad).max() > 0, key
      assert np.abs(grad * ~mask[..., None]).max() == 0.0, key


def test_new_losses_mask_equals_dropping_voxels():
  # Pooled losses: a mask equals leaving the ignored voxels out. Distance
  # losses (maps from the whole target): logits at ignored voxels do not
  # matter.
  # (The other pooled losses share these masking paths.)
  pooled = {n: ({'name': n}, 'sigmoid') for n in (
      'iou', 'tversky', 'sensitivity_specificity')}
  pooled['exp_log/frequency'] = (
      {'name': 'exp_log', 'label_weights': 'frequency'}, 'sigmoid')
  for n in ('combo', 'exp_log', 'sensitivity_specificity'):
    pooled[f'{n}/softmax'] = ({'name': n, 'activation': 'softmax'}, 'softmax')
  local = {f'{n}/{a}': ({'name': n, 'activation': a}, a)
           for n, a in (('shape_aware', 'sigmoid'), ('shape_aware', 'softmax'),
                        ('boundary', 'softmax'))}
  shape = (2, 5, 4, 3)
  x, y_sig = random_case(33, shape=shape)
  _, y_soft = softmax_case(33, shape)
  mask = np.random.default_rng(33).uniform(size=shape[:-1]) > 0.4
  garbage = np.where(mask[..., None], x, 50.0)
  targets = {'sigmoid': y_sig, 'softmax': y_soft}

  @jax.jit
  def values(x, garbage, kept_x, mask):   # the mask itself stays constant
    out = {}
    for key, (config, act) in pooled.items():
      fn, t = losses.build(config), targets[act]
      out[key] = fn(garbage, t, mask=mask), fn(kept_x, t[kept][None])
    for key, (config, act) in local.items():
      fn, t = losses.build(config), targets[act]
      out[key] = fn(garbage, t, mask=mask), fn(x, t, mask=mask)
    return out

  kept = mask
  got = values(*f32(x, garbage, x[mask][None]), mask)
  for key, (masked, reference) in got.items():
    np.testing.assert_allclose(masked, reference, rtol=1e-5, err_msg=key)


ACTIVATIONS = losses.ACTIVATIONS


def test_activation_of_every_loss():
  for name in losses.LOSSES:
    takes = 'activation' in losses.loss_params(name)
    fixed = name in losses.SIGMOID_LOSSES + losses.SOFTMAX_LOSSES
    assert takes != fixed, name   # exactly one way to know the activation
    if takes:
      default = losses.loss_params(name)['activation']
      assert losses.activation_of({'name': name}) == default
      for act in ACTIVATIONS:
        assert losses.activation_of({'name': name, 'activation': act}) == act
  assert losses.activation_of({'name': 'dice_ce'}) == 'softmax'
  assert losses.activation_of({'name': 'keras_focal'}) == 'sigmoid'
  assert losses.activation_of(
      ml_collections.ConfigDict({'name': 'focal',
                                 'activation': 'softmax'})) == 'softmax'


def test_build_bad_choices_and_sequences():
  with pytest.raises(errors.InputError) as info:
    losses.build({'name': 'generalized_dice', 'weight_type': 'cubic'})
  assert info.value.where == 'config.loss.weight_type'
  with pytest.raises(errors.InputError) as info:
    losses.build({'name': 'hausdorff_dt', 'activation': 'relu'})
  assert info.value.where == 'config.loss.activation'
  with pytest.raises(ValueError, match='label_weights'):
    losses.exp_log_loss(*f32(X, Y), label_weights='inverse')
  # A list from a ConfigDict works (one weight per channel).
  fn = losses.build(ml_collections.ConfigDict(
      dict(name='weighted_bce', pos_weight=[1.0, 2.0, 3.0])))
  x, y = f32(*random_case(34))
  want = np_bce(x, y) * np.where(y == 1, [1.0, 2.0, 3.0], 1.0)
  np.testing.assert_allclose(fn(x, y), want.mean(), rtol=1e-5)
