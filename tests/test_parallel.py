"""A train step on 4 CPU devices equals the same step on 1 device."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_four_device_step_equals_one_device_step():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  script = Path(__file__).with_name('multidevice_step.py')
  out = subprocess.run([sys.executable, str(script)], env=env, check=True,
                       capture_output=True, text=True, timeout=600)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  # Batch statistics and gradients are over the whole global batch in both
  # cases; only the order of float reductions differs.
  assert result['max_abs_diff'] < 1e-5 * max(1.0, result['max_abs_param']), result
  assert abs(result['loss_1'] - result['loss_4']) < 1e-5, result
