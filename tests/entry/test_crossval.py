"""python -m jaxseg.crossval: folds, pooled out-of-fold scores, the fold ensemble.

References: the folds' own validation tables (the pooled table is their
union, each case once), the split (out-of-fold cases = every case but the
test ones), and the command line as a user runs it.
"""

import csv
import json
import subprocess
import sys

import pytest

from conftest import REPO, load_config, tiny
from jaxseg import crossval

# Trains or runs whole pipelines: the full suite's, not the fast loop's.
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def cv(tmp_path_factory, cache_dir):
  """2 folds of a tiny WT/TC/ET ResU-Net that chooses post-processing on the pool."""
  workdir = tmp_path_factory.mktemp('cv') / 'run'
  config = tiny(load_config())
  config.data.label_mode = 'regions'
  config.train.num_epochs = 1
  config.postprocess.choose_on_validation = True
  config.postprocess.candidates.WT = (10, 1000)
  out = crossval.run_crossval(config, str(workdir), folds=2)
  return config, workdir, out


def _csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_every_case_is_scored_once_out_of_fold(cv):
  _, workdir, out = cv
  split0 = json.loads((workdir / 'fold_0' / 'data' / 'split.json').read_text())['split']
  split1 = json.loads((workdir / 'fold_1' / 'data' / 'split.json').read_text())['split']
  assert split0['test'] == split1['test'] and len(split0['test']) == 1
  assert not set(split0['val']) & set(split1['val'])
  assert set(split0['val']) == set(split1['train'])
  oof = [r['case'] for r in _csv(workdir / 'oof_cases.csv')]
  assert sorted(oof) == sorted(split0['val'] + split1['val'])
  assert out['pooled']['cases'] == len(oof)
  assert [f['cases'] for f in out['folds']] == [len(split0['val']), len(split1['val'])]


def test_post_processing_is_chosen_on_the_pool_not_per_fold(cv):
  _, workdir, out = cv
  assert not (workdir / 'fold_0' / 'postprocess.json').exists()
  chosen = json.loads((workdir / 'postprocess.json').read_text())
  assert chosen['cases'] == out['pooled']['cases']
  assert set(chosen['mean_lesion_dice']['WT']) == {'0', '10', '1000'}
  assert chosen['settings'] == out['postprocess']


def test_the_fold_ensemble_scores_the_test_cases(cv):
  _, workdir, out = cv
  rows = _csv(workdir / 'ensemble_test_cases.csv')
  assert len(rows) == 1 and out['ensemble']['cases'] == 1
  assert 0.0 <= float(rows[0]['dice_WT']) <= 1.0
  assert 'lesion_dice_ET' in rows[0]
  table = (workdir / 'crossval.md').read_text().splitlines()
  assert len(table) == 2 + 2 + 1 + 1     # header, 2 folds, pooled, ensemble
  assert table[-1].startswith('| ensemble of 2 on test | 1 |')


def test_a_rerun_reads_the_finished_folds(cv, monkeypatch):
  config, workdir, out = cv
  def no_training(*args, **kwargs):
    raise AssertionError('a finished fold was trained again')
  monkeypatch.setattr(crossval.modes, 'train', no_training)
  again = crossval.run_crossval(config, str(workdir), folds=2)
  assert again['pooled'] == json.loads(json.dumps(out['pooled']))


def test_too_few_folds_is_one_error(tmp_path):
  run = subprocess.run(
      [sys.executable, '-m', 'jaxseg.crossval', '--config=configs/brats19_resunet.py',
       f'--workdir={tmp_path / "cv"}', '--folds=1'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 2
  assert run.stderr.strip().startswith('jaxseg: error: --folds: cross-validation '
                                       'needs at least 2 folds')
  assert not (tmp_path / 'cv').exists()
