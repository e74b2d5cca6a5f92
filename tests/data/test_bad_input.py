"""Bad input: one clear InputError naming the file or key, and no workdir left behind.

Each case builds a small BraTS-2019-layout dataset in tmp_path, breaks one
thing, and runs training through `jaxseg.modes.run`. The command-line path
(exit status 2, one line on stderr) is checked once end to end.
"""

import gzip
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, load_config, tiny
from jaxseg import modes
from jaxseg.errors import InputError

MODS = ('flair', 't1', 't1ce', 't2')


def _write(path, data):
  nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))


def _dataset(root, n=4, shape=(16, 16, 8)):
  rng = np.random.default_rng(0)
  for i in range(n):
    case = f'C{i}'
    folder = root / case
    folder.mkdir(parents=True)
    for m in MODS:
      img = np.zeros(shape, np.int16)
      img[3:13, 3:13] = rng.integers(50, 200, (10, 10) + shape[2:])
      _write(folder / f'{case}_{m}.nii.gz', img)
    seg = np.zeros(shape, np.uint8)
    seg[6:10, 6:10, 2:6] = 2
    seg[7:9, 7:9, 3:5] = 4
    _write(folder / f'{case}_seg.nii.gz', seg)
  return root


def _run(root, workdir, **overrides):
  config = tiny(load_config(), root=str(root))
  config.data.split = (0.5, 0.25, 0.25)
  for key, value in overrides.items():
    section, name = key.split('.')
    config[section][name] = value
  with pytest.raises(InputError) as info:
    modes.run(config, str(workdir), 'train')
  assert not workdir.exists(), 'a failed run must not leave a workdir'
  return str(info.value)


def test_missing_data_root(tmp_path):
  msg = _run(tmp_path / 'nowhere', tmp_path / 'run')
  assert 'nowhere' in msg and 'does not exist' in msg


def test_empty_dataset(tmp_path):
  (tmp_path / 'empty').mkdir()
  msg = _run(tmp_path / 'empty', tmp_path / 'run')
  assert 'empty' in msg and 'no cases' in msg


def test_case_without_a_requested_modality(tmp_path):
  root = _dataset(tmp_path / 'd')
  os.remove(root / 'C1' / 'C1_t1ce.nii.gz')
  msg = _run(root, tmp_path / 'run')
  assert 'C1' in msg and 't1ce' in msg


def test_channels_of_different_shapes(tmp_path):
  root = _dataset(tmp_path / 'd')
  _write(root / 'C2' / 'C2_t2.nii.gz', np.ones((16, 16, 9), np.int16))
  msg = _run(root, tmp_path / 'run')
  assert 'C2_t2.nii.gz' in msg and 'shape' in msg


def test_truncated_nifti(tmp_path):
  root = _dataset(tmp_path / 'd')
  path = root / 'C0' / 'C0_flair.nii.gz'
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  msg = _run(root, tmp_path / 'run')
  assert 'C0_flair.nii.gz' in msg and 'cannot read' in msg


def test_not_a_nifti_at_all(tmp_path):
  root = _dataset(tmp_path / 'd')
  (root / 'C3' / 'C3_t1.nii.gz').write_bytes(gzip.compress(b'not an image'))
  msg = _run(root, tmp_path / 'run')
  assert 'C3_t1.nii.gz' in msg


def test_label_values_outside_the_convention(tmp_path):
  root = _dataset(tmp_path / 'd')
  seg = np.zeros((16, 16, 8), np.uint8)
  seg[5:9, 5:9, 2:4] = 3            # 3 is not a BraTS 2019 label
  _write(root / 'C1' / 'C1_seg.nii.gz', seg)
  msg = _run(root, tmp_path / 'run')
  assert 'C1_seg.nii.gz' in msg and '3' in msg


def test_nan_voxels(tmp_path):
  root = _dataset(tmp_path / 'd')
  img = np.ones((16, 16, 8), np.float32)
  img[4, 4, 4] = np.nan
  _write(root / 'C0' / 'C0_t2.nii.gz', img)
  msg = _run(root, tmp_path / 'run')
  assert 'C0_t2.nii.gz' in msg and 'NaN' in msg


def test_unknown_config_key_in_a_config(tmp_path):
  root = _dataset(tmp_path / 'd')
  config = tiny(load_config(), root=str(root))
  config.unlock() if hasattr(config, 'unlock') else None
  config.data.lable_mode = 'binary'
  with pytest.raises(InputError, match=r"config\.data\.lable_mode.*label_mode"):
    modes.run(config, str(tmp_path / 'run'), 'train')
  assert not (tmp_path / 'run').exists()


def test_unknown_label_mode(tmp_path):
  root = _dataset(tmp_path / 'd')
  msg = _run(root, tmp_path / 'run', **{'data.label_mode': 'regionz'})
  assert 'config.data.label_mode' in msg


def test_evaluate_without_training(tmp_path):
  config = tiny(load_config())
  with pytest.raises(InputError, match='train first'):
    modes.run(config, str(tmp_path / 'run'), 'evaluate')


@pytest.mark.slow
def test_command_line_gives_one_line_and_exit_status_2(tmp_path):
  workdir = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'jaxseg.main',
         '--config=configs/brats19_resunet.py', f'--workdir={workdir}',
         f'--config.data.root={tmp_path / "nowhere"}']
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  errors = [l for l in out.stderr.splitlines() if l.startswith('jaxseg: error:')]
  assert len(errors) == 1 and 'nowhere' in errors[0] and 'does not exist' in errors[0]
  assert not workdir.exists()


@pytest.mark.slow
def test_command_line_unknown_override(tmp_path):
  cmd = [sys.executable, '-m', 'jaxseg.main',
         '--config=configs/brats19_resunet.py', f'--workdir={tmp_path / "run"}',
         '--config.optimizer.learnig_rate=0.1']
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert "--config.optimizer.learnig_rate: unknown config key; did you mean 'learning_rate'?" in out.stderr


def test_multiclass_labels_with_a_sigmoid_loss(tmp_path):
  root = _dataset(tmp_path / 'd')
  msg = _run(root, tmp_path / 'run', **{'data.label_mode': 'multiclass'})
  assert 'config.loss.name' in msg and 'softmax' in msg


def test_a_split_without_validation_cases(tmp_path):
  root = _dataset(tmp_path / 'd')
  msg = _run(root, tmp_path / 'run', **{'data.split': (0.75, 0.0, 0.25)})
  assert 'config.data.split' in msg and 'validation' in msg


def test_a_volume_size_the_model_cannot_take_stops_before_preparing(tmp_path):
  """A 3D U-Net of depth 4 needs sizes divisible by 16: the whole validation
  volume (depth 40) would fail at the end of the first epoch; it is refused
  before any case is read."""
  config = load_config('brats_unet3d_regions')
  config.data.root = str(tmp_path / 'none')
  config.model.features = 4
  config.data.image_size, config.data.depth = 32, 40
  config.data.patch_size = (32, 32, 32)
  with pytest.raises(InputError) as info:
    modes.run(config, str(tmp_path / 'run'), 'train')
  assert info.value.where == 'config.data.depth / image_size'
  assert '(40, 32, 32, 4)' in info.value.problem and 'divisible by 16' in info.value.problem
  assert not (tmp_path / 'run').exists()
