"""Training end to end on tiny models: results on disk, exact resume, evaluate mode."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO

# Trains or runs whole pipelines: the full suite's, not the fast loop's.
pytestmark = pytest.mark.slow

TINY = [
    '--config.model.widths=(4,8,8)', '--config.model.depths=(1,1,1)',
    '--config.model.decoder_widths=(8,4)', '--config.model.decoder_depths=(1,1)',
    '--config.model.output_depth=1', '--config.data.image_size=32',
    '--config.train.batch_size=8', '--config.train.eval_batch_size=8',
    '--config.train.log_every_steps=1',
    '--config.data.synthetic.num_cases=6', '--config.data.synthetic.shape=(48,48,32)',
    '--config.data.synthetic.steps_per_epoch=2',
]


def _main(workdir, *extra, mode='train'):
  cmd = [sys.executable, '-m', 'jaxseg.main', '--config=configs/brats19_resunet.py',
         f'--workdir={workdir}', f'--mode={mode}', *TINY, *extra]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stderr


def _params(workdir):
  """The newest checkpoint of a run (an improving epoch is saved as the best)."""
  steps = [(int(s), os.path.join(workdir, d, s))
           for d in ('checkpoints', 'checkpoints_best')
           for s in os.listdir(os.path.join(workdir, d)) if s.isdigit()]
  step, path = max(steps)
  restored = ocp.StandardCheckpointer().restore(os.path.join(path, 'state'))
  return step, restored['params'], restored['opt_state']


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory, cache_dir):
  workdir = tmp_path_factory.mktemp('straight') / 'run'
  log = _main(workdir, '--config.train.num_epochs=3')
  return workdir, log


def test_a_run_writes_its_results(straight_run):
  workdir, log = straight_run
  for name in ('config.json', 'metrics.jsonl', 'results.json', 'data/split.json', 'curves.png',
               'eval/val_cases.csv', 'eval/test_cases.csv', 'eval/test_summary.json'):
    assert (workdir / name).exists(), name
  assert list((workdir / 'tensorboard').iterdir())
  split = json.loads((workdir / 'data' / 'split.json').read_text())['split']
  # Case-level split: no case in two splits; 6 cases at 0.7/0.15/0.15.
  assert sorted(map(len, split.values())) == [1, 1, 4]
  assert not set(split['train']) & set(split['val'] + split['test'])
  results = json.loads((workdir / 'results.json').read_text())
  assert results['steps'] == 6 and results['epochs_run'] == 3
  for split_name in ('val', 'test'):
    assert 0.0 <= results[split_name]['per_volume']['dice_WT']['mean'] <= 1.0
    assert 'dice' in results[split_name]['per_slice']
  epochs = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['epoch'] for r in epochs if 'epoch' in r] == [1, 2, 3]
  assert 'images/s' in log and 'min left' in log
  assert 'peak memory:' in log and 'GiB resident' in log


def _val_curve(workdir, metric):
  epochs = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {r['epoch']: r[f'val/{metric}'] for r in epochs if 'epoch' in r}


def test_the_best_checkpoint_is_the_best_logged_epoch(straight_run, tmp_path, cache_dir):
  # Default train.best_by='val_loss': the epoch of the lowest logged loss.
  workdir, _ = straight_run
  results = json.loads((workdir / 'results.json').read_text())
  loss = _val_curve(workdir, 'loss')
  assert results['best_epoch'] == min(loss, key=loss.get)
  assert results['best_value'] == pytest.approx(min(loss.values()))
  # By validation Dice: the epoch of the highest logged Dice, and that is
  # the checkpoint the final evaluation scored (its val loss is logged).
  workdir = tmp_path / 'by_dice'
  _main(workdir, '--config.train.num_epochs=3', '--config.train.best_by=val_dice',
        '--config.optimizer.learning_rate=0.003')
  results = json.loads((workdir / 'results.json').read_text())
  dice, loss = _val_curve(workdir, 'dice'), _val_curve(workdir, 'loss')
  best = max(dice, key=dice.get)
  assert results['best_by'] == 'val_dice' and results['best_epoch'] == best
  assert results['best_value'] == pytest.approx(dice[best])
  assert results['best_val_loss'] == pytest.approx(loss[best])
  assert _params(workdir)[0] >= 2 * best  # steps_per_epoch=2


def test_resume_continues_exactly(straight_run, tmp_path, cache_dir):
  """N steps straight == N/2 steps, a fresh process resuming, N/2 more."""
  workdir, _ = straight_run
  resumed = tmp_path / 'resumed'
  # Halt in the middle of epoch 2 (step 3 of 6): the data iterator position,
  # optimiser state and RNG must all carry over.
  _main(resumed, '--config.train.num_epochs=3', '--config.train.halt_after_steps=3')
  assert _params(resumed)[0] == 3
  assert not (resumed / 'results.json').exists()
  log = _main(resumed, '--config.train.num_epochs=3')
  assert 'resumed from step 3' in log
  _assert_same_run(workdir, resumed)


def _records(workdir):
  """metrics.jsonl without its wall-clock times."""
  return [{k: v for k, v in json.loads(l).items() if k != 'time'}
          for l in (workdir / 'metrics.jsonl').read_text().splitlines()]


def _assert_same_run(straight, resumed):
  """Same final parameters and optimiser state, and the same metrics.jsonl:
  one record per step and epoch, the epoch averages over all its steps."""
  step_a, params_a, opt_a = _params(straight)
  step_b, params_b, opt_b = _params(resumed)
  assert step_a == step_b == 6
  for a, b in zip(*(map(np.asarray, __import__('jax').tree.leaves(t))
                    for t in ((params_a, opt_a), (params_b, opt_b)))):
    np.testing.assert_array_equal(a, b)
  assert _records(resumed) == _records(straight)


def test_a_damaged_latest_checkpoint_resumes_from_the_best(straight_run, tmp_path,
                                                         cache_dir):
  """The latest checkpoint's array data truncated: the run resumes from the
  best one (an epoch earlier), sets the damaged one aside with one warning,
  and ends as the uninterrupted run."""
  workdir, _ = straight_run
  resumed = tmp_path / 'resumed'
  _main(resumed, '--config.train.num_epochs=3', '--config.train.halt_after_steps=5')
  data = resumed / 'checkpoints' / '5' / 'state' / 'ocdbt.process_0' / 'd'
  largest = max(data.iterdir(), key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:1000])
  log = _main(resumed, '--config.train.num_epochs=3')
  warnings = [l for l in log.splitlines() if 'set aside' in l]
  assert len(warnings) == 1 and 'checkpoints/5 cannot be restored' in warnings[0]
  assert 'Traceback' not in log
  assert (resumed / 'checkpoints_damaged' / 'checkpoints_5' / 'state').is_dir()
  assert 'resumed from step 4' in log   # epoch 2's end: the best then
  _assert_same_run(workdir, resumed)


def _step_losses(workdir):
  return {r['step']: r['train/step_loss']
          for r in map(json.loads, (workdir / 'metrics.jsonl').read_text().splitlines())
          if 'train/step_loss' in r}


def test_a_run_with_worker_processes(tmp_path, cache_dir):
  """Grain worker processes under the absl app (loader-level checks: test_pipeline)."""
  _main(tmp_path / 'workers', '--config.train.num_epochs=1',
        '--config.data.worker_count=2')
  losses = _step_losses(tmp_path / 'workers')
  assert sorted(losses) == [1, 2] and all(np.isfinite(list(losses.values())))


def test_evaluate_mode_rescores_the_best_checkpoint(straight_run):
  workdir, _ = straight_run
  before = (workdir / 'eval' / 'test_cases.csv').read_text()
  (workdir / 'eval' / 'test_cases.csv').unlink()
  _main(workdir, mode='evaluate')
  rows = list(csv.DictReader((workdir / 'eval' / 'test_cases.csv').open()))
  assert len(rows) == 1 and 0.0 <= float(rows[0]['dice_WT']) <= 1.0
  assert (workdir / 'eval' / 'test_cases.csv').read_text() == before


def _real(workdir, config, *extra):
  cmd = [sys.executable, '-m', 'jaxseg.main', f'--config={config}',
         f'--workdir={workdir}', *TINY, '--config.train.steps_per_epoch=2',
         '--config.train.num_epochs=1', *extra]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads((workdir / 'results.json').read_text())


def test_real_brats18_whole_tumour_smoke(shared_data, tmp_path, cache_dir):
  """6 train / 2 validation real cases, FLAIR + T1, scored on the 240x240x155 grid."""
  results = _real(tmp_path / 'run', 'configs/brats18_wt_resunet.py')
  split = json.loads((tmp_path / 'run' / 'data' / 'split.json').read_text())['split']
  assert (len(split['train']), len(split['val']), len(split['test'])) == (6, 2, 0)
  assert results['val']['cases'] == 2 and 'test' not in results
  assert 0.0 <= results['val']['per_volume']['dice_WT']['mean'] <= 1.0


def test_real_tcga_regions_smoke(shared_data, tmp_path, cache_dir):
  """BraTS 0/1/2/4 labels as WT/TC/ET sigmoid channels; one case has no ET."""
  results = _real(tmp_path / 'run', 'configs/brats19_resunet.py',
                  f'--config.data.root={shared_data / "tcga_4mod"}',
                  '--config.data.label_mode=regions', '--config.data.split=(0.5,0.5,0.0)')
  per_volume = results['val']['per_volume']
  assert {'dice_WT', 'dice_TC', 'dice_ET'} <= set(per_volume)
  rows = list(csv.DictReader((tmp_path / 'run' / 'eval' / 'val_cases.csv').open()))
  assert len(rows) == 1 and all(0.0 <= float(rows[0][k]) <= 1.0
                                for k in ('dice_WT', 'dice_TC', 'dice_ET'))
