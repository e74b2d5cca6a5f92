"""K folds (or ensemble members) as one vmapped train step, against K sequential steps.

    python benchmarks/vmapped_folds.py                 # K = 2, 5 on this machine
    python benchmarks/vmapped_folds.py --folds=5 --steps=5 --only=resunet

Cross-validation trains K models of one architecture on K different
training sets. On an accelerator that one small model does not fill, the K
train steps can run as one program: `jax.vmap` over the stacked train
states, batches and dropout keys. This script measures that against K
calls of the ordinary jitted step (what `python -m jaxseg.crossval` does,
one fold after the other), in one process, with the same states and
batches, and checks that the two give the same parameters.

Printed per model and K: the median ms of the K sequential steps, of the
vmapped step, the ratio sequential / vmapped (above 1: vmap pays), and the
largest parameter difference after one (SGD) step.
"""

import argparse
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import config_base
from jaxseg import labels
from jaxseg import losses
from jaxseg.training import optim
from jaxseg import models
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib
from timing import median_time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (config file, overrides, input shape, batch)
CASES = {
    'resunet': ('configs/brats19_resunet.py', {}, (64, 64, 4), 16),
    'unet3d_regions': ('configs/brats_unet3d_regions.py',
                       {'model.features': 8}, (32, 32, 32, 4), 2),
}


def _config(path, overrides):
  config = config_base.load_config_file(os.path.join(REPO, path))
  for key, value in overrides.items():
    section, leaf = key.split('.')
    config[section][leaf] = value
  return config


def build(name: str, folds: int):
  """(single step, vmapped step, stacked states, stacked batches, keys)."""
  path, overrides, shape, batch = CASES[name]
  config = _config(path, overrides)
  # SGD: the parameter check compares gradients; Adam's first step turns
  # float noise in near-zero gradients into +-lr.
  config.optimizer.name, config.optimizer.momentum = 'sgd', 0.0
  config.optimizer.nesterov = False
  model = models.from_config(config)
  tx = optim.build(config.optimizer)
  activation = labels.activation(config.data.label_mode)
  step = functools.partial(step_lib.train_step, loss_fn=losses.build(config.loss),
                           activation=activation)
  init = lambda key: state_lib.create_train_state(model, tx, key, shape)  # noqa: E731
  states = [init(jax.random.key(k)) for k in range(folds)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  rng = np.random.default_rng(0)
  channels = labels.num_outputs(config.data.label_mode)
  batches = dict(
      image=jnp.asarray(rng.normal(size=(folds, batch) + shape), jnp.float32),
      target=jnp.asarray(rng.random((folds, batch) + shape[:-1] + (channels,))
                         > 0.8, jnp.float32),
      weight=jnp.ones((folds, batch), jnp.float32))
  keys = jax.random.split(jax.random.key(1), folds)
  single = jax.jit(step)
  vmapped = jax.jit(jax.vmap(step))
  return single, vmapped, states, stacked, batches, keys


def measure(name: str, folds: int, steps: int) -> dict:
  single, vmapped, states, stacked, batches, keys = build(name, folds)
  per_fold = [jax.tree.map(lambda x, i=i: x[i], batches) for i in range(folds)]

  def sequential():
    return jax.block_until_ready(
        [single(s, b, k)[0].params for s, b, k in zip(states, per_fold, keys)])

  def together():
    return jax.block_until_ready(vmapped(stacked, batches, keys)[0].params)

  seq_s = median_time(sequential, steps)
  vmap_s = median_time(together, steps)
  one = sequential()
  both = together()
  diff = max(float(jnp.max(jnp.abs(a - b[i])))
             for i, p in enumerate(one)
             for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(both)))
  return dict(model=name, folds=folds, sequential_ms=1000 * seq_s,
              vmapped_ms=1000 * vmap_s, ratio=seq_s / vmap_s, max_diff=diff)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--folds', default='2,5')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--only', default=','.join(CASES))
  args = parser.parse_args()
  print(f'devices: {jax.devices()}')
  print('| model | K | K sequential steps, ms | one vmapped step, ms | '
        'sequential / vmapped | max parameter difference |')
  print('|---|---|---|---|---|---|')
  for name in args.only.split(','):
    for folds in (int(k) for k in args.folds.split(',')):
      r = measure(name, folds, args.steps)
      print(f"| {r['model']} | {r['folds']} | {r['sequential_ms']:.0f} | "
            f"{r['vmapped_ms']:.0f} | {r['ratio']:.2f} | {r['max_diff']:.1e} |",
            flush=True)


if __name__ == '__main__':
  main()
