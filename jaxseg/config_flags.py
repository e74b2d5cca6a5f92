"""The `--config` flag of every jaxseg command line.

    --config=configs/brats19_resunet.py      a config file with get_config()
    --config=runs/x/config.json              the resolved config a run wrote
    --config.model.features=16               any override, also of a model or
                                             loss field the file leaves out

ml_collections' `DEFINE_config_file` accepts overrides of keys the config
already has. jaxseg's `model` and `loss` sections hold only what a study
changed (the other fields keep the module's or the loss's defaults), so an
override of a field the file does not set is added here first, typed by the
field's default; a name that is no field of the chosen model or loss stops
with the closest field as a hint (`UnknownField`).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing

from absl import flags
import ml_collections
from ml_collections.config_flags import config_flags as ml_config_flags

from jaxseg import config_base
from jaxseg import losses
from jaxseg import models

# Sections whose keys are the fields of the chosen model / loss.
_FREE = config_base.FREE_SECTIONS


class UnknownField(ValueError):
  """An override names no field of the configured model or loss."""

  def __init__(self, key: str, message: str):
    self.key = key
    super().__init__(f'{key}: {message}')


def _model_fields(name: str) -> dict[str, typing.Any]:
  """field -> dataclasses.Field of a registered model (empty if unknown)."""
  cls = models.MODELS.get(name)
  if cls is None:
    return {}
  return {f.name: f for f in dataclasses.fields(cls)
          if f.name in models.fields(cls)}


def _loss_fields(name: str) -> dict[str, typing.Any]:
  """parameter -> default of a registered loss (empty if unknown)."""
  if name not in losses.LOSSES:
    return {}
  params = dict(losses.loss_params(name))
  params['deep_supervision_weights'] = None
  return params


_ANNOTATION_TYPES = (('bool', bool), ('int', int), ('float', float),
                     ('str', str), ('tuple', tuple), ('Sequence', tuple))


def _type_of(annotation) -> type | None:
  """The value type an annotation (often a string) names: int, float, ..."""
  text = annotation if isinstance(annotation, str) else repr(annotation)
  for word, kind in _ANNOTATION_TYPES:
    if word in text:
      return kind
  return None


def _field_default(section: str, name: str, key: str) -> tuple[typing.Any, type]:
  """(default value or None, its value type) of field `key` of the model/loss."""
  if section == 'model':
    field = _model_fields(name)[key]
    default = field.default
    if default is dataclasses.MISSING:
      default = (field.default_factory() if field.default_factory
                 is not dataclasses.MISSING else None)
    kind = _type_of(field.type)
  else:
    default = _loss_fields(name)[key]
    kind = float if key == 'alpha' else (tuple if key.endswith('weights') else None)
  if isinstance(default, list):
    default = tuple(default)
  if not isinstance(default, (bool, int, float, str, tuple)):
    default = None                  # dtypes, callables: no config value
  kind = type(default) if default is not None else (kind or str)
  return default, kind


def _config_value(section: str, name: str, key: str):
  """The field's default as a config value: itself, or a typed placeholder."""
  default, kind = _field_default(section, name, key)
  if default is None:
    return ml_collections.config_dict.placeholder(kind)
  return default


def add_overridden_fields(config, overrides) -> None:
  """Adds `model.X` / `loss.X` named by `overrides` that `config` lacks.

  Raises:
    UnknownField: X is not a field of the config's model (loss).
  """
  for override in overrides:
    section, _, key = override.partition('.')
    if section not in _FREE or not key or '.' in key:
      continue
    sub = config.get(section)
    if sub is None or key == 'name':
      continue
    name = sub.get('name')
    known = _model_fields(name) if section == 'model' else _loss_fields(name)
    if key in sub:
      if sub[key] is None and key in known:   # None read from a config.json
        with sub.unlocked():
          sub[key] = ml_collections.config_dict.placeholder(
              _field_default(section, name, key)[1])
      continue
    if key not in known:
      close = difflib.get_close_matches(key, list(known), n=1)
      hint = f"; did you mean '{close[0]}'?" if close else ''
      raise UnknownField(f'--config.{section}.{key}',
                         f"not a field of {section} '{name}'{hint}")
    with sub.unlocked():
      sub[key] = _config_value(section, name, key)


class _Parser(ml_config_flags.ConfigFileFlagParser):
  """Loads a .py or .json config, then adds the model/loss fields overridden."""

  def __init__(self, name: str, lock: bool = True):
    super().__init__(name=name, lock_config=lock)
    self.lock, self.flag = lock, None

  def parse(self, path):
    config = config_base.load_config_file(path)
    overrides = self.flag._GetOverrides(self.flag._GetArgv()) if self.flag is not None else []  # pylint: disable=protected-access
    add_overridden_fields(config, overrides)
    if self.lock:
      config.lock()
    return config


def define_config(name: str = 'config', help_string: str = 'Experiment '
                  'config: a .py file with get_config(), or a run\'s '
                  'config.json.', lock: bool = True) -> flags.FlagHolder:
  """Defines `--<name>` (and its `--<name>.a.b=value` overrides).

  `lock=False` lets the program add keys (the sweep's variants).
  """
  parser = _Parser(name, lock)
  flag = ml_config_flags._ConfigFlag(  # pylint: disable=protected-access
      parser=parser, serializer=flags.ArgumentSerializer(), name=name,
      default=None, help_string=help_string, flag_values=flags.FLAGS)
  parser.flag = flag
  return flags.DEFINE_flag(flag, flags.FLAGS)
