"""The sweep command: overrides, runs, the comparison table, resuming."""

import csv
import json
import os

import pytest

from conftest import REPO, load_config, tiny
from jaxseg import sweep
from jaxseg.errors import InputError


def test_overrides_set_keys_and_replace_sections():
  base = load_config()
  config = sweep.apply_overrides(
      base, {'optimizer.learning_rate': 1e-3, 'loss': {'name': 'bce'},
             'model.dropout_rate': 0.3}, 'v')
  assert config.optimizer.learning_rate == 1e-3
  assert config.loss.to_dict() == {'name': 'bce'}
  assert config.model.dropout_rate == 0.3
  assert base.optimizer.learning_rate == 0.01      # the base is not changed
  with pytest.raises(InputError, match='unknown config key'):
    sweep.apply_overrides(base, {'optimizer.lerning_rate': 1.0}, 'v')
  with pytest.raises(InputError, match="no section 'optimiser'"):
    sweep.apply_overrides(base, {'optimiser.name': 'sgd'}, 'v')


@pytest.mark.parametrize('path', sorted((REPO / 'sweeps').glob('*.py')))
def test_sweep_files_name_known_keys(path):
  variants = sweep.load_sweep(str(path))
  assert variants
  base = load_config()
  for name, overrides in variants:
    sweep.apply_overrides(base, overrides, name)   # raises on a typo


@pytest.mark.slow
def test_runs_variants_and_writes_one_table(tmp_path, cache_dir):
  base = tiny(load_config())
  variants = [('lr_high', {'optimizer.learning_rate': 1e-2}),
              ('bce', {'loss': {'name': 'bce'}})]
  rows = sweep.run_sweep(base, variants, str(tmp_path), title='t')
  assert [r['variant'] for r in rows] == ['lr_high', 'bce']
  for row in rows:
    results = json.loads((tmp_path / row['variant'] / 'results.json').read_text())
    assert row['dice_mean'] == results['val']['per_volume']['dice_WT']['mean']
    assert row['best_epoch'] == results['best_epoch']
    assert row['seconds_per_epoch'] == pytest.approx(
        results['train_seconds'] / results['epochs_run'])
  with open(tmp_path / 'sweep.csv') as f:
    assert [r['variant'] for r in csv.DictReader(f)] == ['lr_high', 'bce']
  assert '| bce |' in (tmp_path / 'sweep.md').read_text()
  # A second call reads the finished variants instead of training again.
  stamp = os.path.getmtime(tmp_path / 'bce' / 'results.json')
  again = sweep.run_sweep(base, variants, str(tmp_path), title='t')
  assert again == rows
  assert os.path.getmtime(tmp_path / 'bce' / 'results.json') == stamp


def test_a_bad_variant_stops_before_any_run(tmp_path):
  base = tiny(load_config())
  variants = [('ok', {}), ('typo', {'train.batch_sise': 4})]
  with pytest.raises(InputError, match='variant typo'):
    sweep.run_sweep(base, variants, str(tmp_path / 'w'))
  assert not (tmp_path / 'w' / 'ok').exists()
