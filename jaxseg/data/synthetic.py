"""A small deterministic BraTS-like dataset, generated on first use.

The cases are written in the BraTS 2019 layout (`SYN_000/SYN_000_flair.nii.gz`,
`_t1`, `_t1ce`, `_t2`, `_seg`) so that tests and demos go through the same
readers as real data. Each case is a skull-stripped brain (an ellipsoid with a
smooth random shape, grey/white matter, ventricles and sulcal CSF) holding one
irregular tumour with the three BraTS sub-regions: necrotic core (1), oedema
(2) and enhancing rim (4). The four channels have MRI-like contrasts:

| tissue      | FLAIR  | T1      | T1ce        | T2     |
|-------------|--------|---------|-------------|--------|
| CSF         | dark   | dark    | dark        | bright |
| grey matter | mid    | mid     | mid         | mid    |
| white matter| darker | bright  | bright      | darker |
| oedema      | bright | hypo    | hypo        | bright |
| necrosis    | bright | dark    | dark        | bright |
| enhancing   | bright | hypo    | very bright | mid    |

plus Rician noise, a smooth bias field per channel and a random intensity
scale per case and channel, stored as int16 with a 1 mm BraTS-like affine.
Case `i` depends only on (seed, i, shape), not on `num_cases`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import nibabel as nib
import numpy as np
from scipy import ndimage

GENERATOR_VERSION = 1
MODALITIES = ('flair', 't1', 't1ce', 't2')

# Tissue classes of the generator (not the label convention).
_BG, _CSF, _GM, _WM, _NEC, _ENH, _OED, _LES = range(8)
# Mean intensity per tissue (rows) and modality (columns: flair, t1, t1ce, t2).
_CONTRAST = np.array([
    [0.00, 0.00, 0.00, 0.00],  # background
    [0.18, 0.28, 0.25, 1.45],  # CSF
    [0.72, 0.58, 0.55, 0.80],  # grey matter
    [0.55, 0.80, 0.72, 0.55],  # white matter
    [0.95, 0.25, 0.15, 1.30],  # necrosis
    [1.10, 0.55, 1.60, 0.95],  # enhancing tumour
    [1.20, 0.50, 0.48, 1.10],  # oedema (at the core; fades outwards)
    [0.90, 0.62, 0.58, 0.95],  # small white-matter lesion (not tumour)
], np.float32)


def default_cache_dir() -> str:
  """`$JAXSEG_CACHE`, else `~/.cache/jaxseg`."""
  return os.environ.get('JAXSEG_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'jaxseg')


def dataset_name(num_cases: int, shape, seed: int) -> str:
  """The cache folder name, e.g. 'synthetic_brats19_n24_96x96x64_s0'."""
  dims = 'x'.join(str(int(s)) for s in shape)
  return f'synthetic_brats19_n{num_cases}_{dims}_s{seed}'


def ensure_synthetic(cache_dir: str | None = None, num_cases: int = 24,
                     shape=(96, 96, 64), seed: int = 0) -> str:
  """Returns the folder of the synthetic dataset, generating it if needed.

  Generation writes into a temporary folder inside `cache_dir` and renames it
  into place at the end, so an interrupted run never leaves a partial dataset.

  Args:
    cache_dir: where datasets are kept; default `$JAXSEG_CACHE` or
      `~/.cache/jaxseg`.
    num_cases: number of cases (SYN_000 ...).
    shape: (H, W, D) volume shape, each at least 32.
    seed: the dataset seed.

  Returns:
    The root folder, readable by `sources.discover_cases`.
  """
  shape = tuple(int(s) for s in shape)
  if len(shape) != 3 or min(shape) < 32:
    raise ValueError(f'shape must be 3 sizes >= 32, got {shape}')
  if num_cases < 1:
    raise ValueError(f'num_cases must be >= 1, got {num_cases}')
  cache_dir = os.path.abspath(cache_dir or default_cache_dir())
  root = os.path.join(cache_dir, dataset_name(num_cases, shape, seed))
  if os.path.isdir(root):
    return root
  os.makedirs(cache_dir, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(root)}.tmp-',
                         dir=cache_dir)
  try:
    for i in range(num_cases):
      write_case(tmp, f'SYN_{i:03d}', *make_case(shape, seed, i))
    with open(os.path.join(tmp, 'synthetic.json'), 'w') as f:
      json.dump({'generator_version': GENERATOR_VERSION, 'num_cases': num_cases,
                 'shape': list(shape), 'seed': seed,
                 'labels': {'0': 'background', '1': 'necrotic core',
                            '2': 'oedema', '4': 'enhancing tumour'}}, f,
                indent=2)
    try:
      os.rename(tmp, root)
    except OSError:
      if not os.path.isdir(root):  # Not a concurrent run that finished first.
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return root


def affine_for(shape) -> np.ndarray:
  """A 1 mm LPS-flipped affine like BraTS: diag(-1, -1, 1) with an origin."""
  affine = np.diag([-1.0, -1.0, 1.0, 1.0])
  affine[1, 3] = shape[1] - 1
  return affine


def write_case(root: str, case_id: str, image: np.ndarray, label: np.ndarray):
  """Writes one case in the BraTS 2019 layout.

  Args:
    root: dataset folder.
    case_id: case folder and file prefix.
    image: int16 (H, W, D, 4), channels in `MODALITIES` order.
    label: uint8 (H, W, D) with values {0, 1, 2, 4}.
  """
  folder = os.path.join(root, case_id)
  os.makedirs(folder, exist_ok=True)
  affine = affine_for(label.shape)

  def save(data, suffix):
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units('mm', 'sec')
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    nib.save(img, os.path.join(folder, f'{case_id}_{suffix}.nii.gz'))

  for c, m in enumerate(MODALITIES):
    save(np.ascontiguousarray(image[..., c]), m)
  save(label, 'seg')


def _smooth_field(rng: np.random.Generator, shape, nodes) -> np.ndarray:
  """A smooth random field with unit std: Gaussian RBF interpolation of noise.

  Args:
    rng: random generator.
    shape: (H, W, D) output shape.
    nodes: (a, b, c) number of random control values per axis; more is rougher.

  Returns:
    float32 (H, W, D), zero mean and unit standard deviation.
  """
  out = rng.standard_normal(tuple(nodes)).astype(np.float32)
  # Separable interpolation; einsum (no BLAS) keeps the result bit-exact
  # whatever the thread count.
  for spec, n, k in zip(('ai,ijk->ajk', 'bj,ajk->abk', 'ck,abk->abc'), shape,
                        nodes):
    x = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    c = np.linspace(-0.5 / (k - 1), 1.0 + 0.5 / (k - 1), k, dtype=np.float32)
    w = np.exp(-0.5 * ((x - c[None, :]) * (k - 1) / 0.9) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    out = np.einsum(spec, w, out)
  out -= out.mean()
  return out / (out.std() + 1e-6)


def _f32(a) -> np.ndarray:
  return np.asarray(a, np.float32)


def _rotation(angles) -> np.ndarray:
  """float32 (3, 3) rotation from three Euler angles (radians)."""
  out = np.eye(3)
  for axis, angle in enumerate(angles):
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i] = r[j, j] = np.cos(angle)
    r[i, j], r[j, i] = -np.sin(angle), np.sin(angle)
    out = out @ r
  return _f32(out)


def make_case(shape=(96, 96, 64), seed: int = 0,
              index: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Generates one case.

  Args:
    shape: (H, W, D).
    seed: the dataset seed.
    index: the case number.

  Returns:
    image int16 (H, W, D, 4) in `MODALITIES` order, label uint8 (H, W, D) in
    {0, 1, 2, 4}.
  """
  rng = np.random.default_rng([seed, index, GENERATOR_VERSION])
  h, w, d = shape
  gx = (np.arange(h, dtype=np.float32) - (h - 1) / 2)[:, None, None]
  gy = (np.arange(w, dtype=np.float32) - (w - 1) / 2)[None, :, None]
  gz = (np.arange(d, dtype=np.float32) - (d - 1) / 2)[None, None, :]

  # Brain: a randomly perturbed ellipsoid; r < 1 inside.
  radii = _f32([0.40 * h, 0.45 * w, 0.42 * d]) * _f32(rng.uniform(0.9, 1.02, 3))
  centre = _f32(rng.uniform(-1.5, 1.5, 3))
  rx, ry, rz = ((g - c) / r for g, c, r in zip((gx, gy, gz), centre, radii))
  r = np.sqrt(rx**2 + ry**2 + rz**2)
  r = r + 0.06 * _smooth_field(rng, shape, (5, 5, 4))
  brain = r < 1.0

  # Tissues: a grey cortical ribbon with gyral folds around white matter,
  # sulcal CSF at the surface, deep grey nuclei and two ventricles.
  folds = _smooth_field(rng, shape, (20, 20, 13))
  tissue = np.full(shape, _BG, np.uint8)
  tissue[brain] = _GM
  tissue[brain & (r + 0.13 * folds < 0.78)] = _WM
  tissue[brain & (r > 0.90) & (folds > 0.5)] = _CSF
  vent = rng.uniform(0.85, 1.2)
  for side in (-1.0, 1.0):
    ox, oy, oz = centre + _f32([side * 0.11, 0.03, 0.08]) * radii
    # Deep grey nuclei lateral to each ventricle.
    nx = (gx - ox - side * 0.17 * radii[0]) / (0.09 * radii[0])
    ny = (gy - oy - 0.12 * radii[1]) / (0.15 * radii[1])
    nz = (gz - oz + 0.10 * radii[2]) / (0.16 * radii[2])
    tissue[nx**2 + ny**2 + nz**2 < 1.0] = _GM
    # Ventricle: a curved ellipsoid (bent towards the midline at the ends).
    vy = (gy - oy) / (0.38 * radii[1] * vent)
    vx = (gx - ox + side * 0.08 * radii[0] * vy**2) / (0.12 * radii[0] * vent)
    vz = (gz - oz) / (0.20 * radii[2] * vent)
    tissue[vx**2 + vy**2 + vz**2 < 1.0] = _CSF
  # A few small white-matter lesions: FLAIR/T2 bright, not tumour (label 0).
  for _ in range(rng.integers(0, 4)):
    lx, ly, lz = centre + _f32(rng.uniform(-0.5, 0.5, 3)) * radii
    lr = rng.uniform(1.5, 3.0)
    lesion = ((gx - lx)**2 + (gy - ly)**2 + (gz - lz)**2 < lr**2) & (
        tissue == _WM)
    tissue[lesion] = _LES

  # Tumour: an irregular, randomly rotated and stretched blob inside the
  # brain; t < 1 is the core (enhancing rim around necrosis), oedema around it.
  label = np.zeros(shape, np.uint8)
  for _ in range(100):
    radius = rng.uniform(6.0, 16.0)
    pos = _f32(rng.uniform(-0.5, 0.5, 3)) * radii + centre
    rot = _rotation(rng.uniform(0.0, 2 * np.pi, 3))
    axes = _f32(radius * rng.uniform(0.75, 1.3, 3))
    dx, dy, dz = gx - pos[0], gy - pos[1], gz - pos[2]
    t = np.sqrt(sum(((rot[0, k] * dx + rot[1, k] * dy + rot[2, k] * dz) /
                     axes[k])**2 for k in range(3)))
    t = t + 0.28 * _smooth_field(rng, shape, (18, 18, 12))
    core = brain & (t < 1.0)
    nec_frac = rng.uniform(0.35, 0.7)
    necrosis = core & (t + 0.1 * _smooth_field(rng, shape, (18, 18, 12)) <
                       nec_frac)
    extent = rng.uniform(1.5, 2.4)
    t_oed = t + 0.35 * _smooth_field(rng, shape, (10, 10, 7))
    oedema = brain & ~core & (t_oed < extent) & (tissue != _CSF)
    label[:] = 0
    label[oedema] = 2
    label[core] = 4
    label[necrosis] = 1
    counts = np.bincount(label.ravel(), minlength=5)
    if min(counts[1], counts[2], counts[4]) >= 30:
      break
  tissue[oedema] = _OED
  tissue[core] = _ENH
  tissue[necrosis] = _NEC

  # Intensities per channel: tissue means, texture, partial volume, oedema
  # fading outwards, bias field, Rician noise, per-case scale.
  fade = np.clip((extent - t_oed) / (extent - 1.0), 0.0, 1.0)[oedema]
  image = np.zeros(shape + (4,), np.int16)
  texture = _smooth_field(rng, shape, (16, 16, 10))
  for c in range(4):
    x = _CONTRAST[tissue, c]
    background = _CONTRAST[_WM, c] if c in (1, 2) else _CONTRAST[_GM, c]
    x[oedema] = background + (x[oedema] - background) * (0.4 + 0.6 * fade)
    x *= 1.0 + 0.05 * texture
    x = ndimage.gaussian_filter(x, 0.6, truncate=3.0)
    x *= np.exp(0.15 * _smooth_field(rng, shape, (3, 3, 3)))
    sigma = 0.045
    n1 = rng.standard_normal(shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(shape, dtype=np.float32) * sigma
    x = np.sqrt((x + n1)**2 + n2**2)
    scale = rng.uniform(300.0, 1200.0)
    x = np.where(brain, x * scale, 0.0)
    image[..., c] = np.clip(np.rint(x), 0, 32767).astype(np.int16)
  return image, label
