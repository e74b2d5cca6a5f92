"""--mode=predict and --mode=evaluate --input: files, grids, labels, bad input.

A tiny ResU-Net is trained for two steps on the synthetic set once per
module; the tests then predict with it. What is checked does not depend on
the model being good: the written NIfTI files sit on the source grid with
its affine and header, hold only labels of the case's convention, agree
with the scores the evaluate mode reports, and bad input stops with one
error before anything is written.
"""

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from conftest import load_config, tiny
from jaxseg.data import sources
from jaxseg.errors import InputError
from jaxseg import modes

# Trains or runs whole pipelines: the full suite's, not the fast loop's.
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def run2d(tmp_path_factory, cache_dir):
  """(config, workdir, data root, val case ids) of a 2-step ResU-Net run."""
  workdir = str(tmp_path_factory.mktemp('run2d'))
  config = tiny(load_config())
  config.train.num_epochs = 1
  modes.run(config, workdir, 'train')
  with open(os.path.join(workdir, 'data', 'split.json')) as f:
    info = json.load(f)
  return config, workdir, info['root'], info['split']['val']


def _datalist(path, root, case_ids):
  """A datalist .json of BraTS-2019-named case folders under `root`."""
  entries = []
  for case_id in case_ids:
    folder = os.path.join(root, case_id)
    entries.append(dict(
        image=[os.path.join(folder, f'{case_id}_{m}.nii.gz')
               for m in ('flair', 't1', 't1ce', 't2')],
        label=os.path.join(folder, f'{case_id}_seg.nii.gz')))
  with open(path, 'w') as f:
    json.dump(dict(modality={'0': 'FLAIR', '1': 'T1', '2': 'T1ce', '3': 'T2'},
                   labels={'0': 'background', '1': 'NCR', '2': 'ED', '4': 'ET'},
                   training=entries), f)
  return str(path)


def _dice(a, b):
  a, b = a.astype(bool), b.astype(bool)
  total = a.sum() + b.sum()
  return 1.0 if total == 0 else 2.0 * (a & b).sum() / total


def _leftovers(folder):
  return [n for n in os.listdir(folder) if n.startswith('.')]


def test_predict_writes_segmentations_on_the_source_grid(run2d, tmp_path):
  config, workdir, root, val = run2d
  out = tmp_path / 'pred'
  written = modes.run(config, workdir, 'predict', _datalist(
      tmp_path / 'val.json', root, val), str(out))
  assert sorted(os.listdir(out)) == sorted(
      [f'{c}_seg.nii.gz' for c in val] + [f'{c}.png' for c in val])
  assert len(written) == 2 * len(val)
  for case_id in val:
    source = nib.load(os.path.join(root, case_id, f'{case_id}_flair.nii.gz'))
    seg = nib.load(out / f'{case_id}_seg.nii.gz')
    assert seg.shape == source.shape
    np.testing.assert_allclose(seg.affine, source.affine)
    assert seg.header.get_zooms() == source.header.get_zooms()
    assert seg.get_data_dtype() == np.uint8
    # Binary label mode writes whole tumour as 1.
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
  assert not _leftovers(out)


def test_one_case_folder_is_an_input(run2d, tmp_path):
  config, workdir, root, val = run2d
  modes.run(config, workdir, 'predict', os.path.join(root, val[0]),
           str(tmp_path))
  assert os.path.isfile(tmp_path / f'{val[0]}_seg.nii.gz')


def test_dice_of_the_written_files_equals_the_evaluate_mode(run2d, tmp_path):
  config, workdir, root, val = run2d
  datalist = _datalist(tmp_path / 'val.json', root, val)
  modes.run(config, workdir, 'predict', datalist, str(tmp_path / 'pred'))
  summary = modes.run(config, workdir, 'evaluate', datalist,
                     str(tmp_path / 'scores'))
  import csv
  with open(tmp_path / 'scores' / 'cases.csv') as f:
    rows = {r['case']: r for r in csv.DictReader(f)}
  medpy_metric = pytest.importorskip('medpy.metric.binary')
  dices = []
  for case_id in val:
    pred = np.asarray(nib.load(tmp_path / 'pred' / f'{case_id}_seg.nii.gz').dataobj)
    label = np.asarray(nib.load(os.path.join(
        root, case_id, f'{case_id}_seg.nii.gz')).dataobj)
    dice = (medpy_metric.dc(pred > 0, label > 0)
            if (pred > 0).any() or (label > 0).any() else 1.0)
    assert float(rows[case_id]['dice_WT']) == pytest.approx(dice, abs=1e-6)
    dices.append(dice)
  assert summary['dice_WT']['mean'] == pytest.approx(np.mean(dices), abs=1e-6)
  for name in ('cases.csv', 'summary.json', 'dice_box.png', 'confusion.png'):
    assert os.path.isfile(tmp_path / 'scores' / name)
  assert sorted(os.listdir(tmp_path / 'scores' / 'cases')) == sorted(
      f'{c}.png' for c in val)


def test_monte_carlo_dropout_maps_and_scores(run2d, tmp_path):
  config, workdir, root, val = run2d
  config = config.copy_and_resolve_references()
  config.unlock()
  config.inference.mc_samples = 3
  out = tmp_path / 'pred'
  modes.run(config, workdir, 'predict', os.path.join(root, val[0]), str(out))
  case_id = val[0]
  source = nib.load(os.path.join(root, case_id, f'{case_id}_flair.nii.gz'))
  maps = {n: np.asarray(nib.load(out / f'{case_id}_{n}.nii.gz').dataobj)
          for n in ('mc_mean', 'mc_std', 'entropy', 'mutual_info')}
  assert maps['mc_mean'].shape == source.shape + (1,)
  assert maps['mc_std'].shape == source.shape + (1,)
  assert maps['entropy'].shape == source.shape
  assert 0.0 <= maps['mc_mean'].min() and maps['mc_mean'].max() <= 1.0
  assert maps['mc_std'].min() >= 0.0 and maps['mc_std'].max() > 0.0
  # Mutual information lies between 0 and the predictive entropy.
  assert maps['mutual_info'].min() >= -1e-5
  assert (maps['mutual_info'] <= maps['entropy'] + 1e-5).all()
  # The written segmentation is the thresholded mean.
  seg = np.asarray(nib.load(out / f'{case_id}_seg.nii.gz').dataobj)
  np.testing.assert_array_equal(seg, maps['mc_mean'][..., 0] > 0.5)

  summary = modes.run(config, workdir, 'evaluate', os.path.join(root, case_id),
                     str(tmp_path / 'scores'))
  for key in ('qu_score_WT', 'dice_auc_WT', 'ftp_auc_WT', 'ftn_auc_WT',
              'ece_WT'):
    assert 0.0 <= summary[key]['mean'] <= 1.0, key


def test_monte_carlo_dropout_needs_a_model_with_dropout(run2d, tmp_path):
  config, workdir, root, val = run2d
  config = config.copy_and_resolve_references()
  config.unlock()
  config.inference.mc_samples = 2
  config.model.dropout_rate = 0.0
  with pytest.raises(InputError, match='needs a model with dropout'):
    modes.run(config, workdir, 'predict', os.path.join(root, val[0]),
             str(tmp_path / 'pred'))
  assert not os.path.exists(tmp_path / 'pred')


# ---------------------------------------------------------------- bad input


def _copy_case(root, case_id, dest):
  folder = dest / case_id
  shutil.copytree(os.path.join(root, case_id), folder)
  return folder


def test_a_case_missing_a_channel(run2d, tmp_path):
  config, workdir, root, val = run2d
  folder = _copy_case(root, val[0], tmp_path)
  os.remove(folder / f'{val[0]}_t2.nii.gz')
  with pytest.raises(InputError) as err:
    modes.run(config, workdir, 'predict', str(folder), str(tmp_path / 'pred'))
  assert err.value.where == str(folder)
  assert "no 't2' channel" in err.value.problem
  assert not os.path.exists(tmp_path / 'pred')


def test_a_bad_case_late_in_a_folder_stops_before_any_output(run2d, tmp_path):
  """Every case is read (voxels too) before the first file is written."""
  config, workdir, root, val = run2d
  folder = tmp_path / 'cases'
  names = sorted(n for n in os.listdir(root) if n.startswith('SYN_'))[:2]
  for case_id in names:
    _copy_case(root, case_id, folder)
  last = names[1]
  path = folder / last / f'{last}_flair.nii.gz'
  img = nib.load(path)
  data = np.asarray(img.dataobj, np.float32)
  data[3, 3, 3] = np.nan                   # only the voxels show it
  nib.save(nib.Nifti1Image(data, img.affine), path)
  with pytest.raises(InputError) as err:
    modes.run(config, workdir, 'predict', str(folder), str(tmp_path / 'pred'))
  assert err.value.where == str(path) and 'NaN' in err.value.problem
  assert not os.path.exists(tmp_path / 'pred')


def test_channels_with_different_affines(run2d, tmp_path):
  config, workdir, root, val = run2d
  folder = _copy_case(root, val[0], tmp_path)
  path = folder / f'{val[0]}_t1.nii.gz'
  img = nib.load(path)
  affine = img.affine.copy()
  affine[0, 3] += 5.0
  nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), path)
  with pytest.raises(InputError) as err:
    modes.run(config, workdir, 'predict', str(folder), str(tmp_path / 'pred'))
  assert err.value.where == str(path)
  assert 'not co-registered' in err.value.problem
  assert not os.path.exists(tmp_path / 'pred')


def test_a_checkpoint_of_another_model(run2d, tmp_path):
  config, workdir, root, val = run2d
  config = config.copy_and_resolve_references()
  config.unlock()
  config.model.widths = (8, 8, 8)
  with pytest.raises(InputError) as err:
    modes.run(config, workdir, 'predict', os.path.join(root, val[0]),
             str(tmp_path / 'pred'))
  # The error names the step folder that was tried: checkpoints_best/<step>.
  assert os.path.basename(os.path.dirname(err.value.where)) == 'checkpoints_best'
  assert "does not match the config's model 'resunet'" in err.value.problem
  assert not os.path.exists(tmp_path / 'pred')


def test_a_config_that_prepares_inputs_differently(run2d, tmp_path):
  config, workdir, root, val = run2d
  config = config.copy_and_resolve_references()
  config.unlock()
  config.data.image_size = 48
  with pytest.raises(InputError) as err:
    modes.run(config, workdir, 'predict', os.path.join(root, val[0]),
             str(tmp_path / 'pred'))
  assert err.value.where == 'config.data.image_size'
  assert 'trained with 32' in err.value.problem


def test_an_output_folder_that_cannot_be_written(run2d, tmp_path):
  config, workdir, root, val = run2d
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  with pytest.raises(InputError) as err:
    modes.run(config, workdir, 'predict', os.path.join(root, val[0]),
             str(blocker / 'pred'))
  assert err.value.where == str(blocker / 'pred')
  assert 'cannot write the output folder' in err.value.problem


def test_predict_needs_input_and_output(run2d):
  config, workdir, _, _ = run2d
  with pytest.raises(InputError, match='--input'):
    modes.run(config, workdir, 'predict', None, None)


def test_evaluate_input_needs_labels(run2d, tmp_path):
  config, workdir, root, val = run2d
  folder = _copy_case(root, val[0], tmp_path)
  os.remove(folder / f'{val[0]}_seg.nii.gz')
  with pytest.raises(InputError, match='has no label file'):
    modes.run(config, workdir, 'evaluate', str(folder), str(tmp_path / 'scores'))


# ---------------------------------------------------------------- 3D windows


@pytest.mark.slow
def test_3d_sliding_windows_with_mirroring_cover_the_grid(tmp_path, cache_dir):
  """A 3D U-Net on patches, regions mode: BraTS labels back on the full grid."""
  config = load_config('brats15_unet3d')
  config.data.modalities = ('flair', 't1ce')
  config.data.label_mode = 'regions'
  config.data.image_size = 32
  config.data.depth = 24
  config.data.patch_size = (16, 16, 16)
  config.data.synthetic.num_cases = 4
  config.data.synthetic.shape = (48, 48, 32)
  config.data.synthetic.steps_per_epoch = 2
  config.data.split = (0.5, 0.5, 0.0)
  config.model.features = 4
  config.model.depth = 2
  config.loss.name = 'dice'
  config.train.batch_size = 2
  config.train.num_epochs = 1
  config.inference.mirror_axes = (0, 1, 2)
  config.inference.window_batch_size = 3
  workdir = str(tmp_path / 'run')
  modes.run(config, workdir, 'train')
  with open(os.path.join(workdir, 'data', 'split.json')) as f:
    info = json.load(f)
  case_id = info['split']['val'][0]
  modes.run(config, workdir, 'predict', os.path.join(info['root'], case_id),
           str(tmp_path / 'pred'))
  source = nib.load(os.path.join(info['root'], case_id,
                                 f'{case_id}_flair.nii.gz'))
  seg = nib.load(tmp_path / 'pred' / f'{case_id}_seg.nii.gz')
  assert seg.shape == source.shape
  np.testing.assert_allclose(seg.affine, source.affine)
  assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}


# ---------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_2d_model_predicts_held_out_brats18_cases(shared_data, tmp_path,
                                                       cache_dir):
  """Seed 002's ResU-Net (tiny) on 6 brats18_wt cases predicts the other 2."""
  config = tiny(load_config('brats18_wt_resunet'), str(shared_data / 'brats18_wt'))
  config.data.split = (0.75, 0.25, 0.0)
  config.train.num_epochs = 1
  config.train.steps_per_epoch = 2
  workdir = str(tmp_path / 'run')
  modes.run(config, workdir, 'train')
  with open(os.path.join(workdir, 'data', 'split.json')) as f:
    held_out = json.load(f)['split']['val']
  assert len(held_out) == 2
  cases = {c.case_id: c for c in sources.discover_cases(
      str(shared_data / 'brats18_wt'))}
  datalist = tmp_path / 'held_out.json'
  with open(datalist, 'w') as f:
    json.dump(dict(modality={'0': 'FLAIR', '1': 'T1'},
                   labels={'0': 'background', '1': 'tumour'}, training=[
        dict(image=[cases[c].images[m] for m in ('flair', 't1')],
             label=cases[c].label) for c in held_out]), f)
  modes.run(config, workdir, 'predict', str(datalist), str(tmp_path / 'pred'))
  summary = modes.run(config, workdir, 'evaluate', str(datalist),
                     str(tmp_path / 'scores'))
  dices = []
  for case_id in held_out:
    seg = nib.load(tmp_path / 'pred' / f'{case_id}_seg.nii.gz')
    source = nib.load(cases[case_id].images['flair'])
    assert seg.shape == source.shape == (240, 240, 155)
    np.testing.assert_allclose(seg.affine, source.affine)
    label = np.asarray(nib.load(cases[case_id].label).dataobj) > 0.5
    dices.append(_dice(np.asarray(seg.dataobj) > 0, label))
  assert summary['dice_WT']['mean'] == pytest.approx(np.mean(dices), abs=1e-6)


@pytest.mark.slow
def test_real_3d_model_predicts_a_brats23_case(shared_data, tmp_path, cache_dir):
  """A 3D U-Net trained briefly on tcga_4mod writes BraTS 2023 labels."""
  config = load_config('brats15_unet3d')
  config.data.root = str(shared_data / 'tcga_4mod')
  config.data.modalities = ('flair', 't1', 't1ce', 't2')
  config.data.label_mode = 'regions'
  config.data.image_size = 48
  config.data.depth = 32
  config.data.patch_size = (16, 32, 32)
  config.data.split = (0.5, 0.5, 0.0)
  config.model.features = 4
  config.model.depth = 2
  config.loss.name = 'dice'
  config.train.batch_size = 1
  config.train.num_epochs = 1
  config.train.steps_per_epoch = 2
  workdir = str(tmp_path / 'run')
  modes.run(config, workdir, 'train')
  case = shared_data / 'brats23_unlabeled' / 'BraTS-GLI-00001-000'
  modes.run(config, workdir, 'predict', str(case), str(tmp_path / 'pred'))
  seg = nib.load(tmp_path / 'pred' / 'BraTS-GLI-00001-000_seg.nii.gz')
  source = nib.load(case / 'BraTS-GLI-00001-000-t2f.nii.gz')
  assert seg.shape == source.shape == (240, 240, 155)
  np.testing.assert_allclose(seg.affine, source.affine)
  assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
