"""The Medical Segmentation Decathlon's Task01_BrainTumour layout.

    Task01_BrainTumour/dataset.json
    Task01_BrainTumour/imagesTr/BRATS_001.nii.gz   4D (H, W, D, 4): FLAIR, T1w, t1gd, T2w
    Task01_BrainTumour/labelsTr/BRATS_001.nii.gz   1 oedema, 2 non-enhancing, 3 enhancing
    Task01_BrainTumour/imagesTs/BRATS_485.nii.gz

Files are written here in that layout from the real BraTS 2019-named cases
(labels converted BraTS -> Decathlon by hand: 2 -> 1, 1 -> 2, 4 -> 3) and read
back: the channels and regions must equal those of the BraTS folders.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from jaxseg import labels
from jaxseg.data import sources
from jaxseg.errors import InputError

from conftest import SAMPLE_DATA

DATA = SAMPLE_DATA
ALL = ('flair', 't1', 't1ce', 't2')
# dataset.json of Task01_BrainTumour, as distributed.
HEADER = {
    'name': 'BRATS', 'tensorImageSize': '4D',
    'modality': {'0': 'FLAIR', '1': 'T1w', '2': 't1gd', '3': 'T2w'},
    'labels': {'0': 'background', '1': 'edema', '2': 'non-enhancing tumor',
               '3': 'enhancing tumour'},
}
BRATS_TO_DECATHLON = {0: 0, 1: 2, 2: 1, 4: 3}


def _brats_cases():
  """Real cases (cropped around the tumour) or synthetic ones without the data."""
  if DATA.is_dir():
    out = []
    for case in sources.discover_cases(str(DATA / 'tcga_4mod')):
      vol = sources.load_case(case, ALL)
      box = tuple(slice(a, a + 40) for a in (90, 90, 60))
      out.append((case.case_id, vol.image[box], vol.label[box], vol.affine))
    return out
  rng = np.random.default_rng(0)
  label = rng.choice([0, 1, 2, 4], size=(20, 18, 16)).astype(np.uint8)
  image = rng.normal(size=(20, 18, 16, 4)).astype(np.float32)
  return [('SYN-1', image, label, np.diag([1.0, 1.0, 1.0, 1.0]))]


def _decathlon(root: Path, cases, test_case=True) -> Path:
  task = root / 'Task01_BrainTumour'
  for sub in ('imagesTr', 'labelsTr', 'imagesTs'):
    (task / sub).mkdir(parents=True)
  training = []
  for i, (_, image, label, affine) in enumerate(cases):
    name = f'BRATS_{i + 1:03d}.nii.gz'
    nib.save(nib.Nifti1Image(image, affine), task / 'imagesTr' / name)
    dec = np.zeros_like(label)
    for brats, value in BRATS_TO_DECATHLON.items():
      dec[label == brats] = value
    nib.save(nib.Nifti1Image(dec, affine), task / 'labelsTr' / name)
    training.append({'image': f'./imagesTr/{name}',
                     'label': f'./labelsTr/{name}'})
  test = []
  if test_case:
    nib.save(nib.Nifti1Image(cases[0][1], cases[0][3]),
             task / 'imagesTs' / 'BRATS_485.nii.gz')
    test = ['./imagesTs/BRATS_485.nii.gz']
  info = dict(HEADER, numTraining=len(training), numTest=len(test),
              training=training, test=test)
  (task / 'dataset.json').write_text(json.dumps(info, indent=2))
  return task


@pytest.mark.slow
def test_reads_channels_and_maps_labels_to_brats(tmp_path):
  cases = _brats_cases()
  task = _decathlon(tmp_path, cases)
  found = sources.discover_cases(str(task))
  assert [c.case_id for c in found] == (
      [f'BRATS_{i + 1:03d}' for i in range(len(cases))] + ['BRATS_485'])
  assert [c.split for c in found] == ['training'] * len(cases) + ['test']
  for case, (_, image, label, affine) in zip(found, cases):
    assert case.scheme.values == (0, 1, 2, 4) and case.scheme.enhancing == 4
    # Ask for the channels in another order than the file's.
    vol = sources.load_case(case, ('t2', 'FLAIR', 't1gd', 'T1'))
    np.testing.assert_array_equal(vol.image, image[..., [3, 0, 2, 1]])
    np.testing.assert_array_equal(vol.label, label)
    np.testing.assert_allclose(vol.affine, affine)
    # Regions from the Decathlon's own definitions on the file's values:
    # WT = {1, 2, 3}, TC = {2, 3}, ET = {3}.
    dec = np.asarray(nib.load(case.label).dataobj)
    regions = labels.BRATS.regions(vol.label)
    np.testing.assert_array_equal(regions[..., 0], dec > 0)
    np.testing.assert_array_equal(regions[..., 1], (dec == 2) | (dec == 3))
    np.testing.assert_array_equal(regions[..., 2], dec == 3)
    # Predictions are written back in the Decathlon's values.
    np.testing.assert_array_equal(case.to_disk(vol.label), dec)
  unlabelled = found[-1]
  assert unlabelled.label is None
  assert sources.load_case(unlabelled, ALL).image.shape == cases[0][1].shape


@pytest.mark.slow
def test_check_case_reads_headers_only(tmp_path):
  task = _decathlon(tmp_path, _brats_cases(), test_case=False)
  case = sources.discover_cases(str(task / 'dataset.json'))[0]
  assert sources.check_case(case, ALL) == _brats_cases()[0][2].shape


def test_three_channel_file_for_four_names_is_an_error(tmp_path):
  cases = _brats_cases()[:1]
  task = _decathlon(tmp_path, cases, test_case=False)
  path = task / 'imagesTr' / 'BRATS_001.nii.gz'
  nib.save(nib.Nifti1Image(cases[0][1][..., :3], cases[0][3]), path)
  case = sources.discover_cases(str(task))[0]
  with pytest.raises(InputError, match='3 channels') as e:
    sources.load_case(case, ALL)
  assert str(path) in str(e.value)


def test_3d_file_where_4d_is_listed_is_an_error(tmp_path):
  cases = _brats_cases()[:1]
  task = _decathlon(tmp_path, cases, test_case=False)
  path = task / 'imagesTr' / 'BRATS_001.nii.gz'
  nib.save(nib.Nifti1Image(cases[0][1][..., 0], cases[0][3]), path)
  case = sources.discover_cases(str(task))[0]
  with pytest.raises(InputError, match='4D'):
    sources.check_case(case, ALL)


def test_label_value_outside_the_decathlon_convention(tmp_path):
  cases = _brats_cases()[:1]
  task = _decathlon(tmp_path, cases, test_case=False)
  path = task / 'labelsTr' / 'BRATS_001.nii.gz'
  label = np.asarray(nib.load(path).dataobj).copy()
  label[0, 0, 0] = 4                    # a BraTS value in a Decathlon file
  nib.save(nib.Nifti1Image(label, cases[0][3]), path)
  case = sources.discover_cases(str(task))[0]
  with pytest.raises(InputError, match=r'\[4\] outside the convention '
                     r'\(0, 1, 2, 3\)'):
    sources.load_case(case, ALL)


def test_label_names_map_to_brats_values():
  conv = labels.from_names
  assert conv(HEADER['labels'], 'x') == (
      labels.BRATS, ((0, 0), (1, 2), (2, 1), (3, 4)))
  # BraTS 2017-21 and 2023+ conventions are kept as they are.
  assert conv({'0': 'background', '1': 'necrotic core', '2': 'edema',
               '4': 'enhancing'}, 'x') == (labels.BRATS, ())
  assert conv({'0': 'background', '1': 'NCR', '2': 'ED', '3': 'ET'},
              'x') == (labels.BRATS23, ())
  assert conv({'0': 'background', '1': 'tumour'}, 'x') == (labels.BINARY, ())
