"""File-format sources: find the cases under a root and read one case.

Three layouts are recognised by `discover_cases`:

* a Decathlon/MONAI-style datalist: a `.json` file, or a folder holding
  `dataset.json`, with "training" (and optional "validation"/"test") lists of
  {"image": [paths] | path, "label": path} relative to the json's folder;
* BraTS 2018-21 case folders: `<root>/<id>/<id>_flair.nii.gz`, `_t1`, `_t1ce`,
  `_t2` and the optional label `<id>_seg.nii.gz` (labels {0, 1, 2, 4});
* BraTS 2023+ case folders: `<root>/<id>/<id>-t2f.nii.gz`, `-t1n`, `-t1c`,
  `-t2w` and the optional label `<id>-seg.nii.gz` (labels {0, 1, 2, 3}).

Modalities always carry the BraTS 2019 names 'flair', 't1', 't1ce', 't2'.
`load_case` reads the channels of one case into a float32 (H, W, D, C) array
and checks everything a later stage would otherwise trip over, raising
`InputError` that names the file and the problem.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from typing import Any, Sequence

import nibabel as nib
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
import numpy as np

from jaxseg.errors import InputError

MODALITIES = ('flair', 't1', 't1ce', 't2')

# The one channel of a grey image whose MR sequence is not named (the COCO
# set): it answers a config asking for any single modality.
GREY = 'grey'

# BraTS 2023+ file suffixes -> canonical (BraTS 2019) names.
BRATS23_SUFFIXES = {'t2f': 'flair', 't1n': 't1', 't1c': 't1ce', 't2w': 't2'}

# Any spelling we accept for a modality name (lower case) -> canonical name.
MODALITY_ALIASES = {
    'flair': 'flair', 't2f': 'flair', 't2-flair': 'flair', 't2flair': 'flair',
    't1': 't1', 't1n': 't1', 't1w': 't1', 'native t1': 't1',
    't1ce': 't1ce', 't1c': 't1ce', 't1gd': 't1ce', 't1-gd': 't1ce',
    't1post': 't1ce', 't1-ce': 't1ce',
    't2': 't2', 't2w': 't2',
    'grey': GREY, 'gray': GREY,
}

BRATS19_LABELS = (0, 1, 2, 4)
BRATS23_LABELS = (0, 1, 2, 3)
BINARY_LABELS = (0, 1)

_NIFTI_EXTS = ('.nii.gz', '.nii')
_SPLITS = ('training', 'validation', 'test')
# Errors nibabel and zlib raise on a missing, corrupt or truncated file.
_READ_ERRORS = (EOFError, OSError, zlib.error, ImageFileError, HeaderDataError,
                ValueError)
# A float label voxel further than this from an integer is an error.
_LABEL_ATOL = 1e-3


@dataclasses.dataclass(frozen=True)
class Case:
  """One case: where its channel and label files are.

  Attributes:
    case_id: the case name (folder name, or derived from the datalist entry).
    images: canonical modality name -> NIfTI path.
    label: path of the label volume, or None when the case has no label.
    label_values: the label values allowed on disk: (0, 1, 2, 4) for BraTS
      2018-21, (0, 1, 2, 3) for BraTS 2023+, (0, 1) for binary masks.
    et_label: the value of enhancing tumour (4 or 3), None for binary masks.
    split: 'training', 'validation' or 'test' for datalist cases, else None.
    source: the case folder or datalist file, named in error messages.
    reader: the key in `jaxseg.data.formats.READERS` of the module that reads
      this case ('nifti' for the BraTS folders and datalists).
    channel_index: for multi-channel files (4D NIfTI, RGB TIFF, stacked
      .npy), modality -> index of its channel in the file; None when each
      modality has a file of its own.
    label_map: ((on-disk value, value in `label_values`), ...) for every
      allowed on-disk value, when the file's convention differs from the one
      the label is used in (Decathlon: oedema 1 -> 2, non-enhancing 2 -> 1,
      enhancing 3 -> 4; BraTS 2015: non-enhancing 3 -> 1; masks 255 -> 1).
      Empty: the on-disk values are `label_values` themselves.
    key: reader-specific locator inside `source` (the COCO image file name).
  """
  case_id: str
  images: dict[str, str]
  label: str | None
  label_values: tuple[int, ...]
  et_label: int | None
  split: str | None = None
  source: str | None = None
  reader: str = 'nifti'
  channel_index: dict[str, int] | None = None
  label_map: tuple[tuple[int, int], ...] = ()
  key: str | None = None

  @property
  def disk_values(self) -> tuple[int, ...]:
    """The label values allowed in the label file."""
    if self.label_map:
      return tuple(sorted(d for d, _ in self.label_map))
    return tuple(self.label_values)

  def to_disk(self, label: np.ndarray) -> np.ndarray:
    """A label in `label_values` back to the file's convention (to write it).

    Where several on-disk values share one value (BraTS 2015's 1 and 3), the
    smallest on-disk value is written.
    """
    if not self.label_map:
      return label
    table = {}
    for disk, value in sorted(self.label_map, reverse=True):
      table[value] = disk
    out = np.zeros_like(label)
    for value, disk in table.items():
      out[label == value] = disk
    return out


@dataclasses.dataclass
class Volume:
  """One case read from disk.

  Attributes:
    image: float32 (H, W, D, C), channels in the order of `modalities`.
      2D formats stack a patient's slices along D (one image: D = 1).
    label: uint8 (H, W, D) in `case.label_values` (after `case.label_map`),
      or None.
    affine: float64 (4, 4) voxel-to-world matrix of the first channel (RAS,
      as NIfTI; pixel spacing on the diagonal for 2D formats).
    header: the nibabel header of the first channel (to write predictions);
      None for formats other than NIfTI.
    case_id: the case name.
    modalities: the channel names, in order.
  """
  image: np.ndarray
  label: np.ndarray | None
  affine: np.ndarray
  header: Any
  case_id: str
  modalities: tuple[str, ...] = ()


def canonical_modality(name: str) -> str:
  """Maps any accepted spelling ('T1Gd', 't2f', 'FLAIR') to the BraTS 2019 name.

  Unknown names are returned lower-cased, so a datalist may carry other
  channels (e.g. 'adc') under their own name.
  """
  key = str(name).strip().lower()
  return MODALITY_ALIASES.get(key, key)


def discover_cases(root: str) -> list[Case]:
  """Finds the cases under `root`, auto-detecting the layout.

  Args:
    root: a datalist `.json` file, a folder holding `dataset.json`, or a folder
      of BraTS 2018-21 or BraTS 2023+ case folders.

  Returns:
    The cases; case folders sorted by id, datalist cases in file order
    (training, then validation, then test).
  """
  root = os.fspath(root)
  if not os.path.exists(root):
    raise InputError(root, 'does not exist')
  if os.path.isfile(root):
    if root.lower().endswith('.json'):
      return _datalist_cases(root)
    raise InputError(root, 'is a file, not a datalist .json or a data folder')
  datalist = os.path.join(root, 'dataset.json')
  if os.path.isfile(datalist):
    return _datalist_cases(datalist)
  from jaxseg.data import formats  # pylint: disable=g-import-not-at-top
  layout = formats.detect_layout(root)
  if layout is not None:
    return layout.discover(root)
  cases = []
  for name in sorted(os.listdir(root)):
    folder = os.path.join(root, name)
    if name.startswith('.') or not os.path.isdir(folder):
      continue
    case = _folder_case(folder)
    if case is not None:
      cases.append(case)
  if not cases:
    raise InputError(
        root,
        'no cases found: expected a datalist (dataset.json or a .json path), '
        'BraTS 2018-21 case folders (<id>/<id>_flair.nii.gz, _t1, _t1ce, _t2, '
        '_seg), BraTS 2023+ case folders (<id>/<id>-t2f.nii.gz, -t1n, -t1c, '
        '-t2w, -seg), or one of: ' + formats.describe_layouts())
  return cases


def discover_input(path: str) -> list[Case]:
  """The cases of an inference input: one case folder, or what `discover_cases` finds.

  Args:
    path: a BraTS case folder (`<id>/<id>_flair.nii.gz`, ... or the 2023
      names), a folder of case folders, or a datalist.
  """
  path = os.fspath(path)
  if os.path.isdir(path) and not os.path.isfile(os.path.join(path, 'dataset.json')):
    case = _folder_case(path)
    if case is not None:
      return [case]
  return discover_cases(path)


def _strip_nifti_ext(filename: str) -> str | None:
  """'a_t1.nii.gz' -> 'a_t1'; None if not a NIfTI file name."""
  lower = filename.lower()
  for ext in _NIFTI_EXTS:
    if lower.endswith(ext):
      return filename[:-len(ext)]
  return None


def _folder_case(folder: str) -> Case | None:
  """Reads one BraTS-style case folder; None if it holds no BraTS files."""
  case_id = os.path.basename(os.path.normpath(folder))
  found19: dict[str, list[str]] = {}
  found23: dict[str, list[str]] = {}
  for filename in sorted(os.listdir(folder)):
    path = os.path.join(folder, filename)
    stem = _strip_nifti_ext(filename)
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
  labels = BRATS19_LABELS if has19 else BRATS23_LABELS
  return Case(
      case_id=case_id,
      images={m: files[m] for m in MODALITIES if m in files},
      label=label,
      label_values=labels,
      et_label=labels[-1],
      split=None,
      source=folder)


# Words in a datalist's label names -> the BraTS 2017+ value of that region.
_LABEL_WORDS = (
    (('background', 'healthy', 'normal'), 0),
    (('non-enhancing', 'non enhancing', 'nonenhancing', 'necro', 'ncr', 'net',
      'core'), 1),
    (('edema', 'oedema', 'ed', 'peritumoral'), 2),
    (('enhancing', 'et'), 4),
)


def _brats_value(name: str) -> int | None:
  """'non-enhancing tumor' -> 1, 'edema' -> 2, 'enhancing tumour' -> 4."""
  name = str(name).strip().lower()
  words = name.replace('/', ' ').replace('_', ' ').replace('-', ' ').split()
  for keys, value in _LABEL_WORDS:
    for key in keys:
      if (' ' in key or '-' in key) and key in name:
        return value
      if key in words or (len(key) > 3 and any(w.startswith(key) for w in words)):
        return value
  return None


def label_convention(labels: Any, where: str
                         ) -> tuple[tuple[int, ...], int | None,
                                    tuple[tuple[int, int], ...]]:
  """(label values, enhancing-tumour value, label_map) from the "labels" dict.

  Names are matched to BraTS regions, so the Decathlon's Task01 order
  (1 oedema, 2 non-enhancing, 3 enhancing) is mapped to BraTS 2017+ values
  (2, 1, 4); BraTS 2017+ ({1, 2, 4}) and BraTS 2023+ ({1, 2, 3}) conventions
  are kept as they are. Two values are a binary mask.
  """
  if labels is None:
    return BRATS19_LABELS, 4, ()
  if not isinstance(labels, dict):
    raise InputError(where, '"labels" must be a dict like {"0": "background"}')
  try:
    values = tuple(sorted(int(k) for k in labels))
  except ValueError:
    raise InputError(where, f'"labels" keys must be integers, got '
                     f'{sorted(labels)}') from None
  if len(values) <= 2:
    return values, None, ()
  named = {int(k): _brats_value(v) for k, v in labels.items()}
  if None not in named.values() and len(set(named.values())) == len(named):
    mapping = tuple(sorted(named.items()))
    if all(d == v for d, v in mapping):
      return values, 4, ()                            # BraTS 2017-21
    if dict(mapping) != {0: 0, 1: 1, 2: 2, 3: 4}:     # not BraTS 2023+
      return tuple(sorted(named.values())), 4, mapping
  et = None
  for key, name in labels.items():
    name = str(name).lower()
    if 'enhanc' in name and 'non' not in name:
      et = int(key)
  if et is None:
    et = 4 if 4 in values else max(values)
  return values, et, ()


def _case_id_from_path(path: str, modalities: Sequence[str]) -> str:
  """'X/Brats18_1/Brats18_1_flair.nii.gz' -> 'Brats18_1'."""
  stem = _strip_nifti_ext(os.path.basename(path)) or os.path.basename(path)
  for sep in ('_', '-'):
    if sep in stem:
      head, suffix = stem.rsplit(sep, 1)
      known = (canonical_modality(suffix) in MODALITIES or
               suffix.lower() in modalities)
      nnunet = suffix.isdigit() and len(suffix) == 4  # x_0000.nii.gz
      if known or nnunet:
        return head
  return stem


def _datalist_cases(path: str) -> list[Case]:
  """Reads a Decathlon/MONAI-style datalist."""
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise InputError(path, f'malformed JSON: {e}') from None
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(path, f'cannot read the datalist: {e}') from None
  if not isinstance(data, dict):
    raise InputError(path, 'a datalist must be a JSON object with a '
                     '"training" list')
  if not any(isinstance(data.get(s), list) for s in _SPLITS):
    raise InputError(path, 'no "training", "validation" or "test" list of '
                     '{"image": ..., "label": ...} entries')
  modality = data.get('modality')
  if modality is None:
    names = None
  elif isinstance(modality, dict):
    try:
      items = sorted(modality.items(), key=lambda kv: int(kv[0]))
    except ValueError:
      raise InputError(path, '"modality" keys must be channel indices like '
                       '"0", "1"') from None
    names = [canonical_modality(v) for _, v in items]
    if len(set(names)) != len(names):
      raise InputError(path, f'"modality" names repeat: {names}')
  else:
    raise InputError(path, '"modality" must be a dict like {"0": "FLAIR"}')
  label_values, et_label, label_map = label_convention(data.get('labels'),
                                                          path)
  base = os.path.dirname(os.path.abspath(path))

  def resolve(p: Any, what: str, index: int, split: str) -> str:
    if not isinstance(p, str) or not p:
      raise InputError(path, f'{split}[{index}] "{what}" must be a path '
                       f'string, got {p!r}')
    full = os.path.normpath(os.path.join(base, p))
    if not os.path.isfile(full):
      raise InputError(full, f'listed in {path} ({split}[{index}]) but does '
                       'not exist')
    return full

  cases = []
  seen = set()
  for split in _SPLITS:
    entries = data.get(split)
    if entries is None:
      continue
    if not isinstance(entries, list):
      raise InputError(path, f'"{split}" must be a list of entries')
    for i, entry in enumerate(entries):
      if isinstance(entry, str):  # Decathlon "test": ["./imagesTs/x.nii.gz"]
        entry = {'image': entry}
      if not isinstance(entry, dict) or 'image' not in entry:
        raise InputError(path, f'{split}[{i}] must be an object with "image"')
      image = entry['image']
      paths = [image] if isinstance(image, str) else image
      if not isinstance(paths, list) or not paths:
        raise InputError(path, f'{split}[{i}] "image" must be a path or a '
                         'non-empty list of paths')
      paths = [resolve(p, 'image', i, split) for p in paths]
      channel_index = None
      if names is None:
        mods = [f'ch{c}' for c in range(len(paths))]
      elif len(paths) == 1 and len(names) > 1:
        # One 4D (H, W, D, C) file, as the Decathlon's imagesTr.
        mods = names
        paths = paths * len(names)
        channel_index = {m: c for c, m in enumerate(names)}
      elif len(names) != len(paths):
        raise InputError(path, f'{split}[{i}] lists {len(paths)} image files '
                         f'but "modality" names {len(names)} channels')
      else:
        mods = names
      label = entry.get('label')
      label = None if label is None else resolve(label, 'label', i, split)
      case_id = entry.get('case_id', entry.get('id'))
      if case_id is None:
        case_id = _case_id_from_path(paths[0], mods)
      case_id = str(case_id)
      if case_id in seen:
        case_id = f'{case_id}_{split}{i}'
      seen.add(case_id)
      cases.append(Case(
          case_id=case_id,
          images=dict(zip(mods, paths)),
          label=label,
          label_values=label_values,
          et_label=et_label,
          split=split,
          source=path,
          channel_index=channel_index,
          label_map=label_map))
  if not cases:
    raise InputError(path, 'the datalist has no entries')
  return cases


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


def check_finite(data: np.ndarray, path: str):
  """InputError naming `path` if a float array holds NaN or Inf."""
  if data.dtype.kind == 'f':
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
      raise InputError(path, f'contains {bad} NaN/Inf voxels')


# Channels whose voxel-to-world matrices differ by more than this (mm) are
# not co-registered.
_AFFINE_ATOL = 1e-3


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


def _where(case: Case) -> str:
  return case.source or (os.path.dirname(next(iter(case.images.values())))
                         if case.images else case.case_id)


def _check_modalities(case: Case, modalities: Sequence[str]) -> list[str]:
  """The canonical names of `modalities`; InputError if the case lacks one."""
  mods = [canonical_modality(m) for m in modalities]
  if not mods:
    raise InputError(_where(case), 'no modalities requested')
  if list(case.images) == [GREY] and len(mods) == 1:
    return [GREY]      # a grey image of unnamed sequence serves one channel
  for m in mods:
    if m not in case.images:
      has = ', '.join(case.images) or 'none'
      raise InputError(_where(case), f"case {case.case_id} has no '{m}' "
                       f'channel (has: {has})')
  return mods


def check_case(case: Case, modalities: Sequence[str]) -> tuple[int, int, int]:
  """Checks a case's files from their headers alone; returns (H, W, D).

  The cheap half of `load_case` (every channel present, readable headers,
  one shape and affine), to vet a whole set before any output is written.
  """
  mods = _check_modalities(case, modalities)
  if case.reader != 'nifti':
    from jaxseg.data import formats  # pylint: disable=g-import-not-at-top
    return formats.reader(case.reader).check(case, mods)
  return _open_checked(case, [case.images[m] for m in mods])[2]


def load_case(case: Case, modalities: Sequence[str]) -> Volume:
  """Reads and checks one case, in whatever format its reader handles.

  Args:
    case: from `discover_cases`.
    modalities: channel names in the wanted order (any accepted spelling, e.g.
      'flair' or 't2f').

  Returns:
    A `Volume`: image float32 (H, W, D, C), label uint8 (H, W, D) or None.
  """
  mods = _check_modalities(case, modalities)
  if case.reader != 'nifti':
    from jaxseg.data import formats  # pylint: disable=g-import-not-at-top
    return formats.reader(case.reader).load(case, mods)
  paths = [case.images[m] for m in mods]
  imgs, label_img, shape = _open_checked(case, paths)

  image = np.empty(shape + (len(paths),), np.float32)
  index = case.channel_index
  for c, (m, img, p) in enumerate(zip(mods, imgs, paths)):
    data = _read(img, p, shape, np.float32,
                 None if index is None else index[m])
    check_finite(data, p)
    image[..., c] = data

  label = None
  if label_img is not None:
    label = check_label(_read(label_img, case.label, shape), case)
  return Volume(
      image=image,
      label=label,
      affine=np.asarray(imgs[0].affine, np.float64),
      header=imgs[0].header,
      case_id=case.case_id,
      modalities=tuple(mods))


def check_label(data: np.ndarray, case: Case, path: str | None = None
                ) -> np.ndarray:
  """Checks a label read from disk; returns it uint8 in `case.label_values`.

  A float label is rounded (voxels further than 1e-3 from an integer are an
  error); values outside `case.disk_values` are an error; `case.label_map` is
  then applied. `path` (default `case.label`) is named in errors.
  """
  path = path or case.label
  if data.dtype.kind == 'f':
    check_finite(data, path)
    rounded = np.rint(data)
    off = np.abs(data - rounded) > _LABEL_ATOL
    if off.any():
      examples = np.unique(data[off])[:5].tolist()
      raise InputError(path, f'label has {int(off.sum())} non-integer voxels '
                       f'(e.g. {examples}); labels must be whole numbers')
    data = rounded
  elif data.dtype.kind not in 'iub':
    raise InputError(path, f'label dtype {data.dtype} is not numeric')
  allowed = np.asarray(case.disk_values)
  bad = ~np.isin(data, allowed)
  if bad.any():
    values = [int(v) for v in np.unique(data[bad])[:10]]
    raise InputError(path, f'label values {values} outside the convention '
                     f'{tuple(case.disk_values)}')
  if not case.label_map:
    return data.astype(np.uint8)
  out = np.zeros(data.shape, np.uint8)
  for disk, value in case.label_map:
    if value:
      out[data == disk] = value
  return out
