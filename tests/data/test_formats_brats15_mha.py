"""BraTS 2015 MetaImage reader (seed 000): .mha files written by SimpleITK.

Real cases are made the way the release was: crops of tcga_4mod NIfTI
volumes (nibabel's `slicer`, which keeps the crop's affine) converted to .mha
with SimpleITK (ReadImage of the .nii.gz, WriteImage .mha: ITK carries the
geometry over). The reader's arrays and affine are compared with nibabel's
for the original NIfTI crop (images and labels exact, affine atol 1e-4). A
synthetic case with an oblique, anisotropic grid covers the same without the
data. The label convention is checked on a hand-made label.
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from jaxseg.data import pipeline
from jaxseg.data import sources
from jaxseg.data.formats import brats15_mha
from jaxseg.errors import InputError

from conftest import SAMPLE_DATA

sitk = pytest.importorskip('SimpleITK')

DATA = SAMPLE_DATA
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f'real BraTS sample data not found at {DATA} (set JAXSEG_DATA)')
MODS = ('flair', 't1', 't1ce', 't2')
SEQUENCES = {'flair': 'MR_Flair', 't1': 'MR_T1', 't1ce': 'MR_T1c',
             't2': 'MR_T2'}
AFFINE_ATOL = 1e-4


# ------------------------------------------------------------------ writers


def nifti_to_mha(nii, mha):
  """What a BraTS 2015 file is to ITK: the NIfTI's voxels and geometry."""
  image = sitk.ReadImage(str(nii))
  for key in image.GetMetaDataKeys():     # NIfTI header fields: not MetaIO's
    image.EraseMetaData(key)
  sitk.WriteImage(image, str(mha), useCompression=True)


def vsd_folder(case_dir, kind, number, brain='VSD.Brain', flat=False):
  """The .mha path of one VSD volume: in its own folder, or (flat) directly
  in the case folder, as public copies of the set store them."""
  name = f'{brain}.XX.O.{kind}.{number}'
  if flat:
    Path(case_dir).mkdir(parents=True, exist_ok=True)
    return Path(case_dir) / f'{name}.mha'
  folder = Path(case_dir) / name
  folder.mkdir(parents=True)
  return folder / f'{folder.name}.mha'


def write_case(case_dir, niftis, label_nii=None, label_brain='VSD.Brain_3more',
               number=54512, flat=False):
  """BraTS 2015 case folder from NIfTI files: {modality: .nii.gz}, label."""
  paths = {}
  for i, (m, nii) in enumerate(sorted(niftis.items())):
    paths[m] = vsd_folder(case_dir, SEQUENCES[m], number + i, flat=flat)
    nifti_to_mha(nii, paths[m])
  if label_nii is not None:
    paths['seg'] = vsd_folder(case_dir, 'OT', number + 5, label_brain,
                              flat=flat)
    nifti_to_mha(label_nii, paths['seg'])
  return paths


def to_2015(seg, seed):
  """Writes some NCR/NET (1) voxels as non-enhancing (3), as 2015 labelled."""
  disk = seg.copy()
  core = np.argwhere(seg == 1)
  pick = np.random.default_rng(seed).random(len(core)) < 0.5
  disk[tuple(core[pick].T)] = 3
  return disk


def save_case_niftis(folder, images, seg, affine):
  """{modality: path}, label path: the NIfTI files a case is converted from."""
  folder.mkdir(parents=True)
  niftis = {}
  for c, m in enumerate(MODS):
    niftis[m] = folder / f'{m}.nii.gz'
    nib.save(nib.Nifti1Image(images[..., c], affine), niftis[m])
  label = folder / 'seg.nii.gz'
  nib.save(nib.Nifti1Image(seg, affine), label)
  return niftis, label


@pytest.fixture(scope='module')
def tcga(tmp_path_factory):
  """The two real cases as NIfTI crops: {name: (images, seg, affine, files)}.

  images int16 (x, y, z, 4) and seg uint8 (0, 1, 2, 4) are nibabel's arrays
  of the crop; files: NIfTI paths with the seg written in the 2015 convention.
  """
  if not DATA.is_dir():
    pytest.skip(f'real BraTS sample data not found at {DATA} (set JAXSEG_DATA)')
  base = tmp_path_factory.mktemp('tcga_crops')
  out = {}
  for n, folder in enumerate(sorted((DATA / 'tcga_4mod').iterdir())):
    seg_img = nib.load(folder / f'{folder.name}_seg.nii.gz')
    seg = np.asanyarray(seg_img.dataobj)
    cx, cy, cz = (int(v) for v in np.argwhere(seg > 0).mean(axis=0))
    box = (slice(cx - 20, cx + 20), slice(cy - 18, cy + 18),
           slice(cz - 5, cz + 5))
    images, files = [], {}
    for m in MODS:
      img = nib.load(folder / f'{folder.name}_{m}.nii.gz').slicer[box]
      files[m] = base / f'{folder.name}_{m}.nii.gz'
      nib.save(img, files[m])
      images.append(np.asanyarray(nib.load(files[m]).dataobj))
    seg_crop = seg_img.slicer[box]
    seg = np.asanyarray(seg_crop.dataobj).astype(np.uint8)
    label = base / f'{folder.name}_seg2015.nii.gz'
    nib.save(nib.Nifti1Image(to_2015(seg, n), seg_crop.affine,
                             seg_crop.header), label)
    affine = nib.load(files['flair']).affine
    out[folder.name] = (np.stack(images, -1), seg, affine, (files, label))
  return out


def synthetic_niftis(tmp_path, seed=0, shape=(14, 12, 6)):
  """A case on an oblique, anisotropic grid: (images, seg, affine, files)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(-50, 1000, shape + (4,)).astype(np.int16)
  seg = np.zeros(shape, np.uint8)
  seg[3:10, 2:9, 1:5] = 2
  seg[5:9, 4:8, 2:4] = 1
  seg[6:8, 5:7, 2:4] = 4
  disk = to_2015(seg, seed)
  angle = 0.3 + 0.1 * seed
  rot = np.array([[np.cos(angle), -np.sin(angle), 0],
                  [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]])
  tilt = np.array([[1.0, 0, 0], [0, np.cos(0.2), -np.sin(0.2)],
                   [0, np.sin(0.2), np.cos(0.2)]])
  affine = np.eye(4)
  affine[:3, :3] = rot @ tilt @ np.diag([0.9, 1.2, 2.5])
  affine[:3, 3] = [-30.5, 12.25, 7.0]
  folder = tmp_path / f'nifti{seed}'
  niftis, label = save_case_niftis(folder, images, disk, affine)
  return images, seg, nib.load(label).affine, (niftis, label)


def write_set(root, cases):
  """HGG/ and LGG/ holding the cases under ONE folder name (as the release
  repeats names across grades); returns {expected case id: case}."""
  expected = {}
  for (name, case), grade in zip(sorted(cases.items()), ('HGG', 'LGG')):
    files, label = case[3]
    folder = Path(root) / grade / 'brats_tcia_pat101_1'
    brain = 'VSD.Brain_3more' if grade == 'HGG' else 'VSD.Brain'
    write_case(folder, files, label, brain)
    expected[f'{grade}_brats_tcia_pat101_1'] = case
  return expected


def check_read_back(root, expected):
  cases = sources.discover_cases(str(root))
  assert [c.case_id for c in cases] == sorted(expected)
  for case in cases:
    images, seg, affine, _ = expected[case.case_id]
    assert case.reader == 'brats15_mha' and case.split is None
    assert list(case.images) == list(MODS)
    assert case.scheme.values == (0, 1, 2, 4) and case.scheme.enhancing == 4
    assert case.label_map == ((0, 0), (1, 1), (2, 2), (3, 1), (4, 4))
    assert Path(case.label).parent.name.split('.')[-2] == 'OT'
    assert sources.check_case(case, MODS) == seg.shape
    vol = sources.load_case(case, MODS)
    assert vol.image.dtype == np.float32 and vol.label.dtype == np.uint8
    assert vol.image.shape == seg.shape + (4,)
    np.testing.assert_array_equal(vol.image, images.astype(np.float32))
    np.testing.assert_array_equal(vol.label, seg)
    np.testing.assert_allclose(vol.affine, affine, atol=AFFINE_ATOL, rtol=0)
    assert vol.header is None and vol.modalities == MODS
    vol = sources.load_case(case, ['T2', 't1c'])   # in the requested order
    assert vol.modalities == ('t2', 't1ce')
    np.testing.assert_array_equal(vol.image, images[..., [3, 2]])
  return cases


# ------------------------------------------------------------------ reading


@needs_data
def test_real_cases_match_nibabel_from_every_root(tmp_path, tcga):
  training = tmp_path / 'BRATS2015_Training'
  expected = write_set(training, tcga)
  assert any((seg == 1).any() for _, seg, _, _ in tcga.values())
  cases = check_read_back(training, expected)
  for grade in ('HGG', 'LGG'):         # one grade folder: the same ids
    check_read_back(training / grade, {
        k: v for k, v in expected.items() if k.startswith(grade)})
  (case,) = sources.discover_cases(str(cases[0].source))   # one case folder
  assert case.case_id == cases[0].case_id
  # A prediction written with the affine lands on the original voxels.
  name, (_, seg, _, _) = next((n, v) for n, v in sorted(tcga.items()))
  vol = sources.load_case(cases[0], MODS)
  out = tmp_path / f'{vol.case_id}_seg.nii.gz'
  nib.save(nib.Nifti1Image(vol.label, vol.affine), out)
  original = nib.load(DATA / 'tcga_4mod' / name / f'{name}_seg.nii.gz')
  world = nib.load(out).affine @ [0, 0, 0, 1]
  corner = np.linalg.solve(original.affine, world)[:3]
  np.testing.assert_allclose(corner, np.rint(corner), atol=AFFINE_ATOL)
  i, j, k = np.rint(corner).astype(int)
  np.testing.assert_array_equal(
      np.asanyarray(original.dataobj)[i:i + seg.shape[0], j:j + seg.shape[1],
                                      k:k + seg.shape[2]], vol.label)


def test_synthetic_oblique_cases_match_nibabel(tmp_path):
  cases = {f'c{s}': synthetic_niftis(tmp_path, seed=s) for s in range(2)}
  expected = write_set(tmp_path / 'train', cases)
  check_read_back(tmp_path / 'train', expected)
  # The grid is oblique and anisotropic: the affine is not a flipped diagonal.
  affine = next(iter(cases.values()))[2]
  assert abs(affine[0, 1]) > 0.1 and abs(affine[1, 2]) > 0.1


def test_flat_case_folders_read_as_the_release_layout(tmp_path):
  """.mha files directly in brats_*/ (no VSD subfolders) are found and read."""
  images, seg, affine, (niftis, label) = synthetic_niftis(tmp_path, seed=3)
  root = tmp_path / 'flat' / 'HGG'
  write_case(root / 'brats_2013_pat0001_1', niftis, label, flat=True)
  assert not [p for p in (root / 'brats_2013_pat0001_1').iterdir() if p.is_dir()]
  for where in (tmp_path / 'flat', root, root / 'brats_2013_pat0001_1'):
    (case,) = sources.discover_cases(str(where))
    assert case.case_id == 'HGG_brats_2013_pat0001_1'
    assert case.reader == 'brats15_mha' and list(case.images) == list(MODS)
    assert Path(case.label).name.startswith('VSD.Brain_3more.XX.O.OT.')
  vol = sources.load_case(case, MODS)
  np.testing.assert_array_equal(vol.image, images.astype(np.float32))
  np.testing.assert_array_equal(vol.label, seg)
  np.testing.assert_allclose(vol.affine, affine, atol=AFFINE_ATOL, rtol=0)


def test_label_convention_on_hand_made_label(tmp_path):
  """Disk 0..4 -> (0, 1, 2, 1, 4); regions equal those of the 2015 values."""
  disk = np.array([0, 1, 2, 3, 4, 3, 2, 1, 0, 4, 3, 0], np.uint8)
  disk = disk.reshape(3, 2, 2)               # (x, y, z)
  image = np.arange(disk.size, dtype=np.int16).reshape(disk.shape)
  case_dir = tmp_path / 'HGG' / 'brats_2013_pat0001_1'
  for kind, data in (('MR_Flair', image), ('OT', disk)):
    out = sitk.GetImageFromArray(data.transpose(2, 1, 0))   # sitk: (z, y, x)
    sitk.WriteImage(out, str(vsd_folder(case_dir, kind, 7)))
  (case,) = sources.discover_cases(str(tmp_path))
  assert case.case_id == 'HGG_brats_2013_pat0001_1'
  assert list(case.images) == ['flair']
  vol = sources.load_case(case, ['flair'])
  np.testing.assert_array_equal(vol.image[..., 0], image)
  by_hand = {0: 0, 1: 1, 2: 2, 3: 1, 4: 4}
  np.testing.assert_array_equal(vol.label, np.vectorize(by_hand.get)(disk))
  regions = case.scheme.targets(vol.label, 'regions')
  for c, region in enumerate(({1, 2, 3, 4}, {1, 3, 4}, {4})):  # WT, TC, ET
    np.testing.assert_array_equal(regions[..., c],
                                  np.isin(disk, sorted(region)))
  np.testing.assert_array_equal(vol.image.shape[:3], disk.shape)
  # Back to disk: the merged core is written as 1.
  np.testing.assert_array_equal(case.to_disk(vol.label),
                                np.where(disk == 3, 1, disk))


def test_testing_set_is_unlabelled_and_ids_keep_the_grade(tmp_path):
  images, _, affine, (files, _) = synthetic_niftis(tmp_path, seed=3)
  testing = tmp_path / 'Testing'
  write_case(testing / 'HGG_LGG' / 'brats_2013_pat0103_1', files)
  for root in (testing, testing / 'HGG_LGG',
               testing / 'HGG_LGG' / 'brats_2013_pat0103_1'):
    (case,) = sources.discover_cases(str(root))
    assert case.case_id == 'HGG_LGG_brats_2013_pat0103_1'
    assert case.label is None
    vol = sources.load_case(case, MODS)
    assert vol.label is None
    np.testing.assert_array_equal(vol.image, images)
    np.testing.assert_allclose(vol.affine, affine, atol=AFFINE_ATOL, rtol=0)
  # A plain folder of cases: the folder name is the id.
  plain = tmp_path / 'cases'
  write_case(plain / 'brats_x_1', files)
  (case,) = sources.discover_cases(str(plain))
  assert case.case_id == 'brats_x_1'


def test_detect(tmp_path):
  assert not brats15_mha.detect(str(tmp_path))
  _, _, _, (files, label) = synthetic_niftis(tmp_path, seed=4)
  deep = tmp_path / 'a' / 'BRATS2015_Training' / 'HGG' / 'brats_1'
  write_case(deep, {'flair': files['flair']}, label)
  for level in (deep, deep.parent, deep.parents[1]):
    assert brats15_mha.detect(str(level))
  assert not brats15_mha.detect(str(deep.parents[2]))   # three levels down
  only_ot = tmp_path / 'ot' / 'brats_2'
  write_case(only_ot, {}, label)
  assert not brats15_mha.detect(str(only_ot.parent))
  if DATA.is_dir():
    for name in ('tcga_4mod', 'brats18_wt', 'brats23_unlabeled'):
      assert not brats15_mha.detect(str(DATA / name))


def test_missing_simpleitk_names_the_extra(tmp_path, monkeypatch):
  _, _, _, (files, label) = synthetic_niftis(tmp_path, seed=5)
  write_case(tmp_path / 'HGG' / 'brats_1', files, label)
  monkeypatch.setitem(sys.modules, 'SimpleITK', None)   # import fails
  (case,) = sources.discover_cases(str(tmp_path))        # needs no SimpleITK
  with pytest.raises(InputError) as e:
    sources.load_case(case, MODS)
  assert "jaxseg[formats]" in e.value.problem and 'SimpleITK' in e.value.problem


# ---------------------------------------------------------------- bad input


@pytest.fixture
def one_case(tmp_path):
  """(root, {modality or 'seg': .mha path}) of one synthetic case."""
  _, _, _, (files, label) = synthetic_niftis(tmp_path, seed=6)
  paths = write_case(tmp_path / 'set' / 'HGG' / 'brats_1', files, label)
  return tmp_path / 'set', paths


def raises_naming(path, fn, *args):
  with pytest.raises(InputError) as e:
    fn(*args)
  assert e.value.where == str(path), e.value
  return e.value.problem


def only_case(root):
  (case,) = sources.discover_cases(str(root))
  return case


@pytest.mark.parametrize('damage', ['junk', 'empty', 'header_only',
                                    'truncated'])
@pytest.mark.parametrize('which', ['t1', 'seg'])
def test_corrupt_mha(one_case, damage, which):
  root, paths = one_case
  bad = paths[which]
  data = bad.read_bytes()
  header = data.index(b'ElementDataFile')
  bad.write_bytes({'junk': b'not an image' * 40, 'empty': b'',
                   'header_only': data[:header // 2],
                   'truncated': data[:len(data) - 200]}[damage])
  case = only_case(root)
  assert 'cannot read MetaImage' in raises_naming(bad, sources.load_case,
                                                  case, MODS)
  if damage != 'truncated':      # a header-only check cannot see the voxels
    raises_naming(bad, sources.check_case, case, MODS)


def rewrite(path, like, **change):
  """Rewrites the .mha `path` on the grid of `like`, with one field changed."""
  image = sitk.ReadImage(str(like))
  if 'size' in change:
    image = image[:change.pop('size')]
  for key, value in change.items():
    getattr(image, 'Set' + key.capitalize())(value)
  sitk.WriteImage(image, str(path), useCompression=True)


@pytest.mark.parametrize('which', ['t2', 'seg'])
@pytest.mark.parametrize('field', ['size', 'spacing', 'origin', 'direction'])
def test_channels_and_label_share_one_grid(one_case, which, field):
  root, paths = one_case
  image = sitk.ReadImage(str(paths[which]))
  change = dict(size=-1, spacing=(1.0, 1.0, 1.0),
                origin=tuple(np.add(image.GetOrigin(), (0, 0.5, 0))),
                direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))[field]
  rewrite(paths[which], paths[which], **{field: change})
  case = only_case(root)
  for fn in (sources.check_case, sources.load_case):
    problem = raises_naming(paths[which], fn, case, MODS)
    assert field in problem and str(paths['flair']) in problem


def test_nan_voxel(one_case):
  root, paths = one_case
  image = sitk.ReadImage(str(paths['t1ce']), sitk.sitkFloat32)
  image[2, 3, 1] = float('nan')
  sitk.WriteImage(image, str(paths['t1ce']))
  problem = raises_naming(paths['t1ce'], sources.load_case, only_case(root),
                          MODS)
  assert 'NaN' in problem


def test_label_value_outside_0_to_4(one_case):
  root, paths = one_case
  label = sitk.ReadImage(str(paths['seg']))
  label[1, 1, 1] = 5
  sitk.WriteImage(label, str(paths['seg']))
  problem = raises_naming(paths['seg'], sources.load_case, only_case(root),
                          MODS)
  assert '[5]' in problem and '(0, 1, 2, 3, 4)' in problem


def test_not_a_3d_scalar_volume(one_case):
  root, paths = one_case
  flat = sitk.GetImageFromArray(np.zeros((12, 14), np.int16))
  sitk.WriteImage(flat, str(paths['flair']))
  case = only_case(root)
  assert '3D' in raises_naming(paths['flair'], sources.check_case, case, MODS)
  rgb = sitk.GetImageFromArray(np.zeros((6, 12, 14, 3), np.uint8),
                               isVector=True)
  sitk.WriteImage(rgb, str(paths['flair']))
  assert 'components' in raises_naming(paths['flair'], sources.load_case,
                                       case, MODS)


def test_folder_problems_name_the_folder(one_case):
  root, paths = one_case
  case_dir = paths['t1'].parents[1]
  extra = case_dir / 'VSD.Brain.XX.O.MR_T1.99999'
  extra.mkdir()
  problem = raises_naming(case_dir, sources.discover_cases, str(root))
  assert "two 't1' volumes" in problem
  extra.rmdir()
  paths['t2'].unlink()                                    # VSD folder, no .mha
  problem = raises_naming(paths['t2'].parent, sources.discover_cases,
                          str(root))
  assert 'no .mha' in problem
  (paths['t2'].parent / 'a.mha').write_bytes(b'')
  (paths['t2'].parent / 'b.mha').write_bytes(b'')
  assert 'several' in raises_naming(paths['t2'].parent,
                                    sources.discover_cases, str(root))


def test_missing_file_after_discovery(one_case):
  root, paths = one_case
  case = only_case(root)
  paths['seg'].unlink()
  problem = raises_naming(paths['seg'], sources.check_case, case, MODS)
  assert 'does not exist' in problem


# --------------------------------------------------------------- end to end


def test_prepare_split_accepts_brats15_cases(tmp_path, request):
  """The real crops where present, else synthetic cases."""
  if DATA.is_dir():
    cases = request.getfixturevalue('tcga')
  else:
    cases = {f'c{s}': synthetic_niftis(tmp_path, seed=s) for s in (7, 8)}
  expected = write_set(tmp_path / 'train', cases)
  found = sources.discover_cases(str(tmp_path / 'train'))
  split = pipeline.prepare_split(
      found, modalities=MODS, image_size=32, label_mode='binary',
      background_ratio=1.0, min_brain_fraction=0.0, seed=0, dims=2,
      depth=None)
  depths = [expected[c.case_id][1].shape[2] for c in found]
  assert split.images.shape == (sum(depths), 32, 32, 4)
  assert split.targets.shape == (sum(depths), 32, 32, 1)
  assert split.slices == [(c.case_id, z) for c, d in zip(found, depths)
                          for z in range(d)]
  assert set(np.unique(split.targets)) == {0, 1}
