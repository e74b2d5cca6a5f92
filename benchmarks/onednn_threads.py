"""oneDNN's OpenMP threads against XLA's device threads: which count to use.

    python benchmarks/onednn_threads.py                 # 1, 2 and 8 devices
    python benchmarks/onednn_threads.py --rounds=5 --devices=2,8

With several host devices (`--xla_force_host_platform_device_count`) XLA
runs every device's program at once, and each device's oneDNN calls start
an OpenMP team of their own: cores x devices threads would fight over the
cores. jaxseg.onednn uses cores // devices threads per call
(`JAXSEG_ONEDNN_THREADS` overrides). This times a data-parallel forward +
backward of four 3x3 convolutions (16 -> 16 channels, each followed by an
instance norm and ReLU) on a 16x64x64x16 batch sharded over the devices,
oneDNN at the default thread count and at `--threads`, and XLA's
convolution, each setting in its own process (the device count and thread
pool are fixed when JAX starts), the settings interleaved over `--rounds`;
median ms of 9 calls per process, then the median over rounds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(devices: int) -> dict:
  import jax
  import jax.numpy as jnp
  from jax import lax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  import numpy as np
  from jaxseg import onednn
  dn = ('NHWC', 'HWIO', 'NHWC')
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 64, 64, 16)), jnp.float32)
  ws = [jnp.asarray(rng.normal(size=(3, 3, 16, 16)) / 12, jnp.float32)
        for _ in range(4)]

  def grad(conv):
    def f(x, ws):
      for w in ws:
        x = conv(x, w, (1, 1), 'SAME', dimension_numbers=dn)
        x = x - x.mean(axis=(1, 2), keepdims=True)
        x = jax.nn.relu(x * lax.rsqrt(jnp.mean(x * x, axis=(1, 2),
                                               keepdims=True) + 1e-5))
      return jnp.sum(x ** 2)
    return jax.jit(jax.grad(f, argnums=(0, 1)))
  mesh = Mesh(np.array(jax.devices()), ('data',))
  xs = jax.device_put(x, NamedSharding(mesh, P('data')))
  wss = jax.device_put(ws, NamedSharding(mesh, P()))
  out = dict(devices=len(jax.devices()), threads=onednn.threads(devices))
  for name, conv in (('onednn', onednn.conv_general_dilated),
                     ('xla', lax.conv_general_dilated)):
    f = grad(conv)
    for _ in range(2):
      jax.block_until_ready(f(xs, wss))
    times = []
    for _ in range(9):
      t0 = time.perf_counter()
      jax.block_until_ready(f(xs, wss))
      times.append(time.perf_counter() - t0)
    out[name] = statistics.median(times) * 1e3
  return out


def run(devices: int, threads: str) -> dict:
  env = dict(os.environ, XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                                    f' --xla_force_host_platform_device_count={devices}').strip())
  if threads:
    env['JAXSEG_ONEDNN_THREADS'] = threads
  else:
    env.pop('JAXSEG_ONEDNN_THREADS', None)
  out = subprocess.run([sys.executable, __file__, f'--worker={devices}'],
                       env=env, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--devices', default='1,2,8')
  parser.add_argument('--threads', default='1,2',
                      help='JAXSEG_ONEDNN_THREADS values to try besides the default')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--worker', type=int, default=0)
  args = parser.parse_args(argv)
  if args.worker:
    from jaxseg import xla_cpu
    xla_cpu.configure()
    print(json.dumps(worker(args.worker)))
    return 0
  from timing import load_average
  settings = [(int(d), t) for d in args.devices.split(',')
              for t in [''] + args.threads.split(',')]
  results = {s: [] for s in settings}
  load = load_average()
  for _ in range(args.rounds):
    for s in settings:
      results[s].append(run(*s))
  print(f'{os.cpu_count()} cores; median over {args.rounds} rounds of the '
        f'per-process median of 9 calls, ms; load {load:.2f}-{load_average():.2f}')
  print('| devices | oneDNN threads per call | oneDNN ms | XLA ms | XLA / oneDNN |')
  print('|---|---|---|---|---|')
  for (devices, threads), rows in results.items():
    one = statistics.median(r['onednn'] for r in rows)
    xla = statistics.median(r['xla'] for r in rows)
    label = f"{rows[0]['threads']}" + ('' if threads else ' (default)')
    print(f'| {devices} | {label} | {one:.1f} | {xla:.1f} | {xla / one:.2f} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
