"""Augmentation of a batch on the device: the host chain in JAX, jitted.

`augment_batch(key, images, targets, cfg)` augments a batch (B, *S, C) with
targets (B, *S, K), S = (H, W) or (D, H, W), with the steps, order,
probabilities and ranges of the host chain `augment.augment_slice` (same
`AugmentConfig`):

  resample (rotation, scaling, elastic and flips in one gather) -> cut-out
  -> intensity scale/shift -> gamma -> blur -> noise.

Each sample draws its own parameters from `jax.random.split(key, B)`; the
stream is JAX's, not the host's NumPy stream, so the two chains agree in
distribution, not sample by sample. The split into `draw_params` (random)
and `apply_params` (deterministic) makes the kernels testable against the
host ones with the same explicit parameters:

  - `resample` = `augment.deform` / `augment.apply_affine` (+ `np.flip`):
    the image by linear interpolation, 0 outside [0, n - 1] (SciPy's mode
    'constant'), the target by nearest neighbour (index floor(x + 0.5), as
    SciPy's order 0), so one-hot targets and nested regions stay so;
  - `coarse_displacement` and `upsample_linear` = the host's functions of
    those names (the elastic field is drawn on the same coarse grid);
  - `smooth` / `blur` = `scipy.ndimage.gaussian_filter` (mode 'reflect',
    truncate 4): a separable correlation with SciPy's kernel, the per-sample
    sigma zeroing the taps beyond its radius int(4 sigma + 0.5) inside a
    fixed kernel for the largest sigma;
  - `scale_shift`, `gamma` = the host's.

Coordinates are float32 (the host's float64): at 128 voxels that moves a
sample by ~1e-5 voxel, and a target voxel whose coordinate lies within that
of a half-integer may round the other way. Everything is elementwise or a
gather (no matrix product, so no TF32 on GPUs). A step whose probability is
0 is left out of the trace; a step with a probability in (0, 1) is computed
for every sample and selected, so its cost does not depend on the draws.

In training (`config.augment.where`: 'device', or 'auto' on a GPU/TPU,
`placement`) `training.step.train_step` runs `augment_train_batch` on the global
batch inside the jitted step: sample i of step s draws from
fold_in(fold_in(fold_in(dropout_key, AUGMENT_STREAM), s), i), so the draws
depend on neither the device nor the process count, and a resumed run
repeats them. The loader then only cuts the 3D patches (the same patches as
with the host chain). tests/data/test_augment_placement.py compares the two
chains' distributions step by step.
"""

import functools
import itertools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxseg.data import augment
from jaxseg.data.augment import AugmentConfig
from jaxseg.errors import InputError

_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------- spatial --

def rotation(degrees: jax.Array) -> jax.Array:
  """`augment.rotation` in JAX: (1,) angle -> 2x2, (3,) angles -> 3x3."""
  radians = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  if radians.shape == (1,):
    return _plane_rotation(2, (0, 1), radians[0])
  matrix = jnp.eye(3, dtype=jnp.float32)
  for plane, angle in zip(((1, 2), (0, 2), (0, 1)), radians):
    matrix = jnp.matmul(matrix, _plane_rotation(3, plane, angle),
                        precision=_HIGHEST)
  return matrix


def _plane_rotation(ndim: int, plane: tuple[int, int], radians: jax.Array):
  p, q = plane
  c, s = jnp.cos(radians), jnp.sin(radians)
  matrix = jnp.eye(ndim, dtype=jnp.float32)
  return matrix.at[p, p].set(c).at[p, q].set(-s).at[q, p].set(s).at[q, q].set(c)


def centred_pull(rotation_matrix: jax.Array, factor: jax.Array,
                 shape: Sequence[int]) -> jax.Array:
  """`augment.centred_affine(factor * rotation_matrix, shape)` in JAX.

  The inverse of factor * R is R^T / factor (no general inverse needed).
  """
  d = len(shape)
  centre = (jnp.asarray(shape, jnp.float32) - 1) / 2
  pull = rotation_matrix.T / factor
  offset = centre - jnp.sum(pull * centre, axis=1)
  return jnp.eye(d + 1, dtype=jnp.float32).at[:d, :d].set(pull).at[:d, d].set(
      offset)


def affine_coordinates(matrix: jax.Array, shape: Sequence[int]) -> jax.Array:
  """(d, *shape) float32 input coordinates of every output voxel.

  `matrix` (d+1, d+1) maps output voxel to input voxel (as `augment`).
  """
  d = len(shape)
  grid = [jnp.arange(n, dtype=jnp.float32).reshape(
      (1,) * a + (n,) + (1,) * (d - a - 1)) for a, n in enumerate(shape)]
  rows = []
  for h in range(d):
    row = matrix[h, d] + grid[0] * matrix[h, 0]
    for k in range(1, d):
      row = row + grid[k] * matrix[h, k]
    rows.append(jnp.broadcast_to(row, tuple(shape)))
  return jnp.stack(rows)


def resample(image: jax.Array, target: jax.Array,
             coords: jax.Array) -> tuple[jax.Array, jax.Array]:
  """image (*S, C) and target (*S, K) read at coords (d, *T) -> (*T, C), (*T, K).

  A coordinate outside [0, n - 1] on any axis reads 0 (SciPy's 'constant').
  Inside: the image by linear interpolation of the 2^d neighbours, the
  target by the voxel floor(x + 0.5).
  """
  spatial = image.shape[:-1]
  inside = functools.reduce(jnp.logical_and, [
      (coords[a] >= 0) & (coords[a] <= n - 1) for a, n in enumerate(spatial)])
  low, high, frac, nearest = [], [], [], []
  for a, n in enumerate(spatial):
    x = coords[a]
    lo = jnp.clip(jnp.floor(x), 0, max(n - 2, 0)).astype(jnp.int32)
    low.append(lo)
    high.append(jnp.minimum(lo + 1, n - 1))
    frac.append(x - lo)
    nearest.append(jnp.clip(jnp.floor(x + 0.5), 0, n - 1).astype(jnp.int32))
  flat_image = image.reshape(-1, image.shape[-1])
  moved = 0.0
  for corner in itertools.product((0, 1), repeat=len(spatial)):
    index = [high[a] if bit else low[a] for a, bit in enumerate(corner)]
    weight = functools.reduce(jnp.multiply, [
        frac[a] if bit else 1 - frac[a] for a, bit in enumerate(corner)])
    moved = moved + weight[..., None] * _gather(flat_image, index, spatial)
  moved = jnp.where(inside[..., None], moved, 0).astype(image.dtype)
  picked = _gather(target.reshape(-1, target.shape[-1]), nearest, spatial)
  picked = jnp.where(inside[..., None], picked, 0).astype(target.dtype)
  return moved, picked


def _gather(rows: jax.Array, index: list, spatial: Sequence[int]) -> jax.Array:
  flat = jnp.ravel_multi_index(tuple(index), tuple(spatial), mode='clip')
  return jnp.take(rows, flat, axis=0, mode='clip')


# ----------------------------------------------------------------- elastic --

def coarse_displacement(noise: jax.Array, alpha: float, sigma: float,
                        spacing: int, shape: Sequence[int]) -> jax.Array:
  """`augment.coarse_displacement` in JAX: (d, *coarse) -> (d, *shape)."""
  d = len(shape)
  coarse_sigma = sigma / spacing
  weights = gaussian_weights(coarse_sigma, max_radius(coarse_sigma))
  field = smooth(noise.astype(jnp.float32), weights, range(1, d + 1))
  field = field * jnp.float32(alpha * float(spacing) ** (-d / 2))
  return upsample_linear(field, spacing, shape)


def upsample_linear(coarse: jax.Array, spacing: int,
                    shape: Sequence[int]) -> jax.Array:
  """`augment.upsample_linear` in JAX, without gathers.

  Voxel j * s + r (0 <= r < s) is (1 - r / s) node j + (r / s) node j + 1:
  per axis, one broadcast over the s offsets, a reshape, the last node
  appended, cropped to n.
  """
  out = coarse
  for i, n in enumerate(shape):
    axis = out.ndim - len(shape) + i
    m = out.shape[axis]
    if m == n and spacing == 1:
      continue
    if m == 1:
      out = jnp.repeat(out, n, axis)
      continue
    frac = jnp.arange(spacing, dtype=out.dtype) / spacing
    frac = frac.reshape((spacing,) + (1,) * (out.ndim - axis - 1))
    left = jnp.expand_dims(jax.lax.slice_in_dim(out, 0, m - 1, axis=axis),
                           axis + 1)
    right = jnp.expand_dims(jax.lax.slice_in_dim(out, 1, m, axis=axis),
                            axis + 1)
    steps = ((1 - frac) * left + frac * right).reshape(
        out.shape[:axis] + ((m - 1) * spacing,) + out.shape[axis + 1:])
    last = jax.lax.slice_in_dim(out, m - 1, m, axis=axis)
    out = jax.lax.slice_in_dim(jnp.concatenate([steps, last], axis), 0, n,
                               axis=axis)
  return out


# ------------------------------------------------------------------- blur --

def max_radius(sigma: float) -> int:
  """SciPy's kernel radius for `sigma`: int(truncate * sigma + 0.5)."""
  return int(augment.TRUNCATE * sigma + 0.5)


def gaussian_weights(sigma: jax.Array | float, radius: int) -> jax.Array:
  """(2 radius + 1,) SciPy's normalised Gaussian for `sigma` (may be traced).

  Taps beyond SciPy's radius for this sigma are 0, so a kernel of a fixed
  `radius` >= max_radius(sigma) gives SciPy's result for any sigma.
  """
  sigma = jnp.asarray(sigma, jnp.float32)
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  own = jnp.floor(augment.TRUNCATE * sigma + 0.5)
  phi = jnp.where(jnp.abs(x) <= own, jnp.exp(-0.5 * x * x / (sigma * sigma)),
                  0.0)
  return phi / jnp.sum(phi)


def smooth(x: jax.Array, weights: jax.Array, axes: Sequence[int]) -> jax.Array:
  """Correlates x with `weights` (2r+1,) along each of `axes`, mode 'reflect'.

  SciPy's 'reflect' (d c b a | a b c d | d c b a) is NumPy's 'symmetric'.
  One shifted slice per tap: XLA fuses the sum into one pass per axis.
  """
  r = (weights.shape[0] - 1) // 2
  for axis in axes:
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    padded = jnp.pad(x, pad, mode='symmetric')
    out = weights[0] * jax.lax.slice_in_dim(padded, 0, n, axis=axis)
    for j in range(1, 2 * r + 1):
      out = out + weights[j] * jax.lax.slice_in_dim(padded, j, j + n, axis=axis)
    x = out
  return x


def blur(image: jax.Array, sigma: jax.Array | float,
         max_sigma: float) -> jax.Array:
  """`augment.blur` of (*S, C): every channel over the spatial axes.

  `max_sigma` (static) fixes the kernel size: sigma must be <= max_sigma.
  """
  weights = gaussian_weights(sigma, max_radius(max_sigma))
  return smooth(image, weights, range(image.ndim - 1)).astype(image.dtype)


# -------------------------------------------------------------- intensity --

def scale_shift(image: jax.Array, scale: jax.Array,
                shift: jax.Array) -> jax.Array:
  """image (..., C) * scale (C,) + shift (C,), in the image's dtype."""
  return (image * scale.astype(image.dtype) + shift.astype(image.dtype))


def gamma(image: jax.Array, gammas: jax.Array) -> jax.Array:
  """`augment.gamma`: per channel min-max to [0, 1], ** gamma, back."""
  axes = tuple(range(image.ndim - 1))
  low, high = image.min(axes), image.max(axes)
  span = high - low
  unit = jnp.clip((image - low) / jnp.where(span > 0, span, 1), 0, 1)
  out = unit ** gammas.astype(image.dtype) * span + low
  return jnp.where(span > 0, out, image).astype(image.dtype)


def cutout_mask(spatial: Sequence[int], low: jax.Array,
                high: jax.Array) -> jax.Array:
  """(*S,) bool: inside any box low[p] <= x < high[p] (boxes (P, d))."""
  mask = False
  for p in range(low.shape[0]):
    box = True
    for a, n in enumerate(spatial):
      i = jnp.arange(n).reshape((1,) * a + (n,) + (1,) * (len(spatial) - a - 1))
      box = box & (i >= low[p, a]) & (i < high[p, a])
    mask = mask | box
  return jnp.broadcast_to(mask, tuple(spatial))


# ---------------------------------------------------------------- drawing --

def _spatial_on(cfg: AugmentConfig) -> bool:
  return cfg.rotate_prob > 0 or cfg.scale_prob > 0 or cfg.elastic_prob > 0


def draw_params(key: jax.Array, spatial: Sequence[int], channels: int,
                cfg: AugmentConfig) -> dict:
  """One sample's random parameters; an undrawn step gets its identity.

  Keys present only for steps whose probability is > 0 (and 'flip'):
    matrix (d+1, d+1) output -> input voxel (rotation, scaling);
    flip (d,) bool; elastic (d, *coarse) U(-1, 1) noise, 0 if not drawn,
    elastic_on; warp_on (rotation, scaling or elastic drawn; only if one
    of them can be); spatial_on (any of these or a flip drawn);
    cutout_low, cutout_high (P, d) int32 boxes (empty beyond the count),
    cutout_on; scale, shift (C,), intensity_on; gamma (C,), gamma_on;
    blur_sigma, blur_on; noise_key, noise_on.
  """
  spatial = tuple(spatial)
  d = len(spatial)
  keys = iter(jax.random.split(key, 24))   # 17 used at most
  params = {}

  def coin(p):
    return jax.random.uniform(next(keys)) < p

  spatial_on = False
  if cfg.rotate_prob > 0 or cfg.scale_prob > 0:
    on = coin(cfg.rotate_prob)
    angles = jax.random.uniform(next(keys), (1 if d == 2 else 3,),
                                minval=-cfg.rotate_degrees,
                                maxval=cfg.rotate_degrees)
    scale_on = coin(cfg.scale_prob)
    factor = jax.random.uniform(next(keys), minval=1 - cfg.scale_range,
                                maxval=1 + cfg.scale_range)
    params['matrix'] = centred_pull(rotation(jnp.where(on, angles, 0.0)),
                                    jnp.where(scale_on, factor, 1.0), spatial)
    spatial_on = on | scale_on
  params['flip'] = jax.random.uniform(next(keys), (d,)) < cfg.flip_prob
  if cfg.elastic_prob > 0:
    on = coin(cfg.elastic_prob)
    spatial_on = spatial_on | on
    grid = augment.coarse_shape(spatial,
                                augment.elastic_spacing(cfg.elastic_sigma))
    noise = jax.random.uniform(next(keys), (d,) + grid, minval=-1.0,
                               maxval=1.0)
    params['elastic_on'] = on
    params['elastic'] = jnp.where(on, noise, 0.0)
  if _spatial_on(cfg):
    params['warp_on'] = spatial_on      # a resample, not only flips
  params['spatial_on'] = spatial_on | jnp.any(params['flip'])
  if cfg.cutout_prob > 0:
    on = coin(cfg.cutout_prob)
    low, high = _draw_boxes(next(keys), spatial, cfg)
    params['cutout_on'] = on
    params['cutout_low'] = low
    params['cutout_high'] = jnp.where(on, high, low)
  if cfg.intensity_prob > 0:
    on = coin(cfg.intensity_prob)
    k1, k2 = jax.random.split(next(keys))
    scale = jax.random.uniform(k1, (channels,), minval=1 - cfg.intensity_scale,
                               maxval=1 + cfg.intensity_scale)
    shift = jax.random.uniform(k2, (channels,), minval=-cfg.intensity_shift,
                               maxval=cfg.intensity_shift)
    params['intensity_on'] = on
    params['scale'] = jnp.where(on, scale, 1.0)
    params['shift'] = jnp.where(on, shift, 0.0)
  if cfg.gamma_prob > 0:
    params['gamma_on'] = coin(cfg.gamma_prob)
    params['gamma'] = jax.random.uniform(next(keys), (channels,),
                                         minval=cfg.gamma_range[0],
                                         maxval=cfg.gamma_range[1])
  if cfg.blur_prob > 0:
    params['blur_on'] = coin(cfg.blur_prob)
    params['blur_sigma'] = jax.random.uniform(next(keys),
                                              minval=cfg.blur_sigma[0],
                                              maxval=cfg.blur_sigma[1])
  if cfg.noise_prob > 0:
    params['noise_on'] = coin(cfg.noise_prob)
    params['noise_key'] = next(keys)
  return params


def _draw_boxes(key: jax.Array, spatial: tuple[int, ...], cfg: AugmentConfig):
  """1..cutout_max_patches boxes as `augment.cutout` draws them (P, d)."""
  d, count = len(spatial), cfg.cutout_max_patches
  k_count, k_size, k_aspect, k_start = jax.random.split(key, 4)
  n = jnp.asarray(spatial, jnp.float32)
  number = jax.random.randint(k_count, (), 1, count + 1)
  fraction = jax.random.uniform(k_size, (count,), maxval=cfg.cutout_max_area)
  if d == 2:        # area and aspect ratio, as the host's 2D rectangles
    area = fraction * n[0] * n[1]
    aspect = jnp.exp(jax.random.uniform(k_aspect, (count,),
                                        minval=math.log(0.5),
                                        maxval=math.log(2.0)))
    ph = jnp.floor(jnp.clip(jnp.sqrt(area * aspect), 1, n[0]))
    pw = jnp.floor(jnp.clip(area / ph, 1, n[1]))
    sides = jnp.stack([ph, pw], -1)
  else:             # volume fraction and aspects with product 1
    log_aspect = jax.random.uniform(k_aspect, (count, d),
                                    minval=math.log(0.5), maxval=math.log(2.0))
    aspect = jnp.exp(log_aspect - log_aspect.mean(-1, keepdims=True))
    sides = jnp.clip(jnp.round(n * fraction[:, None] ** (1 / d) * aspect), 1, n)
  start = jnp.floor(jax.random.uniform(k_start, (count, d)) * (n - sides + 1))
  low = start.astype(jnp.int32)
  high = jnp.where((jnp.arange(count) < number)[:, None],
                   low + sides.astype(jnp.int32), low)
  return low, high


# ----------------------------------------------------------------- chain --

def _resample_step(image, target, params, cfg):
  spatial = image.shape[:-1]
  d = len(spatial)
  coords = affine_coordinates(
      params.get('matrix', jnp.eye(d + 1, dtype=jnp.float32)), spatial)
  if 'field' in params:
    coords = coords + params['field']
  for a in range(d):              # a flip of the output: of its coordinates
    coords = jnp.where(params['flip'][a], jnp.flip(coords, a + 1), coords)
  return resample(image, target, coords)


def _field(params, spatial, cfg):
  """The full-size elastic displacement (d, *S) of one sample."""
  return coarse_displacement(params['elastic'], cfg.elastic_alpha,
                             cfg.elastic_sigma,
                             augment.elastic_spacing(cfg.elastic_sigma),
                             spatial)


def _flip_step(image, target, params, cfg):
  del cfg
  for a in range(image.ndim - 1):
    image = jnp.where(params['flip'][a], jnp.flip(image, a), image)
    target = jnp.where(params['flip'][a], jnp.flip(target, a), target)
  return image, target


def _cutout_step(image, target, params, cfg):
  del cfg
  mask = cutout_mask(image.shape[:-1], params['cutout_low'],
                     params['cutout_high'])
  return jnp.where(mask[..., None], 0, image).astype(image.dtype), target


def _intensity_step(image, target, params, cfg):
  del cfg
  return scale_shift(image, params['scale'], params['shift']), target


def _gamma_step(image, target, params, cfg):
  del cfg
  image = jnp.where(params['gamma_on'], gamma(image, params['gamma']), image)
  return image, target


def _blur_step(image, target, params, cfg):
  blurred = blur(image, params['blur_sigma'], cfg.blur_sigma[1])
  return jnp.where(params['blur_on'], blurred, image), target


def _noise_step(image, target, params, cfg):
  noise = (cfg.noise_mean + math.sqrt(cfg.noise_variance) *
           jax.random.normal(params['noise_key'], image.shape, image.dtype))
  return jnp.where(params['noise_on'], image + noise, image), target


def _steps(cfg: AugmentConfig) -> list:
  """(flag, step) in chain order, for the steps the config can draw."""
  steps = []
  if _spatial_on(cfg):
    steps.append(('spatial_on', _resample_step))
  elif cfg.flip_prob > 0:
    steps.append(('spatial_on', _flip_step))
  for prob, flag, step in (
      (cfg.cutout_prob, 'cutout_on', _cutout_step),
      (cfg.intensity_prob, 'intensity_on', _intensity_step),
      (cfg.gamma_prob, 'gamma_on', _gamma_step),
      (cfg.blur_prob, 'blur_on', _blur_step),
      (cfg.noise_prob, 'noise_on', _noise_step)):
    if prob > 0:
      steps.append((flag, step))
  return steps


def apply_params(image: jax.Array, target: jax.Array, params: dict,
                 cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """The deterministic chain of one sample (*S, C), (*S, K) given `params`.

  A step not drawn for the sample is its identity (exactly: the resample
  then reads every voxel at its own integer coordinates).
  """
  if 'elastic' in params:
    params = dict(params, field=_field(params, image.shape[:-1], cfg))
  for _, step in _steps(cfg):
    image, target = step(image, target, params, cfg)
  return image, target


def apply_params_batch(images: jax.Array, targets: jax.Array, params: dict,
                       cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """`apply_params` over a batch (B, *S, .) with params batched on axis 0.

  Each step runs under `lax.cond` on "any sample drew it": the batch skips
  a step none of its samples drew, and the step's output is materialised.
  Without that boundary XLA:CPU fuses the interpolation into every later
  consumer and the chain runs ~5x slower (measured on 64^3), and the
  elastic field's smoothing into every read of the coordinates (~100x).
  """
  if 'elastic' in params:
    spatial = images.shape[1:-1]
    field = jax.vmap(lambda p: _field(p, spatial, cfg))
    params = dict(params, field=jax.lax.cond(
        jnp.any(params['elastic_on']), field,
        lambda p: jnp.zeros((images.shape[0], len(spatial)) + spatial,
                            jnp.float32), params))
  for flag, step in _steps(cfg):
    batched = jax.vmap(functools.partial(step, cfg=cfg))
    if step is _resample_step and 'warp_on' in params:
      # A batch whose samples only flip takes the flips, not the resample:
      # the same values (the resample then reads integer coordinates), at
      # a fraction of the cost (the 3D region config flips each axis with
      # probability 0.5 but warps a third of its samples).
      warp, flips = batched, jax.vmap(functools.partial(_flip_step, cfg=cfg))
      batched = lambda x, y, p, warp=warp, flips=flips: jax.lax.cond(  # noqa: E731
          jnp.any(p['warp_on']), warp, flips, x, y, p)
    images, targets = jax.lax.cond(
        jnp.any(params[flag]), batched, lambda x, y, p: (x, y),
        images, targets, params)
  return images, targets


def augment_sample(key: jax.Array, image: jax.Array, target: jax.Array,
                   cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """One sample: `draw_params` then `apply_params`."""
  params = draw_params(key, image.shape[:-1], image.shape[-1], cfg)
  return apply_params(image, target, params, cfg)


def augment_keyed(keys: jax.Array, images: jax.Array, targets: jax.Array,
                  cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """Augments images (B, *S, C) and targets (B, *S, K); sample i draws keys[i].

  Not jitted: for use inside a jitted function (the train step).
  """
  params = jax.vmap(functools.partial(
      draw_params, spatial=images.shape[1:-1], channels=images.shape[-1],
      cfg=cfg))(keys)
  return apply_params_batch(images, targets, params, cfg)


@functools.partial(jax.jit, static_argnames='cfg')
def augment_batch(key: jax.Array, images: jax.Array, targets: jax.Array,
                  cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """Augments images (B, *S, C) and targets (B, *S, K), one draw per sample.

  Sample i draws `draw_params(jax.random.split(key, B)[i], ...)`; the result
  equals `augment_sample` of that key per sample. Jitted with `cfg` static:
  one compilation per (shapes, dtypes, cfg).
  """
  return augment_keyed(jax.random.split(key, images.shape[0]), images,
                       targets, cfg)


# ------------------------------------------------------------ in training --

WHERE = ('host', 'device', 'auto')

# fold_in data of the augmentation stream: a step number the dropout stream
# (`fold_in(dropout_key, step)`) never reaches.
AUGMENT_STREAM = 2 ** 32 - 1


def placement(where: str, backend: str | None = None) -> str:
  """'host' or 'device' for `config.augment.where`.

  'auto' is 'device' on an accelerator (GPU/TPU) and 'host' on a CPU, where
  the "device" is the cores that run the train step (README: Augmentation,
  and where it runs). `backend` defaults to `jax.default_backend()`.
  """
  if where not in WHERE:
    raise InputError('config.augment.where',
                     f'{where!r} is not one of {", ".join(WHERE)}')
  if where != 'auto':
    return where
  backend = jax.default_backend() if backend is None else backend
  return 'host' if backend == 'cpu' else 'device'


def from_config(section) -> tuple[AugmentConfig, str]:
  """(AugmentConfig, where) of `config.augment`; `where` not yet resolved."""
  values = dict(section)
  where = values.pop('where', 'host')
  return AugmentConfig(**values), where


def sample_keys(root: jax.Array, step, batch_size: int) -> jax.Array:
  """(B,) keys of one step's global batch: fold_in(fold_in(root, step), i).

  Sample i of the global batch gets the same key for any device count,
  process count or micro-batching (i is its row in the global batch).
  """
  step_key = jax.random.fold_in(root, step)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      step_key, jnp.arange(batch_size, dtype=jnp.uint32))


def augment_train_batch(batch: dict, dropout_key: jax.Array, step,
                        cfg: AugmentConfig) -> dict:
  """The train step's device augmentation of a global batch {'image', 'target', ...}.

  Keys: `sample_keys(fold_in(dropout_key, AUGMENT_STREAM), step, B)`, so a
  resumed run (same step, same dropout key) draws the same augmentations.
  """
  root = jax.random.fold_in(dropout_key, AUGMENT_STREAM)
  keys = sample_keys(root, step, batch['image'].shape[0])
  image, target = augment_keyed(keys, batch['image'], batch['target'], cfg)
  return dict(batch, image=image, target=target)
