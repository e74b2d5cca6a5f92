"""The GPU/TPU path without a GPU: train steps lowered for cuda and tpu here.

jaxseg's CPU substitutes (3D convolutions as depth-sliced 2D ones, argmax
max-pooling, sub-pixel transposed convolutions; jaxseg.models.kernels) must
reach a CPU lowering only. This lowers the train step of three study
configs, shrunk, for 'cuda' and 'tpu' with jax.export on this CPU host and
reads the StableHLO: XLA's native ops, no substitute. Conversely the CPU
lowering with model.kernels='auto' has the substitutes and 'native' forces
the native ops there too. f32 and bf16 (config.train.precision).

What the text shows for each layer:
  * convolution: `stablehlo.convolution` with a rank-5 (3D) or rank-4 (2D)
    kernel; the depth-sliced substitute is a rank-4 convolution in a 3D
    model.
  * max-pool: native is `stablehlo.reduce_window` (its gradient
    `select_and_scatter`); the substitute an argmax, a `stablehlo.reduce`
    over (value, index) pairs, and no reduce_window.
  * transposed convolution: native is a convolution with `lhs_dilate`; the
    substitute stride-1 convolutions, no lhs_dilate above 1 (none of these
    configs has a strided convolution, whose gradient would have one).
"""

import functools
import re

import jax
from jax import export
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config
from jaxseg import losses
from jaxseg import train
from jaxseg.data import preprocess

BATCH = 2


def _small(name):
  """(config, image shape) of a study config shrunk to a fast size."""
  config = load_config(name)
  if name == 'brats19_resunet':  # seed 002: 2D, batch and layer norm
    config.model.widths = (4, 8, 8)
    config.model.depths = (1, 1, 1)
    config.model.decoder_widths = (8, 4)
    config.model.decoder_depths = (1, 1)
    config.model.output_depth = 1
    return config, (16, 16, 4)
  if name == 'lgg_unet':  # seed 003: 2D, batch norm, ConvTranspose 2x2/2
    config.model.features = 4
    config.model.depth = 2
    return config, (16, 16, 3)
  if name == 'brats_unet3d_regions':  # 3D region U-Net, instance norm
    config.model.features = 4
    config.model.depth = 2
    return config, (8, 8, 8, 4)
  raise ValueError(name)


CONFIGS = ('brats19_resunet', 'lgg_unet', 'brats_unet3d_regions')


def _step_and_args(name, precision, kernels):
  config, image_shape = _small(name)
  config.train.precision = precision
  config.model.kernels = kernels
  model = train.build_model(config)
  state = train.abstract_train_state(model, optax.adam(1e-3), image_shape)
  outputs = preprocess.num_outputs(config.data.label_mode)
  shape = (BATCH,) + image_shape
  batch = dict(
      image=jax.ShapeDtypeStruct(shape, jnp.float32),
      target=jax.ShapeDtypeStruct(shape[:-1] + (outputs,), jnp.float32),
      weight=jax.ShapeDtypeStruct((BATCH,), jnp.float32))
  step = jax.jit(functools.partial(
      train.train_step, loss_fn=losses.build(config.loss),
      activation=preprocess.activation(config.data.label_mode)))
  key = jax.eval_shape(lambda: jax.random.key(0))
  return step, (state, batch, key), len(image_shape) - 1


@functools.lru_cache(maxsize=None)
def _traced(name, precision, kernels):
  step, args, nd = _step_and_args(name, precision, kernels)
  return step.trace(*args), nd


@functools.lru_cache(maxsize=None)
def _lowered(name, precision, kernels, platform):
  """(StableHLO text, spatial rank) of the config's train step lowered for
  `platform` on this host (what jax.export does, traced once for all)."""
  traced, nd = _traced(name, precision, kernels)
  return traced.lower(lowering_platforms=(platform,)).as_text(), nd


_CONV = re.compile(r'stablehlo\.convolution\(.*?\)\s*->\s*tensor<[^>]*>')
_TENSOR = re.compile(r'tensor<([0-9x]+)x(f32|bf16|f16)>')
_LHS_DILATE = re.compile(r'lhs_dilate = \[([0-9, ]+)\]')
# A variadic reduce (value, index): jnp.argmax.
_ARGMAX = re.compile(r'stablehlo\.reduce\(%[^ ]+ init: %[^ )]+\), '
                     r'\(%[^ ]+ init: %[^ )]+\)')


def _ops(text):
  """Counts of the ops that tell the implementations apart."""
  convs = _CONV.findall(text)
  ranks, dtypes = set(), set()
  for conv in convs:
    tensors = _TENSOR.findall(conv)
    ranks.add(len(tensors[1][0].split('x')))  # the kernel's rank
    dtypes.update(t[1] for t in tensors)
  return dict(convs=len(convs), kernel_ranks=ranks, conv_dtypes=dtypes,
              reduce_window=text.count('stablehlo.reduce_window'),
              select_and_scatter=text.count('stablehlo.select_and_scatter'),
              argmax=len(_ARGMAX.findall(text)),
              lhs_dilate=sum(1 for d in _LHS_DILATE.findall(text)
                             if set(d.replace(' ', '').split(',')) != {'1'}))


def _assert_native(ops, nd, precision):
  assert ops['convs'] > 0
  assert ops['kernel_ranks'] == {nd + 2}, ops  # no depth-sliced 2D convs
  assert ops['reduce_window'] > 0 and ops['select_and_scatter'] > 0, ops
  assert ops['argmax'] == 0, ops
  assert ops['lhs_dilate'] > 0, ops  # ConvTranspose as lhs-dilated conv
  assert _dtype(precision) in ops['conv_dtypes'], ops


def _assert_substitutes(ops, nd, precision):
  assert ops['kernel_ranks'] == {4}, ops  # 3D convs as 2D ones, too
  assert ops['reduce_window'] == 0 and ops['select_and_scatter'] == 0, ops
  assert ops['argmax'] > 0, ops
  assert ops['lhs_dilate'] == 0, ops
  assert _dtype(precision) in ops['conv_dtypes'], ops
  del nd


def _dtype(precision):
  return {'float32': 'f32', 'bfloat16': 'bf16'}[precision]


@pytest.mark.parametrize('precision', ['float32', 'bfloat16'])
@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
@pytest.mark.parametrize('name', CONFIGS)
def test_accelerator_lowering_uses_native_ops(name, platform, precision):
  text, nd = _lowered(name, precision, 'auto', platform)
  _assert_native(_ops(text), nd, precision)


@pytest.mark.parametrize('precision', ['float32', 'bfloat16'])
@pytest.mark.parametrize('name', CONFIGS)
def test_cpu_lowering_uses_substitutes_unless_native(name, precision):
  text, nd = _lowered(name, precision, 'auto', 'cpu')
  _assert_substitutes(_ops(text), nd, precision)
  text, nd = _lowered(name, precision, 'native', 'cpu')
  _assert_native(_ops(text), nd, precision)


def test_cpu_kernels_setting_forces_substitutes_on_accelerators():
  text, nd = _lowered('brats_unet3d_regions', 'float32', 'cpu', 'cuda')
  _assert_substitutes(_ops(text), nd, 'float32')


def test_one_export_for_cpu_and_cuda_carries_both():
  step, args, _ = _step_and_args('brats_unet3d_regions', 'float32', 'auto')
  exported = export.export(step, platforms=('cpu', 'cuda'))(*args)
  ops = _ops(exported.mlir_module())
  assert ops['kernel_ranks'] == {4, 5} and ops['argmax'] and ops['lhs_dilate']
  assert exported.platforms == ('cpu', 'cuda')


def _concrete_step(name, kernels):
  config, image_shape = _small(name)
  config.model.kernels = kernels
  config.model.dropout_rate = 0.0 if 'dropout_rate' in config.model else None
  if config.model.dropout_rate is None:
    del config.model['dropout_rate']
  model = train.build_model(config)
  tx = optax.sgd(1.0)
  state = train.create_train_state(model, tx, jax.random.key(0), image_shape)
  outputs = preprocess.num_outputs(config.data.label_mode)
  rng = np.random.default_rng(0)
  shape = (BATCH,) + image_shape
  batch = dict(image=jnp.asarray(rng.normal(size=shape), jnp.float32),
               target=jnp.asarray(rng.random(shape[:-1] + (outputs,)) < 0.3,
                                  jnp.float32),
               weight=jnp.ones((BATCH,), jnp.float32))
  step = jax.jit(functools.partial(
      train.train_step, loss_fn=losses.build(config.loss),
      activation=preprocess.activation(config.data.label_mode)))
  new, _ = step(state, batch, jax.random.key(1))
  return jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b),
                      state.params, new.params)


@pytest.mark.parametrize('name', CONFIGS)
def test_substitutes_and_native_ops_give_the_same_step(name):
  # One SGD step of learning rate 1: the parameter change is the gradient.
  native = _concrete_step(name, 'native')
  auto = _concrete_step(name, 'auto')
  num = sum(float(np.sum((a - b) ** 2)) for a, b in
            zip(jax.tree.leaves(auto), jax.tree.leaves(native)))
  den = sum(float(np.sum(b ** 2)) for b in jax.tree.leaves(native))
  assert np.sqrt(num / den) < 1e-5
