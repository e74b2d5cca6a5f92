"""A run's checkpoints: the latest and the best, saved and restored with Orbax.

    <workdir>/checkpoints/<step>/         the latest (state + the loop's JSON)
    <workdir>/checkpoints_best/<step>/    the best epoch by train.best_by
    <workdir>/checkpoints_damaged/        checkpoints that could not be
                                          restored, set aside (never deleted)

Each checkpoint holds two items: 'state' (the TrainState's arrays, restored
into an abstract state of the config's model) and 'loop' (a JSON object).

Resuming takes the newest checkpoint that restores (`restore_newest`): a
damaged one (a truncated array file, `_METADATA` or `loop/metadata`, say
after a full disk or a crash of the file system) is moved to
`checkpoints_damaged/` with one warning line naming it and the checkpoint
used instead; exact resume holds from that one, as the run replays the same
steps. When none restores, one `InputError` lists each and why. A checkpoint
that fails because it holds another model than the config's (other shapes or
parameter names) is reported as such, not as damage.
"""

import dataclasses
import json
import os
import shutil

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from jaxseg.errors import InputError

LATEST, BEST, DAMAGED = 'checkpoints', 'checkpoints_best', 'checkpoints_damaged'
_ITEMS = ('state', 'loop')


def manager(workdir: str, kind: str) -> ocp.CheckpointManager:
  """The Orbax manager of `<workdir>/<kind>` (LATEST or BEST): one step kept.

  Saves are asynchronous: arrays are copied to the host, then written while
  training goes on.
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), kind),
                               options=options, item_names=_ITEMS)


def save(mngr: ocp.CheckpointManager, state, loop: dict) -> None:
  """Saves `state` (a pytree of arrays) and `loop` (JSON) at state.step."""
  mngr.save(int(state.step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop)),
            force=True)


class Damaged(Exception):
  """A checkpoint with a damaged file, found before Orbax reads it."""


class OtherModel(Exception):
  """A checkpoint whose arrays differ from the model's, found before Orbax reads it."""


def _restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
  """(state, loop dict) of one step.

  Raises Damaged or OtherModel from checks made before Orbax reads (an
  Orbax read that fails leaves concurrent reads behind, which print a
  traceback each), or whatever Orbax raises.
  """
  folder = os.path.join(str(mngr.directory), str(step))
  damage = _damage(folder)
  if damage:
    raise Damaged(damage)
  difference = _model_difference(folder, abstract_state)
  if difference:
    raise OtherModel(difference)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore()))
  return restored['state'], dict(restored['loop'])


def _short(error: BaseException) -> str:
  """The message of an exception's root cause on one line, at most 200 characters.

  Orbax wraps TensorStore's error (which names the file and what is wrong)
  in one that dumps the whole TensorStore spec.
  """
  while True:
    inner = error.__cause__ or (None if error.__suppress_context__
                                else error.__context__)
    if inner is None:
      break
    error = inner
  text = ' '.join(str(error).split()) or type(error).__name__
  return text if len(text) <= 200 else text[:197] + '...'


def _key_name(key) -> str:
  for field in ('key', 'name', 'idx'):
    if hasattr(key, field):
      return str(getattr(key, field))
  return str(key)


def _shapes(tree) -> dict:
  """{'a/b/c': shape} of a pytree of arrays or of array metadata.

  Attribute, dict and sequence keys print alike, so a dataclass state and
  the nested dicts Orbax stores compare equal.
  """
  return {'/'.join(_key_name(k) for k in path): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# The JSON files a restore reads (Orbax's array metadata, the loop's item;
# Orbax does without _CHECKPOINT_METADATA).
_JSON_FILES = ('_METADATA', '_sharding', 'metadata')


def _damage(folder: str) -> str | None:
  """The first file of a checkpoint folder found damaged, and why; or None.

  Checks that every JSON file parses and that every value of the arrays'
  OCDBT store (its manifest, tree and data files) reads, before Orbax reads
  the folder: Orbax meets such damage inside hundreds of concurrent reads,
  whose leftovers print a traceback each. The extra read costs about what
  the restore does (the file cache serves the second).
  """
  for parent, _, names in sorted(os.walk(folder)):
    for name in sorted(names):
      if name in _JSON_FILES or os.path.basename(parent) == 'array_metadatas':
        path = os.path.join(parent, name)
        try:
          with open(path, encoding='utf-8') as f:
            json.load(f)
        except (OSError, ValueError) as e:
          return f'{os.path.relpath(path, folder)}: {_short(e)}'
  state = os.path.join(folder, 'state')
  if os.path.exists(os.path.join(state, 'manifest.ocdbt')):
    try:
      store = ts.KvStore.open({'driver': 'ocdbt', 'base': f'file://{state}/'}
                              ).result()
      keys = store.list().result()
    except Exception as e:  # pylint: disable=broad-except
      return f'state/manifest.ocdbt: {_short(e)}'
    reads = [(key, store.read(key)) for key in keys]
    for key, read in reads:
      try:
        read.result()
      except Exception as e:  # pylint: disable=broad-except
        return f'state/{key.decode()}: {_short(e)}'
  return None


def _model_difference(folder: str, abstract_state) -> str | None:
  """How the checkpoint's stored arrays differ from `abstract_state`.

  None when they agree or when the stored metadata cannot be read or lists
  no array (then the checkpoint is damaged, not another model's).
  """
  try:
    metadata = ocp.StandardCheckpointHandler().metadata(
        epath.Path(folder) / 'state')
    stored = _shapes(getattr(metadata, 'item_metadata', metadata))
  except Exception:  # pylint: disable=broad-except
    return None
  if not stored:
    return None
  wanted = _shapes(abstract_state)
  for key in sorted(set(stored) | set(wanted)):
    if key not in stored:
      return f'it has no {key}'
    if key not in wanted:
      return f'it holds {key}, which the model does not have'
    if stored[key] != wanted[key]:
      return f'{key} has shape {stored[key]}, the model {wanted[key]}'
  return None


@dataclasses.dataclass
class Failure:
  """A checkpoint that did not restore: where, and why (damage or mismatch)."""
  folder: str
  reason: str
  damaged: bool
  model_name: str = ''

  @property
  def problem(self) -> str:
    return (f'damaged checkpoint ({self.reason})' if self.damaged else
            f"does not match the config's model '{self.model_name}' "
            f'({self.reason})')

  def __str__(self):
    return f'{self.folder}: {self.problem}'


def _failure(folder: str, abstract_state, error: BaseException,
             model_name: str) -> Failure:
  if isinstance(error, (Damaged, OtherModel)):
    return Failure(folder, str(error), isinstance(error, Damaged), model_name)
  difference = _model_difference(folder, abstract_state)
  if difference is not None:
    return Failure(folder, difference, False, model_name)
  return Failure(folder, _short(error), True, model_name)


def set_aside(workdir: str, folder: str) -> str:
  """Moves a checkpoint folder to `<workdir>/checkpoints_damaged/`; the new path."""
  target_dir = os.path.join(workdir, DAMAGED)
  name = '_'.join(os.path.relpath(folder, workdir).split(os.sep))
  target = os.path.join(target_dir, name)
  n = 1
  while os.path.exists(target):
    n += 1
    target = os.path.join(target_dir, f'{name}_{n}')
  os.makedirs(target_dir, exist_ok=True)
  shutil.move(folder, target)
  return target


def any_saved(workdir: str) -> bool:
  """True if `checkpoints/` or `checkpoints_best/` holds a step folder."""
  return any(name.isdigit()
             for kind in (LATEST, BEST)
             if os.path.isdir(os.path.join(workdir, kind))
             for name in os.listdir(os.path.join(workdir, kind)))


def restore_newest(workdir: str, abstract_state, model_name: str = ''):
  """(state, loop dict, folder) of the newest checkpoint that restores.

  Candidates are every step of `checkpoints/` and `checkpoints_best/`,
  newest first. Damaged ones tried before the one restored are set aside
  with a warning. None when the workdir has no checkpoint; InputError when
  none restores.
  """
  managers = {kind: manager(workdir, kind) for kind in (LATEST, BEST)}
  candidates = sorted(((step, kind == LATEST, kind)
                       for kind, mngr in managers.items()
                       for step in mngr.all_steps()), reverse=True)
  failures = []
  try:
    for step, _, kind in candidates:
      folder = os.path.join(workdir, kind, str(step))
      try:
        state, loop = _restore(managers[kind], step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        failure = _failure(folder, abstract_state, e, model_name)
        if not failure.damaged:  # a changed config: older ones differ too
          raise InputError(workdir, f'cannot resume: {failure}') from None
        failures.append(failure)
        continue
      for failure in failures:
        moved = (set_aside(workdir, failure.folder)
                 if jax.process_index() == 0 else '')
        logging.warning('checkpoint %s cannot be restored (%s): set aside as '
                        '%s; resuming from %s', failure.folder, failure.reason,
                        moved, folder)
      if failures and jax.process_count() > 1:
        multihost_utils.sync_global_devices('jaxseg_set_aside_checkpoints')
      return state, loop, folder
  finally:
    for mngr in managers.values():
      mngr.close()
  if failures:
    raise InputError(workdir, 'no checkpoint can be restored: ' +
                     '; '.join(str(f) for f in failures))
  return None


def restore_best(workdir: str, abstract_state, model_name: str = ''):
  """(state, loop dict) of `<workdir>/checkpoints_best/`, or an InputError.

  The error says whether the checkpoint is missing, damaged or holds another
  model than `abstract_state`'s.
  """
  where = os.path.join(workdir, BEST)
  if not os.path.isdir(where):
    raise InputError(workdir, f'has no best checkpoint ({BEST}/): train first')
  mngr = manager(workdir, BEST)
  try:
    step = mngr.latest_step()
    if step is None:
      raise InputError(where, 'holds no checkpoint: train first')
    try:
      return _restore(mngr, step, abstract_state)
    except Exception as e:  # pylint: disable=broad-except
      folder = os.path.join(where, str(step))
      raise InputError(folder, _failure(folder, abstract_state, e,
                                              model_name).problem
                       ) from None
  finally:
    mngr.close()
