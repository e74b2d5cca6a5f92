"""The label schemes against the BraTS definitions, worked by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import labels
from jaxseg.errors import InputError


def test_regions_follow_the_brats_definition():
  values = np.array([0, 1, 2, 3, 4])
  # BRATS (ET=4): WT = {1,2,4}, TC = {1,4}, ET = {4}; 3 is in no region.
  want = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]],
                  bool)
  got = labels.BRATS.regions(values)
  assert isinstance(got, np.ndarray) and got.dtype == bool
  np.testing.assert_array_equal(got, want)
  # BRATS23 (ET=3): WT = {1,2,3}, TC = {1,3}, ET = {3}.
  want23 = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]],
                    bool)
  np.testing.assert_array_equal(labels.BRATS23.regions(values), want23)
  got_jax = labels.BRATS.regions(jnp.asarray(values.reshape(1, 5)))
  assert isinstance(got_jax, jax.Array) and got_jax.shape == (1, 5, 3)
  np.testing.assert_array_equal(got_jax[0], want)
  # Binary masks have one region; other regions are not asked of them.
  assert list(labels.BINARY.region_masks(np.array([0, 1]))) == ['WT']
  assert list(labels.BRATS.region_masks(values, ('ET',))) == ['ET']
  with pytest.raises(ValueError, match='unknown regions'):
    labels.BRATS.region_masks(values, ('NETC',))


@pytest.mark.parametrize('scheme', [labels.BRATS, labels.BRATS23])
def test_region_targets(scheme):
  et = scheme.enhancing
  target = scheme.targets(np.array([0, 1, 2, et]), 'regions')
  #                 WT TC ET
  expected = np.array([[0, 0, 0],    # background
                       [1, 1, 0],    # necrotic core
                       [1, 0, 0],    # oedema
                       [1, 1, 1]])   # enhancing
  np.testing.assert_array_equal(target, expected)
  assert target.dtype == np.float32
  onehot = scheme.targets(np.array([0, 1, 2, et]), 'multiclass')
  np.testing.assert_array_equal(onehot, np.eye(4))


@pytest.mark.parametrize('mode', labels.LABEL_MODES)
@pytest.mark.parametrize('scheme', [labels.BRATS, labels.BRATS23])
def test_from_targets_inverts_targets(mode, scheme):
  label = np.random.default_rng(0).choice(scheme.values, size=(7, 5))
  target = scheme.targets(label, mode)
  hard = target.argmax(-1) if mode == 'multiclass' else target > 0.5
  back = scheme.from_targets(hard, mode)
  expected = (label > 0).astype(np.uint8) if mode == 'binary' else label
  np.testing.assert_array_equal(back, expected)
  probs = target * 0.8 + 0.1
  np.testing.assert_array_equal(scheme.from_probabilities(probs, mode), expected)


def test_nested_decoding_of_region_outputs():
  # An ET voxel outside TC is not ET: each region lies inside the outer one.
  pred = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]], bool)
  np.testing.assert_array_equal(labels.BRATS.from_targets(pred, 'regions'),
                                [2, 1, 0, 4])


def test_binary_masks_cannot_feed_region_training():
  with pytest.raises(ValueError, match='binary masks'):
    labels.BINARY.targets(np.zeros(3), 'regions')
  np.testing.assert_array_equal(labels.BINARY.targets(np.array([0, 1]),
                                                      'binary'), [[0], [1]])


def test_modes():
  assert [labels.num_outputs(m) for m in labels.LABEL_MODES] == [1, 3, 4]
  assert [labels.activation(m) for m in labels.LABEL_MODES] == [
      'sigmoid', 'sigmoid', 'softmax']
  assert labels.output_channels('regions') == ['WT', 'TC', 'ET']
  assert labels.scored_regions('binary') == ('WT',)
  with pytest.raises(ValueError, match='unknown label_mode'):
    labels.num_outputs('region')


def test_region_probabilities_of_softmax_classes():
  probs = np.array([[0.1, 0.2, 0.3, 0.4]])
  got = labels.region_probabilities(probs, 'multiclass', labels.REGION_NAMES)
  np.testing.assert_allclose(got['WT'], [0.9])
  np.testing.assert_allclose(got['TC'], [0.6])
  np.testing.assert_allclose(got['ET'], [0.4])
  got = labels.region_probabilities(probs[:, :3], 'regions', ('TC',))
  assert list(got) == ['TC'] and got['TC'][0] == pytest.approx(0.2)


def test_names_and_what_a_removed_voxel_becomes():
  assert labels.BRATS.class_names == {0: 'BG', 1: 'NCR', 2: 'ED', 4: 'ET'}
  assert labels.BRATS23.class_names[3] == 'ET'
  assert labels.BINARY.class_names == {0: 'BG', 1: 'tumour'}
  assert labels.class_names(labels.BINARY, labels.BRATS)[1] == 'NCR'
  assert labels.class_names() == {0: 'BG', 1: 'NCR', 2: 'ED', 3: 'ET', 4: 'ET'}
  assert [labels.BRATS.leaving(r) for r in labels.REGION_NAMES] == [0, 2, 1]
  assert [labels.by_name(n) for n in ('brats', 'brats23', 'binary')] == [
      labels.BRATS, labels.BRATS23, labels.BINARY]
  assert labels.BRATS23.name == 'brats23' and labels.BINARY.binary
  with pytest.raises(ValueError, match='known: brats, brats23, binary'):
    labels.by_name('brats2015')


def test_datalist_names():
  # The Decathlon's Task01 order is mapped onto BraTS 2017+ values.
  scheme, label_map = labels.from_names(
      {'0': 'background', '1': 'edema', '2': 'non-enhancing tumor',
       '3': 'enhancing tumour'}, 'dataset.json')
  assert scheme == labels.BRATS
  assert label_map == ((0, 0), (1, 2), (2, 1), (3, 4))
  assert labels.from_names(None, 'x') == (labels.BRATS, ())
  with pytest.raises(InputError) as err:
    labels.from_names(['background'], 'dataset.json')
  assert err.value.where == 'dataset.json'
