"""The full set of config keys with their defaults (seed 002's values).

Every experiment config in `configs/` starts from `get_config()` here and
changes what its study changed. `check_config` rejects keys that are not
here (a typo such as `config.data.lable_mode`), naming the key and the
closest known one; `config.model` and `config.loss` are checked by their
registries, since their keys depend on the chosen model and loss.
"""

import difflib
import importlib.util
import json
import os

import ml_collections

from jaxseg.errors import InputError


def get_config():
  """The default configuration (seed 002's values), one section per stage.

  Each section's defaults and their meaning are in the `_<section>()` below;
  a config file changes what its experiment needs (`configs/`).
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = _data()
  config.augment = _augment()
  config.model = _model()
  config.loss = _loss()
  config.optimizer = _optimizer()
  config.pretrained = _pretrained()
  config.schedule = _schedule()
  config.train = _train()
  config.mesh = _mesh()
  config.inference = _inference()
  config.postprocess = _postprocess()
  return config


def _data() -> ml_collections.ConfigDict:
  """Where the cases are and how they become records (`jaxseg.data`:
  dataset, preprocess, pipeline, formats)."""
  data = ml_collections.ConfigDict()
  # A BraTS 2018-21 or 2023 folder of case folders, a datalist .json, or None
  # for the embedded synthetic set.
  data.root = ml_collections.config_dict.placeholder(str)
  data.modalities = ('flair', 't1', 't1ce', 't2')
  # 'binary' (whole tumour, 1 sigmoid channel), 'regions' (WT/TC/ET, 3 sigmoid
  # channels) or 'multiclass' (background, 1, 2, ET: 4-way softmax).
  data.label_mode = 'binary'
  data.image_size = 64          # slices are resized to this square
  # 2: the model sees axial slices; 3: whole volumes, the axial axis resized
  # to `depth` (records are (depth, size, size, C)), optionally trained on
  # random patches of `patch_size` (d, h, w).
  data.dims = 2
  data.depth = 64
  data.patch_size = ml_collections.config_dict.placeholder(tuple)
  # Share of training patches centred on a random tumour voxel (the rest are
  # drawn uniformly); nnU-Net uses 1/3. Only with `patch_size`.
  data.foreground_fraction = 0.33
  data.normalization = 'case'   # 'case' z-score or 'dataset' (train-split stats)
  # Background (tumour-free) brain slices kept per tumour slice; slices with
  # less than `min_brain_fraction` brain are dropped.
  data.background_ratio = 0.25
  data.min_brain_fraction = 0.05
  data.split = (0.7, 0.15, 0.15)  # train / validation / test, by case
  # k-fold cross-validation by case: folds >= 2 trains on every fold but
  # `fold` and validates on `fold` (0 .. folds - 1); the test share of
  # `split` (or a datalist's test list) is held out of all folds, and a
  # datalist's "fold" keys (MONAI) are used when every case has one.
  # `python -m jaxseg.crossval` runs every fold. 0: off (`split` decides).
  data.folds = 0
  data.fold = 0
  data.worker_count = 0           # Grain worker processes (0: in-process)
  data.cache_dir = ml_collections.config_dict.placeholder(str)
  # Reader options, per format (jaxseg/data/formats/). COCO exports (seed
  # 001): an RGB image counts as grey when at most `max_colour_fraction` of
  # its pixels have channels more than `grey_tolerance` levels apart (JPEG
  # leaves ~10; exports add small coloured marks); `tumour_categories`: the
  # category names drawn as tumour (None: all but background names such as
  # '0' / 'no tumor' and modality boxes such as 'T1' / 'FLAIR').
  data.formats = ml_collections.ConfigDict()
  data.formats.coco = ml_collections.ConfigDict(dict(
      grey_tolerance=16, max_colour_fraction=0.02,
      tumour_categories=ml_collections.config_dict.placeholder(tuple)))
  # The embedded synthetic set. It stands in for the study's 8,000 slices
  # (125 steps of 64 per epoch); its epochs are `steps_per_epoch` batches so
  # that the 40-epoch schedule runs in minutes on a CPU.
  data.synthetic = ml_collections.ConfigDict(
      dict(num_cases=32, shape=(96, 96, 64), seed=0, steps_per_epoch=4))
  return data


def _augment() -> ml_collections.ConfigDict:
  """The training augmentation chain (`jaxseg.data.augment`, `augment_device`)."""
  augment = ml_collections.ConfigDict()
  # Where the chain runs: 'host' (the loader's Grain workers, NumPy/SciPy),
  # 'device' (jitted inside the train step; the loader still cuts the 3D
  # patches) or 'auto' ('device' on GPU/TPU, 'host' on CPU, decided when the
  # run starts). See jaxseg/data/augment_device.py.
  augment.where = 'auto'
  augment.flip_prob = 0.25        # per axis (x and y)
  augment.cutout_prob = 0.4
  augment.cutout_max_patches = 6
  augment.cutout_max_area = 0.2   # fraction of the image per patch
  augment.noise_prob = 0.25
  augment.noise_mean = 0.05
  augment.noise_variance = 0.1
  # Spatial and intensity augmentation (off in seed 002; see
  # jaxseg/data/augment.py). Rotation: uniform in +-rotate_degrees about the
  # axial axis (2D) or about each axis (3D); scaling: one isotropic factor in
  # [1 - scale_range, 1 + scale_range]. Labels follow by nearest neighbour.
  augment.rotate_prob = 0.0
  augment.rotate_degrees = 15.0
  augment.scale_prob = 0.0
  augment.scale_range = 0.05
  # Per channel: x * U(1 - intensity_scale, 1 + intensity_scale)
  # + U(-intensity_shift, intensity_shift).
  augment.intensity_prob = 0.0
  augment.intensity_scale = 0.1
  augment.intensity_shift = 0.1
  # Per channel: min-max to [0, 1], ** gamma, back; gamma uniform in the range.
  augment.gamma_prob = 0.0
  augment.gamma_range = (0.7, 1.5)
  # Elastic deformation (Simard et al. 2003): a displacement per voxel and
  # axis drawn U(-1, 1), smoothed by a Gaussian of elastic_sigma voxels and
  # scaled by elastic_alpha voxels; resampled with the rotation/scaling.
  augment.elastic_prob = 0.0
  augment.elastic_alpha = 30.0
  augment.elastic_sigma = 4.0
  # Gaussian blur of the image channels, sigma uniform in blur_sigma (voxels).
  augment.blur_prob = 0.0
  augment.blur_sigma = (0.5, 1.5)
  return augment


def _model() -> ml_collections.ConfigDict:
  """The network: `name` picks a registered family (`jaxseg.models`); every
  other key is a field of that module."""
  model = ml_collections.ConfigDict()
  model.name = 'resunet'   # other keys: the fields of the model
  return model


def _loss() -> ml_collections.ConfigDict:
  """The loss: `name` picks a registered loss (`jaxseg.losses`); every other
  key is one of its parameters."""
  loss = ml_collections.ConfigDict()
  loss.name = 'focal_dice'  # other keys: the parameters of the loss
  return loss


def _optimizer() -> ml_collections.ConfigDict:
  """The update rule, as PyTorch's (`jaxseg.training.optim`)."""
  optimizer = ml_collections.ConfigDict()
  # Update rules as PyTorch's (jaxseg/training/optim.py): 'adam' (torch.optim.Adam),
  # 'adamw' (torch.optim.AdamW) or 'sgd' (torch.optim.SGD).
  optimizer.name = 'adam'
  optimizer.learning_rate = 0.01
  optimizer.weight_decay = 0.0
  # 'l2': wd * p added to the gradient (torch SGD/Adam weight_decay);
  # 'decoupled': p -= lr * wd * p beside the step (AdamW). None: 'decoupled'
  # for 'adamw', 'l2' for the others, as PyTorch.
  optimizer.weight_decay_mode = ml_collections.config_dict.placeholder(str)
  optimizer.momentum = 0.9        # 'sgd' only
  optimizer.nesterov = False      # 'sgd' only
  optimizer.b1 = 0.9              # 'adam', 'adamw'
  optimizer.b2 = 0.999
  optimizer.eps = 1e-8
  # Clip the gradient to this global norm (torch clip_grad_norm_); None: off.
  optimizer.clip_norm = ml_collections.config_dict.placeholder(float)
  # Top-level parameter subtrees that are not trained, e.g. ('backbone',).
  optimizer.frozen = ()
  return optimizer


def _pretrained() -> ml_collections.ConfigDict:
  """Weights to start from (before any resume): a checkpoint in a known
  format, loaded into the parameter subtree `into` (`jaxseg.models.pretrained`)."""
  pretrained = ml_collections.ConfigDict()
  pretrained.path = ml_collections.config_dict.placeholder(str)
  pretrained.format = 'medicalnet'
  pretrained.into = 'backbone'
  return pretrained


def _schedule() -> ml_collections.ConfigDict:
  """The learning rate, reduce-on-plateau and early stopping
  (`jaxseg.training.optim`)."""
  schedule = ml_collections.ConfigDict()
  # The learning rate: 'constant', 'plateau' (Keras ReduceLROnPlateau on
  # `monitor`), 'step' (torch StepLR, per epoch), 'cosine' (linear warm-up
  # then cosine, per step) or 'poly' (nnU-Net, per epoch). See
  # optim.learning_rate_schedule.
  schedule.name = 'plateau'
  # The logged metric that plateau and early stopping watch: train_<m> or
  # val_<m> (loss, dice, iou, ...); mode None: 'max' for dice, iou,
  # precision, recall, f1, accuracy, specificity, else 'min'.
  schedule.monitor = 'val_loss'
  schedule.monitor_mode = ml_collections.config_dict.placeholder(str)
  schedule.plateau_factor = 0.5
  schedule.plateau_patience = 2
  schedule.plateau_min_delta = 1e-4
  # Plateau's floor and the end of the cosine schedule.
  schedule.min_learning_rate = 0.0
  schedule.step_size = 30         # 'step': epochs between reductions
  schedule.step_gamma = 0.1       # 'step': the factor
  schedule.warmup_epochs = 0.0    # 'cosine': linear warm-up (may be fractional)
  schedule.warmup_start_factor = 0.0  # 'cosine': first rate / learning_rate
  schedule.poly_power = 0.9       # 'poly'
  schedule.poly_per_step = False  # 'poly': per step instead of per epoch
  # Epochs without improvement of `monitor` before stopping; 0 (or None): off.
  # Configs say 0, so that a flag can turn it back on.
  schedule.early_stopping_patience = 5
  schedule.early_stopping_min_delta = 0.0
  return schedule


def _train() -> ml_collections.ConfigDict:
  """The training loop (`jaxseg.training.loop`): batch, epochs, checkpoints,
  precision."""
  train = ml_collections.ConfigDict()
  train.batch_size = 64           # global batch, split over devices
  train.num_epochs = 40
  # Batches per epoch; None: one pass over the training records.
  train.steps_per_epoch = ml_collections.config_dict.placeholder(int)
  train.eval_batch_size = 64
  train.log_every_steps = 10
  train.checkpoint_every_steps = 0  # 0: at the end of every epoch only
  # The validation metric whose best epoch is kept as the best checkpoint
  # (the model that is evaluated and exported): val_<m> as for
  # schedule.monitor; 'max' for dice and the other overlap scores, else 'min'.
  train.best_by = 'val_loss'
  # Stop (as if pre-empted) after this many steps; rerunning resumes. 0: never.
  train.halt_after_steps = 0
  # 'float32', or 'bfloat16': the forward and backward pass in bf16 on
  # float32 master weights (the loss and the optimiser stay float32).
  train.precision = 'float32'
  # Split each global batch into this many micro-batches, run one after the
  # other, and apply their mean gradient once: a global batch larger than
  # memory allows. Batch norm then sees micro-batches (batch / steps).
  train.grad_accum_steps = 1
  return train


def _mesh() -> ml_collections.ConfigDict:
  """The device mesh (`jaxseg.parallel`): axes ('data', 'spatial') over every
  device of every process. Batches are split over 'data'; 3D inputs also
  split their depth axis over 'spatial' (XLA exchanges the halos), for
  volumes too large for one device. data=-1: all devices left."""
  mesh = ml_collections.ConfigDict()
  mesh.data = -1
  mesh.spatial = 1
  return mesh


def _inference() -> ml_collections.ConfigDict:
  """Whole-volume inference (evaluation and --mode=predict;
  `jaxseg.inference`)."""
  inference = ml_collections.ConfigDict()
  # 3D models with data.patch_size: sliding windows of that size overlapping
  # by this fraction, weighted by a Gaussian (sigma = sigma_scale * window),
  # `window_batch_size` windows per device call.
  inference.overlap = 0.5
  inference.gaussian_sigma_scale = 0.125
  inference.window_batch_size = 2
  # Test-time mirroring: the mean over flips of every subset of these model
  # axes (2D: 0 = rows, 1 = columns; 3D: 0 = axial, 1, 2). (): off.
  inference.mirror_axes = ()
  # Threshold of the sigmoid label modes.
  inference.threshold = 0.5
  # Monte-Carlo dropout (seed 002 section 2.3): samples per case (0: off),
  # drawn `mc_chunk` at a time in one compiled vmap (0: all at once).
  inference.mc_samples = 0
  inference.mc_chunk = 0
  return inference


def _postprocess() -> ml_collections.ConfigDict:
  """Post-processing of predicted BraTS label maps
  (`jaxseg.scoring.postprocess`), all off by default."""
  postprocess = ml_collections.ConfigDict()
  # Remove each region's 26-connected components of fewer voxels than these
  # (0: off): a WT component becomes background, a TC one oedema, an ET one
  # necrosis.
  postprocess.min_component_voxels = ml_collections.ConfigDict(
      dict(WT=0, TC=0, ET=0))
  # All ET -> necrosis when a case has fewer ET voxels than this (0: off).
  postprocess.et_to_ncr_below = 0
  # Choose the values above on the validation cases by mean lesion-wise
  # Dice (postprocess.choose_thresholds) from these candidates (0 always
  # is one).
  postprocess.choose_on_validation = False
  postprocess.candidates = ml_collections.ConfigDict(dict(
      WT=(0, 10, 25, 50, 100, 250), TC=(0, 10, 25, 50, 100, 250),
      ET=(0, 10, 25, 50, 100, 250),
      et_to_ncr_below=(0, 50, 100, 200, 300, 500)))
  return postprocess


def sample_data(name: str) -> str:
  """`data.root` of a sample data set: '$JAXSEG_DATA/<name>'.

  Resolved when the run starts (`dataset.resolve_root`), so a config names
  no machine's path: set JAXSEG_DATA to the folder that holds the set, or
  give `--config.data.root=/path/to/<name>`.
  """
  return f'${{JAXSEG_DATA}}/{name}'


def fixed_schedule(config: ml_collections.ConfigDict, flip_prob: float) -> None:
  """A study that trained every epoch at one learning rate, with flips only.

  Sets `schedule.name='constant'`, early stopping off, flips with
  `flip_prob` per axis, no cut-out and no noise (seed 002's extras).
  """
  config.schedule.name = 'constant'
  config.schedule.early_stopping_patience = 0  # off
  config.augment.flip_prob = flip_prob
  config.augment.cutout_prob = 0.0
  config.augment.noise_prob = 0.0


def load_module(path: str):
  """Imports a Python file (a config or sweep file; they are not a package)."""
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f'jaxseg_file_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """The config of a file: `get_config()` of a .py file, or a run's config.json.

  `path.py:arg` calls `get_config(arg)` (ml_collections' convention).
  """
  if str(path).lower().endswith('.json'):
    return config_from_json(path)
  file, _, arg = str(path).partition(':') if not os.path.isfile(path) else (path, '', '')
  module = load_module(file)
  return module.get_config(arg) if arg else module.get_config()


def _tuples(value):
  """JSON lists -> tuples (configs hold sequences as tuples), recursively."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def _merge(target: ml_collections.ConfigDict, values: dict) -> None:
  """Sets `values` into `target`, keeping its fields' types (placeholders)."""
  for key, value in values.items():
    if key in target and isinstance(target[key], ml_collections.ConfigDict) \
        and isinstance(value, dict):
      _merge(target[key], value)
    elif key in target and value is None:
      target[key] = None            # a typed placeholder stays typed
    else:
      target[key] = value


def config_from_json(path: str) -> ml_collections.ConfigDict:
  """A config from the `config.json` a run wrote (`--config=<workdir>/config.json`).

  The defaults of `get_config()` are the base, so keys the file lacks take
  their defaults and None values keep their types for `--config.*`
  overrides; `model` and `loss` are taken as they are.
  """
  try:
    with open(path, encoding='utf-8') as f:
      values = json.load(f)
  except FileNotFoundError:
    raise InputError(path, 'the config file does not exist') from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise InputError(path, f'cannot read the config: {e}') from None
  if not isinstance(values, dict):
    raise InputError(path, 'a config.json must hold a JSON object')
  values = _tuples(values)
  # Runs before the oneDNN convolutions chose kernels per model
  # (model.kernels = 'auto' | 'native' | 'cpu'); the platform decides now.
  if isinstance(values.get('model'), dict):
    values['model'].pop('kernels', None)
  config = get_config()
  for section in FREE_SECTIONS:
    if isinstance(values.get(section), dict):
      config[section] = ml_collections.ConfigDict(values.pop(section))
  _merge(config, values)
  return config


def sibling_config(this_file: str, name: str) -> ml_collections.ConfigDict:
  """`get_config()` of the config file `name`.py beside `this_file`.

  Lets one study config start from another:
  `config = config_base.sibling_config(__file__, 'lgg_unet')`.
  """
  return load_config_file(
      os.path.join(os.path.dirname(os.path.abspath(this_file)), f'{name}.py'))


FREE_SECTIONS = ('model', 'loss')


def check_config(config, reference=None, prefix='config') -> None:
  """Raises InputError naming the first key of `config` that `reference` lacks."""
  reference = get_config() if reference is None else reference
  for key, value in config.items():
    where = f'{prefix}.{key}'
    if key not in reference:
      close = difflib.get_close_matches(key, list(reference.keys()), n=1)
      hint = f"; did you mean '{close[0]}'?" if close else ''
      raise InputError(where, f'unknown config key{hint}')
    if prefix == 'config' and key in FREE_SECTIONS:
      continue
    if isinstance(value, ml_collections.ConfigDict) and isinstance(
        reference[key], ml_collections.ConfigDict):
      check_config(value, reference[key], where)
