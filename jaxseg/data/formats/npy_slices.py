"""Seed 002's 2D NumPy slices: one .npy per slice, the modalities stacked last.

Two layouts (`<name>` is `<case>_<n>`: the case id and an integer slice index;
a name without a trailing `_<n>` is a one-slice case):

    <root>/images/<name>.npy  +  <root>/masks/<name>.npy (or <name>_mask.npy)
    <root>/<name>.npy         +  <root>/<name>_mask.npy        (side by side)

Either may also put each case in a subfolder (`<root>/[images/]<case>/...`,
masks in `<root>/masks/<case>/` or beside the images); a subfolder is one
case, named after the folder, whose files are all its slices. A case's slices
are stacked along D sorted numerically by n (10 after 9; gaps are allowed, as
a set may keep only some slices of a scan). Where any image of a folder has a
mask, every image there needs one (else an InputError names it); a folder
without masks gives unlabelled cases.

An image .npy is (H, W, C), channels last (the project's convention; a
channels-first (C, H, W) array is rejected, not guessed at), or (H, W) when
there is one channel; any integer or float dtype. A mask .npy is (H, W) (or
(H, W, 1)), integer, bool or whole-valued float. Files are opened with
`np.load(mmap_mode='r', allow_pickle=False)`: pickled or object arrays are
refused.

The channel names and the label convention come from an optional
`<root>/npy_dataset.json`:

    {"channels": ["flair", "t1", "t1ce", "t2"],
     "labels": {"0": "background", "1": "necrotic", "2": "edema",
                "4": "enhancing"}}

Defaults: channels ('flair', 't1', 't1ce', 't2') (BraTS 2019 order) and the
BraTS 2019 labels (0, 1, 2, 4) with enhancing tumour 4 (a binary 0/1 mask is
a valid subset of them). "labels" with two values (e.g. {0, 1}) make the set
binary (`labels.BINARY`-like). The pixel spacing is unknown: the affine is the
identity.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Sequence

import numpy as np

from jaxseg.data import checks
from jaxseg import labels
from jaxseg.data.case import Case, MODALITIES, Volume, canonical_modality
from jaxseg.errors import InputError, read_json_object

LAYOUT = ('NumPy slices (<root>/images/<case>_<n>.npy + <root>/masks/'
          '<case>_<n>.npy, or <case>_<n>.npy + <case>_<n>_mask.npy; (H, W, C) '
          'channels last; optional npy_dataset.json)')

CONFIG = 'npy_dataset.json'
DEFAULT_CHANNELS = MODALITIES
IMAGES_DIR, MASKS_DIR = 'images', 'masks'
_EXT, _MASK = '.npy', '_mask'
_INDEX = re.compile(r'^(?P<case>.+)_(?P<index>\d+)$')
# What np.load raises on a corrupt, truncated or pickled file.
_READ_ERRORS = (ValueError, OSError, EOFError)

Slice = tuple   # (n or None, image path, mask path or None)


def _is_npy(name: str) -> bool:
  return name.lower().endswith(_EXT) and not name.startswith('.')


def _stem(name: str) -> str:
  return name[:-len(_EXT)]


def _mtime(folder: str) -> int:
  try:
    return os.stat(folder).st_mtime_ns
  except OSError:
    return -1


def _subdirs(folder: str) -> list[str]:
  with os.scandir(folder) as it:
    return sorted(e.name for e in it
                  if e.is_dir() and not e.name.startswith('.'))


def _npy_names(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    return []
  with os.scandir(folder) as it:
    return sorted(e.name for e in it if e.is_file() and _is_npy(e.name))


def _any_npy(folder: str) -> bool:
  with os.scandir(folder) as it:
    return any(e.is_file() and _is_npy(e.name) for e in it)


def _has_npy(folder: str) -> bool:
  """.npy files in `folder` or in one of its subfolders."""
  return _any_npy(folder) or any(
      _any_npy(os.path.join(folder, d)) for d in _subdirs(folder))


def detect(root: str) -> bool:
  """True if `root` (or `root/images`) or a subfolder of it holds .npy files."""
  images = os.path.join(root, IMAGES_DIR)
  return (os.path.isdir(images) and _has_npy(images)) or _has_npy(root)


def parse_name(stem: str) -> tuple[str, int | None]:
  """'BraTS19_X_1_42' -> ('BraTS19_X_1', 42); 'scan' -> ('scan', None)."""
  m = _INDEX.match(stem)
  if m is None:
    return stem, None
  return m.group('case'), int(m.group('index'))


def _pair_masks(folder: str, mask_folder: str | None
                ) -> tuple[dict[str, str], dict[str, str]]:
  """(image stem -> path, image stem -> mask path) of one folder.

  `mask_folder` None: masks are `<stem>_mask.npy` beside the images; else
  `<mask_folder>/<stem>.npy` or `<stem>_mask.npy`. A mask with no image is an
  InputError naming the mask.
  """
  names = _npy_names(folder)
  if mask_folder is None:
    mask_names = [n for n in names if _stem(n).endswith(_MASK)]
    names = [n for n in names if not _stem(n).endswith(_MASK)]
    mask_folder = folder
  else:
    mask_names = _npy_names(mask_folder)
  images = {_stem(n): os.path.join(folder, n) for n in names}
  masks: dict[str, str] = {}
  for name in mask_names:
    path = os.path.join(mask_folder, name)
    stem = _stem(name)
    if stem not in images and stem.endswith(_MASK):
      stem = stem[:-len(_MASK)]
    if stem not in images:
      raise InputError(path, f'mask has no image ({stem}.npy in {folder})')
    if stem in masks:
      raise InputError(path, f'a second mask for {images[stem]} (also '
                       f'{masks[stem]})')
    masks[stem] = path
  return images, masks


def _ordered(stems: list[str], images: dict[str, str], masks: dict[str, str],
             where: str) -> tuple[Slice, ...]:
  """One case's slices sorted by index; InputError when two share an index."""
  if len(stems) > 1:
    for stem in stems:
      if parse_name(stem)[1] is None:
        raise InputError(images[stem], f'has no trailing _<n> slice index, but '
                         f'{where} holds {len(stems)} slices of this case')
  by_index: dict = {}
  for stem in stems:
    n = parse_name(stem)[1]
    if n in by_index:
      raise InputError(images[stem], f'slice {n} is also in '
                       f'{images[by_index[n]]}')
    by_index[n] = stem
  order = sorted(by_index, key=lambda n: -1 if n is None else n)
  return tuple((n, images[by_index[n]], masks.get(by_index[n])) for n in order)


@functools.lru_cache(maxsize=8)
def _scan(folder: str, mask_folder: str | None, whole: bool, mtimes: tuple
          ) -> dict[str, tuple[Slice, ...]]:
  """The cases of one folder: key -> slices (cached while the mtimes hold).

  `whole`: the folder is one case (key ''); else cases are the name prefixes.
  """
  del mtimes  # part of the cache key only
  images, masks = _pair_masks(folder, mask_folder)
  if masks and len(masks) < len(images):
    missing = next(s for s in sorted(images) if s not in masks)
    raise InputError(images[missing], f'has no mask ({missing}{_MASK}.npy or '
                     f'masks/{missing}.npy) while other slices in {folder} do')
  groups: dict[str, list[str]] = {}
  for stem in images:
    groups.setdefault('' if whole else parse_name(stem)[0], []).append(stem)
  return {key: _ordered(stems, images, masks, folder)
          for key, stems in sorted(groups.items())}


def _cases_in(folder: str, mask_folder: str | None, whole: bool
              ) -> dict[str, tuple[Slice, ...]]:
  mtimes = (_mtime(folder), _mtime(mask_folder) if mask_folder else 0)
  return _scan(folder, mask_folder, whole, mtimes)


def read_config(root: str) -> tuple[tuple[str, ...], labels.LabelScheme,
                                   tuple[tuple[int, int], ...]]:
  """(channel names, label scheme, label_map) from
  npy_dataset.json; "labels" are read as a datalist's are."""
  path = os.path.join(root, CONFIG)
  if not os.path.isfile(path):
    return DEFAULT_CHANNELS, labels.BRATS, ()
  data = read_json_object(path, 'the slice set description',
                          '{"channels": [...], "labels": {...}}')
  channels = data.get('channels', list(DEFAULT_CHANNELS))
  if (not isinstance(channels, list) or not channels or
      not all(isinstance(c, str) and c.strip() for c in channels)):
    raise InputError(path, '"channels" must be a non-empty list of channel '
                     f'names, got {channels!r}')
  names = tuple(canonical_modality(c) for c in channels)
  if len(set(names)) != len(names):
    raise InputError(path, f'"channels" names repeat: {list(names)}')
  # The datalists' reading of "labels" (names -> BraTS values, binary masks).
  return (names,) + labels.from_names(data.get('labels'), path)


def _roots(root: str) -> tuple[str, str | None]:
  """(image folder, mask folder or None for side-by-side masks)."""
  root = os.path.normpath(root)
  images = os.path.join(root, IMAGES_DIR)
  if os.path.isdir(images) and _has_npy(images):
    return images, os.path.join(root, MASKS_DIR)
  return root, None


def discover(root: str) -> list[Case]:
  """The cases under `root`, sorted by id."""
  channels, scheme, label_map = read_config(root)
  base, mask_base = _roots(root)
  found = []   # (case id, folder, mask folder, key, slices)
  for key, slices in _cases_in(base, mask_base, False).items():
    found.append((key, base, mask_base, key, slices))
  for sub in _subdirs(base):
    folder = os.path.join(base, sub)
    masks = None if mask_base is None else os.path.join(mask_base, sub)
    for _, slices in _cases_in(folder, masks, True).items():
      found.append((sub, folder, masks, None, slices))
  cases, seen = [], {}
  for case_id, folder, masks, key, slices in found:
    if case_id in seen:
      raise InputError(slices[0][1],
                       f'case {case_id!r} is also in {seen[case_id]}')
    seen[case_id] = folder
    has_masks = slices[0][2] is not None
    single = key is not None and len(slices) == 1 and slices[0][0] is None
    cases.append(Case(
        case_id=case_id,
        images={c: folder for c in channels},
        label=(masks or folder) if has_masks else None,
        scheme=scheme,
        label_map=label_map,
        source=slices[0][1] if single else folder,
        reader='npy_slices',
        channel_index={c: i for i, c in enumerate(channels)},
        key=key))
  if not cases:
    raise InputError(root, 'no .npy slices found')
  return sorted(cases, key=lambda c: c.case_id)


def _mask_folder(case: Case, folder: str) -> str | None:
  """Where `case`'s masks live (None: beside the images), as in `discover`."""
  if case.label is not None:
    return None if case.label == folder else case.label
  base = folder if case.key is not None else os.path.dirname(folder)
  if os.path.basename(base) != IMAGES_DIR:
    return None
  images, masks = _roots(os.path.dirname(base))
  if masks is None or os.path.normpath(images) != os.path.normpath(base):
    return None
  return masks if case.key is not None else os.path.join(
      masks, os.path.basename(folder))


def _slices(case: Case) -> tuple[Slice, ...]:
  """The slices of `case`, listed again from disk (cached per folder)."""
  folder = os.path.normpath(next(iter(case.images.values())))
  groups = _cases_in(folder, _mask_folder(case, folder), case.key is None)
  slices = groups.get('' if case.key is None else case.key)
  if not slices:
    raise InputError(case.source or folder, f'no .npy slices of case '
                     f'{case.case_id} found')
  if case.label is not None and slices[0][2] is None:
    raise InputError(case.source or folder, f'case {case.case_id} has no mask '
                     'files')
  return slices


def _open(path: str) -> np.ndarray:
  """Memory-maps one .npy; InputError for a corrupt, pickled or .npz file."""
  try:
    data = np.load(path, mmap_mode='r', allow_pickle=False)
  except _READ_ERRORS as e:
    reason = ' '.join(str(e).split()) or type(e).__name__
    raise InputError(path, f'cannot read .npy: {reason}') from None
  if not isinstance(data, np.ndarray):
    data.close()
    raise InputError(path, 'is an .npz archive, not one .npy array')
  return data


def _check_image(path: str, data: np.ndarray, channels: int,
                 size: tuple[int, int] | None, first: str | None):
  """InputError unless `data` is a numeric (H, W, channels) slice of `size`."""
  shape = data.shape
  if data.dtype.kind not in 'biuf':
    raise InputError(path, f'image dtype {data.dtype} is not numeric')
  if data.ndim == 2 and channels == 1:
    pass
  elif data.ndim != 3 or shape[-1] != channels:
    hint = ''
    if data.ndim == 3 and shape[0] == channels:
      hint = '; it looks channels-first: save slices as (H, W, C)'
    raise InputError(path, f'expected an (H, W, {channels}) slice (channels '
                     f'last, {channels} channels named in {CONFIG} or the '
                     f'default), got shape {shape}{hint}')
  if size is not None and shape[:2] != size:
    raise InputError(path, f'size {shape[:2]} differs from {size} of {first}')


def _check_mask(path: str, data: np.ndarray, size: tuple[int, int], first: str):
  shape = data.shape
  if not (data.ndim == 2 or (data.ndim == 3 and shape[-1] == 1)):
    raise InputError(path, f'expected an (H, W) mask, got shape {shape}')
  if shape[:2] != size:
    raise InputError(path, f'size {shape[:2]} differs from {size} of {first}')


def check(case: Case,
          modalities: Sequence[str]) -> tuple[int, int, int]:
  """Checks every slice's and mask's .npy header and size; returns (H, W, D)."""
  del modalities  # every slice holds all channels
  slices = _slices(case)
  channels = len(case.channel_index)
  size, first = None, None
  for _, path, mask in slices:
    data = _open(path)
    _check_image(path, data, channels, size, first)
    if size is None:
      size, first = data.shape[:2], path
    if case.label is not None:
      _check_mask(mask, _open(mask), size, first)
  return size + (len(slices),)


def load(case: Case, modalities: Sequence[str]) -> Volume:
  """Stacks a case's slices: image float32 (H, W, D, C), label uint8 (H, W, D).

  Channels follow `modalities`; labels are checked against the convention.
  """
  slices = _slices(case)
  index = [case.channel_index[m] for m in modalities]
  channels = len(case.channel_index)
  first = slices[0][1]
  data = _open(first)
  _check_image(first, data, channels, None, None)
  size = data.shape[:2]
  image = np.empty(size + (len(slices), len(index)), np.float32)
  label = None if case.label is None else np.empty(size + (len(slices),),
                                                   np.uint8)
  for z, (_, path, mask) in enumerate(slices):
    if z:
      data = _open(path)
      _check_image(path, data, channels, size, first)
    pixels = np.asarray(data.reshape(size + (channels,))[..., index],
                        np.float32)
    checks.check_finite(pixels, path)
    image[:, :, z] = pixels
    if label is not None:
      raw = _open(mask)
      _check_mask(mask, raw, size, first)
      label[:, :, z] = checks.check_label(np.asarray(raw).reshape(size), case,
                                           path=mask)
  return Volume(
      image=image, label=label, affine=np.eye(4), header=None,
      case_id=case.case_id, modalities=tuple(modalities))
