"""Pretrained weights: load a checkpoint of a known format into part of a model.

`config.pretrained` names the file, its format and the top-level parameter
subtree it fills (`into`, e.g. 'backbone' of Med3DUNet). The loaded
variables must match that subtree exactly (same keys and shapes); anything
else is an InputError naming the file and the first difference.
"""

import importlib
from typing import Any, Callable, Dict, Tuple

import jax
import numpy as np

from jaxseg.errors import InputError

# format name -> 'module:function'; function(path) -> {'params': ..., 'batch_stats': ...}
FORMATS: Dict[str, str] = {
    'medicalnet': 'jaxseg.models.medicalnet:load_medicalnet',
}


def _loader(fmt: str) -> Callable[[str], dict]:
  if fmt not in FORMATS:
    raise InputError('config.pretrained.format',
                     f'unknown format {fmt!r}; known: {", ".join(sorted(FORMATS))}')
  module, function = FORMATS[fmt].split(':')
  return getattr(importlib.import_module(module), function)


def _check_same_tree(path: str, loaded: Any, expected: Any, what: str) -> None:
  want = {jax.tree_util.keystr(k): v.shape
          for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  got = {jax.tree_util.keystr(k): np.shape(v)
         for k, v in jax.tree_util.tree_leaves_with_path(loaded)}
  for key in sorted(want):
    if key not in got:
      raise InputError(path, f'has no value for {what}{key} of the model')
    if tuple(got[key]) != tuple(want[key]):
      raise InputError(path, f'{what}{key} has shape {tuple(got[key])}, the '
                       f'model needs {tuple(want[key])}')
  extra = sorted(set(got) - set(want))
  if extra:
    raise InputError(path, f'{what}{extra[0]} is not part of the model')


def load_into(params: dict, batch_stats: dict, pretrained_config) -> Tuple[dict, dict]:
  """(params, batch_stats) with subtree `pretrained_config.into` replaced.

  Args:
    params, batch_stats: the model's freshly initialised variables.
    pretrained_config: `config.pretrained` (path, format, into).
  """
  path, into = pretrained_config.path, pretrained_config.into
  if into not in params:
    raise InputError('config.pretrained.into',
                     f'the model has no parameter subtree {into!r}; it has: '
                     f'{", ".join(sorted(params))}')
  loaded = _loader(pretrained_config.format)(path)
  _check_same_tree(path, loaded['params'], params[into], f"params['{into}']")
  stats = loaded.get('batch_stats', {})
  if into in batch_stats or stats:
    _check_same_tree(path, stats, batch_stats.get(into, {}),
                     f"batch_stats['{into}']")
  cast = lambda new, old: np.asarray(new, dtype=old.dtype)  # noqa: E731
  params = dict(params)
  params[into] = jax.tree.map(cast, loaded['params'], params[into])
  if into in batch_stats:
    batch_stats = dict(batch_stats)
    batch_stats[into] = jax.tree.map(cast, stats, batch_stats[into])
  return params, batch_stats
