"""The train step's device augmentation on 1, 4 and (2 data x 2 spatial) devices.

Prints the largest difference of the augmented batches (2D and 3D) from the
one-device result: the per-sample keys are those of the sample's row of the
global batch, so the draws must not depend on the mesh.

Run by tests/data/test_augment_placement.py in a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

import functools
import json
import time

import jax
import numpy as np
from jax.sharding import Mesh

from jaxseg import parallel
from jaxseg.data import augment
from jaxseg.data import augment_device

CFG = augment.AugmentConfig(flip_prob=0.5, cutout_prob=0.5, noise_prob=0.5,
                            rotate_prob=0.5, scale_prob=0.5, elastic_prob=0.5,
                            intensity_prob=0.5, gamma_prob=0.5, blur_prob=0.5)


def run(mesh, batch):
  step = jax.jit(functools.partial(augment_device.augment_train_batch,
                                   cfg=CFG))
  global_batch = parallel.to_global(batch, mesh)
  assert len(global_batch['image'].sharding.device_set) == mesh.devices.size
  out = step(global_batch, jax.random.key(5), 3)
  return jax.device_get(out)


def diff(a, b):
  """(largest image difference, share of target voxels that differ)."""
  return (float(np.max(np.abs(a['image'] - b['image']))),
          float(np.mean(a['target'] != b['target'])))


def main():
  assert jax.device_count() == 4, jax.devices()
  rng = np.random.default_rng(0)
  result = {}
  for name, spatial in (('2d', (16, 16)), ('3d', (8, 12, 12))):
    t0 = time.time()
    batch = dict(
        image=rng.normal(size=(4,) + spatial + (2,)).astype(np.float32),
        target=(rng.random((4,) + spatial + (3,)) > 0.7).astype(np.float32),
        weight=np.ones(4, np.float32))
    devices = np.asarray(jax.devices())
    one = run(Mesh(devices[:1].reshape(1, 1), parallel.AXES), batch)
    four = run(Mesh(devices.reshape(4, 1), parallel.AXES), batch)
    result[name] = dict(four=diff(one, four),
                        changed=float(np.mean(one['image'] != batch['image'])))
    if name == '3d':
      mixed = run(Mesh(devices.reshape(2, 2), parallel.AXES), batch)
      result[name]['data_spatial'] = diff(one, mixed)
    result[name]['seconds'] = time.time() - t0
  print(json.dumps(result))


if __name__ == '__main__':
  main()
