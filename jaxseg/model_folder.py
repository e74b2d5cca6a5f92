"""A shareable trained model: one folder that predicts without training data or a config file.

    python -m jaxseg.main --config=... --workdir=runs/x --mode=export [--output=DIR]
    python -m jaxseg.predict -i cases/ -o predictions/ -m DIR [-m DIR2 ...]

The folder (default `<workdir>/model/`):

    model.json    what the model needs to be applied: its name and input
                  shape, the channels in order, the label mode and output
                  channels, the preprocessing (crop/resize sizes, the
                  normalisation statistics of the training split), the
                  training data's label convention, and where it came from
    config.json   the run's resolved config (also loadable as --config)
    weights/      Orbax checkpoint of {'params', 'batch_stats'} (no
                  optimiser state)

`load(path)` takes such a folder or a training workdir (its config.json and
best checkpoint), so run folders ensemble as exported ones do. Every
problem (a missing file, a folder of another format version, members of an
ensemble with other channels or outputs) is one `InputError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Callable

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxseg import config_base
from jaxseg import labels
from jaxseg import models
from jaxseg import parallel
from jaxseg.data import preprocess
from jaxseg.errors import InputError, read_json_object
from jaxseg.scoring import postprocess as postprocess_lib
from jaxseg.training import state as state_lib

FORMAT = 'jaxseg-model'
VERSION = 1
MANIFEST = 'model.json'
CONFIG = 'config.json'
WEIGHTS = 'weights'
FILES = (MANIFEST, CONFIG, WEIGHTS)


class InferenceState(flax.struct.PyTreeNode):
  """What inference needs of a TrainState: apply_fn, params, batch_stats."""
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  params: Any = None
  batch_stats: Any = None


@dataclasses.dataclass
class Model:
  """A loaded model and what its inputs must look like.

  Attributes:
    config: the run's config (data view, label mode, inference settings).
    state: InferenceState on the mesh it was loaded onto.
    mean, std: (C,) float32 normalisation statistics of the training split,
      or None (each case is z-scored over its own brain).
    source: the folder it was loaded from, named in errors.
    manifest: the contents of model.json (for a workdir: built from it).
    postprocess: the post-processing settings for its predictions
      (`postprocess.settings_of`): chosen on validation cases when the run
      did so, else the config's.
  """
  config: ml_collections.ConfigDict
  state: InferenceState
  mean: np.ndarray | None
  std: np.ndarray | None
  source: str
  manifest: dict
  postprocess: dict | None = None

  def __post_init__(self):
    if self.postprocess is None:
      self.postprocess = postprocess_lib.settings_of(self.config.postprocess)


def manifest(config, run_info: dict, postprocess: dict | None = None) -> dict:
  """model.json for a run's config, its data/split.json and post-processing."""
  data = config.data
  norm = run_info.get('normalization', {})
  settings = run_info.get('settings', {})
  return dict(
      format=FORMAT, version=VERSION,
      model=config.model.name,
      input_shape=list(preprocess.model_input_shape(config.data)),
      modalities=list(data.modalities),
      label_mode=data.label_mode,
      outputs=labels.output_channels(data.label_mode),
      activation=labels.activation(data.label_mode),
      preprocessing=dict(dims=data.dims, image_size=data.image_size,
                         depth=data.depth if data.dims == 3 else None,
                         patch_size=(list(data.patch_size)
                                     if data.patch_size else None),
                         normalization=norm.get('mode', data.normalization),
                         mean=norm.get('mean'), std=norm.get('std')),
      label_convention=dict(
          training_label_values=run_info.get('label_values'),
          written_as='each input case\'s own convention (BraTS 0/1/2/4, '
                     'BraTS 2023 0/1/2/3, or 0/1 masks)'),
      trained_on=dict(cases=len(run_info.get('split', {}).get('train', [])),
                      seed=settings.get('seed')),
      postprocess=postprocess,
  )


def split_info(workdir: str) -> dict:
  """A trained run's data/split.json; InputError if it has none."""
  path = os.path.join(workdir, 'data', 'split.json')
  if not os.path.isfile(path):
    raise InputError(workdir, 'has no data/split.json: not a trained run '
                     '(train first)')
  with open(path) as f:
    return json.load(f)


def export(config, workdir: str, output_dir: str | None = None,
           postprocess: dict | None = None) -> str:
  """--mode=export: writes the run's best model as a model folder; returns its path.

  `postprocess`: the post-processing settings to ship (cross-validation
  passes those chosen on the pooled folds); default: those the run chose on
  its validation cases, else its config's. The folder is written under a
  temporary name beside `output_dir` and renamed when complete; an existing
  folder is replaced only then. With several processes every one calls this
  (the weights are saved collectively) and process 0 alone writes the JSON
  files and renames the folder; the processes must share `output_dir`'s
  file system, as they share the workdir's for checkpoints.
  """
  output_dir = os.path.abspath(output_dir or os.path.join(workdir, 'model'))
  info = split_info(workdir)
  mesh = parallel.make_mesh(config.get('mesh'))
  state = state_lib.load_best_state(config, workdir, mesh)
  parent = os.path.dirname(output_dir)
  # One name every process agrees on (not mkdtemp's random one).
  tmp = os.path.join(parent, f'.export-{os.path.basename(output_dir)}.partial')
  lead = jax.process_index() == 0
  if lead:
    os.makedirs(parent, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted export
  _sync('export: start')
  try:
    weights = {'params': state.params, 'batch_stats': state.batch_stats}
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(tmp, WEIGHTS), weights)
    checkpointer.wait_until_finished()
    if lead:
      with open(os.path.join(tmp, CONFIG), 'w') as f:
        f.write(config.to_json_best_effort(indent=1))
      settings = (postprocess or postprocess_lib.chosen(workdir) or
                  postprocess_lib.settings_of(config.postprocess))
      with open(os.path.join(tmp, MANIFEST), 'w') as f:
        json.dump(manifest(config, info, settings), f, indent=1)
      if os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
      os.rename(tmp, output_dir)
  except BaseException:
    if lead:
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  _sync('export: done')
  return output_dir


def _sync(name: str):
  """Waits for every process (nothing to wait for with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _check_folder(path: str) -> dict:
  """model.json of a model folder; InputError naming a missing or bad file."""
  for name in FILES:
    if not os.path.exists(os.path.join(path, name)):
      raise InputError(os.path.join(path, name), 'missing: not a complete '
                       f'jaxseg model folder (it needs {", ".join(FILES)})')
  where = os.path.join(path, MANIFEST)
  info = read_json_object(where, 'the model description',
                          '"format", "version" and the model\'s settings')
  if info.get('format') != FORMAT:
    raise InputError(where, f'is not a jaxseg model description (format '
                     f'{info.get("format")!r})')
  if info.get('version') != VERSION:
    raise InputError(where, f'format version {info.get("version")} is not '
                     f'the {VERSION} this jaxseg reads')
  return info


def _statistics(info: dict):
  prep = info['preprocessing']
  if prep.get('mean') is None:
    return None, None
  return (np.asarray(prep['mean'], np.float32),
          np.asarray(prep['std'], np.float32))


def load(path: str, mesh=None) -> Model:
  """A model folder, or a training workdir's best checkpoint, ready to predict."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise InputError(path, 'is not a model folder (it does not exist)')
  is_run = (not os.path.exists(os.path.join(path, MANIFEST)) and
            os.path.isdir(os.path.join(path, 'checkpoints_best')))
  if is_run:
    if not os.path.isfile(os.path.join(path, CONFIG)):
      raise InputError(os.path.join(path, CONFIG), 'missing: the run wrote '
                       'no config; train it first')
    config = config_base.config_from_json(os.path.join(path, CONFIG))
    info = manifest(config, split_info(path), postprocess_lib.chosen(path))
  else:
    info = _check_folder(path)
    config = config_base.config_from_json(os.path.join(path, CONFIG))
  config_base.check_config(config)
  mesh = mesh or parallel.make_mesh(config.get('mesh'))
  if is_run:
    state = state_lib.load_best_state(config, path, mesh)
    state = InferenceState(apply_fn=state.apply_fn, params=state.params,
                           batch_stats=state.batch_stats)
  else:
    state = _restore(config, info, os.path.join(path, WEIGHTS), mesh)
  mean, std = _statistics(info)
  return Model(config=config, state=state, mean=mean, std=std, source=path,
               manifest=info, postprocess=info.get('postprocess'))


def _restore(config, info: dict, where: str, mesh) -> InferenceState:
  """The weights of a model folder as an InferenceState on `mesh`."""
  model = models.from_config(config)
  shape = (1,) + tuple(info['input_shape'])
  abstract = jax.eval_shape(
      lambda: model.init({'params': jax.random.key(0)},
                         jax.numpy.zeros(shape, jax.numpy.float32),
                         train=False))
  abstract = {'params': abstract['params'],
              'batch_stats': abstract.get('batch_stats', {})}
  try:
    weights = ocp.StandardCheckpointer().restore(where, abstract)
  except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
    reason = ' '.join(str(e).split())[:300]
    raise InputError(where, f"does not hold the weights of model "
                     f"'{config.model.name}' described in {MANIFEST} "
                     f'({reason})') from None
  state = InferenceState(apply_fn=model.apply, params=weights['params'],
                         batch_stats=weights['batch_stats'])
  return jax.device_put(state, parallel.replicated(mesh))


def check_ensemble(models: list[Model]) -> None:
  """InputError unless the members read the same channels and predict the same outputs."""
  first = models[0]
  for other in models[1:]:
    for key, what in (('modalities', 'input channels'),
                      ('label_mode', 'label mode'),
                      ('outputs', 'output channels')):
      if other.manifest[key] != first.manifest[key]:
        raise InputError(other.source, f'{what} {other.manifest[key]} differ '
                         f'from {first.manifest[key]} of {first.source}: an '
                         'ensemble averages the probabilities of models with '
                         'one label convention and one set of channels')
