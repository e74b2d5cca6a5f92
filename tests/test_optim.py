"""Reduce-on-plateau and early stopping against Keras' documented behaviour."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxseg import optim
from jaxseg.errors import InputError


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


def test_early_stopping_after_patience_epochs():
  stopper = optim.EarlyStopping(patience=5)
  decisions = [stopper.update(v) for v in [1.0, 0.5, 0.6, 0.6, 0.7, 0.5, 0.55]]
  assert decisions == [False] * 6 + [True]   # 0.5 again is not an improvement


def test_learning_rate_lives_in_the_optimizer_state():
  config = ml_collections.ConfigDict(dict(name='adam', learning_rate=0.01,
                                          weight_decay=0.0))
  tx = optim.build(config)
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  assert optim.get_learning_rate(state) == pytest.approx(0.01)
  state = optim.set_learning_rate(state, 0.005)
  grads = {'w': jnp.ones(3)}
  updates, _ = tx.update(grads, state, params)
  ref_updates, _ = optax.adam(0.005).update(grads, optax.adam(0.005).init(params), params)
  np.testing.assert_allclose(updates['w'], ref_updates['w'], rtol=1e-6)


def test_unknown_optimizer_names_the_key():
  with pytest.raises(InputError, match='config.optimizer.name'):
    optim.build(ml_collections.ConfigDict(dict(name='adamm', learning_rate=1.0)))
