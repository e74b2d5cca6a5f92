"""Optimisers (optax), learning-rate schedules, reduce-on-plateau, early stopping.

Optimisers follow PyTorch's update rules, so a study's torch settings carry
over unchanged (tests/training/test_optim.py checks each against torch.optim):

  name     weight_decay_mode   as in PyTorch
  'sgd'    'l2' (default)      torch.optim.SGD(momentum, nesterov, weight_decay):
                               wd * p is added to the gradient before momentum
  'adam'   'l2' (default)      torch.optim.Adam(weight_decay): the same L2 term,
                               then Adam's moments (so it is rescaled by Adam)
  'adamw'  'decoupled' (only)  torch.optim.AdamW(weight_decay): p -= lr * wd * p
                               beside the Adam step (Loshchilov & Hutter)

`weight_decay_mode='decoupled'` with 'sgd' or 'adam' applies that AdamW-style
decay (`optax.add_decayed_weights` after the moment scaling, then the
learning rate). `clip_norm` clips the gradient by its global norm first, as
`torch.nn.utils.clip_grad_norm_` before `optimizer.step()`.

The learning rate lives in the optimiser state (`optax.inject_hyperparams`),
so a checkpoint restores it, reduce-on-plateau changes it between epochs
without recompiling, and scheduled rates ('step', 'cosine', 'poly') are
computed from the state's own step count at each update, so a resumed run
continues the schedule exactly. Every schedule gives the same state
structure, so any optimiser of a config restores any of its checkpoints.

`Plateau` and `EarlyStopping` follow Keras' ReduceLROnPlateau and
EarlyStopping (seed 002 used them), in mode 'min' or 'max'.
"""

import dataclasses
import math

import jax.numpy as jnp
import optax
from optax import tree_utils as otu

from jaxseg.errors import InputError

OPTIMIZERS = ('adam', 'adamw', 'sgd')
WEIGHT_DECAY_MODES = ('l2', 'decoupled')
SCHEDULES = ('constant', 'step', 'plateau', 'cosine', 'poly')
# Monitored metrics that improve upwards (mode 'max' unless given).
MAX_METRICS = ('dice', 'iou', 'precision', 'recall', 'f1', 'accuracy',
               'specificity')
MODES = ('min', 'max')


# ------------------------------------------------------------ optimisers


def build(opt_config, schedule=None) -> optax.GradientTransformation:
  """Optimiser from `config.optimizer`.

  Keys: name ('adam' | 'adamw' | 'sgd'), learning_rate, weight_decay,
  weight_decay_mode (None: PyTorch's rule for the name, see the module
  docstring), momentum and nesterov ('sgd'), b1, b2, eps ('adam', 'adamw'),
  clip_norm (None: no clipping), frozen. Missing keys take PyTorch's defaults.

  `schedule` (from `learning_rate_schedule`) maps the optimiser's step count
  to the learning rate of that step; None keeps `learning_rate` in the state
  until `set_learning_rate` changes it.

  `opt_config.frozen` names top-level parameter subtrees (module names, e.g.
  ('backbone',)) that are not trained: `optax.multi_transform` gives them
  zero updates and no optimiser state, and they take no part in the
  gradient's global norm (as parameters with requires_grad=False in
  PyTorch). Their batch statistics still follow the data in training mode.
  """
  tx = _build_trainable(opt_config)
  if schedule is not None:
    tx = _scheduled(tx, schedule)
  frozen = tuple(opt_config.get('frozen', ()) or ())
  if not frozen:
    return tx
  frozen_set = set(frozen)

  def labels(params):
    missing = frozen_set - set(params)
    if missing:
      raise InputError('config.optimizer.frozen',
                       f'no parameter subtree named {sorted(missing)[0]!r}; '
                       f'the model has: {", ".join(sorted(params))}')
    return {k: ('frozen' if k in frozen_set else 'trained') for k in params}

  return optax.multi_transform(
      {'trained': tx, 'frozen': optax.set_to_zero()}, labels)


def weight_decay_mode(opt_config) -> str:
  """'l2' or 'decoupled': the config's, or PyTorch's rule for the optimiser."""
  name = opt_config.name
  if name not in OPTIMIZERS:
    raise InputError('config.optimizer.name',
                     f'unknown optimizer {name!r}; known: {", ".join(OPTIMIZERS)}')
  mode = opt_config.get('weight_decay_mode')
  if mode is None:
    return 'decoupled' if name == 'adamw' else 'l2'
  if mode not in WEIGHT_DECAY_MODES:
    raise InputError('config.optimizer.weight_decay_mode',
                     f'unknown mode {mode!r}; known: l2, decoupled (or None '
                     'for PyTorch\'s rule of the optimizer)')
  if name == 'adamw' and mode == 'l2':
    raise InputError('config.optimizer.weight_decay_mode',
                     "'adamw' decays decoupled by definition; for Adam with L2 "
                     "weight decay (torch.optim.Adam) use name='adam'")
  return mode


def _scale_by(opt_config) -> optax.GradientTransformation:
  """The optimiser's moment scaling, before weight decay and learning rate."""
  if opt_config.name == 'sgd':
    momentum = opt_config.get('momentum', 0.0) or 0.0
    nesterov = bool(opt_config.get('nesterov', False))
    if nesterov and momentum <= 0:
      raise InputError('config.optimizer.nesterov',
                       'Nesterov momentum needs optimizer.momentum > 0')
    if not momentum:
      return optax.identity()
    # optax.trace: t = g + momentum * t (t0 = 0, so t1 = g, as torch's buffer);
    # nesterov returns g + momentum * t, as torch.optim.SGD(nesterov=True).
    return optax.trace(decay=momentum, nesterov=nesterov)
  return optax.scale_by_adam(b1=opt_config.get('b1', 0.9),
                             b2=opt_config.get('b2', 0.999),
                             eps=opt_config.get('eps', 1e-8))


def _build_trainable(opt_config) -> optax.GradientTransformation:
  """The optimiser of the trained parameters, learning rate injected."""
  mode = weight_decay_mode(opt_config)
  wd = opt_config.get('weight_decay', 0.0) or 0.0
  clip = opt_config.get('clip_norm')
  if wd < 0:
    raise InputError('config.optimizer.weight_decay', f'{wd} is negative')
  if clip is not None and clip <= 0:
    raise InputError('config.optimizer.clip_norm',
                     f'{clip} is not positive (None turns clipping off)')
  scale_by = _scale_by(opt_config)

  def make(learning_rate):
    parts = [optax.clip_by_global_norm(clip)] if clip is not None else []
    if wd and mode == 'l2':
      parts.append(optax.add_decayed_weights(wd))
    parts.append(scale_by)
    if wd and mode == 'decoupled':
      parts.append(optax.add_decayed_weights(wd))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)

  return optax.inject_hyperparams(make)(learning_rate=opt_config.learning_rate)


def _scheduled(tx, schedule) -> optax.GradientTransformation:
  """`tx` (from inject_hyperparams) with its learning rate set from `schedule`.

  Before each update the injected learning rate becomes schedule(count), the
  count of updates so far in the same state; the state keeps the rate of the
  latest update. The state's structure is that of `tx`.
  """
  def with_rate(state):
    hyperparams = dict(state.hyperparams)
    old = hyperparams['learning_rate']
    hyperparams['learning_rate'] = jnp.asarray(schedule(state.count), old.dtype)
    return state._replace(hyperparams=hyperparams)

  def init(params):
    return with_rate(tx.init(params))

  def update(updates, state, params=None, **extra_args):
    return tx.update(updates, with_rate(state), params, **extra_args)

  return optax.GradientTransformationExtraArgs(init, update)


def get_learning_rate(opt_state) -> float:
  """The learning rate held in an optimiser state from `build` (of the last step)."""
  return float(otu.tree_get(opt_state, 'learning_rate'))


def set_learning_rate(opt_state, value: float):
  """A copy of an optimiser state from `build` with a new learning rate.

  Used by reduce-on-plateau; a scheduled optimiser overwrites it at its next
  update.
  """
  old = otu.tree_get(opt_state, 'learning_rate')
  return otu.tree_set(opt_state, learning_rate=old * 0 + value)


def build_for_run(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """The optimiser of a run: config.optimizer with config.schedule's rate."""
  return build(config.optimizer, learning_rate_schedule(
      config.schedule, config.optimizer.learning_rate,
      steps_per_epoch=steps_per_epoch, num_epochs=config.train.num_epochs))


# ------------------------------------------------------------- schedules


def learning_rate_schedule(schedule_config, base_lr: float, *,
                           steps_per_epoch: int, num_epochs: int):
  """Step count -> learning rate for `config.schedule.name`; None if host-driven.

  Step k (0-based) lies in epoch k // steps_per_epoch. PyTorch equivalents
  (scheduler.step() after each epoch, or after each step where marked):
    'constant'  None: the rate stays base_lr.
    'plateau'   None: the loop lowers it with `Plateau` between epochs.
    'step'      StepLR(step_size, gamma): base_lr * gamma ** (epoch // step_size).
    'cosine'    per step: LinearLR(warmup_start_factor -> 1 over the warm-up
                steps) then CosineAnnealingLR(T_max = the remaining steps,
                eta_min = min_learning_rate), joined by SequentialLR.
    'poly'      PolynomialLR(total_iters=num_epochs, power=poly_power):
                base_lr * (1 - epoch / num_epochs) ** power, nnU-Net's rule
                (set once per epoch, at its start); poly_per_step=True uses
                the step count over all steps instead.
  """
  name = schedule_config.get('name', 'plateau')
  if name not in SCHEDULES:
    raise InputError('config.schedule.name',
                     f'unknown schedule {name!r}; known: {", ".join(SCHEDULES)}')
  if name in ('constant', 'plateau'):
    return None
  total = steps_per_epoch * num_epochs

  def epoch_of(count):
    return count // steps_per_epoch

  if name == 'step':
    step_size = schedule_config.get('step_size', 1)
    if not step_size or step_size < 1:
      raise InputError('config.schedule.step_size',
                       f'{step_size}: give a whole number of epochs >= 1')
    by_epoch = optax.exponential_decay(
        base_lr, transition_steps=step_size,
        decay_rate=schedule_config.get('step_gamma', 0.1), staircase=True)
    return lambda count: by_epoch(epoch_of(count))
  if name == 'poly':
    power = schedule_config.get('poly_power', 0.9)
    if schedule_config.get('poly_per_step', False):
      return optax.polynomial_schedule(base_lr, 0.0, power, total)
    by_epoch = optax.polynomial_schedule(base_lr, 0.0, power, num_epochs)
    return lambda count: by_epoch(epoch_of(count))
  warmup_epochs = schedule_config.get('warmup_epochs', 0.0) or 0.0
  if not 0 <= warmup_epochs < num_epochs:
    raise InputError('config.schedule.warmup_epochs',
                     f'{warmup_epochs} warm-up epochs do not fit in a run of '
                     f'{num_epochs} epochs')
  warmup = min(round(warmup_epochs * steps_per_epoch), total - 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=base_lr * schedule_config.get('warmup_start_factor', 0.0),
      peak_value=base_lr, warmup_steps=warmup, decay_steps=total,
      end_value=schedule_config.get('min_learning_rate', 0.0))


def check_config(config) -> None:
  """Raises InputError for a bad config.optimizer or config.schedule, early."""
  build(config.optimizer)
  learning_rate_schedule(config.schedule, config.optimizer.learning_rate,
                         steps_per_epoch=1, num_epochs=config.train.num_epochs)
  make_early_stopping(config.schedule, 'min')


def monitor(schedule_config, names) -> tuple[str, str]:
  """The logged scalar that plateau and early stopping watch, and its mode.

  `config.schedule.monitor` is '<split>_<metric>' with split 'train' or
  'val' and a metric in `names` (e.g. 'val_loss', 'val_dice'); it is logged
  as '<split>/<metric>'. `monitor_mode` None gives 'max' for the MAX_METRICS
  (and their variants such as 'dice_per_slice') and 'min' otherwise.
  """
  return _monitored(schedule_config.get('monitor', 'val_loss'),
                    schedule_config.get('monitor_mode'), names,
                    'config.schedule', ('train', 'val'))


def best_by(train_config, names) -> tuple[str, str]:
  """The logged validation scalar that picks the best checkpoint, and its mode.

  `config.train.best_by` is 'val_<metric>' (e.g. 'val_loss', 'val_dice');
  the mode follows the metric as in `monitor`.
  """
  return _monitored(train_config.get('best_by', 'val_loss'), None, names,
                    'config.train', ('val',), key='best_by')


def _monitored(text, mode, names, where, splits, key='monitor'):
  split, _, metric = text.partition('_')
  if split not in splits or metric not in names:
    raise InputError(f'{where}.{key}',
                     f'{text!r} is not a logged metric; give '
                     f'{" or ".join(s + "_<m>" for s in splits)} with <m> one '
                     f'of: {", ".join(sorted(names))}')
  if mode is None:
    mode = 'max' if metric.split('_')[0] in MAX_METRICS else 'min'
  if mode not in MODES:
    raise InputError(f'{where}.monitor_mode',
                     f"{mode!r}: give 'min', 'max' or None (from the metric)")
  return f'{split}/{metric}', mode


def _improved(value: float, best: float, min_delta: float, mode: str) -> bool:
  """Keras' test: better than `best` by more than `min_delta` in `mode`."""
  if mode == 'min':
    return value < best - min_delta
  return value > best + min_delta


def _worst(mode: str) -> float:
  return math.inf if mode == 'min' else -math.inf


@dataclasses.dataclass
class Plateau:
  """Keras ReduceLROnPlateau (cooldown 0): a JSON-able state.

  After `patience` epochs without an improvement larger than `min_delta`
  (in `mode` 'min' or 'max'), the learning rate is multiplied by `factor`
  (not below `min_lr`). torch's ReduceLROnPlateau(threshold_mode='abs',
  threshold=min_delta, patience=patience - 1) does the same.
  """
  factor: float = 0.5
  patience: int = 2
  min_delta: float = 1e-4
  min_lr: float = 0.0
  mode: str = 'min'
  best: float | None = None     # None: the worst value of `mode`
  wait: int = 0

  def __post_init__(self):
    if self.best is None:
      self.best = _worst(self.mode)

  def update(self, value: float, lr: float) -> float:
    """Records one epoch's monitored value; returns the learning rate to use."""
    if _improved(value, self.best, self.min_delta, self.mode):
      self.best, self.wait = value, 0
      return lr
    self.wait += 1
    if self.wait >= self.patience:
      self.wait = 0
      return max(lr * self.factor, self.min_lr)
    return lr

  def state(self) -> dict:
    """What a checkpoint keeps (JSON)."""
    return {'best': self.best, 'wait': self.wait}


@dataclasses.dataclass
class EarlyStopping:
  """Keras EarlyStopping: stop after `patience` epochs without improvement.

  An epoch improves when its value beats the best by more than `min_delta`
  in `mode` ('min' or 'max'); equal values do not improve.
  """
  patience: int = 5
  min_delta: float = 0.0
  mode: str = 'min'
  best: float | None = None     # None: the worst value of `mode`
  wait: int = 0

  def __post_init__(self):
    if self.best is None:
      self.best = _worst(self.mode)

  def update(self, value: float) -> bool:
    """Records one epoch's monitored value; returns True when training should stop."""
    if _improved(value, self.best, self.min_delta, self.mode):
      self.best, self.wait = value, 0
      return False
    self.wait += 1
    return self.wait >= self.patience

  def state(self) -> dict:
    """What a checkpoint keeps (JSON)."""
    return {'best': self.best, 'wait': self.wait}


def make_plateau(schedule_config, mode: str, saved=None) -> Plateau | None:
  """The run's Plateau (schedule 'plateau'; else None), from a saved state."""
  if schedule_config.get('name', 'plateau') != 'plateau':
    return None
  plateau = Plateau(factor=schedule_config.plateau_factor,
                    patience=schedule_config.plateau_patience,
                    min_delta=schedule_config.plateau_min_delta,
                    min_lr=schedule_config.get('min_learning_rate', 0.0),
                    mode=mode)
  return dataclasses.replace(plateau, **(saved or {}))


def make_early_stopping(schedule_config, mode: str,
                        saved=None) -> EarlyStopping | None:
  """The run's EarlyStopping; None when early_stopping_patience is None or 0."""
  patience = schedule_config.get('early_stopping_patience')
  if not patience:
    return None
  if patience < 0:
    raise InputError('config.schedule.early_stopping_patience',
                     f'{patience} is negative (None or 0 turns it off)')
  stopper = EarlyStopping(
      patience=patience, mode=mode,
      min_delta=schedule_config.get('early_stopping_min_delta', 0.0))
  return dataclasses.replace(stopper, **(saved or {}))
