"""The GPU/TPU path without a GPU: train steps lowered for cuda and tpu here.

jaxseg's CPU implementations (oneDNN's convolutions, argmax max-pooling;
jaxseg.models.ops) must reach a CPU lowering only. This lowers the train
step of three study configs, shrunk, for 'cuda' and 'tpu' with jax.export
on this CPU host and reads the StableHLO: XLA's native ops, no oneDNN call.
Conversely the CPU lowering runs every convolution on oneDNN. f32 and bf16
(config.train.precision). A CPU step equals the float64 step (XLA's
convolutions) to float32 rounding.

What the text shows for each layer:
  * convolution: native is `stablehlo.convolution` with a rank-5 (3D) or
    rank-4 (2D) kernel; on the CPU a `stablehlo.custom_call
    @jaxseg_onednn_conv_*` per pass.
  * max-pool: native is `stablehlo.reduce_window` (its gradient
    `select_and_scatter`); on the CPU an argmax, a `stablehlo.reduce` over
    (value, index) pairs, and no reduce_window.
  * transposed convolution: native is a convolution with `lhs_dilate`.
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
from jaxseg import labels
from jaxseg import losses
from jaxseg import onednn
from jaxseg import models
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib

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


def _step_and_args(name, precision):
  config, image_shape = _small(name)
  config.train.precision = precision
  model = models.from_config(config)
  state = state_lib.abstract_train_state(model, optax.adam(1e-3), image_shape)
  outputs = labels.num_outputs(config.data.label_mode)
  shape = (BATCH,) + image_shape
  batch = dict(
      image=jax.ShapeDtypeStruct(shape, jnp.float32),
      target=jax.ShapeDtypeStruct(shape[:-1] + (outputs,), jnp.float32),
      weight=jax.ShapeDtypeStruct((BATCH,), jnp.float32))
  step = jax.jit(functools.partial(
      step_lib.train_step, loss_fn=losses.build(config.loss),
      activation=labels.activation(config.data.label_mode)))
  key = jax.eval_shape(lambda: jax.random.key(0))
  return step, (state, batch, key), len(image_shape) - 1


@functools.lru_cache(maxsize=None)
def _traced(name, precision):
  step, args, nd = _step_and_args(name, precision)
  return step.trace(*args), nd


@functools.lru_cache(maxsize=None)
def _lowered(name, precision, platform):
  """(StableHLO text, spatial rank) of the config's train step lowered for
  `platform` on this host (what jax.export does, traced once for all)."""
  traced, nd = _traced(name, precision)
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
  onednn_calls = [line for line in text.splitlines()
                  if 'custom_call @jaxseg_onednn_conv' in line]
  return dict(convs=len(convs), kernel_ranks=ranks, conv_dtypes=dtypes,
              onednn=len(onednn_calls),
              onednn_dtypes={d for line in onednn_calls
                             for d in ('f32', 'bf16') if f'x{d}>' in line},
              reduce_window=text.count('stablehlo.reduce_window'),
              select_and_scatter=text.count('stablehlo.select_and_scatter'),
              argmax=len(_ARGMAX.findall(text)),
              lhs_dilate=sum(1 for d in _LHS_DILATE.findall(text)
                             if set(d.replace(' ', '').split(',')) != {'1'}))


def _assert_native(ops, nd, precision):
  assert ops['convs'] > 0 and ops['onednn'] == 0, ops
  assert ops['kernel_ranks'] == {nd + 2}, ops
  assert ops['reduce_window'] > 0 and ops['select_and_scatter'] > 0, ops
  assert ops['argmax'] == 0, ops
  assert ops['lhs_dilate'] > 0, ops  # ConvTranspose as lhs-dilated conv
  assert _dtype(precision) in ops['conv_dtypes'], ops


def _assert_cpu(ops, nd, precision):
  if onednn.available():
    assert ops['convs'] == 0 and ops['onednn'] > 0, ops
    assert _dtype(precision) in ops['onednn_dtypes'], ops
  else:  # XLA's convolutions where the extension is not built
    assert ops['kernel_ranks'] == {nd + 2}, ops
  assert ops['reduce_window'] == 0 and ops['select_and_scatter'] == 0, ops
  assert ops['argmax'] > 0, ops


def _dtype(precision):
  return {'float32': 'f32', 'bfloat16': 'bf16'}[precision]


@pytest.mark.slow
@pytest.mark.parametrize('precision', ['float32', 'bfloat16'])
@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
@pytest.mark.parametrize('name', CONFIGS)
def test_accelerator_lowering_uses_native_ops(name, platform, precision):
  text, nd = _lowered(name, precision, platform)
  _assert_native(_ops(text), nd, precision)


@pytest.mark.slow
@pytest.mark.parametrize('precision', ['float32', 'bfloat16'])
@pytest.mark.parametrize('name', CONFIGS)
def test_cpu_lowering_runs_onednn_and_argmax_pooling(name, precision):
  text, nd = _lowered(name, precision, 'cpu')
  _assert_cpu(_ops(text), nd, precision)


@pytest.mark.slow
def test_one_export_for_cpu_and_cuda_carries_both():
  step, args, _ = _step_and_args('brats_unet3d_regions', 'float32')
  # jaxseg's custom calls are not among jax.export's stable ones: an
  # exported CPU program runs where jaxseg.onednn registered them.
  checks = [export.DisabledSafetyCheck.custom_call(target) for target in (
      'jaxseg_onednn_conv_fwd', 'jaxseg_onednn_conv_bwd_data',
      'jaxseg_onednn_conv_bwd_weights')]
  exported = export.export(step, platforms=('cpu', 'cuda'),
                           disabled_checks=checks)(*args)
  ops = _ops(exported.mlir_module())
  assert ops['kernel_ranks'] == {5} and ops['argmax'] and ops['lhs_dilate']
  assert ops['onednn'] > 0 or not onednn.available()
  assert exported.platforms == ('cpu', 'cuda')


def _concrete_step(name, dtype):
  """One SGD step of learning rate 1 computed in `dtype`: the gradient."""
  config, image_shape = _small(name)
  config.model.dtype = np.dtype(dtype).name  # the layers compute in it too
  if 'dropout_rate' in config.model:
    config.model.dropout_rate = 0.0
  model = models.from_config(config)
  tx = optax.sgd(1.0)
  state = state_lib.create_train_state(model, tx, jax.random.key(0), image_shape)
  state = jax.tree.map(lambda x: x.astype(dtype) if getattr(
      x, 'dtype', None) == np.float32 else x, state)
  outputs = labels.num_outputs(config.data.label_mode)
  rng = np.random.default_rng(0)
  shape = (BATCH,) + image_shape
  batch = dict(image=jnp.asarray(rng.normal(size=shape), dtype),
               target=jnp.asarray(rng.random(shape[:-1] + (outputs,)) < 0.3,
                                  dtype),
               weight=jnp.ones((BATCH,), dtype))
  step = jax.jit(functools.partial(
      step_lib.train_step, loss_fn=losses.build(config.loss),
      activation=labels.activation(config.data.label_mode)))
  new, _ = step(state, batch, jax.random.key(1))
  return [np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in
          zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params))]


@pytest.mark.slow
@pytest.mark.parametrize('name', CONFIGS)
def test_cpu_step_equals_the_float64_step(name):
  # float32 on the CPU path (oneDNN) against float64, where every
  # convolution is XLA's: the gradients agree to float32 rounding.
  ours = _concrete_step(name, np.float32)
  with jax.enable_x64(True):
    reference = _concrete_step(name, np.float64)
  num = sum(float(np.sum((a - b) ** 2)) for a, b in zip(ours, reference))
  den = sum(float(np.sum(b ** 2)) for b in reference)
  assert np.sqrt(num / den) < 1e-5
