"""Augmentation of training slices and volumes, on the host (NumPy/SciPy).

`jaxseg.data.augment_device` is the same chain in JAX for a batch on the
device; benchmarks/augment.py compares the two.

Seed 002, section 3.3.1 (the defaults):

  - flip in x and in y, each with probability `flip_prob` (0.25);
  - cut-out: with probability `cutout_prob` (0.4), 1 to `cutout_max_patches`
    (6) rectangles, each at most `cutout_max_area` (20 %) of the image, are set
    to 0 in every channel (the label is kept);
  - additive Gaussian noise with probability `noise_prob` (0.25), drawn from
    N(noise_mean=0.05, noise_variance=0.1) per pixel and channel.

nnU-Net-style spatial and intensity augmentation (off by default; seed 003
rotates by up to 15 degrees and scales by up to 5 %):

  - rotation with probability `rotate_prob`: one angle uniform in
    +-`rotate_degrees` in the (H, W) plane (2D), or one such angle about each
    of the three axes, composed (3D);
  - scaling with probability `scale_prob`: one isotropic factor uniform in
    [1 - scale_range, 1 + scale_range];
  - rotation and scaling are one affine resample about the centre of the
    array (`random_affine`, `apply_affine`): the image by linear
    interpolation with 0 outside (the background after the z-score), the
    target by nearest neighbour, so its channels stay 0/1 and nested regions
    (WT > TC > ET) stay nested;
  - brightness/contrast with probability `intensity_prob`: per channel,
    x * U(1 - intensity_scale, 1 + intensity_scale)
    + U(-intensity_shift, intensity_shift);
  - gamma with probability `gamma_prob`: per channel, gamma ~ U(gamma_range),
    the channel min-max scaled to [0, 1], raised to gamma and scaled back
    (its minimum and maximum are kept);
  - elastic deformation with probability `elastic_prob` (Simard et al.
    2003): a displacement per voxel and axis U(-1, 1), smoothed by a
    Gaussian of `elastic_sigma` voxels, times `elastic_alpha` voxels, drawn
    on a coarse grid (a node every sigma / 2 voxels) and upsampled linearly
    (`elastic_displacement`). It is added to the affine's coordinates: one
    resample (`deform`) with the interpolation of `apply_affine`;
  - Gaussian blur with probability `blur_prob` (nnU-Net): one sigma ~
    U(blur_sigma) per sample, every image channel over the spatial axes
    (`scipy.ndimage.gaussian_filter`, mode 'reflect', truncate 4); the
    target is not blurred.

`augment_slice` applies, in this order: affine and elastic (one resample),
flips, cut-out, intensity, gamma, blur, noise. Volumes (D, H, W, C) of 3D
models get the same, with a flip per spatial axis and cut-out boxes of at
most `cutout_max_area` of the volume.
`RandomPatch` cuts a random (d, h, w) patch out of a volume first, centred on
a tumour voxel for a share `foreground_fraction` of the patches.

Random streams: the study drew one augmentation per batch "for parallel
efficiency"; here each sample draws its own from the per-record generator
Grain hands to `random_map`, which is seeded from the loader seed and the
record index, so a run is reproducible and a resumed run sees the same
augmentations. A step whose probability is 0 draws no random number, so the
seed-002 configs (all new probabilities 0) see exactly the stream, and the
outputs, they saw before these steps existed.
"""

import dataclasses
from typing import Sequence

import grain
import numpy as np
from scipy import ndimage

from jaxseg.errors import InputError


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Probabilities and ranges of `augment_slice`; mirrors `config.augment`."""
  flip_prob: float = 0.25        # per spatial axis
  cutout_prob: float = 0.4
  cutout_max_patches: int = 6
  cutout_max_area: float = 0.2   # fraction of the image (volume) per patch
  noise_prob: float = 0.25
  noise_mean: float = 0.05
  noise_variance: float = 0.1
  rotate_prob: float = 0.0
  rotate_degrees: float = 15.0   # each angle uniform in +-rotate_degrees
  scale_prob: float = 0.0
  scale_range: float = 0.05      # factor uniform in [1 - range, 1 + range]
  intensity_prob: float = 0.0
  intensity_scale: float = 0.1   # per channel x * U(1 -+ scale) + U(-+ shift)
  intensity_shift: float = 0.1
  gamma_prob: float = 0.0
  gamma_range: tuple = (0.7, 1.5)  # gamma uniform in [low, high], per channel
  elastic_prob: float = 0.0
  elastic_alpha: float = 30.0    # voxels: scale of the smoothed U(-1, 1) field
  elastic_sigma: float = 4.0     # voxels: Gaussian smoothing of that field
  blur_prob: float = 0.0
  blur_sigma: tuple = (0.5, 1.5)   # sigma uniform in [low, high], per sample

  def __post_init__(self):
    for name in ('gamma_range', 'blur_sigma'):     # hashable (a jit static)
      value = getattr(self, name)
      if not isinstance(value, (tuple, list)):
        _bad(name, f'must be a pair (low, high), got {value!r}')
      object.__setattr__(self, name, tuple(value))
    for field in dataclasses.fields(self):
      if field.name.endswith('_prob'):
        p = getattr(self, field.name)
        if not 0.0 <= p <= 1.0:
          _bad(field.name, f'a probability must lie in [0, 1], got {p}')
    if self.rotate_degrees < 0:
      _bad('rotate_degrees', f'must be >= 0, got {self.rotate_degrees}')
    if not 0.0 <= self.scale_range < 1.0:
      _bad('scale_range', f'must lie in [0, 1), got {self.scale_range}')
    if self.intensity_scale < 0 or self.intensity_shift < 0:
      _bad('intensity_scale', 'intensity_scale and intensity_shift must be '
           f'>= 0, got {self.intensity_scale}, {self.intensity_shift}')
    g = tuple(self.gamma_range)
    if len(g) != 2 or not 0.0 < g[0] <= g[1]:
      _bad('gamma_range', f'must be (low, high) with 0 < low <= high, got {g}')
    if self.elastic_alpha < 0:
      _bad('elastic_alpha', f'must be >= 0, got {self.elastic_alpha}')
    if not self.elastic_sigma > 0:
      _bad('elastic_sigma', f'must be > 0, got {self.elastic_sigma}')
    b = self.blur_sigma
    if len(b) != 2 or not 0.0 < b[0] <= b[1]:
      _bad('blur_sigma', f'must be (low, high) with 0 < low <= high, got {b}')


def _bad(key: str, problem: str):
  raise InputError(f'config.augment.{key}', problem)


# ----------------------------------------------------------------- spatial --

def rotation(degrees: Sequence[float]) -> np.ndarray:
  """The forward rotation matrix of 1 angle (2D, 2x2) or 3 angles (3D, 3x3).

  Convention: a rotation by +90 degrees in the plane of axes (p, q), p < q,
  moves the content as `np.rot90(x, 1, axes=(p, q))` does (and as
  `scipy.ndimage.rotate(x, angle, axes=(p, q))` does). 2D: the plane (0, 1).
  3D: angle a rotates about axis a, i.e. in the plane of the other two axes,
  and the three are composed as R0 @ R1 @ R2 (R2 acts first).
  """
  degrees = np.atleast_1d(np.asarray(degrees, np.float64))
  if degrees.shape == (1,):
    return _plane_rotation(2, (0, 1), degrees[0])
  if degrees.shape != (3,):
    raise ValueError(f'rotation takes 1 (2D) or 3 (3D) angles, got {degrees}')
  planes = ((1, 2), (0, 2), (0, 1))
  matrix = np.eye(3)
  for plane, angle in zip(planes, degrees):
    matrix = matrix @ _plane_rotation(3, plane, angle)
  return matrix


def _plane_rotation(ndim: int, plane: tuple[int, int], degrees: float):
  p, q = plane
  c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
  matrix = np.eye(ndim)
  matrix[p, p], matrix[p, q], matrix[q, p], matrix[q, q] = c, -s, s, c
  return matrix


def centred_affine(forward: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """The (d+1, d+1) matrix of `apply_affine` for a forward linear map.

  `forward` (d, d) moves the content about the array centre (n - 1) / 2 per
  axis (voxel centres at integer indices): a voxel at x goes to
  forward @ (x - c) + c. The result is the homogeneous map SciPy's
  `affine_transform` wants, from output voxel to input voxel,
  x_in = inv(forward) @ (x_out - c) + c. With this centre a multiple of 90
  degrees maps a square (cubic) grid exactly onto itself, for odd and even
  sizes.
  """
  forward = np.asarray(forward, np.float64)
  centre = (np.asarray(shape, np.float64) - 1) / 2
  if forward.shape != (len(centre),) * 2:
    raise ValueError(f'a {forward.shape} map for a {len(centre)}-D grid')
  pull = np.linalg.inv(forward)
  matrix = np.eye(len(centre) + 1)
  matrix[:-1, :-1] = pull
  matrix[:-1, -1] = centre - pull @ centre
  # Snap rounding noise (cos 90 degrees is 6e-17): mode 'constant' drops a
  # sample 1e-15 beyond the edge, which would blank a border of a 180-degree
  # rotation. Moves no sample by more than 1e-9 voxel.
  snapped = np.round(matrix)
  return np.where(np.abs(matrix - snapped) < 1e-9, snapped, matrix)


def random_affine(shape: Sequence[int], rng: np.random.Generator,
                  cfg: AugmentConfig) -> np.ndarray | None:
  """A random rotation and/or isotropic scaling about the centre of `shape`.

  Args:
    shape: the spatial shape, (H, W) or (D, H, W).
    rng: draws nothing for a step whose probability is 0.
    cfg: rotate_prob, rotate_degrees, scale_prob, scale_range.

  Returns:
    The (d+1, d+1) matrix for `apply_affine`, or None when neither step was
    drawn (the caller then skips the resample). A scale factor s > 1
    magnifies the content (a zoom in).
  """
  ndim = len(shape)
  forward = None
  if cfg.rotate_prob > 0 and rng.random() < cfg.rotate_prob:
    angles = rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees,
                         size=1 if ndim == 2 else 3)
    forward = rotation(angles)
  if cfg.scale_prob > 0 and rng.random() < cfg.scale_prob:
    factor = rng.uniform(1 - cfg.scale_range, 1 + cfg.scale_range)
    forward = factor * (np.eye(ndim) if forward is None else forward)
  return None if forward is None else centred_affine(forward, shape)


def apply_affine(image: np.ndarray, target: np.ndarray,
                 matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Resamples image (*S, C) and target (*S, K) with one (d+1, d+1) matrix.

  `matrix` maps output voxel indices to input ones (homogeneous, as
  `scipy.ndimage.affine_transform`; build it with `centred_affine`). The
  image is resampled channel by channel with order 1 and 0 outside the
  array; the target with order 0 (nearest) and 0 outside, so a 0/1 target
  stays 0/1, and since every target channel reads the same input voxel,
  nested regions stay nested. Dtypes are kept.
  """
  moved = np.stack([
      ndimage.affine_transform(image[..., c], matrix, order=1,
                               mode='constant', cval=0.0, output=image.dtype)
      for c in range(image.shape[-1])], axis=-1)
  return moved, _nearest(target, matrix)


def _nearest(target: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Order-0 resample of every channel of (*S, K) by one index gather.

  The same as `affine_transform(target[..., k], matrix, order=0)` per
  channel, but resamples a map of voxel indices once instead of K channels
  (on 128^3 x 3: about 0.2 s instead of 0.5 s). Outside the array the map
  reads index N, a row of zeros appended to the flat target.
  """
  index, n, dtype = _index_map(target.shape[:-1])
  source = ndimage.affine_transform(index, matrix, order=0, mode='constant',
                                    cval=n, output=dtype)
  return _gather_rows(target, source)


def _index_map(spatial: Sequence[int]):
  n = int(np.prod(spatial))
  dtype = np.int32 if n < 2 ** 31 - 1 else np.int64
  return np.arange(n, dtype=dtype).reshape(spatial), n, dtype


def _gather_rows(target: np.ndarray, source: np.ndarray) -> np.ndarray:
  """target (*S, K) read at flat voxel indices `source` (*S); index N reads 0."""
  n, k = source.size, target.shape[-1]
  rows = np.concatenate([target.reshape(n, k), np.zeros((1, k), target.dtype)])
  return np.take(rows, source.ravel(), axis=0).reshape(target.shape)


# ----------------------------------------------------------------- elastic --

# The elastic field is drawn and smoothed on a coarse grid with a node every
# sigma / ELASTIC_NODES_PER_SIGMA voxels (at least 1) and upsampled linearly.
# With sigma 4 (spacing 2) one field (3, 128^3) takes ~70 ms instead of
# ~350 ms for smoothing per-voxel draws, 128^2: 0.6 ms instead of 5.6 ms
# (benchmarks/augment.py, elastic field table); its standard deviation and
# correlation match the per-voxel definition (tests/data/test_augment.py).
ELASTIC_NODES_PER_SIGMA = 2
TRUNCATE = 4.0   # Gaussian kernels end at int(TRUNCATE * sigma + 0.5) (SciPy)


def elastic_spacing(sigma: float) -> int:
  """Voxels between the nodes of the coarse elastic grid: max(1, sigma // 2)."""
  return max(1, int(sigma / ELASTIC_NODES_PER_SIGMA))


def coarse_shape(shape: Sequence[int], spacing: int) -> tuple[int, ...]:
  """Nodes at voxels 0, s, 2s, ... up to the first >= n - 1, per axis."""
  return tuple(-(-(n - 1) // spacing) + 1 for n in shape)


def elastic_displacement(shape: Sequence[int], rng: np.random.Generator,
                         alpha: float, sigma: float,
                         spacing: int | None = None) -> np.ndarray:
  """A random elastic displacement field (d, *shape), float32, in voxels.

  Simard et al. (2003): per voxel and axis U(-1, 1), smoothed by a Gaussian
  of `sigma` voxels, times `alpha`. Drawn on the coarse grid of `spacing`
  voxels (default `elastic_spacing(sigma)`; 1 draws per voxel, the plain
  definition) and brought to full size by `coarse_displacement`.
  """
  spacing = elastic_spacing(sigma) if spacing is None else int(spacing)
  noise = rng.uniform(-1.0, 1.0,
                      size=(len(shape),) + coarse_shape(shape, spacing))
  return coarse_displacement(noise, alpha, sigma, spacing, shape)


def coarse_displacement(noise: np.ndarray, alpha: float, sigma: float,
                        spacing: int, shape: Sequence[int]) -> np.ndarray:
  """Coarse U(-1, 1) noise (d, *coarse) -> displacement (d, *shape), float32.

  Each axis' field is smoothed by a Gaussian of sigma / spacing nodes (mode
  'reflect', truncated at TRUNCATE sigma), times alpha * spacing ** (-d / 2)
  (a node stands for spacing^d voxels' draws: the factor gives the field the
  variance of the per-voxel definition), then upsampled linearly
  (`upsample_linear`).
  """
  d = len(shape)
  smooth = np.stack([ndimage.gaussian_filter(np.asarray(f, np.float64),
                                             sigma / spacing, mode='reflect',
                                             truncate=TRUNCATE)
                     for f in noise])
  smooth *= alpha * float(spacing) ** (-d / 2)
  return upsample_linear(smooth.astype(np.float32), spacing, shape)


def upsample_linear(coarse: np.ndarray, spacing: int,
                    shape: Sequence[int]) -> np.ndarray:
  """(..., *coarse) -> (..., *shape): node j of an axis sits at voxel j * spacing.

  Separable linear interpolation, axis by axis, of the last len(shape)
  axes; voxel i reads the nodes floor(i / s) and the next one with weights
  (1 - f, f), f = i / s - floor(i / s).
  """
  out = coarse
  for i, n in enumerate(shape):
    axis = out.ndim - len(shape) + i
    m = out.shape[axis]
    if m == n and spacing == 1:
      continue
    position = np.arange(n) / spacing
    low = np.clip(np.floor(position).astype(np.int64), 0, max(m - 2, 0))
    high = np.minimum(low + 1, m - 1)
    frac = (position - low).astype(out.dtype).reshape(
        (n,) + (1,) * (out.ndim - axis - 1))
    out = (1 - frac) * np.take(out, low, axis) + frac * np.take(out, high, axis)
  return out


def affine_coordinates(matrix: np.ndarray | None,
                       shape: Sequence[int]) -> np.ndarray:
  """The input coordinates (d, *shape), float64, that `matrix` maps each
  output voxel to (None: the identity).

  Summed in the order of SciPy's `affine_transform` (offset, then each
  column), so `deform` with a zero field equals `apply_affine` bit for bit.
  """
  grid = np.indices(shape, dtype=np.float64)
  if matrix is None:
    return grid
  matrix = np.asarray(matrix, np.float64)
  d = len(shape)
  coords = np.empty_like(grid)
  for h in range(d):
    coords[h] = matrix[h, d]
    for k in range(d):
      coords[h] += grid[k] * matrix[h, k]
  return coords


def deform(image: np.ndarray, target: np.ndarray, matrix: np.ndarray | None,
           displacement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """One resample of image (*S, C) and target (*S, K) at affine + elastic.

  Output voxel x reads the input at `matrix` @ x + displacement[:, x]
  (`affine_coordinates`; matrix None: the identity; displacement (d, *S) in
  voxels). Interpolation as `apply_affine`: the image by order 1 with 0
  outside the array, the target by nearest neighbour with 0 outside (one
  index gather), so one-hot targets and nested regions stay so.
  """
  coords = affine_coordinates(matrix, image.shape[:-1])
  coords += displacement
  moved = np.stack([
      ndimage.map_coordinates(image[..., c], coords, order=1, mode='constant',
                              cval=0.0, output=image.dtype)
      for c in range(image.shape[-1])], axis=-1)
  index, n, dtype = _index_map(target.shape[:-1])
  source = ndimage.map_coordinates(index, coords, order=0, mode='constant',
                                   cval=n, output=dtype)
  return moved, _gather_rows(target, source)


# ----------------------------------------------------------------- cut-out --

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


# --------------------------------------------------------------- intensity --

def scale_shift(image: np.ndarray, scale: np.ndarray,
                shift: np.ndarray) -> np.ndarray:
  """image (..., C) * scale (C,) + shift (C,), in the image's dtype."""
  dtype = image.dtype
  return image * np.asarray(scale, dtype) + np.asarray(shift, dtype)


def gamma(image: np.ndarray, gammas: np.ndarray) -> np.ndarray:
  """Per channel c: min-max to [0, 1], ** gammas[c], back to [min, max].

  nnU-Net's gamma transform without inversion or kept statistics; each
  channel keeps its minimum and maximum. A constant channel is left as is.
  """
  out = np.empty_like(image)
  for c, g in enumerate(np.asarray(gammas, image.dtype)):
    x = image[..., c]           # per channel: reductions over (..., C) are slow
    low, high = x.min(), x.max()
    if high > low:
      unit = np.clip((x - low) / (high - low), 0, 1)   # rounding below 0
      x = unit ** g * (high - low) + low
    out[..., c] = x
  return out


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur of every channel of (*S, C) over the spatial axes.

  `scipy.ndimage.gaussian_filter` per channel: mode 'reflect', the kernel
  truncated at int(TRUNCATE * sigma + 0.5) voxels. Dtype kept.
  """
  out = np.empty_like(image)
  for c in range(image.shape[-1]):
    out[..., c] = ndimage.gaussian_filter(image[..., c], sigma, mode='reflect',
                                          truncate=TRUNCATE)
  return out


# ------------------------------------------------------------------- chain --

def augment_slice(image: np.ndarray, target: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Augments one slice (H, W, C) + target (H, W, K), or a volume (D, H, W, .).

  Order: affine (rotation, scaling) and elastic in one resample -> flips ->
  cut-out -> intensity -> gamma -> blur -> noise. Returns contiguous arrays
  of the input shapes and dtypes.
  """
  channels, spatial = image.shape[-1], image.shape[:-1]
  matrix = random_affine(spatial, rng, cfg)
  if cfg.elastic_prob > 0 and rng.random() < cfg.elastic_prob:
    field = elastic_displacement(spatial, rng, cfg.elastic_alpha,
                                 cfg.elastic_sigma)
    image, target = deform(image, target, matrix, field)
  elif matrix is not None:
    image, target = apply_affine(image, target, matrix)
  for axis in range(image.ndim - 1):
    if rng.random() < cfg.flip_prob:
      image, target = np.flip(image, axis), np.flip(target, axis)
  if rng.random() < cfg.cutout_prob:
    image = cutout(image, rng, cfg.cutout_max_patches, cfg.cutout_max_area)
  if cfg.intensity_prob > 0 and rng.random() < cfg.intensity_prob:
    scale = rng.uniform(1 - cfg.intensity_scale, 1 + cfg.intensity_scale,
                        size=channels)
    shift = rng.uniform(-cfg.intensity_shift, cfg.intensity_shift,
                        size=channels)
    image = scale_shift(image, scale, shift)
  if cfg.gamma_prob > 0 and rng.random() < cfg.gamma_prob:
    image = gamma(image, rng.uniform(*cfg.gamma_range, size=channels))
  if cfg.blur_prob > 0 and rng.random() < cfg.blur_prob:
    image = blur(image, rng.uniform(*cfg.blur_sigma))
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


# ----------------------------------------------------------------- patches --

class RandomPatch(grain.transforms.RandomMap):
  """Cuts the same random (d, h, w) patch out of a record's image and target.

  With probability `foreground_fraction` (nnU-Net: 1/3) the patch is centred
  on a voxel drawn uniformly from the target's foreground, the voxels where
  any of `foreground_channels` is > 0, then shifted as little as needed to
  lie inside the volume; its centre is the voxel at index p // 2 of each
  patch side p. Otherwise, and for a record without foreground, the patch is
  drawn uniformly over all positions. Pass `foreground_channels=slice(1,
  None)` for one-hot class targets whose channel 0 is the background; the
  default None uses every channel (sigmoid regions such as WT/TC/ET).

  With `foreground_fraction` 0 the random draws are those of the plain
  uniform patch. Cost of a foreground patch: one pass over the target and a
  flat index list of the foreground (`np.flatnonzero`); on a 128^3 target
  with 3 channels that is a few ms, small beside the affine resample.
  """

  def __init__(self, patch_size: tuple[int, ...],
               foreground_fraction: float = 0.0,
               foreground_channels: slice | None = None):
    self.patch_size = tuple(int(p) for p in patch_size)
    if not 0.0 <= foreground_fraction <= 1.0:
      raise InputError('config.data.foreground_fraction',
                       f'must lie in [0, 1], got {foreground_fraction}')
    self.foreground_fraction = float(foreground_fraction)
    self.foreground_channels = foreground_channels

  def random_map(self, element, rng: np.random.Generator):
    image, target = element['image'], element['target']
    spatial = image.shape[:-1]
    if len(self.patch_size) != len(spatial) or any(
        p > n for p, n in zip(self.patch_size, spatial)):
      raise ValueError(f'patch {self.patch_size} does not fit a record of '
                       f'{tuple(spatial)}')
    start = None
    if (self.foreground_fraction > 0
        and rng.random() < self.foreground_fraction):
      start = self._foreground_start(target, rng)
    if start is None:
      start = [rng.integers(0, n - p + 1)
               for n, p in zip(spatial, self.patch_size)]
    window = tuple(slice(a, a + p) for a, p in zip(start, self.patch_size))
    return dict(element, image=np.ascontiguousarray(image[window]),
                target=np.ascontiguousarray(target[window]))

  def _foreground_start(self, target: np.ndarray,
                        rng: np.random.Generator) -> list[int] | None:
    """The corner of a patch centred on a random foreground voxel, or None."""
    spatial = target.shape[:-1]
    channels = range(target.shape[-1])
    if self.foreground_channels is not None:
      channels = channels[self.foreground_channels]
    mask = np.zeros(spatial, bool)
    for k in channels:                 # faster than .any(-1) over a short axis
      mask |= target[..., k] > 0
    voxels = np.flatnonzero(mask)
    if voxels.size == 0:
      return None
    centre = np.unravel_index(voxels[rng.integers(voxels.size)], spatial)
    return [int(np.clip(c - p // 2, 0, n - p))
            for c, p, n in zip(centre, self.patch_size, spatial)]
