"""Seconds per whole 4-channel 240x240x155 volume: 2D slice-wise and 3D sliding windows.

    python benchmarks/inference.py
    python benchmarks/inference.py --repeats=3 --mirror

For each setup: the model of a config with random weights (speed does not
depend on training), the full inference path of `--mode=predict`
(`jaxseg.predict.predict_case`: preprocessing, slices or Gaussian-weighted
sliding windows, mapping back onto the 240x240x155 grid), timed per volume
after one warm-up volume that compiles; the table gives the median. The
volume is `../shared/data/tcga_4mod/TCGA-FG-6692` when present, else a
random brain-shaped volume of the same size.
"""

import argparse
import os
import statistics
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jaxseg import config_base
from jaxseg.training import optim
from jaxseg import parallel
from jaxseg.data import sources
from jaxseg import models
from jaxseg.inference import predictor
from jaxseg.data import preprocess
from jaxseg.training import state as state_lib

CASE = os.path.join(REPO, '..', 'shared', 'data', 'tcga_4mod', 'TCGA-FG-6692')

# (name, config file, overrides): what the README's table reports.
SETUPS = (
    ('2D ResU-Net, 155 slices of 64^2 (seed 002)', 'brats19_resunet', {}),
    ('2D U-Net, 155 slices of 256^2 (seed 003)', 'lgg_unet',
     {'data.modalities': ('flair', 't1', 't1ce', 't2')}),
    ('3D U-Net regions, 128^3 windows on 144x160x160', 'brats_unet3d_regions',
     {'inference.mirror_axes': ()}),
    ('3D U-Net regions, 64^3 windows on 72x80x80 (features 16)',
     'brats_unet3d_regions',
     {'inference.mirror_axes': (), 'data.image_size': 80, 'data.depth': 72,
      'data.patch_size': (64, 64, 64), 'model.features': 16}),
)


def load_volume() -> sources.Volume:
  """The benchmark case, or a random stand-in of the same shape."""
  if os.path.isdir(CASE):
    case = sources.discover_input(CASE)[0]
    return sources.load_case(case, ('flair', 't1', 't1ce', 't2'))
  rng = np.random.default_rng(0)
  grid = np.stack(np.meshgrid(*map(np.arange, (240, 240, 155)),
                              indexing='ij'), -1)
  brain = (((grid - (120, 120, 77)) / (80, 95, 65)) ** 2).sum(-1) <= 1
  image = (brain[..., None] * rng.random((240, 240, 155, 4))).astype(np.float32)
  return sources.Volume(image=image, label=None, affine=np.eye(4), header=None,
                        case_id='random')


def build(name: str, overrides: dict, mirror: bool):
  config = config_base.load_config_file(os.path.join(REPO, 'configs',
                                                     f'{name}.py'))
  for key, value in overrides.items():
    section, field = key.split('.')
    config[section][field] = value
  if mirror:
    config.inference.mirror_axes = (0, 1) if config.data.dims == 2 else (0, 1, 2)
  model = models.from_config(config)
  state = state_lib.create_train_state(model, optim.build(config.optimizer),
                                   jax.random.key(0),
                                   preprocess.model_input_shape(config.data))
  return config, state


def time_setup(config, state, volume, repeats: int) -> list[float]:
  mesh = parallel.make_mesh()
  predict_batch = predictor.batch_predictor(state, mesh, config)
  times = []
  for _ in range(repeats + 1):
    t0 = time.perf_counter()
    out = predictor.predict_case(predict_batch, volume, config)
    times.append(time.perf_counter() - t0)
  assert out.probs.shape == volume.image.shape[:3] + out.probs.shape[-1:]
  return times[1:]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--mirror', action='store_true',
                      help='also time every setup with all mirrorings')
  parser.add_argument('--only', default='', help='comma-separated setup numbers')
  args = parser.parse_args()
  volume = load_volume()
  print(f'volume {volume.case_id} {volume.image.shape}, '
        f'{jax.device_count()} {jax.devices()[0].platform} device(s)')
  chosen = [int(i) for i in args.only.split(',') if i] or range(len(SETUPS))
  rows = []
  for i in chosen:
    label, name, overrides = SETUPS[i]
    for mirror in ((False, True) if args.mirror else (False,)):
      config, state = build(name, overrides, mirror)
      times = time_setup(config, state, volume, args.repeats)
      rows.append((label, 'all' if mirror else 'off', statistics.median(times)))
      print(f'  {label}, mirroring {rows[-1][1]}: {rows[-1][2]:.1f} s', flush=True)
  print('\n| setup | mirroring | s / volume (median) |\n|---|---|---|')
  for label, mirror, seconds in rows:
    print(f'| {label} | {mirror} | {seconds:.1f} |')


if __name__ == '__main__':
  main()
