"""Seed 000's BraTS 2015: MetaImage (.mha) volumes in VSD folders.

Layout (the BRATS2015_Training / BRATS2015_Testing archives):

    <root>/HGG/brats_2013_pat0001_1/
        VSD.Brain.XX.O.MR_Flair.54512/VSD.Brain.XX.O.MR_Flair.54512.mha
        VSD.Brain.XX.O.MR_T1.54513/VSD.Brain.XX.O.MR_T1.54513.mha
        VSD.Brain.XX.O.MR_T1c.54514/VSD.Brain.XX.O.MR_T1c.54514.mha
        VSD.Brain.XX.O.MR_T2.54515/VSD.Brain.XX.O.MR_T2.54515.mha
        VSD.Brain_3more.XX.O.OT.54517/VSD.Brain_3more.XX.O.OT.54517.mha  label
    <root>/LGG/brats_2013_pat0001_1/...        (the same names as in HGG)
    Testing/HGG_LGG/brats_2013_pat0103_1/...   (no OT folder: unlabelled)

or flat, as public copies store them: the `.mha` files directly in the case
folder (`brats_2013_pat0001_1/VSD.Brain.XX.O.MR_Flair.54512.mha`, ...).

`root` is the folder holding the grade folders (HGG, LGG or the testing
set's HGG_LGG; `BRATS2015_Training` in the archive), one grade folder, a
folder of case folders, or one case folder. A case folder is any folder with
a `VSD.<...>.MR_<sequence>.<n>` subfolder or `.mha` file (`brats_*` in the
release); its `VSD.<...>.OT.<n>` subfolder or file (`VSD.Brain_3more...` or
`VSD.Brain...`) holds the label. Each VSD folder holds one `.mha` (the one
named after the folder when there are several). MR_Flair, MR_T1, MR_T1c, MR_T2 are the modalities
'flair', 't1', 't1ce', 't2'; other sequences keep their lower-cased name.

Case ids are file-name safe (predictions are `<case_id>_seg.nii.gz`): the
case folder's name, prefixed with `<grade>_` when the case lies in a grade
folder, e.g. 'HGG_brats_2013_pat0001_1' (the release repeats folder names
across HGG and LGG). The grade is the folder between `root` and the case;
when `root` is a grade folder or the case folder itself, the case's parent
counts as its grade if it is named HGG, LGG or HGG_LGG (any case), so a case
has the same id whichever of these roots is given. `split` is None.

Labels: on disk 0 background, 1 necrosis, 2 oedema, 3 non-enhancing tumour,
4 enhancing tumour. `load` returns the BraTS 2017+ convention (0, 1, 2, 4),
`labels.BRATS`: non-enhancing 3 is merged into 1 (NCR/NET) as BraTS 2017 did
(`label_map` ((0, 0), (1, 1), (2, 2), (3, 1), (4, 4))). The regions are thus
unchanged: WT = {1, 2, 3, 4}, TC = {1, 3, 4}, ET = {4} on the disk values.
A prediction written back with `Case.to_disk` writes the core as 1.

Voxels and geometry: read with SimpleITK (optional extra `formats`), whose
arrays are (z, y, x); `load` returns (x, y, z) as nibabel does, and the
affine maps ITK's LPS origin/spacing/direction to RAS (the first two rows
negated), so a NIfTI written with it overlays the .mha. Every channel and the
label must share one size, spacing, origin and direction (within 1e-3).
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from jaxseg.data import formats
from jaxseg.data import checks
from jaxseg import labels
from jaxseg.data.case import Case, MODALITIES, Volume, canonical_modality
from jaxseg.errors import InputError

LAYOUT = ('BraTS 2015 MetaImage ([HGG|LGG/]brats_*/VSD.Brain.XX.O.MR_<Flair|'
          'T1|T1c|T2>.<n>/*.mha, label VSD.Brain_3more.XX.O.OT.<n>/*.mha; or '
          'the .mha files directly in brats_*/)')

# Grade folders of the release (compared in upper case).
GRADES = ('HGG', 'LGG', 'HGG_LGG')
# On-disk value -> BraTS 2017+ value: non-enhancing (3) joins NCR/NET (1).
LABEL_MAP = ((0, 0), (1, 1), (2, 2), (3, 1), (4, 4))
LABEL_KIND = 'OT'
_EXT = '.mha'
# 'VSD.Brain.XX.O.MR_Flair.54512' -> kind 'MR_Flair'; '...O.OT.54517' -> 'OT'.
_VSD = re.compile(r'^VSD\..+\.(?P<kind>MR_[^.]+|OT)\.\d+$', re.IGNORECASE)
# Channels and label whose geometry differs by more than this are not one grid.
_GEOMETRY_ATOL = 1e-3
# LPS (ITK) -> RAS (NIfTI): negate x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _subdirs(folder: str) -> list[os.DirEntry]:
  """The non-hidden subfolders of `folder`, sorted by name."""
  try:
    with os.scandir(folder) as it:
      entries = [e for e in it if not e.name.startswith('.') and e.is_dir()]
  except OSError:
    return []
  return sorted(entries, key=lambda e: e.name)


def _kind(name: str) -> str | None:
  """A VSD folder's content: a canonical modality, 'OT', or None."""
  m = _VSD.match(name)
  if m is None:
    return None
  kind = m.group('kind')
  if kind.upper() == LABEL_KIND:
    return LABEL_KIND
  return canonical_modality(kind[3:])


def _flat_files(folder: str) -> list[os.DirEntry]:
  """The `VSD.*.<kind>.<n>.mha` files directly in `folder`, sorted by name."""
  try:
    with os.scandir(folder) as it:
      entries = [e for e in it if e.is_file() and not e.name.startswith('.')
                 and e.name.lower().endswith(_EXT)
                 and _kind(e.name[:-len(_EXT)]) is not None]
  except OSError:
    return []
  return sorted(entries, key=lambda e: e.name)


def _vsd_entries(folder: str) -> list[tuple[str, str, str]]:
  """(kind, name, .mha path) of a case folder's VSD subfolders and flat files."""
  out = [(_kind(e.name), e.name, e.path) for e in _subdirs(folder)
         if _kind(e.name) is not None]
  out += [(_kind(e.name[:-len(_EXT)]), e.name, e.path)
          for e in _flat_files(folder)]
  return out


def _is_case(folder: str) -> bool:
  """True if `folder` has a `VSD.*.MR_*.<n>` subfolder or `.mha` file."""
  return any(kind != LABEL_KIND for kind, _, _ in _vsd_entries(folder))


def _is_grade(name: str) -> bool:
  return name.upper() in GRADES


def _name(path: str) -> str:
  return os.path.basename(os.path.normpath(path))


def _case_folders(root: str) -> list[tuple[str, str]]:
  """(case id, case folder) for the case folders at most two levels down."""
  def own_id(folder: str) -> str:
    parent = _name(os.path.dirname(os.path.normpath(os.path.abspath(folder))))
    return f'{parent}_{_name(folder)}' if _is_grade(parent) else _name(folder)

  if _is_case(root):
    return [(own_id(root), root)]
  found = []
  for child in _subdirs(root):
    if _is_case(child.path):
      found.append((own_id(child.path), child.path))
      continue
    for case in _subdirs(child.path):
      if _is_case(case.path):
        found.append((f'{child.name}_{case.name}', case.path))
  return found


def detect(root: str) -> bool:
  """True if `root`, its subfolders or theirs hold a VSD.*.MR_* folder.

  Folder names only; stops at the first case found.
  """
  if _is_case(root):
    return True
  for child in _subdirs(root):
    if _is_case(child.path):
      return True
    if any(_is_case(e.path) for e in _subdirs(child.path)):
      return True
  return False


def _mha_file(folder: str) -> str:
  """The .mha file of one VSD folder (the one named after it if several)."""
  with os.scandir(folder) as it:
    names = sorted(e.name for e in it if e.is_file() and
                   e.name.lower().endswith(_EXT) and not e.name.startswith('.'))
  own = _name(folder) + _EXT
  if own in names:
    return os.path.join(folder, own)
  if len(names) == 1:
    return os.path.join(folder, names[0])
  if not names:
    raise InputError(folder, f'holds no .mha file (expected {own})')
  raise InputError(folder, f'holds several .mha files ({", ".join(names)}) '
                   f'and none is {own}: keep one')


def _case(case_id: str, folder: str) -> Case:
  """Reads one case folder's VSD subfolders."""
  files: dict[str, str] = {}
  names: dict[str, str] = {}
  for kind, name, path in _vsd_entries(folder):
    if kind in files:
      what = 'label (OT)' if kind == LABEL_KIND else f"'{kind}'"
      raise InputError(folder, f'two {what} volumes: {names[kind]} and '
                       f'{name}; keep one')
    names[kind] = name
    files[kind] = path if os.path.isfile(path) else _mha_file(path)
  label = files.pop(LABEL_KIND, None)
  order = [m for m in MODALITIES if m in files]
  order += sorted(m for m in files if m not in order)
  return Case(
      case_id=case_id,
      images={m: files[m] for m in order},
      label=label,
      scheme=labels.BRATS,
      split=None,
      source=folder,
      reader='brats15_mha',
      label_map=LABEL_MAP)


def discover(root: str) -> list[Case]:
  """One case per case folder, sorted by id."""
  root = os.fspath(root)
  found = _case_folders(root)
  if not found:
    raise InputError(root, 'no BraTS 2015 case folders ([HGG|LGG/]brats_*/'
                     'VSD.*.MR_*/*.mha) found')
  seen: dict[str, str] = {}
  for case_id, folder in found:
    if case_id in seen:
      raise InputError(folder, f'case id {case_id!r} is also that of '
                       f'{seen[case_id]}: rename one folder')
    seen[case_id] = folder
  return sorted((_case(i, f) for i, f in found), key=lambda c: c.case_id)


# ------------------------------------------------------------------ reading


def _reason(e: Exception, path: str) -> str:
  """ITK's message in words, without its source location and the path."""
  text = ' '.join(str(e).split())
  if 'Unable to determine ImageIO reader' in text:
    return 'not an image file ITK recognises (empty or corrupt)'
  if 'cannot be read' in text:
    return 'ITK cannot parse it (a corrupt header or truncated voxel data)'
  text = text.rsplit('ERROR: ', 1)[-1].replace(f'"{path}"', 'it')
  return text.replace(path, 'it') or type(e).__name__


def _geometry(path: str, sitk) -> dict:
  """Size, spacing, origin and direction of a .mha from its header alone."""
  if not os.path.isfile(path):
    raise InputError(path, 'cannot read MetaImage: the file does not exist')
  reader = sitk.ImageFileReader()
  reader.SetFileName(path)
  try:
    reader.ReadImageInformation()
  except RuntimeError as e:
    raise InputError(path,
                     f'cannot read MetaImage: {_reason(e, path)}') from None
  if reader.GetDimension() != 3:
    raise InputError(path, f'expected a 3D volume, got {reader.GetDimension()}'
                     f'D of size {reader.GetSize()}')
  if reader.GetNumberOfComponents() != 1:
    raise InputError(path, f'expected one value per voxel, got '
                     f'{reader.GetNumberOfComponents()} components')
  return dict(size=tuple(reader.GetSize()),
              spacing=np.asarray(reader.GetSpacing()),
              origin=np.asarray(reader.GetOrigin()),
              direction=np.asarray(reader.GetDirection()).reshape(3, 3))


def _same_grid(geo: dict, path: str, first: dict, first_path: str) -> None:
  """InputError naming `path` if its grid differs from that of `first_path`."""
  if geo['size'] != first['size']:
    raise InputError(path, f"size {geo['size']} differs from {first['size']} "
                     f'of {first_path}')
  for key in ('spacing', 'origin', 'direction'):
    if not np.allclose(geo[key], first[key], atol=_GEOMETRY_ATOL):
      raise InputError(path, f'{key} {geo[key].ravel().tolist()} differs from '
                       f'{first[key].ravel().tolist()} of {first_path}: the '
                       'volumes are not co-registered')


def affine(geo: dict) -> np.ndarray:
  """The RAS voxel-to-world (4, 4) matrix of an ITK (LPS) grid.

  Voxel index (i, j, k) = (x, y, z) maps to LPS point
  origin + direction @ diag(spacing) @ (i, j, k); negating the first two rows
  gives RAS, as nibabel's affine.
  """
  lps = np.eye(4)
  lps[:3, :3] = geo['direction'] * geo['spacing'][None, :]
  lps[:3, 3] = geo['origin']
  return _LPS_TO_RAS @ lps


def _paths(case: Case, modalities: Sequence[str]) -> list[str]:
  paths = [case.images[m] for m in modalities]
  return paths + ([case.label] if case.label is not None else [])


def _check(case: Case, modalities: Sequence[str], sitk) -> dict:
  """Headers of every channel and the label; their one geometry."""
  paths = _paths(case, modalities)
  first = _geometry(paths[0], sitk)
  for path in paths[1:]:
    _same_grid(_geometry(path, sitk), path, first, paths[0])
  return first


def check(case: Case,
          modalities: Sequence[str]) -> tuple[int, int, int]:
  """Reads the headers, checks one grid for all; returns (H, W, D) = (x, y, z).

  The voxels are not read, so truncated voxel data is found by `load` only.
  """
  sitk = formats.require('SimpleITK', 'formats', case.source)
  return _check(case, modalities, sitk)['size']


def _read(path: str, sitk, pixel_type) -> np.ndarray:
  """The voxels as (x, y, z), in `pixel_type` (sitkUnknown: the file's type)."""
  try:
    image = sitk.ReadImage(path, pixel_type)
  except RuntimeError as e:
    raise InputError(path, f'cannot read MetaImage: {_reason(e, path)}'
                     ) from None
  return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def load(case: Case, modalities: Sequence[str]) -> Volume:
  """Reads one case; every channel and the label must share one grid.

  Returns:
    Volume: image float32 (x, y, z, C) in the order of `modalities`, label
    uint8 (x, y, z) in (0, 1, 2, 4) (disk 3 -> 1) or None, RAS affine.
  """
  sitk = formats.require('SimpleITK', 'formats', case.source)
  geo = _check(case, modalities, sitk)
  image = np.empty(geo['size'] + (len(modalities),), np.float32)
  for c, m in enumerate(modalities):
    path = case.images[m]
    data = _read(path, sitk, sitk.sitkFloat32)
    checks.check_finite(data, path)
    image[..., c] = data
  label = None
  if case.label is not None:
    raw = _read(case.label, sitk, sitk.sitkUnknown)
    label = checks.check_label(raw, case)
  return Volume(
      image=image, label=label, affine=affine(geo), header=None,
      case_id=case.case_id, modalities=tuple(modalities))
