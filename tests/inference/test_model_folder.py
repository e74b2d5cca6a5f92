"""Shareable model folders (--mode=export), python -m jaxseg.predict, ensembles.

References: predicting from the training workdir (the same weights must
give the same files), the members' own probabilities (an ensemble is their
mean), and the command line run as a user runs it.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, load_config, tiny
from jaxseg import model_folder
from jaxseg import parallel
from jaxseg.data import sources
from jaxseg.errors import InputError
from jaxseg.inference import cases as case_loop
from jaxseg.scoring import cases as case_scores
from jaxseg import evaluation
from jaxseg import modes
from jaxseg.inference import predictor

# Trains or runs whole pipelines: the full suite's, not the fast loop's.
pytestmark = pytest.mark.slow


def _train(workdir, seed):
  config = tiny(load_config())
  config.seed = seed
  config.train.num_epochs = 1
  modes.run(config, str(workdir), 'train')
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory, cache_dir):
  """Two tiny ResU-Net runs (seeds 0 and 1) on the synthetic set, exported."""
  base = tmp_path_factory.mktemp('runs')
  out = []
  for seed in (0, 1):
    workdir = base / f'run{seed}'
    config = _train(workdir, seed)
    exported = modes.run(config, str(workdir), 'export')
    out.append((config, workdir, exported))
  with open(out[0][1] / 'data' / 'split.json') as f:
    info = json.load(f)
  return out, info['root'], info['split']['val']


def test_the_folder_holds_weights_config_and_preprocessing(runs):
  (config, workdir, exported), _ = runs[0][0], runs[1]
  assert exported == str(workdir / 'model')
  assert sorted(os.listdir(exported)) == ['config.json', 'model.json', 'weights']
  info = json.loads((workdir / 'model' / 'model.json').read_text())
  assert info['modalities'] == list(config.data.modalities)
  assert info['label_mode'] == 'binary' and info['outputs'] == ['WT']
  assert info['input_shape'] == [32, 32, 4]
  assert info['preprocessing']['normalization'] == 'case'
  assert info['label_convention']['training_label_values'] == [0, 1, 2, 4]
  # No optimiser state: only parameters and batch statistics.
  weights = os.listdir(os.path.join(exported, 'weights'))
  assert 'opt_state' not in json.dumps(weights)


def test_predict_from_the_folder_equals_predict_from_the_workdir(runs, tmp_path):
  (config, workdir, exported), root, val = runs[0][0], runs[1], runs[2]
  case_dir = os.path.join(root, val[0])
  modes.run(config, str(workdir), 'predict', case_dir, str(tmp_path / 'a'))
  # The folder alone: copied away from the run, no config file, no data.
  moved = tmp_path / 'shared_model'
  shutil.copytree(exported, moved)
  case_loop.run_models([str(moved)], case_dir, str(tmp_path / 'b'))
  name = f'{val[0]}_seg.nii.gz'
  a, b = nib.load(tmp_path / 'a' / name), nib.load(tmp_path / 'b' / name)
  np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
  np.testing.assert_array_equal(a.affine, b.affine)


def test_an_ensemble_is_the_mean_of_its_members(runs):
  (_, _, first), (_, workdir1, _) = runs[0][0], runs[0][1]
  root, val = runs[1], runs[2]
  mesh = parallel.make_mesh(None)
  members = [model_folder.load(first, mesh), model_folder.load(str(workdir1), mesh)]
  (case,) = sources.discover_input(os.path.join(root, val[0]))
  volume = sources.load_case(case, members[0].config.data.modalities)
  alone = [predictor.case_predictor([m], mesh)(volume).probs for m in members]
  assert not np.allclose(alone[0], alone[1])          # two different models
  both = predictor.case_predictor(members, mesh)(volume).probs
  np.testing.assert_allclose(both, (alone[0] + alone[1]) / 2, atol=1e-7)


def test_the_command_line_ensembles_folders_and_runs(runs, tmp_path):
  (_, _, first), (_, workdir1, _) = runs[0][0], runs[0][1]
  root, val = runs[1], runs[2]
  out = tmp_path / 'pred'
  cmd = [sys.executable, '-m', 'jaxseg.predict', '-i', os.path.join(root, val[0]),
         '-o', str(out), '-m', first, '-m', str(workdir1)]
  run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  assert sorted(os.listdir(out)) == sorted([f'{val[0]}_seg.nii.gz', f'{val[0]}.png'])


def test_a_folder_missing_a_file_is_one_error(runs, tmp_path):
  exported = runs[0][0][2]
  broken = tmp_path / 'broken'
  shutil.copytree(exported, broken)
  shutil.rmtree(broken / 'weights')
  with pytest.raises(InputError) as err:
    model_folder.load(str(broken))
  assert err.value.where == str(broken / 'weights')
  assert 'missing' in err.value.problem
  run = subprocess.run(
      [sys.executable, '-m', 'jaxseg.predict', '-i', str(tmp_path), '-o',
       str(tmp_path / 'out'), '-m', str(broken)],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 2
  assert run.stderr.strip() == (f'jaxseg: error: {broken / "weights"}: missing: '
                                'not a complete jaxseg model folder (it needs '
                                'model.json, config.json, weights)')
  assert not (tmp_path / 'out').exists()


def test_an_ensemble_of_other_channels_is_refused(runs, tmp_path):
  exported = runs[0][0][2]
  other = tmp_path / 'other'
  shutil.copytree(exported, other)
  info = json.loads((other / 'model.json').read_text())
  info['modalities'] = ['flair', 't1', 't1ce', 'adc']
  (other / 'model.json').write_text(json.dumps(info))
  mesh = parallel.make_mesh(None)
  members = [model_folder.load(exported, mesh), model_folder.load(str(other), mesh)]
  with pytest.raises(InputError, match='input channels.*differ'):
    model_folder.check_ensemble(members)
  info['modalities'] = list(members[0].manifest['modalities'])
  info['label_mode'], info['outputs'] = 'regions', ['WT', 'TC', 'ET']
  (other / 'model.json').write_text(json.dumps(info))
  members[1] = model_folder.load(str(other), mesh)
  with pytest.raises(InputError, match='label mode'):
    model_folder.check_ensemble(members)


def test_the_runs_config_json_drives_export(runs, tmp_path):
  workdir = runs[0][0][1]
  config_json = str(workdir / 'config.json')
  out = tmp_path / 'm'
  run = subprocess.run(
      [sys.executable, '-m', 'jaxseg.main', f'--config={config_json}',
       f'--workdir={workdir}', '--mode=export', f'--output={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  assert (out / 'model.json').is_file()
  assert jax.tree.structure(model_folder.load(str(out)).state.params) == \
      jax.tree.structure(model_folder.load(runs[0][0][2]).state.params)


# --------------------------------------- post-processing chosen on validation


@pytest.fixture(scope='module')
def chosen_run(tmp_path_factory, cache_dir):
  """A tiny WT/TC/ET run that chooses its post-processing on validation."""
  workdir = tmp_path_factory.mktemp('chosen') / 'run'
  config = tiny(load_config())
  config.data.label_mode = 'regions'
  config.train.num_epochs = 1
  config.postprocess.choose_on_validation = True
  config.postprocess.candidates.WT = (5, 50, 5000)
  results = modes.run(config, str(workdir), 'train')
  return config, workdir, results


def test_thresholds_chosen_on_validation_are_used_and_shipped(chosen_run, tmp_path):
  from jaxseg.scoring import postprocess
  config, workdir, results = chosen_run
  chosen = json.loads((workdir / 'postprocess.json').read_text())
  settings = chosen['settings']
  assert set(settings) == {'min_component_voxels', 'et_to_ncr_below'}
  table = chosen['mean_lesion_dice']['WT']
  assert set(table) == {'0', '5', '50', '5000'}
  best = max(table.values())
  assert table[str(settings['min_component_voxels']['WT'])] == best
  assert 'val_raw' in results and 'val' in results
  # The validation rows are the raw predictions post-processed and rescored.
  with open(workdir / 'data' / 'split.json') as f:
    info = json.load(f)
  cases = {c.case_id: c for c in sources.discover_cases(info['root'])}
  val = [cases[i] for i in info['split']['val']]
  again = evaluation.rescore(val, str(workdir / 'eval' / 'val_pred'), config, settings)
  summary = case_scores.summarize_rows(again.rows)
  assert summary['lesion_dice_WT'] == results['val']['per_volume']['lesion_dice_WT']
  # The export carries them, and predict applies them to the raw prediction.
  exported = modes.run(config, str(workdir), 'export')
  model = model_folder.load(exported)
  assert model.postprocess == settings
  case = val[0]
  case_loop.run_models([exported], case.source, str(tmp_path / 'p'))
  written = np.asarray(nib.load(tmp_path / 'p' / f'{case.case_id}_seg.nii.gz').dataobj)
  raw = np.asarray(nib.load(workdir / 'eval' / 'val_pred' / f'{case.case_id}_seg.nii.gz').dataobj)
  np.testing.assert_array_equal(
      written, postprocess.for_prediction(raw.astype(np.uint8), settings,
                                          case.scheme, 'regions'))


def test_scoring_predictions_equals_the_evaluate_mode(runs, tmp_path):
  import csv
  (config, workdir, exported), root, val = runs[0][0], runs[1], runs[2]
  case_dir = os.path.join(root, val[0])
  case_loop.run_models([exported], case_dir, str(tmp_path / 'p'), score=True)
  modes.run(config, str(workdir), 'evaluate', case_dir, str(tmp_path / 'e'))
  read = lambda p: list(csv.DictReader(open(p, newline='')))  # noqa: E731
  scored, evaluated = read(tmp_path / 'p' / 'cases.csv'), read(tmp_path / 'e' / 'cases.csv')
  assert [r['case'] for r in scored] == [val[0]]
  for key in ('dice_WT', 'hd95_WT', 'lesion_dice_WT', 'lesion_fp_WT'):
    assert float(scored[0][key]) == pytest.approx(float(evaluated[0][key]))
