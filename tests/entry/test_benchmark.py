"""`--mode=benchmark` (jaxseg.benchmark) on the tiny config."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, tiny
from jaxseg import benchmark
from jaxseg.models import shapes
from jaxseg import models

# Trains or runs whole pipelines: the full suite's, not the fast loop's.
pytestmark = pytest.mark.slow

KEYS = ('input_shape', 'params', 'compile_s', 'step_s', 'step_flops',
        'items_per_s', 'peak_memory_bytes', 'flops_per_s', 'peak_flops_per_s',
        'utilisation', 'loader_batches_per_s', 'step_batches_per_s',
        'input_bound', 'augment_where', 'loader_over_step', 'model_flops',
        'program_bytes', 'step_device_s', 'compile_device_s',
        'augment_device_s', 'loader_device_batches_per_s',
        'step_device_batches_per_s', 'input_bound_device',
        'loader_over_step_device')


@pytest.fixture(scope='module')
def run(tmp_path_factory, cache_dir):
  config = tiny(load_config())
  workdir = tmp_path_factory.mktemp('bench')
  result = benchmark.run_benchmark(config, str(workdir), steps=3, warmup=1,
                                   loader_batches=3, matmul_n=256)
  return config, workdir, result


def test_result_keys_and_file(run):
  config, workdir, result = run
  for key in KEYS:
    assert key in result, key
  with open(workdir / 'benchmark.json') as f:
    assert json.load(f) == json.loads(json.dumps(result))
  assert result['input_shape'] == [8, 32, 32, 4]
  table = benchmark.format_table(result)
  assert 'input-bound' in table and 'utilisation' in table


def test_times_and_rates_positive(run):
  _, _, r = run
  assert r['compile_s'] > 0 and r['step_s'] > 0
  assert len(r['step_times_s']) == 3
  assert r['step_s'] == pytest.approx(float(np.median(r['step_times_s'])))
  assert r['items_per_s'] == pytest.approx(8 / r['step_s'])
  assert r['flops_per_s'] == pytest.approx(r['step_flops'] / r['step_s'])
  assert r['peak_flops_per_s'] == pytest.approx(
      2 * 256 ** 3 / r['peak_matmul_s'])
  assert 0 < r['utilisation']


def test_loader_check_has_both_rates(run):
  _, _, r = run
  assert r['loader_batches_per_s'] > 0
  assert r['step_batches_per_s'] == pytest.approx(1 / r['step_s'])
  assert r['input_bound'] == (r['loader_batches_per_s']
                              < r['step_batches_per_s'])


def test_both_augmentation_placements_are_timed(run):
  """Host: the loader augments; device: the step does, the loader cuts only."""
  _, _, r = run
  assert r['augment_where'] == ('host' if jax.default_backend() == 'cpu'
                                else 'device')
  assert r['step_device_s'] > 0 and len(r['step_device_times_s']) == 3
  assert r['augment_device_s'] == pytest.approx(r['step_device_s']
                                                - r['step_s'])
  assert r['step_device_batches_per_s'] == pytest.approx(1 / r['step_device_s'])
  assert r['loader_over_step'] == pytest.approx(
      r['loader_batches_per_s'] / r['step_batches_per_s'])
  assert r['loader_over_step_device'] == pytest.approx(
      r['loader_device_batches_per_s'] / r['step_device_batches_per_s'])
  assert r['input_bound_device'] == (r['loader_over_step_device'] < 1)
  assert r['loader_device_batches_per_s'] > 0
  table = benchmark.format_table(r)
  assert 'device augmentation: step' in table
  assert 'input-bound (device augmentation)' in table
  # The lowered step's FLOPs: the same model, before backend rewrites.
  assert 0.5 < r['model_flops'] / r['step_flops'] < 2
  assert r['program_bytes'] > 0


def test_memory_na_on_cpu(run):
  _, _, r = run
  if jax.local_devices()[0].platform == 'cpu':
    assert r['peak_memory_bytes'] is None
    assert '| peak device memory | n/a |' in benchmark.format_table(r)
  else:
    assert r['peak_memory_bytes'] > 0


def test_step_flops_against_forward_cost(run):
  """A training step costs 2-5 forward passes (backward ~2x forward + Adam)."""
  config, _, r = run
  model = models.from_config(config)
  x = jnp.zeros(tuple(r['input_shape']), jnp.float32)
  variables = shapes.random_variables(model, x[:1])
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  flops = benchmark._flops(forward.lower(variables, x).compile())
  assert flops > 0 and r['step_flops'] > 0
  assert 2 <= r['step_flops'] / flops <= 5


def test_flops_hand_count_conv_and_matmul():
  """XLA's count: 2 flops per multiply-add, padded taps not counted."""
  x = jnp.ones((2, 8, 8, 3))
  w = jnp.ones((3, 3, 3, 5))
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  # Per spatial axis of 8 with a 3-tap kernel and 1 pad each side:
  # 8 * 3 - 2 valid (output, tap) pairs.
  taps = (8 * 3 - 2) ** 2
  assert benchmark._flops(conv.lower(x, w).compile()) == 2 * 2 * 5 * 3 * taps
  matmul = jax.jit(jnp.matmul)
  a, b = jnp.ones((16, 32)), jnp.ones((32, 8))
  assert benchmark._flops(matmul.lower(a, b).compile()) == 2 * 16 * 32 * 8


def test_input_shape_3d():
  config = load_config('brats15_unet3d')
  assert benchmark.input_shape(config) == (8, 96, 96, 96, 1)
  config.data.patch_size = (32, 48, 64)
  assert benchmark.input_shape(config) == (8, 32, 48, 64, 1)
  assert math.prod(benchmark.input_shape(config)[1:-1]) == 32 * 48 * 64
