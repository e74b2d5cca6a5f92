"""Data-parallel scaling over 1, 2, 4, 8 devices: same result, and step time.

    python benchmarks/scaling.py                       # seed-002 ResU-Net
    python benchmarks/scaling.py --devices=1,2,4,8 --batch=16 --steps=3
    python benchmarks/scaling.py --steps=1   # gradients only, no time column

Runs the seed-002 ResU-Net (6.85M parameters, batch norm, dropout) for
`--steps` SGD-momentum steps from the same initial state on the same global batch
(64x64x4 slices) with the batch split over a ('data',) mesh of the first N
devices, and prints, per N: the per-device batch, the largest parameter
difference from the 1-device run, the last loss, and the median step time.

Without accelerators the script starts itself with
XLA_FLAGS=--xla_force_host_platform_device_count=8: eight CPU "devices" that
share this machine's cores, so the result columns test correctness and the
time column only shows the cost of splitting (a speed-up needs real devices;
run it on a multi-GPU host to get one). SGD, not Adam: Adam's first steps
move every weight by +-lr whatever its gradient's size, so a gradient that
is float noise (~1e-9) and flips sign between reduction orders moves that
weight by 2 lr, which says nothing about the gradients' agreement.
"""

import argparse
import functools
import os
import statistics
import time

if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8').strip()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from jaxseg import losses
from jaxseg.training import optim
from jaxseg import parallel
from jaxseg.models.resunet import ResUNet
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib


def run(devices, batch, steps):
  """(params after `steps` steps, last loss, median step seconds)."""
  mesh = Mesh(np.asarray(devices), ('data',))
  model = ResUNet(num_classes=1)
  tx = optim.build(ml_collections.ConfigDict(dict(name='sgd', learning_rate=0.1,
                                                  momentum=0.9)))
  state = state_lib.create_train_state(model, tx, jax.random.key(0),
                                   batch['image'].shape[1:])
  state = jax.device_put(state, parallel.replicated(mesh))
  loss_fn = losses.build(ml_collections.ConfigDict(dict(name='focal_dice')))
  step = jax.jit(functools.partial(step_lib.train_step, loss_fn=loss_fn,
                                   activation='sigmoid'))
  global_batch = parallel.to_global(batch, mesh)
  state, metrics = step(state, global_batch, jax.random.key(1))  # compiles
  jax.block_until_ready(state)
  times = []
  for i in range(steps - 1):
    t0 = time.perf_counter()
    state, metrics = step(state, global_batch, jax.random.key(2 + i))
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  return (jax.device_get(state.params), float(metrics.compute()['loss']),
          statistics.median(times) if times else float('nan'))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--devices', default='1,2,4,8')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--steps', type=int, default=4)
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error(f'--steps must be at least 1, not {args.steps}')
  counts = [int(n) for n in args.devices.split(',')]
  if max(counts) > jax.device_count():
    parser.error(f'{max(counts)} devices asked, {jax.device_count()} present')
  rng = np.random.default_rng(0)
  b = args.batch
  batch = dict(image=rng.normal(size=(b, 64, 64, 4)).astype(np.float32),
               target=(rng.random((b, 64, 64, 1)) > 0.8).astype(np.float32),
               weight=np.ones(b, np.float32))
  kind = jax.devices()[0].device_kind
  print(f'jax {jax.__version__}, {jax.device_count()} {kind} device(s) on '
        f'{os.cpu_count()} CPU cores; ResU-Net (seed 002), global batch {b}, '
        f'{args.steps} steps; time: median of the steps after the first')
  print('| devices | batch per device | max abs param diff vs 1 device | '
        'largest param | loss | ms per step | step time vs 1 device |')
  print('|---|---|---|---|---|---|---|')
  reference = None
  for n in counts:
    params, loss, seconds = run(jax.devices()[:n], batch, args.steps)
    if reference is None:
      reference = (params, seconds)
    diff = max(jax.tree.leaves(jax.tree.map(
        lambda a, r: float(np.max(np.abs(a - r))), params, reference[0])))
    largest = max(float(np.max(np.abs(p))) for p in jax.tree.leaves(params))
    print(f'| {n} | {b // n} | {diff:.2e} | {largest:.3g} | {loss:.5f} | '
          f'{1e3 * seconds:.0f} | {seconds / reference[1]:.2f} |', flush=True)


if __name__ == '__main__':
  main()
