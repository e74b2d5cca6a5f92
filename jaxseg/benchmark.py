"""`--mode=benchmark`: how fast a config's training step runs on this machine.

    python -m jaxseg.main --config=configs/brats19_resunet.py \
        --workdir=runs/bench --mode=benchmark

On the config's model, loss, optimiser, batch (`train.batch_size`) and input
shape (2D: (image_size, image_size, C); 3D: (*patch_size, C), else (depth,
image_size, image_size, C); C = len(modalities)), with random inputs on the
mesh of `config.mesh`, the jitted `step_lib.train_step` (as loop.py jits it)
is timed:

  compile_s      lower + compile of the step
  step_s         median wall time of `steps` steps after `warmup` steps,
                 each ended by block_until_ready
  items_per_s    images/s (2D) or voxels/s (3D) of the global batch
  peak_memory    `device.memory_stats()['peak_bytes_in_use']` summed over
                 local devices (None where the backend has none, e.g. CPU)
  step_flops     XLA's cost analysis of the compiled step ('flops'; for a
                 sharded step, one device's program times the device count)
  flops_per_s    step_flops / step_s
  peak_flops_per_s  a float32 n x n matmul on one device, measured in the
                 same run: 2 n^3 / its median time (n = 4096 on GPU/TPU, 1024
                 on CPU); `utilisation` = flops_per_s / (that x devices)
  loader_batches_per_s  `pipeline.train_loader` alone, on the config's
                 prepared data (`dataset.prepare`: the synthetic set without
                 data.root), with the host augmentation chain, against the
                 step's 1 / step_s: `input_bound` when the loader is the
                 slower; `loader_over_step` = loader rate / step rate

Device augmentation (`config.augment.where='device'`: the chain jitted into
the step, the loader only cuts patches) is timed too:

  step_device_s  median step time with the chain in the step
                 (compile_device_s, program_device_bytes alike), timed in
                 turn with the plain step (one of each per round, so a
                 shared machine's load changes both alike);
                 augment_device_s = step_device_s - step_s
  loader_device_batches_per_s  the loader without the chain, against
                 1 / step_device_s: `input_bound_device`,
                 `loader_over_step_device`
  augment_where  where `config.augment.where` puts the chain on this backend

Also `model_flops` (XLA's count of the step as lowered, before backend
rewrites) and `program_bytes` (XLA's memory analysis of the compiled step).

Everything is written to `<workdir>/benchmark.json`.
"""

import functools
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import labels
from jaxseg import losses
from jaxseg.training import optim
from jaxseg import parallel
from jaxseg.data import augment as augment_lib
from jaxseg.data import augment_device
from jaxseg.data import dataset
from jaxseg.data import pipeline
from jaxseg.models import shapes
from jaxseg.training import loop
from jaxseg import models
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib


def input_shape(config) -> tuple:
  """(batch, *spatial, C) of one training step of `config`."""
  data = config.data
  channels = len(data.modalities)
  if data.dims == 3:
    spatial = (tuple(data.patch_size) if data.get('patch_size')
               else (data.depth, data.image_size, data.image_size))
  else:
    spatial = (data.image_size, data.image_size)
  return (config.train.batch_size,) + tuple(spatial) + (channels,)


def random_batch(config, shape: tuple, mesh, seed: int = 0) -> dict:
  """A global batch {'image', 'target', 'weight'} of random values on `mesh`."""
  rng = np.random.default_rng(seed)
  outputs = labels.num_outputs(config.data.label_mode)
  local = dict(
      image=rng.normal(size=shape).astype(np.float32),
      target=(rng.random(shape[:-1] + (outputs,)) < 0.2).astype(np.float32),
      weight=np.ones(shape[0], np.float32))
  return parallel.to_global(parallel.local_rows(local), mesh)


def _flops(compiled) -> float:
  """The 'flops' of XLA's cost analysis of a compiled (or lowered) program
  (nan if none)."""
  try:
    cost = compiled.cost_analysis()
  except (NotImplementedError, RuntimeError):
    return float('nan')
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float((cost or {}).get('flops', float('nan')))


def _median_time(fn, steps: int) -> tuple[float, list]:
  """Median seconds of `fn()` (which blocks) over `steps` calls, and all times."""
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def program_memory_bytes(compiled) -> int | None:
  """XLA's memory analysis of a compiled program: its peak bytes on a device.

  `peak_memory_in_bytes` where the backend fills it, else arguments +
  outputs + temporaries - aliased (donated) bytes; None without an analysis.
  """
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, AttributeError, RuntimeError):
    return None
  if stats is None:
    return None
  peak = int(getattr(stats, 'peak_memory_in_bytes', 0) or 0)
  if peak > 0:
    return peak
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def compile_train_step(config, mesh, *, steps: int, warmup: int,
                       augment: augment_lib.AugmentConfig | None = None,
                       compiler_options: dict | None = None):
  """(facts, run): the compiled step on a random batch, and a blocking call.

  With `augment` the step augments its batch on the device first (as
  `config.augment.where='device'` trains). `step_flops` is XLA's count of
  the compiled step, `model_flops` that of the step as lowered (before
  backend rewrites such as cuDNN custom calls, whose FLOPs a backend's cost
  analysis may not count); `program_bytes` is `program_memory_bytes`.
  """
  model = models.from_config(config)
  shape = input_shape(config)
  batch = random_batch(config, shape, mesh, config.seed)
  # Stand-in variables of init's structure: timing needs no real init.
  variables = shapes.random_variables(
      model, jax.ShapeDtypeStruct((1,) + shape[1:], jnp.float32), config.seed)
  tx = optim.build_for_run(config, steps + warmup)
  state = state_lib.TrainState.create(
      apply_fn=model.apply, params=variables['params'], tx=tx,
      batch_stats=variables.get('batch_stats', {}))
  state = jax.device_put(state, parallel.replicated(mesh))
  step = jax.jit(functools.partial(
      step_lib.train_step, loss_fn=losses.build(config.loss),
      activation=labels.activation(config.data.label_mode),
      grad_accum_steps=loop.check_grad_accum(config.train, mesh),
      augment=augment), donate_argnums=0)
  key = jax.random.key(config.seed)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch, key)
  compiled = lowered.compile(compiler_options)
  compile_s = time.perf_counter() - t0
  # Per-device program: with n devices each runs 1/n of the batch.
  flops = _flops(compiled) * mesh.devices.size
  model_flops = _flops(lowered)

  holder = [state]

  def run():
    holder[0], _ = compiled(holder[0], batch, key)
    jax.block_until_ready(holder[0])

  return dict(input_shape=list(shape),
              params=shapes.count(variables['params']),
              compile_s=compile_s, step_flops=flops, model_flops=model_flops,
              program_bytes=program_memory_bytes(compiled)), run


def time_train_step(config, mesh, *, steps: int, warmup: int,
                    augment: augment_lib.AugmentConfig | None = None,
                    compiler_options: dict | None = None) -> dict:
  """Compile time, median step time, FLOPs and parameter count of the step.

  `compile_train_step`'s facts, and step_s, the median of `steps` timed
  steps after `warmup` (step_times_s all of them).
  """
  facts, run = compile_train_step(config, mesh, steps=steps, warmup=warmup,
                                  augment=augment,
                                  compiler_options=compiler_options)
  for _ in range(warmup):
    run()
  step_s, times = _median_time(run, steps)
  return dict(facts, step_s=step_s, step_times_s=times)


def time_interleaved(runs: list, steps: int, warmup: int) -> list:
  """Median seconds of each blocking call in `runs`, timed in turn.

  One call of each per round, so all see the same machine load: on a
  shared machine their ratio is steadier than that of separate medians.
  """
  for _ in range(warmup):
    for run in runs:
      run()
  times = [[] for _ in runs]
  for _ in range(steps):
    for run, kept in zip(runs, times):
      t0 = time.perf_counter()
      run()
      kept.append(time.perf_counter() - t0)
  return [(statistics.median(t), t) for t in times]


def peak_memory_bytes() -> int | None:
  """Peak bytes in use summed over local devices; None without memory_stats."""
  total = None
  for device in jax.local_devices():
    stats = device.memory_stats()
    if not stats or 'peak_bytes_in_use' not in stats:
      return None
    total = (total or 0) + int(stats['peak_bytes_in_use'])
  return total


def matmul_peak(n: int | None = None, repeats: int = 5,
                dtype=jnp.float32) -> dict:
  """FLOP/s of an n x n matmul of `dtype` on one device: 2 n^3 / median time.

  float32 by default (the CPU's and TF32-less GPU's rate); pass
  jnp.bfloat16 for the tensor-core rate that MFU is usually quoted against.
  """
  device = jax.local_devices()[0]
  if n is None:
    n = 1024 if device.platform == 'cpu' else 4096
  rng = np.random.default_rng(0)
  a = jax.device_put(jnp.asarray(rng.normal(size=(n, n)), dtype), device)
  b = jax.device_put(jnp.asarray(rng.normal(size=(n, n)), dtype), device)
  matmul = jax.jit(jnp.matmul).lower(a, b).compile()
  jax.block_until_ready(matmul(a, b))
  median, _ = _median_time(lambda: jax.block_until_ready(matmul(a, b)),
                           repeats)
  return dict(matmul_n=n, matmul_s=median, flops_per_s=2 * n ** 3 / median)


# grain.ReadOptions' default prefetch_buffer_size.
PREFETCH_RECORDS = 500


def loader_rate(config, workdir: str, batches: int = 20,
                host_augment: bool = True, skip: int | None = None,
                read_ahead: int | None = None) -> dict:
  """Batches/s of the training loader alone on the config's prepared data.

  `host_augment` False: the loader of `config.augment.where='device'`
  (patches cut, no augmentation chain). `read_ahead`: the loader's
  (default: training's, `loop.loader_read_ahead`). `skip`: batches read
  before timing (default: as many as Grain's threads may have read ahead
  for the first); the timed batches must not come out of that buffer, so
  with a large read-ahead keep `skip` at least the batches in flight.
  """
  dataset.check_config(config.data)
  dataset.prepare(config.data, workdir, config.seed)
  source = pipeline.SliceSource(os.path.join(workdir, 'data', 'train'))
  augment, _ = augment_device.from_config(config.augment)
  if read_ahead is None:
    read_ahead = loop.loader_read_ahead(config, input_shape(config)[1:])
  loader = pipeline.train_loader(
      source, global_batch_size=config.train.batch_size, seed=config.seed,
      augment=augment if host_augment else None,
      worker_count=config.data.worker_count,
      patch_size=config.data.patch_size,
      foreground_fraction=config.data.foreground_fraction,
      label_mode=config.data.label_mode, read_ahead=read_ahead)
  iterator = iter(loader)
  # Start-up and Grain's read-ahead (up to PREFETCH_RECORDS records fetched
  # by threads while the first batch is assembled) are not the rate.
  if skip is None:
    skip = 1 + min(-(-PREFETCH_RECORDS // config.train.batch_size),
                   read_ahead)
  for _ in range(skip):
    next(iterator)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - t0
  return dict(loader_batches=batches, loader_s=seconds,
              loader_batches_per_s=batches / seconds)


def run_benchmark(config, workdir: str, steps: int = 10, warmup: int = 2,
                  loader_batches: int = 20, matmul_n: int | None = None,
                  device_augment: bool = True) -> dict:
  """Times `config`'s training step, loader and this machine's matmul peak.

  Both augmentation placements: the step alone against the loader with the
  host chain, and the step with the device chain against the loader that
  only cuts patches (`device_augment` False: the host placement only).
  Returns the dictionary described in the module docstring and writes it to
  `<workdir>/benchmark.json` (process 0).
  """
  if steps < 1 or warmup < 0:
    raise ValueError(f'steps={steps} must be >= 1 and warmup={warmup} >= 0')
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh(config.get('mesh'))
  parallel.check_batch_size(config.train.batch_size, mesh)
  result = dict(model=config.model.name,
                dims=int(config.data.dims), batch_size=config.train.batch_size,
                mesh=dict(mesh.shape), devices=mesh.devices.size,
                platform=jax.local_devices()[0].platform,
                device_kind=jax.local_devices()[0].device_kind,
                host=platform.node(), jax=jax.__version__,
                steps=steps, warmup=warmup)
  augment, where = augment_device.from_config(config.augment)
  result['augment_where'] = augment_device.placement(where)
  facts, run = compile_train_step(config, mesh, steps=steps, warmup=warmup)
  result.update(facts)
  runs = [run]
  if device_augment:
    device_facts, device_run = compile_train_step(
        config, mesh, steps=steps, warmup=warmup, augment=augment)
    result.update(compile_device_s=device_facts['compile_s'],
                  program_device_bytes=device_facts['program_bytes'])
    runs.append(device_run)
  # The two steps in turn, so that their difference is the chain's cost
  # and not a change of load on a shared machine.
  timed = time_interleaved(runs, steps, warmup)
  result['step_s'], result['step_times_s'] = timed[0]
  if device_augment:
    result['step_device_s'], result['step_device_times_s'] = timed[1]
    # What the chain adds to the step (noise can make it negative).
    result['augment_device_s'] = result['step_device_s'] - result['step_s']
  # Read before the matmul, so the peak is the steps' (the larger).
  result['peak_memory_bytes'] = peak_memory_bytes()
  shape = result['input_shape']
  per_item = 1 if config.data.dims == 2 else int(np.prod(shape[1:-1]))
  result['items_per_s'] = shape[0] * per_item / result['step_s']
  result['items_unit'] = 'images/s' if config.data.dims == 2 else 'voxels/s'
  result['flops_per_s'] = result['step_flops'] / result['step_s']
  peak = matmul_peak(matmul_n)
  result.update(peak_matmul_n=peak['matmul_n'], peak_matmul_s=peak['matmul_s'],
                peak_flops_per_s=peak['flops_per_s'])
  result['utilisation'] = result['flops_per_s'] / (
      peak['flops_per_s'] * mesh.devices.size)
  result.update(loader_rate(config, workdir, loader_batches))
  result['step_batches_per_s'] = 1.0 / result['step_s']
  result['input_bound'] = (result['loader_batches_per_s']
                           < result['step_batches_per_s'])
  result['loader_over_step'] = (result['loader_batches_per_s']
                                / result['step_batches_per_s'])
  if device_augment:
    patches = loader_rate(config, workdir, loader_batches, host_augment=False)
    result['loader_device_batches_per_s'] = patches['loader_batches_per_s']
    result['loader_device_s'] = patches['loader_s']
    result['step_device_batches_per_s'] = 1.0 / result['step_device_s']
    result['input_bound_device'] = (result['loader_device_batches_per_s']
                                    < result['step_device_batches_per_s'])
    result['loader_over_step_device'] = (
        result['loader_device_batches_per_s']
        / result['step_device_batches_per_s'])
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'benchmark.json'), 'w') as f:
      json.dump(result, f, indent=1)
  return result


def _si(value: float, unit: str) -> str:
  for scale, prefix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(value) >= scale:
      return f'{value / scale:.3g} {prefix}{unit}'
  return f'{value:.3g} {unit}'


def format_table(result: dict) -> str:
  """A two-column markdown table of a `run_benchmark` result."""
  memory = result['peak_memory_bytes']
  rows = [
      ('model', result['model']),
      ('input (batch, ..., C)', 'x'.join(map(str, result['input_shape']))),
      ('devices / mesh', f"{result['devices']} {result['platform']} "
       f"({result['device_kind']}) / {result['mesh']}"),
      ('parameters', f"{result['params']:,}"),
      ('compile', f"{result['compile_s']:.2f} s"),
      (f"step (median of {result['steps']})",
       f"{result['step_s'] * 1e3:.1f} ms"),
      ('throughput', f"{result['items_per_s']:.4g} {result['items_unit']}"),
      ('peak device memory', 'n/a' if memory is None else _si(memory, 'B')),
      ('step FLOPs (XLA)', _si(result['step_flops'], 'FLOP')),
      ('achieved', _si(result['flops_per_s'], 'FLOP/s')),
      (f"peak (f32 matmul {result['peak_matmul_n']}^2)",
       _si(result['peak_flops_per_s'], 'FLOP/s')),
      ('utilisation', f"{100 * result['utilisation']:.1f} %"),
      ('augmentation (config.augment.where)', result['augment_where']),
      ('host augmentation: loader', f"{result['loader_batches_per_s']:.3g} "
       'batches/s (chain in the loader)'),
      ('host augmentation: step consumes',
       f"{result['step_batches_per_s']:.3g} batches/s "
       f"(loader / step {result['loader_over_step']:.3g}x)"),
      ('input-bound', 'yes: the loader is slower than the step'
       if result['input_bound'] else 'no'),
  ]
  if 'step_device_s' in result:
    rows += [
        ('device augmentation: step', f"{result['step_device_s'] * 1e3:.1f} "
         f"ms (the chain adds {result['augment_device_s'] * 1e3:.1f} ms; "
         f"compile {result['compile_device_s']:.2f} s)"),
        ('device augmentation: loader',
         f"{result['loader_device_batches_per_s']:.3g} batches/s (patches "
         'only)'),
        ('device augmentation: step consumes',
         f"{result['step_device_batches_per_s']:.3g} batches/s (loader / "
         f"step {result['loader_over_step_device']:.3g}x)"),
        ('input-bound (device augmentation)',
         'yes: the loader is slower than the step'
         if result['input_bound_device'] else 'no'),
    ]
  lines = ['| quantity | value |', '|---|---|']
  lines += [f'| {k} | {v} |' for k, v in rows]
  return '\n'.join(lines)
