"""One accelerator, one table, under 8 minutes: what jaxseg needs measured on a GPU.

    pip install -e '.[cuda]'                # jax[cuda12]; torch with CUDA for the peer rows
    python benchmarks/gpu.py --out=runs/gpu                 # one GPU, <= 8 min
    python benchmarks/gpu.py --out=runs/gpu --rows=unet3d   # rows whose name starts so
    python benchmarks/gpu.py --smoke --out=/tmp/gpu         # any machine, tiny sizes, ~1 min
    python benchmarks/gpu.py --list                         # the rows, in run order

Anchor: NVIDIA's PyTorch nnU-Net (NVIDIA/DeepLearningExamples,
PyTorch/Segmentation/nnUNet), 3D U-Net on 128^3 x 4 BraTS patches, one
A100-80G: 27.5 images/s training with AMP. The 3D rows here are the same
input (128^3 x 4, batch 2) with jaxseg's region U-Net
(configs/brats_unet3d_regions.py: 32 features, depth 4, instance norm),
so their images/s compare with it directly (a different network: nnU-Net's
has 5 poolings and deep supervision).

Rows, in run order (so a run that hits the budget loses the least needed):

  peak              n x n matmul, bf16 and f32, on one device: the FLOP/s that
                    MFU is quoted against (bf16) and the f32 rate
  <case>:<prec>     the train step (benchmark.time_train_step, as loop.py
                    jits it) of case resunet (configs/brats19_resunet.py, seed
                    002: 64x64x4, batch 64), unet (configs/lgg_unet.py, seed
                    003: 256x256x3, batch 16) or unet3d
                    (configs/brats_unet3d_regions.py: 128^3x4, batch 2), in
                    precision f32 or bf16 (train.precision)
  unet3d:augment-device  the step with the augmentation chain in it
                    (augment.where='device'), and the loader that only cuts
                    patches, on the config's data (the synthetic set)
  unet3d:augment-host    the loader with the host chain
                    (augment.where='host'), in Grain worker processes; its
                    loader/step compares with the unet3d:f32 step
  resunet:mc-dropout     Monte-Carlo dropout, T=20 draws of the seed-002
                    ResU-Net on 16 x 64x64x4: one vmapped program
                    (mc_dropout.mc_dropout_probs) against a loop of jitted
                    single draws (benchmarks/mc_dropout.py)
  torch:<case>      the PyTorch port of the case (benchmarks/peer_torch.py)
                    on CUDA, f32 and AMP (bf16 autocast), cudnn.benchmark on;
                    skipped where torch has no CUDA

Columns: step ms (median of --steps after --warmup), images/s (3D: patches/s,
the anchor's unit) and voxels/s, model TFLOP/s = XLA's FLOP count of the
lowered step (before backend rewrites; the torch rows use the jax step's
count for the same case) / step time, MFU = that / the bf16 matmul rate of
the peak row, and the peak device memory of the row's process
(memory_stats' peak_bytes_in_use; torch: max_memory_allocated). Each row
runs in its own process, so its peak is its own and a row that is still
running after its time limit (--row-limit, and what is left of --budget) is
killed and listed with a note instead of its numbers.

Writes <out>/gpu_benchmark.md (the table) and <out>/gpu_benchmark.json
(every number, the notes and the machine). `--smoke` shrinks every case (and
T, the matmul, the steps) so the whole script runs on a CPU in about a
minute; tests/entry/test_gpu_benchmark.py runs it that way.
"""

import argparse
import dataclasses
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

from jaxseg import xla_cpu
xla_cpu.configure()  # jaxseg's XLA:CPU mode (CPU only), before JAX starts
from jaxseg import models  # noqa: E402

ANCHOR = ("NVIDIA's PyTorch nnU-Net (DeepLearningExamples), 3D 128^3x4 on one "
          'A100-80G: 27.5 images/s with AMP')
RESULT_TAG = 'GPU_BENCHMARK_ROW '

# case -> (config file, full-size overrides, smoke overrides). Keys are
# config paths relative to the config ('data.image_size').
CASES = {
    'resunet': ('brats19_resunet', {'train.batch_size': 64}, {
        'model.widths': (4, 8, 8), 'model.depths': (1, 1, 1),
        'model.decoder_widths': (8, 4), 'model.decoder_depths': (1, 1),
        'model.output_depth': 1, 'data.image_size': 32,
        'train.batch_size': 4}),
    'unet': ('lgg_unet', {'train.batch_size': 16}, {
        'model.features': 4, 'model.depth': 2, 'data.image_size': 32,
        'train.batch_size': 2}),
    'unet3d': ('brats_unet3d_regions', {
        'train.batch_size': 2, 'data.patch_size': (128, 128, 128),
        'data.synthetic.num_cases': 4, 'data.split': (0.5, 0.25, 0.25)}, {
        'model.features': 4, 'model.depth': 2, 'data.patch_size': (16, 16, 16),
        'data.image_size': 24, 'data.depth': 20, 'train.batch_size': 2,
        'data.synthetic.num_cases': 4, 'data.split': (0.5, 0.25, 0.25),
        'data.synthetic.shape': (32, 32, 32)}),
}
CASE_INPUT = {'resunet': 'seed-002 ResU-Net', 'unet': 'seed-003 U-Net',
              'unet3d': '3D region U-Net'}


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  kind: str            # peak, step, augment-device, augment-host, mc, torch
  case: str = ''
  precision: str = 'float32'


def _step(case, precision):
  short = {'float32': 'f32', 'bfloat16': 'bf16'}[precision]
  return Row(f'{case}:{short}', 'step', case, precision)


ROWS = [
    Row('peak', 'peak'),
    _step('unet3d', 'float32'),
    _step('unet3d', 'bfloat16'),
    Row('unet3d:augment-device', 'augment-device', 'unet3d'),
    Row('unet3d:augment-host', 'augment-host', 'unet3d'),
    _step('resunet', 'float32'),
    _step('resunet', 'bfloat16'),
    _step('unet', 'float32'),
    _step('unet', 'bfloat16'),
    Row('torch:unet3d', 'torch', 'unet3d'),
    Row('resunet:mc-dropout', 'mc', 'resunet'),
    Row('torch:resunet', 'torch', 'resunet'),
    Row('torch:unet', 'torch', 'unet'),
]
BY_NAME = {r.name: r for r in ROWS}


# ------------------------------------------------------------------ configs

def case_config(case: str, smoke: bool, precision: str = 'float32'):
  """The case's study config at the benchmark's (or the smoke) sizes."""
  from jaxseg import config_base
  file, full, tiny = CASES[case]
  config = config_base.load_config_file(
      os.path.join(REPO, 'configs', f'{file}.py'))
  for key, value in (tiny if smoke else full).items():
    section, _, field = key.rpartition('.')
    node = config
    for part in section.split('.'):
      node = node[part]
    node[field] = value
  config.train.precision = precision
  return config


def _settings(smoke: bool) -> dict:
  return dict(steps=2 if smoke else 10, warmup=1 if smoke else 2,
              matmul_n=256 if smoke else 8192, mc_samples=4 if smoke else 20,
              mc_batch=2 if smoke else 16, loader_batches=2 if smoke else 6)


# ------------------------------------------------------------------ workers

def _items(config, step_s: float) -> dict:
  from jaxseg import benchmark
  shape = benchmark.input_shape(config)
  voxels = 1
  for n in shape[1:-1]:
    voxels *= n
  return dict(input=list(shape), images_per_s=shape[0] / step_s,
              voxels_per_s=shape[0] * voxels / step_s)


def run_peak(row: Row, smoke: bool, out: str) -> dict:
  import jax.numpy as jnp
  from jaxseg import benchmark
  n = _settings(smoke)['matmul_n']
  bf16 = benchmark.matmul_peak(n, dtype=jnp.bfloat16)
  f32 = benchmark.matmul_peak(n, dtype=jnp.float32)
  return dict(matmul_n=n, bf16_flops_per_s=bf16['flops_per_s'],
              f32_flops_per_s=f32['flops_per_s'], machine=machine(),
              note=f'{n}^2 matmul: bf16 {bf16["flops_per_s"] / 1e12:.3g}, '
                   f'f32 {f32["flops_per_s"] / 1e12:.3g} TFLOP/s')


class Skip(Exception):
  """A row that cannot run here; its message is the table's note."""


def run_step(row: Row, smoke: bool, out: str) -> dict:
  from jaxseg import benchmark
  from jaxseg import parallel
  s = _settings(smoke)
  config = case_config(row.case, smoke, row.precision)
  mesh = parallel.make_mesh(config.get('mesh'))
  timed = benchmark.time_train_step(config, mesh, steps=s['steps'],
                                    warmup=s['warmup'])
  result = dict(compile_s=timed['compile_s'], step_s=timed['step_s'],
                model_flops=timed['model_flops'],
                step_flops=timed['step_flops'], params=timed['params'],
                program_bytes=timed['program_bytes'],
                peak_memory_bytes=benchmark.peak_memory_bytes(), note='')
  result.update(_items(config, timed['step_s']))
  return result


def _data_workdir(out: str, smoke: bool) -> str:
  return os.path.join(out, 'data_unet3d_smoke' if smoke else 'data_unet3d')


def run_augment_device(row: Row, smoke: bool, out: str) -> dict:
  from jaxseg import benchmark
  from jaxseg import parallel
  from jaxseg.data import augment_device
  s = _settings(smoke)
  config = case_config(row.case, smoke, row.precision)
  augment, _ = augment_device.from_config(config.augment)
  mesh = parallel.make_mesh(config.get('mesh'))
  timed = benchmark.time_train_step(config, mesh, steps=s['steps'],
                                    warmup=s['warmup'], augment=augment)
  result = dict(compile_s=timed['compile_s'], step_s=timed['step_s'],
                model_flops=timed['model_flops'], params=timed['params'],
                program_bytes=timed['program_bytes'],
                peak_memory_bytes=benchmark.peak_memory_bytes())
  result.update(_items(config, timed['step_s']))
  # Two batches in flight, skipped before timing: the rate is the loader's,
  # not its read-ahead buffer's.
  loader = benchmark.loader_rate(config, _data_workdir(out, smoke),
                                 s['loader_batches'], host_augment=False,
                                 skip=3, read_ahead=2)
  result['loader_batches_per_s'] = loader['loader_batches_per_s']
  result['loader_over_step'] = loader['loader_batches_per_s'] * timed['step_s']
  result['note'] = (
      f"loader (patches only) {loader['loader_batches_per_s']:.3g} batches/s"
      f" = {result['loader_over_step']:.3g}x the step")
  return result


def run_augment_host(row: Row, smoke: bool, out: str) -> dict:
  from absl import flags
  from jaxseg import benchmark
  if not flags.FLAGS.is_parsed():      # Grain's worker processes read flags
    flags.FLAGS.mark_as_parsed()
  s = _settings(smoke)
  config = case_config(row.case, smoke)
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') \
      else os.cpu_count()
  # Leave two cores to the training process and the GPU's driver threads.
  config.data.worker_count = 0 if smoke else max(1, min(8, cores - 2))
  # One batch ahead per worker (each also hands one over): skip what the
  # workers may hold before timing.
  workers = config.data.worker_count
  loader = benchmark.loader_rate(config, _data_workdir(out, smoke),
                                 max(s['loader_batches'], workers),
                                 host_augment=True, skip=2 * workers + 2,
                                 read_ahead=1)
  rate = loader['loader_batches_per_s']
  return dict(input=list(benchmark.input_shape(config)),
              loader_batches_per_s=rate,
              worker_count=config.data.worker_count,
              note=f'loader with the host chain: {rate:.3g} batches/s '
                   f'({config.data.worker_count} Grain workers of {cores} '
                   'cores)')


def run_mc(row: Row, smoke: bool, out: str) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import mc_dropout                      # benchmarks/mc_dropout.py
  from timing import median_time         # benchmarks/timing.py
  from jaxseg.inference import mc_dropout as mc_dropout_lib
  from jaxseg.models import shapes
  s = _settings(smoke)
  config = case_config(row.case, smoke)
  model = models.from_config(config)
  size = config.data.image_size
  x = jnp.asarray(np.random.default_rng(0).normal(
      size=(s['mc_batch'], size, size, len(config.data.modalities))),
      jnp.float32)
  variables = shapes.random_variables(model, x[:1])
  key, t = jax.random.key(0), s['mc_samples']
  loop = mc_dropout.loop_fn(model.apply)

  def vmap():
    return jax.block_until_ready(mc_dropout_lib.mc_dropout_probs(
        model.apply, variables, x, key, t, 'sigmoid'))

  def looped():
    return jax.block_until_ready(loop(variables, x, key, t))

  vmap_s = median_time(vmap, s['steps'], s['warmup'])
  loop_s = median_time(looped, s['steps'], s['warmup'])
  diff = float(jnp.max(jnp.abs(vmap() - looped())))
  from jaxseg import benchmark
  return dict(input=list(x.shape), mc_samples=t, vmap_s=vmap_s, loop_s=loop_s,
              max_abs_diff=diff, step_s=vmap_s,
              images_per_s=x.shape[0] / vmap_s,
              peak_memory_bytes=benchmark.peak_memory_bytes(),
              note=f'T={t}: vmap {vmap_s * 1e3:.4g} ms, loop '
                   f'{loop_s * 1e3:.4g} ms (loop / vmap '
                   f'{loop_s / vmap_s:.2f}x), max diff {diff:.1e}')


def run_torch(row: Row, smoke: bool, out: str) -> dict:
  try:
    import torch
  except ImportError:
    raise Skip('PyTorch is not installed') from None
  if not torch.cuda.is_available() and not smoke:
    raise Skip(f'torch {torch.__version__} has no CUDA here')
  import jax
  import jax.numpy as jnp
  import numpy as np
  import peer_torch                      # benchmarks/peer_torch.py
  from timing import median_time
  from jaxseg import benchmark
  from jaxseg.models import shapes
  s = _settings(smoke)
  config = case_config(row.case, smoke)
  shape = benchmark.input_shape(config)
  nd = len(shape) - 2
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  torch.backends.cudnn.benchmark = True
  model = peer_torch.torch_model(config, shape[-1], nd).to(device)
  jax_params = shapes.count(shapes.variable_shapes(
      models.from_config(config),
      jax.ShapeDtypeStruct((1,) + tuple(shape[1:]), jnp.float32))['params'])
  torch_params = sum(p.numel() for p in model.parameters())
  if jax_params != torch_params:
    raise Skip(f'the port has {torch_params:,} parameters, jaxseg '
               f'{jax_params:,}: not a peer')
  rng = np.random.default_rng(0)
  outputs = models.from_config(config).num_classes
  x = torch.from_numpy(np.moveaxis(rng.normal(size=shape).astype(np.float32),
                                   -1, 1).copy()).to(device)
  y = (torch.rand((shape[0], outputs) + tuple(shape[1:-1]), device=device)
       < 0.2).float()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  loss_fn = torch.nn.BCEWithLogitsLoss()
  model.train()

  def sync():
    if device.type == 'cuda':
      torch.cuda.synchronize()

  def step(amp):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
      loss = loss_fn(model(x).float(), y)
    loss.backward()
    optimizer.step()
    sync()

  rows = []
  for amp in (False, True):
    if device.type == 'cuda':
      torch.cuda.reset_peak_memory_stats()
    step_s = median_time(functools.partial(step, amp), s['steps'], s['warmup'])
    memory = (torch.cuda.max_memory_allocated() if device.type == 'cuda'
              else None)
    result = dict(precision='amp-bf16' if amp else 'float32', step_s=step_s,
                  params=torch_params, peak_memory_bytes=memory,
                  torch=torch.__version__, device=str(device))
    result.update(_items(config, step_s))
    rows.append(result)
  return dict(rows=rows)


WORKERS = {'peak': run_peak, 'step': run_step,
           'augment-device': run_augment_device,
           'augment-host': run_augment_host, 'mc': run_mc, 'torch': run_torch}


def run_row(row: Row, smoke: bool, out: str) -> dict:
  """The row's numbers, or {'skipped': note}."""
  try:
    return WORKERS[row.kind](row, smoke, out)
  except Skip as e:
    return dict(skipped=str(e))
  except Exception as e:  # noqa: BLE001  (one row's failure is its note)
    import traceback
    traceback.print_exc()
    message = ' '.join(str(e).split())[:200]
    return dict(skipped=f'failed: {type(e).__name__}: {message}')


def _worker_main(name: str, smoke: bool, out: str) -> None:
  from absl import flags
  from jaxseg import cli
  if not flags.FLAGS.is_parsed():      # Grain's worker processes read flags
    flags.FLAGS.mark_as_parsed()
  cli.setup()
  result = run_row(BY_NAME[name], smoke, out)
  print(RESULT_TAG + json.dumps(result), flush=True)


# ------------------------------------------------------------ orchestration

def _last_line(text: str) -> str:
  lines = [l for l in (text or '').strip().splitlines() if l.strip()]
  return lines[-1][:200] if lines else ''


def run_in_process(row: Row, smoke: bool, out: str, limit: float) -> dict:
  """Runs a row in its own Python process, killed after `limit` seconds."""
  cmd = [sys.executable, os.path.abspath(__file__), '--worker', row.name,
         f'--out={out}'] + (['--smoke'] if smoke else [])
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True, cwd=REPO)
  try:
    stdout, stderr = proc.communicate(timeout=limit)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    return dict(skipped=f'still running after its {limit:.0f} s limit: '
                        'killed')
  except BaseException:          # Ctrl-C, timeout(1): no orphaned row
    os.killpg(proc.pid, signal.SIGKILL)
    raise
  for line in reversed(stdout.splitlines()):
    if line.startswith(RESULT_TAG):
      return json.loads(line[len(RESULT_TAG):])
  return dict(skipped=f'failed (exit {proc.returncode}): '
                      f'{_last_line(stderr) or _last_line(stdout)}')


def select(names: str | None) -> list[Row]:
  if not names:
    return list(ROWS)
  wanted = [n for n in names.split(',') if n]
  # A full name picks that row only; otherwise a prefix picks all it starts.
  rows = [r for r in ROWS if any(
      r.name == w or (w not in BY_NAME and r.name.startswith(w))
      for w in wanted)]
  if not rows:
    raise SystemExit(f'no row matches {names!r}; --list shows them')
  return rows


def _fmt(value, spec: str, scale: float = 1.0) -> str:
  if value is None or value != value:   # None or nan
    return '-'
  return format(value * scale, spec)


def _memory(value) -> str:
  if value is None:
    return 'n/a'
  return f'{value / 2 ** 30:.2f} GiB'


def table_rows(results: list[dict]) -> list[dict]:
  """One flat record per table line (torch rows: one per precision), MFU filled."""
  peak = next((r for r in results if r['row'] == 'peak' and 'skipped' not in r),
              None)
  bf16_peak = peak['bf16_flops_per_s'] if peak else None
  flops = {r['case']: r['model_flops'] for r in results
           if r.get('kind') == 'step'
           and r.get('precision') == 'float32' and 'model_flops' in r}
  steps = {r['case']: r['step_s'] for r in results
           if r.get('kind') == 'step'
           and r.get('precision') == 'float32' and 'step_s' in r}
  lines = []
  for r in results:
    expanded = ([dict(r, **sub) for sub in r['rows']] if 'rows' in r
                else [r])
    for line in expanded:
      line = {k: v for k, v in line.items() if k != 'rows'}
      model_flops = line.get('model_flops')
      if line.get('kind') == 'torch':
        model_flops = flops.get(line['case'])
        line['model_flops'] = model_flops
      if model_flops and line.get('step_s') and line.get('kind') != 'mc':
        line['flops_per_s'] = model_flops / line['step_s']
        if bf16_peak:
          line['mfu'] = line['flops_per_s'] / bf16_peak
      if line.get('kind') == 'augment-host' and line['case'] in steps:
        ratio = line['loader_batches_per_s'] * steps[line['case']]
        line['loader_over_step'] = ratio
        line['note'] += f' = {ratio:.3g}x the {line["case"]}:f32 step'
      lines.append(line)
  return lines


HEADER = ('| row | model | input (batch, ..., C) | precision | '
          'compile s | step ms | images/s | Mvoxels/s | model TFLOP/s | '
          'MFU (bf16 peak) | peak memory | note |')


def format_table(lines: list[dict]) -> str:
  out = [HEADER, '|' + '---|' * 12]
  for l in lines:
    kind = l.get('kind')
    model = CASE_INPUT.get(l.get('case'), '-')
    if kind == 'torch':
      model = f"PyTorch port of the {model}"
    shape = 'x'.join(map(str, l['input'])) if l.get('input') else '-'
    precision = {'float32': 'f32', 'bfloat16': 'bf16'}.get(
        l.get('precision'), l.get('precision', '-'))
    if kind in ('peak', 'augment-host'):
      precision = '-'
    note = l.get('skipped') and f"skipped: {l['skipped']}" or l.get('note', '')
    voxels = (l.get('voxels_per_s') if l.get('input') and
              len(l['input']) == 5 else None)
    out.append('| ' + ' | '.join([
        l['row'], model, shape, precision,
        _fmt(l.get('compile_s'), '.1f'),
        _fmt(l.get('step_s'), '.1f', 1e3),
        _fmt(l.get('images_per_s'), '.4g'),
        _fmt(voxels, '.4g', 1e-6),
        _fmt(l.get('flops_per_s'), '.3g', 1e-12),
        _fmt(l.get('mfu'), '.1%'),
        _memory(l.get('peak_memory_bytes')) if 'step_s' in l else '-',
        note.replace('|', '/')]) + ' |')
  return '\n'.join(out)


def machine() -> dict:
  import jax
  device = jax.devices()[0]
  info = dict(host=platform.node(), jax=jax.__version__,
              backend=jax.default_backend(), device_kind=device.device_kind,
              devices=jax.device_count())
  try:
    import torch
    info['torch'] = torch.__version__
    info['torch_cuda'] = torch.cuda.is_available()
  except ImportError:
    info['torch'] = None
  return info


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='folder for gpu_benchmark.{md,json} and '
                      'the prepared data of the augmentation rows')
  parser.add_argument('--smoke', action='store_true',
                      help='tiny sizes: the whole script in ~1 min on a CPU')
  parser.add_argument('--rows', help='comma list of row names or prefixes')
  parser.add_argument('--budget', type=float, default=450.0,
                      help='seconds for all rows together (default 450: the '
                      'whole run stays under 8 minutes)')
  parser.add_argument('--row-limit', type=float, default=100.0,
                      help='seconds one row may take before it is killed')
  parser.add_argument('--limit', action='append', default=[],
                      metavar='ROW=SECONDS', help='a row\'s own time limit '
                      '(repeatable)')
  parser.add_argument('--min-row', type=float, default=20.0,
                      help='a row is not started with less budget left')
  parser.add_argument('--inline', action='store_true',
                      help='run the rows in this process (no time limit per '
                      'row, one peak memory for all)')
  parser.add_argument('--list', action='store_true', help='print the rows')
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.list:
    for r in ROWS:
      print(r.name)
    return 0
  if not args.out:
    parser.error('--out is required')
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  if args.worker:
    _worker_main(args.worker, args.smoke, out)
    return 0

  # timeout(1) and schedulers send SIGTERM: stop like Ctrl-C, killing the
  # running row and writing the table of the rows done.
  signal.signal(signal.SIGTERM, _interrupt)
  limits = {}
  for item in args.limit:
    name, _, seconds = item.partition('=')
    if name not in BY_NAME:
      parser.error(f'--limit: no row {name!r}')
    limits[name] = float(seconds)
  t_start = time.perf_counter()
  results, interrupted = [], False
  for row in select(args.rows):
    t_row = time.perf_counter()
    left = args.budget - (t_row - t_start)
    base = dict(row=row.name, kind=row.kind, case=row.case,
                precision=row.precision)
    try:
      if interrupted:
        result = dict(skipped='interrupted')
      elif left < args.min_row:
        result = dict(skipped=f'the {args.budget:.0f} s budget is spent '
                              f'({left:.0f} s left)')
      elif args.inline:
        result = run_row(row, args.smoke, out)
      else:
        result = run_in_process(row, args.smoke, out,
                                min(limits.get(row.name, args.row_limit),
                                    left))
    except KeyboardInterrupt:    # the table of what ran is still written
      interrupted = True
      result = dict(skipped='interrupted')
    result = dict(base, **result)
    result['seconds'] = time.perf_counter() - t_row
    results.append(result)
    print(f"{row.name}: {result.get('skipped') or 'done'} "
          f"({result['seconds']:.0f} s)", file=sys.stderr, flush=True)

  lines = table_rows(results)
  table = format_table(lines)
  total = time.perf_counter() - t_start
  info = next((r['machine'] for r in results if 'machine' in r), None)
  if info is None:
    info = machine() if args.inline else _machine_in_process()
  title = (f"jaxseg on {info.get('device_kind')} ({info.get('backend')}, "
           f"{info.get('devices')} device(s)), jax {info.get('jax')}, torch "
           f"{info.get('torch')}{' (CUDA)' if info.get('torch_cuda') else ''}"
           f"; {'smoke sizes' if args.smoke else 'full sizes'}; "
           f"{total:.0f} s.\nAnchor: {ANCHOR}.")
  text = title + '\n\n' + table + '\n'
  print(text)
  with open(os.path.join(out, 'gpu_benchmark.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(out, 'gpu_benchmark.json'), 'w') as f:
    json.dump(dict(machine=info, smoke=args.smoke, anchor=ANCHOR,
                   seconds=total, budget_s=args.budget,
                   row_limit_s=args.row_limit, rows=lines), f, indent=1)
  return 0


def _interrupt(signum, frame):
  raise KeyboardInterrupt(f'signal {signum}')


def _machine_in_process() -> dict:
  """`machine()` in a child, so this process never holds the accelerator."""
  # Run from this folder, so that `import gpu` finds this file.
  cmd = [sys.executable, '-c',
         'import json, gpu; print(json.dumps(gpu.machine()))']
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                         cwd=HERE)
    return json.loads(out.stdout.strip().splitlines()[-1])
  except (subprocess.TimeoutExpired, ValueError, IndexError):
    return {}


if __name__ == '__main__':
  sys.exit(main())
