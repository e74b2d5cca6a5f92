"""NumPy-slices reader (seed 002): .npy files written by np.save, read back."""

import json
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from jaxseg.data import pipeline
from jaxseg.data import sources
from jaxseg.data.formats import npy_slices
from jaxseg.errors import InputError

from conftest import SAMPLE_DATA

DATA = SAMPLE_DATA
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f'real BraTS sample data not found at {DATA} (set JAXSEG_DATA)')
ALL = ('flair', 't1', 't1ce', 't2')
FIRST = 8                       # slices 8..19: 10 must follow 9
N = 12


def synthetic_case(seed, shape=(24, 20), channels=4):
  """(H, W, N, C) float32 with the slice number in channel 0, BraTS labels."""
  rng = np.random.default_rng(seed)
  h, w = shape
  yy, xx = np.mgrid[:h, :w]
  brain = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 2.2) ** 2
  image = rng.normal(100, 20, (h, w, N, channels)).astype(np.float32)
  image[..., 0] = FIRST + np.arange(N, dtype=np.float32)
  image[~brain] = 0
  seg = np.zeros((h, w, N), np.uint8)
  seg[h // 3:h // 2, w // 3:w // 2, 2:10] = 2
  seg[h // 3 + 1:h // 2 - 1, w // 3 + 1:w // 2 - 1, 4:8] = 1
  seg[h // 3 + 2:h // 2 - 2, w // 3 + 2:w // 2 - 2, 5:7] = 4
  return image, seg


@pytest.fixture(scope='module')
def tcga():
  """Two real cases: 4-channel crops in ALL order and their BraTS labels."""
  if not DATA.is_dir():
    pytest.skip(f'real BraTS sample data not found at {DATA} (set JAXSEG_DATA)')
  out = {}
  for folder in sorted((DATA / 'tcga_4mod').iterdir()):
    seg = np.asanyarray(nib.load(folder / f'{folder.name}_seg.nii.gz').dataobj)
    cx, cy, cz = (int(v) for v in np.argwhere(seg > 0).mean(axis=0))
    box = (slice(cx - 20, cx + 20), slice(cy - 18, cy + 18),
           slice(cz - N // 2, cz + N // 2))
    image = np.stack([
        np.asanyarray(nib.load(folder / f'{folder.name}_{m}.nii.gz').dataobj
                      )[box].astype(np.float32) for m in ALL], axis=-1)
    out[folder.name] = (image, seg[box].astype(np.uint8))
  return out


def synthetic_set():
  return {f'BraTS19_SYN_{i}': synthetic_case(i) for i in range(2)}


def write_paired(root, cases, order=ALL):
  """`root/images/<id>_<n>.npy` (channels in `order`) and `root/masks/`."""
  for d in ('images', 'masks'):
    (Path(root) / d).mkdir(parents=True, exist_ok=True)
  for case_id, (image, seg) in cases.items():
    channels = [ALL.index(m) for m in order]
    for z in range(image.shape[2]):
      name = f'{case_id}_{FIRST + z}.npy'
      np.save(Path(root) / 'images' / name, image[:, :, z][..., channels])
      np.save(Path(root) / 'masks' / name, seg[:, :, z])


def write_side_by_side(root, cases, order=ALL):
  """`root/<id>/<id>_<n>.npy` + `<id>_<n>_mask.npy` (per-case subfolders)."""
  for case_id, (image, seg) in cases.items():
    folder = Path(root) / case_id
    folder.mkdir(parents=True)
    channels = [ALL.index(m) for m in order]
    for z in range(image.shape[2]):
      np.save(folder / f'slice_{FIRST + z}.npy', image[:, :, z][..., channels])
      np.save(folder / f'slice_{FIRST + z}_mask.npy', seg[:, :, z])


def check_read_back(root, cases, labels=(0, 1, 2, 4), et=4):
  found = sources.discover_cases(str(root))
  assert [c.case_id for c in found] == sorted(cases)
  for case in found:
    image, seg = cases[case.case_id]
    assert case.reader == 'npy_slices' and case.split is None
    assert case.scheme.values == labels and case.scheme.enhancing == et
    assert case.label_map == ()
    assert sources.check_case(case, ALL) == seg.shape
    vol = sources.load_case(case, ALL)
    assert vol.image.dtype == np.float32 and vol.label.dtype == np.uint8
    np.testing.assert_array_equal(vol.image, image)
    np.testing.assert_array_equal(vol.label, seg)
    np.testing.assert_array_equal(vol.affine, np.eye(4))
    assert vol.modalities == ALL and vol.case_id == case.case_id
    vol = sources.load_case(case, ['T2', 't1Gd'])
    np.testing.assert_array_equal(vol.image, image[..., [3, 2]])
  return found


@needs_data
def test_real_cases_paired_folders(tmp_path, tcga):
  write_paired(tmp_path, tcga)
  check_read_back(tmp_path, tcga)
  labels = set(np.unique(np.concatenate([s.ravel() for _, s in tcga.values()])))
  assert labels == {0, 1, 2, 4}


@needs_data
def test_real_cases_side_by_side_with_channel_names(tmp_path, tcga):
  order = ('t1', 't1ce', 't2', 'flair')
  write_side_by_side(tmp_path, tcga, order)
  (tmp_path / 'npy_dataset.json').write_text(json.dumps({
      'channels': ['T1', 'T1Gd', 'T2', 'FLAIR'],
      'labels': {'0': 'background', '1': 'necrotic', '2': 'edema',
                 '4': 'enhancing'}}))
  cases = check_read_back(tmp_path, tcga)
  assert cases[0].channel_index == {m: i for i, m in enumerate(order)}


def test_synthetic_both_layouts_and_numeric_order(tmp_path):
  cases = synthetic_set()
  write_paired(tmp_path / 'paired', cases)
  found = check_read_back(tmp_path / 'paired', cases)
  write_side_by_side(tmp_path / 'beside', cases, ALL[::-1])
  (tmp_path / 'beside' / 'npy_dataset.json').write_text(
      json.dumps({'channels': list(ALL[::-1])}))
  check_read_back(tmp_path / 'beside', cases)
  index = sources.load_case(found[0], ['flair']).image[12, 10, :, 0]
  np.testing.assert_array_equal(index, FIRST + np.arange(N))
  lexical = sorted(range(FIRST, FIRST + N), key=str)     # 10, 11, ..., 8, 9
  assert not np.array_equal(index, lexical)


def test_root_level_side_by_side_and_single_slice(tmp_path):
  image, seg = synthetic_case(7)
  for z in range(N):
    np.save(tmp_path / f'P_01_{FIRST + z}.npy', image[:, :, z])
    np.save(tmp_path / f'P_01_{FIRST + z}_mask.npy', seg[:, :, z])
  np.save(tmp_path / 'scan.npy', image[:, :, 3])
  np.save(tmp_path / 'scan_mask.npy', seg[:, :, 3].astype(np.float32))
  cases = sources.discover_cases(str(tmp_path))
  assert [c.case_id for c in cases] == ['P_01', 'scan']
  vol = sources.load_case(cases[0], ALL)
  np.testing.assert_array_equal(vol.image, image)
  vol = sources.load_case(cases[1], ALL)
  assert vol.image.shape == (24, 20, 1, 4)
  np.testing.assert_array_equal(vol.image[:, :, 0], image[:, :, 3])
  np.testing.assert_array_equal(vol.label[:, :, 0], seg[:, :, 3])


def test_binary_labels_one_channel_and_no_masks(tmp_path):
  image, seg = synthetic_case(8, channels=1)
  (tmp_path / 'images').mkdir()
  for z in range(N):
    np.save(tmp_path / 'images' / f'c_{z}.npy', image[:, :, z, 0])  # (H, W)
  (tmp_path / 'npy_dataset.json').write_text(json.dumps({
      'channels': ['flair'], 'labels': {'0': 'background', '1': 'tumour'}}))
  (case,) = sources.discover_cases(str(tmp_path))
  assert case.label is None
  assert case.scheme.values == (0, 1) and case.scheme.binary
  vol = sources.load_case(case, ['flair'])
  assert vol.label is None
  np.testing.assert_array_equal(vol.image, image)
  (tmp_path / 'masks').mkdir()
  for z in range(N):
    np.save(tmp_path / 'masks' / f'c_{z}.npy', (seg[:, :, z] > 0))   # bool
  (case,) = sources.discover_cases(str(tmp_path))
  np.testing.assert_array_equal(sources.load_case(case, ['flair']).label,
                                seg > 0)
  # A BraTS value in a binary set is an error naming the mask.
  np.save(tmp_path / 'masks' / 'c_5.npy', seg[:, :, 5])
  with pytest.raises(InputError) as e:
    sources.load_case(case, ['flair'])
  assert e.value.where == str(tmp_path / 'masks' / 'c_5.npy')
  assert '(0, 1)' in e.value.problem


def test_binary_masks_are_a_subset_of_the_default_labels(tmp_path):
  image, seg = synthetic_case(9)
  write_paired(tmp_path, {'b': (image, (seg > 0).astype(np.uint8))})
  (case,) = sources.discover_cases(str(tmp_path))
  assert case.scheme.values == (0, 1, 2, 4) and case.scheme.enhancing == 4
  np.testing.assert_array_equal(sources.load_case(case, ALL).label, seg > 0)


def test_decathlon_label_names_are_mapped_to_brats(tmp_path):
  """Task01 order (1 oedema, 2 non-enhancing, 3 enhancing) -> BraTS 2, 1, 4."""
  image, seg = synthetic_case(10)
  decathlon = np.select([seg == 2, seg == 1, seg == 4], [1, 2, 3], 0)
  write_paired(tmp_path, {'d': (image, decathlon.astype(np.uint8))})
  (tmp_path / 'npy_dataset.json').write_text(json.dumps({'labels': {
      '0': 'background', '1': 'edema', '2': 'non-enhancing tumor',
      '3': 'enhancing tumour'}}))
  (case,) = sources.discover_cases(str(tmp_path))
  assert case.scheme.values == (0, 1, 2, 4) and case.scheme.enhancing == 4
  np.testing.assert_array_equal(sources.load_case(case, ALL).label, seg)


# ------------------------------------------------------------------ bad input


@pytest.fixture
def paired(tmp_path):
  image, seg = synthetic_case(11)
  write_paired(tmp_path, {'P': (image, seg)})
  return tmp_path


def raises_naming(path, fn, *args):
  with pytest.raises(InputError) as e:
    fn(*args)
  assert e.value.where == str(path), e.value
  return e.value.problem


def only_case(root):
  (case,) = sources.discover_cases(str(root))
  return case


@pytest.mark.parametrize('damage', ['object_array', 'pickle', 'truncated',
                                    'junk', 'npz'])
def test_unreadable_npy(paired, damage):
  bad = paired / 'images' / f'P_{FIRST + 2}.npy'
  if damage == 'object_array':
    np.save(bad, np.array([{'a': 1}], dtype=object), allow_pickle=True)
  elif damage == 'pickle':
    bad.write_bytes(pickle.dumps(np.zeros((24, 20, 4))))
  elif damage == 'truncated':
    bad.write_bytes(bad.read_bytes()[:300])
  elif damage == 'junk':
    bad.write_bytes(b'\x93NUMPY garbage')
  else:
    with open(bad, 'wb') as f:
      np.savez(f, x=np.zeros((24, 20, 4)))
  case = only_case(paired)
  raises_naming(bad, sources.load_case, case, ALL)
  raises_naming(bad, sources.check_case, case, ALL)


@pytest.mark.parametrize('shape, hint', [((24, 20, 3), ''),
                                         ((4, 24, 20), 'channels-first'),
                                         ((24, 20), ''),
                                         ((24, 20, 1, 4), '')])
def test_wrong_channel_count_or_shape(paired, shape, hint):
  bad = paired / 'images' / f'P_{FIRST + 4}.npy'
  np.save(bad, np.ones(shape, np.float32))
  case = only_case(paired)
  problem = raises_naming(bad, sources.load_case, case, ALL)
  assert '(H, W, 4)' in problem and hint in problem
  raises_naming(bad, sources.check_case, case, ALL)


def test_missing_mask_and_mask_without_image(paired):
  mask = paired / 'masks' / f'P_{FIRST + 1}.npy'
  mask.rename(paired / 'masks' / 'Q_1.npy')
  raises_naming(paired / 'masks' / 'Q_1.npy', sources.discover_cases,
                str(paired))
  (paired / 'masks' / 'Q_1.npy').unlink()
  problem = raises_naming(paired / 'images' / f'P_{FIRST + 1}.npy',
                          sources.discover_cases, str(paired))
  assert 'no mask' in problem


@pytest.mark.parametrize('which', ['images', 'masks'])
def test_slices_of_different_sizes(paired, which):
  bad = paired / which / f'P_{FIRST + 6}.npy'
  np.save(bad, np.zeros((24, 22, 4) if which == 'images' else (24, 22),
                        np.float32))
  case = only_case(paired)
  assert 'differs' in raises_naming(bad, sources.load_case, case, ALL)
  assert 'differs' in raises_naming(bad, sources.check_case, case, ALL)


def test_nan_image_and_fractional_mask(paired):
  bad = paired / 'images' / f'P_{FIRST}.npy'
  data = np.load(bad)
  data[3, 3, 1] = np.nan
  np.save(bad, data)
  case = only_case(paired)
  assert 'NaN' in raises_naming(bad, sources.load_case, case, ALL)
  np.save(bad, np.nan_to_num(data))
  mask = paired / 'masks' / f'P_{FIRST + 3}.npy'
  np.save(mask, np.full((24, 20), 0.5, np.float32))
  assert 'non-integer' in raises_naming(mask, sources.load_case, case, ALL)


def test_duplicate_slice_index_and_bad_config(paired):
  np.save(paired / 'images' / f'P_0{FIRST}.npy', np.zeros((24, 20, 4)))
  np.save(paired / 'masks' / f'P_0{FIRST}.npy', np.zeros((24, 20)))
  problem = raises_naming(paired / 'images' / f'P_{FIRST}.npy',
                          sources.discover_cases, str(paired))
  assert f'slice {FIRST}' in problem
  for name in (f'P_0{FIRST}.npy',):
    (paired / 'images' / name).unlink()
    (paired / 'masks' / name).unlink()
  config = paired / 'npy_dataset.json'
  for text in ('{"channels": ', '{"channels": ["flair", "FLAIR"]}',
               '{"channels": []}', '{"labels": {"x": "bg"}}'):
    config.write_text(text)
    raises_naming(config, sources.discover_cases, str(paired))


def test_detect(tmp_path):
  assert not npy_slices.detect(str(tmp_path))
  if DATA.is_dir():
    assert not npy_slices.detect(str(DATA / 'tcga_4mod'))
  (tmp_path / 'a').mkdir()
  np.save(tmp_path / 'a' / 'x_1.npy', np.zeros((2, 2, 4)))
  assert npy_slices.detect(str(tmp_path))


# --------------------------------------------------------------- end to end


@pytest.mark.parametrize('label_mode, channels', [('binary', 1),
                                                  ('regions', 3)])
def test_prepare_split_accepts_npy_cases(tmp_path, request, label_mode,
                                         channels):
  """The real crops where present, else the synthetic cases."""
  cases = request.getfixturevalue('tcga') if DATA.is_dir() else synthetic_set()
  write_paired(tmp_path, cases)
  found = sources.discover_cases(str(tmp_path))
  split = pipeline.prepare_split(
      found, modalities=ALL, image_size=32, label_mode=label_mode,
      background_ratio=1.0, min_brain_fraction=0.0, seed=0, dims=2, depth=None)
  assert split.images.shape == (2 * N, 32, 32, 4)
  assert split.targets.shape == (2 * N, 32, 32, channels)
  assert split.slices == [(c.case_id, z) for c in found for z in range(N)]
  assert split.targets[..., 0].any()
