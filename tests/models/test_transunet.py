"""Tests of TransUNet (jaxseg.models.transunet), seed 003's stated next step.

Parameter counts, derived by hand (h = hidden_size, m = mlp_dim, BN = batch
norm with scale and bias, convs before a norm have no bias):

  * stem level (C_in -> f): conv3x3/2 9 C_in f + BN 2 f + conv3x3 9 f^2 +
    BN 2 f;
  * patch embedding: p^nd C h + h; position embedding: T h (T tokens);
  * transformer block: 4 h^2 + 4 h (q, k, v, out projections with biases)
    + 2 h m + h + m (MLP) + 4 h (two LayerNorms); final LayerNorm 2 h;
  * conv_more (h -> b): 9 h b + 2 b;
  * decoder stage (C_in + skip -> f): 9 (C_in + skip) f + 2 f + 9 f^2 + 2 f;
  * head: k^nd f_last n + n.

The tiny setting below (2 channels, stem (4, 8), h 8, 2 layers, m 16, patch
2, 16x16 input -> 2x2 = 4 tokens, b 8, decoder (8, 4, 4), 1 class) gives
1,128 + 264 + 32 + 1,200 + 16 + 592 + 2,656 + 5 = 5,893 parameters.

The paper's model (R50-ViT-B/16) has ~105M parameters, 85,056,000 of them in
its 12 ViT-B blocks and final LayerNorm (h 768, m 3072:
12 x 7,087,872 + 1,536). The ViT-B setting of the module docstring must have
exactly that encoder count; its total with the plain conv stem (98,485,649)
is pinned as a regression number.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import models
from jaxseg.models.transunet import TransUNet

import model_checks as mc

TINY = dict(stem_features=(4, 8), hidden_size=8, num_layers=2, num_heads=2,
            mlp_dim=16, patch_size=2, bottleneck_features=8,
            decoder_features=(8, 4, 4))

VIT_B = dict(stem_features=(64, 256, 512), hidden_size=768, num_layers=12,
             num_heads=12, mlp_dim=3072, patch_size=2,
             bottleneck_features=512, decoder_features=(256, 128, 64, 16),
             head_kernel_size=3)


def _block(h, m):
  return (4 * h * h + 4 * h) + (2 * h * m + h + m) + 4 * h


def _double_conv(c_in, f):
  return 9 * c_in * f + 2 * f + 9 * f * f + 2 * f


def test_parameter_count_by_hand():
  c, (s0, s1), h, m, p, b = 2, (4, 8), 8, 16, 2, 8
  tokens = (16 // 8) ** 2
  expected = {
      'stem_0': _double_conv(c, s0),                      # 232
      'stem_1': _double_conv(s0, s1),                     # 896
      'embedding': p * p * s1 * h + h,                    # 264
      'pos_embedding': tokens * h,                        # 32
      'blocks': 2 * _block(h, m),                         # 1,200
      'encoder_norm': 2 * h,                              # 16
      'conv_more': 9 * h * b + 2 * b,                     # 592
      'decoder_0': _double_conv(b + s1, 8),               # to 1/4, + stem_1
      'decoder_1': _double_conv(8 + s0, 4),               # to 1/2, + stem_0
      'decoder_2': _double_conv(4, 4),                    # to 1/1, no skip
      'head': 4 * 1 + 1,
  }
  assert sum(expected.values()) == 5_893
  v = mc.init_shapes(TransUNet(num_classes=1, **TINY),
                     jnp.zeros((1, 16, 16, c)))
  params = v['params']
  tr = params['transformer']
  got = {
      'stem_0': mc.count(params['stem_0']),
      'stem_1': mc.count(params['stem_1']),
      'embedding': mc.count(tr['embedding']),
      'pos_embedding': mc.count(tr['pos_embedding']),
      'blocks': mc.count(tr['block_0']) + mc.count(tr['block_1']),
      'encoder_norm': mc.count(tr['encoder_norm']),
      'conv_more': mc.count(params['conv_more']),
      'decoder_0': mc.count(params['decoder_0']),
      'decoder_1': mc.count(params['decoder_1']),
      'decoder_2': mc.count(params['decoder_2']),
      'head': mc.count(params['head']),
  }
  assert got == expected
  assert mc.count(params) == 5_893
  # BN channels: stem 24, conv_more 8, decoder 32 -> mean and var each.
  assert mc.count(v['batch_stats']) == 2 * 64


@pytest.mark.slow
def test_vit_b_setting_matches_the_paper_encoder():
  v = mc.init_shapes(TransUNet(**VIT_B), jnp.zeros((1, 224, 224, 3)))
  tr = v['params']['transformer']
  assert tr['pos_embedding'].shape == (1, 196, 768)
  encoder = sum(mc.count(tr[f'block_{i}']) for i in range(12))
  encoder += mc.count(tr['encoder_norm'])
  assert encoder == 12 * _block(768, 3072) + 2 * 768 == 85_056_000
  assert mc.count(v['params']) == 98_485_649


def test_default_size():
  v = mc.init_shapes(TransUNet(), jnp.zeros((1, 256, 256, 3)))
  assert v['params']['transformer']['pos_embedding'].shape == (1, 256, 192)
  assert mc.count(v['params']) == 3_439_857


@pytest.mark.slow
@pytest.mark.parametrize('shape', [(2, 16, 16, 2), (1, 16, 8, 16, 1)])
def test_shapes_2d_and_3d(shape):
  model = TransUNet(num_classes=3, **TINY)
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  v = mc.variables(model, x)
  nd = len(shape) - 2
  tokens = np.prod([s // 8 for s in shape[1:-1]])
  assert v['params']['transformer']['pos_embedding'].shape == (1, tokens, 8)
  assert v['params']['stem_0']['conv1']['conv']['kernel'].shape == (
      (3,) * nd + (shape[-1], 4))
  out = model.apply(v, x, train=False)
  assert out.shape == shape[:-1] + (3,) and out.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.slow
def test_gradient_steps_lower_loss():
  model = TransUNet(**{**TINY, 'num_layers': 1, 'dropout_rate': 0.1})
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 2)),
                  jnp.float32)
  before, after = mc.gradient_steps_lower_loss(model, x, learning_rate=1e-2)
  assert after < before


@pytest.mark.slow
@pytest.mark.parametrize('rates', [dict(dropout_rate=0.3),
                                   dict(dropout_rate=0.0,
                                        attention_dropout_rate=0.3)])
def test_dropout_keys_and_deterministic_eval(rates):
  model = TransUNet(**{**TINY, **rates})
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16, 16, 2)),
                  jnp.float32)
  a, b, c = mc.dropout_outputs(model, x)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  v = mc.variables(model, x)
  e1 = model.apply(v, x, train=False)
  e2 = model.apply(v, x, train=False)
  np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))


def test_input_size_must_match_init():
  model = TransUNet(**TINY)
  v = mc.variables(model, jnp.zeros((1, 16, 16, 2)))
  with pytest.raises(ValueError, match=r'initialised for 4 tokens.*'
                     r'\(32, 16\).*8 tokens'):
    jax.eval_shape(lambda: model.apply(v, jnp.zeros((1, 32, 16, 2)),
                                       train=False))


def test_registry_builds_from_config():
  model = models.build(ml_collections.ConfigDict(dict(
      name='transunet', num_classes=2, stem_features=[8, 16],
      decoder_features=[16, 8, 8], hidden_size=32, num_heads=4,
      dtype='float32')))
  assert isinstance(model, TransUNet)
  assert model.stem_features == (8, 16) and model.hidden_size == 32
  default = models.build(ml_collections.ConfigDict({'name': 'transunet'}))
  assert (default.hidden_size, default.num_layers, default.num_heads,
          default.patch_size) == (192, 4, 4, 2)


@pytest.mark.parametrize('kwargs, shape, match', [
    (dict(decoder_features=(8, 4)), (1, 16, 16, 1), 'needs 3 entries'),
    (dict(patch_size=3), (1, 16, 16, 1), 'power of 2'),
    (dict(num_heads=3), (1, 16, 16, 1), 'num_heads'),
    (dict(upsampling='cubic'), (1, 16, 16, 1), 'upsampling'),
    (dict(), (1, 16, 20, 1), r'\(16, 20\)'),
])
def test_bad_settings_fail_clearly(kwargs, shape, match):
  with pytest.raises(ValueError, match=match):
    mc.init_shapes(TransUNet(**{**TINY, **kwargs}), jnp.zeros(shape))
