"""Every study config in configs/ trains and evaluates end to end.

Each config is shrunk to tiny inputs (32-pixel slices or 32^3 volumes, a
6-case synthetic set) but keeps its model, loss, optimiser and data mode,
then runs one epoch of two steps, the validation pass and the per-volume
evaluation in this process. Slow: ~10-60 s per config on a 2-core CPU.
"""

import json
import math

import jax
import numpy as np
import pytest

from conftest import REPO, load_config
from jaxseg import models
from jaxseg.training import optim
from jaxseg import parallel
from jaxseg.errors import InputError
from jaxseg.models import medicalnet
from jaxseg import modes
from jaxseg.training import state as state_lib

CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py'))
# Run end to end by tests/training/test_train.py already.
COVERED = ('brats18_wt_resunet', 'brats19_resunet')


def shrink(config):
  """Tiny inputs and a two-step run; model, loss and optimiser unchanged."""
  config.data.root = None
  config.data.image_size = 32
  config.data.depth = 32
  config.data.patch_size = None
  config.data.synthetic.num_cases = 6
  config.data.synthetic.shape = (48, 48, 32)
  config.data.synthetic.steps_per_epoch = 2
  config.train.batch_size = 2
  config.train.eval_batch_size = 1 if config.data.dims == 3 else 4
  config.train.num_epochs = 1
  config.train.steps_per_epoch = None   # the synthetic set's 2
  config.train.log_every_steps = 1
  config.pretrained.path = None
  return config


def test_every_model_has_a_config():
  named = {load_config(name).model.name for name in CONFIGS}
  assert set(models.MODELS) <= named, (
      f'models without a config: {sorted(set(models.MODELS) - named)}')


@pytest.mark.slow
@pytest.mark.parametrize('name', [c for c in CONFIGS if c not in COVERED])
def test_config_trains_two_steps_and_evaluates(name, tmp_path, cache_dir):
  config = shrink(load_config(name))
  results = modes.train(config, str(tmp_path))
  assert results['steps'] == 2
  assert math.isfinite(results['best_val_loss'])
  for split in ('val', 'test'):
    if split not in results:
      continue
    dice = results[split]['per_volume']['dice_WT']['mean']
    assert 0.0 <= dice <= 1.0
  written = json.loads((tmp_path / 'results.json').read_text())
  assert written['steps'] == 2
  assert (tmp_path / 'checkpoints_best').is_dir()
  config_json = json.loads((tmp_path / 'config.json').read_text())
  assert config_json['model']['name'] == load_config(name).model.name
  # The per-case table scores every validation case on its original grid.
  rows = (tmp_path / 'eval' / 'val_cases.csv').read_text().strip().splitlines()
  assert len(rows) >= 2


@pytest.mark.slow
def test_med3d_starts_from_medicalnet_and_trains_only_the_decoder(tmp_path,
                                                                  cache_dir):
  """Seed 004's frozen run: MedicalNet weights in, backbone unchanged by training."""
  from test_med3d import _medicalnet_classes, _save, _torch_resnet
  torch = _medicalnet_classes()[0]
  checkpoint = tmp_path / 'resnet_10.pth'
  _save(torch, _torch_resnet(10, 'B'), checkpoint)
  config = shrink(load_config('brats19_med3d_unet'))
  config.pretrained.path = str(checkpoint)
  config.optimizer.frozen = ('backbone',)
  workdir = tmp_path / 'run'
  modes.train(config, str(workdir))

  mesh = parallel.make_mesh()
  trained = state_lib.load_best_state(config, str(workdir), mesh)
  assert int(trained.step) == 2
  loaded = medicalnet.load_medicalnet(str(checkpoint))
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(trained.params['backbone']), loaded['params'])
  # The decoder did move away from its initial values.
  model = models.from_config(config)
  start = state_lib.create_train_state(
      model, optim.build(config.optimizer),
      jax.random.split(jax.random.key(config.seed))[0],
      (32, 32, 32, 4), config.pretrained)
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                       jax.device_get(trained.params['head']),
                       jax.device_get(start.params['head']))
  assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.slow
def test_deep_supervision_heads_are_weighted(tmp_path, cache_dir):
  config = shrink(load_config('lgg_unetpp'))
  config.model.features = (4, 8, 8, 8, 8)
  config.model.deep_supervision = True
  config.model.mode = 'accurate'
  config.loss.deep_supervision_weights = (0.1, 0.2, 0.3, 0.4)
  results = modes.train(config, str(tmp_path / 'ok'))
  assert math.isfinite(results['best_val_loss'])

  config.loss.deep_supervision_weights = (0.5, 0.5)
  with pytest.raises(InputError, match='2 weights for a model with 4 head'):
    modes.train(config, str(tmp_path / 'bad'))
  del config.loss['deep_supervision_weights']
  with pytest.raises(InputError, match='deep_supervision_weights'):
    modes.train(config, str(tmp_path / 'bad2'))
