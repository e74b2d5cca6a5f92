"""Samples per second of the training augmentation: host (Grain) vs device.

    python benchmarks/augment.py                      # the issue-6 table
    python benchmarks/augment.py --stages=every --runs=9
    python benchmarks/augment.py --inputs=patch128 --stages=all

Two ways to run the same chain (`augment.AugmentConfig`, every probability
1 in 'all': rotation +-15 degrees, scaling +-5 %, elastic, flips, cut-out,
intensity, gamma, blur, noise; each step alone in the other stages):

  - host: `augment.augment_slice` (NumPy/SciPy) one sample at a time, as a
    Grain worker runs it; samples/s is per worker process. Grain runs
    `config.data.worker_count` such processes in parallel, so the loader
    delivers up to worker_count x this, as long as there are that many free
    cores (the training process needs its own).
  - device: `augment_device.augment_batch` (JAX, jitted) on a batch already
    on the default JAX device; the batch is timed until block_until_ready.
    On a CPU-only JAX, "the device" is this machine's cores (XLA uses all
    of them), the same cores the Grain workers would use.

Inputs (name: spatial x channels, target channels, batch): slice128
(128x128x4, 3, batch 16; 2D), patch64 (64^3x4, 3, batch 2), patch128
(128^3x4, 3, batch 2; the nnU-Net BraTS patch). Each run augments one
batch; the table gives the median over `--runs` runs after a warm-up run
(which also compiles). The ratio is device / host: how many host workers
match the device chain. Stage 'regions' is the chain with the probabilities
of configs/brats_unet3d_regions.py (what its training draws per sample).
Two last tables time, on the host, the elastic field alone on the coarse grid (the default) and per voxel (the plain
definition), and the foreground-centred `RandomPatch` of 3D inputs.

To time another implementation, add a factory `(cfg, images, targets) ->
run(seed)` to IMPLEMENTATIONS; run must augment the whole batch once and
finish its work (block_until_ready) before returning.
"""

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jaxseg import xla_cpu
xla_cpu.configure()  # jaxseg's XLA:CPU mode, before JAX starts its backend
from jaxseg.data import augment
from jaxseg.data import augment_device

# name -> (spatial shape, image channels, target channels, batch).
INPUTS = {
    'slice128': ((128, 128), 4, 3, 16),
    'patch64': ((64, 64, 64), 4, 3, 2),
    'patch128': ((128, 128, 128), 4, 3, 2),
}

_OFF = dict(flip_prob=0.0, cutout_prob=0.0, noise_prob=0.0)
# name -> AugmentConfig fields; 'all' is the full chain.
STAGES = {
    'all': dict(flip_prob=1.0, cutout_prob=1.0, noise_prob=1.0, rotate_prob=1.0,
                scale_prob=1.0, intensity_prob=1.0, gamma_prob=1.0,
                elastic_prob=1.0, blur_prob=1.0),
    'affine': dict(_OFF, rotate_prob=1.0, scale_prob=1.0),
    'affine+elastic': dict(_OFF, rotate_prob=1.0, scale_prob=1.0,
                           elastic_prob=1.0),
    'flips': dict(_OFF, flip_prob=1.0),
    'cut-out': dict(_OFF, cutout_prob=1.0),
    'intensity': dict(_OFF, intensity_prob=1.0),
    'gamma': dict(_OFF, gamma_prob=1.0),
    'blur': dict(_OFF, blur_prob=1.0),
    'noise': dict(_OFF, noise_prob=1.0),
}
DEFAULT_STAGES = 'all,affine,affine+elastic,blur'


def _config_stage(name: str) -> dict:
  """The augment section of configs/<name>.py (its own probabilities)."""
  from jaxseg import config_base
  config = config_base.load_config_file(
      os.path.join(REPO, 'configs', f'{name}.py'))
  values = dict(config.augment)
  values.pop('where', None)
  return values


# The probabilities training with configs/brats_unet3d_regions.py draws:
# flips 0.5, rotation 0.2, scaling 0.2, intensity 0.15, gamma 0.3, noise 0.1.
CONFIG_STAGES = {'regions': 'brats_unet3d_regions'}


def host(cfg, images, targets):
  """One sample at a time with its own generator, as a Grain worker."""
  def run(seed):
    for i in range(len(images)):
      augment.augment_slice(images[i], targets[i], cfg,
                            np.random.default_rng([seed, i]))
  return run


def device(cfg, images, targets):
  """The jitted batch chain on the default JAX device."""
  images, targets = jax.device_put(images), jax.device_put(targets)
  def run(seed):
    jax.block_until_ready(augment_device.augment_batch(
        jax.random.key(seed), images, targets, cfg))
  return run


IMPLEMENTATIONS = {'host (numpy/scipy)': host, 'device (jax jit)': device}


def synthetic(spatial, channels, classes, seed=0):
  """A z-scored brain ball (0 outside) and nested WT > TC > ET balls."""
  rng = np.random.default_rng(seed)
  grid = np.indices(spatial, dtype=np.float32)
  centre = (np.asarray(spatial, np.float32) - 1) / 2
  radius = np.sqrt(((grid - centre.reshape((-1,) + (1,) * len(spatial))) ** 2
                    ).sum(0)) / (min(spatial) / 2)
  brain = radius < 0.9
  image = rng.normal(size=spatial + (channels,)).astype(np.float32)
  image *= brain[..., None]
  target = np.stack([radius < r for r in (0.4, 0.25, 0.1)[:classes]], -1)
  return image, target.astype(np.float32)


def batch(spatial, channels, classes, size):
  pairs = [synthetic(spatial, channels, classes, seed) for seed in range(size)]
  return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def median_seconds(run, runs: int) -> float:
  """Median seconds of run(seed) over `runs` runs after one warm-up run."""
  run(0)
  seconds = []
  for r in range(runs):
    t0 = time.perf_counter()
    run(r + 1)
    seconds.append(time.perf_counter() - t0)
  return statistics.median(seconds)


def chain_rows(inputs, stages, runs):
  """(input, stage, samples/s per implementation) for each input and stage."""
  for name in inputs:
    spatial, channels, classes, size = INPUTS[name]
    images, targets = batch(spatial, channels, classes, size)
    for stage in stages:
      cfg = augment.AugmentConfig(**(
          _config_stage(CONFIG_STAGES[stage]) if stage in CONFIG_STAGES
          else STAGES[stage]))
      rates = [size / median_seconds(factory(cfg, images, targets), runs)
               for factory in IMPLEMENTATIONS.values()]
      yield name, images.shape, stage, rates


def field_rows(inputs, runs, sigma=4.0, alpha=30.0):
  """ms per elastic field (d, *S): the coarse grid vs per-voxel smoothing."""
  for name in inputs:
    spatial = INPUTS[name][0]
    for spacing in (augment.elastic_spacing(sigma), 1):
      rng = np.random.default_rng(0)
      run = lambda seed, s=spacing: augment.elastic_displacement(  # noqa: E731
          spatial, rng, alpha, sigma, s)
      yield name, spacing, median_seconds(run, runs)


def patch_rows(inputs, runs):
  """ms per foreground-centred RandomPatch (3/4 of each side), host, 3D."""
  for name in inputs:
    spatial, channels, classes, _ = INPUTS[name]
    if len(spatial) != 3:
      continue
    image, target = synthetic(spatial, channels, classes)
    patch = tuple(n * 3 // 4 for n in spatial)
    cut = augment.RandomPatch(patch, foreground_fraction=1.0)
    element = dict(image=image, target=target)
    rng = np.random.default_rng(0)
    seconds = median_seconds(lambda seed: cut.random_map(element, rng), runs)
    yield name, patch, seconds


def _shape(shape):
  return 'x'.join(map(str, shape[1:])) + f', batch {shape[0]}'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--inputs', default=','.join(INPUTS))
  parser.add_argument('--stages', default=DEFAULT_STAGES,
                      help=f"comma list of {', '.join(STAGES)}, "
                      f"{', '.join(CONFIG_STAGES)} (a config's own "
                      "probabilities), or 'every'")
  parser.add_argument('--runs', type=int, default=5)
  args = parser.parse_args(argv)
  inputs = args.inputs.split(',')
  stages = list(STAGES) if args.stages == 'every' else args.stages.split(',')
  dev = jax.devices()[0]
  print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} '
        f'CPU(s), numpy {np.__version__}, jax {jax.__version__} on '
        f'{dev.platform} ({dev.device_kind}); median of {args.runs} runs')
  names = list(IMPLEMENTATIONS)
  print(f'| input | stage | {names[0]}: samples/s per worker | '
        + ' | '.join(f'{n}: samples/s' for n in names[1:])
        + ' | ratio device / host |')
  print('|---' * (len(names) + 3) + '|')
  for name, shape, stage, rates in chain_rows(inputs, stages, args.runs):
    cells = ' | '.join(f'{r:.3g}' for r in rates)
    print(f'| {name} ({_shape(shape)}) | {stage} | {cells} | '
          f'{rates[-1] / rates[0]:.2f} |', flush=True)
  print()
  print('Elastic field alone (host; sigma 4, alpha 30): coarse grid vs per '
        'voxel')
  print('| input | grid spacing | ms per field |')
  print('|---|---|---|')
  for name, spacing, seconds in field_rows(inputs, args.runs):
    print(f'| {name} | {spacing} | {1e3 * seconds:.3g} |', flush=True)
  print()
  print('Foreground-centred patch (host, RandomPatch before the chain)')
  print('| input | patch | ms per patch |')
  print('|---|---|---|')
  for name, patch, seconds in patch_rows(inputs, args.runs):
    print(f'| {name} | {"x".join(map(str, patch))} | {1e3 * seconds:.3g} |',
          flush=True)


if __name__ == '__main__':
  main()
