"""jaxseg.inference: sliding windows, mirroring and slice batches.

References: MONAI 1.6.1's own window positions (`_get_scan_interval`,
`dense_patch_slices`), `compute_importance_map` and
`sliding_window_inference` (PyTorch, float64, channels first) on the same
predictor; a pointwise predictor (the whole-volume answer is known); flips
written out by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxseg.errors import InputError
from jaxseg.inference import windows

MONAI_TOL = 1e-5


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


class WindowNet:
  """A predictor that is NOT translation-equivariant, in NumPy float64.

  A 3-wide correlation per channel with zero padding at the window edge,
  a random channel mix, plus a random term in the position inside the
  window, then a sigmoid: (B, *window, C) -> (B, *window, K). Records the
  shape of every batch it is called with.
  """

  def __init__(self, window, channels=2, classes=3, seed=0, position=True):
    rng = np.random.default_rng(seed)
    rank = len(window)
    self.kernels = rng.normal(size=(channels, 1) + (3,) * rank)
    self.mix = rng.normal(size=(channels, classes))
    self.position = (rng.normal(size=tuple(window) + (classes,)) if position
                     else np.zeros(classes))
    self.calls = []

  def __call__(self, x):
    x = np.asarray(x, np.float64)
    self.calls.append(x.shape)
    h = np.stack([ndimage.correlate(x[..., c], k, mode='constant')
                  for c, k in enumerate(self.kernels)], axis=-1)
    return sigmoid(h @ self.mix + self.position)


def pointwise(seed=0, channels=2, classes=3):
  """A translation- and flip-equivariant predictor: sigmoid(x W + b)."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(channels, classes))
  b = rng.normal(size=classes)
  calls = []

  def fn(x):
    calls.append(np.shape(x))
    return sigmoid(np.asarray(x, np.float64) @ w + b)

  fn.calls = calls
  return fn


# ------------------------------------------------------------ against MONAI


@pytest.fixture(scope='module')
def monai():
  pytest.importorskip('torch')
  return pytest.importorskip('monai')


def monai_starts(monai, size, window, overlap):
  from monai.data.utils import dense_patch_slices
  from monai.inferers.utils import _get_scan_interval
  image = (max(size, window),)
  interval = _get_scan_interval(image, (window,), 1, (overlap,))
  return [s[0].start for s in dense_patch_slices(image, (window,), interval)]


@pytest.mark.parametrize('overlap', [0.0, 0.25, 0.5, 0.6, 0.75, 0.9])
def test_window_starts_match_monai(monai, overlap):
  for size in (1, 5, 8, 9, 12, 20, 24, 28, 33, 100):
    for window in (1, 3, 8, 12, 16):
      assert windows.window_starts(size, window, overlap) == monai_starts(
          monai, size, window, overlap), (size, window, overlap)


def test_sliding_windows_match_monai_order(monai):
  from monai.data.utils import dense_patch_slices
  from monai.inferers.utils import _get_scan_interval
  shape, window, overlap = (20, 24, 28), (8, 12, 16), 0.4
  interval = _get_scan_interval(shape, window, 3, (overlap,) * 3)
  assert windows.sliding_windows(shape, window, overlap) == (
      dense_patch_slices(shape, window, interval))


def test_overlap_out_of_range_is_an_input_error():
  with pytest.raises(InputError, match='inference.overlap'):
    windows.window_starts(20, 8, 1.0)


@pytest.mark.parametrize('window', [(8, 12, 16), (7, 9, 5), (64, 64), (1, 3, 2)])
@pytest.mark.parametrize('sigma_scale', [0.125, 0.25, 0.05])
def test_gaussian_importance_matches_monai(monai, window, sigma_scale):
  from monai.data.utils import compute_importance_map
  ref = compute_importance_map(window, mode='gaussian',
                               sigma_scale=sigma_scale).numpy()
  ours = windows.gaussian_importance(window, sigma_scale)
  assert ours.shape == window and ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=0)


MONAI_CASES = {
    # name: (spatial shape, window, overlap, batch, mode, sigma_scale)
    '3d': ((20, 24, 28), (8, 12, 16), 0.5, 3, 'gaussian', 0.125),
    '3d_constant': ((20, 24, 28), (8, 12, 16), 0.25, 2, 'constant', 0.125),
    '3d_sigma': ((20, 24, 28), (8, 12, 16), 0.6, 4, 'gaussian', 0.25),
    # axis 0 shorter than the window (odd padding), axis 1 equal to it.
    '3d_pad': ((5, 12, 30), (8, 12, 16), 0.5, 4, 'gaussian', 0.125),
    '2d': ((20, 30), (8, 12), 0.6, 4, 'gaussian', 0.125),
    '2d_pad_constant': ((6, 30), (9, 12), 0.3, 1, 'constant', 0.125),
}


@pytest.mark.parametrize('name', sorted(MONAI_CASES))
def test_sliding_window_matches_monai(monai, name):
  import torch
  from monai.inferers import sliding_window_inference
  shape, window, overlap, batch, mode, sigma = MONAI_CASES[name]
  net = WindowNet(window, seed=len(name))
  volume = np.random.default_rng(1).normal(size=shape + (2,))

  def torch_net(t):   # (B, C, *window) -> (B, K, *window)
    probs = net(np.moveaxis(t.numpy(), 1, -1))
    return torch.from_numpy(np.moveaxis(probs, -1, 1).copy())

  ref = sliding_window_inference(
      torch.from_numpy(np.moveaxis(volume, -1, 0)[None].copy()), window,
      batch, torch_net, overlap=overlap, mode=mode, sigma_scale=sigma)
  ref = np.moveaxis(ref.numpy()[0], 0, -1)
  net.calls.clear()
  ours = windows.sliding_window_predict(
      net, volume.astype(np.float32), window, overlap=overlap,
      sigma_scale=sigma, batch_size=batch, mode=mode)
  assert ours.shape == shape + (3,) and ours.dtype == np.float32
  assert {c[0] for c in net.calls} == {batch}
  diff = np.abs(ours - ref).max()
  print(f'\n{name}: max |ours - MONAI| = {diff:.2e}')
  assert diff < MONAI_TOL


# ------------------------------------------------ independent properties


@pytest.mark.parametrize('shape, window', [((20, 24, 28), (8, 12, 16)),
                                           ((5, 12, 30), (8, 12, 16)),
                                           ((13, 17), (6, 6))])
def test_pointwise_predictor_gives_the_whole_volume_answer(shape, window):
  fn = pointwise()
  volume = np.random.default_rng(2).normal(size=shape + (2,)).astype(np.float32)
  ours = windows.sliding_window_predict(fn, volume, window, overlap=0.5,
                                          batch_size=3)
  np.testing.assert_allclose(ours, fn(volume[None])[0], rtol=1e-6, atol=1e-7)


def test_jitted_predictor_compiles_once_and_progress_counts_windows():
  traces = []

  @jax.jit
  def fn(x):
    traces.append(x.shape)
    return jax.nn.sigmoid(x.sum(-1, keepdims=True))

  volume = np.zeros((20, 24, 28, 2), np.float32)
  window = (8, 12, 16)
  total = len(windows.sliding_windows(volume.shape[:-1], window, 0.5))
  assert total % 5   # the last batch is partial
  seen = []
  windows.sliding_window_predict(fn, volume, window, batch_size=5,
                                   progress=lambda d, t: seen.append((d, t)))
  assert traces == [(5,) + window + (2,)]
  assert seen == [(min(d, total), total) for d in range(5, total + 5, 5)]


def test_window_of_wrong_rank_is_an_input_error():
  with pytest.raises(InputError, match='data.patch_size'):
    windows.sliding_window_predict(pointwise(), np.zeros((8, 8, 8, 2)),
                                     (4, 4))


# ---------------------------------------------------------------- mirroring


def test_mirroring_a_flip_equivariant_predictor_changes_nothing():
  fn = pointwise()
  x = np.random.default_rng(3).normal(size=(2, 6, 7, 8, 2))
  plain = fn(x)
  fn.calls.clear()
  ours = windows.mirror_predict(fn, x, (0, 1, 2))
  assert len(fn.calls) == 8
  np.testing.assert_allclose(ours, plain, rtol=1e-6, atol=1e-7)


def test_mirroring_is_the_mean_over_the_four_flips_by_hand():
  net = WindowNet((6, 7, 8), seed=4)
  x = np.random.default_rng(4).normal(size=(2, 6, 7, 8, 2))
  # Spatial axes 0 and 2 are array axes 1 and 3.
  expected = (net(x)
              + np.flip(net(np.flip(x, 1)), 1)
              + np.flip(net(np.flip(x, 3)), 3)
              + np.flip(net(np.flip(x, (1, 3))), (1, 3))) / 4
  net.calls.clear()
  ours = windows.mirror_predict(net, x, (0, 2))
  assert len(net.calls) == 4
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
  assert np.abs(expected - net(x)).max() > 1e-2   # the flips do matter


def test_no_mirror_axes_is_the_plain_prediction():
  net = WindowNet((5, 6), seed=5)
  x = np.random.default_rng(5).normal(size=(3, 5, 6, 2))
  assert windows.with_mirroring(net, ()) is net
  np.testing.assert_allclose(windows.mirror_predict(net, x, ()),
                             net(x).astype(np.float32))


def test_with_mirroring_jits_and_composes_with_sliding_windows():
  position = jnp.asarray(np.random.default_rng(6).normal(size=(8, 12, 1)))

  def fn(x):   # not flip-equivariant: depends on the position
    return jax.nn.sigmoid(x.sum(-1, keepdims=True) + position)

  mirrored = jax.jit(windows.with_mirroring(fn, (1,)))
  x = np.random.default_rng(7).normal(size=(2, 8, 12, 2)).astype(np.float32)
  by_hand = (fn(x) + jnp.flip(fn(jnp.flip(x, 2)), 2)) / 2
  np.testing.assert_allclose(np.asarray(mirrored(x)), by_hand, rtol=1e-6)
  volume = np.random.default_rng(8).normal(size=(20, 30, 2)).astype(np.float32)
  stitched = windows.sliding_window_predict(mirrored, volume, (8, 12))
  assert stitched.shape == (20, 30, 1) and np.isfinite(stitched).all()


def test_bad_mirror_axes_are_input_errors():
  with pytest.raises(InputError, match='mirror_axes'):
    windows.with_mirroring(pointwise(), (0, 0))
  with pytest.raises(InputError, match='mirror_axes'):
    windows.mirror_predict(pointwise(), np.zeros((1, 4, 4, 2)), (2,))


# ---------------------------------------------------------- slice batches


def test_predict_slices_pads_the_last_batch_to_the_fixed_size():
  net = WindowNet((5, 6), seed=9)
  slices = np.random.default_rng(9).normal(size=(7, 5, 6, 2))
  seen = []

  def fn(x):
    seen.append(np.array(x))
    return net(x)

  ours = windows.predict_slices(fn, slices, 3)
  assert [s.shape for s in seen] == [(3, 5, 6, 2)] * 3
  assert not seen[-1][1:].any()   # two padding rows of zeros
  np.testing.assert_allclose(ours, net(slices), rtol=1e-6, atol=1e-7)
  assert ours.shape == (7, 5, 6, 3) and ours.dtype == np.float32
