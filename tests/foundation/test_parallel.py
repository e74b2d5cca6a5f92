"""A train step on 4 CPU devices equals the same step on 1 device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Trains or runs whole pipelines: the full suite's, not the fast loop's.
pytestmark = pytest.mark.slow


def test_four_device_step_equals_one_device_step():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  script = Path(__file__).with_name('multidevice_step.py')
  out = subprocess.run([sys.executable, str(script)], env=env, check=True,
                       capture_output=True, text=True, timeout=600)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  # Batch statistics and gradients are over the whole global batch in both
  # cases; only the order of float reductions differs. Parameters after one
  # SGD step (lr 0.1), losses after three (see multidevice_step.py).
  assert result['max_abs_diff'] < 1e-6 * max(1.0, result['max_abs_param']), result
  assert abs(result['loss_1'] - result['loss_4']) < 1e-5, result


def test_spatial_mesh_and_gradient_accumulation_equal_one_device():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  script = Path(__file__).with_name('multidevice_mesh.py')
  out = subprocess.run([sys.executable, str(script)], env=env, check=True,
                       capture_output=True, text=True, timeout=600)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  # The depth axis really is split over 'spatial'.
  assert result['spatial_sharded'] == "P('data', 'spatial')"
  for name in ('spatial', 'accum', 'accum_one_device'):
    r = result[name]
    assert r['max_abs_diff'] < 1e-5 * max(1.0, r['max_abs_param']), (name, r)
    assert abs(r['loss_a'] - r['loss_b']) < 1e-5, (name, r)


def test_mesh_shape_from_config():
  import ml_collections
  import pytest
  from jaxseg import parallel
  from jaxseg.errors import InputError
  cfg = lambda d, s: ml_collections.ConfigDict(dict(data=d, spatial=s))
  assert parallel.mesh_shape(cfg(-1, 1), 8) == (8, 1)
  assert parallel.mesh_shape(cfg(-1, 2), 8) == (4, 2)
  assert parallel.mesh_shape(cfg(2, 4), 8) == (2, 4)
  with pytest.raises(InputError, match='config.mesh.spatial'):
    parallel.mesh_shape(cfg(-1, 3), 8)
  with pytest.raises(InputError, match='config.mesh.data'):
    parallel.mesh_shape(cfg(3, 2), 8)


def test_initialize_needs_all_three_settings(monkeypatch):
  import pytest
  from jaxseg import parallel
  from jaxseg.errors import InputError
  for var in ('COORDINATOR_ADDRESS', 'NUM_PROCESSES', 'PROCESS_ID'):
    monkeypatch.delenv('JAXSEG_' + var, raising=False)
  monkeypatch.delenv('SLURM_JOB_ID', raising=False)
  assert parallel.initialize() is False          # one process: nothing to do
  monkeypatch.setenv('JAXSEG_COORDINATOR_ADDRESS', 'localhost:1234')
  with pytest.raises(InputError, match='--num_processes'):
    parallel.initialize()
  monkeypatch.setenv('JAXSEG_NUM_PROCESSES', '2')
  with pytest.raises(InputError, match='process_id'):
    parallel.initialize(process_id=2)
  monkeypatch.setenv('JAXSEG_NUM_PROCESSES', 'two')
  with pytest.raises(InputError, match='JAXSEG_NUM_PROCESSES'):
    parallel.initialize()
