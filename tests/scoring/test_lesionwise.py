"""BraTS 2023 lesion-wise scores: the official code's numbers on real cases, and
small cases worked out by hand."""

import functools

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from jaxseg import labels
from jaxseg.scoring import lesionwise
from jaxseg.scoring import surface

SHAPE = (40, 40, 40)
PENALTY = lesionwise.PENALTY_MM


def mask(*boxes, shape=SHAPE):
  """bool volume, True in each box given as (lo, hi) corner triples."""
  out = np.zeros(shape, bool)
  for lo, hi in boxes:
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
  return out


def cube(lo, size=4):
  return (lo, tuple(a + size for a in lo))


A = cube((5, 5, 5))      # 64 voxels
B = cube((25, 25, 25))   # 64 voxels, far from A


# ------------------------------------------------------------ hand-worked
#
# Each of these also went through the official code (see the real cases
# below), which gave the same numbers, including the HD95s asserted exactly.


def test_two_lesions_one_missed():
  s = lesionwise.region_scores(mask(A), mask(A, B))
  assert s['gt_lesions'] == 2 and (s['tp'], s['fn'], s['fp']) == (1, 1, 0)
  assert s['lesion_dice'] == pytest.approx((1 + 0) / 2)
  assert s['lesion_hd95'] == pytest.approx((0 + PENALTY) / 2)
  assert s['lesion_hd95_voxel'] == pytest.approx((0 + PENALTY) / 2)
  assert s['legacy_dice'] == pytest.approx(2 * 64 / (64 + 128))
  assert s['legacy_hd95'] == 33.0


def test_a_false_positive_voxel_counts_as_a_lesion():
  s = lesionwise.region_scores(mask(A, cube((30, 30, 30), 1)), mask(A))
  assert (s['gt_lesions'], s['tp'], s['fn'], s['fp']) == (1, 1, 0, 1)
  assert s['lesion_dice'] == pytest.approx(0.5)
  assert s['lesion_hd95'] == pytest.approx(PENALTY / 2)
  assert s['legacy_dice'] == pytest.approx(128 / 129)


def test_lesions_at_or_below_the_volume_limit_are_left_out():
  small = ((25, 25, 25), (30, 30, 27))                 # 5 x 5 x 2 = 50 voxels
  s = lesionwise.region_scores(mask(A), mask(A, small))
  assert (s['lesion_dice'], s['lesion_hd95']) == (1.0, 0.0)
  assert (s['gt_lesions'], s['small_lesions'], s['fn']) == (1, 1, 0)
  # Predicting it is no false positive either.
  s = lesionwise.region_scores(mask(A, small), mask(A, small))
  assert (s['lesion_dice'], s['fp'], s['tp']) == (1.0, 0, 1)
  # 51 voxels: a lesion, here a missed one.
  bigger = mask(A, small)
  bigger[25, 25, 27] = True
  s = lesionwise.region_scores(mask(A), bigger)
  assert (s['lesion_dice'], s['gt_lesions'], s['fn']) == (0.5, 2, 1)
  # The limit is a volume: 50 voxels of 2 mm^3 are 100 mm^3.
  s = lesionwise.region_scores(mask(A), mask(A, small), spacing=(1, 1, 2))
  assert (s['lesion_dice'], s['fn']) == (0.5, 1)
  s = lesionwise.region_scores(mask(A), mask(A, small), min_lesion_volume=0)
  assert s['lesion_dice'] == 0.5


def test_truth_lesions_closer_than_twice_the_dilation_merge():
  # 3 dilations reach 3 voxels along an axis: a gap of 6 voxels closes.
  near = ((15, 5, 5), (19, 9, 9))                      # gap x = 9..14
  s = lesionwise.region_scores(mask(A), mask(A, near))
  assert (s['gt_lesions'], s['tp'], s['fn']) == (1, 1, 0)
  assert s['lesion_dice'] == pytest.approx(2 * 64 / (64 + 128))
  assert s['lesion_hd95'] == 10.0
  far = ((16, 5, 5), (20, 9, 9))                       # gap of 7: two lesions
  s = lesionwise.region_scores(mask(A), mask(A, far))
  assert (s['gt_lesions'], s['fn'], s['lesion_dice']) == (2, 1, 0.5)
  s = lesionwise.region_scores(mask(A), mask(A, near), dilation=1)
  assert (s['gt_lesions'], s['fn'], s['lesion_dice']) == (2, 1, 0.5)


def test_a_prediction_within_the_dilation_belongs_to_the_lesion():
  touching = lesionwise.region_scores(mask(((11, 5, 5), (13, 9, 9))), mask(A))
  assert (touching['tp'], touching['fn'], touching['fp']) == (1, 0, 0)
  assert (touching['lesion_dice'], touching['lesion_hd95']) == (0.0, 6.0)
  beyond = lesionwise.region_scores(mask(((12, 5, 5), (14, 9, 9))), mask(A))
  assert (beyond['tp'], beyond['fn'], beyond['fp']) == (0, 1, 1)
  assert (beyond['lesion_dice'], beyond['lesion_hd95']) == (0.0, PENALTY)


def test_a_component_over_two_lesions_counts_for_both():
  far_a = ((25, 5, 5), (29, 9, 9))
  bridge = ((9, 6, 6), (25, 7, 7))                     # 16 voxels
  s = lesionwise.region_scores(mask(A, far_a, bridge), mask(A, far_a))
  assert (s['gt_lesions'], s['tp'], s['fp']) == (2, 2, 0)
  assert s['lesion_dice'] == pytest.approx(2 * 64 / (144 + 64))
  assert s['lesion_hd95'] == 20.0


def test_empty_masks():
  empty = np.zeros(SHAPE, bool)
  s = lesionwise.region_scores(empty, empty)
  assert (s['lesion_dice'], s['lesion_hd95'], s['lesion_hd95_voxel']) == (
      1.0, 0.0, 0.0)
  assert (s['legacy_dice'], s['legacy_hd95']) == (1.0, 0.0)
  assert (s['gt_lesions'], s['tp'], s['fn'], s['fp']) == (0, 0, 0, 0)
  missed = lesionwise.region_scores(empty, mask(A))
  assert (missed['lesion_dice'], missed['lesion_hd95']) == (0.0, PENALTY)
  assert (missed['legacy_dice'], missed['legacy_hd95']) == (0.0, PENALTY)
  assert missed['fn'] == 1
  only_pred = lesionwise.region_scores(mask(A, B), empty)
  assert (only_pred['lesion_dice'], only_pred['lesion_hd95']) == (0.0, PENALTY)
  assert (only_pred['fp'], only_pred['legacy_hd95']) == (2, PENALTY)
  # Only lesions under the limit, none predicted: nothing to score.
  s = lesionwise.region_scores(empty, mask(cube((5, 5, 5), 3)))
  assert (s['lesion_dice'], s['lesion_hd95'], s['small_lesions']) == (
      1.0, 0.0, 1)


def _labels(et):
  """A label map: oedema around a core of NCR and ET, plus a far ET blob."""
  label = np.zeros(SHAPE, np.uint8)
  label[4:20, 4:20, 4:20] = 2
  label[8:16, 8:16, 8:16] = 1
  label[10:14, 10:14, 10:14] = et
  label[30:34, 30:34, 30:34] = et
  return label


def test_region_labels_and_both_et_conventions():
  pred, true = _labels(4), _labels(4)
  pred[30:34, 30:34, 30:34] = 0                        # miss the far blob
  s4 = lesionwise.lesion_scores(pred, true, scheme=labels.BRATS)
  s3 = lesionwise.lesion_scores(np.where(pred == 4, 3, pred),
                                np.where(true == 4, 3, true), scheme=labels.BRATS23)
  assert s3 == s4
  assert (s4['WT_lesion_dice'], s4['WT_fn']) == (0.5, 1)
  assert (s4['TC_lesion_dice'], s4['ET_lesion_dice']) == (0.5, 0.5)
  assert s4['WT_legacy_dice'] == pytest.approx(
      2 * 16**3 / (2 * 16**3 + 64))
  # With ET = 3, a 4 belongs to no region.
  masks = labels.BRATS23.region_masks(_labels(4))
  assert masks['WT'].sum() == 16**3 - 64 and not masks['ET'].any()
  with pytest.raises(ValueError, match='binary masks'):
    lesionwise.lesion_scores(pred, true, scheme=labels.BINARY)
  only = lesionwise.lesion_scores(pred, true, scheme=labels.BRATS, regions=('ET',))
  assert set(only) == {k for k in s4 if k.startswith('ET_')}


def test_hd95_uses_the_spacing_of_each_axis():
  # The prediction has one more layer along axis 2.
  true = mask(((10, 10, 10), (22, 22, 14)))
  pred = mask(((10, 10, 10), (22, 22, 15)))
  for spacing, distance in (((1, 1, 2), 2.0), ((2, 2, 1), 1.0),
                            ((1, 1, 1), 1.0)):
    assert lesionwise.surfel_hd95(pred, true, spacing) == distance
    assert surface.hd95(pred, true, spacing) == distance
    s = lesionwise.region_scores(pred, true, spacing=spacing)
    assert s['lesion_hd95'] == s['lesion_hd95_voxel'] == distance


def test_surfel_areas():
  areas = lesionwise.surfel_areas()
  assert areas[0] == areas[255] == 0
  assert areas[1] == pytest.approx(np.sqrt(3) / 8)   # a corner cut off
  assert areas[15] == pytest.approx(1.0)             # half the block: a plane
  # A plane normal to axis 0 has area spacing1 * spacing2.
  assert lesionwise.surfel_areas((3, 2, 5))[15] == pytest.approx(10.0)


def test_surfel_areas_are_deepminds_table():
  """The marching-cubes rules give DeepMind's areas for all 256 codes."""
  utils = pytest.importorskip('monai.metrics.utils')
  normals = utils._get_neighbour_code_to_normals_table().cpu().numpy()
  normals = normals.astype(np.float64)   # (256, 4, 3), as DeepMind's list
  for s in ((1, 1, 1), (1, 1.7, 2.9), (0.5, 0.5, 3.0), (2.3, 1.1, 0.7)):
    scale = np.array([s[1] * s[2], s[0] * s[2], s[0] * s[1]])
    want = np.linalg.norm(normals * scale, axis=-1).sum(-1)
    np.testing.assert_allclose(lesionwise.surfel_areas(s), want, rtol=1e-12)


def test_bad_input():
  with pytest.raises(ValueError, match='3D'):
    lesionwise.region_scores(np.zeros((4, 4), bool), np.zeros((4, 4), bool))
  with pytest.raises(ValueError, match='differ'):
    lesionwise.region_scores(mask(A), mask(A, shape=(40, 40, 41)))
  with pytest.raises(ValueError, match='dilation'):
    lesionwise.region_scores(mask(A), mask(A), dilation=-1)
  with pytest.raises(ValueError, match='regions'):
    lesionwise.lesion_scores(_labels(4), _labels(4), scheme=labels.BRATS,
                             regions=('XX',))


# ------------------------------------------------------------ real cases
#
# Official numbers: rachitsaluja/BraTS-2023-Metrics at 0c603fcc,
# brats_2023_metrics/surface_distance/brats_metrics.py with the DeepMind
# surface_distance it bundles, run outside this repository as
#   get_lesion_wise_results(pred, gt, 'BraTS-GLI')   # dilation 3, limit 50
# (connected-components-3d 4.1.1, scipy 1.17.1, numpy 2.4.6, pandas 3.1.1;
# its metric_df.replace(inf, 374) limited to the two score columns, which
# pandas 3 needs), on copies of the files with label 4 written as 3 since the
# official code fixes ET = 3; header spacing (1, 1, 1) mm unless given.
# Per (case, region): lesion-wise Dice, lesion-wise HD95, Num_TP, Num_FN,
# Num_FP, Legacy_Dice, Legacy_HD95.

OFFICIAL_TCGA = {
    ('TCGA-DU-7294/hnfnetv1-20', 'WT'): (0.9751872565, 1, 1, 0, 0, 0.9751872565, 1),
    ('TCGA-DU-7294/hnfnetv1-20', 'TC'): (0.9092891841, 2.236067977, 1, 0, 0, 0.9092891841, 2.236067977),
    ('TCGA-DU-7294/hnfnetv1-20', 'ET'): (0, 374, 0, 0, 5, 0, 374),
    ('TCGA-DU-7294/isen-20', 'WT'): (0.9775968264, 1, 1, 0, 0, 0.9775968264, 1),
    ('TCGA-DU-7294/isen-20', 'TC'): (0.9555278696, 1, 1, 0, 0, 0.9555278696, 1),
    ('TCGA-DU-7294/isen-20', 'ET'): (1, 0, 0, 0, 0, 1, 0),
    ('TCGA-DU-7294/sanet0-20', 'WT'): (0.9893975508, 1, 1, 0, 0, 0.9893975508, 1),
    ('TCGA-DU-7294/sanet0-20', 'TC'): (0.9518989983, 1.414213562, 1, 0, 0, 0.9518989983, 1.414213562),
    ('TCGA-DU-7294/sanet0-20', 'ET'): (0, 374, 0, 0, 4, 0, 374),
    ('TCGA-DU-7294/scan-20', 'WT'): (0.9789879145, 1, 1, 0, 0, 0.9789879145, 1),
    ('TCGA-DU-7294/scan-20', 'TC'): (0.9215046749, 1.414213562, 1, 0, 0, 0.9215046749, 1.414213562),
    ('TCGA-DU-7294/scan-20', 'ET'): (1, 0, 0, 0, 0, 1, 0),
    ('TCGA-DU-7294/yixinmpl-20', 'WT'): (0.9768267965, 1, 1, 0, 0, 0.9768267965, 1),
    ('TCGA-DU-7294/yixinmpl-20', 'TC'): (0.9339781557, 1, 1, 0, 0, 0.9339781557, 1),
    ('TCGA-DU-7294/yixinmpl-20', 'ET'): (1, 0, 0, 0, 0, 1, 0),
    ('TCGA-FG-6692/hnfnetv1-20', 'WT'): (0.9782986111, 2, 1, 0, 0, 0.9782986111, 2),
    ('TCGA-FG-6692/hnfnetv1-20', 'TC'): (0.9527363184, 1.414213562, 1, 0, 0, 0.9527363184, 1.414213562),
    ('TCGA-FG-6692/hnfnetv1-20', 'ET'): (0.9736743978, 1, 1, 0, 0, 0.9736743978, 1),
    ('TCGA-FG-6692/isen-20', 'WT'): (0.4572932148, 190.5, 1, 0, 1, 0.9139488361, 7.280109889),
    ('TCGA-FG-6692/isen-20', 'TC'): (0.9669235205, 1, 1, 0, 0, 0.9669235205, 1),
    ('TCGA-FG-6692/isen-20', 'ET'): (0.9459328487, 1, 1, 0, 0, 0.9459328487, 1),
    ('TCGA-FG-6692/sanet0-20', 'WT'): (0.9796919585, 2, 1, 0, 0, 0.9796919585, 2),
    ('TCGA-FG-6692/sanet0-20', 'TC'): (0.9716675379, 1, 1, 0, 0, 0.9716675379, 1),
    ('TCGA-FG-6692/sanet0-20', 'ET'): (0.9893024619, 0, 1, 0, 0, 0.9893024619, 0),
    ('TCGA-FG-6692/scan-20', 'WT'): (0.9102713144, 6.403124237, 1, 0, 0, 0.9102713144, 6.403124237),
    ('TCGA-FG-6692/scan-20', 'TC'): (0.9590449345, 1, 1, 0, 0, 0.9590449345, 1),
    ('TCGA-FG-6692/scan-20', 'ET'): (0.9269746647, 1, 1, 0, 0, 0.9269746647, 1),
    ('TCGA-FG-6692/yixinmpl-20', 'WT'): (0.4706010997, 190, 1, 0, 1, 0.9405850948, 6.403124237),
    ('TCGA-FG-6692/yixinmpl-20', 'TC'): (0.967022463, 1, 1, 0, 0, 0.967022463, 1),
    ('TCGA-FG-6692/yixinmpl-20', 'ET'): (0.943323196, 1, 1, 0, 0, 0.943323196, 1),
}

# brats21_4mod truths against made-up predictions (`perturbed_prediction`,
# the same function as here) and against another patient's truth; '_aniso'
# gives the same arrays a header spacing of (1.25, 0.75, 2.0) mm.
OFFICIAL_BRATS21 = {
    ('perturbed_00000', 'WT'): (0.2970912073, 250.0786893, 1, 0, 2, 0.8910559461, 2.236067977),
    ('perturbed_00000', 'TC'): (0.2234365513, 281.059017, 1, 0, 3, 0.8933845843, 2.236067977),
    ('perturbed_00000', 'ET'): (0.2197617725, 250.2761424, 1, 0, 2, 0.6588583588, 2.828427125),
    ('perturbed_00000_aniso', 'WT'): (0.2970912073, 250.1913025, 1, 0, 2, 0.8910559461, 2.573907535),
    ('perturbed_00000_aniso', 'TC'): (0.2234365513, 281.1434769, 1, 0, 3, 0.8933845843, 2.573907535),
    ('perturbed_00000_aniso', 'ET'): (0.2197617725, 250.5118446, 1, 0, 2, 0.6588583588, 3.535533906),
    ('00002_vs_00000', 'WT'): (0.4234547134, 22.91287847, 1, 0, 0, 0.4234547134, 22.91287847),
    ('00002_vs_00000', 'TC'): (0.5008819675, 15.93737745, 1, 0, 0, 0.5008819675, 15.93737745),
    ('00002_vs_00000', 'ET'): (0.2800184456, 14.31782106, 1, 0, 0, 0.2800184456, 14.31782106),
    ('00005_vs_00003', 'WT'): (0.2882574033, 33.51119216, 1, 0, 0, 0.2882574033, 33.51119216),
    ('00005_vs_00003', 'TC'): (0.001508278775, 209.2598293, 1, 0, 1, 0.003016523847, 44.51965858),
    ('00005_vs_00003', 'ET'): (0.002806361085, 208.5696546, 1, 0, 1, 0.005612605496, 43.13930922),
}

KEYS = ('lesion_dice', 'lesion_hd95', 'tp', 'fn', 'fp', 'legacy_dice',
        'legacy_hd95')


@functools.lru_cache(maxsize=None)
def _read(path):
  image = nib.load(str(path))
  return np.asarray(image.dataobj), tuple(map(float, image.header.get_zooms()))


def _assert_official(scores, official, name):
  for (key, region), want in official.items():
    if key != name:
      continue
    got = tuple(scores[f'{region}_{k}'] for k in KEYS)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (key, region)


def _tcga_pair(shared_data, pair):
  case, algorithm = pair.split('/')
  folder = shared_data / 'tcga_4mod' / case
  true, _ = _read(folder / f'{case}_seg.nii.gz')
  pred, spacing = _read(folder / 'algorithms' / f'{algorithm}.nii.gz')
  return pred, true, spacing


TCGA_PAIRS = sorted({key for key, _ in OFFICIAL_TCGA})


@pytest.mark.parametrize('pair', TCGA_PAIRS)
def test_official_numbers_on_the_tcga_algorithms(shared_data, pair):
  pred, true, spacing = _tcga_pair(shared_data, pair)
  scores = lesionwise.lesion_scores(pred, true, scheme=labels.BRATS, spacing=spacing)
  _assert_official(scores, OFFICIAL_TCGA, pair)
  # One lesion and every prediction component on it: the lesion-wise voxel
  # HD95 is the whole region's.
  for region in lesionwise.REGIONS:
    if scores[f'{region}_tp'] == 1 and scores[f'{region}_fp'] == 0:
      masks = [labels.BRATS.region_masks(x)[region] for x in (pred, true)]
      assert scores[f'{region}_lesion_hd95_voxel'] == surface.hd95(
          *masks, spacing)


def test_one_small_false_positive_halves_the_lesion_wise_wt_dice(shared_data):
  """TCGA-FG-6692: isen-20 and yixinmpl-20 both predict a 46 / 42 voxel
  oedema blob away from the tumour that the vote does not have."""
  for algorithm in ('isen-20', 'yixinmpl-20', 'sanet0-20'):
    pred, true, _ = _tcga_pair(shared_data, f'TCGA-FG-6692/{algorithm}')
    pred_wt, true_wt = [labels.BRATS.region_masks(x)['WT']
                        for x in (pred, true)]
    lesions, fps = lesionwise.match_lesions(pred_wt, true_wt)
    scores = lesionwise.region_scores(pred_wt, true_wt)
    assert len(lesions) == 1 and lesions[0].dice > 0.9
    if algorithm == 'sanet0-20':
      assert fps == [] and scores['lesion_dice'] == lesions[0].dice
      continue
    components, _ = ndimage.label(pred_wt, np.ones((3, 3, 3)))
    assert len(fps) == 1 and np.count_nonzero(components == fps[0]) < 50
    assert scores['lesion_dice'] == pytest.approx(lesions[0].dice / 2)
    assert scores['legacy_dice'] > 0.9


def test_et_label_3_gives_the_same_numbers(shared_data):
  pred, true, spacing = _tcga_pair(shared_data, 'TCGA-DU-7294/sanet0-20')
  to3 = lambda x: np.where(x == 4, 3, x)  # noqa: E731
  scores = lesionwise.lesion_scores(to3(pred), to3(true), scheme=labels.BRATS23,
                                    spacing=spacing)
  _assert_official(scores, OFFICIAL_TCGA, 'TCGA-DU-7294/sanet0-20')


def perturbed_prediction(true_label, et):
  """A made-up prediction: ET's rim turned to NCR, all shifted by (2, -1, 1),
  a 3^3 ET cube and an NCR voxel 20 voxels off the tumour, and a 2^3 ET cube
  3 voxels past the truth's furthest voxel along axis 1 (inside WT's
  dilation, so it belongs to the WT lesion)."""
  label = np.array(true_label, np.uint8)
  enhancing = label == et
  label[enhancing & ~ndimage.binary_erosion(enhancing)] = 1
  label = np.roll(label, (2, -1, 1), axis=(0, 1, 2))
  wt = np.argwhere(np.asarray(true_label) > 0)
  lo, hi = wt.min(0), wt.max(0)
  c = (lo + hi) // 2
  x0 = lo[0] - 20
  label[x0:x0 + 3, c[1]:c[1] + 3, c[2]:c[2] + 3] = et
  label[x0, c[1] + 10, c[2]] = 1
  v = wt[np.argmax(wt[:, 1])]
  label[v[0]:v[0] + 2, v[1] + 3:v[1] + 5, v[2]:v[2] + 2] = et
  return label


@pytest.mark.slow
def test_official_numbers_on_brats21_truths(shared_data):
  def seg(case):
    folder = shared_data / 'brats21_4mod' / f'BraTS2021_{case}'
    return _read(folder / f'BraTS2021_{case}_seg.nii.gz')[0]

  t0 = seg('00000')
  p0 = perturbed_prediction(t0, 4)
  runs = {
      'perturbed_00000': (p0, t0, (1, 1, 1)),
      'perturbed_00000_aniso': (p0, t0, (1.25, 0.75, 2.0)),
      '00002_vs_00000': (seg('00002'), t0, (1, 1, 1)),
      '00005_vs_00003': (seg('00005'), seg('00003'), (1, 1, 1)),
  }
  for name, (pred, true, spacing) in runs.items():
    scores = lesionwise.lesion_scores(pred, true, scheme=labels.BRATS, spacing=spacing)
    _assert_official(scores, OFFICIAL_BRATS21, name)
