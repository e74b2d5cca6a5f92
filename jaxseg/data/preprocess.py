"""Per-case preprocessing: brain crop, z-score, label convention -> targets, slices.

Seed 002 (section 3.1.1): the modalities are stacked, normalised and the
background is cropped away, giving 64x64x4 slices. Here, per case:

  1. the in-plane bounding box of brain voxels (non-zero in any channel) over
     all axial slices is found and grown to a square (`CropBox`);
  2. each channel is z-scored over its brain voxels, background stays 0
     (`normalization='case'`), or with per-channel statistics measured on the
     training split only (`'dataset'`, see `dataset_statistics`);
  3. every axial slice of the box is resized to `image_size` squared
     (bilinear for images, nearest for labels);
  4. the label, in the case's own scheme (BraTS 0/1/2/4, BraTS 2023
     0/1/2/3, or binary 0/1), becomes the training target of `label_mode`
     (`LabelScheme.targets`).

`CropBox.paste` undoes steps 1 and 3 for predictions, so that scores and
written segmentations live on the original voxel grid.

For 3D models (`data.dims = 3`) the slice stack of a case is also resized
along the axial axis to `depth` slices (`case_to_volume`), so every case is
one (depth, size, size, C) volume (seed 000: 96 x 144 x 144);
`volume_to_grid` undoes it.
"""

import dataclasses
from typing import Sequence

import numpy as np
from scipy import ndimage

from jaxseg.labels import LabelScheme

def model_input_shape(data_config) -> tuple:
  """One model input: (size, size, C), or the 3D patch or volume + (C,)."""
  channels = len(data_config.modalities)
  if data_config.dims == 2:
    return (data_config.image_size,) * 2 + (channels,)
  spatial = data_config.patch_size or (data_config.depth,
                                       data_config.image_size,
                                       data_config.image_size)
  return tuple(spatial) + (channels,)


@dataclasses.dataclass(frozen=True)
class CropBox:
  """A square in-plane box (x0:x0+size, y0:y0+size) on a (H, W, D) grid.

  The box may reach outside the image when the brain is wider than the image
  is high; those voxels are read as 0.
  """
  x0: int
  y0: int
  size: int
  shape: tuple[int, int, int]   # (H, W, D) of the original grid

  @classmethod
  def around_brain(cls, image: np.ndarray) -> 'CropBox':
    """The smallest centred square holding every non-zero voxel of (H, W, D, C)."""
    brain = np.any(image != 0, axis=(2, 3))
    h, w = brain.shape
    if not brain.any():
      return cls(0, 0, max(h, w), image.shape[:3])
    xs, ys = np.nonzero(brain.any(axis=1))[0], np.nonzero(brain.any(axis=0))[0]
    size = int(max(xs[-1] - xs[0], ys[-1] - ys[0]) + 1)
    cx, cy = (xs[0] + xs[-1] + 1) // 2, (ys[0] + ys[-1] + 1) // 2
    return cls(int(cx - size // 2), int(cy - size // 2), size, image.shape[:3])

  def crop(self, volume: np.ndarray) -> np.ndarray:
    """(H, W, D, ...) -> (size, size, D, ...), zero outside the image."""
    h, w = self.shape[:2]
    out = np.zeros((self.size, self.size) + volume.shape[2:], volume.dtype)
    sx0, sy0 = max(self.x0, 0), max(self.y0, 0)
    sx1, sy1 = min(self.x0 + self.size, h), min(self.y0 + self.size, w)
    out[sx0 - self.x0:sx1 - self.x0, sy0 - self.y0:sy1 - self.y0] = (
        volume[sx0:sx1, sy0:sy1])
    return out

  def paste(self, cropped: np.ndarray) -> np.ndarray:
    """(size, size, D, ...) -> (H, W, D, ...), zero outside the box."""
    h, w = self.shape[:2]
    out = np.zeros((h, w) + cropped.shape[2:], cropped.dtype)
    sx0, sy0 = max(self.x0, 0), max(self.y0, 0)
    sx1, sy1 = min(self.x0 + self.size, h), min(self.y0 + self.size, w)
    out[sx0:sx1, sy0:sy1] = cropped[sx0 - self.x0:sx1 - self.x0,
                                    sy0 - self.y0:sy1 - self.y0]
    return out


def resize_slices(volume: np.ndarray, size: int, order: int) -> np.ndarray:
  """Resizes the first two axes of (S, S, D, ...) to (size, size, D, ...)."""
  factor = size / volume.shape[0]
  zoom = (factor, factor) + (1.0,) * (volume.ndim - 2)
  return ndimage.zoom(volume, zoom, order=order, mode='nearest', grid_mode=True)


def brain_mask(image: np.ndarray) -> np.ndarray:
  """(H, W, D, C) -> bool (H, W, D): voxels non-zero in any channel."""
  return np.any(image != 0, axis=-1)


def zscore(image: np.ndarray, mean: np.ndarray | None = None,
           std: np.ndarray | None = None) -> np.ndarray:
  """Z-scores each channel over brain voxels; background stays 0.

  Args:
    image: (H, W, D, C) float32.
    mean, std: (C,) statistics to use; by default each channel's own brain
      mean and standard deviation (per-case normalisation).
  """
  brain = brain_mask(image)
  if not brain.any():
    return np.zeros_like(image)
  values = image[brain]                       # (V, C)
  mean = values.mean(axis=0) if mean is None else mean
  std = values.std(axis=0) if std is None else std
  out = (image - mean) / np.maximum(std, 1e-6)
  out[~brain] = 0.0
  return out.astype(np.float32)


def dataset_statistics(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std over the brain voxels of several (H, W, D, C) cases.

  Call it with the training cases only: validation and test cases are then
  normalised with statistics they did not contribute to.
  """
  count, total, total_sq = 0, 0.0, 0.0
  for image in images:
    values = image[brain_mask(image)].astype(np.float64)
    count += len(values)
    total = total + values.sum(axis=0)
    total_sq = total_sq + (values ** 2).sum(axis=0)
  mean = total / max(count, 1)
  std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean ** 2, 0.0))
  return mean.astype(np.float32), std.astype(np.float32)


@dataclasses.dataclass
class SliceStack:
  """One case as model-ready axial slices.

  Attributes:
    images: (D, size, size, C) float32, normalised.
    targets: (D, size, size, K) float32 targets of the label mode, or None.
    brain_fraction: (D,) fraction of brain pixels per slice.
    box: how to map slices back onto the original (H, W, D) grid.
  """
  images: np.ndarray
  targets: np.ndarray | None
  brain_fraction: np.ndarray
  box: CropBox


def case_to_slices(image: np.ndarray, label: np.ndarray | None, *,
                   image_size: int, label_mode: str = 'binary',
                   scheme: LabelScheme | None = None,
                   mean: np.ndarray | None = None,
                   std: np.ndarray | None = None) -> SliceStack:
  """Preprocesses one case (H, W, D, C) [+ label (H, W, D) in `scheme`]
  into slices; the targets are `label_mode`'s."""
  box = CropBox.around_brain(image)
  normalised = zscore(image, mean, std)
  cropped = box.crop(normalised)
  images = resize_slices(cropped, image_size, order=1)
  brain = resize_slices(box.crop(brain_mask(image)).astype(np.float32),
                        image_size, order=1) > 0.5
  targets = None
  if label is not None:
    small = resize_slices(box.crop(label), image_size, order=0)
    targets = scheme.targets(small, label_mode)
    targets = np.moveaxis(targets, 2, 0)
  return SliceStack(images=np.ascontiguousarray(np.moveaxis(images, 2, 0)),
                    targets=targets,
                    brain_fraction=brain.mean(axis=(0, 1)),
                    box=box)


def slices_to_volume(probs: np.ndarray, box: CropBox) -> np.ndarray:
  """Maps per-slice outputs (D, size, size, K) back to the grid (H, W, D, K)."""
  volume = np.moveaxis(probs, 0, 2)            # (size, size, D, K)
  return box.paste(resize_slices(volume, box.size, order=1))


def resize_depth(stack: np.ndarray, depth: int, order: int) -> np.ndarray:
  """Resizes axis 0 of (D, ...) to `depth` (order 1: linear, 0: nearest)."""
  if stack.shape[0] == depth:
    return stack
  zoom = (depth / stack.shape[0],) + (1.0,) * (stack.ndim - 1)
  return ndimage.zoom(stack, zoom, order=order, mode='nearest', grid_mode=True)


def case_to_volume(image: np.ndarray, label: np.ndarray | None, *,
                   image_size: int, depth: int, label_mode: str = 'binary',
                   scheme: LabelScheme | None = None,
                   mean: np.ndarray | None = None,
                   std: np.ndarray | None = None) -> SliceStack:
  """One case (H, W, D, C) as a (depth, size, size, C) volume (3D models).

  The returned stack's `brain_fraction` is per original slice (length D),
  `images`/`targets` have `depth` slices; `volume_to_grid` maps outputs back.
  """
  stack = case_to_slices(image, label, image_size=image_size,
                         label_mode=label_mode, scheme=scheme, mean=mean,
                         std=std)
  targets = None
  if stack.targets is not None:
    targets = resize_depth(stack.targets, depth, order=0)
  return dataclasses.replace(
      stack, images=resize_depth(stack.images, depth, order=1).astype(np.float32),
      targets=targets)


def volume_to_grid(probs: np.ndarray, box: CropBox) -> np.ndarray:
  """Maps a volume's outputs (depth, size, size, K) back to the grid (H, W, D, K)."""
  return slices_to_volume(resize_depth(probs, box.shape[2], order=1), box)
