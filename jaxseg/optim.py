"""Optimisers (optax) and the epoch-level schedules of seed 002.

The learning rate lives in the optimiser state (`optax.inject_hyperparams`),
so reduce-on-plateau can change it between epochs without recompiling and a
checkpoint restores it. `Plateau` and `EarlyStopping` follow Keras'
ReduceLROnPlateau and EarlyStopping (mode 'min'), which the study used.
"""

import dataclasses

import optax
from optax import tree_utils as otu

from jaxseg.errors import InputError

OPTIMIZERS = ('adam', 'adamw', 'sgd')


def build(opt_config) -> optax.GradientTransformation:
  """Optimiser from `config.optimizer` (name, learning_rate, weight_decay, ...).

  `opt_config.frozen` names top-level parameter subtrees (module names, e.g.
  ('backbone',)) that are not trained: `optax.multi_transform` gives them
  zero updates and no optimiser state. Their batch statistics still follow
  the data in training mode, as a PyTorch module with requires_grad=False does.
  """
  tx = _build_trainable(opt_config)
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


def _build_trainable(opt_config) -> optax.GradientTransformation:
  name = opt_config.name
  lr = opt_config.learning_rate
  wd = opt_config.get('weight_decay', 0.0)
  if name == 'adam':
    def make(learning_rate):
      tx = optax.adam(learning_rate)
      return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx
  elif name == 'adamw':
    def make(learning_rate):
      return optax.adamw(learning_rate, weight_decay=wd)
  elif name == 'sgd':
    momentum = opt_config.get('momentum', 0.9)
    def make(learning_rate):
      tx = optax.sgd(learning_rate, momentum=momentum)
      return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx
  else:
    raise InputError('config.optimizer.name',
                     f'unknown optimizer {name!r}; known: {OPTIMIZERS}')
  return optax.inject_hyperparams(make)(learning_rate=lr)


def get_learning_rate(opt_state) -> float:
  """The learning rate held in an optimiser state from `build`."""
  return float(otu.tree_get(opt_state, 'learning_rate'))


def set_learning_rate(opt_state, value: float):
  """A copy of an optimiser state from `build` with a new learning rate."""
  old = otu.tree_get(opt_state, 'learning_rate')
  return otu.tree_set(opt_state, learning_rate=old * 0 + value)


@dataclasses.dataclass
class Plateau:
  """Keras ReduceLROnPlateau (mode 'min', cooldown 0): a JSON-able state.

  After `patience` epochs without an improvement larger than `min_delta`, the
  learning rate is multiplied by `factor` (not below `min_lr`).
  """
  factor: float = 0.5
  patience: int = 2
  min_delta: float = 1e-4
  min_lr: float = 0.0
  best: float = float('inf')
  wait: int = 0

  def update(self, value: float, lr: float) -> float:
    """Records one epoch's monitored value; returns the learning rate to use."""
    if value < self.best - self.min_delta:
      self.best, self.wait = value, 0
      return lr
    self.wait += 1
    if self.wait >= self.patience:
      self.wait = 0
      return max(lr * self.factor, self.min_lr)
    return lr


@dataclasses.dataclass
class EarlyStopping:
  """Keras EarlyStopping (mode 'min', min_delta 0): stop after `patience` bad epochs."""
  patience: int = 5
  best: float = float('inf')
  wait: int = 0

  def update(self, value: float) -> bool:
    """Records one epoch's monitored value; returns True when training should stop."""
    if value < self.best:
      self.best, self.wait = value, 0
      return False
    self.wait += 1
    return self.wait >= self.patience
