"""The model registry: names -> Flax Linen module classes, `build` and `from_config`."""

import dataclasses
from typing import Any, Callable, Dict, Mapping

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxseg import labels
from jaxseg.errors import InputError

MODELS: Dict[str, type] = {}
# config.train.precision -> the models' computation dtype.
PRECISIONS = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# Fields every Linen module has that a config must not set.
_RESERVED = ('parent', 'name')


def register(name: str) -> Callable[[type], type]:
  """Class decorator: makes `build` know the module under `name`."""

  def wrap(cls: type) -> type:
    if name in MODELS and MODELS[name] is not cls:
      raise ValueError(f"model name '{name}' is already registered")
    MODELS[name] = cls
    return cls

  return wrap


def fields(cls: type) -> tuple:
  """The configurable fields of a registered module class."""
  return tuple(f.name for f in dataclasses.fields(cls)
               if f.init and f.name not in _RESERVED)


def _plain(value: Any, key: str) -> Any:
  """Config values -> module field values (lists to tuples, dtype names)."""
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if isinstance(value, list):
    return tuple(_plain(v, key) for v in value)
  if isinstance(value, tuple):
    return tuple(_plain(v, key) for v in value)
  if key.endswith('dtype') and isinstance(value, str):
    try:
      return jnp.dtype(value)
    except TypeError as e:
      raise InputError(f'config.model.{key}',
                       f"'{value}' is not a dtype name") from e
  return value


def build(model_config: Mapping[str, Any]) -> nn.Module:
  """Builds the module named by `model_config.name` from the other keys.

  Args:
    model_config: `ml_collections.ConfigDict` (or mapping) with `name` and
      any fields of that module; fields left out keep the module defaults.

  Returns:
    The unbound Flax module.

  Raises:
    InputError: unknown model name, or a key that is not a field of it.
  """
  if hasattr(model_config, 'to_dict'):
    model_config = model_config.to_dict()
  model_config = dict(model_config)
  name = model_config.pop('name', None)
  if name not in MODELS:
    raise InputError('config.model.name',
                     f"unknown model {name!r}; known: "
                     f"{', '.join(sorted(MODELS))}")
  cls = MODELS[name]
  known = fields(cls)
  kwargs = {}
  for key, value in model_config.items():
    if key not in known:
      raise InputError(f'config.model.{key}',
                       f"unknown field for model '{name}'; known: "
                       f"{', '.join(known)}")
    kwargs[key] = _plain(value, key)
  return cls(**kwargs)


def from_config(config) -> nn.Module:
  """The model of `config.model`, with as many outputs as the label mode needs.

  `config.train.precision='bfloat16'` sets the model's computation dtype;
  its parameters (the master weights) and logits stay float32.
  """
  precision = config.train.get('precision', 'float32')
  if precision not in PRECISIONS:
    raise InputError('config.train.precision',
                     f'{precision!r} is not one of {", ".join(PRECISIONS)}')
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  model_config.num_classes = labels.num_outputs(config.data.label_mode)
  if precision != 'float32':
    model_config.dtype = PRECISIONS[precision]
  return build(model_config)
