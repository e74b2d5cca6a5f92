"""Two local processes (CPU collectives over gloo) train like one process.

The tiny seed-002 run trains 3 steps of the same global batch of 8, once as
a single process and once as 2 processes joined by `jax.distributed`
(`jaxseg.parallel.initialize`), each with 2 CPU devices; each process reads
its half of every global batch (`pipeline.train_loader`), Orbax writes one
checkpoint from both, and both restore it. Both then train to the end of
the epoch and export a model folder together (Orbax saves the weights from
both processes, process 0 writes the rest). The parameters, restored and
exported, must agree to float tolerance.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name('multiprocess_train.py')
STEPS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  flags = os.environ.get('XLA_FLAGS', '')
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count={devices}')


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
  single = tmp_path / 'single.npz'
  subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / 'one' / 'run'),
                  str(single), str(STEPS)], env=_env(1), check=True,
                 timeout=900, capture_output=True)
  port = _free_port()
  multi = tmp_path / 'multi.npz'
  procs = [subprocess.Popen(
      [sys.executable, str(SCRIPT), str(tmp_path / 'two' / 'run'), str(multi),
       str(STEPS), str(port), '2', str(pid)], env=_env(2),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for pid in range(2)]
  outputs = [p.communicate(timeout=900)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert 'process 1 of 2 done' in outputs[1]
  a, b = np.load(single), np.load(multi)
  assert sorted(a.files) == sorted(b.files)
  names = [k for k in a.files if k not in ('moved_from_init', 'partial_left')]
  assert any(k.startswith('exported') for k in names), a.files
  assert not bool(b['partial_left']), 'the export left its temporary folder'
  worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in names)
  scale = max(float(np.max(np.abs(a[k]))) for k in names)
  # The same global batches and batch statistics; only the order of float
  # reductions over 1 vs 4 devices differs.
  assert worst < 1e-5 * max(1.0, scale), (worst, scale)
  # The steps really moved the parameters, far more than the tolerance.
  assert float(a['moved_from_init']) > 100 * worst + 1e-4, float(a['moved_from_init'])
