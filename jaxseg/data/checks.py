"""Checks of a case's voxels, whatever its format: finite intensities, valid labels, a label that is a label.

* `check_finite(data, path)`: NaN/Inf voxels are an error naming the file.
* `check_label(data, case)`: a label read from disk, rounded and checked
  against the case's convention, mapped to `case.scheme.values`.
* `check_label_not_copy(volume, where)`: the label-copy guard below, an error
  when training data is prepared; the dataset inspector reports the same
  scores (`copy_scores`) as a warning.

The label-copy guard (`copy_scores`), per channel, on the label as loaded
(volumes above 2**21 voxels strided in H and W first, every axial slice
kept: about 0.1 s for a 240x240x155 case of 4 channels):

* |Pearson r| between label values and channel intensities over the brain
  voxels >= `COPY_CORRELATION` (0.98): an exact, rescaled or shifted copy (r
  is invariant to a * x + b), e.g. an integer image whose values happen to
  be valid label values, so that the label-value check let it through. Over
  the brain, not all voxels: where the tumour fills most of the brain, the
  zero background alone makes r large (0.97 on the 32^3 synthetic set).
* Dice between the label foreground (label > 0) and the channel's mask
  (channel != 0, or channel > 0 where resampling left negative values) or
  the brain mask (any channel != 0) >= `COPY_DICE` (0.99): a binarised
  copy. A tumour that is a fraction f of the brain scores 2f / (1 + f): 0.99 needs f >= 0.98.

Measured maxima of real labels: |r| 0.77 and mask Dice 0.27 on the
BraTS 2018/2019/2021 sample cases (tumour <= 16 % of the brain); the synthetic sets, whose
tumours fill up to 96 % of a 32^3 brain, reach |r| 0.89 and mask Dice 0.98.
Not flagged, deliberately: a binarisation at a higher threshold, which cannot
be told from an annotation drawn by thresholding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from jaxseg.data.case import Case, Volume
from jaxseg.errors import InputError

# A float label voxel further than this from an integer is an error.
_LABEL_ATOL = 1e-3
COPY_CORRELATION = 0.98
COPY_DICE = 0.99
# The guard strides larger volumes in H and W down to about this many voxels.
_GUARD_MAX_VOXELS = 2 ** 21
OWN_MASK = 'non-zero mask'
BRAIN_MASK = 'brain mask (any channel != 0)'


def check_finite(data: np.ndarray, path: str):
  """InputError naming `path` if a float array holds NaN or Inf."""
  if data.dtype.kind == 'f':
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
      raise InputError(path, f'contains {bad} NaN/Inf voxels')



def check_label(data: np.ndarray, case: Case, path: str | None = None
                ) -> np.ndarray:
  """Checks a label read from disk; returns it uint8 in `case.scheme.values`.

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




@dataclasses.dataclass(frozen=True)
class CopyScore:
  """How much the label looks like one input channel.

  Attributes:
    channel: the channel index.
    correlation: |Pearson r| between label values and channel intensities
      over the brain voxels (any channel != 0); 0 where either is constant.
    mask_dice: Dice between label > 0 and a mask: the best of channel != 0,
      channel > 0 and the brain mask (any channel != 0).
    mask: the mask of `mask_dice`, in words.
  """
  channel: int
  correlation: float
  mask_dice: float
  mask: str = 'non-zero mask'   # OWN_MASK or BRAIN_MASK

  @property
  def is_copy(self) -> bool:
    return (self.correlation >= COPY_CORRELATION or
            self.mask_dice >= COPY_DICE)

  @property
  def measure(self) -> str:
    """'correlation' or 'mask_dice': the one that flags it (else the larger)."""
    flags_r = self.correlation >= COPY_CORRELATION
    if flags_r != (self.mask_dice >= COPY_DICE):
      return 'correlation' if flags_r else 'mask_dice'
    return 'correlation' if self.correlation >= self.mask_dice else 'mask_dice'

  @property
  def score(self) -> float:
    return getattr(self, self.measure)

  def describe(self) -> str:
    """'correlation 0.999' or 'foreground Dice 0.995 with its non-zero mask'."""
    if self.measure == 'correlation':
      return f'correlation {self.correlation:.3f}'
    return f'foreground Dice {self.mask_dice:.3f} with its {self.mask}'


def _strided(image: np.ndarray, label: np.ndarray):
  """Views of (H, W, D, C) and (H, W, D) strided in H, W to ~_GUARD_MAX_VOXELS."""
  stride = max(1, math.ceil(math.sqrt(label.size / _GUARD_MAX_VOXELS)))
  return image[::stride, ::stride], label[::stride, ::stride]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson r of two same-size arrays (float64 sums); 0 if either is constant."""
  x = np.asarray(x, np.float64).ravel()
  y = np.asarray(y, np.float64).ravel()
  x = x - x.mean()
  y = y - y.mean()
  denom = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
  return float(np.dot(x, y)) / denom if denom > 0 else 0.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
  """Dice of two boolean masks; 0 when both are empty."""
  total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
  return 2.0 * int(np.count_nonzero(a & b)) / total if total else 0.0


def copy_scores(image: np.ndarray, label: np.ndarray) -> list[CopyScore]:
  """The copy measures of the label against each channel (module docstring).

  Args:
    image: (H, W, D, C) channels.
    label: (H, W, D) label values.
  """
  if image.shape[:3] != label.shape:
    raise ValueError(f'image {image.shape} and label {label.shape} differ')
  image, label = _strided(image, label)
  brain = np.any(image != 0, axis=-1)
  if not brain.any():
    brain = np.ones_like(brain)
  foreground = label > 0
  inside = label[brain]
  brain_dice = dice(foreground, brain)
  scores = []
  for c in range(image.shape[-1]):
    channel = image[..., c]
    own = max(dice(foreground, channel != 0), dice(foreground, channel > 0))
    scores.append(CopyScore(
        channel=c, correlation=abs(pearson(channel[brain], inside)),
        mask_dice=max(own, brain_dice),
        mask=OWN_MASK if own >= brain_dice else BRAIN_MASK))
  return scores


def label_copies_channel(image: np.ndarray, label: np.ndarray
                         ) -> tuple[int, float] | None:
  """(channel index, score) of the channel the label (nearly) copies, or None.

  Args:
    image: (H, W, D, C) channels.
    label: (H, W, D) label values.

  Returns:
    The channel with the highest flagging score (|Pearson r| >=
    COPY_CORRELATION or mask Dice >= COPY_DICE, see the module docstring)
    and that score, or None when no channel reaches them.
  """
  found = _worst_copy(copy_scores(image, label))
  return None if found is None else (found.channel, found.score)


def _worst_copy(scores: Sequence[CopyScore]) -> CopyScore | None:
  copies = [s for s in scores if s.is_copy]
  # Ties (channels sharing one mask; the brain mask is every channel's) go
  # to the best correlation, then to a channel's own mask.
  return (max(copies, key=lambda s: (s.score, s.correlation,
                                     s.mask == OWN_MASK))
          if copies else None)


def channel_name(volume: Volume, c: int) -> str:
  return volume.modalities[c] if c < len(volume.modalities) else f'channel {c}'


def copy_problem(volume: Volume) -> dict | None:
  """{'channel', 'score', 'measure', 'message'} if the label copies a channel."""
  if volume.label is None:
    return None
  found = _worst_copy(copy_scores(volume.image, volume.label))
  if found is None:
    return None
  name = channel_name(volume, found.channel)
  return dict(
      channel=name, score=round(found.score, 6),
      measure=found.measure,
      message=(f"the label of case {volume.case_id} equals (nearly) channel "
               f"'{name}' ({found.describe()}): labels loaded as a copy of the "
               "image (seed 000's bug); check the label path"))


def check_label_not_copy(volume: Volume, where) -> None:
  """InputError(where, ...) if the label (nearly) copies an input channel.

  Args:
    volume: a case from `sources.load_case`; no label: nothing to check.
    where: what the error names, e.g. the label file.
  """
  problem = copy_problem(volume)
  if problem is not None:
    raise InputError(where, problem['message'])

