"""BraTS 2023 lesion-wise Dice and HD95 (host-side NumPy / SciPy).

The BraTS 2023 challenges rank by lesion-wise scores (the official code:
github.com/rachitsaluja/BraTS-2023-Metrics, brats_metrics.py). This module
computes the same numbers from integer label volumes (H, W, D); it is our own
implementation of that definition, checked against the official code's output
on real cases in tests/scoring/test_lesionwise.py.

Definition, per region (WT = {1, 2, ET}, TC = {1, ET}, ET = {ET}, the
regions of the case's `jaxseg.labels.LabelScheme`):

1. Connected components of prediction and ground truth, 26-connectivity.
2. Ground-truth lesions: the truth is dilated `dilation` times (3 for glioma,
   1 for meningioma / metastases) with the 18-neighbour structure
   generate_binary_structure(3, 2); each connected component of the dilated
   truth is one lesion, made of the truth voxels inside it. So truth
   components closer than about 2 * dilation voxels merge into one lesion.
3. A prediction component belongs to a lesion when it has a voxel inside that
   lesion's dilated region (it may belong to two). A lesion is scored against
   the union of its prediction components: Dice, and HD95 (nothing matched:
   Dice 0, HD95 `penalty_mm` = 374).
4. Lesions of volume <= `min_lesion_volume` mm^3 (voxel count x voxel volume;
   50, i.e. 50 voxels at 1 mm, for glioma) are left out: they count neither as
   a lesion nor as a miss, and the prediction components they match are not
   false positives either.
5. False positives: prediction components belonging to no lesion, of any
   size. Each counts as a lesion with Dice 0 and HD95 `penalty_mm`.
6. lesion_dice = sum(Dice of lesions) / (lesions + false positives), the same
   for HD95. No lesion and no false positive (both empty, or only lesions
   under the size limit): Dice 1, HD95 0.

Two lesion-wise HD95s are given, each with the rules above:

* `hd95` (key `<R>_lesion_hd95`, the official score): DeepMind
  surface-distance's compute_robust_hausdorff(compute_surface_distances(...),
  95), which the official code calls. Its surface elements ("surfels") are the
  marching-cubes triangles between voxel centres, on the grid of voxel
  corners; each corner on a surface carries the area (mm^2) of its triangles,
  and the 95th percentile of each direction's distances (corner to nearest
  corner of the other surface) is taken by area: the first distance, in
  sorted order, whose cumulative area fraction reaches 0.95. HD95 is the
  larger of the two directions. `surfel_hd95` gives it for any mask pair.
* `hd95_voxel` (key `<R>_lesion_hd95_voxel`): jaxseg's voxel HD95,
  `jaxseg.scoring.surface.hd95` (surface voxels by face-neighbour erosion, distances
  between voxel centres, numpy's linear-interpolation 95th percentile of
  each direction, the larger one), which is what MONAI reports.

Both use `spacing` (mm per array axis) for the distances. They are not the
same number: the 95th percentile often falls in the tail of the distances,
where the two weight surface points differently (TCGA-DU-7294 WT of
algorithm hnfnetv1-20: 1.0 mm official, 4.47 mm voxel, which MONAI's
HausdorffDistanceMetric also gives).

Also per region: counts of ground-truth lesions scored (`gt_lesions` = tp +
fn), lesions left out for size (`small_lesions`), matched lesions (`tp`),
missed lesions (`fn`), false-positive components (`fp`), and the official
whole-region ("legacy") Dice and surfel HD95 (both empty: 1 and 0; one empty:
0 and `penalty_mm`).

Speed: components are labelled once per region, and every dilation and
distance transform runs on the bounding box of what it needs, so a
240 x 240 x 155 case takes about a second.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Sequence

import numpy as np
from scipy import ndimage

from jaxseg.scoring import surface
from jaxseg.labels import REGION_NAMES as REGIONS
from jaxseg.labels import LabelScheme
# The official code's score for a missed lesion / false positive (it replaces
# the inf of an empty mask with 374, just above BraTS' 373.13 mm diagonal).
PENALTY_MM = 374.0
# BraTS 2023 glioma (BraTS-GLI, also SSA and PED) parameters; meningioma
# (MEN) uses dilation 1, metastases (MET) dilation 1 and volume 2.
GLIOMA_DILATION = 3
GLIOMA_MIN_LESION_VOLUME = 50.0

_CONNECT_26 = np.ones((3, 3, 3), bool)
_DILATION_STRUCTURE = ndimage.generate_binary_structure(3, 2)


# ------------------------------------------------ marching-cubes surfels
#
# A surface corner's code has one bit per voxel of the 2 x 2 x 2 block
# around it: offset (a, b, c) in {0, 1}^3 (a along axis 0) is bit
# 7 - (4a + 2b + c), DeepMind's correlation kernel [[[128, 64], [32, 16]],
# [[8, 4], [2, 1]]]. The surface in the block is cut at the midpoints of the
# block edges whose two voxels differ. On a block face with two diagonal
# voxels inside (an ambiguous face), the cut separates the inside voxels when
# at most four of the eight are inside, else the outside ones (so a block and
# its complement have one surface). Each cut polygon (3 to 6 vertices) is
# split into the triangles of largest total area, and a triangle with edge
# vectors u, v has the area vector (u x v) / 2, whose length in mm^2 at
# spacing s is |(n0 s1 s2, n1 s0 s2, n2 s0 s1)|. These rules give exactly
# DeepMind's neighbour_code_to_normals areas for all 256 codes (checked in
# the tests against the copy of that table which MONAI ships).

_CORNERS = tuple(itertools.product((0, 1), repeat=3))


def _bit(corner) -> int:
  return 7 - (4 * corner[0] + 2 * corner[1] + corner[2])


def _faces():
  """The 6 block faces, each as its 4 corners in cyclic order."""
  cycle = ((0, 0), (1, 0), (1, 1), (0, 1))
  faces = []
  for axis in range(3):
    others = [a for a in range(3) if a != axis]
    for side in (0, 1):
      face = []
      for u, v in cycle:
        corner = [0, 0, 0]
        corner[axis], corner[others[0]], corner[others[1]] = side, u, v
        face.append(tuple(corner))
      faces.append(face)
  return faces


def _midpoint(a, b):
  return tuple((x + y) / 2 for x, y in zip(a, b))


def _cut_polygons(code: int) -> list[list[tuple[float, ...]]]:
  """The closed cut polygons of one block code, as vertex lists."""
  inside = {c for c in _CORNERS if code >> _bit(c) & 1}
  separate_inside = len(inside) <= 4
  segments = []
  for face in _faces():
    edges = [(face[i], face[(i + 1) % 4]) for i in range(4)]
    cut = [i for i, (a, b) in enumerate(edges) if (a in inside) != (b in inside)]
    if len(cut) == 2:
      segments.append((_midpoint(*edges[cut[0]]), _midpoint(*edges[cut[1]])))
    elif len(cut) == 4:
      # Corner i lies between edges i - 1 and i: cut off the chosen corners.
      for i in range(4):
        if (face[i] in inside) == separate_inside:
          segments.append((_midpoint(*edges[i - 1]), _midpoint(*edges[i])))
  polygons = []
  while segments:
    polygon = list(segments.pop())
    while True:
      for i, (a, b) in enumerate(segments):
        if polygon[-1] in (a, b):
          polygon.append(b if a == polygon[-1] else a)
          segments.pop(i)
          break
      else:
        break
    if polygon[0] != polygon[-1]:
      raise AssertionError(f'open cut polygon for code {code}')
    polygons.append(polygon[:-1])
  return polygons


def _triangulations(indices: tuple[int, ...]) -> list[list[tuple[int, ...]]]:
  """Every triangulation of a polygon by non-crossing diagonals."""
  if len(indices) < 3:
    return [[]]
  first, last = indices[0], indices[-1]
  out = []
  for k in range(1, len(indices) - 1):
    for left in _triangulations(indices[:k + 1]):
      for right in _triangulations(indices[k:]):
        out.append(left + right + [(first, indices[k], last)])
  return out


def _largest_triangulation(polygon) -> list[np.ndarray]:
  """Area vectors of the triangulation of `polygon` of largest area."""
  points = np.asarray(polygon, np.float64)
  best, best_area = None, -1.0
  for triangles in _triangulations(tuple(range(len(points)))):
    vectors = [np.cross(points[j] - points[i], points[k] - points[i]) / 2
               for i, j, k in triangles]
    area = sum(float(np.linalg.norm(v)) for v in vectors)
    if area > best_area + 1e-12:
      best, best_area = vectors, area
  return best


@functools.lru_cache(maxsize=1)
def _surfel_vectors() -> np.ndarray:
  """(256, T, 3) float64 triangle area vectors per code (zero rows pad)."""
  per_code = []
  for code in range(256):
    vectors = []
    for polygon in _cut_polygons(code):
      vectors.extend(_largest_triangulation(polygon))
    per_code.append(vectors)
  table = np.zeros((256, max(len(v) for v in per_code), 3))
  for code, vectors in enumerate(per_code):
    if vectors:
      table[code, :len(vectors)] = vectors
  table.setflags(write=False)
  return table


def surfel_areas(spacing=None) -> np.ndarray:
  """(256,) float64 surface area in mm^2 of each 2x2x2 block code."""
  s = surface._spacing(spacing, 3)
  scale = np.array([s[1] * s[2], s[0] * s[2], s[0] * s[1]])
  return np.linalg.norm(_surfel_vectors() * scale, axis=-1).sum(axis=-1)


def _corner_codes(mask: np.ndarray) -> np.ndarray:
  """uint8 (n0+1, n1+1, n2+1) block codes of the voxel corners of `mask`."""
  padded = np.pad(mask.astype(np.uint8), 1)
  n = mask.shape
  codes = np.zeros(tuple(k + 1 for k in n), np.uint8)
  for corner in _CORNERS:
    a, b, c = corner
    codes |= padded[a:a + n[0] + 1, b:b + n[1] + 1, c:c + n[2] + 1] << _bit(
        corner)
  return codes


def _area_percentile(distances, areas, percent) -> float:
  """First distance (sorted by distance, then area) at cumulative area >= p."""
  order = np.lexsort((areas, distances))
  distances, areas = distances[order], areas[order]
  fraction = np.cumsum(areas) / np.sum(areas)
  index = np.searchsorted(fraction, percent / 100.0)
  return float(distances[min(index, distances.size - 1)])


def _box(mask: np.ndarray) -> tuple[slice, ...]:
  """Exact bounding box of a non-empty mask."""
  box = []
  for axis in range(mask.ndim):
    other = tuple(a for a in range(mask.ndim) if a != axis)
    hits = np.flatnonzero(np.any(mask, axis=other))
    box.append(slice(hits[0], hits[-1] + 1))
  return tuple(box)


def _check_masks(pred, target):
  pred = np.asarray(pred).astype(bool)
  target = np.asarray(target).astype(bool)
  if pred.shape != target.shape:
    raise ValueError(f'pred {pred.shape} and target {target.shape} differ')
  if pred.ndim != 3:
    raise ValueError(f'expected 3D (H, W, D) masks, got {pred.shape}')
  return pred, target


def surfel_hd95(pred, target, spacing=None, percent: float = 95.0,
                penalty_mm: float = PENALTY_MM) -> float:
  """The BraTS (DeepMind surface-distance) robust Hausdorff distance in mm.

  Args:
    pred, target: bool (H, W, D) masks.
    spacing: mm per axis (None: 1 mm).
    percent: the percentile (95: HD95; 100: the surfel Hausdorff distance).
    penalty_mm: returned when exactly one mask is empty (both empty: 0).

  Returns:
    max over both directions of the area-weighted `percent` percentile of the
    corner-to-surface distances (see the module docstring).
  """
  pred, target = _check_masks(pred, target)
  s = surface._spacing(spacing, 3)
  has_p, has_t = pred.any(), target.any()
  if not (has_p and has_t):
    return 0.0 if has_p == has_t else float(penalty_mm)
  box = _box(pred | target)
  code_p, code_t = _corner_codes(pred[box]), _corner_codes(target[box])
  edge_p = (code_p != 0) & (code_p != 255)
  edge_t = (code_t != 0) & (code_t != 255)
  to_p = ndimage.distance_transform_edt(~edge_p, sampling=s)
  to_t = ndimage.distance_transform_edt(~edge_t, sampling=s)
  areas = surfel_areas(s)
  return max(_area_percentile(to_p[edge_t], areas[code_t[edge_t]], percent),
             _area_percentile(to_t[edge_p], areas[code_p[edge_p]], percent))


# -------------------------------------------------------- lesion matching


@dataclasses.dataclass(frozen=True)
class Lesion:
  """One ground-truth lesion (after merging by dilation) and its score.

  voxels: its number of truth voxels; volume: voxels x voxel volume, mm^3.
  matched: ids of the prediction components (26-connected, numbered by
    scipy.ndimage.label) with a voxel in its dilated region.
  dice, hd95 (surfel), hd95_voxel: against the union of those components
    (none matched: 0, penalty, penalty; the HD95s nan with_hd95=False).
  counted: volume > min_lesion_volume, so it enters the scores.
  """
  voxels: int
  volume: float
  matched: tuple[int, ...]
  dice: float
  hd95: float
  hd95_voxel: float
  counted: bool


def match_lesions(pred, target, *, spacing=None,
                  dilation: int = GLIOMA_DILATION,
                  min_lesion_volume: float = GLIOMA_MIN_LESION_VOLUME,
                  penalty_mm: float = PENALTY_MM, with_hd95: bool = True
                  ) -> tuple[list[Lesion], list[int]]:
  """Ground-truth lesions of one region with their scores, and the FPs.

  Args:
    pred, target: bool (H, W, D) masks of one region.
    spacing: mm per axis (None: 1 mm).
    dilation: dilations of the truth (>= 0; 0: lesions are the truth's own
      components, which the official code does not offer).
    min_lesion_volume: mm^3; lesions at or below it get counted=False.
    penalty_mm: HD95 of a lesion that nothing matched.
    with_hd95: False skips the distances (Dice and counts only, faster).

  Returns:
    (lesions, false_positives): the lesions in no particular order, and the
    ids of the prediction components that belong to no lesion.
  """
  pred, target = _check_masks(pred, target)
  s = surface._spacing(spacing, 3)
  dilation = int(dilation)
  if dilation < 0:
    raise ValueError(f'dilation must be >= 0, got {dilation}')
  pred_cc = np.zeros(pred.shape, np.int32)
  n_pred = 0
  if pred.any():
    pbox = _box(pred)
    pred_cc[pbox], n_pred = ndimage.label(pred[pbox], structure=_CONNECT_26)
  if not target.any():
    return [], list(range(1, n_pred + 1))
  pred_sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
  pred_boxes = ndimage.find_objects(pred_cc)
  # Dilate and label inside the truth's box grown by `dilation` (each
  # dilation reaches one voxel further along every axis).
  tbox = _box(target)
  box = tuple(slice(max(b.start - dilation, 0), min(b.stop + dilation, n))
              for b, n in zip(tbox, target.shape))
  region = target[box]
  if dilation:
    region = ndimage.binary_dilation(region, structure=_DILATION_STRUCTURE,
                                     iterations=dilation)
  regions, n_lesions = ndimage.label(region, structure=_CONNECT_26)
  truth_ids = np.where(target[box], regions, 0)
  offsets = [b.start for b in box]
  voxel_volume = float(np.prod(s))
  lesions, claimed = [], set()
  for k, sub in enumerate(ndimage.find_objects(regions), start=1):
    inside = regions[sub] == k
    matched = np.unique(pred_cc[box][sub][inside])
    matched = tuple(int(m) for m in matched[matched > 0])
    claimed.update(matched)
    truth_k = truth_ids[sub] == k
    voxels = int(np.count_nonzero(truth_k))
    volume = voxels * voxel_volume
    # Both masks on the union of the lesion's box and its components' boxes.
    bounds = [(o + b.start, o + b.stop) for o, b in zip(offsets, sub)]
    for m in matched:
      bounds = [(min(lo, mb.start), max(hi, mb.stop))
                for (lo, hi), mb in zip(bounds, pred_boxes[m - 1])]
    ubox = tuple(slice(lo, hi) for lo, hi in bounds)
    t = np.zeros([hi - lo for lo, hi in bounds], bool)
    t[tuple(slice(o + b.start - lo, o + b.stop - lo)
            for o, b, (lo, _) in zip(offsets, sub, bounds))] = truth_k
    if matched:
      p = np.isin(pred_cc[ubox], matched)
      p_voxels = int(pred_sizes[list(matched)].sum())
      dice = 2.0 * np.count_nonzero(p & t) / (p_voxels + voxels)
      if with_hd95:
        hd95 = surfel_hd95(p, t, s, penalty_mm=penalty_mm)
        hd95_voxel = surface.hd95(p, t, s)
      else:
        hd95 = hd95_voxel = float('nan')
    else:
      dice, hd95, hd95_voxel = 0.0, float(penalty_mm), float(penalty_mm)
    lesions.append(Lesion(voxels=voxels, volume=volume, matched=matched,
                          dice=float(dice), hd95=float(hd95),
                          hd95_voxel=float(hd95_voxel),
                          counted=volume > min_lesion_volume))
  false_positives = [m for m in range(1, n_pred + 1) if m not in claimed]
  return lesions, false_positives


def region_scores(pred, target, *, spacing=None,
                  dilation: int = GLIOMA_DILATION,
                  min_lesion_volume: float = GLIOMA_MIN_LESION_VOLUME,
                  penalty_mm: float = PENALTY_MM, with_hd95: bool = True
                  ) -> dict[str, float | int]:
  """Lesion-wise and legacy scores of one region's bool (H, W, D) masks.

  Returns:
    dict lesion_dice, lesion_hd95, lesion_hd95_voxel, gt_lesions,
    small_lesions, tp, fn, fp, legacy_dice, legacy_hd95 (module docstring);
    with_hd95=False leaves out the three HD95s.
  """
  pred, target = _check_masks(pred, target)
  lesions, false_positives = match_lesions(
      pred, target, spacing=spacing, dilation=dilation,
      min_lesion_volume=min_lesion_volume, penalty_mm=penalty_mm,
      with_hd95=with_hd95)
  counted = [lesion for lesion in lesions if lesion.counted]
  n_fp = len(false_positives)
  total = len(counted) + n_fp
  if total:
    penalty = n_fp * float(penalty_mm)
    dice = sum(lesion.dice for lesion in counted) / total
    hd95 = (sum(lesion.hd95 for lesion in counted) + penalty) / total
    hd95_voxel = (sum(lesion.hd95_voxel for lesion in counted) + penalty
                  ) / total
  else:
    dice, hd95, hd95_voxel = 1.0, 0.0, 0.0
  tp = sum(1 for lesion in counted if lesion.matched)
  inter = np.count_nonzero(pred & target)
  sizes = np.count_nonzero(pred) + np.count_nonzero(target)
  scores = dict(
      lesion_dice=float(dice), lesion_hd95=float(hd95),
      lesion_hd95_voxel=float(hd95_voxel),
      gt_lesions=len(counted), small_lesions=len(lesions) - len(counted),
      tp=tp, fn=len(counted) - tp, fp=n_fp,
      legacy_dice=float(2.0 * inter / sizes) if sizes else 1.0)
  if not with_hd95:
    del scores['lesion_hd95'], scores['lesion_hd95_voxel']
    return scores
  scores['legacy_hd95'] = surfel_hd95(pred, target, spacing,
                                      penalty_mm=penalty_mm)
  return scores


def lesion_scores(pred_label, true_label, *, scheme: LabelScheme, spacing=None,
                  dilation: int = GLIOMA_DILATION,
                  min_lesion_volume: float = GLIOMA_MIN_LESION_VOLUME,
                  regions: Sequence[str] = REGIONS,
                  penalty_mm: float = PENALTY_MM,
                  with_hd95: bool = True) -> dict[str, float | int]:
  """BraTS 2023 lesion-wise scores of one case.

  Args:
    pred_label, true_label: int (H, W, D) label volumes in `scheme`
      (values outside its regions belong to none).
    scheme: the label scheme (`labels.BRATS`: ET 4 as in BraTS 2018-2021
      files, `labels.BRATS23`: ET 3 from 2023 on).
    spacing: mm per axis (None: 1 mm).
    dilation, min_lesion_volume (mm^3), penalty_mm: the challenge's
      parameters (defaults: BraTS 2023 glioma).
    regions: any of 'WT', 'TC', 'ET'.
    with_hd95: False leaves out the HD95s (Dice and counts only, faster).

  Returns:
    dict '<R>_<score>' for each region R and each key of `region_scores`,
    e.g. WT_lesion_dice, WT_lesion_hd95 (official, surfel),
    WT_lesion_hd95_voxel, WT_gt_lesions, WT_tp, WT_fn, WT_fp.
  """
  pred_label = np.asarray(pred_label)
  true_label = np.asarray(true_label)
  if pred_label.shape != true_label.shape:
    raise ValueError(f'pred {pred_label.shape} and true {true_label.shape} '
                     'label maps differ')
  unknown = [r for r in regions if r not in REGIONS]
  if unknown:
    raise ValueError(f'unknown regions {unknown}; known: {REGIONS}')
  if scheme.binary:
    raise ValueError('lesion_scores needs a BraTS label scheme, not binary masks')
  pred_masks = scheme.region_masks(pred_label)
  true_masks = scheme.region_masks(true_label)
  out = {}
  for r in regions:
    scores = region_scores(pred_masks[r], true_masks[r], spacing=spacing,
                           dilation=dilation,
                           min_lesion_volume=min_lesion_volume,
                           penalty_mm=penalty_mm, with_hd95=with_hd95)
    out.update({f'{r}_{k}': v for k, v in scores.items()})
  return out
