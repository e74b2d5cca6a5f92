"""Slice records, the Grain loader's determinism and resumable position."""

import numpy as np
import pytest

from jaxseg import labels
from jaxseg.data import augment
from jaxseg.data import pipeline
from jaxseg.data import preprocess


def _stack(n_slices, tumour_slices, brain=1.0):
  targets = np.zeros((n_slices, 8, 8, 1), np.float32)
  targets[list(tumour_slices), 2:4, 2:4] = 1
  return preprocess.SliceStack(
      images=np.random.default_rng(n_slices).normal(size=(n_slices, 8, 8, 2)).astype(np.float32),
      targets=targets, brain_fraction=np.full(n_slices, brain),
      box=preprocess.CropBox(0, 0, 8, (8, 8, n_slices)))


def test_records_keep_every_tumour_slice_and_the_background_ratio():
  stacks = [_stack(20, range(5, 13)), _stack(10, [3, 4])]
  records = pipeline.select_records(stacks, 'binary', background_ratio=0.5,
                                    min_brain_fraction=0.1,
                                    rng=np.random.default_rng(0))
  tumour = set(range(5, 13)) | {23, 24}
  assert tumour <= set(records.tolist())
  assert len(records) == 10 + 5          # 10 tumour slices + 0.5 * 10 background


def test_background_needs_enough_brain():
  stacks = [_stack(10, [0], brain=0.0)]
  records = pipeline.select_records(stacks, 'binary', 1.0, 0.1,
                                    np.random.default_rng(0))
  assert records.tolist() == [0]


def _written_split(tmp_path):
  stacks = [_stack(40, range(0, 40, 2))]
  split = pipeline.PreparedSplit(
      images=stacks[0].images, targets=stacks[0].targets.astype(np.uint8),
      slices=[('c', z) for z in range(40)],
      records=np.arange(40))
  pipeline.write_splits({'train': split}, str(tmp_path / 'data'))
  return pipeline.SliceSource(str(tmp_path / 'data' / 'train'))


def _batches(loader_iter, n):
  return [next(loader_iter)['image'] for _ in range(n)]


@pytest.mark.slow
def test_loader_is_seeded_and_resumes_at_the_same_position(tmp_path):
  source = _written_split(tmp_path)
  cfg = augment.AugmentConfig()
  make = lambda seed: iter(pipeline.train_loader(
      source, global_batch_size=8, seed=seed, augment=cfg))
  straight = _batches(make(0), 12)           # 12 batches = 2.4 epochs
  again = _batches(make(0), 12)
  for a, b in zip(straight, again):
    np.testing.assert_array_equal(a, b)
  other = _batches(make(1), 1)
  assert not np.array_equal(other[0], straight[0])

  first = make(0)
  _batches(first, 7)
  state = first.get_state()
  resumed = make(0)
  resumed.set_state(state)
  for a, b in zip(_batches(resumed, 5), straight[7:]):
    np.testing.assert_array_equal(a, b)


def test_each_epoch_visits_every_record_once(tmp_path):
  source = _written_split(tmp_path)
  it = iter(pipeline.train_loader(source, global_batch_size=8, seed=0,
                                  augment=None))
  seen = np.concatenate([next(it)['image'] for _ in range(5)])   # one epoch
  keys = sorted(float(x[0, 0, 0]) for x in seen)
  expected = sorted(float(source[i]['image'][0, 0, 0]) for i in range(len(source)))
  np.testing.assert_array_equal(keys, expected)


def test_write_splits_leaves_nothing_when_it_fails(tmp_path):
  bad = pipeline.PreparedSplit(images=np.zeros((1, 2, 2, 1)), targets=None,
                               slices=[], records=np.arange(1))
  try:
    pipeline.write_splits({'train': bad}, str(tmp_path / 'data'),
                          extra={'x.json': {'a': object()}})
  except Exception:
    pass
  assert list(tmp_path.iterdir()) == []


def test_eval_batches_pad_with_zero_weight(tmp_path):
  source = _written_split(tmp_path)
  batches = list(pipeline.eval_batches(source, 16))
  weights = np.concatenate([b['weight'] for b in batches])
  assert len(weights) == 48 and weights.sum() == 40


def test_dataset_normalisation_uses_the_training_cases_only(tmp_path):
  from conftest import load_config, tiny
  from jaxseg.data import dataset
  from jaxseg.data import sources
  config = tiny(load_config())
  config.data.normalization = 'dataset'
  config.data.cache_dir = str(tmp_path / 'cache')
  info = dataset.prepare(config.data, str(tmp_path / 'run'), seed=0)
  cases = {c.case_id: c for c in sources.discover_cases(info['root'])}
  images = lambda ids: (sources.load_case(cases[i], config.data.modalities).image
                        for i in ids)
  train_mean, train_std = preprocess.dataset_statistics(images(info['split']['train']))
  np.testing.assert_allclose(info['normalization']['mean'], train_mean, rtol=1e-6)
  np.testing.assert_allclose(info['normalization']['std'], train_std, rtol=1e-6)
  all_mean, _ = preprocess.dataset_statistics(images(sorted(cases)))
  assert not np.allclose(all_mean, train_mean, rtol=1e-3)
  # The written split is the one reported, and reused on a rerun.
  assert dataset.prepare(config.data, str(tmp_path / 'run'), seed=0) == info


@pytest.mark.slow
def test_worker_processes_see_the_single_process_stream_and_resume(tmp_path):
  """Batches do not depend on the number of Grain worker processes."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  source = _written_split(tmp_path)
  make = lambda workers: iter(pipeline.train_loader(
      source, global_batch_size=8, seed=0, augment=augment.AugmentConfig(),
      worker_count=workers))
  single = _batches(make(0), 5)
  second = make(2)
  for a, b in zip(single, _batches(second, 5)):
    np.testing.assert_array_equal(a, b)
  state = second.get_state()
  third = make(2)
  third.set_state(state)
  np.testing.assert_array_equal(_batches(third, 1)[0], _batches(second, 1)[0])


def test_a_workdir_prepared_with_other_data_settings_is_refused(tmp_path):
  from conftest import load_config, tiny
  from jaxseg.data import dataset
  from jaxseg.errors import InputError
  config = tiny(load_config())
  config.data.cache_dir = str(tmp_path / 'cache')
  dataset.prepare(config.data, str(tmp_path / 'run'), seed=0)
  config.data.image_size = 64
  with pytest.raises(InputError, match='image_size=32.*64.*new --workdir'):
    dataset.prepare(config.data, str(tmp_path / 'run'), seed=0)


def test_processes_split_the_single_process_batches(tmp_path):
  """Process p of n yields rows [p B/n, (p+1) B/n) of each global batch."""
  source = _written_split(tmp_path)
  make = lambda p, n: iter(pipeline.train_loader(
      source, global_batch_size=8, seed=3, augment=augment.AugmentConfig(),
      process_index=p, process_count=n))
  single = _batches(make(0, 1), 6)
  for n in (2, 4):
    parts = [_batches(make(p, n), 6) for p in range(n)]
    for k in range(6):
      np.testing.assert_array_equal(
          np.concatenate([part[k] for part in parts]), single[k])


def _prepared_copy(tmp_path):
  """A tiny config whose data root is a copy of the synthetic set, prepared once."""
  import shutil
  from conftest import load_config, tiny
  from jaxseg.data import dataset
  config = tiny(load_config())
  config.data.cache_dir = str(tmp_path / 'cache')
  root = dataset.resolve_root(config.data)
  shutil.copytree(root, tmp_path / 'data_a')
  config.data.root = str(tmp_path / 'data_a')
  info = dataset.prepare(config.data, str(tmp_path / 'run'), seed=0)
  return config, info


def test_moved_or_symlinked_data_keep_the_workdir(tmp_path):
  """The workdir belongs to the data's contents, not to the path string."""
  import os
  from jaxseg.data import dataset
  config, info = _prepared_copy(tmp_path)
  os.rename(tmp_path / 'data_a', tmp_path / 'moved')
  config.data.root = str(tmp_path / 'moved')
  again = dataset.prepare(config.data, str(tmp_path / 'run'), seed=0)
  assert again['split'] == info['split'] and again['data'] == info['data']
  assert again['root'] == str(tmp_path / 'moved')
  os.symlink(tmp_path / 'moved', tmp_path / 'link')
  config.data.root = str(tmp_path / 'link')
  assert dataset.prepare(config.data, str(tmp_path / 'run'), seed=0)['split'] == info['split']


def test_changed_or_removed_files_refuse_the_workdir(tmp_path):
  import shutil
  from jaxseg.data import dataset
  from jaxseg.errors import InputError
  config, info = _prepared_copy(tmp_path)
  case = sorted(info['data']['cases'])[1]
  label = next((tmp_path / 'data_a' / case).glob('*_seg.nii.gz'))
  label.write_bytes(label.read_bytes() + b'\0')   # same name, other content
  with pytest.raises(InputError, match=f'changed case.*{case}.*new --workdir'):
    dataset.prepare(config.data, str(tmp_path / 'run'), seed=0)
  shutil.rmtree(tmp_path / 'data_a' / case)
  with pytest.raises(InputError, match=f'missing case.*{case}'):
    dataset.prepare(config.data, str(tmp_path / 'run'), seed=0)


def test_sample_data_roots_expand_jaxseg_data(tmp_path, monkeypatch):
  from jaxseg import config_base
  from jaxseg.data import dataset
  from jaxseg.errors import InputError
  monkeypatch.setenv('JAXSEG_DATA', str(tmp_path))
  assert dataset.expand_root(config_base.sample_data('x')) == f'{tmp_path}/x'
  monkeypatch.delenv('JAXSEG_DATA')
  with pytest.raises(InputError, match='config.data.root.*JAXSEG_DATA'):
    dataset.expand_root(config_base.sample_data('x'))


def _cases(n, folds=None):
  from jaxseg.data import sources
  return [sources.Case(case_id=f'c{i:02d}', images={}, label=None,
                       scheme=labels.BINARY,
                       fold=None if folds is None else folds[i])
          for i in range(n)]


@pytest.mark.parametrize('n,k,test_share', [(10, 5, 0.0), (11, 3, 0.0),
                                            (23, 5, 0.15), (6, 2, 0.2)])
def test_folds_are_disjoint_and_cover_the_cases(n, k, test_share):
  from jaxseg.data import dataset
  cases = _cases(n)
  splits = [dataset.split_cases(cases, (0.7, 0.3 - test_share, test_share), 7,
                                'root', folds=k, fold=i) for i in range(k)]
  test = splits[0]['test']
  assert all(s['test'] == test for s in splits)        # one test set
  assert len(test) == (max(1, round(test_share * n)) if test_share else 0)
  vals = [set(s['val']) for s in splits]
  ids = {c.case_id for c in cases}
  assert set().union(*vals) == ids - set(test)        # the folds cover ...
  assert sum(len(v) for v in vals) == len(ids - set(test))   # ... disjointly
  assert max(map(len, vals)) - min(map(len, vals)) <= 1
  for s in splits:
    assert not set(s['train']) & set(s['val']) and not set(s['train']) & set(test)
    assert set(s['train']) | set(s['val']) | set(test) == ids
  # Seeded: the same seed gives the same folds, another seed others.
  again = dataset.split_cases(cases, (0.7, 0.3 - test_share, test_share), 7,
                              'root', folds=k, fold=0)
  other = dataset.split_cases(cases, (0.7, 0.3 - test_share, test_share), 8,
                              'root', folds=k, fold=0)
  assert again == splits[0] and other != splits[0]


def test_a_datalists_fold_keys_are_used():
  from jaxseg.data import dataset
  given = [0, 1, 2, 0, 1, 2, 0]
  cases = _cases(7, given)
  split = dataset.split_cases(cases, (0.7, 0.15, 0.15), 0, 'root', folds=3, fold=1)
  assert split['val'] == ['c01', 'c04'] and split['test'] == []
  assert split['train'] == ['c00', 'c02', 'c03', 'c05', 'c06']


def test_fold_errors_name_the_key():
  from jaxseg.data import dataset
  from jaxseg.errors import InputError
  with pytest.raises(InputError, match=r'config.data.fold: 5 is out of range.*0 .. 4'):
    dataset.check_folds(5, 5)
  with pytest.raises(InputError, match='config.data.folds: must be 0'):
    dataset.check_folds(1, 0)
  with pytest.raises(InputError, match='too few for 5 folds'):
    dataset.split_cases(_cases(4), (1, 0, 0), 0, 'root', folds=5, fold=0)
  with pytest.raises(InputError, match='assigns fold 3'):
    dataset.split_cases(_cases(4, [0, 1, 2, 3]), (1, 0, 0), 0, 'root', folds=3, fold=0)


def test_read_ahead_is_a_few_batches_within_128_mib():
  mib = 2 ** 20
  # Seed 002: 64 x 64x64x(4 + 1) float32 = 5 MiB a batch -> 25 batches.
  assert pipeline.read_ahead_batches(64 * 64 * 64 * 5 * 4) == 25
  # The 3D region recipe: 2 x 128^3 x (4 + 3) -> 112 MiB: the floor of 4.
  assert pipeline.read_ahead_batches(2 * 128 ** 3 * 7 * 4) == 4
  assert pipeline.read_ahead_batches(1 * mib // 1024) == pipeline.MAX_READ_AHEAD
