"""Samples per second of the training augmentation, on the host.

    python benchmarks/augment.py                     # both inputs, every stage
    python benchmarks/augment.py --runs=9 --stages=all

Times `augment.augment_slice` with every probability 1 ('all': affine,
flips, cut-out, intensity, gamma, noise) and each step alone, on a
128x128x128x4 volume (the nnU-Net BraTS patch) with a 3-channel WT/TC/ET
target and on a 64x64x4 slice (seed 002) with a 1-channel target, plus the
foreground-centred `RandomPatch`. Each run augments `--samples` inputs (at
least one); the table gives the median over `--runs` runs.

To time another implementation (issue 6: augmentation on the device), add a
function `(image, target, cfg, rng) -> (image, target)` to IMPLEMENTATIONS;
it must finish its work (block_until_ready) before returning.
"""

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jaxseg.data import augment  # noqa: E402

# name -> (spatial shape, image channels, target channels, samples per run).
INPUTS = {
    'volume': ((128, 128, 128), 4, 3, 1),
    'slice': ((64, 64), 4, 1, 50),
}

_OFF = dict(flip_prob=0.0, cutout_prob=0.0, noise_prob=0.0)
# name -> AugmentConfig fields; 'all' is the full chain.
STAGES = {
    'all': dict(flip_prob=1.0, cutout_prob=1.0, noise_prob=1.0, rotate_prob=1.0,
                scale_prob=1.0, intensity_prob=1.0, gamma_prob=1.0),
    'affine': dict(_OFF, rotate_prob=1.0, scale_prob=1.0),
    'flips': dict(_OFF, flip_prob=1.0),
    'cut-out': dict(_OFF, cutout_prob=1.0),
    'intensity': dict(_OFF, intensity_prob=1.0),
    'gamma': dict(_OFF, gamma_prob=1.0),
    'noise': dict(_OFF, noise_prob=1.0),
}


def host(image, target, cfg, rng):
  return augment.augment_slice(image, target, cfg, rng)


IMPLEMENTATIONS = {'host (numpy/scipy)': host}


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


def time_runs(fn, samples: int, runs: int, seed: int = 0) -> float:
  """Median seconds per sample of fn(rng) over `runs` runs (after a warm-up)."""
  fn(np.random.default_rng(seed))
  per_sample = []
  for run in range(runs):
    rng = np.random.default_rng(seed + 1 + run)
    t0 = time.perf_counter()
    for _ in range(samples):
      fn(rng)
    per_sample.append((time.perf_counter() - t0) / samples)
  return statistics.median(per_sample)


def rows(inputs, stages, runs):
  for impl_name, impl in IMPLEMENTATIONS.items():
    for input_name in inputs:
      spatial, channels, classes, samples = INPUTS[input_name]
      image, target = synthetic(spatial, channels, classes)
      shape = spatial + (channels,)
      for stage in stages:
        cfg = augment.AugmentConfig(**STAGES[stage])
        seconds = time_runs(lambda rng: impl(image, target, cfg, rng),
                            samples, runs)
        yield impl_name, shape, stage, seconds
      if len(spatial) == 3:
        patch = tuple(n * 3 // 4 for n in spatial)
        cut = augment.RandomPatch(patch, foreground_fraction=1.0)
        element = dict(image=image, target=target)
        seconds = time_runs(lambda rng: cut.random_map(element, rng),
                            samples, runs)
        yield ('host (numpy/scipy)', shape,
               f'foreground patch {"x".join(map(str, patch))}', seconds)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--inputs', default=','.join(INPUTS))
  parser.add_argument('--stages', default=','.join(STAGES))
  parser.add_argument('--runs', type=int, default=5)
  args = parser.parse_args(argv)
  full = dataclasses.asdict(augment.AugmentConfig(**STAGES['all']))
  print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} '
        f'CPU(s), numpy {np.__version__}; median of {args.runs} runs; '
        f"'all': rotate +-{full['rotate_degrees']} deg, scale "
        f"+-{full['scale_range']:.0%}, every probability 1")
  print('| implementation | input | stage | samples/s | ms/sample |')
  print('|---|---|---|---|---|')
  for impl, shape, stage, seconds in rows(args.inputs.split(','),
                                          args.stages.split(','), args.runs):
    print(f'| {impl} | {"x".join(map(str, shape))} | {stage} | '
          f'{1 / seconds:.3g} | {1e3 * seconds:.3g} |', flush=True)


if __name__ == '__main__':
  main()
