"""Seed 003's LGG Kaggle set (mateuszbuda lgg-mri-segmentation): RGB TIFFs.

On disk (`root` is the folder holding `kaggle_3m/` or the archive's
`lgg-mri-segmentation/kaggle_3m/`, `kaggle_3m/` itself, any folder of patient
folders, or one patient's folder; `data.csv` and `README.md` are ignored):

    kaggle_3m/TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_1.tif
                                    TCGA_CS_4941_19960909_1_mask.tif
                                    ...  _2.tif, _2_mask.tif, ... _n

A slice is a (H, W, 3) uint8 RGB TIFF (256 x 256 in the set): channel 0 the
pre-contrast (T1) image, 1 FLAIR, 2 post-contrast (T1ce). Its mask is a
(H, W) uint8 TIFF of 0 and 255. Each patient folder is one case (id: the
folder name); its slices, numbered with consecutive integers and sorted
numerically (10 after 9), are stacked along D, so per-volume Dice is taken
per patient as the study does. A gap in the numbering, a mask without its
image or an image without its mask (when the patient has masks) is an
InputError. Masks map 0 -> 0, 255 -> 1 (`labels.BINARY`); a case without any mask files has no label. The set has no
pixel spacing: the affine is the identity.

Slices are read with tifffile; compressed TIFFs that tifffile cannot decode
without `imagecodecs` (LZW, ...) are read with Pillow instead.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Sequence

import numpy as np

from jaxseg.data import formats
from jaxseg.data import checks
from jaxseg import labels
from jaxseg.data.case import Case, Volume
from jaxseg.errors import InputError

LAYOUT = ('LGG Kaggle TIFFs ([kaggle_3m/]<patient>/<patient>_<n>.tif, RGB '
          'pre-contrast/FLAIR/post-contrast, with <patient>_<n>_mask.tif)')

# Canonical modality -> channel of the RGB slice.
CHANNELS = {'t1': 0, 'flair': 1, 't1ce': 2}
LABEL_MAP = ((0, 0), (255, 1))
KAGGLE_DIR = 'kaggle_3m'
ARCHIVE_DIR = 'lgg-mri-segmentation'   # the Kaggle zip holds both copies

_SLICE = re.compile(r'^(?P<case>.+)_(?P<index>\d+)(?P<mask>_mask)?$')
_TIFF_EXTS = ('.tif', '.tiff')
# Errors tifffile and Pillow raise on a corrupt or truncated file.
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, IndexError,
                struct.error, SyntaxError)


def _is_tiff(name: str) -> bool:
  return name.lower().endswith(_TIFF_EXTS) and not name.startswith('.')


def _stem(name: str) -> str:
  return os.path.splitext(name)[0]


def _subdirs(folder: str) -> list[str]:
  """The non-hidden subfolders of `folder`, sorted by name."""
  with os.scandir(folder) as it:
    return sorted(e.path for e in it
                  if e.is_dir() and not e.name.startswith('.'))


def _tiff_names(folder: str) -> list[str]:
  with os.scandir(folder) as it:
    return sorted(e.name for e in it if e.is_file() and _is_tiff(e.name))


def _looks_like_case(folder: str) -> bool:
  """A mask `<x>_<n>_mask.tif`, or a slice named after the folder."""
  own = os.path.basename(os.path.normpath(folder))
  for name in _tiff_names(folder):
    m = _SLICE.match(_stem(name))
    if m and (m.group('mask') or m.group('case') == own):
      return True
  return False


def _case_root(root: str) -> str:
  """`root/kaggle_3m` (or the Kaggle archive's `lgg-mri-segmentation/
  kaggle_3m`) when it exists, else `root`."""
  for sub in (KAGGLE_DIR, os.path.join(ARCHIVE_DIR, KAGGLE_DIR)):
    if os.path.isdir(os.path.join(root, sub)):
      return os.path.join(root, sub)
  return root


def _case_folders(root: str) -> list[str]:
  """The patient folders under `root`: subfolders holding TIFF slices (or
  `root` itself when it is one patient's folder)."""
  base = _case_root(root)
  folders = [d for d in _subdirs(base) if _tiff_names(d)]
  if not folders and _tiff_names(base):
    folders = [base]
  return folders


def detect(root: str) -> bool:
  """True if `root` holds `kaggle_3m/` or patient folders of LGG slices."""
  if _case_root(root) != root:
    return True
  return (any(_looks_like_case(d) for d in _subdirs(root)) or
          _looks_like_case(root))


def slices(folder: str) -> list[tuple[int, str, str | None]]:
  """The slices of one patient folder: [(n, image path, mask path or None)].

  Sorted by the integer n. Raises InputError for a TIFF not named
  `<patient>_<n>[_mask].tif`, two patients or two files for one slice in the
  folder, a gap in the numbering, a mask without its image, or a slice without
  a mask when other slices have one.
  """
  images: dict[int, str] = {}
  masks: dict[int, str] = {}
  prefix = None
  for name in _tiff_names(folder):
    path = os.path.join(folder, name)
    m = _SLICE.match(_stem(name))
    if m is None:
      raise InputError(path, 'not an LGG slice name: expected '
                       '<patient>_<n>.tif or <patient>_<n>_mask.tif')
    if prefix is None:
      prefix = m.group('case')
    elif m.group('case') != prefix:
      raise InputError(path, f'patient {m.group("case")!r} differs from '
                       f'{prefix!r} of the other slices in {folder}: keep one '
                       'patient per folder')
    n = int(m.group('index'))
    table = masks if m.group('mask') else images
    if n in table:
      raise InputError(path, f'slice {n} is also in {table[n]}')
    table[n] = path
  for n, path in masks.items():
    if n not in images:
      raise InputError(path, f'mask of slice {n} has no image '
                       f'({prefix}_{n}.tif)')
  order = sorted(images)
  if order and order != list(range(order[0], order[0] + len(order))):
    gap = next(n for n in range(order[0], order[-1]) if n not in images)
    raise InputError(os.path.join(folder, f'{prefix}_{gap}.tif'),
                     f'slice {gap} is missing (slices {order[0]}..{order[-1]})')
  if masks:
    for n in order:
      if n not in masks:
        raise InputError(images[n], f'slice {n} has no mask (expected '
                         f'{prefix}_{n}_mask.tif beside it)')
  return [(n, images[n], masks.get(n)) for n in order]


def discover(root: str) -> list[Case]:
  """One case per patient folder, sorted by id (the folder name)."""
  cases = []
  for folder in _case_folders(root):
    found = slices(folder)
    has_masks = any(mask for _, _, mask in found)
    cases.append(Case(
        case_id=os.path.basename(os.path.normpath(folder)),
        images={m: folder for m in CHANNELS},
        label=folder if has_masks else None,
        scheme=labels.BINARY,
        source=folder,
        reader='lgg_tiff',
        channel_index=dict(CHANNELS),
        label_map=LABEL_MAP))
  if not cases:
    raise InputError(root, 'no LGG patient folders (<patient>/<patient>_<n>'
                     '.tif) found')
  return sorted(cases, key=lambda c: c.case_id)


def _header(path: str, tifffile) -> tuple[tuple[int, ...], np.dtype]:
  """(shape as (H, W[, S]), dtype) of a TIFF's first page, pixels unread.

  A file shorter than its pixel data (truncated) is an InputError.
  """
  try:
    with tifffile.TiffFile(path) as tif:
      page = tif.pages[0]
      shape, axes, dtype = tuple(page.shape), page.axes, page.dtype
      end = max((o + c for o, c in zip(page.dataoffsets, page.databytecounts)),
                default=0)
  except _READ_ERRORS as e:
    raise InputError(path, f'cannot read TIFF: {_reason(e)}') from None
  if end > os.path.getsize(path):
    raise InputError(path, f'cannot read TIFF: truncated (pixel data ends at '
                     f'byte {end}, the file has {os.path.getsize(path)})')
  if axes == 'SYX':                      # planar RGB: stored channels-first
    shape = shape[1:] + shape[:1]
  return shape, dtype


def _check_shape(path: str, shape: tuple[int, ...], mask: bool,
                 size: tuple[int, int] | None, first: str | None):
  """InputError unless an image is (H, W, 3) / a mask (H, W) of `size`."""
  if mask:
    if len(shape) == 3 and shape[-1] == 1:
      shape = shape[:2]
    if len(shape) != 2:
      raise InputError(path, f'expected a one-channel (H, W) mask, got shape '
                       f'{shape}')
  elif len(shape) != 3 or shape[-1] != 3:
    raise InputError(path, f'expected an RGB (H, W, 3) slice (pre-contrast, '
                     f'FLAIR, post-contrast), got shape {shape}')
  if size is not None and shape[:2] != size:
    raise InputError(path, f'size {shape[:2]} differs from {size} of {first}')


def _reason(e: Exception) -> str:
  return ' '.join(str(e).split()) or type(e).__name__


def _slice_files(case: Case) -> list[tuple[int, str, str | None]]:
  found = slices(case.source)
  if not found:
    raise InputError(case.source, 'holds no LGG slices')
  if case.label is not None and found[0][2] is None:
    raise InputError(case.source,
                     'holds no mask files (<patient>_<n>_mask.tif)')
  return found


def check(case: Case,
          modalities: Sequence[str]) -> tuple[int, int, int]:
  """Checks every slice's TIFF header and size; returns (H, W, D)."""
  del modalities  # every slice holds all three channels
  tifffile = formats.require('tifffile', 'formats', case.source)
  found = _slice_files(case)
  size, first = None, None
  for _, image, mask in found:
    paths = [image] + ([mask] if case.label is not None else [])
    for path in paths:
      shape, _ = _header(path, tifffile)
      _check_shape(path, shape, path == mask, size, first)
      if size is None:
        size, first = shape[:2], path
  return size + (len(found),)


def _read(path: str, tifffile) -> np.ndarray:
  """The first page's pixels, (H, W[, S]).

  Pillow decodes what tifffile would need `imagecodecs` for (LZW, JPEG, ...).
  """
  try:
    with tifffile.TiffFile(path) as tif:
      page = tif.pages[0]
      data = page.asarray()
      if page.axes == 'SYX':             # planar RGB: stored channels-first
        data = np.moveaxis(data, 0, -1)
      return data
  except _READ_ERRORS as e:
    if 'imagecodecs' not in str(e):
      raise InputError(path, f'cannot read TIFF: {_reason(e)}') from None
    reason = _reason(e)
  image_lib = formats.require('PIL.Image', 'formats', path)
  try:
    with image_lib.open(path) as img:
      return np.asarray(img)
  except _READ_ERRORS as e:
    raise InputError(path, f'cannot read TIFF: {reason}; Pillow: '
                     f'{_reason(e)}') from None


def _read_slice(path: str, tifffile, mask: bool, size, first) -> np.ndarray:
  data = _read(path, tifffile)
  _check_shape(path, data.shape, mask, size, first)
  return data.reshape(data.shape[:2]) if mask else data


def load(case: Case, modalities: Sequence[str]) -> Volume:
  """Reads a patient's slices into (H, W, n, C) float32 and a (H, W, n) label.

  Channels follow `modalities` ('t1', 'flair', 't1ce'); mask values 0/255
  become 0/1 (other values are an InputError naming the mask file).
  """
  tifffile = formats.require('tifffile', 'formats', case.source)
  found = _slice_files(case)
  channels = [case.channel_index[m] for m in modalities]
  first = found[0][1]
  rgb = _read_slice(first, tifffile, False, None, None)
  size = rgb.shape[:2]
  image = np.empty(size + (len(found), len(channels)), np.float32)
  label = None if case.label is None else np.empty(size + (len(found),),
                                                   np.uint8)
  for z, (_, path, mask) in enumerate(found):
    if z:
      rgb = _read_slice(path, tifffile, False, size, first)
    data = rgb[..., channels].astype(np.float32)
    checks.check_finite(data, path)
    image[:, :, z] = data
    if label is not None:
      raw = _read_slice(mask, tifffile, True, size, first)
      label[:, :, z] = checks.check_label(raw, case, path=mask)
  return Volume(
      image=image, label=label, affine=np.eye(4), header=None,
      case_id=case.case_id, modalities=tuple(modalities))
