"""Optimisers and schedules against torch.optim; plateau and early stopping against Keras.

PyTorch is the reference for the update rules (SGD, Adam, AdamW, weight
decay, gradient clipping) and the learning-rate schedulers; Keras' documented
ReduceLROnPlateau / EarlyStopping rules are worked by hand and matched with
torch's ReduceLROnPlateau in its Keras-equivalent settings.
"""

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import load_config
from jaxseg.training import optim
from jaxseg.errors import InputError

torch = pytest.importorskip('torch')


def _opt(**kwargs):
  return ml_collections.ConfigDict(dict(dict(name='adam', learning_rate=0.01),
                                        **kwargs))


def _sched(**kwargs):
  return ml_collections.ConfigDict(dict(dict(name='plateau'), **kwargs))


# ------------------------------------------------- plateau, early stopping


def test_plateau_halves_after_patience_epochs_without_improvement():
  # Keras ReduceLROnPlateau(factor=0.5, patience=2, min_delta=1e-4), worked by hand:
  # epoch:   1    2    3    4    5     6     7
  # loss:  1.0  0.9  0.95 0.92 0.91  0.85  0.89996
  # wait:    0    0    1    2->0 1     0     1     (0.89996 is not < 0.85 - 1e-4)
  # lr:   .01  .01  .01  .005 .005  .005  .005
  plateau = optim.Plateau(factor=0.5, patience=2, min_delta=1e-4)
  lrs, lr = [], 0.01
  for loss in [1.0, 0.9, 0.95, 0.92, 0.91, 0.85, 0.89996]:
    lr = plateau.update(loss, lr)
    lrs.append(lr)
  np.testing.assert_allclose(lrs, [.01, .01, .01, .005, .005, .005, .005])


def test_four_reductions_give_the_final_rate_seed_002_reports():
  # Seed 002 section 4.1: lr 0.01 ended at 6.25e-4 = 0.01 * 0.5**4.
  plateau, lr = optim.Plateau(factor=0.5, patience=2), 0.01
  for loss in [1.0] + [2.0] * 8:
    lr = plateau.update(loss, lr)
  assert lr == pytest.approx(6.25e-4)


@pytest.mark.parametrize('mode', ['min', 'max'])
def test_plateau_matches_torch_reduce_on_plateau_in_keras_mode(mode):
  # Keras counts `patience` bad epochs inclusively (wait >= patience), torch
  # exclusively (num_bad_epochs > patience): Keras' 3 is torch's 2.
  rng = np.random.default_rng(0)
  values = np.cumsum(rng.normal(0, 1, 60)).tolist()
  values[10:14] = [values[9] + 5e-5 * (1 if mode == 'max' else -1)] * 4
  ours = optim.Plateau(factor=0.3, patience=3, min_delta=0.1, min_lr=1e-4,
                       mode=mode)
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([param], lr=0.1)
  ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
      opt, mode=mode, factor=0.3, patience=2, threshold=0.1,
      threshold_mode='abs', cooldown=0, min_lr=1e-4, eps=0.0)
  lr, ours_lrs, ref_lrs = 0.1, [], []
  for v in values:
    lr = ours.update(v, lr)
    ours_lrs.append(lr)
    ref.step(v)
    ref_lrs.append(opt.param_groups[0]['lr'])
  assert len(set(ref_lrs)) > 3        # several reductions, and the floor
  np.testing.assert_allclose(ours_lrs, ref_lrs, rtol=1e-12)


def test_early_stopping_after_patience_epochs():
  stopper = optim.EarlyStopping(patience=5)
  decisions = [stopper.update(v) for v in [1.0, 0.5, 0.6, 0.6, 0.7, 0.5, 0.55]]
  assert decisions == [False] * 6 + [True]   # 0.5 again is not an improvement


def test_early_stopping_on_a_max_metric():
  # Keras EarlyStopping(monitor='val_dice', mode='max', patience=3,
  # min_delta=0.01), by hand:
  # dice:   0.5  0.6  0.605  0.7  0.69  0.709  0.71
  # best:   0.5  0.6  0.6    0.7  0.7   0.7    0.7   (0.709 is not > 0.7 + 0.01)
  # wait:   0    0    1      0    1     2      3 -> stop
  config = _sched(monitor='val_dice', early_stopping_patience=3,
                  early_stopping_min_delta=0.01)
  key, mode = optim.monitor(config, ['loss', 'dice'])
  assert (key, mode) == ('val/dice', 'max')
  stopper = optim.make_early_stopping(config, mode)
  decisions = [stopper.update(v) for v in [0.5, 0.6, 0.605, 0.7, 0.69, 0.709, 0.71]]
  assert decisions == [False] * 6 + [True]
  assert stopper.best == 0.7


def test_early_stopping_and_plateau_resume_from_their_saved_state():
  config = _sched(early_stopping_patience=3, plateau_factor=0.5,
                  plateau_patience=2, plateau_min_delta=0.0)
  values = [3.0, 2.0, 2.5, 2.5, 1.0, 1.5, 1.5, 1.5]
  straight_p = optim.make_plateau(config, 'min')
  straight_s = optim.make_early_stopping(config, 'min')
  lr, lrs, stops = 1.0, [], []
  for v in values:
    lr = straight_p.update(v, lr)
    lrs.append(lr)
    stops.append(straight_s.update(v))
  # Half way, through JSON-able dicts, into fresh objects.
  p, s, lr = optim.make_plateau(config, 'min'), optim.make_early_stopping(config, 'min'), 1.0
  resumed_lrs, resumed_stops = [], []
  for i, v in enumerate(values):
    if i == 4:
      p = optim.make_plateau(config, 'min', saved=p.state())
      s = optim.make_early_stopping(config, 'min', saved=s.state())
    lr = p.update(v, lr)
    resumed_lrs.append(lr)
    resumed_stops.append(s.update(v))
  assert resumed_lrs == lrs and resumed_stops == stops
  assert stops[-1] and lrs[-1] < 1.0


@pytest.mark.parametrize('patience', [0, None])
def test_early_stopping_patience_zero_or_none_is_off(patience):
  assert optim.make_early_stopping(_sched(early_stopping_patience=patience),
                                   'min') is None


def test_only_the_plateau_schedule_makes_a_plateau():
  config = _sched(plateau_factor=0.5, plateau_patience=2, plateau_min_delta=0.0)
  assert optim.make_plateau(config, 'min') is not None
  config.name = 'constant'
  assert optim.make_plateau(config, 'min') is None


@pytest.mark.parametrize('monitor,mode,expected', [
    ('val_loss', None, ('val/loss', 'min')),
    ('val_dice', None, ('val/dice', 'max')),
    ('train_iou', None, ('train/iou', 'max')),
    ('val_dice_per_slice', None, ('val/dice_per_slice', 'max')),
    ('val_specificity', None, ('val/specificity', 'max')),
    ('val_dice', 'min', ('val/dice', 'min')),
])
def test_monitor_key_and_mode(monitor, mode, expected):
  names = ['loss', 'dice', 'iou', 'dice_per_slice', 'specificity']
  assert optim.monitor(_sched(monitor=monitor, monitor_mode=mode), names) == expected


@pytest.mark.parametrize('monitor', ['val_dise', 'test_dice', 'dice'])
def test_unknown_monitor_names_the_key(monitor):
  with pytest.raises(InputError, match='config.schedule.monitor'):
    optim.monitor(_sched(monitor=monitor), ['loss', 'dice'])


# ------------------------------------------------------------- optimisers


def _params_and_grads(steps=4, seed=0):
  rng = np.random.default_rng(seed)
  params = {'conv': {'kernel': rng.normal(size=(3, 4)).astype(np.float32)},
            'head': {'bias': rng.normal(size=(5,)).astype(np.float32)}}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32),
                        params) for _ in range(steps)]
  return params, grads


def _run_ours(tx, params, grads):
  """Parameters after each step of `tx` on the given gradients."""
  params = jax.tree.map(jnp.asarray, params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  out = []
  for g in grads:
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
    out.append(jax.tree.map(np.asarray, params))
  return out


def _run_torch(make_opt, params, grads, clip=None, clipped=None):
  """Parameters after each torch optimiser step; `clip`: clip_grad_norm_ first.

  `clipped` (top-level keys) selects the parameters that have gradients
  (the others are frozen: requires_grad False, no gradient, not stepped).
  """
  leaves, treedef = jax.tree.flatten(params)
  tensors = [torch.nn.Parameter(torch.tensor(x)) for x in leaves]
  keys = [path[0].key for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  trained = [t for t, k in zip(tensors, keys) if clipped is None or k in clipped]
  opt = make_opt(trained)
  out = []
  for g in grads:
    for t, k, gx in zip(tensors, keys, jax.tree.leaves(g)):
      t.grad = torch.tensor(gx) if (clipped is None or k in clipped) else None
    if clip is not None:
      torch.nn.utils.clip_grad_norm_(trained, clip)
    opt.step()
    out.append(jax.tree.unflatten(treedef, [t.detach().numpy().copy()
                                            for t in tensors]))
  return out


def _assert_same_runs(ours, ref, tol=1e-6):
  for a, b in zip(ours, ref):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol),
                 a, b)


OPTIMIZER_CASES = {
    'sgd_momentum_l2': (
        dict(name='sgd', learning_rate=0.1, momentum=0.9, weight_decay=1e-2),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2)),
    'sgd_nesterov_l2': (
        dict(name='sgd', learning_rate=0.1, momentum=0.9, nesterov=True,
             weight_decay=1e-2),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                  weight_decay=1e-2)),
    'sgd_plain': (
        dict(name='sgd', learning_rate=0.1, momentum=0.0),
        lambda p: torch.optim.SGD(p, lr=0.1)),
    'adam_l2': (
        dict(name='adam', learning_rate=0.01, weight_decay=0.1),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    'adam_betas_eps': (
        dict(name='adam', learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-3),
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-3)),
    'adamw': (
        dict(name='adamw', learning_rate=0.01, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    'adam_decoupled_is_adamw': (
        dict(name='adam', learning_rate=0.01, weight_decay=0.1,
             weight_decay_mode='decoupled'),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
}


@pytest.mark.parametrize('case', sorted(OPTIMIZER_CASES))
def test_optimizer_matches_torch(case):
  ours_config, make_torch = OPTIMIZER_CASES[case]
  params, grads = _params_and_grads(steps=5)
  ours = _run_ours(optim.build(ml_collections.ConfigDict(ours_config)), params, grads)
  ref = _run_torch(make_torch, params, grads)
  assert not np.allclose(ref[-1]['conv']['kernel'], params['conv']['kernel'])
  _assert_same_runs(ours, ref)


def test_weight_decay_modes_follow_pytorch_defaults():
  assert optim.weight_decay_mode(_opt(name='sgd')) == 'l2'
  assert optim.weight_decay_mode(_opt(name='adam')) == 'l2'
  assert optim.weight_decay_mode(_opt(name='adamw')) == 'decoupled'
  with pytest.raises(InputError, match='config.optimizer.weight_decay_mode'):
    optim.build(_opt(name='adamw', weight_decay_mode='l2'))
  with pytest.raises(InputError, match='config.optimizer.weight_decay_mode'):
    optim.build(_opt(weight_decay_mode='coupled'))


def test_decoupled_sgd_by_hand():
  # torch has no SGDW; the rule (as AdamW's decay): b = m b + g; p -= lr (b + wd p).
  lr, m, wd = 0.1, 0.9, 0.05
  params, grads = _params_and_grads(steps=4)
  ours = _run_ours(optim.build(_opt(name='sgd', learning_rate=lr, momentum=m,
                                    weight_decay=wd, weight_decay_mode='decoupled')),
                   params, grads)
  p = {k: np.float64(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  b = {k: 0.0 for k in p}
  for step, g in enumerate(grads):
    for k, gx in jax.tree_util.tree_flatten_with_path(g)[0]:
      b[k] = m * b[k] + gx
      p[k] = p[k] - lr * (b[k] + wd * p[k])
    for k, x in jax.tree_util.tree_flatten_with_path(ours[step])[0]:
      np.testing.assert_allclose(x, p[k], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('clip', [0.5, 100.0])
def test_clipping_matches_torch_clip_grad_norm(clip):
  params, grads = _params_and_grads(steps=3)
  grads = jax.tree.map(lambda g: 3 * g, grads)   # global norm ~ 13
  ours = _run_ours(optim.build(_opt(name='sgd', learning_rate=0.1, momentum=0.9,
                                    weight_decay=1e-2, clip_norm=clip)),
                   params, grads)
  ref = _run_torch(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9,
                                             weight_decay=1e-2),
                   params, grads, clip=clip)
  _assert_same_runs(ours, ref)


def test_clipping_ignores_frozen_subtrees_as_torch_does():
  params, grads = _params_and_grads(steps=3)
  grads = jax.tree.map(lambda g: 3 * g, grads)
  ours = _run_ours(optim.build(_opt(name='adam', learning_rate=0.01, clip_norm=0.5,
                                    frozen=('conv',))), params, grads)
  ref = _run_torch(lambda p: torch.optim.Adam(p, lr=0.01), params, grads,
                   clip=0.5, clipped=('head',))
  _assert_same_runs(ours, ref)


def test_lgg_unet_sgd_config_is_torch_sgd_with_l2_weight_decay():
  """Seed 003 section 7: SGD(lr=1e-3, momentum=0.9, weight_decay=1e-4)."""
  config = load_config('lgg_unet_sgd')
  assert config.train.batch_size == 20 and config.schedule.name == 'constant'
  assert config.model.name == load_config('lgg_unet').model.name
  params, grads = _params_and_grads(steps=4)
  ours = _run_ours(optim.build_for_run(config, steps_per_epoch=2), params, grads)
  ref = _run_torch(lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9,
                                             weight_decay=1e-4), params, grads)
  _assert_same_runs(ours, ref)


FROZEN_CASES = [
    dict(name='adam', weight_decay=0.1),
    dict(name='adamw', weight_decay=0.1),
    dict(name='adam', weight_decay=0.1, weight_decay_mode='decoupled'),
    dict(name='sgd', momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(name='sgd', momentum=0.9, weight_decay=0.1, weight_decay_mode='decoupled'),
    dict(name='sgd', momentum=0.0, clip_norm=0.1),
]


@pytest.mark.parametrize('case', range(len(FROZEN_CASES)))
def test_frozen_subtrees_get_zero_updates(case):
  config = _opt(frozen=('conv',), **FROZEN_CASES[case])
  schedule = optim.learning_rate_schedule(
      _sched(name='cosine', warmup_epochs=1), 0.01, steps_per_epoch=2, num_epochs=3)
  params, grads = _params_and_grads(steps=3)
  for tx in (optim.build(config), optim.build(config, schedule)):
    out = _run_ours(tx, params, grads)
    np.testing.assert_array_equal(out[-1]['conv']['kernel'], params['conv']['kernel'])
    assert not np.allclose(out[-1]['head']['bias'], params['head']['bias'])


def test_learning_rate_lives_in_the_optimizer_state():
  tx = optim.build(_opt(frozen=()))
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  assert optim.get_learning_rate(state) == pytest.approx(0.01)
  state = optim.set_learning_rate(state, 0.005)
  grads = {'w': jnp.ones(3)}
  updates, _ = tx.update(grads, state, params)
  ref_updates, _ = optax.adam(0.005).update(grads, optax.adam(0.005).init(params), params)
  np.testing.assert_allclose(updates['w'], ref_updates['w'], rtol=1e-6)


def test_set_learning_rate_reaches_a_frozen_optimizer():
  tx = optim.build(_opt(name='sgd', momentum=0.0, frozen=('conv',)))
  params, grads = _params_and_grads(steps=1)
  state = optim.set_learning_rate(tx.init(params), 0.5)
  assert optim.get_learning_rate(state) == pytest.approx(0.5)
  updates, _ = tx.update(grads[0], state, params)
  np.testing.assert_allclose(updates['head']['bias'], -0.5 * grads[0]['head']['bias'],
                             rtol=1e-6)


def test_unknown_optimizer_names_the_key():
  with pytest.raises(InputError, match='config.optimizer.name'):
    optim.build(ml_collections.ConfigDict(dict(name='adamm', learning_rate=1.0)))


def test_bad_optimizer_settings_name_the_key():
  with pytest.raises(InputError, match='config.optimizer.nesterov'):
    optim.build(_opt(name='sgd', momentum=0.0, nesterov=True))
  with pytest.raises(InputError, match='config.optimizer.clip_norm'):
    optim.build(_opt(clip_norm=0.0))


# -------------------------------------------------------------- schedules


def _our_rates(schedule_config, base_lr, steps_per_epoch, num_epochs):
  """The learning rate each step of a run applies (read from the state and the update)."""
  schedule = optim.learning_rate_schedule(schedule_config, base_lr,
                                          steps_per_epoch=steps_per_epoch,
                                          num_epochs=num_epochs)
  tx = optim.build(_opt(name='sgd', learning_rate=base_lr, momentum=0.0), schedule)
  params = {'w': jnp.zeros(1)}
  state, update = tx.init(params), jax.jit(tx.update)
  rates = []
  for _ in range(steps_per_epoch * num_epochs):
    updates, state = update({'w': jnp.ones(1)}, state, params)
    lr = optim.get_learning_rate(state)
    np.testing.assert_allclose(-updates['w'][0], lr, rtol=1e-6)
    rates.append(lr)
  return np.array(rates)


def _torch_rates(make_scheduler, base_lr, steps_per_epoch, num_epochs, per_step):
  """torch's rate of each step; scheduler.step() after each epoch (or step)."""
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([param], lr=base_lr)
  scheduler = make_scheduler(opt)
  rates = []
  for _ in range(num_epochs):
    for _ in range(steps_per_epoch):
      rates.append(opt.param_groups[0]['lr'])
      opt.step()
      if per_step:
        scheduler.step()
    if not per_step:
      scheduler.step()
  return np.array(rates)


def test_constant_schedule_keeps_the_rate():
  np.testing.assert_allclose(_our_rates(_sched(name='constant'), 0.1, 3, 4),
                             np.full(12, 0.1), rtol=1e-7)


def test_step_schedule_matches_torch_step_lr():
  ours = _our_rates(_sched(name='step', step_size=3, step_gamma=0.5), 0.1, 4, 10)
  ref = _torch_rates(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
                     0.1, 4, 10, per_step=False)
  assert len(set(ref)) == 4
  np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_cosine_schedule_matches_torch_linear_warmup_then_cosine():
  steps_per_epoch, epochs, warmup = 5, 8, 10   # 2 warm-up epochs
  ours = _our_rates(_sched(name='cosine', warmup_epochs=2, warmup_start_factor=0.1,
                           min_learning_rate=1e-3), 0.1, steps_per_epoch, epochs)

  def make(o):
    lr_scheduler = torch.optim.lr_scheduler
    return lr_scheduler.SequentialLR(o, [
        lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=warmup),
        lr_scheduler.CosineAnnealingLR(o, T_max=steps_per_epoch * epochs - warmup,
                                       eta_min=1e-3)], milestones=[warmup])
  ref = _torch_rates(make, 0.1, steps_per_epoch, epochs, per_step=True)
  assert ref[0] == pytest.approx(0.01) and ref[warmup] == pytest.approx(0.1)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('per_step', [False, True])
def test_poly_schedule_matches_torch_polynomial_lr(per_step):
  steps_per_epoch, epochs = 3, 10
  ours = _our_rates(_sched(name='poly', poly_power=0.9, poly_per_step=per_step),
                    0.01, steps_per_epoch, epochs)
  total = epochs * steps_per_epoch if per_step else epochs
  ref = _torch_rates(lambda o: torch.optim.lr_scheduler.PolynomialLR(
      o, total_iters=total, power=0.9), 0.01, steps_per_epoch, epochs, per_step)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)
  if not per_step:   # nnU-Net's rule, by hand: epoch e runs at lr0 (1 - e/E)^0.9
    np.testing.assert_allclose(ours[::steps_per_epoch],
                               0.01 * (1 - np.arange(epochs) / epochs) ** 0.9,
                               rtol=1e-6)


def test_unknown_schedule_names_the_key():
  with pytest.raises(InputError, match='config.schedule.name'):
    optim.learning_rate_schedule(_sched(name='cosin'), 0.1, steps_per_epoch=2,
                                 num_epochs=2)
  with pytest.raises(InputError, match='config.schedule.warmup_epochs'):
    optim.learning_rate_schedule(_sched(name='cosine', warmup_epochs=3), 0.1,
                                 steps_per_epoch=2, num_epochs=3)


def test_every_schedule_gives_the_same_state_structure():
  """So a checkpoint of any schedule restores into any optimiser of the config."""
  params = {'w': jnp.zeros(2)}
  plain = jax.tree.structure(optim.build(_opt()).init(params))
  for name in optim.SCHEDULES:
    schedule = optim.learning_rate_schedule(_sched(name=name, warmup_epochs=1),
                                            0.01, steps_per_epoch=2, num_epochs=4)
    assert jax.tree.structure(optim.build(_opt(), schedule).init(params)) == plain


def test_a_resumed_cosine_run_continues_exactly():
  """8 steps straight == 4 steps, a checkpoint (bytes), a fresh optimiser, 4 more."""
  config = _opt(name='adamw', weight_decay=0.01, clip_norm=1.0, frozen=('conv',))

  def make_tx():
    return optim.build(config, optim.learning_rate_schedule(
        _sched(name='cosine', warmup_epochs=1, min_learning_rate=1e-4), 0.01,
        steps_per_epoch=2, num_epochs=4))

  params, grads = _params_and_grads(steps=8)

  def run(tx, params, state, grads):
    rates = []
    for g in grads:
      updates, state = tx.update(g, state, params)
      params = optax.apply_updates(params, updates)
      rates.append(optim.get_learning_rate(state))
    return params, state, rates

  tx = make_tx()
  straight, _, straight_rates = run(tx, params, tx.init(params), grads)
  half, state, rates_a = run(tx, params, tx.init(params), grads[:4])
  saved = flax.serialization.to_bytes((half, state))
  tx = make_tx()
  template = (params, tx.init(params))
  half, state = flax.serialization.from_bytes(template, saved)
  resumed, _, rates_b = run(tx, half, state, grads[4:])
  assert rates_a + rates_b == straight_rates
  assert len(set(straight_rates)) == 8
  jax.tree.map(np.testing.assert_array_equal, resumed, straight)


def test_best_by_key_and_mode():
  names = ['loss', 'dice', 'iou']
  train = ml_collections.ConfigDict({'best_by': 'val_dice'})
  assert optim.best_by(train, names) == ('val/dice', 'max')
  train.best_by = 'val_loss'
  assert optim.best_by(train, names) == ('val/loss', 'min')


@pytest.mark.parametrize('best_by', ['val_dise', 'train_loss', 'loss'])
def test_best_checkpoint_only_by_a_validation_metric(best_by):
  with pytest.raises(InputError, match='config.train.best_by'):
    optim.best_by(ml_collections.ConfigDict({'best_by': best_by}), ['loss', 'dice'])
