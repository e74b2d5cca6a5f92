"""Tests of jaxseg.losses against hand-worked cases and numpy references."""

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
  x, y = f32(*random_case(13))
  y_onehot = jax.nn.one_hot(jnp.argmax(y, -1), 3)
  for name, fn in losses.LOSSES.items():
    target = y_onehot if name in ('softmax_ce', 'dice_ce') else y
    value = jax.jit(fn)(x, target)
    assert value.shape == () and value.dtype == jnp.float32
    assert np.isfinite(value) and value > 0


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
  assert set(losses.LOSSES) == {'focal_dice', 'focal', 'dice', 'bce',
                                'softmax_ce', 'dice_ce'}
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
