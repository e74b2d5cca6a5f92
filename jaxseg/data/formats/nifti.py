"""NIfTI volumes: BraTS 2018-21 and BraTS 2023+ case folders, and the files a datalist lists.

Layouts (`detect` / `discover`):

* BraTS 2018-21 case folders: `<root>/<id>/<id>_flair.nii.gz`, `_t1`,
  `_t1ce`, `_t2` and the optional label `<id>_seg.nii.gz` (labels
  {0, 1, 2, 4});
* BraTS 2023+ case folders: `<root>/<id>/<id>-t2f.nii.gz`, `-t1n`, `-t1c`,
  `-t2w` and the optional label `<id>-seg.nii.gz` (labels {0, 1, 2, 3}).

Datalist cases (`jaxseg.data.datalist`) are read here too: one 3D file per
channel, or one 4D (H, W, D, C) file with `Case.channel_index`.

`check` opens the headers only (every channel and the label on one shape
and affine, within 1e-3 mm); `load` reads the voxels as float32 without a
float64 copy and checks them (`jaxseg.data.checks`).
"""

from __future__ import annotations

import os
import zlib
from typing import Sequence

import nibabel as nib
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
import numpy as np

from jaxseg.data import checks
from jaxseg import labels
from jaxseg.data.case import BRATS23_SUFFIXES, MODALITIES, Case, Volume
from jaxseg.errors import InputError

LAYOUT = ('BraTS 2018-21 case folders (<id>/<id>_flair.nii.gz, _t1, _t1ce, '
          '_t2, _seg) or BraTS 2023+ case folders (<id>/<id>-t2f.nii.gz, '
          '-t1n, -t1c, -t2w, -seg)')

NIFTI_EXTS = ('.nii.gz', '.nii')
# Errors nibabel and zlib raise on a missing, corrupt or truncated file.
_READ_ERRORS = (EOFError, OSError, zlib.error, ImageFileError, HeaderDataError,
                ValueError)
# Channels whose voxel-to-world matrices differ by more than this (mm) are
# not co-registered.
_AFFINE_ATOL = 1e-3


def strip_nifti_ext(filename: str) -> str | None:
  """'a_t1.nii.gz' -> 'a_t1'; None if not a NIfTI file name."""
  lower = filename.lower()
  for ext in NIFTI_EXTS:
    if lower.endswith(ext):
      return filename[:-len(ext)]
  return None


def _case_folders(root: str) -> list[str]:
  return [os.path.join(root, name) for name in sorted(os.listdir(root))
          if not name.startswith('.') and os.path.isdir(os.path.join(root, name))]


def detect(root: str) -> bool:
  """True if a subfolder of `root` is a BraTS case folder (file names only)."""
  return any(folder_case(f) is not None for f in _case_folders(root))


def discover(root: str) -> list[Case]:
  """The BraTS case folders under `root`, sorted by id."""
  cases = [c for c in map(folder_case, _case_folders(root)) if c is not None]
  if not cases:
    raise InputError(root, f'no cases found: expected {LAYOUT}')
  return cases


def folder_case(folder: str) -> Case | None:
  """Reads one BraTS-style case folder; None if it holds no BraTS files."""
  case_id = os.path.basename(os.path.normpath(folder))
  found19: dict[str, list[str]] = {}
  found23: dict[str, list[str]] = {}
  for filename in sorted(os.listdir(folder)):
    path = os.path.join(folder, filename)
    stem = strip_nifti_ext(filename)
    if stem is None or not os.path.isfile(path):
      continue
    if '_' in stem:
      suffix = stem.rsplit('_', 1)[1].lower()
      if suffix in MODALITIES or suffix == 'seg':
        found19.setdefault(suffix, []).append(path)
    if '-' in stem:
      suffix = stem.rsplit('-', 1)[1].lower()
      if suffix in BRATS23_SUFFIXES or suffix == 'seg':
        key = BRATS23_SUFFIXES.get(suffix, suffix)
        found23.setdefault(key, []).append(path)
  has19 = any(k != 'seg' for k in found19)
  has23 = any(k != 'seg' for k in found23)
  if has19 and has23:
    raise InputError(folder, 'mixes BraTS 2018-21 (<id>_flair) and BraTS 2023+ '
                     '(<id>-t2f) file names; keep one naming per case')
  if not (has19 or has23):
    return None
  found = found19 if has19 else found23
  files = {}
  for key, paths in found.items():
    if len(paths) > 1:
      # Prefer the file named after the folder (<id>_flair.nii.gz).
      own = [p for p in paths if os.path.basename(p).startswith(case_id)]
      if len(own) != 1:
        names = ', '.join(os.path.basename(p) for p in paths)
        raise InputError(folder,
                         f"several files for '{key}': {names}; keep one")
      paths = own
    files[key] = paths[0]
  label = files.pop('seg', None)
  return Case(
      case_id=case_id,
      images={m: files[m] for m in MODALITIES if m in files},
      label=label,
      scheme=labels.BRATS if has19 else labels.BRATS23,
      split=None,
      source=folder)



# ------------------------------------------------------------------ reading


def _reason(e: Exception) -> str:
  """An exception as one line of text."""
  return ' '.join(str(e).split()) or type(e).__name__


def _open(path: str) -> nib.Nifti1Image:
  """Loads a NIfTI header (data is read lazily)."""
  if not os.path.isfile(path):
    raise InputError(path, 'cannot read NIfTI: the file does not exist')
  try:
    return nib.load(path)
  except _READ_ERRORS as e:
    raise InputError(path, f'cannot read NIfTI: {_reason(e)}') from None


def _shape3d(img, path: str, multichannel: bool = False) -> tuple[int, int, int]:
  """The spatial shape; trailing singleton dimensions are accepted.

  With `multichannel` the file is 4D (H, W, D, C) and C is dropped.
  """
  shape = tuple(int(s) for s in img.shape)
  if multichannel:
    if len(shape) != 4:
      raise InputError(path, f'expected a 4D (H, W, D, channels) volume, got '
                       f'shape {shape}')
    return shape[:3]
  while len(shape) > 3 and shape[-1] == 1:
    shape = shape[:-1]
  if len(shape) != 3:
    raise InputError(path, f'expected a 3D volume, got shape {shape}')
  return shape


def _read(img, path: str, shape, dtype=None, channel: int | None = None
          ) -> np.ndarray:
  """Reads the voxels (scaled) without a float64 copy; one channel of a 4D file."""
  try:
    if channel is None:
      data = np.asanyarray(img.dataobj, dtype=dtype)
    else:
      data = np.asarray(img.dataobj[..., channel], dtype=dtype)
  except _READ_ERRORS as e:
    raise InputError(path, f'cannot read NIfTI: {_reason(e)}') from None
  return data.reshape(shape)


def _check_same_grid(img, path: str, shape, affine, first: str,
                     what: str = '') -> None:
  """InputError if `img` is not on the grid (shape, affine) of `first`."""
  s = _shape3d(img, path)
  if s != shape:
    other = 'the image shape ' if what else ''
    raise InputError(path, f'{what}shape {s} differs from {other}{shape} of '
                     f'{first}')
  if not np.allclose(np.asarray(img.affine, np.float64), affine,
                     atol=_AFFINE_ATOL):
    raise InputError(path, f'{what}affine (voxel-to-world matrix) differs from '
                     f'that of {first}: the volumes are not co-registered')


def _open_checked(case: Case, paths: Sequence[str]):
  """Opens the channel and label headers; checks one shape and affine for all.

  Returns:
    (channel images, label image or None, (H, W, D)); no voxels are read.
  """
  multichannel = case.channel_index is not None
  opened = {}
  for p in paths:                 # a 4D file is opened once for all channels
    if p not in opened:
      opened[p] = _open(p)
  imgs = [opened[p] for p in paths]
  shape = _shape3d(imgs[0], paths[0], multichannel)
  affine = np.asarray(imgs[0].affine, np.float64)
  for img, p in zip(imgs[1:], paths[1:]):
    if multichannel:
      if _shape3d(img, p, True) != shape:
        raise InputError(p, f'shape differs from {shape} of {paths[0]}')
    else:
      _check_same_grid(img, p, shape, affine, paths[0])
  if multichannel:
    for p, img in opened.items():
      channels = img.shape[3]
      wanted = [case.channel_index[m] for m, q in case.images.items() if q == p]
      if wanted and max(wanted) >= channels:
        raise InputError(p, f'has {channels} channels, the datalist names '
                         f'{max(wanted) + 1}')
  label_img = None
  if case.label is not None:
    label_img = _open(case.label)
    _check_same_grid(label_img, case.label, shape, affine, paths[0],
                     what='label ')
  return imgs, label_img, shape


def check(case: Case, modalities: Sequence[str]) -> tuple[int, int, int]:
  """Checks a case's files from their headers alone; returns (H, W, D)."""
  return _open_checked(case, [case.images[m] for m in modalities])[2]


def load(case: Case, modalities: Sequence[str]) -> Volume:
  """Reads and checks one case's channels (float32) and label (uint8)."""
  mods = list(modalities)
  paths = [case.images[m] for m in mods]
  imgs, label_img, shape = _open_checked(case, paths)

  image = np.empty(shape + (len(paths),), np.float32)
  index = case.channel_index
  for c, (m, img, p) in enumerate(zip(mods, imgs, paths)):
    data = _read(img, p, shape, np.float32,
                 None if index is None else index[m])
    checks.check_finite(data, p)
    image[..., c] = data

  label = None
  if label_img is not None:
    label = checks.check_label(_read(label_img, case.label, shape), case)
  return Volume(
      image=image,
      label=label,
      affine=np.asarray(imgs[0].affine, np.float64),
      header=imgs[0].header,
      case_id=case.case_id,
      modalities=tuple(mods))

