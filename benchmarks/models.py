"""Forward + backward throughput of every model of the zoo, one train step each.

    python benchmarks/models.py                  # all study configs
    python benchmarks/models.py --configs=lgg_unet,lgg_unetpp --steps=5

For each config in configs/: the model, loss and optimiser it names, one
jitted `step_lib.train_step` (forward, backward, optimiser update) on random
inputs, timed over `--steps` steps after one compiling step; the table
gives the median. 2D models run at the study's slice size; 3D models at
`--volume` (default 64^3: the studies' 96x144x144 volumes take minutes per
step on a 2-core CPU; the voxel rate barely depends on the size). GFLOP per
step comes from XLA's cost analysis, so GFLOP/s says how well a model uses
the machine whatever its size.
"""

import argparse
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jaxseg import xla_cpu
xla_cpu.configure()  # jaxseg's XLA:CPU mode, before JAX starts its backend

from jaxseg import config_base
from jaxseg import labels
from jaxseg import losses
from jaxseg.training import optim
from jaxseg.models import shapes
from jaxseg import models
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib

# Parameter counts the studies (or the reference code they used) give.
PAPER_COUNTS = {
    'coco_cnn_simple': ('27,169', 'seed 001, figure 2'),
    'coco_cnn_deep': ('133,857', 'seed 001, figure 5'),
    'coco_cnn_resnet': ('435,553', 'seed 001, figure 8'),
    'brats19_resunet': ('6,854,609', 'seed 002, section 3.2.4'),
    'lgg_unet': ('7,763,041', "seed 003's unet.py (mateuszbuda)"),
    'lgg_unetpp': ('-', 'seed 003 gives none'),
    'lgg_transunet': ('-', 'not trained in seed 003'),
    'brats15_unet3d': ('-', 'seed 000 gives none'),
    'brats15_resunet3d_ds': ('130M+ / 90M+', 'seed 000: its Keras replication'),
    'brats20_unet3d_dilated': ('23M+', 'seed 000, section 6'),
    'brats19_med3d_unet': ('-', 'seed 004 gives none'),
    'brats_unet3d_regions': ('-', 'nnU-Net-style BraTS recipe, not a seed'),
}


def input_shape(config, volume: int, batch: int | None) -> tuple:
  """(N, *spatial, C) for one benchmark step of `config`."""
  channels = len(config.data.modalities)
  if config.data.dims == 3:
    return (1, volume, volume, volume, channels)
  size = config.data.image_size
  return (batch or min(config.train.batch_size, 16), size, size, channels)


def bench(name: str, steps: int, volume: int, batch: int | None) -> dict:
  config = config_base.load_config_file(os.path.join(REPO, 'configs', f'{name}.py'))
  model = models.from_config(config)
  shape = input_shape(config, volume, batch)
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  k = labels.num_outputs(config.data.label_mode)
  y = jnp.asarray(np.random.default_rng(1).random(shape[:-1] + (k,)) < 0.2,
                  jnp.float32)
  batch_arrays = dict(image=x, target=y, weight=jnp.ones(shape[0], jnp.float32))
  variables = shapes.random_variables(model, x[:1])
  state = state_lib.TrainState.create(
      apply_fn=model.apply, params=variables['params'],
      tx=optim.build(config.optimizer),
      batch_stats=variables.get('batch_stats', {}))
  step = jax.jit(functools.partial(
      step_lib.train_step, loss_fn=losses.build(config.loss),
      activation=labels.activation(config.data.label_mode)))
  key = jax.random.key(0)
  compiled = step.lower(state, batch_arrays, key).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get('flops', float('nan')))
  t0 = time.perf_counter()
  state, _ = compiled(state, batch_arrays, key)
  jax.block_until_ready(state)
  first = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, _ = compiled(state, batch_arrays, key)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  voxels = int(np.prod(shape[1:-1]))
  return dict(config=name, model=config.model.name,
              params=shapes.count(variables['params']), input=shape,
              median_s=median, first_s=first, items_per_s=shape[0] / median,
              mvoxels_per_s=shape[0] * voxels / median / 1e6,
              gflop=flops / 1e9, gflops_per_s=flops / 1e9 / median,
              dims=config.data.dims)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default=','.join(PAPER_COUNTS))
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--volume', type=int, default=64,
                      help='edge of the cubic input of 3D models')
  parser.add_argument('--batch', type=int, default=None,
                      help='batch of 2D models (default: the config\'s, at '
                      'most 16); 3D models run one volume')
  args = parser.parse_args(argv)
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}: '
        f'{len(jax.devices())} device(s); median of {args.steps} steps')
  print('| config | model | parameters | paper | input (N, ..., C) | '
        'images/s | Mvoxel/s | GFLOP/step | GFLOP/s |')
  print('|---|---|---|---|---|---|---|---|---|')
  for name in args.configs.split(','):
    r = bench(name, args.steps, args.volume, args.batch)
    paper = PAPER_COUNTS.get(name, ('-', ''))[0]
    print(f"| {name} | {r['model']} | {r['params']:,} | {paper} | "
          f"{tuple(r['input'])} | {r['items_per_s']:.3g} | "
          f"{r['mvoxels_per_s']:.3g} | {r['gflop']:.1f} | "
          f"{r['gflops_per_s']:.1f} |", flush=True)


if __name__ == '__main__':
  main()
