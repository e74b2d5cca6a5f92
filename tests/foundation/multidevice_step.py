"""Runs train steps on a 1-device and a 4-device mesh; prints the max differences.

The parameters are compared after one step: that measures whether the sharded
gradient equals the unsharded one. Over several steps a discrete choice (a ReLU
or a max-pool window deciding on a value within float noise of zero) can flip
and move a weight by a gradient-sized amount: with spatial dropout this model's
weights differ by 6e-8 after one step and 1.6e-5 after three, so later steps
are compared by their loss only.

Run by tests/foundation/test_parallel.py in a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (the device count is fixed
when JAX starts).
"""

import functools
import json

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxseg import losses
from jaxseg.training import optim
from jaxseg import parallel
from jaxseg.models.resunet import ResUNet
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib


def run(devices, batch, steps):
  mesh = Mesh(np.asarray(devices), ('data',))
  model = ResUNet(num_classes=1, widths=(4, 8, 8), depths=(1, 2, 1),
                  decoder_widths=(8, 4), decoder_depths=(1, 1), dropout_rate=0.1)
  # SGD: with Adam, a gradient component that is float noise moves its
  # weight by up to 2 lr per step whatever the reduction order's error
  # (tests/training/multiprocess_train.py), which says nothing about the step.
  tx = optim.build(ml_collections.ConfigDict(dict(name='sgd', learning_rate=0.1,
                                                  momentum=0.9)))
  state = state_lib.create_train_state(model, tx, jax.random.key(0), (16, 16, 2))
  state = jax.device_put(state, parallel.replicated(mesh))
  loss_fn = losses.build(ml_collections.ConfigDict(dict(name='focal_dice')))
  step = jax.jit(functools.partial(step_lib.train_step, loss_fn=loss_fn,
                                   activation='sigmoid'))
  global_batch = parallel.to_global(batch, mesh)
  assert len(global_batch['image'].sharding.device_set) == len(devices)
  for _ in range(steps):
    state, metrics = step(state, global_batch, jax.random.key(1))
  return jax.device_get((state.params, state.batch_stats)), metrics.compute()


def main():
  assert jax.device_count() == 4, jax.devices()
  rng = np.random.default_rng(0)
  batch = dict(image=rng.normal(size=(8, 16, 16, 2)).astype(np.float32),
               target=(rng.random((8, 16, 16, 1)) > 0.7).astype(np.float32),
               weight=np.ones(8, np.float32))
  one, _ = run(jax.devices()[:1], batch, steps=1)
  four, _ = run(jax.devices(), batch, steps=1)
  _, m1 = run(jax.devices()[:1], batch, steps=3)
  _, m4 = run(jax.devices(), batch, steps=3)
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                                       one, four))
  scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(one))
  print(json.dumps(dict(max_abs_diff=max(diffs), max_abs_param=scale,
                        loss_1=m1['loss'], loss_4=m4['loss'])))


if __name__ == '__main__':
  main()
