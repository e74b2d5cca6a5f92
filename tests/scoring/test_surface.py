"""Surface-distance metrics against hand-worked cases, MONAI and medpy.

MONAI (HausdorffDistanceMetric, SurfaceDistanceMetric, SurfaceDiceMetric) and
medpy.metric.binary are independent implementations of the same definitions
(see jaxseg/scoring/surface.py): distances must agree to 1e-4 mm (MONAI returns
float32), ratios to 1e-6.
"""

import glob
import os
import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from jaxseg import labels
from jaxseg.scoring import metrics
from jaxseg.scoring import surface
from jaxseg.scoring import cases as case_scores

DIST_TOL = 1e-4
RATIO_TOL = 1e-6
NSD_TOLERANCE = 1.5  # mm; not a multiple of the test spacings' steps


# --------------------------------------------------------------- references


def _monai():
  return pytest.importorskip('monai.metrics')


def _medpy():
  return pytest.importorskip('medpy.metric.binary')


def monai_scores(pred, target, spacing, tolerance):
  """hd95, hausdorff, assd, nsd from MONAI's metric classes (one image)."""
  torch = pytest.importorskip('torch')
  mm = _monai()

  def t(a):
    return torch.as_tensor(np.asarray(a, np.float32)[None, None])

  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # small tensors: threads only contend on 2 cores
  try:
    return _monai_metrics(mm, t(pred), t(target), spacing=spacing,
                          tolerance=tolerance)
  finally:
    torch.set_num_threads(threads)


def _monai_metrics(mm, *args, spacing, tolerance):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # MONAI warns about empty masks
    return dict(
        hd95=mm.HausdorffDistanceMetric(include_background=True,
                                        percentile=95)(*args, spacing=spacing),
        hausdorff=mm.HausdorffDistanceMetric(include_background=True)(
            *args, spacing=spacing),
        assd=mm.SurfaceDistanceMetric(include_background=True,
                                      symmetric=True)(*args, spacing=spacing),
        nsd=mm.SurfaceDiceMetric([tolerance], include_background=True)(
            *args, spacing=spacing))


def _scalars(d):
  return {k: float(np.asarray(v).reshape(-1)[0]) for k, v in d.items()}


def check_against_references(pred, target, spacing, tolerance=NSD_TOLERANCE,
                             got=None, pooled_hd95=None):
  """Asserts our scores of a non-empty pair equal MONAI's and medpy's.

  `got` (volume_scores with surface scores) and `pooled_hd95` default to our
  values on these arrays.
  """
  mb = _medpy()
  got = got or metrics.volume_scores(pred, target, with_surface=True,
                                     spacing=spacing, tolerance=tolerance)
  if pooled_hd95 is None:
    pooled_hd95 = surface.hd95(pred, target, spacing, mode='pooled')
  ref = _scalars(monai_scores(pred, target, spacing, tolerance))
  assert got['hd95'] == pytest.approx(ref['hd95'], abs=DIST_TOL)
  assert got['hausdorff'] == pytest.approx(ref['hausdorff'], abs=DIST_TOL)
  assert got['assd'] == pytest.approx(ref['assd'], abs=DIST_TOL)
  assert got['nsd'] == pytest.approx(ref['nsd'], abs=RATIO_TOL)
  # medpy: result first, reference second; hd95 pools both directions.
  assert pooled_hd95 == pytest.approx(mb.hd95(pred, target, spacing),
                                      abs=DIST_TOL)
  assert got['hausdorff'] == pytest.approx(mb.hd(pred, target, spacing),
                                           abs=DIST_TOL)
  assert got['assd'] == pytest.approx(mb.assd(pred, target, spacing),
                                      abs=DIST_TOL)
  for name, fn in (('dice', mb.dc), ('iou', mb.jc),
                   ('precision', mb.precision), ('recall', mb.recall)):
    assert got[name] == pytest.approx(fn(pred, target), abs=RATIO_TOL), name
  return got


def blob(rng, shape, level):
  """A smooth random mask (several components, some touching the border)."""
  return ndimage.gaussian_filter(rng.normal(size=shape), 1.5) > level


# -------------------------------------------------------------- hand-worked


def test_surface_is_mask_xor_face_eroded_mask():
  square = np.zeros((5, 5), bool)
  square[1:4, 1:4] = True
  want = square.copy()
  want[2, 2] = False  # the only voxel with all 4 face neighbours inside
  np.testing.assert_array_equal(surface.surface(square), want)
  # Touching the array edge: the edge row is surface (border_value 0).
  full = np.ones((3, 4), bool)
  want = np.ones((3, 4), bool)
  want[1, 1:3] = False
  np.testing.assert_array_equal(surface.surface(full), want)
  # Diagonal neighbours do not count with connectivity 1: a plus sign's
  # centre is interior, with connectivity 2 it is surface.
  plus = np.zeros((3, 3), bool)
  plus[1, :] = plus[:, 1] = True
  assert not surface.surface(plus)[1, 1]
  assert surface.surface(plus, connectivity=2)[1, 1]


def test_shifted_squares_by_hand():
  # Target: 3x3 square rows 1-3, cols 1-3; pred: the same one column right.
  # Spacing 2 mm (rows), 0.5 mm (cols). Each surface has 8 voxels; in each
  # direction 4 lie on the other surface (0 mm) and 4 are one column off
  # (0.5 mm; the row neighbours are 2 mm away).
  target = np.zeros((5, 6), bool)
  target[1:4, 1:4] = True
  pred = np.roll(target, 1, axis=1)
  spacing = (2.0, 0.5)
  d_pt, d_tp = surface.surface_distances(pred, target, spacing)
  np.testing.assert_allclose(np.sort(d_pt), [0] * 4 + [0.5] * 4)
  np.testing.assert_allclose(np.sort(d_tp), [0] * 4 + [0.5] * 4)
  s = surface.surface_scores(pred, target, spacing, tolerance=0.4)
  assert s == pytest.approx(dict(hd95=0.5, hausdorff=0.5, assd=0.25, nsd=0.5))
  assert surface.surface_dice(pred, target, spacing, tolerance=0.5) == 1.0


def test_per_direction_and_pooled_hd95_by_hand():
  # 1D: target voxels 0..9 (surface {0, 9}); pred the same plus voxel 20
  # (surface {0, 9, 20}). d(P->T) = [0, 0, 11], d(T->P) = [0, 0].
  # Linear percentiles: per direction q95([0, 0, 11]) = 0.9 * 11 = 9.9
  # (position 0.95 * 2 = 1.9); pooled q95([0, 0, 0, 0, 11]) = 0.8 * 11 = 8.8
  # (position 0.95 * 4 = 3.8). Hausdorff 11, assd 11 / 5, nsd(1 mm) 4 / 5.
  target = np.zeros(30, bool)
  target[:10] = True
  pred = target.copy()
  pred[20] = True
  assert surface.hd95(pred, target) == pytest.approx(9.9)
  assert surface.hd95(target, pred) == pytest.approx(9.9)  # symmetric
  assert surface.hd95(pred, target, mode='pooled') == pytest.approx(8.8)
  assert surface.hausdorff(pred, target) == pytest.approx(11.0)
  assert surface.assd(pred, target) == pytest.approx(2.2)
  assert surface.surface_dice(pred, target, tolerance=1.0) == pytest.approx(0.8)
  # Spacing scales every distance.
  assert surface.hd95(pred, target, spacing=2.5) == pytest.approx(9.9 * 2.5)


def test_empty_conventions_and_what_the_references_do():
  shape, spacing = (4, 6), (2.0, 0.5)
  diagonal = np.sqrt((4 * 2.0) ** 2 + (6 * 0.5) ** 2)  # sqrt(73) mm
  assert surface.empty_distance(shape, spacing) == pytest.approx(diagonal)
  # BraTS: 240 x 240 x 155 at 1 mm -> 373.13 mm.
  assert surface.empty_distance((240, 240, 155), 1.0) == pytest.approx(
      373.1287, abs=1e-4)
  empty = np.zeros(shape, bool)
  some = empty.copy()
  some[1:3, 2:5] = True
  both = surface.surface_scores(empty, empty, spacing)
  assert both == dict(hd95=0.0, hausdorff=0.0, assd=0.0, nsd=1.0)
  for pred, target in ((empty, some), (some, empty)):
    one = surface.surface_scores(pred, target, spacing)
    assert one == pytest.approx(dict(hd95=diagonal, hausdorff=diagonal,
                                     assd=diagonal, nsd=0.0))
    assert surface.hd95(pred, target, spacing, mode='pooled') == one['hd95']
    assert surface.assd(pred, target, spacing) == one['assd']
    assert surface.surface_dice(pred, target, spacing) == 0.0
    # The references have no finite answer here: MONAI nan / inf, medpy raises.
    ref = _scalars(monai_scores(pred, target, spacing, 1.0))
    assert not np.isfinite(ref['hd95']) and not np.isfinite(ref['assd'])
    with pytest.raises(RuntimeError):
      _medpy().hd95(pred, target, spacing)
  ref = _scalars(monai_scores(empty, empty, spacing, 1.0))
  assert all(np.isnan(v) for v in ref.values())
  with pytest.raises(ValueError, match='non-empty'):
    surface.surface_distances(empty, some, spacing)


def test_bad_arguments():
  a = np.zeros((3, 3), bool)
  with pytest.raises(ValueError, match='one value per axis'):
    surface.hd95(a, a, spacing=(1.0, 1.0, 1.0))
  with pytest.raises(ValueError, match='positive'):
    surface.assd(a, a, spacing=(1.0, 0.0))
  with pytest.raises(ValueError, match='differ'):
    surface.hd95(a, a[0])
  with pytest.raises(ValueError, match='unknown mode'):
    surface.hd95(a, a, mode='mean')
  with pytest.raises(ValueError, match='tolerance'):
    surface.surface_dice(a, a, tolerance=-1.0)


# ------------------------------------------------------------ random masks


@pytest.mark.parametrize('shape,spacing', [
    ((48, 37), (0.8, 1.7)),
    ((22, 26, 15), (1.0, 0.6, 2.5)),
])
def test_random_masks_match_monai_and_medpy(shape, spacing):
  rng = np.random.default_rng(len(shape))
  differs = []
  for level_pred, level_target in ((0.05, 0.08), (0.12, 0.0), (0.2, 0.15)):
    pred = blob(rng, shape, level_pred)
    target = blob(rng, shape, level_target)
    assert pred.any() and target.any() and (pred != target).any()
    got = check_against_references(pred, target, spacing)
    differs.append(abs(got['hd95'] - surface.hd95(pred, target, spacing,
                                                   mode='pooled')))
  # The two hd95 conventions are really different on these masks.
  assert max(differs) > 0.1


def test_pred_inside_target_and_identical_masks():
  rng = np.random.default_rng(5)
  target = blob(rng, (30, 30, 12), 0.0)
  pred = ndimage.binary_erosion(target, iterations=2)
  check_against_references(pred, target, (0.9, 0.9, 3.0))
  same = surface.surface_scores(target, target, (0.9, 0.9, 3.0))
  assert same == dict(hd95=0.0, hausdorff=0.0, assd=0.0, nsd=1.0)


# ----------------------------------------------------------------- real data


def _load(path):
  return np.asarray(nib.load(path).dataobj)


def _crop(arrays, margin=2):
  """Crops same-shape arrays to the box of their union plus a zero margin.

  Only for the references' speed (medpy runs EDTs over the whole 9M-voxel
  array): a margin of zeros leaves the surfaces and their distances as they
  are. Our metrics run on the full volumes.
  """
  union = np.any(np.stack([a > 0 for a in arrays]), axis=0)
  box = tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1)
              for i in np.nonzero(union))
  return [a[box] for a in arrays]


@pytest.mark.slow
def test_real_cases_five_algorithms_vs_majority_vote(shared_data):
  """Each algorithm's regions WT/TC/ET against the case's majority vote."""
  _monai()
  mb = _medpy()
  cases = sorted(glob.glob(str(shared_data / 'tcga_4mod' / '*' / '*_seg.nii.gz')))
  assert len(cases) == 2
  seen_empty = set()
  for seg_path in cases:
    img = nib.load(seg_path)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    seg = _load(seg_path)
    diagonal = surface.empty_distance(seg.shape, spacing)
    algorithms = sorted(glob.glob(os.path.join(os.path.dirname(seg_path),
                                               'algorithms', '*.nii.gz')))
    assert len(algorithms) == 5
    preds = [_load(p) for p in algorithms]
    small = _crop([seg] + preds)
    for k, pred in enumerate(preds):
      # The evaluation's own columns, for the first algorithm of each case.
      row = (case_scores.score_case(pred, seg, labels.BRATS, 'regions', spacing)
             if k == 0 else {})
      regions = labels.BRATS.regions(pred), labels.BRATS.regions(seg)
      small_regions = (labels.BRATS.regions(small[k + 1]),
                       labels.BRATS.regions(small[0]))
      for i, name in enumerate(('WT', 'TC', 'ET')):
        p, t = regions[0][..., i], regions[1][..., i]
        got = metrics.volume_scores(p, t, with_surface=True, spacing=spacing,
                                    tolerance=NSD_TOLERANCE)
        for score in case_scores.SCORES + case_scores.SURFACE_SCORES:
          assert row.get(f'{score}_{name}', got[score]) == got[score]
        if not t.any():  # TCGA-DU-7294 has no enhancing tumour
          assert name == 'ET' and 'DU-7294' in seg_path
          if p.any():
            seen_empty.add('pred only')
            assert got['dice'] == 0.0 and got['nsd'] == 0.0
            assert got['hd95'] == got['assd'] == got['hausdorff'] == diagonal
            with pytest.raises(RuntimeError):  # medpy has no answer here
              mb.hd95(p, t, spacing)
          else:
            seen_empty.add('both empty')
            assert got['dice'] == 1.0 and got['nsd'] == 1.0
            assert got['hd95'] == got['assd'] == got['hausdorff'] == 0.0
          continue
        check_against_references(small_regions[0][..., i],
                                 small_regions[1][..., i], spacing, got=got)
  # Two algorithms find enhancing tumour in TCGA-DU-7294, three do not.
  assert seen_empty == {'pred only', 'both empty'}
