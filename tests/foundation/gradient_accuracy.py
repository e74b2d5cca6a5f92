"""Prints how far a float32 train-step gradient is from the float64 one.

Run by tests/foundation/test_xla_cpu.py in a fresh process (the XLA:CPU mode is fixed
when JAX starts): the tiny seed-002 ResU-Net (batch norm, no dropout) on a
batch of 8 random 32x32x4 images with smooth random masks; one SGD step with
learning rate 1, so the parameter change is the gradient. Prints
{"rel_l2": |g32 - g64| / |g64| over all parameters}.
"""

import functools
import json
import os
import sys

# conftest.py (the shared fixtures) is in tests/, one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg import labels
from jaxseg import xla_cpu  # pylint: disable=g-import-not-at-top
xla_cpu.configure()  # jaxseg's XLA:CPU mode, as an entry point sets it

import jax  # pylint: disable=g-import-not-at-top
import ml_collections
import numpy as np
from jax.sharding import Mesh
from scipy import ndimage

from conftest import load_config, tiny  # pylint: disable=g-import-not-at-top
from jaxseg import losses
from jaxseg.training import optim
from jaxseg import parallel
from jaxseg import models
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib


def gradient(config, batch, dtype):
  """The step's gradient as float64 arrays, computed in `dtype`."""
  config = ml_collections.ConfigDict(config.to_dict())
  # The layers' computation dtype too: a module with dtype=float32 casts
  # float64 inputs down, and the reference would be float32 in disguise.
  config.model.dtype = np.dtype(dtype).name
  model = models.from_config(config)
  tx = optim.build(ml_collections.ConfigDict(dict(name='sgd', learning_rate=1.0)))
  state = state_lib.create_train_state(model, tx, jax.random.key(0), (32, 32, 4))
  state = jax.tree.map(
      lambda x: x.astype(dtype) if getattr(x, 'dtype', None) == np.float32 else x,
      state)
  mesh = Mesh(np.asarray(jax.devices()[:1]), ('data',))  # as loop.py runs
  state = jax.device_put(state, parallel.replicated(mesh))
  step = jax.jit(functools.partial(
      step_lib.train_step, loss_fn=losses.build(config.loss),
      activation=labels.activation(config.data.label_mode)))
  batch = parallel.to_global({k: v.astype(dtype) for k, v in batch.items()},
                             mesh)
  new, _ = step(state, batch, jax.random.key(1))
  return [np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in
          zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params))]


def main():
  config = tiny(load_config())
  config.model.dropout_rate = 0.0  # masks drawn in float64 would differ
  rng = np.random.default_rng(0)
  image = rng.normal(size=(8, 32, 32, 4))
  masks = ndimage.gaussian_filter(rng.normal(size=(8, 32, 32)), 3, axes=(1, 2))
  batch = dict(image=image,
               target=(masks > 0.05)[..., None].astype(np.float64),
               weight=np.ones(8))
  g32 = gradient(config, batch, np.float32)
  jax.config.update('jax_enable_x64', True)
  g64 = gradient(config, batch, np.float64)
  error = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(g32, g64)))
  norm = np.sqrt(sum(np.sum(b ** 2) for b in g64))
  print(json.dumps(dict(rel_l2=float(error / norm))))


if __name__ == '__main__':
  main()
