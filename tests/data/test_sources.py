"""Tests of the file-format sources and the synthetic dataset."""

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from jaxseg.data import sources
from jaxseg.data import synthetic
from jaxseg.errors import InputError

from conftest import SAMPLE_DATA

DATA = SAMPLE_DATA
needs_data = pytest.mark.skipif(
    not DATA.is_dir(),
    reason=f'real BraTS sample data not found at {DATA} (it sits beside the '
    'project in development and CI only)')
ALL = ('flair', 't1', 't1ce', 't2')
SMALL = (32, 32, 32)


# ----------------------------------------------------------------- real data


@needs_data
def test_brats19_folders():
  cases = sources.discover_cases(str(DATA / 'tcga_4mod'))
  assert [c.case_id for c in cases] == ['TCGA-DU-7294', 'TCGA-FG-6692']
  case = cases[1]
  assert set(case.images) == set(ALL)
  assert case.label.endswith('TCGA-FG-6692_seg.nii.gz')
  assert case.scheme.values == (0, 1, 2, 4) and case.scheme.enhancing == 4
  assert case.split is None
  # The `algorithms/` subfolder is ignored.
  assert all('algorithms' not in p for p in case.images.values())
  vol = sources.load_case(case, ALL)
  assert vol.image.shape == (240, 240, 155, 4)
  assert vol.image.dtype == np.float32
  assert vol.label.shape == (240, 240, 155) and vol.label.dtype == np.uint8
  assert set(np.unique(vol.label)) == {0, 1, 2, 4}
  ref = nib.load(case.images['flair'])
  np.testing.assert_array_equal(vol.affine, ref.affine)
  np.testing.assert_array_equal(
      vol.image[..., 0], np.asanyarray(ref.dataobj).astype(np.float32))
  assert vol.image.min() < 0  # Resampling left small negatives: kept.
  assert vol.case_id == 'TCGA-FG-6692'
  assert vol.modalities == ALL


@needs_data
def test_brats19_channel_order_follows_request():
  case = sources.discover_cases(str(DATA / 'tcga_4mod'))[0]
  vol = sources.load_case(case, ['t2', 'flair'])
  assert vol.image.shape == (240, 240, 155, 2)
  t2 = np.asanyarray(nib.load(case.images['t2']).dataobj)
  np.testing.assert_array_equal(vol.image[..., 0], t2.astype(np.float32))
  # Low-grade case without enhancing tumour: ET absent from the label.
  assert 4 not in np.unique(vol.label)


@needs_data
def test_brats23_mapping():
  cases = sources.discover_cases(str(DATA / 'brats23_unlabeled'))
  assert len(cases) == 1
  case = cases[0]
  assert case.case_id == 'BraTS-GLI-00001-000'
  suffix = {m: Path(p).name.split('-')[-1] for m, p in case.images.items()}
  assert suffix == {'flair': 't2f.nii.gz', 't1': 't1n.nii.gz',
                    't1ce': 't1c.nii.gz', 't2': 't2w.nii.gz'}
  assert case.label is None
  assert case.scheme.values == (0, 1, 2, 3) and case.scheme.enhancing == 3
  # BraTS 2023 spellings are accepted in requests too.
  vol = sources.load_case(case, ['t2f', 't1c'])
  assert vol.modalities == ('flair', 't1ce')
  assert vol.image.shape == (240, 240, 155, 2) and vol.label is None
  ref = nib.load(case.images['flair'])
  np.testing.assert_array_equal(vol.affine, ref.affine)


@needs_data
def test_datalist():
  by_folder = sources.discover_cases(str(DATA / 'brats18_wt'))
  by_file = sources.discover_cases(str(DATA / 'brats18_wt' / 'dataset.json'))
  assert by_folder == by_file
  assert len(by_file) == 8
  case = by_file[0]
  assert case.case_id == 'Brats18_CBICA_AAB_1'
  assert list(case.images) == ['flair', 't1']
  assert case.split == 'training'
  assert case.scheme.values == (0, 1) and case.scheme.binary
  assert os.path.isabs(case.images['flair'])
  vol = sources.load_case(case, ['flair', 't1'])
  assert vol.image.shape == (240, 240, 155, 2)
  assert vol.image.dtype == np.float32
  assert vol.label.dtype == np.uint8
  assert set(np.unique(vol.label)) == {0, 1}
  np.testing.assert_array_equal(vol.affine,
                                nib.load(case.images['flair']).affine)
  with pytest.raises(InputError, match=r"has no 't1ce' channel \(has: flair, "
                     r"t1\)") as e:
    sources.load_case(case, ['flair', 't1ce'])
  assert 'dataset.json' in str(e.value)


def test_datalist_splits_and_modality_names(tmp_path):
  img = np.zeros((8, 8, 4), np.float32)
  for name in ('a_t1gd', 'a_flair', 'b_t1gd', 'b_flair', 'a_lab'):
    _save(tmp_path / f'{name}.nii.gz', img)
  datalist = {
      'modality': {'1': 'FLAIR', '0': 'T1Gd'},
      'labels': {'0': 'background', '1': 'edema', '2': 'non-enhancing tumor',
                 '3': 'enhancing tumour'},
      'training': [{'image': ['a_t1gd.nii.gz', 'a_flair.nii.gz'],
                    'label': 'a_lab.nii.gz'}],
      'test': [{'image': ['b_t1gd.nii.gz', 'b_flair.nii.gz']}],
  }
  path = tmp_path / 'list.json'
  path.write_text(json.dumps(datalist))
  a, b = sources.discover_cases(str(path))
  assert list(a.images) == ['t1ce', 'flair']
  assert (a.case_id, a.split, b.case_id, b.split) == (
      'a', 'training', 'b', 'test')
  # The Decathlon's names (1 oedema, 2 non-enhancing, 3 enhancing) are
  # mapped to BraTS values; reading them as BraTS 2023's 1 = NCR would swap
  # oedema and core.
  assert a.scheme.values == (0, 1, 2, 4) and a.scheme.enhancing == 4
  assert a.label_map == ((0, 0), (1, 2), (2, 1), (3, 4))
  assert b.label is None
  vol = sources.load_case(a, ['flair'])
  assert vol.image.shape == (8, 8, 4, 1)


# ------------------------------------------------------------ synthetic data


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
  return synthetic.ensure_synthetic(
      str(tmp_path_factory.mktemp('cache')), num_cases=3, shape=SMALL,
      seed=0)


def test_synthetic_readable(synthetic_root):
  assert Path(synthetic_root).name == 'synthetic_brats19_n3_32x32x32_s0'
  cases = sources.discover_cases(synthetic_root)
  assert [c.case_id for c in cases] == ['SYN_000', 'SYN_001', 'SYN_002']
  for case in cases:
    assert case.scheme.values == (0, 1, 2, 4)
    vol = sources.load_case(case, ALL)
    assert vol.image.shape == SMALL + (4,)
    assert vol.image.dtype == np.float32
    values = set(np.unique(vol.label).tolist())
    assert values == {0, 1, 2, 4}, f'{case.case_id} lacks a sub-region'
    brain = vol.image[..., 0] > 0
    assert not vol.image[~brain].any()  # Skull-stripped: zero background.
    assert brain[vol.label > 0].all()  # Tumour inside the brain.
    np.testing.assert_array_equal(vol.affine, synthetic.affine_for(SMALL))
    disk = nib.load(case.images['t1ce'])
    assert disk.get_data_dtype() == np.int16
    assert nib.load(case.label).get_data_dtype() == np.uint8


def test_synthetic_contrasts():
  image, label = synthetic.make_case((96, 96, 64), seed=0, index=1)
  image = image.astype(np.float32)
  brain = image[..., 0] > 0
  healthy = brain & (label == 0)

  def rel(region, c):  # Mean intensity relative to healthy brain.
    return image[..., c][region].mean() / image[..., c][healthy].mean()

  flair, t1, t1ce, t2 = range(4)
  assert rel(label == 2, flair) > 1.3  # Oedema bright on FLAIR.
  assert rel(label == 4, t1ce) > 1.8  # Enhancing rim very bright on T1ce.
  assert rel(label == 1, t1ce) < 0.85  # Necrosis dark on T1ce.
  assert rel(label == 1, t1ce) < 0.4 * rel(label == 4, t1ce)
  assert rel(label == 1, t2) > 1.3  # Necrosis bright on T2.
  assert rel(label > 0, t1) < 0.9  # Tumour hypo-intense on T1.


def test_synthetic_deterministic(tmp_path):
  kwargs = dict(num_cases=2, shape=SMALL, seed=3)
  r1 = synthetic.ensure_synthetic(str(tmp_path / 'a'), **kwargs)
  r2 = synthetic.ensure_synthetic(str(tmp_path / 'b'), **kwargs)
  for c1, c2 in zip(sources.discover_cases(r1), sources.discover_cases(r2)):
    v1, v2 = sources.load_case(c1, ALL), sources.load_case(c2, ALL)
    np.testing.assert_array_equal(v1.image, v2.image)
    np.testing.assert_array_equal(v1.label, v2.label)
  other, _ = synthetic.make_case(SMALL, seed=4, index=0)
  assert not np.array_equal(other, synthetic.make_case(SMALL, 3, 0)[0])


def test_synthetic_cache_is_atomic(tmp_path):
  name = synthetic.dataset_name(1, SMALL, 0)
  # A killed run's leftover temporary folder is not the dataset.
  leftover = tmp_path / f'.{name}.tmp-killed'
  (leftover / 'SYN_000').mkdir(parents=True)
  root = synthetic.ensure_synthetic(str(tmp_path), num_cases=1, shape=SMALL)
  assert Path(root) == tmp_path / name
  assert len(sources.discover_cases(root)) == 1
  assert [p.name for p in tmp_path.iterdir() if '.tmp-' in p.name] == [
      leftover.name]  # Ours was renamed into place; no new leftovers.
  # Second call: found in the cache, not regenerated.
  stamp = os.stat(Path(root) / 'SYN_000' / 'SYN_000_seg.nii.gz').st_mtime_ns
  assert synthetic.ensure_synthetic(str(tmp_path), 1, SMALL) == root
  assert os.stat(
      Path(root) / 'SYN_000' / 'SYN_000_seg.nii.gz').st_mtime_ns == stamp


def test_synthetic_default_cache_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('JAXSEG_CACHE', str(tmp_path))
  assert synthetic.default_cache_dir() == str(tmp_path)


# ---------------------------------------------------------------- bad input


def _save(path, data, dtype=None):
  data = np.asarray(data, dtype)
  nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])), str(path))
  return str(path)


def _brats19_case(root, case_id='C1', shape=(8, 8, 4), label=None,
                  modalities=ALL):
  """Writes a small BraTS 2019-named case; returns its folder."""
  folder = Path(root) / case_id
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for m in modalities:
    _save(folder / f'{case_id}_{m}.nii.gz',
          rng.integers(-5, 500, shape), np.int16)
  if label is not None:
    _save(folder / f'{case_id}_seg.nii.gz', label, np.uint8)
  return folder


def _load_error(root, modalities=ALL):
  (case,) = sources.discover_cases(str(root))
  with pytest.raises(InputError) as e:
    sources.load_case(case, modalities)
  return e.value


def test_error_missing_root(tmp_path):
  missing = tmp_path / 'nope'
  with pytest.raises(InputError, match='does not exist') as e:
    sources.discover_cases(str(missing))
  assert e.value.where == str(missing)


def test_error_empty_folder(tmp_path):
  (tmp_path / 'notes.txt').write_text('x')
  (tmp_path / 'some_folder').mkdir()
  with pytest.raises(InputError, match='no cases found: expected a datalist'
                     '.*BraTS 2018-21.*BraTS 2023') as e:
    sources.discover_cases(str(tmp_path))
  assert e.value.where == str(tmp_path)


def test_error_missing_modality(tmp_path):
  folder = _brats19_case(tmp_path, modalities=('flair', 't1'))
  err = _load_error(tmp_path)
  assert err.where == str(folder)
  assert "case C1 has no 't1ce' channel (has: flair, t1)" in str(err)


def test_error_truncated_gzip(tmp_path):
  folder = _brats19_case(tmp_path)
  path = folder / 'C1_t1ce.nii.gz'
  raw = path.read_bytes()
  assert gzip.decompress(raw)  # A valid file before truncation.
  path.write_bytes(raw[:len(raw) * 2 // 3])
  err = _load_error(tmp_path)
  assert err.where == str(path)
  assert err.problem.startswith('cannot read NIfTI: ')
  assert '\n' not in str(err)  # One line for the command-line message.


def test_error_not_a_nifti(tmp_path):
  folder = _brats19_case(tmp_path)
  path = folder / 'C1_t2.nii.gz'
  path.write_bytes(b'not a nifti file')
  err = _load_error(tmp_path)
  assert err.where == str(path) and 'cannot read NIfTI' in err.problem


def test_error_not_3d(tmp_path):
  folder = _brats19_case(tmp_path)
  path = _save(folder / 'C1_t1.nii.gz', np.zeros((8, 8, 4, 2)), np.int16)
  err = _load_error(tmp_path)
  assert err.where == path
  assert err.problem == 'expected a 3D volume, got shape (8, 8, 4, 2)'


def test_error_channel_shapes_differ(tmp_path):
  folder = _brats19_case(tmp_path)
  path = _save(folder / 'C1_t2.nii.gz', np.zeros((8, 8, 5)), np.int16)
  err = _load_error(tmp_path)
  assert err.where == path
  assert 'shape (8, 8, 5) differs from (8, 8, 4) of' in err.problem
  assert 'C1_flair.nii.gz' in err.problem


def test_error_nan_voxels(tmp_path):
  folder = _brats19_case(tmp_path)
  data = np.ones((8, 8, 4), np.float32)
  data[0, 0, 0] = np.nan
  data[1, 0, 0] = np.inf
  path = _save(folder / 'C1_t1.nii.gz', data)
  err = _load_error(tmp_path)
  assert err.where == path
  assert err.problem == 'contains 2 NaN/Inf voxels'


def test_error_label_value_outside_convention(tmp_path):
  label = np.zeros((8, 8, 4), np.uint8)
  label[2:4, 2:4, 1] = 3  # BraTS 2023 enhancing in a BraTS 2019-named case.
  label[4, 4, 2] = 4
  folder = _brats19_case(tmp_path, label=label)
  err = _load_error(tmp_path)
  assert err.where == str(folder / 'C1_seg.nii.gz')
  assert err.problem == 'label values [3] outside the convention (0, 1, 2, 4)'


def test_error_label_shape_and_fraction(tmp_path):
  folder = _brats19_case(tmp_path, label=np.zeros((8, 8, 3)))
  err = _load_error(tmp_path)
  assert err.where == str(folder / 'C1_seg.nii.gz')
  assert 'label shape (8, 8, 3) differs from the image shape' in err.problem
  soft = np.zeros((8, 8, 4), np.float32)
  soft[0, 0, 0] = 0.5
  _save(folder / 'C1_seg.nii.gz', soft)
  err = _load_error(tmp_path)
  assert 'non-integer' in err.problem


def test_float_label_is_rounded(tmp_path):
  label = np.zeros((8, 8, 4), np.float32)
  label[0, 0, 0] = 2.0000002
  label[1, 0, 0] = 3.9999998
  folder = _brats19_case(tmp_path)
  _save(folder / 'C1_seg.nii.gz', label)
  (case,) = sources.discover_cases(str(tmp_path))
  vol = sources.load_case(case, ['flair'])
  assert vol.label[0, 0, 0] == 2 and vol.label[1, 0, 0] == 4


def test_error_malformed_json(tmp_path):
  path = tmp_path / 'dataset.json'
  path.write_text('{"training": [{"image": "a.nii.gz",}')
  with pytest.raises(InputError, match='malformed JSON') as e:
    sources.discover_cases(str(tmp_path))
  assert e.value.where == str(path)


def test_error_datalist_missing_file(tmp_path):
  path = tmp_path / 'list.json'
  path.write_text(json.dumps({'training': [{'image': ['x/a.nii.gz']}]}))
  with pytest.raises(InputError, match='does not exist') as e:
    sources.discover_cases(str(path))
  assert e.value.where == str(tmp_path / 'x' / 'a.nii.gz')
  assert str(path) in e.value.problem
