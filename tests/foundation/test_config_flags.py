"""The --config flag: .py and config.json files, overrides of fields a config leaves out.

References: the model's and loss's own defaults (dataclass fields, function
signatures), the config a run wrote, and the command line run as a user
runs it (one error line, exit status 2, no workdir).
"""

import json
import subprocess
import sys

import pytest

from conftest import REPO, load_config
from jaxseg import config_base
from jaxseg import config_flags

# A program that defines --config as jaxseg's commands do and prints it.
SHOW = '''
import json, sys
from absl import flags
from jaxseg import cli
from jaxseg import config_flags
from jaxseg import models
config_flags.define_config()
cli.parse_flags(sys.argv)
print(json.dumps(flags.FLAGS.config.to_dict(), default=str))
'''


def _show(tmp_path, *args):
  script = tmp_path / 'show.py'
  script.write_text(SHOW)
  return subprocess.run([sys.executable, str(script), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_model_field_the_config_leaves_out_can_be_overridden(tmp_path):
  assert 'kernel_size' not in load_config('lgg_unet').model
  run = _show(tmp_path, '--config=configs/lgg_unet.py',
              '--config.model.kernel_size=5', '--config.loss.smooth=2.5')
  assert run.returncode == 0, run.stderr
  config = json.loads(run.stdout)
  assert config['model']['kernel_size'] == 5
  assert config['loss']['smooth'] == 2.5
  # Fields not named stay out of the config (they keep the module's default).
  assert set(config['model']) == set(load_config('lgg_unet').model) | {'kernel_size'}


@pytest.mark.slow
def test_a_field_that_is_not_one_names_the_closest(tmp_path):
  run = _show(tmp_path, '--config=configs/brats_unet3d_regions.py',
              '--config.model.featurs=8')
  assert run.returncode == 2
  assert run.stderr.strip() == ("jaxseg: error: --config.model.featurs: not a "
                                "field of model 'unet'; did you mean 'features'?")
  run = _show(tmp_path, '--config=configs/brats19_resunet.py',
              '--config.loss.gama=2')
  assert run.returncode == 2
  assert "not a field of loss 'focal_dice'; did you mean 'gamma'?" in run.stderr


@pytest.mark.slow
def test_main_refuses_a_typo_before_making_the_workdir(tmp_path):
  workdir = tmp_path / 'run'
  run = subprocess.run(
      [sys.executable, '-m', 'jaxseg.main', '--config=configs/lgg_unet.py',
       f'--workdir={workdir}', '--config.model.dropout_rat=0.1'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 2
  assert "did you mean 'dropout_rate'?" in run.stderr
  assert len(run.stderr.strip().splitlines()) == 1
  assert not workdir.exists()


@pytest.mark.slow
def test_a_runs_config_json_loads_as_the_config(tmp_path):
  config = load_config('brats19_resunet')
  config.loss.alpha = None               # a None the JSON writes as null
  path = tmp_path / 'config.json'
  path.write_text(config.to_json_best_effort(indent=1))
  loaded = config_base.load_config_file(str(path))
  assert loaded.to_dict() == config.to_dict()
  config_base.check_config(loaded)
  # Overrides work on it, also of None values (typed from the defaults).
  run = _show(tmp_path, f'--config={path}', '--config.loss.alpha=0.5',
              '--config.data.patch_size=(8, 8, 8)', '--config.data.root=/x')
  assert run.returncode == 0, run.stderr
  shown = json.loads(run.stdout)
  assert shown['loss']['alpha'] == 0.5
  assert shown['data']['patch_size'] == [8, 8, 8]
  assert shown['data']['root'] == '/x'


@pytest.mark.slow
def test_a_broken_config_json_is_one_error(tmp_path):
  from jaxseg.errors import InputError
  path = tmp_path / 'config.json'
  path.write_text('{"data": ')
  with pytest.raises(InputError, match='cannot read the config'):
    config_base.load_config_file(str(path))
  run = _show(tmp_path, f'--config={path}')
  assert run.returncode == 2
  assert run.stderr.startswith(f'jaxseg: error: {path}: cannot read the config')


def test_add_overridden_fields_types_them_by_the_default():
  config = load_config('brats19_resunet')
  config_flags.add_overridden_fields(
      config, ['model.bn_momentum', 'data.image_size', 'loss.per_sample'])
  assert config.model.bn_momentum == 0.9         # already set: unchanged
  assert config.loss.per_sample is False         # focal_dice's default
  with pytest.raises(config_flags.UnknownField, match="did you mean 'per_sample'"):
    config_flags.add_overridden_fields(config, ['loss.per_sampel'])


def test_a_config_json_from_before_the_onednn_dispatch_still_loads(tmp_path):
  # Runs before oneDNN wrote model.kernels ('auto' | 'native' | 'cpu'); the
  # platform picks the kernels now, and the key is dropped on reading.
  import json
  from conftest import load_config
  from jaxseg import config_base
  from jaxseg import models
  config = load_config('brats19_resunet')
  values = json.loads(config.to_json_best_effort())
  values['model']['kernels'] = 'auto'
  path = tmp_path / 'config.json'
  path.write_text(json.dumps(values))
  loaded = config_base.config_from_json(str(path))
  assert 'kernels' not in loaded.model
  assert models.from_config(loaded).widths == tuple(config.model.widths)
