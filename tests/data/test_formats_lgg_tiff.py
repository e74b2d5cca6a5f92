"""LGG Kaggle TIFF reader (seed 003): TIFFs written by tifffile, read back."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from jaxseg.data import pipeline
from jaxseg.data import sources
from jaxseg.data.formats import lgg_tiff
from jaxseg.errors import InputError

from conftest import SAMPLE_DATA

tifffile = pytest.importorskip('tifffile')

DATA = SAMPLE_DATA
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f'real BraTS sample data not found at {DATA} (set JAXSEG_DATA)')
RGB = ('t1', 'flair', 't1ce')    # the set's channel order: pre, FLAIR, post
N = 12                           # slices 1..12: numeric != lexical order


def write_patient(root, case_id, rgb, masks=None, numbers=None):
  """Writes `<root>/<case_id>/<case_id>_<n>.tif` (+ `_mask.tif`) per slice.

  rgb: uint8 (H, W, n, 3); masks: uint8 (H, W, n) or None.
  """
  folder = Path(root) / case_id
  folder.mkdir(parents=True, exist_ok=True)
  numbers = numbers or range(1, rgb.shape[2] + 1)
  for z, n in enumerate(numbers):
    tifffile.imwrite(folder / f'{case_id}_{n}.tif', rgb[:, :, z],
                     photometric='rgb')
    if masks is not None:
      tifffile.imwrite(folder / f'{case_id}_{n}_mask.tif', masks[:, :, z])
  return folder


def to_uint8(x):
  x = x.astype(np.float64)
  return np.rint((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)


def synthetic_patient(seed, shape=(24, 20)):
  """A disc 'brain' whose intensity encodes the slice number, and a tumour."""
  rng = np.random.default_rng(seed)
  h, w = shape
  yy, xx = np.mgrid[:h, :w]
  brain = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 2.2) ** 2
  rgb = rng.integers(1, 200, (h, w, N, 3)).astype(np.uint8)
  rgb[..., 1] = (np.arange(1, N + 1) * 20).astype(np.uint8)   # FLAIR = 20 n
  rgb[~brain] = 0
  seg = np.zeros((h, w, N), bool)
  seg[h // 3:h // 2, w // 3:w // 2, 3:9] = True
  return rgb, seg


@pytest.fixture(scope='module')
def tcga():
  """Two real patients as the LGG set stores them: uint8 RGB crops + seg."""
  if not DATA.is_dir():
    pytest.skip(f'real BraTS sample data not found at {DATA} (set JAXSEG_DATA)')
  out = {}
  for folder in sorted((DATA / 'tcga_4mod').iterdir()):
    seg = np.asanyarray(nib.load(folder / f'{folder.name}_seg.nii.gz').dataobj)
    cx, cy, cz = (int(v) for v in np.argwhere(seg > 0).mean(axis=0))
    box = (slice(cx - 20, cx + 20), slice(cy - 18, cy + 18),
           slice(cz - N // 2, cz + N // 2))
    rgb = np.stack([
        to_uint8(np.asanyarray(nib.load(
            folder / f'{folder.name}_{m}.nii.gz').dataobj)[box])
        for m in RGB], axis=-1)
    # The LGG naming: TCGA_<site>_<patient>_<date>.
    case_id = 'TCGA_' + folder.name[5:].replace('-', '_') + '_19990101'
    out[case_id] = (rgb, seg[box] > 0)
  return out


def write_set(root, patients):
  for case_id, (rgb, seg) in patients.items():
    write_patient(root, case_id, rgb, seg.astype(np.uint8) * 255)
  (Path(root) / 'data.csv').write_text('Patient,RNASeqCluster\nx,1\n')
  (Path(root) / 'README.md').write_text('LGG segmentation dataset\n')


def check_read_back(root, patients):
  cases = sources.discover_cases(str(root))
  assert [c.case_id for c in cases] == sorted(patients)
  for case in cases:
    rgb, seg = patients[case.case_id]
    assert case.reader == 'lgg_tiff'
    assert case.images == {m: case.source for m in RGB}
    assert case.channel_index == {'t1': 0, 'flair': 1, 't1ce': 2}
    assert case.label == case.source
    assert case.scheme.values == (0, 1) and case.scheme.binary
    assert case.label_map == ((0, 0), (255, 1))
    assert sources.check_case(case, RGB) == seg.shape
    vol = sources.load_case(case, RGB)
    assert vol.image.dtype == np.float32 and vol.label.dtype == np.uint8
    np.testing.assert_array_equal(vol.image, rgb.astype(np.float32))
    np.testing.assert_array_equal(vol.label, seg.astype(np.uint8))
    np.testing.assert_array_equal(vol.affine, np.eye(4))
    assert vol.header is None and vol.case_id == case.case_id
    assert vol.modalities == RGB
    # Channels follow the request.
    vol = sources.load_case(case, ['FLAIR', 't1c'])
    assert vol.modalities == ('flair', 't1ce')
    np.testing.assert_array_equal(vol.image, rgb[..., [1, 2]])
  return cases


@needs_data
def test_real_patients_read_back_from_each_root(tmp_path, tcga):
  write_set(tmp_path / 'kaggle_3m', tcga)
  for root in (tmp_path, tmp_path / 'kaggle_3m'):   # holding it, or itself
    check_read_back(root, tcga)
  write_set(tmp_path / 'lgg_patients', tcga)        # any folder of patients
  check_read_back(tmp_path / 'lgg_patients', tcga)
  assert all(seg.any() for _, seg in tcga.values())


def test_synthetic_patients_read_back_in_numeric_order(tmp_path):
  patients = {f'TCGA_XX_{i:04d}_20000101': synthetic_patient(i)
              for i in range(2)}
  write_set(tmp_path / 'kaggle_3m', patients)
  cases = check_read_back(tmp_path, patients)
  # The Kaggle archive also holds lgg-mri-segmentation/kaggle_3m.
  write_set(tmp_path / 'zip' / 'lgg-mri-segmentation' / 'kaggle_3m', patients)
  check_read_back(tmp_path / 'zip', patients)
  vol = sources.load_case(cases[0], ['flair'])
  flair = vol.image[..., 0].max(axis=(0, 1))
  np.testing.assert_array_equal(flair, 20 * np.arange(1, N + 1))
  lexical = sorted(range(1, N + 1), key=str)            # 1, 10, 11, 12, 2, ...
  assert not np.array_equal(flair, 20 * np.asarray(lexical))


def test_one_patient_folder_and_unlabelled_patient(tmp_path):
  rgb, _ = synthetic_patient(3)
  folder = write_patient(tmp_path, 'TCGA_ZZ_0001_20010101', rgb)
  for root in (tmp_path, folder):
    (case,) = sources.discover_cases(str(root))
    assert case.case_id == 'TCGA_ZZ_0001_20010101' and case.label is None
    vol = sources.load_case(case, RGB)
    assert vol.label is None
    np.testing.assert_array_equal(vol.image, rgb)


def test_lzw_compressed_tiffs_are_read_with_pillow(tmp_path):
  image_lib = pytest.importorskip('PIL.Image')
  rgb, seg = synthetic_patient(4)
  folder = tmp_path / 'TCGA_LZ_0001_20020202'
  folder.mkdir()
  for z in range(N):
    image_lib.fromarray(rgb[:, :, z]).save(
        folder / f'{folder.name}_{z + 1}.tif', compression='tiff_lzw')
    image_lib.fromarray(seg[:, :, z].astype(np.uint8) * 255).save(
        folder / f'{folder.name}_{z + 1}_mask.tif', compression='tiff_lzw')
  with tifffile.TiffFile(folder / f'{folder.name}_1.tif') as tif:
    assert tif.pages[0].compression == 5                  # LZW
  (case,) = sources.discover_cases(str(tmp_path))
  vol = sources.load_case(case, RGB)
  np.testing.assert_array_equal(vol.image, rgb)
  np.testing.assert_array_equal(vol.label, seg)


def test_detect_ignores_other_layouts(tmp_path):
  assert not lgg_tiff.detect(str(tmp_path))
  (tmp_path / 'Brats18_x').mkdir()
  (tmp_path / 'Brats18_x' / 'Brats18_x_flair.nii.gz').write_bytes(b'')
  (tmp_path / 'Brats18_x' / 'photo.tif').write_bytes(b'')
  assert not lgg_tiff.detect(str(tmp_path))
  if DATA.is_dir():
    assert not lgg_tiff.detect(str(DATA / 'tcga_4mod'))


# ------------------------------------------------------------------ bad input


@pytest.fixture
def patient(tmp_path):
  """One synthetic patient on disk: (root, folder, case id)."""
  rgb, seg = synthetic_patient(5)
  case_id = 'TCGA_BD_0001_20030303'
  folder = write_patient(tmp_path, case_id, rgb, seg.astype(np.uint8) * 255)
  return tmp_path, folder, case_id


def raises_naming(path, fn, *args):
  with pytest.raises(InputError) as e:
    fn(*args)
  assert e.value.where == str(path), e.value
  return e.value.problem


def only_case(root):
  (case,) = sources.discover_cases(str(root))
  return case


@pytest.mark.parametrize('damage', ['junk', 'truncated', 'empty'])
def test_corrupt_tiff(patient, damage):
  root, folder, case_id = patient
  bad = folder / f'{case_id}_3.tif'
  data = bad.read_bytes()
  bad.write_bytes({'junk': b'not a tiff' * 50, 'empty': b'',
                   'truncated': data[:len(data) // 2]}[damage])
  case = only_case(root)
  assert 'cannot read TIFF' in raises_naming(bad, sources.load_case, case, RGB)
  assert 'cannot read TIFF' in raises_naming(bad, sources.check_case, case, RGB)


def test_mask_value_outside_0_255(patient):
  root, folder, case_id = patient
  mask = folder / f'{case_id}_7_mask.tif'
  values = tifffile.imread(mask)
  values[0, :3] = [0, 128, 255]
  tifffile.imwrite(mask, values)
  problem = raises_naming(mask, sources.load_case, only_case(root), RGB)
  assert '128' in problem and '(0, 255)' in problem


def test_missing_mask_names_the_slice(patient):
  root, folder, case_id = patient
  (folder / f'{case_id}_5_mask.tif').unlink()
  problem = raises_naming(folder / f'{case_id}_5.tif', sources.discover_cases,
                          str(root))
  assert 'no mask' in problem


def test_mask_without_image_and_missing_slice(patient):
  root, folder, case_id = patient
  (folder / f'{case_id}_4.tif').unlink()
  raises_naming(folder / f'{case_id}_4_mask.tif', sources.discover_cases,
                str(root))
  (folder / f'{case_id}_4_mask.tif').unlink()             # a gap: 1-3, 5-12
  problem = raises_naming(folder / f'{case_id}_4.tif', sources.discover_cases,
                          str(root))
  assert 'missing' in problem


@pytest.mark.parametrize('which', ['image', 'mask'])
def test_slices_of_different_sizes(patient, which):
  root, folder, case_id = patient
  rgb, _ = synthetic_patient(6, shape=(24, 22))
  odd = folder / f'{case_id}_9.tif'
  if which == 'image':
    tifffile.imwrite(odd, rgb[:, :, 0], photometric='rgb')
  else:
    odd = folder / f'{case_id}_9_mask.tif'
    tifffile.imwrite(odd, np.zeros((24, 22), np.uint8))
  case = only_case(root)
  assert 'differs' in raises_naming(odd, sources.load_case, case, RGB)
  assert 'differs' in raises_naming(odd, sources.check_case, case, RGB)


def test_grey_slice_and_stray_tiff(patient):
  root, folder, case_id = patient
  grey = folder / f'{case_id}_2.tif'
  tifffile.imwrite(grey, np.zeros((24, 20), np.uint8))
  case = only_case(root)
  assert 'RGB' in raises_naming(grey, sources.load_case, case, RGB)
  assert 'RGB' in raises_naming(grey, sources.check_case, case, RGB)
  stray = folder / 'overview.tif'
  tifffile.imwrite(stray, np.zeros((4, 4), np.uint8))
  raises_naming(stray, sources.discover_cases, str(root))


# --------------------------------------------------------------- end to end


def test_prepare_split_accepts_lgg_cases(tmp_path, request):
  """The real crops where present, else the synthetic patients."""
  if DATA.is_dir():
    patients = request.getfixturevalue('tcga')
  else:
    patients = {f'TCGA_EE_{i:04d}_20040404': synthetic_patient(10 + i)
                for i in range(2)}
  write_set(tmp_path / 'kaggle_3m', patients)
  cases = sources.discover_cases(str(tmp_path))
  split = pipeline.prepare_split(
      cases, modalities=RGB, image_size=32, label_mode='binary',
      background_ratio=1.0, min_brain_fraction=0.0, seed=0, dims=2, depth=None)
  assert split.images.shape == (2 * N, 32, 32, 3)
  assert split.targets.shape == (2 * N, 32, 32, 1)
  assert split.slices == [(c.case_id, z) for c in cases for z in range(N)]
  assert set(np.unique(split.targets)) == {0, 1}
  # Every tumour slice is a record (background_ratio 1: as many others).
  tumour = [z for c in cases for z in range(N)
            if patients[c.case_id][1][:, :, z].any()]
  assert len(split.records) == min(2 * N, 2 * len(tumour))
