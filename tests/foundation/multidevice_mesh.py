"""Train steps on meshes of 8 CPU devices against the same steps on one device.

Run by tests/foundation/test_parallel.py in a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=8. Prints one JSON line:
  spatial: a 3D U-Net (batch norm) on a (data 4, spatial 2) mesh, the depth
    axis of the volumes split over 'spatial';
  accum: a 2D U-Net (group norm) with the batch of 8 as 4 micro-batches on
    (data 2, spatial 1), against one whole-batch step on one device.
Each entry: the largest parameter difference after 3 steps, the largest
parameter, and the two losses.
"""

import functools
import json

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxseg import losses
from jaxseg import models
from jaxseg.training import optim
from jaxseg import parallel
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib
def run(model, batch, mesh_shape, devices, accum=1, loss='focal_dice'):
  mesh = Mesh(np.asarray(devices).reshape(mesh_shape), parallel.AXES)
  tx = optim.build(ml_collections.ConfigDict(dict(name='sgd', learning_rate=0.1,
                                                  momentum=0.9)))
  state = state_lib.create_train_state(model, tx, jax.random.key(0),
                                   batch['image'].shape[1:])
  state = jax.device_put(state, parallel.replicated(mesh))
  loss_fn = losses.build(ml_collections.ConfigDict(dict(name=loss)))
  step = jax.jit(functools.partial(step_lib.train_step, loss_fn=loss_fn,
                                   activation='sigmoid', grad_accum_steps=accum))
  global_batch = parallel.to_global(batch, mesh)
  assert len(global_batch['image'].sharding.device_set) == len(devices)
  for _ in range(3):
    state, metrics = step(state, global_batch, jax.random.key(1))
  return jax.device_get(state.params), metrics.compute()['loss']


def compare(a, b):
  (pa, la), (pb, lb) = a, b
  diffs = jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(x - y))), pa, pb))
  scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(pa))
  return dict(max_abs_diff=max(diffs), max_abs_param=scale, loss_a=la,
              loss_b=lb)


def main():
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  devices = jax.devices()
  out = {}

  unet3d = models.build(ml_collections.ConfigDict(dict(
      name='unet3d', num_classes=1, features=4, depth=2)))
  vol = dict(image=rng.normal(size=(4, 8, 8, 8, 1)).astype(np.float32),
             target=(rng.random((4, 8, 8, 8, 1)) > 0.7).astype(np.float32),
             weight=np.ones(4, np.float32))
  spatial = run(unet3d, vol, (4, 2), devices)
  out['spatial'] = compare(run(unet3d, vol, (1, 1), devices[:1]), spatial)
  out['spatial_sharded'] = str(parallel.to_global(
      vol, Mesh(np.asarray(devices).reshape(4, 2), parallel.AXES)
  )['image'].sharding.spec)

  unet = models.build(ml_collections.ConfigDict(dict(
      name='unet', num_classes=1, features=4, depth=2, norm='group')))
  img = dict(image=rng.normal(size=(8, 16, 16, 2)).astype(np.float32),
             target=(rng.random((8, 16, 16, 1)) > 0.7).astype(np.float32),
             weight=np.ones(8, np.float32))
  whole = run(unet, img, (1, 1), devices[:1], loss='bce')
  out['accum'] = compare(whole, run(unet, img, (2, 1), devices[:2], accum=4,
                                    loss='bce'))
  out['accum_one_device'] = compare(whole, run(unet, img, (1, 1), devices[:1],
                                               accum=4, loss='bce'))
  print(json.dumps(out))


if __name__ == '__main__':
  main()
