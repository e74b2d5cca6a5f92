"""The training loop: one run, from the config to the best checkpoint.

One run, as seed 002 trains:

    for each epoch: steps_per_epoch steps over augmented training slices
                    -> validation loss and metrics
                    -> learning-rate schedule (reduce-on-plateau by default)
                       and early stopping on config.schedule.monitor, best
                       checkpoint on config.train.best_by
    restore the best checkpoint (the model `jaxseg.modes` then evaluates)

Checkpoints (Orbax) live in `<workdir>/checkpoints/` (the latest; with the
step, optimiser state, batch statistics, the loop's JSON state and the data
iterator position) and `<workdir>/checkpoints_best/` (the best epoch by
`train.best_by`: the lowest validation loss by default). Rerunning the same
command resumes from the latest and continues the same random streams:
dropout keys are `fold_in(key, step)`, and augmentation draws come from
Grain's per-record generators (`config.augment.where` 'host') or from
`fold_in` of the step and the sample's row ('device', the chain jitted into
the train step).
"""

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable

from absl import logging
from clu import parameter_overview
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import config_base
from jaxseg import labels
from jaxseg import losses
from jaxseg import models
from jaxseg import parallel
from jaxseg import xla_cpu
from jaxseg.data import augment_device
from jaxseg.data import dataset
from jaxseg.data import pipeline
from jaxseg.data import preprocess
from jaxseg.errors import InputError
from jaxseg.scoring import metrics
from jaxseg.training import checkpoints
from jaxseg.training import optim
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib
from jaxseg.training import validation
from jaxseg.training import writers



def check_input_sizes(model, config) -> None:
  """InputError before any work if the model cannot take the training
  inputs or the whole validation volumes (e.g. a size not divisible by the
  U-Net's 2**depth): found by tracing, so the first epoch's end cannot fail.
  """
  channels = len(config.data.modalities)
  size = config.data.image_size
  whole = ((config.data.depth, size, size, channels) if config.data.dims == 3
           else (size, size, channels))
  for shape, what in ((preprocess.model_input_shape(config.data),
                       'the training inputs'),
                      (whole, 'the validation volumes')):
    x = jax.ShapeDtypeStruct((1,) + tuple(shape), jnp.float32)
    try:
      jax.eval_shape(lambda x: model.init({'params': jax.random.key(0)}, x,
                                          train=False), x)
    except ValueError as e:
      key = ('config.data.patch_size' if what == 'the training inputs' and
             config.data.patch_size else
             'config.data.depth / image_size' if config.data.dims == 3 else
             'config.data.image_size')
      raise InputError(key, f'the model cannot take {what} of shape '
                       f'{tuple(shape)}: {e}') from None


def check_heads(model, image_shape, loss_config) -> int:
  """The number of heads the model trains; InputError if the loss disagrees."""
  x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  keys = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  out = jax.eval_shape(
      lambda x: model.init_with_output(keys, x, train=True)[0], x)
  heads = len(out) if isinstance(out, (list, tuple)) else 1
  weights = loss_config.get('deep_supervision_weights')
  if heads > 1 and weights is None:
    raise InputError('config.loss.deep_supervision_weights',
                     f'the model trains {heads} heads (deep supervision): give '
                     f'one loss weight per head, main head last')
  if weights is not None and len(weights) != heads:
    raise InputError('config.loss.deep_supervision_weights',
                     f'{len(weights)} weights for a model with {heads} '
                     'head(s)')
  return heads


@dataclasses.dataclass
class LoopState:
  """The host-side part of a run that a checkpoint must restore (JSON)."""
  epoch: int = 0                 # completed epochs
  best_val_loss: float = float('inf')  # the best epoch's validation loss
  best_value: float | None = None  # its config.train.best_by metric
  best_epoch: int = -1
  stopped_early: bool = False
  plateau: dict = dataclasses.field(default_factory=dict)
  early_stopping: dict = dataclasses.field(default_factory=dict)
  data_iterator: str = ''        # Grain iterator state (JSON)
  epoch_metrics: list = dataclasses.field(default_factory=list)  # see below
  augment_where: str = ''        # 'host' or 'device': where augmentation ran
  train_seconds: float = 0.0


def metrics_to_json(merged) -> list:
  """The leaves of merged step metrics as [dtype, values] pairs (exact in JSON).

  A checkpoint inside an epoch keeps the epoch's metrics so far, so that a
  resumed run logs the same epoch averages as an uninterrupted one.
  """
  return [[str(np.asarray(x).dtype), np.asarray(x).tolist()]
          for x in jax.tree.leaves(jax.device_get(merged))]


def metrics_from_json(leaves: list, like):
  """metrics_to_json's inverse, with the tree structure of metrics `like`."""
  return jax.tree.unflatten(jax.tree.structure(like),
                            [np.asarray(v, dtype) for dtype, v in leaves])


def _better(value: float, best: float | None, mode: str) -> bool:
  """True if `value` improves on `best` (None: nothing yet) in mode 'min'/'max'.

  NaN never improves.
  """
  if value != value:  # NaN
    return False
  if best is None:
    return True
  return value < best if mode == 'min' else value > best


def save_checkpoint(manager, state: state_lib.TrainState,
                    loop: LoopState) -> None:
  checkpoints.save(manager, state, dataclasses.asdict(loop))


PARAMETER_TABLE = 'parameters.txt'


def write_parameter_table(params, workdir: str) -> str:
  """Writes clu's per-layer parameter table to `<workdir>/parameters.txt`."""
  path = os.path.join(workdir, PARAMETER_TABLE)
  os.makedirs(workdir, exist_ok=True)
  with open(path, 'w') as f:
    f.write(parameter_overview.get_parameter_overview(params) + '\n')
  return path


def compile_step(step_fn, state, batch, key):
  """Compiles the jitted train step before the loop, saying so (tens of s on a CPU).

  Returns the compiled step; a cached program (`~/.cache/jaxseg/xla`) loads
  in about a second.
  """
  logging.info('compiling the train step (the first run of a config takes '
               'tens of seconds on a CPU; reruns load it from the cache)...')
  t0 = time.time()
  compiled = step_fn.lower(state, batch, key).compile()
  logging.info('compiled in %.1f s', time.time() - t0)
  xla_cpu.release_freed_memory()
  return compiled


class Progress:
  """A progress line: step, loss, images/s and the time left."""

  def __init__(self, total_steps: int, batch_size: int, start_step: int):
    self.total, self.batch = total_steps, batch_size
    self.t0, self.s0 = time.time(), start_step

  def line(self, step: int, loss: float) -> str:
    elapsed = time.time() - self.t0
    done = max(step - self.s0, 1)
    rate = done * self.batch / max(elapsed, 1e-9)
    left = (self.total - step) * elapsed / done
    return (f'step {step}/{self.total}  loss {loss:.4f}  {rate:.1f} images/s  '
            f'{left / 60:.1f} min left')


def check_grad_accum(train_config, mesh) -> int:
  """`train.grad_accum_steps`, checked against the batch and the mesh."""
  steps = train_config.get('grad_accum_steps', 1)
  per_device = train_config.batch_size // parallel.data_size(mesh)
  if not isinstance(steps, int) or steps < 1:
    raise InputError('config.train.grad_accum_steps',
                     f'must be a positive integer, got {steps!r}')
  if per_device % steps:
    raise InputError('config.train.grad_accum_steps',
                     f'{steps} does not divide the {per_device} rows each of '
                     f'the {parallel.data_size(mesh)} data-parallel devices '
                     f'gets of the batch of {train_config.batch_size}')
  return steps


def train_input_shape(config, source) -> tuple:
  """The shape of one training input: a record's, or (*patch_size, C) in 3D."""
  shape = tuple(source[0]['image'].shape)
  if config.data.dims == 3 and config.data.patch_size:
    return tuple(config.data.patch_size) + shape[-1:]
  return shape


def loader_read_ahead(config, image_shape) -> int:
  """Batches the loader prepares ahead: at most 128 MiB of this process's batches."""
  channels = image_shape[-1] + labels.num_outputs(config.data.label_mode)
  sample_bytes = 4 * math.prod(image_shape[:-1]) * channels
  local_batch = config.train.batch_size // jax.process_count()
  return pipeline.read_ahead_batches(sample_bytes * local_batch)


def logged_metric_names(activation: str) -> list:
  """The metrics logged per split (loss, dice, ...), for config.schedule.monitor."""
  zeros = jnp.zeros((1, 2, 2, 2), jnp.float32)
  shapes = jax.eval_shape(lambda: metrics.SegMetrics.single_from_model_output(
      loss=zeros.sum(), logits=zeros, targets=zeros,
      activation=activation).compute_arrays())
  return sorted(shapes)


def epoch_length(config, num_records: int) -> int:
  """Steps per epoch: `train.steps_per_epoch`, the synthetic set's, or one pass."""
  if config.train.steps_per_epoch:
    return config.train.steps_per_epoch
  if not config.data.root:
    return config.data.synthetic.steps_per_epoch
  return num_records // config.train.batch_size


def check_loss_activation(config, activation: str) -> None:
  """InputError when the loss activates the logits other than the label mode."""
  if losses.activation_of(config.loss) != activation:
    raise InputError('config.loss.name', f"'{config.loss.name}' applies a "
                     f'{losses.activation_of(config.loss)} to the logits, but '
                     f"label_mode '{config.data.label_mode}' needs a {activation}"
                     f" loss: set config.loss.activation='{activation}' (most "
                     'losses take it), or use one of '
                     f'{", ".join(losses.SIGMOID_LOSSES if activation == "sigmoid" else losses.SOFTMAX_LOSSES)}')


def prepared_sources(config, workdir: str) -> tuple:
  """(train, val) SliceSources of the run's prepared data (prepared if new)."""
  def report(split, i, n, case_id):
    logging.info('preprocessing %s: case %d/%d (%s)', split, i, n, case_id)
  info = dataset.prepare(config.data, workdir, config.seed, progress=report)
  data_dir = os.path.join(workdir, 'data')
  train_source = pipeline.SliceSource(os.path.join(data_dir, 'train'))
  val_source = pipeline.SliceSource(os.path.join(data_dir, 'val'))
  if len(train_source) < config.train.batch_size:
    raise InputError(info['root'], f'{len(train_source)} training slices are fewer '
                     f'than one batch of {config.train.batch_size}')
  return train_source, val_source


def start_state(config, workdir: str, model, tx, init_key, image_shape,
                replicated, best_key: str) -> tuple:
  """(state, loop state, restored?): the newest checkpoint that restores, else
  a new state; the state replicated on the mesh.

  A resumed run restores into the state's shapes: no initialisation to
  compile and run (seconds on a CPU).
  """
  loop = LoopState()
  restored = None
  if checkpoints.any_saved(workdir):
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        state_lib.abstract_train_state(model, tx, image_shape))
    restored = checkpoints.restore_newest(workdir, abstract, config.model.name)
  if restored:
    state, loop_json, _ = restored
    loop = LoopState(**loop_json)
    if loop.best_value is None and loop.best_epoch >= 0 and best_key == 'val/loss':
      loop.best_value = loop.best_val_loss  # a checkpoint from before best_by
  else:
    state = state_lib.create_train_state(model, tx, init_key, image_shape,
                                         config.pretrained)
  return jax.device_put(state, replicated), loop, bool(restored)


def resumed_placement(loop: LoopState, where: str, where_setting: str) -> str:
  """Where augmentation runs after a resume ('host' or 'device').

  'auto' keeps the placement the run started with: the host and the device
  chain draw different streams, so switching would not resume it. An
  explicit setting wins, with a warning.
  """
  if loop.augment_where and loop.augment_where != where:
    if where_setting == 'auto':
      return loop.augment_where
    logging.warning('the run augmented on the %s; config.augment.where=%r '
                    'moves it to the %s, so the resumed augmentations differ '
                    'from an uninterrupted run', loop.augment_where,
                    where_setting, where)
  return where


@dataclasses.dataclass
class Trained:
  """A finished run: its best state on `mesh`, the eval step, its results.

  Attributes:
    state: the best checkpoint's TrainState, replicated on `mesh`.
    mesh: the device mesh the run trained on.
    eval_fn: the jitted `step.eval_step` (for per-slice metrics).
    results: best_epoch, epochs_run, stopped_early, best_val_loss, best_by,
      best_value, train_seconds, steps.
  """
  state: Any
  mesh: Any
  eval_fn: Callable
  results: dict


def train(config: ml_collections.ConfigDict, workdir: str) -> Trained | None:
  """Trains (or resumes) the run of `config` in `workdir`.

  Returns the best checkpoint and the run's results, or None when
  `train.halt_after_steps` stopped the run.
  """
  config_base.check_config(config)
  dataset.check_config(config.data)
  mesh = parallel.make_mesh(config.get('mesh'))
  parallel.check_batch_size(config.train.batch_size, mesh)
  parallel.check_batch_size(config.train.eval_batch_size, mesh,
                            'config.train.eval_batch_size')
  accum_steps = check_grad_accum(config.train, mesh)
  model = models.from_config(config)
  check_input_sizes(model, config)
  loss_fn = losses.build(config.loss)
  optim.check_config(config)
  activation = labels.activation(config.data.label_mode)
  logged = logged_metric_names(activation)
  monitor_key, monitor_mode = optim.monitor(config.schedule, logged)
  best_key, best_mode = optim.best_by(config.train, logged)
  check_loss_activation(config, activation)

  augment, where_setting = augment_device.from_config(config.augment)
  where = augment_device.placement(where_setting)

  train_source, val_source = prepared_sources(config, workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=1))

  rng = jax.random.key(config.seed)
  init_key, dropout_key = jax.random.split(rng)
  image_shape = train_input_shape(config, train_source)
  check_heads(model, image_shape, config.loss)
  steps_per_epoch = epoch_length(config, len(train_source))
  tx = optim.build_for_run(config, steps_per_epoch)
  replicated = parallel.replicated(mesh)
  state, loop, restored = start_state(config, workdir, model, tx, init_key,
                                      image_shape, replicated, best_key)
  if jax.process_index() == 0 and not (
      restored and os.path.exists(os.path.join(workdir, PARAMETER_TABLE))):
    write_parameter_table(state.params, workdir)
  logging.info('model %s: %s trainable parameters, input %s (layer table: '
               '%s)', config.model.name,
               f'{sum(x.size for x in jax.tree.leaves(state.params)):,}',
               image_shape, os.path.join(workdir, PARAMETER_TABLE))
  if restored:
    logging.info('resumed from step %d (epoch %d)', int(state.step), loop.epoch)
  latest = checkpoints.manager(workdir, checkpoints.LATEST)
  best = checkpoints.manager(workdir, checkpoints.BEST)
  if loop.best_epoch >= 0 and best.latest_step() is None:
    logging.warning('the best checkpoint (epoch %d) was set aside as damaged: '
                    'the next validation starts a new best', loop.best_epoch)
    loop.best_value, loop.best_epoch = None, -1
  where = resumed_placement(loop, where, where_setting)
  loop.augment_where = where
  logging.info('augmentation on the %s (config.augment.where=%r, backend %s)',
               where, where_setting, jax.default_backend())
  # Reduce-on-plateau ('plateau' only) and early stopping (None: off) watch
  # `monitor_key`; their state comes back with the loop's.
  plateau = optim.make_plateau(config.schedule, monitor_mode, loop.plateau)
  stopper = optim.make_early_stopping(config.schedule, monitor_mode,
                                      loop.early_stopping)

  loader = pipeline.train_loader(
      train_source, global_batch_size=config.train.batch_size,
      seed=config.seed, augment=augment if where == 'host' else None,
      worker_count=config.data.worker_count, patch_size=config.data.patch_size,
      foreground_fraction=config.data.foreground_fraction,
      label_mode=config.data.label_mode,
      read_ahead=loader_read_ahead(config, image_shape))
  iterator = iter(loader)
  if loop.data_iterator:
    iterator.set_state(json.loads(loop.data_iterator))

  p_train = jax.jit(functools.partial(
      step_lib.train_step, loss_fn=loss_fn, activation=activation,
      grad_accum_steps=accum_steps,
      augment=augment if where == 'device' else None), donate_argnums=0)
  p_eval = jax.jit(functools.partial(step_lib.eval_step, loss_fn=loss_fn,
                                     activation=activation))
  total_steps = steps_per_epoch * config.train.num_epochs
  writer = writers.MetricWriter(workdir, start_step=int(state.step))
  progress = Progress(total_steps, config.train.batch_size, int(state.step))
  halt_at = config.train.halt_after_steps
  every = config.train.checkpoint_every_steps

  step = int(state.step)
  t_start = time.time() - loop.train_seconds
  first_batch = None
  if loop.epoch < config.train.num_epochs and not loop.stopped_early:
    first_batch = parallel.to_global(next(iterator), mesh)
    p_train = compile_step(p_train, state, first_batch, dropout_key)
  while loop.epoch < config.train.num_epochs and not loop.stopped_early:
    epoch_metrics, partial = None, loop.epoch_metrics
    while step < (loop.epoch + 1) * steps_per_epoch:
      if first_batch is not None:
        batch, first_batch = first_batch, None
      else:
        batch = parallel.to_global(next(iterator), mesh)
      state, step_metrics = p_train(state, batch, dropout_key)
      if epoch_metrics is None and partial:  # resumed inside this epoch
        epoch_metrics = metrics_from_json(partial, step_metrics)
      epoch_metrics = (step_metrics if epoch_metrics is None
                       else epoch_metrics.merge(step_metrics))
      step += 1
      if step % config.train.log_every_steps == 0 or step == total_steps:
        loss = float(step_metrics.compute()['loss'])
        logging.info(progress.line(step, loss))
        writer.write_scalars(step, {'train/step_loss': loss})
      interrupted = halt_at and step >= halt_at
      if (every and step % every == 0) or interrupted:
        loop.data_iterator = json.dumps(iterator.get_state())
        loop.epoch_metrics = metrics_to_json(epoch_metrics)
        loop.train_seconds = time.time() - t_start
        save_checkpoint(latest, state, loop)
      if interrupted:
        logging.info('halting after step %d (train.halt_after_steps)', step)
        latest.wait_until_finished()
        writer.close()
        return None

    # End of an epoch: validate, schedule, checkpoint.
    loop.epoch += 1
    loop.epoch_metrics = []
    val = validation.slice_metrics(p_eval, state, val_source,
                                   config.train.eval_batch_size, mesh)
    lr = optim.get_learning_rate(state.opt_state)
    scalars = {f'train/{k}': v for k, v in (epoch_metrics.compute().items()
                                            if epoch_metrics else ())}
    scalars.update({f'val/{k}': v for k, v in val.items()})
    scalars['learning_rate'] = lr
    scalars['epoch'] = loop.epoch
    writer.write_scalars(step, scalars)
    logging.info('epoch %d: train loss %.4f dice %.4f | val loss %.4f dice %.4f | lr %.2e',
                 loop.epoch, scalars.get('train/loss', float('nan')),
                 scalars.get('train/dice', float('nan')), val['loss'], val['dice'], lr)
    monitored = scalars.get(monitor_key, float('nan'))
    if plateau is not None:
      new_lr = plateau.update(monitored, lr)
      if new_lr != lr:
        logging.info('reducing learning rate to %.2e', new_lr)
        state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, new_lr))
      loop.plateau = plateau.state()
    if stopper is not None:
      loop.stopped_early = stopper.update(monitored)
      loop.early_stopping = stopper.state()
    loop.data_iterator = json.dumps(iterator.get_state())
    loop.train_seconds = time.time() - t_start
    # An improving epoch (config.train.best_by) is written once, as the
    # best; resuming takes the newer of the latest and the best checkpoint.
    if _better(scalars.get(best_key, float('nan')), loop.best_value, best_mode):
      loop.best_value, loop.best_epoch = float(scalars[best_key]), loop.epoch
      loop.best_val_loss = val['loss']
      save_checkpoint(best, state, loop)
    else:
      save_checkpoint(latest, state, loop)
    if loop.stopped_early:
      logging.info('early stopping after epoch %d (best epoch %d)',
                   loop.epoch, loop.best_epoch)
  writer.close()
  if best.latest_step() is None:
    # The best was set aside as damaged and no epoch since improved on it.
    loop.best_epoch, loop.best_val_loss = loop.epoch, float('nan')
    save_checkpoint(best, state, loop)
  latest.wait_until_finished()
  best.wait_until_finished()

  # The best checkpoint is the model that is tested.
  state, best_loop = checkpoints.restore_best(workdir, state, config.model.name)
  state = jax.device_put(state, replicated)
  results = dict(best_epoch=best_loop['epoch'], epochs_run=loop.epoch,
                 stopped_early=loop.stopped_early,
                 best_val_loss=loop.best_val_loss,
                 best_by=config.train.best_by, best_value=loop.best_value,
                 train_seconds=loop.train_seconds, steps=step)
  return Trained(state=state, mesh=mesh, eval_fn=p_eval, results=results)
