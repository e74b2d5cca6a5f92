"""jaxseg.losses against MONAI's loss classes (monai.losses, PyTorch).

MONAI is channels-first (N, C, *spatial) and takes the activation as a flag;
our losses are channels-last and take it as `activation`. Inputs are random
logits and random binary (sigmoid) or one-hot (softmax) targets, in 2D and
3D; MONAI runs in float64 on the same numbers, ours in float32.
"""

import functools

import jax
import numpy as np
import pytest

from jaxseg import losses

torch = pytest.importorskip('torch')
monai_losses = pytest.importorskip('monai.losses')

RTOL = 1e-5
SHAPES = {'2d': (2, 7, 6), '3d': (2, 5, 4, 6)}   # (N, *spatial)


def case(dims, activation, channels=3, seed=0):
  """Random logits and targets; one sample-channel image is left empty."""
  rng = np.random.default_rng(seed + 10 * channels + len(SHAPES[dims]))
  shape = SHAPES[dims] + (channels,)
  x = (rng.normal(size=shape) * 2.0).astype(np.float32)
  if activation == 'sigmoid':
    y = (rng.uniform(size=shape) < 0.35).astype(np.float32)
    y[0, ..., -1] = 0.0   # an empty target image: no boundary, no weight
  else:
    y = np.eye(channels, dtype=np.float32)[
        rng.integers(0, channels, size=shape[:-1])]
    y[0, ..., -1] = 0.0   # class C-1 absent from sample 0
    y[0, ..., 0] = 1.0 - y[0, ..., 1:].sum(-1)
  return x, y


def to_torch(a):
  """Channels-last numpy -> channels-first float64 torch tensor."""
  return torch.from_numpy(np.moveaxis(np.asarray(a, np.float64), -1, 1))


def monai_value(loss, x, y):
  with torch.no_grad():
    return float(loss(to_torch(x), to_torch(y)))


@functools.lru_cache(maxsize=None)
def jitted(fn, static, traced):
  """fn jitted with flags fixed and numbers traced (few compiles)."""
  def call(x, y, numbers):
    return fn(x, y, **dict(static), **dict(zip(traced, numbers)))
  return jax.jit(call)


def ours(fn, x, y, **kwargs):
  """Our loss; bools, strings and None are static, numbers are traced."""
  static = tuple(sorted((k, v) for k, v in kwargs.items()
                        if v is None or isinstance(v, (bool, str))))
  traced = tuple(sorted(k for k in kwargs if k not in dict(static)))
  numbers = tuple(np.float32(kwargs[k]) for k in traced)
  return float(jitted(fn, static, traced)(x, y, numbers))


def flags(activation):
  return dict(sigmoid=activation == 'sigmoid',
              softmax=activation == 'softmax')


DIMS = pytest.mark.parametrize('dims', ['2d', '3d'])
ACTS = pytest.mark.parametrize('activation', ['sigmoid', 'softmax'])


@DIMS
@ACTS
def test_dice_and_iou(dims, activation):
  x, y = case(dims, activation)
  # Each flag takes both values at least once (one compile per setting).
  for per_sample, squared, background in ((True, False, True),
                                          (False, True, False),
                                          (False, False, True)):
    monai = monai_losses.DiceLoss(
        **flags(activation), squared_pred=squared, batch=not per_sample,
        include_background=background, smooth_nr=0.5, smooth_dr=0.5)
    got = ours(losses.soft_dice_loss, x, y, activation=activation,
               smooth=0.5, squared=squared, per_sample=per_sample,
               include_background=background)
    np.testing.assert_allclose(got, monai_value(monai, x, y), rtol=RTOL)
    # MONAI's Jaccard (2I + s) / (2U + s) is ours with smooth = s / 2.
    monai = monai_losses.DiceLoss(
        **flags(activation), squared_pred=squared, batch=not per_sample,
        include_background=background, jaccard=True, smooth_nr=1.0,
        smooth_dr=1.0)
    got = ours(losses.soft_iou_loss, x, y, activation=activation,
               smooth=0.5, squared=squared, per_sample=per_sample,
               include_background=background)
    np.testing.assert_allclose(got, monai_value(monai, x, y), rtol=RTOL)


@DIMS
@ACTS
def test_tversky(dims, activation):
  x, y = case(dims, activation)
  for per_sample in (True, False):
    for alpha, beta in ((0.3, 0.7), (0.8, 0.1)):
      monai = monai_losses.TverskyLoss(
          **flags(activation), alpha=alpha, beta=beta, batch=not per_sample,
          smooth_nr=1.0, smooth_dr=1.0)
      got = ours(losses.tversky_loss, x, y, activation=activation,
                 alpha=alpha, beta=beta, smooth=1.0, per_sample=per_sample)
      np.testing.assert_allclose(got, monai_value(monai, x, y), rtol=RTOL)


@DIMS
def test_sigmoid_focal(dims):
  x, y = case(dims, 'sigmoid')
  for alpha, gamma, background in ((None, 2.0, True), (0.25, 0.0, True),
                                   (0.25, 1.0, True), (0.75, 2.0, False)):
    monai = monai_losses.FocalLoss(gamma=gamma, alpha=alpha,
                                   include_background=background)
    got = ours(losses.focal_loss, x, y, alpha=alpha, gamma=gamma,
               include_background=background)
    np.testing.assert_allclose(got, monai_value(monai, x, y), rtol=RTOL)


@DIMS
def test_softmax_focal(dims):
  # MONAI also averages over the C channels: ours = MONAI x C.
  channels = 3
  x, y = case(dims, 'softmax', channels)
  for alpha in (None, 0.25):
    for gamma in (0.0, 2.0):
      monai = monai_losses.FocalLoss(gamma=gamma, alpha=alpha,
                                     use_softmax=True)
      got = ours(losses.focal_loss, x, y, alpha=alpha, gamma=gamma,
                 activation='softmax')
      np.testing.assert_allclose(got, channels * monai_value(monai, x, y),
                                 rtol=RTOL)


@DIMS
def test_dice_ce(dims):
  x, y = case(dims, 'softmax')
  for per_sample in (True, False):
    monai = monai_losses.DiceCELoss(
        softmax=True, batch=not per_sample, smooth_nr=1.0, smooth_dr=1.0,
        lambda_dice=0.7, lambda_ce=1.3, include_background=False)
    got = ours(losses.softmax_dice_ce, x, y, dice_weight=0.7, ce_weight=1.3,
               per_sample=per_sample, include_background=False)
    np.testing.assert_allclose(got, monai_value(monai, x, y), rtol=RTOL)
  # Sigmoid: MONAI uses BCE with logits only for one channel.
  x, y = case(dims, 'sigmoid', channels=1)
  monai = monai_losses.DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)
  got = ours(losses.softmax_dice_ce, x, y, activation='sigmoid',
             per_sample=True)
  np.testing.assert_allclose(got, monai_value(monai, x, y), rtol=RTOL)


@DIMS
@ACTS
def test_dice_focal(dims, activation):
  x, y = case(dims, activation)
  kwargs = dict(gamma=1.5, lambda_dice=0.6, lambda_focal=1.7)
  got = ours(losses.dice_focal_loss, x, y, activation=activation, gamma=1.5,
             dice_weight=0.6, focal_weight=1.7)
  if activation == 'sigmoid':
    want = monai_value(monai_losses.DiceFocalLoss(sigmoid=True, **kwargs),
                       x, y)
  else:
    # MONAI's DiceFocalLoss applies its sigmoid focal loss even with
    # softmax=True; ours uses the softmax focal term: compare to the parts.
    dice = monai_value(monai_losses.DiceLoss(softmax=True), x, y)
    focal = monai_value(monai_losses.FocalLoss(gamma=1.5, use_softmax=True),
                        x, y)
    want = 0.6 * dice + 1.7 * 3 * focal
  np.testing.assert_allclose(got, want, rtol=RTOL)


@DIMS
@ACTS
def test_generalized_dice(dims, activation):
  x, y = case(dims, activation)
  for per_sample, weight_type in ((True, 'square'), (False, 'square'),
                                  (True, 'simple'), (False, 'uniform')):
    monai = monai_losses.GeneralizedDiceLoss(
        **flags(activation), w_type=weight_type, batch=not per_sample)
    got = ours(losses.generalized_dice_loss, x, y, activation=activation,
               weight_type=weight_type, per_sample=per_sample)
    np.testing.assert_allclose(got, monai_value(monai, x, y), rtol=RTOL)


@DIMS
@ACTS
def test_hausdorff_dt(dims, activation):
  x, y = case(dims, activation)
  for alpha in (2.0, 1.0):
    for background in (True, False):
      monai = monai_losses.HausdorffDTLoss(
          **flags(activation), alpha=alpha, include_background=background)
      got = ours(losses.hausdorff_dt_loss, x, y, activation=activation,
                 alpha=alpha, include_background=background)
      np.testing.assert_allclose(got, monai_value(monai, x, y), rtol=RTOL)


@DIMS
@ACTS
def test_boundary(dims, activation):
  x, y = case(dims, activation)
  for background in (True, False):
    monai = monai_losses.BoundaryLoss(**flags(activation),
                                      include_background=background)
    got = ours(losses.boundary_loss, x, y, activation=activation,
               include_background=background)
    np.testing.assert_allclose(got, monai_value(monai, x, y), rtol=RTOL,
                               atol=1e-6)   # the loss can be near 0
