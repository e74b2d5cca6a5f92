"""Monte-Carlo dropout: one vmapped program vs a Python loop of jitted applies.

    python benchmarks/mc_dropout.py                      # batch 16, 64x64x4
    python benchmarks/mc_dropout.py --batch=4 --repeats=5 --samples=5,10

The seed-002 ResU-Net (`name='resunet'`, default widths, 6,854,609
parameters, spatial dropout 0.1) on a batch of random 64x64x4 slices. For
each T: `mc_dropout.mc_dropout_probs` (T draws, one jitted vmap over the
keys) against T calls of a jitted single-draw apply over the same keys,
stacked. Times are the median of --repeats runs after a compiling run; the
two results must agree to float tolerance (--atol). The last row is the
chunked vmap (--chunk draws at a time, `jax.lax.map` over chunks) for the
largest T.
"""

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jaxseg import models
from jaxseg.inference import mc_dropout
from jaxseg.models import shapes


def median_ms(fn, repeats: int):
  """(median wall ms of fn() over `repeats` runs after a warm-up, result)."""
  result = jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(1000.0 * (time.perf_counter() - start))
  return statistics.median(times), result


def max_diff(a, b) -> float:
  return float(jnp.max(jnp.abs(a - b)))


def loop_fn(apply_fn):
  """T jitted single-draw applies in a Python loop, stacked: (T, N, ..., K)."""
  single = jax.jit(lambda v, x, k: mc_dropout.sample_probs(
      apply_fn, v, x, k, 'sigmoid'))

  def run(variables, images, key, num_samples):
    keys = jax.random.split(key, num_samples)
    return jnp.stack([single(variables, images, k) for k in keys])

  return run


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--channels', type=int, default=4)
  parser.add_argument('--samples', default='5,10,20', help='values of T')
  parser.add_argument('--chunk', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--atol', type=float, default=1e-4)
  args = parser.parse_args(argv)
  samples = [int(t) for t in args.samples.split(',')]

  model = models.build(ml_collections.ConfigDict(dict(name='resunet')))
  shape = (args.batch, args.size, args.size, args.channels)
  images = jnp.asarray(np.random.default_rng(0).normal(size=shape),
                       jnp.float32)
  variables = shapes.random_variables(model, images[:1])
  key = jax.random.key(0)
  print(f'ResU-Net, {shapes.count(variables["params"]):,} parameters, '
        f'input {shape}, {jax.devices()[0].device_kind}, median of '
        f'{args.repeats} runs after compilation')

  loop = loop_fn(model.apply)
  vmap = lambda t, chunk=0: mc_dropout.mc_dropout_probs(  # noqa: E731
      model.apply, variables, images, key, t, 'sigmoid', chunk)
  rows, results = [], {}
  for t in samples:
    vmap_ms, results[t] = median_ms(lambda: vmap(t), args.repeats)  # noqa: B023
    loop_ms, looped = median_ms(
        lambda: loop(variables, images, key, t), args.repeats)  # noqa: B023
    diff = max_diff(results[t], looped)
    assert diff <= args.atol, f'T={t}: vmap and loop differ by {diff}'
    rows.append((f'{t}', vmap_ms, loop_ms, diff))
    print(rows[-1], flush=True)
  t = max(samples)
  chunk_ms, chunked = median_ms(lambda: vmap(t, args.chunk), args.repeats)
  diff = max_diff(chunked, results[t])
  assert diff <= args.atol, f'chunked vmap differs by {diff}'
  loop_ms = next(r[2] for r in rows if r[0] == f'{t}')
  rows.append((f'{t} (chunk {args.chunk})', chunk_ms, loop_ms, diff))

  print('\n| T | vmap ms | loop ms | loop/vmap | max abs diff |')
  print('|---|---:|---:|---:|---:|')
  for name, vmap_ms, loop_ms, diff in rows:
    print(f'| {name} | {vmap_ms:.0f} | {loop_ms:.0f} | '
          f'{loop_ms / vmap_ms:.2f} | {diff:.1e} |')
  print('\n(The chunk row\'s max abs diff is against the unchunked vmap.)')


if __name__ == '__main__':
  main()
