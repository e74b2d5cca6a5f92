"""Device mesh and shardings: data parallel over every device of every host.

The mesh has one axis, 'data'. Batches are sharded along their leading axis
over it; parameters, optimiser state and batch statistics are replicated.
Under `jax.jit` BatchNorm then sees the whole global batch, so a step on N
devices computes what the same step computes on one.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  """A 1-D mesh ('data',) over all devices of all processes."""
  return Mesh(np.asarray(jax.devices()), ('data',))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over devices and processes."""
  from jaxseg.errors import InputError
  n = mesh.devices.size
  if global_batch_size % n or global_batch_size % jax.process_count():
    raise InputError('config.train.batch_size',
                     f'{global_batch_size} does not split evenly over {n} '
                     f'devices and {jax.process_count()} processes')


def to_global(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local batch (this process's rows) -> global jax.Arrays sharded on 'data'."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)


def local_rows(global_batch: dict) -> dict:
  """This process's share of a batch that every process holds whole."""
  n, i = jax.process_count(), jax.process_index()
  return jax.tree.map(lambda x: x[i * (len(x) // n):(i + 1) * (len(x) // n)],
                      global_batch)
