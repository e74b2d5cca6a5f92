"""Memory and speed of one 3D train step: remat {off, on} x {float32, bfloat16}.

    nice -n 10 python benchmarks/memory.py
    python benchmarks/memory.py --models=unet3d,residual_unet3d --size=48 --repeats=3

For each 3D model of the seed configs (`unet3d`; `residual_unet3d` at
Kayalibay's own size, features (8, 16, 32, 64); `dilated_unet3d` at its
default width 48; `med3d_unet` with its ResNet-10 backbone) one jitted
train step (forward, backward through a sigmoid BCE loss, optax.adam
update, batch statistics; the train state donated as jaxseg's trainer does)
on one random patch of batch 1, compiled for each of remat off/on and
precision float32/bfloat16 (`dtype`, parameters stay float32).

Columns:
  temp MiB    XLA's temporary buffers of the compiled step
              (`memory_analysis().temp_size_in_bytes`).
  total MiB   peak estimate: temp + arguments + outputs - aliased (the
              donated state's outputs reuse its argument buffers).
  saved MiB   activations kept for the backward pass per sample, from the
              autodiff program itself (the residuals of `jax.vjp`, batch 2
              minus batch 1), before XLA: what remat is meant to cut.
  step ms     median wall time of --repeats steps after a warm-up step.
  x mem, x time   total MiB and step ms over the (remat off, float32) row.

On CPU: bf16 is usually slower (no bf16 arithmetic units: XLA converts to
and from float32 around the convolutions), and XLA:CPU drops the
optimisation barriers jax.remat relies on and CSE merges the recomputation
back into the forward pass, so remat changes the compiled memory little
there; on GPU/TPU it does what `saved MiB` shows. The memory columns are
the point of this table, not the CPU timings.
"""

import argparse
import functools
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jaxseg import models
from jaxseg.models import shapes

# name -> (model fields, input channels, default patch edge). Channels and
# classes follow the seed configs (brats15_unet3d: t1ce; brats15_resunet3d_ds
# and brats20_unet3d_dilated: flair; brats19_med3d_unet: 4 modalities, 3
# regions). The patch edges keep one step within seconds on a 2-core CPU.
MODELS = {
    'unet3d': (dict(name='unet3d', num_classes=1), 1, 64),
    'residual_unet3d': (dict(name='residual_unet3d', num_classes=1,
                             features=(8, 16, 32, 64)), 1, 64),
    'dilated_unet3d': (dict(name='dilated_unet3d', num_classes=1, width=48),
                       1, 32),
    'med3d_unet': (dict(name='med3d_unet', num_classes=3, depth=10), 4, 32),
}
PRECISIONS = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
MIB = 2 ** 20


def build(name: str, remat: bool, precision: str):
  fields = dict(MODELS[name][0], remat=remat, dtype=PRECISIONS[precision])
  return models.build(fields)


def _heads(out):
  return list(out) if isinstance(out, (list, tuple)) else [out]


def loss_fn(model, params, state, x, y, key):
  """Sigmoid BCE (mean over voxels, summed over heads) in train mode."""
  out, new_state = model.apply({'params': params, **state}, x, True,
                               rngs={'dropout': key}, mutable=list(state))
  loss = sum(optax.sigmoid_binary_cross_entropy(h, y).mean()
             for h in _heads(out))
  return loss, new_state


def make_step(model, tx):
  """(params, opt_state, state, x, y, key) -> same, plus the loss."""

  def step(params, opt_state, state, x, y, key):
    (loss, new_state), grads = jax.value_and_grad(
        functools.partial(loss_fn, model), has_aux=True)(
            params, state, x, y, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, new_state, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


def saved_activation_bytes(model, shape) -> int:
  """Bytes of the residuals jax.vjp keeps per sample (batch 2 - batch 1)."""
  sizes = []
  for n in (1, 2):
    x = jax.ShapeDtypeStruct((n, *shape[1:]), jnp.float32)
    v = shapes.variable_shapes(model, x)
    state = {k: w for k, w in v.items() if k != 'params'}
    out = jax.eval_shape(functools.partial(model.apply, train=False), v, x)
    y = jax.ShapeDtypeStruct(_heads(out)[-1].shape, jnp.float32)

    def vjp_closure(params, state, x, y):
      return jax.vjp(lambda p: loss_fn(model, p, state, x, y,
                                       jax.random.key(0))[0], params)[1]

    closure = jax.eval_shape(vjp_closure, v['params'], state, x, y)
    sizes.append(sum(math.prod(l.shape) * l.dtype.itemsize
                     for l in jax.tree.leaves(closure)))
  return sizes[1] - sizes[0]


def bench(name: str, size: int, remat: bool, precision: str,
          repeats: int) -> dict:
  model = build(name, remat, precision)
  shape = (1, size, size, size, MODELS[name][1])
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  v = shapes.random_variables(model, x)
  params = v['params']
  state = {k: w for k, w in v.items() if k != 'params'}
  out = jax.eval_shape(functools.partial(model.apply, train=False), v, x)
  y = jnp.asarray(rng.random(_heads(out)[-1].shape) < 0.2, jnp.float32)
  tx = optax.adam(1e-4)
  opt_state = tx.init(params)
  key = jax.random.key(0)

  t0 = time.perf_counter()
  compiled = make_step(model, tx).lower(
      params, opt_state, state, x, y, key).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  total = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
           + mem.output_size_in_bytes - mem.alias_size_in_bytes)

  times = []
  for i in range(repeats + 1):  # the first call warms up
    t0 = time.perf_counter()
    params, opt_state, state, loss = compiled(
        params, opt_state, state, x, y, jax.random.fold_in(key, i))
    jax.block_until_ready(loss)
    if i:
      times.append(time.perf_counter() - t0)
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f'{name} {precision} remat={remat}: loss {loss}')
  return dict(model=name, shape=shape, remat=remat, precision=precision,
              params=shapes.count(params), temp=mem.temp_size_in_bytes,
              total=total, saved=saved_activation_bytes(model, shape),
              step_s=statistics.median(times), compile_s=compile_s)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default=','.join(MODELS),
                      help=f'comma-separated, from {", ".join(MODELS)}')
  parser.add_argument('--size', type=int, default=None,
                      help='edge of the cubic patch for every model (default: '
                      'per model, ' + ', '.join(
                          f'{k} {v[2]}' for k, v in MODELS.items()) + ')')
  parser.add_argument('--repeats', type=int, default=3,
                      help='timed steps after the warm-up step')
  args = parser.parse_args(argv)
  names = args.models.split(',')
  unknown = [n for n in names if n not in MODELS]
  if unknown:
    parser.error(f'unknown model(s) {unknown}; known: {", ".join(MODELS)}')

  print(f'jax {jax.__version__} on {jax.devices()[0].platform} '
        f'({jax.devices()[0].device_kind}); batch 1; median of '
        f'{args.repeats} steps after a warm-up step')
  print('note: on CPU bf16 is usually slower (no bf16 units) and XLA:CPU '
        'undoes remat (see the module docstring); the memory columns are '
        'the point.')
  print('| model | params | patch (N, D, H, W, C) | remat | precision | '
        'temp MiB | total MiB | saved MiB | step ms | x mem | x time |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  for name in names:
    size = args.size or MODELS[name][2]
    base = None
    for remat in (False, True):
      for precision in PRECISIONS:
        r = bench(name, size, remat, precision, args.repeats)
        base = base or r
        print(f"| {name} | {r['params']:,} | {r['shape']} | "
              f"{'on' if remat else 'off'} | {precision} | "
              f"{r['temp'] / MIB:.1f} | {r['total'] / MIB:.1f} | "
              f"{r['saved'] / MIB:.1f} | {1e3 * r['step_s']:.0f} | "
              f"{r['total'] / base['total']:.2f} | "
              f"{r['step_s'] / base['step_s']:.2f} |", flush=True)


if __name__ == '__main__':
  main()
