"""The train state: parameters, batch statistics and optimiser state.

`create_train_state` initialises one (its initialiser compiled cheaply),
`abstract_train_state` gives its shapes only (to restore a checkpoint into),
`load_best_state` restores a run's best checkpoint.
"""

import functools
from typing import Any

from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections

from jaxseg import models
from jaxseg import parallel
from jaxseg.data import preprocess
from jaxseg.models import pretrained
from jaxseg.training import checkpoints
from jaxseg.training import optim


class TrainState(train_state.TrainState):
  batch_stats: Any


# Initialisation runs once: compile it without LLVM optimisation. On a CPU
# that cuts its compile from 24-45 s to 3-6 s for the zoo's U-Nets; the
# values differ from an optimised compile by float rounding only (7e-9).
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0}


def init_variables(model, rng, image_shape) -> dict:
  """The model's variables for inputs (1, *image_shape), compiled cheaply."""
  init = jax.jit(functools.partial(model.init, train=False))
  args = ({'params': rng}, jnp.zeros((1,) + tuple(image_shape), jnp.float32))
  compiled = init.lower(*args).compile(compiler_options=INIT_COMPILER_OPTIONS)
  return compiled(*args)


def abstract_train_state(model, tx, image_shape) -> TrainState:
  """A TrainState of shapes and dtypes only (to restore a checkpoint into)."""
  def build():
    variables = model.init({'params': jax.random.key(0)},
                           jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                           train=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'],
                             tx=tx, batch_stats=variables.get('batch_stats', {}))
  return jax.eval_shape(build)


def create_train_state(model, tx, rng, image_shape,
                       pretrained_config=None) -> TrainState:
  """Initialises parameters and batch statistics for inputs (1, *image_shape).

  With `pretrained_config.path` set, its checkpoint replaces the subtree
  `pretrained_config.into` before the optimiser state is made.
  """
  variables = init_variables(model, rng, image_shape)
  params = variables['params']
  batch_stats = variables.get('batch_stats', {})
  if pretrained_config is not None and pretrained_config.get('path'):
    params, batch_stats = pretrained.load_into(params, batch_stats,
                                               pretrained_config)
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                           batch_stats=batch_stats)


def load_best_state(config: ml_collections.ConfigDict, workdir: str, mesh):
  """The best checkpoint of a workdir as a TrainState on `mesh` (for --mode=evaluate)."""
  model = models.from_config(config)
  tx = optim.build(config.optimizer)
  # Shapes only: the checkpoint supplies every value (no init to compile,
  # no training data needed).
  state = abstract_train_state(model, tx,
                               preprocess.model_input_shape(config.data))
  state, _ = checkpoints.restore_best(workdir, state, config.model.name)
  return jax.device_put(state, parallel.replicated(mesh))
