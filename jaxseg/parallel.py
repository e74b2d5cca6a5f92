"""Processes, the device mesh and shardings: data (and spatial) parallelism.

Multi-host start-up (`initialize`): every process runs the same command;
`jax.distributed.initialize` connects them through a coordinator, given
explicitly (flags or JAXSEG_COORDINATOR_ADDRESS / JAXSEG_NUM_PROCESSES /
JAXSEG_PROCESS_ID) or found by JAX itself under SLURM (srun) and on Cloud
TPU pods. CPU processes talk over gloo.

The mesh has axes ('data', 'spatial') over every device of every process,
shape (`mesh.data`, `mesh.spatial`). Batches (N, ...) are split along N over
'data'; inputs of 3D models (N, D, H, W, C) also split D over 'spatial',
and XLA's SPMD partitioner exchanges the convolution halos. Parameters,
optimiser state and batch statistics are replicated. Under `jax.jit` batch
norm sees the whole global batch, so a step on N devices computes what the
same step computes on one.
"""

import os

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxseg.errors import InputError

AXES = ('data', 'spatial')
ENV_PREFIX = 'JAXSEG_'


def _setting(value, env: str, cast=str):
  """A flag's value, else the environment variable JAXSEG_<env>, else None."""
  if value is not None:
    return value
  raw = os.environ.get(ENV_PREFIX + env)
  if raw in (None, ''):
    return None
  try:
    return cast(raw)
  except ValueError:
    raise InputError(ENV_PREFIX + env, f'{raw!r} is not a valid value') from None


def in_slurm_job() -> bool:
  """True under `srun` with more than one task (JAX reads SLURM's variables)."""
  return (os.environ.get('SLURM_JOB_ID') is not None
          and int(os.environ.get('SLURM_NTASKS', '1')) > 1)


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins a multi-process run when one is configured; returns whether it did.

  Explicit settings (arguments, else JAXSEG_* variables) win; without them a
  SLURM job with several tasks is detected and JAX reads its variables. A
  single process needs nothing and calls nothing.
  """
  address = _setting(coordinator_address, 'COORDINATOR_ADDRESS')
  count = _setting(num_processes, 'NUM_PROCESSES', int)
  index = _setting(process_id, 'PROCESS_ID', int)
  explicit = address is not None or count is not None or index is not None
  if explicit:
    missing = [n for n, v in (('coordinator_address', address),
                              ('num_processes', count),
                              ('process_id', index)) if v is None]
    if missing:
      raise InputError('--' + missing[0], 'a multi-process run needs '
                       '--coordinator_address, --num_processes and '
                       '--process_id (or JAXSEG_COORDINATOR_ADDRESS, '
                       'JAXSEG_NUM_PROCESSES, JAXSEG_PROCESS_ID)')
    if not 0 <= index < count:
      raise InputError('--process_id', f'{index} is not in [0, {count})')
    if count == 1:
      return False
  elif not in_slurm_job():
    return False
  if _cpu_only():
    # Cross-process collectives on CPU devices.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if explicit:
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=count, process_id=index)
  else:
    jax.distributed.initialize()
  logging.info('process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def _cpu_only() -> bool:
  platforms = os.environ.get('JAX_PLATFORMS', '') or str(
      jax.config.jax_platforms or '')
  return platforms.strip().lower() == 'cpu'


def mesh_shape(mesh_config=None, device_count: int | None = None
               ) -> tuple[int, int]:
  """(data, spatial) sizes from `config.mesh`; data=-1 takes what is left."""
  n = jax.device_count() if device_count is None else device_count
  data = -1 if mesh_config is None else int(mesh_config.get('data', -1))
  spatial = 1 if mesh_config is None else int(mesh_config.get('spatial', 1))
  if spatial < 1 or n % spatial:
    raise InputError('config.mesh.spatial', f'{spatial} does not divide the '
                     f'{n} devices')
  if data == -1:
    data = n // spatial
  if data < 1 or data * spatial != n:
    raise InputError('config.mesh.data', f'{data} x spatial {spatial} is not '
                     f'the {n} devices (use -1 for all that are left)')
  return data, spatial


def make_mesh(mesh_config=None) -> Mesh:
  """A (data, spatial) mesh over all devices of all processes.

  Devices are in `jax.devices()` order (process by process), so a spatial
  group that divides the local device count stays inside one process.
  """
  shape = mesh_shape(mesh_config)
  return Mesh(np.asarray(jax.devices()).reshape(shape), AXES)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Rows over 'data'; for (N, D, H, W, C) arrays D also over 'spatial'."""
  if ndim == 5 and mesh.shape.get('spatial', 1) > 1:
    return NamedSharding(mesh, P('data', 'spatial'))
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_size(mesh: Mesh) -> int:
  """The number of batch shards: the mesh's 'data' axis."""
  return mesh.shape['data']


def check_batch_size(global_batch_size: int, mesh: Mesh,
                     key: str = 'config.train.batch_size') -> None:
  """The global batch must split evenly over the data axis and processes."""
  n = data_size(mesh)
  if global_batch_size % n or global_batch_size % jax.process_count():
    raise InputError(key, f'{global_batch_size} does not split evenly over '
                     f'{n} data-parallel devices and {jax.process_count()} '
                     'processes')


def to_global(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local batch (this process's rows) -> global jax.Arrays on the mesh."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(
          batch_sharding(mesh, np.ndim(x)), np.asarray(x)),
      local_batch)


def local_rows(global_batch: dict) -> dict:
  """This process's share of a batch that every process holds whole."""
  n, i = jax.process_count(), jax.process_index()
  return jax.tree.map(lambda x: x[i * (len(x) // n):(i + 1) * (len(x) // n)],
                      global_batch)
