"""Find the cases under a root and read one case, whatever the format.

    discover_cases(root)   -> [Case]   a datalist, or the first reader whose
                                       layout the folder holds
    discover_input(path)   -> [Case]   the same, or one BraTS case folder
    check_case(case, mods) -> (H, W, D) headers only, before any output
    load_case(case, mods)  -> Volume    float32 (H, W, D, C), uint8 label

Every format is a reader module behind the one `Case` interface
(`jaxseg.data.formats`: NIfTI BraTS folders, BraTS 2015 .mha, LGG TIFF,
COCO, NumPy slices); JSON datalists are read by `jaxseg.data.datalist`.
`Case`, `Volume` and the label conventions live in `jaxseg.data.case`, the
voxel checks in `jaxseg.data.checks`; they are re-exported here, so that
`sources` is the one import a caller needs.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from jaxseg.data import datalist
from jaxseg.data import formats
from jaxseg.data.case import (BRATS23_SUFFIXES, GREY, MODALITIES,
                              MODALITY_ALIASES, Case, Volume,
                              canonical_modality)
from jaxseg.data.checks import check_finite, check_label
from jaxseg.data.formats import nifti
from jaxseg.errors import InputError

__all__ = [
    'BRATS23_SUFFIXES', 'GREY', 'MODALITIES', 'MODALITY_ALIASES', 'Case', 'Volume',
    'canonical_modality', 'check_case', 'check_finite', 'check_label',
    'discover_cases', 'discover_input', 'load_case', 'voxel_spacing',
]


def _reader_options(formats_config, reader: str) -> dict:
  """The options of one reader from `config.data.formats` (None: defaults)."""
  if formats_config is None:
    return {}
  if hasattr(formats_config, 'to_dict'):
    formats_config = formats_config.to_dict()
  return dict(formats_config.get(reader) or {})


def discover_cases(root: str, formats_config=None) -> list[Case]:
  """Finds the cases under `root`, auto-detecting the layout.

  Args:
    root: a datalist `.json` file, a folder holding `dataset.json`, or a
      folder in one of the readers' layouts (`formats.describe_layouts()`).
    formats_config: `config.data.formats`: per reader key, its options
      (e.g. the COCO reader's grey tolerance); None: the readers' defaults.

  Returns:
    The cases; case folders sorted by id, datalist cases in file order
    (training, then validation, then test).
  """
  root = os.fspath(root)
  if not os.path.exists(root):
    raise InputError(root, 'does not exist')
  if os.path.isfile(root):
    if root.lower().endswith('.json'):
      return datalist.read(root)
    raise InputError(root, 'is a file, not a datalist .json or a data folder')
  if os.path.isfile(os.path.join(root, datalist.FILE_NAME)):
    return datalist.read(os.path.join(root, datalist.FILE_NAME))
  layout = formats.detect_layout(root)
  if layout is None:
    raise InputError(
        root, 'no cases found: expected a datalist (dataset.json or a .json '
        'path) or one of: ' + formats.describe_layouts())
  name = layout.__name__.rsplit('.', 1)[-1]
  return layout.discover(root, **_reader_options(formats_config, name))


def discover_input(path: str, formats_config=None) -> list[Case]:
  """The cases of an inference input: one case folder, or what `discover_cases` finds.

  Args:
    path: a BraTS case folder (`<id>/<id>_flair.nii.gz`, ... or the 2023
      names), a folder of case folders, or a datalist.
  """
  path = os.fspath(path)
  if (os.path.isdir(path) and
      not os.path.isfile(os.path.join(path, datalist.FILE_NAME))):
    case = nifti.folder_case(path)
    if case is not None:
      return [case]
  return discover_cases(path, formats_config)


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
  return formats.reader(case.reader).check(case, mods)


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
  return formats.reader(case.reader).load(case, mods)


def voxel_spacing(volume: Volume, where: str) -> tuple[float, ...]:
  """Voxel size in mm per axis (3,) from the NIfTI header of a loaded case."""
  if volume.header is not None and hasattr(volume.header, 'get_zooms'):
    zooms = tuple(float(z) for z in volume.header.get_zooms()[:3])
  else:
    zooms = tuple(float(z) for z in np.linalg.norm(volume.affine[:3, :3], axis=0))
  if len(zooms) != 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
    raise InputError(where, f'voxel spacing {zooms} in the NIfTI header must '
                     'be three positive numbers (mm)')
  return zooms
