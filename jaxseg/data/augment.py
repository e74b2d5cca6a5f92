"""2D slice augmentation of seed 002, section 3.3.1.

  - flip in x and in y, each with probability `flip_prob` (0.25);
  - cut-out: with probability `cutout_prob` (0.4), 1 to `cutout_max_patches`
    (6) rectangles, each at most `cutout_max_area` (20 %) of the image, are set
    to 0 in every channel (the label is kept);
  - additive Gaussian noise with probability `noise_prob` (0.25), drawn from
    N(noise_mean=0.05, noise_variance=0.1) per pixel and channel.

Volumes (D, H, W, C) of 3D models get the same: a flip per spatial axis,
cut-out boxes of at most `cutout_max_area` of the volume, and noise.
`RandomPatch` cuts a random (d, h, w) patch out of a volume first.

The study drew one augmentation per batch "for parallel efficiency"; here each
sample draws its own from the per-record generator Grain hands to
`random_map`, which is seeded from the loader seed and the record index, so a
run is reproducible and a resumed run sees the same augmentations.
"""

import dataclasses

import grain
import numpy as np


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  flip_prob: float = 0.25
  cutout_prob: float = 0.4
  cutout_max_patches: int = 6
  cutout_max_area: float = 0.2
  noise_prob: float = 0.25
  noise_mean: float = 0.05
  noise_variance: float = 0.1


def cutout(image: np.ndarray, rng: np.random.Generator, max_patches: int,
           max_area: float) -> np.ndarray:
  """Zeroes 1..max_patches random rectangles of (H, W, C), each <= max_area of H*W.

  For a volume (D, H, W, C) the patches are boxes, each <= max_area of D*H*W.
  """
  if image.ndim == 4:
    return _cutout_boxes(image, rng, max_patches, max_area)
  h, w = image.shape[:2]
  image = image.copy()
  for _ in range(rng.integers(1, max_patches + 1)):
    area = rng.uniform(0.0, max_area) * h * w
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    ph = int(np.clip(np.sqrt(area * aspect), 1, h))
    pw = int(np.clip(area / ph, 1, w))
    x, y = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    image[x:x + ph, y:y + pw] = 0.0
  return image


def _cutout_boxes(image: np.ndarray, rng: np.random.Generator,
                  max_patches: int, max_area: float) -> np.ndarray:
  spatial = np.asarray(image.shape[:-1])
  image = image.copy()
  for _ in range(rng.integers(1, max_patches + 1)):
    fraction = rng.uniform(0.0, max_area)
    log_aspect = rng.uniform(np.log(0.5), np.log(2.0), size=len(spatial))
    aspect = np.exp(log_aspect - log_aspect.mean())      # product 1
    sides = np.clip(np.round(spatial * fraction ** (1 / len(spatial)) * aspect),
                    1, spatial).astype(int)
    start = [rng.integers(0, n - k + 1) for n, k in zip(spatial, sides)]
    image[tuple(slice(a, a + k) for a, k in zip(start, sides))] = 0.0
  return image


def augment_slice(image: np.ndarray, target: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Augments one slice (H, W, C) + target (H, W, K), or a volume (D, H, W, .)."""
  for axis in range(image.ndim - 1):
    if rng.random() < cfg.flip_prob:
      image, target = np.flip(image, axis), np.flip(target, axis)
  if rng.random() < cfg.cutout_prob:
    image = cutout(image, rng, cfg.cutout_max_patches, cfg.cutout_max_area)
  if rng.random() < cfg.noise_prob:
    noise = rng.normal(cfg.noise_mean, np.sqrt(cfg.noise_variance), image.shape)
    image = image + noise.astype(np.float32)
  return np.ascontiguousarray(image), np.ascontiguousarray(target)


class AugmentSlices(grain.transforms.RandomMap):
  """Grain transform over {'image', 'target', ...} records."""

  def __init__(self, cfg: AugmentConfig):
    self.cfg = cfg

  def random_map(self, element, rng: np.random.Generator):
    image, target = augment_slice(element['image'], element['target'],
                                  self.cfg, rng)
    return dict(element, image=image, target=target)


class RandomPatch(grain.transforms.RandomMap):
  """Cuts the same random (d, h, w) patch out of a record's image and target."""

  def __init__(self, patch_size: tuple[int, ...]):
    self.patch_size = tuple(int(p) for p in patch_size)

  def random_map(self, element, rng: np.random.Generator):
    image, target = element['image'], element['target']
    spatial = image.shape[:-1]
    if len(self.patch_size) != len(spatial) or any(
        p > n for p, n in zip(self.patch_size, spatial)):
      raise ValueError(f'patch {self.patch_size} does not fit a record of '
                       f'{tuple(spatial)}')
    start = [rng.integers(0, n - p + 1) for n, p in zip(spatial, self.patch_size)]
    window = tuple(slice(a, a + p) for a, p in zip(start, self.patch_size))
    return dict(element, image=np.ascontiguousarray(image[window]),
                target=np.ascontiguousarray(target[window]))
