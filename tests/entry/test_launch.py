"""launch/local_multiprocess.sh picks GPUs, a TPU or the CPU (no JAX run here).

A stand-in `python` on PATH records each process's environment and
arguments, and a stand-in `nvidia-smi` lists GPUs.
"""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / 'launch' / 'local_multiprocess.sh'


def _tool(folder: Path, name: str, body: str) -> None:
  path = folder / name
  path.write_text('#!/usr/bin/env bash\n' + body)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _launch(tmp_path, num, gpus=None, env=None, fail_process=None):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  fail = (f'[[ "$*" == *--process_id={fail_process}* ]] && exit 3\n'
          if fail_process is not None else '')
  _tool(bin_dir, 'python',
        'echo "JAX_PLATFORMS=${JAX_PLATFORMS-unset}"\n'
        'echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"\n'
        'echo "XLA_FLAGS=${XLA_FLAGS-unset}"\n'
        'echo "ARGS=$*"\n' + fail + 'exit 0\n')
  if gpus is not None:
    lines = ''.join(f'echo "GPU {i}: NVIDIA H100 (UUID: GPU-{i})"\n'
                    for i in range(gpus))
    _tool(bin_dir, 'nvidia-smi', lines)
  base = {k: v for k, v in os.environ.items()
          if k not in ('JAX_PLATFORMS', 'CUDA_VISIBLE_DEVICES', 'XLA_FLAGS')}
  # Only the stand-ins and the basic tools: no real nvidia-smi or python.
  base['PATH'] = f'{bin_dir}:/usr/bin:/bin'
  base.update(env or {})
  workdir = tmp_path / 'run'
  out = subprocess.run(['bash', str(SCRIPT), str(num), '--config=c.py',
                        f'--workdir={workdir}'], env=base, text=True,
                       capture_output=True, timeout=60)
  logs = []
  for i in range(num):
    log = workdir / f'process_{i}.log'
    logs.append(dict(line.split('=', 1) for line in
                     log.read_text().splitlines()) if log.exists() else {})
  return out, logs


def test_cpu_machine_gets_cpu_processes_with_host_devices(tmp_path):
  if Path('/dev/accel0').exists():
    pytest.skip('a TPU VM')
  out, logs = _launch(tmp_path, 2, env={'DEVICES_PER_PROCESS': '2'})
  assert out.returncode == 0, out.stderr
  for i, log in enumerate(logs):
    assert log['JAX_PLATFORMS'] == 'cpu'
    assert '--xla_force_host_platform_device_count=2' in log['XLA_FLAGS']
    assert log['CUDA_VISIBLE_DEVICES'] == 'unset'
    assert f'--process_id={i}' in log['ARGS'] and '--num_processes=2' in log['ARGS']


def test_gpu_machine_is_not_forced_to_cpu(tmp_path):
  out, logs = _launch(tmp_path, 2, gpus=4)
  assert out.returncode == 0, out.stderr
  assert [log['CUDA_VISIBLE_DEVICES'] for log in logs] == ['0,1', '2,3']
  for log in logs:
    assert log['JAX_PLATFORMS'] == 'unset'
    assert 'host_platform_device_count' not in log['XLA_FLAGS']


def test_gpu_machine_with_more_processes_than_gpus_is_an_error(tmp_path):
  out, _ = _launch(tmp_path, 3, gpus=2)
  assert out.returncode == 2 and 'GPUs' in out.stderr


def test_asking_for_cpu_on_a_gpu_machine(tmp_path):
  out, logs = _launch(tmp_path, 2, gpus=2, env={'JAX_PLATFORMS': 'cpu'})
  assert out.returncode == 0, out.stderr
  for log in logs:
    assert log['JAX_PLATFORMS'] == 'cpu'
    assert log['CUDA_VISIBLE_DEVICES'] == 'unset'


def test_a_failing_process_sets_the_exit_status(tmp_path):
  out, _ = _launch(tmp_path, 2, fail_process=1)
  assert out.returncode == 3 and 'process 1 failed (exit 3)' in out.stderr
