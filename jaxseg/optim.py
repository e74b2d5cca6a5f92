"""Optimisers (optax) and the epoch-level schedules of seed 002.

The learning rate lives in the optimiser state (`optax.inject_hyperparams`),
so reduce-on-plateau can change it between epochs without recompiling and a
checkpoint restores it. `Plateau` and `EarlyStopping` follow Keras'
ReduceLROnPlateau and EarlyStopping (mode 'min'), which the study used.
"""

import dataclasses

import optax

from jaxseg.errors import InputError

OPTIMIZERS = ('adam', 'adamw', 'sgd')


def build(opt_config) -> optax.GradientTransformation:
  """Optimiser from `config.optimizer` (name, learning_rate, weight_decay, ...)."""
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
  return float(opt_state.hyperparams['learning_rate'])


def set_learning_rate(opt_state, value: float):
  """A copy of an `inject_hyperparams` state with a new learning rate."""
  hyperparams = dict(opt_state.hyperparams)
  hyperparams['learning_rate'] = hyperparams['learning_rate'] * 0 + value
  return opt_state._replace(hyperparams=hyperparams)


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
