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


def get_config():
  """Returns the default configuration (seed 002's values)."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  # A BraTS 2018-21 or 2023 folder of case folders, a datalist .json, or None
  # for the embedded synthetic set.
  config.data.root = ml_collections.config_dict.placeholder(str)
  config.data.modalities = ('flair', 't1', 't1ce', 't2')
  # 'binary' (whole tumour, 1 sigmoid channel), 'regions' (WT/TC/ET, 3 sigmoid
  # channels) or 'multiclass' (background, 1, 2, ET: 4-way softmax).
  config.data.label_mode = 'binary'
  config.data.image_size = 64          # slices are resized to this square
  # 2: the model sees axial slices; 3: whole volumes, the axial axis resized
  # to `depth` (records are (depth, size, size, C)), optionally trained on
  # random patches of `patch_size` (d, h, w).
  config.data.dims = 2
  config.data.depth = 64
  config.data.patch_size = ml_collections.config_dict.placeholder(tuple)
  # Share of training patches centred on a random tumour voxel (the rest are
  # drawn uniformly); nnU-Net uses 1/3. Only with `patch_size`.
  config.data.foreground_fraction = 0.33
  config.data.normalization = 'case'   # 'case' z-score or 'dataset' (train-split stats)
  # Background (tumour-free) brain slices kept per tumour slice; slices with
  # less than `min_brain_fraction` brain are dropped.
  config.data.background_ratio = 0.25
  config.data.min_brain_fraction = 0.05
  config.data.split = (0.7, 0.15, 0.15)  # train / validation / test, by case
  # k-fold cross-validation by case: folds >= 2 trains on every fold but
  # `fold` and validates on `fold` (0 .. folds - 1); the test share of
  # `split` (or a datalist's test list) is held out of all folds, and a
  # datalist's "fold" keys (MONAI) are used when every case has one.
  # `python -m jaxseg.crossval` runs every fold. 0: off (`split` decides).
  config.data.folds = 0
  config.data.fold = 0
  config.data.worker_count = 0           # Grain worker processes (0: in-process)
  config.data.cache_dir = ml_collections.config_dict.placeholder(str)
  # Reader options, per format (jaxseg/data/formats/). COCO exports (seed
  # 001): an RGB image counts as grey when at most `max_colour_fraction` of
  # its pixels have channels more than `grey_tolerance` levels apart (JPEG
  # leaves ~10; exports add small coloured marks); `tumour_categories`: the
  # category names drawn as tumour (None: all but background names such as
  # '0' / 'no tumor' and modality boxes such as 'T1' / 'FLAIR').
  config.data.formats = ml_collections.ConfigDict()
  config.data.formats.coco = ml_collections.ConfigDict(dict(
      grey_tolerance=16, max_colour_fraction=0.02,
      tumour_categories=ml_collections.config_dict.placeholder(tuple)))
  # The embedded synthetic set. It stands in for the study's 8,000 slices
  # (125 steps of 64 per epoch); its epochs are `steps_per_epoch` batches so
  # that the 40-epoch schedule runs in minutes on a CPU.
  config.data.synthetic = ml_collections.ConfigDict(
      dict(num_cases=32, shape=(96, 96, 64), seed=0, steps_per_epoch=4))

  config.augment = ml_collections.ConfigDict()
  # Where the chain runs: 'host' (the loader's Grain workers, NumPy/SciPy),
  # 'device' (jitted inside the train step; the loader still cuts the 3D
  # patches) or 'auto' ('device' on GPU/TPU, 'host' on CPU, decided when the
  # run starts). See jaxseg/data/augment_device.py.
  config.augment.where = 'auto'
  config.augment.flip_prob = 0.25        # per axis (x and y)
  config.augment.cutout_prob = 0.4
  config.augment.cutout_max_patches = 6
  config.augment.cutout_max_area = 0.2   # fraction of the image per patch
  config.augment.noise_prob = 0.25
  config.augment.noise_mean = 0.05
  config.augment.noise_variance = 0.1
  # Spatial and intensity augmentation (off in seed 002; see
  # jaxseg/data/augment.py). Rotation: uniform in +-rotate_degrees about the
  # axial axis (2D) or about each axis (3D); scaling: one isotropic factor in
  # [1 - scale_range, 1 + scale_range]. Labels follow by nearest neighbour.
  config.augment.rotate_prob = 0.0
  config.augment.rotate_degrees = 15.0
  config.augment.scale_prob = 0.0
  config.augment.scale_range = 0.05
  # Per channel: x * U(1 - intensity_scale, 1 + intensity_scale)
  # + U(-intensity_shift, intensity_shift).
  config.augment.intensity_prob = 0.0
  config.augment.intensity_scale = 0.1
  config.augment.intensity_shift = 0.1
  # Per channel: min-max to [0, 1], ** gamma, back; gamma uniform in the range.
  config.augment.gamma_prob = 0.0
  config.augment.gamma_range = (0.7, 1.5)
  # Elastic deformation (Simard et al. 2003): a displacement per voxel and
  # axis drawn U(-1, 1), smoothed by a Gaussian of elastic_sigma voxels and
  # scaled by elastic_alpha voxels; resampled with the rotation/scaling.
  config.augment.elastic_prob = 0.0
  config.augment.elastic_alpha = 30.0
  config.augment.elastic_sigma = 4.0
  # Gaussian blur of the image channels, sigma uniform in blur_sigma (voxels).
  config.augment.blur_prob = 0.0
  config.augment.blur_sigma = (0.5, 1.5)

  config.model = ml_collections.ConfigDict()
  config.model.name = 'resunet'   # other keys: the fields of the model

  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'focal_dice'  # other keys: the parameters of the loss

  config.optimizer = ml_collections.ConfigDict()
  # Update rules as PyTorch's (jaxseg/optim.py): 'adam' (torch.optim.Adam),
  # 'adamw' (torch.optim.AdamW) or 'sgd' (torch.optim.SGD).
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 0.01
  config.optimizer.weight_decay = 0.0
  # 'l2': wd * p added to the gradient (torch SGD/Adam weight_decay);
  # 'decoupled': p -= lr * wd * p beside the step (AdamW). None: 'decoupled'
  # for 'adamw', 'l2' for the others, as PyTorch.
  config.optimizer.weight_decay_mode = ml_collections.config_dict.placeholder(str)
  config.optimizer.momentum = 0.9        # 'sgd' only
  config.optimizer.nesterov = False      # 'sgd' only
  config.optimizer.b1 = 0.9              # 'adam', 'adamw'
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  # Clip the gradient to this global norm (torch clip_grad_norm_); None: off.
  config.optimizer.clip_norm = ml_collections.config_dict.placeholder(float)
  # Top-level parameter subtrees that are not trained, e.g. ('backbone',).
  config.optimizer.frozen = ()

  # Weights to start from (before any resume): a checkpoint in a known
  # format, loaded into the parameter subtree `into`.
  config.pretrained = ml_collections.ConfigDict()
  config.pretrained.path = ml_collections.config_dict.placeholder(str)
  config.pretrained.format = 'medicalnet'
  config.pretrained.into = 'backbone'

  config.schedule = ml_collections.ConfigDict()
  # The learning rate: 'constant', 'plateau' (Keras ReduceLROnPlateau on
  # `monitor`), 'step' (torch StepLR, per epoch), 'cosine' (linear warm-up
  # then cosine, per step) or 'poly' (nnU-Net, per epoch). See
  # optim.learning_rate_schedule.
  config.schedule.name = 'plateau'
  # The logged metric that plateau and early stopping watch: train_<m> or
  # val_<m> (loss, dice, iou, ...); mode None: 'max' for dice, iou,
  # precision, recall, f1, accuracy, specificity, else 'min'.
  config.schedule.monitor = 'val_loss'
  config.schedule.monitor_mode = ml_collections.config_dict.placeholder(str)
  config.schedule.plateau_factor = 0.5
  config.schedule.plateau_patience = 2
  config.schedule.plateau_min_delta = 1e-4
  # Plateau's floor and the end of the cosine schedule.
  config.schedule.min_learning_rate = 0.0
  config.schedule.step_size = 30         # 'step': epochs between reductions
  config.schedule.step_gamma = 0.1       # 'step': the factor
  config.schedule.warmup_epochs = 0.0    # 'cosine': linear warm-up (may be fractional)
  config.schedule.warmup_start_factor = 0.0  # 'cosine': first rate / learning_rate
  config.schedule.poly_power = 0.9       # 'poly'
  config.schedule.poly_per_step = False  # 'poly': per step instead of per epoch
  # Epochs without improvement of `monitor` before stopping; 0 (or None): off.
  # Configs say 0, so that a flag can turn it back on.
  config.schedule.early_stopping_patience = 5
  config.schedule.early_stopping_min_delta = 0.0

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64           # global batch, split over devices
  config.train.num_epochs = 40
  # Batches per epoch; None: one pass over the training records.
  config.train.steps_per_epoch = ml_collections.config_dict.placeholder(int)
  config.train.eval_batch_size = 64
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 0  # 0: at the end of every epoch only
  # The validation metric whose best epoch is kept as the best checkpoint
  # (the model that is evaluated and exported): val_<m> as for
  # schedule.monitor; 'max' for dice and the other overlap scores, else 'min'.
  config.train.best_by = 'val_loss'
  # Stop (as if pre-empted) after this many steps; rerunning resumes. 0: never.
  config.train.halt_after_steps = 0
  # 'float32', or 'bfloat16': the forward and backward pass in bf16 on
  # float32 master weights (the loss and the optimiser stay float32).
  config.train.precision = 'float32'
  # Split each global batch into this many micro-batches, run one after the
  # other, and apply their mean gradient once: a global batch larger than
  # memory allows. Batch norm then sees micro-batches (batch / steps).
  config.train.grad_accum_steps = 1

  # The device mesh (jaxseg/parallel.py): axes ('data', 'spatial') over every
  # device of every process. Batches are split over 'data'; 3D inputs also
  # split their depth axis over 'spatial' (XLA exchanges the halos), for
  # volumes too large for one device. data=-1: all devices left.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.spatial = 1

  # Whole-volume inference (evaluation and --mode=predict), see
  # jaxseg/inference.py.
  config.inference = ml_collections.ConfigDict()
  # 3D models with data.patch_size: sliding windows of that size overlapping
  # by this fraction, weighted by a Gaussian (sigma = sigma_scale * window),
  # `window_batch_size` windows per device call.
  config.inference.overlap = 0.5
  config.inference.gaussian_sigma_scale = 0.125
  config.inference.window_batch_size = 2
  # Test-time mirroring: the mean over flips of every subset of these model
  # axes (2D: 0 = rows, 1 = columns; 3D: 0 = axial, 1, 2). (): off.
  config.inference.mirror_axes = ()
  # Threshold of the sigmoid label modes.
  config.inference.threshold = 0.5
  # Monte-Carlo dropout (seed 002 section 2.3): samples per case (0: off),
  # drawn `mc_chunk` at a time in one compiled vmap (0: all at once).
  config.inference.mc_samples = 0
  config.inference.mc_chunk = 0

  # Post-processing of predicted BraTS label maps (jaxseg/postprocess.py,
  # postprocess.apply), all off by default. Remove each region's
  # 26-connected components of fewer voxels than these (0: off): a WT
  # component becomes background, a TC one oedema, an ET one necrosis.
  config.postprocess = ml_collections.ConfigDict()
  config.postprocess.min_component_voxels = ml_collections.ConfigDict(
      dict(WT=0, TC=0, ET=0))
  # All ET -> necrosis when a case has fewer ET voxels than this (0: off).
  config.postprocess.et_to_ncr_below = 0
  # Choose the values above on the validation cases by mean lesion-wise
  # Dice (postprocess.choose_thresholds) from these candidates (0 always
  # is one).
  config.postprocess.choose_on_validation = False
  config.postprocess.candidates = ml_collections.ConfigDict(dict(
      WT=(0, 10, 25, 50, 100, 250), TC=(0, 10, 25, 50, 100, 250),
      ET=(0, 10, 25, 50, 100, 250),
      et_to_ncr_below=(0, 50, 100, 200, 300, 500)))
  return config


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
  from jaxseg.errors import InputError
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
  from jaxseg.errors import InputError
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
