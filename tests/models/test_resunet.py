"""Tests of the seed-002 ResU-Net (jaxseg.models.resunet) and the registry.

Where the structure comes from. The study (seed 002, section 3.2) gives the
counts, 6,854,609 trainable and 9,824 static parameters, and the shapes of
tables 1-2; its Keras repository (Tottowich/AppliedDL-project) gives the
blocks (archs/segmentation/{model_utils,encoder,decoders,unet}.py) and the
final run's setup (models/unet_final/setup.json): filters [16, 32, 64, 128,
256], encoder depths [1, 2, 3, 4] (the last repeated: 1, 2, 3, 4, 4),
decoder "concat" + "transposed", decoder depths 1, output_depth 2, dropout
0.1, sigmoid output. In Keras terms:

  * ResidualConvBlock: conv3 (no bias)-BN-ReLU-conv3 (no bias)-BN, plus a
    conv1 (no bias)-BN shortcut, add, ReLU. ResidualLinearBlock: the same
    with an identity shortcut. A ResidualBlock of depth d is one conv block
    then d - 1 linear blocks, each followed by SpatialDropout2D.
  * Encoder level: ResidualBlock then MaxPooling2D(2); table 1's shapes are
    after the pooling.
  * Decoder stage: Conv2DTranspose(skip width, 3, stride 2, ReLU, bias),
    concatenate the skip, LayerNormalization, SpatialDropout2D, then a
    ResidualBlock of the skip width. These merged shapes are table 2's rows
    (4x4x256, 8x8x128, 16x16x64, 32x32x32); the decoder input is the 2x2x256
    bottleneck.
  * Output: UpSampling2D (bilinear) + Conv 1x1 (16, ReLU, bias) +
    LayerNormalization (table 2's 64x64x16), a depth-2 ResidualBlock of 16
    and Conv 1x1 (1, sigmoid); here the sigmoid is dropped (logits), the
    conv's 17 parameters still count.

Count: encoder 5,819,296 trainable / 4,112 BN channels; decoder stages
1,025,360 / 720 (960 of it LayerNorm); output block 9,953 / 80 (32 of it
LayerNorm): 6,854,609 trainable, and 4,912 BN channels x (moving mean +
variance) = 9,824 static. Both match exactly. (Without the LayerNorms the
count would be 992 short; with biases in the identity-shortcut blocks'
convs, as in an older model_utils.py, 2,656 over.)

One disagreement in the paper: table 1 lists level 5 as 2x2x128, but the
saved setup has 256 filters there, table 2's decoder input is 2x2x256, and
with 128 the counts cannot be met (9,824 static needs 4,912 BN channels;
width 128 gives 3,760 with this decoder). So the default widths end in 256.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import models
from jaxseg.errors import InputError
from jaxseg.models.resunet import ResUNet, SpatialDropout

PAPER_TRAINABLE = 6_854_609
PAPER_STATIC = 9_824


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _init(model, x):
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  return model.init(rngs, x, train=False)


def _variables(model, x):
  """Variables of `model.init`'s structure, filled from numpy.

  `init` itself only runs under `eval_shape`: on a small CPU, compiling its
  ~200 random initialisers takes minutes, and the values do not matter here.
  """
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      fan_in = math.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(fan_in),
                         jnp.float32)
    if name in ('scale', 'var'):
      return jnp.ones(leaf.shape, jnp.float32)
    return jnp.zeros(leaf.shape, jnp.float32)

  shapes = jax.eval_shape(lambda: _init(model, x))
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope='module')
def seed_model():
  model = ResUNet(num_classes=1)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 64, 4)),
                  jnp.float32)
  return model, x, _variables(model, x)


def test_parameter_counts_match_paper():
  model = ResUNet(num_classes=1)
  x = jnp.zeros((2, 64, 64, 4))
  variables = jax.eval_shape(lambda: _init(model, x))
  assert set(variables) == {'params', 'batch_stats'}
  trainable = _count(variables['params'])
  static = _count(variables['batch_stats'])
  assert trainable == PAPER_TRAINABLE, (
      f'{trainable:,} trainable parameters; seed 002, section 3.2.4, says '
      f'{PAPER_TRAINABLE:,}')
  assert static == PAPER_STATIC, (
      f'{static:,} batch-norm statistics; seed 002, section 3.2.4, says '
      f'{PAPER_STATIC:,} static parameters')


@pytest.mark.slow
def test_shapes_match_tables_1_and_2(seed_model):
  model, x, variables = seed_model
  logits, state = jax.jit(functools.partial(
      model.apply, train=False, mutable=['intermediates']))(variables, x)
  assert logits.shape == (2, 64, 64, 1)
  assert logits.dtype == jnp.float32
  shapes = {k: v[0].shape[1:] for k, v in state['intermediates'].items()}
  # Table 1 (rows 1-4; row 5 is 2x2x256, see the module docstring).
  assert [shapes[f'encoder_out_{i}'] for i in range(5)] == [
      (32, 32, 16), (16, 16, 32), (8, 8, 64), (4, 4, 128), (2, 2, 256)]
  # Table 2.
  assert shapes['decoder_input'] == (2, 2, 256)
  assert [shapes[f'decoder_merge_{i}'] for i in range(4)] == [
      (4, 4, 256), (8, 8, 128), (16, 16, 64), (32, 32, 32)]
  assert shapes['output_block_input'] == (64, 64, 16)
  assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.slow
def test_dropout_is_random_in_training_and_off_in_eval(seed_model):
  model, x, variables = seed_model

  @jax.jit
  def train_apply(key):
    out, state = model.apply(variables, x, train=True, rngs={'dropout': key},
                             mutable=['batch_stats'])
    return out, state['batch_stats']

  a, stats = train_apply(jax.random.key(10))
  b, _ = train_apply(jax.random.key(11))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, train_apply(jax.random.key(10))[0])
  # Training updates the running statistics.
  assert not np.allclose(stats['encoder_0']['unit_0']['norm1']['mean'], 0.0)

  eval_apply = jax.jit(functools.partial(model.apply, train=False))
  e1 = eval_apply(variables, x)
  e2 = eval_apply(variables, x)
  np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
  assert not np.allclose(e1, a)


@pytest.mark.parametrize('shape', [(4, 8, 8, 32), (2, 4, 4, 4, 32)])
def test_spatial_dropout_drops_whole_channels(shape):
  x = jnp.ones(shape)
  y = SpatialDropout(rate=0.5).apply({}, x, deterministic=False,
                                     rngs={'dropout': jax.random.key(3)})
  y = np.asarray(y).reshape(shape[0], -1, shape[-1])  # (N, space, C)
  per_channel = y[:, :1, :]
  np.testing.assert_array_equal(y, np.broadcast_to(per_channel, y.shape))
  assert set(np.unique(per_channel)) == {0.0, 2.0}
  y_eval = SpatialDropout(rate=0.5).apply({}, x, deterministic=True)
  np.testing.assert_array_equal(np.asarray(y_eval), np.asarray(x))


def test_element_wise_dropout_when_not_spatial():
  x = jnp.ones((2, 8, 8, 16))
  y = SpatialDropout(rate=0.5, spatial=False).apply(
      {}, x, deterministic=False, rngs={'dropout': jax.random.key(4)})
  y = np.asarray(y).reshape(2, -1, 16)
  assert not np.all(y == y[:, :1, :])


def test_works_on_volumes():
  model = ResUNet(num_classes=3, widths=(4, 8), depths=(1, 2),
                  output_depth=1)
  x = jnp.ones((1, 8, 8, 8, 2))
  variables = _variables(model, x)
  assert variables['params']['encoder_0']['unit_0']['conv1'][
      'kernel'].shape == (3, 3, 3, 2, 4)
  assert variables['params']['up_0']['kernel'].shape == (3, 3, 3, 8, 4)
  out = jax.jit(functools.partial(model.apply, train=False))(variables, x)
  assert out.shape == (1, 8, 8, 8, 3)


def test_registry_builds_from_config():
  config = ml_collections.ConfigDict(dict(
      name='resunet', num_classes=3, widths=[8, 16], depths=[1, 1],
      dropout_rate=0.2, dtype='float32'))
  model = models.build(config)
  assert isinstance(model, ResUNet)
  assert model.num_classes == 3
  assert model.widths == (8, 16)
  assert model.dropout_rate == 0.2
  assert model.norm == 'batch'  # left out: module default
  seed = models.build(ml_collections.ConfigDict({'name': 'resunet'}))
  assert seed.widths == (16, 32, 64, 128, 256)


def test_registry_rejects_unknown_field_and_name():
  with pytest.raises(InputError) as e:
    models.build(ml_collections.ConfigDict(
        dict(name='resunet', num_clases=2)))
  assert e.value.where == 'config.model.num_clases'
  assert "unknown field for model 'resunet'" in e.value.problem
  assert 'num_classes' in e.value.problem
  with pytest.raises(InputError) as e:
    models.build(ml_collections.ConfigDict(dict(name='resnet99')))
  assert e.value.where == 'config.model.name'
  assert 'resunet' in e.value.problem


def test_bad_structure_fails_with_a_clear_message():
  model = ResUNet(widths=(8, 16), depths=(1,))
  with pytest.raises(ValueError, match='depths'):
    jax.eval_shape(lambda: _init(model, jnp.zeros((1, 16, 16, 1))))
  with pytest.raises(ValueError, match='divisible'):
    jax.eval_shape(lambda: _init(ResUNet(), jnp.zeros((1, 48, 40, 4))))
