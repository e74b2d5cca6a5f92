"""What a case is, whatever its file format: `Case` (where its files are) and `Volume` (its voxels).

Modalities always carry the BraTS 2019 names 'flair', 't1', 't1ce', 't2'
(`canonical_modality` maps every accepted spelling); labels are read into one
label scheme per case (`Case.scheme`, a `jaxseg.labels.LabelScheme`). This
module imports nothing else of jaxseg.data, so every reader can import it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxseg.labels import LabelScheme

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



@dataclasses.dataclass(frozen=True)
class Case:
  """One case: where its channel and label files are.

  Attributes:
    case_id: the case name (folder name, or derived from the datalist entry).
    images: canonical modality name -> NIfTI path.
    label: path of the label volume, or None when the case has no label.
    scheme: the label scheme the label is used in (`labels.BRATS`,
      `labels.BRATS23`, `labels.BINARY`, ...): its values and their meaning.
    split: 'training', 'validation' or 'test' for datalist cases, else None.
    source: the case folder or datalist file, named in error messages.
    reader: the key in `jaxseg.data.formats.READERS` of the module that reads
      this case ('nifti' for the BraTS folders and datalists).
    channel_index: for multi-channel files (4D NIfTI, RGB TIFF, stacked
      .npy), modality -> index of its channel in the file; None when each
      modality has a file of its own.
    label_map: ((on-disk value, value in `scheme.values`), ...) for every
      allowed on-disk value, when the file's convention differs from the one
      the label is used in (`scheme.values`; Decathlon: oedema 1 -> 2, non-enhancing 2 -> 1,
      enhancing 3 -> 4; BraTS 2015: non-enhancing 3 -> 1; masks 255 -> 1).
      Empty: the on-disk values are `scheme.values` themselves.
    key: reader-specific locator inside `source` (the COCO image file name).
    fold: the cross-validation fold a datalist assigns the case, or None.
    options: ((name, value), ...) the reader's options (`config.data.formats`)
      the case was discovered with, for `load`.
  """
  case_id: str
  images: dict[str, str]
  label: str | None
  scheme: LabelScheme
  split: str | None = None
  source: str | None = None
  reader: str = 'nifti'
  channel_index: dict[str, int] | None = None
  label_map: tuple[tuple[int, int], ...] = ()
  key: str | None = None
  fold: int | None = None
  options: tuple = ()

  @property
  def disk_values(self) -> tuple[int, ...]:
    """The label values allowed in the label file."""
    if self.label_map:
      return tuple(sorted(d for d, _ in self.label_map))
    return tuple(self.scheme.values)

  def to_disk(self, label: np.ndarray) -> np.ndarray:
    """A label in `scheme.values` back to the file's convention (to write it).

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
    label: uint8 (H, W, D) in `case.scheme.values` (after `case.label_map`),
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




