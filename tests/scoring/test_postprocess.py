"""Post-processing of BraTS label maps: small components, ET -> NCR, choosing
the thresholds on validation cases, config.postprocess."""

import nibabel as nib
import numpy as np
import pytest

from jaxseg import labels
from jaxseg import config_base
from jaxseg import errors
from jaxseg.scoring import lesionwise
from jaxseg.scoring import postprocess

SHAPE = (40, 40, 40)


def tumour(et=4):
  """Oedema with an NCR core and a 64-voxel ET centre, and three islands:

  a 4-voxel ET blob in the core (a small ET component), an 8-voxel NCR/ET
  blob in the oedema (a small TC component) and an 8-voxel blob of all
  three labels far away (a small WT component).
  """
  label = np.zeros(SHAPE, np.int16)
  label[2:20, 2:20, 2:20] = 2
  label[6:14, 6:14, 6:14] = 1
  label[9:13, 9:13, 9:13] = et
  label[6, 6:8, 6:8] = et
  label[16:18, 16:18, 16:18] = 1
  label[16:18, 16:18, 17] = et
  label[30:32, 30:32, 30:32] = 2
  label[30, 30, 30:32] = 1
  label[31, 31, 30:32] = et
  return label


def counts(label):
  return {v: int(np.count_nonzero(label == v)) for v in (0, 1, 2, 3, 4)}


def test_each_region_keeps_its_outer_regions():
  label = tumour()
  before = counts(label)
  # A WT component goes to background, all its labels.
  wt = postprocess.remove_small_components(label, {'WT': 9}, scheme=labels.BRATS)
  assert (wt[30:32, 30:32, 30:32] == 0).all()
  assert counts(wt)[0] == before[0] + 8
  np.testing.assert_array_equal(wt[:25, :25, :25], label[:25, :25, :25])
  # A TC component becomes oedema, its ET too; WT stays.
  tc = postprocess.remove_small_components(label, {'TC': 9}, scheme=labels.BRATS)
  assert (tc[16:18, 16:18, 16:18] == 2).all()
  # ... and so does the far island's 4-voxel NCR/ET part.
  assert (tc[30:32, 30:32, 30:32] == 2).all()
  assert counts(tc)[2] == before[2] + 8 + 4
  masks = [labels.BRATS.region_masks(x) for x in (label, tc)]
  np.testing.assert_array_equal(masks[0]['WT'], masks[1]['WT'])
  # An ET component becomes necrosis; TC and WT stay. The islands' ET
  # parts (4 and 2 voxels) go too.
  et = postprocess.remove_small_components(label, {'ET': 5}, scheme=labels.BRATS)
  assert (et[6, 6:8, 6:8] == 1).all() and (et[31, 31, 30:32] == 1).all()
  assert counts(et)[4] == 64
  masks = [labels.BRATS.region_masks(x) for x in (label, et)]
  for region in ('WT', 'TC'):
    np.testing.assert_array_equal(masks[0][region], masks[1][region])
  # The input is left alone.
  np.testing.assert_array_equal(label, tumour())


def test_components_below_the_threshold_go_and_at_it_stay():
  label = tumour()
  # The smallest components: WT 8 voxels (the far island), TC 4 (its
  # NCR/ET part), ET 2 (its ET).
  kept = postprocess.remove_small_components(
      label, {'WT': 8, 'TC': 4, 'ET': 2}, scheme=labels.BRATS)
  np.testing.assert_array_equal(kept, label)
  # WT takes the far island (4 ED, 2 NCR, 2 ET voxels), then TC the island
  # in the oedema (4 NCR, 4 ET -> ED), then ET the core's blob (4 -> NCR).
  removed = postprocess.remove_small_components(
      label, {'WT': 9, 'TC': 9, 'ET': 5}, scheme=labels.BRATS)
  c = counts(label)
  assert counts(removed) == {0: c[0] + 8, 1: c[1] - 2 - 4 + 4,
                             2: c[2] - 4 + 8, 3: 0, 4: 64}
  # 26-connectivity: two voxels that share only a corner are one component.
  pair = np.zeros(SHAPE, np.uint8)
  pair[5, 5, 5] = pair[6, 6, 6] = 2
  out = postprocess.remove_small_components(pair, {'WT': 2}, scheme=labels.BRATS)
  np.testing.assert_array_equal(out, pair)
  out = postprocess.remove_small_components(pair, {'WT': 3}, scheme=labels.BRATS)
  assert not out.any()


def test_et_becomes_necrosis_below_the_total_volume():
  label = tumour()
  n_et = counts(label)[4]                       # 64 + 4 + 2 + 2
  same = postprocess.et_to_ncr(label, n_et, scheme=labels.BRATS)
  np.testing.assert_array_equal(same, label)
  relabelled = postprocess.et_to_ncr(label, n_et + 1, scheme=labels.BRATS)
  assert counts(relabelled)[4] == 0
  assert counts(relabelled)[1] == counts(label)[1] + n_et
  off = postprocess.et_to_ncr(label, 0, scheme=labels.BRATS)
  np.testing.assert_array_equal(off, label)


def test_both_et_conventions():
  label4 = tumour(4)
  label3 = tumour(3)
  settings = dict(min_component_voxels={'WT': 9, 'TC': 9, 'ET': 5},
                  et_to_ncr_below=100)
  out4 = postprocess.postprocess(label4, scheme=labels.BRATS, **settings)
  out3 = postprocess.postprocess(label3, scheme=labels.BRATS23, **settings)
  np.testing.assert_array_equal(np.where(out4 == 4, 3, out4), out3)
  assert counts(out4)[4] == 0 and counts(out4)[1] > counts(label4)[1]
  # With ET = 3 a 4 is no tumour label: nothing touches it.
  out = postprocess.postprocess(label4, scheme=labels.BRATS23, et_to_ncr_below=1000)
  np.testing.assert_array_equal(out, label4)


def test_default_config_changes_nothing():
  config = config_base.get_config()
  label = tumour()
  out = postprocess.apply(label, config.postprocess, scheme=labels.BRATS)
  np.testing.assert_array_equal(out, label)
  assert out is not label and out.dtype == label.dtype


def test_apply_follows_the_config():
  config = config_base.get_config().postprocess
  config.min_component_voxels.TC = 9
  config.et_to_ncr_below = 100
  want = postprocess.postprocess(tumour(), scheme=labels.BRATS,
                                 min_component_voxels={'TC': 9},
                                 et_to_ncr_below=100)
  np.testing.assert_array_equal(
      postprocess.apply(tumour(), config, scheme=labels.BRATS), want)
  # A plain dict works too, and keys left out are off.
  np.testing.assert_array_equal(
      postprocess.apply(tumour(), dict(min_component_voxels=dict(TC=9),
                                       et_to_ncr_below=100), scheme=labels.BRATS),
      want)


@pytest.mark.parametrize('key, value', [
    ('min_component_voxels.WT', -1), ('min_component_voxels.ET', 2.5),
    ('min_component_voxels.TC', True), ('et_to_ncr_below', '200'),
    ('et_to_ncr_below', -3), ('choose_on_validation', 1),
    ('candidates.WT', ()), ('candidates.ET', (0, -5)),
    ('candidates.TC', 25)])
def test_bad_config_values_name_their_key(key, value):
  config = config_base.get_config().postprocess.to_dict()
  *parents, leaf = key.split('.')
  section = config
  for parent in parents:
    section = section[parent]
  section[leaf] = value
  with pytest.raises(errors.InputError) as info:
    postprocess.apply(tumour(), config, scheme=labels.BRATS)
  assert info.value.where == f'config.postprocess.{key}'


def test_bad_config_keys_name_their_key():
  for cfg, where in (
      (dict(min_component_voxels=dict(XX=3)),
       'config.postprocess.min_component_voxels.XX'),
      (dict(remove_small=3), 'config.postprocess.remove_small'),
      (dict(candidates=dict(NCR=(1,))), 'config.postprocess.candidates.NCR'),
      (dict(candidates=dict(WT='10')), 'config.postprocess.candidates.WT')):
    with pytest.raises(errors.InputError) as info:
      postprocess.apply(tumour(), cfg, scheme=labels.BRATS)
    assert info.value.where == where


def _box(label, lo, hi, value):
  label[tuple(slice(a, b) for a, b in zip(lo, hi))] = value


def test_choose_thresholds_on_a_set_with_a_known_best():
  # WT: one 125-voxel lesion, predicted with false blobs of 3 and 8 voxels.
  true = np.zeros(SHAPE, np.uint8)
  _box(true, (5, 5, 5), (10, 10, 10), 2)
  pred = true.copy()
  _box(pred, (30, 30, 30), (31, 31, 33), 2)
  _box(pred, (30, 5, 30), (32, 7, 32), 2)
  settings, table = postprocess.choose_thresholds(
      [(pred, true), (true, true)], {'WT': (5, 10, 20, 200)}, scheme=labels.BRATS)
  # Case 2 is perfect at any threshold but 200 (its lesion would go too).
  assert table['WT'] == pytest.approx({0: (1 / 3 + 1) / 2, 5: (0.5 + 1) / 2,
                                       10: 1.0, 20: 1.0, 200: 0.0})
  assert settings == dict(min_component_voxels={'WT': 10, 'TC': 0, 'ET': 0},
                          et_to_ncr_below=0)   # 10 and 20 tie: the smaller

  # ET -> NCR: case 1 has no ET but 30 predicted voxels, case 2 has 100 ET
  # voxels, predicted exactly.
  true1 = np.zeros(SHAPE, np.uint8)
  _box(true1, (5, 5, 5), (15, 15, 15), 1)
  pred1 = true1.copy()
  _box(pred1, (6, 6, 6), (8, 9, 11), 4)                   # 2 x 3 x 5 = 30
  true2 = true1.copy()
  _box(true2, (6, 6, 6), (10, 11, 11), 4)                 # 4 x 5 x 5 = 100
  settings, table = postprocess.choose_thresholds(
      [(pred1, true1), (true2, true2)], {'et_to_ncr_below': (50, 101, 500)},
      scheme=labels.BRATS)
  assert table == {'et_to_ncr_below': pytest.approx(
      {0: 0.5, 50: 1.0, 101: 0.5, 500: 0.5})}
  assert settings['et_to_ncr_below'] == 50
  with pytest.raises(ValueError, match='unknown candidate'):
    postprocess.choose_thresholds([(pred, true)], {'wt': (5,)}, scheme=labels.BRATS)


def test_regions_are_chosen_outside_in():
  """The WT choice is applied before TC is scored: an island that WT
  removal already takes is no TC false positive any more."""
  true = np.zeros(SHAPE, np.uint8)
  _box(true, (5, 5, 5), (12, 12, 12), 2)
  _box(true, (6, 6, 6), (11, 11, 11), 1)                 # 125 TC voxels
  pred = true.copy()
  _box(pred, (30, 30, 30), (32, 32, 32), 1)              # an 8-voxel island
  settings, table = postprocess.choose_thresholds(
      [(pred, true)], {'WT': (10,), 'TC': (10,)}, scheme=labels.BRATS)
  assert table['WT'] == {0: 0.5, 10: 1.0}
  assert table['TC'] == {0: 1.0, 10: 1.0}
  assert settings['min_component_voxels'] == {'WT': 10, 'TC': 0, 'ET': 0}


@pytest.mark.slow
def test_removing_a_small_false_positive_on_real_predictions(shared_data):
  """TCGA-FG-6692: the 46 / 42 voxel oedema blob of isen-20 / yixinmpl-20
  costs half their lesion-wise WT Dice; WT components under 50 voxels go."""
  folder = shared_data / 'tcga_4mod' / 'TCGA-FG-6692'
  true = np.asarray(nib.load(folder / 'TCGA-FG-6692_seg.nii.gz').dataobj)
  cases = []
  for algorithm in ('isen-20', 'yixinmpl-20', 'sanet0-20'):
    pred = np.asarray(nib.load(folder / 'algorithms' /
                               f'{algorithm}.nii.gz').dataobj)
    cases.append((pred, true))
    cleaned = postprocess.remove_small_components(pred, {'WT': 50},
                                                  scheme=labels.BRATS)
    before, after = [
        lesionwise.lesion_scores(x, true, scheme=labels.BRATS, regions=('WT',),
                                 with_hd95=False) for x in (pred, cleaned)]
    assert after['WT_fp'] == 0 and after['WT_lesion_dice'] > 0.9
    if algorithm != 'sanet0-20':
      assert before['WT_fp'] == 1 and before['WT_lesion_dice'] < 0.5
  settings, table = postprocess.choose_thresholds(cases, {'WT': (50,)},
                                                  scheme=labels.BRATS)
  assert settings['min_component_voxels']['WT'] == 50
  assert table['WT'][50] > table['WT'][0] + 0.25
