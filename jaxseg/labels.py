"""Label schemes: the one module that knows what a label value means.

Every label question is answered here, in the spirit of nnU-Net's
LabelManager: which values a label map may hold, their names, the BraTS
evaluation regions, the training target of each label mode, hard labels
from a model's probabilities, the output channels, activation and number of
outputs. Other modules receive a `LabelScheme` (a case's `Case.scheme`) and a
label mode; none of them spells a label value.

Conventions (after a reader's on-disk mapping, `Case.label_map`):

  BRATS    0 background, 1 necrotic / non-enhancing core (NCR), 2 oedema
           (ED), 4 enhancing tumour (ET): BraTS 2017-2021, and the
           Decathlon's Task01 and BraTS 2015 once mapped.
  BRATS23  the same with ET = 3: BraTS 2023 on.
  BINARY   0 background, 1 tumour (Kaggle LGG masks, COCO annotations).

Regions (BraTS): WT = {NCR, ED, ET}, TC = {NCR, ET}, ET = {ET}; values a
scheme allows beyond these belong to no region.

Label modes (`config.data.label_mode`), for a label map (...,):
  'binary'      (..., 1) whole tumour, sigmoid;
  'regions'     (..., 3) WT, TC, ET, sigmoid (BraTS' own training recipe);
  'multiclass'  (..., 4) one-hot of background, NCR, ED, ET, softmax.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxseg.errors import InputError

LABEL_MODES = ('binary', 'regions', 'multiclass')
REGION_NAMES = ('WT', 'TC', 'ET')
_NUM_OUTPUTS = {'binary': 1, 'regions': 3, 'multiclass': 4}
_CHANNELS = {'binary': ['WT'], 'regions': list(REGION_NAMES),
             'multiclass': ['background', 'NCR', 'ED', 'ET']}
# Names of the classes in overlays and class tables.
_CLASS_NAMES = {0: 'BG', 1: 'NCR', 2: 'ED'}
_BINARY_NAMES = {0: 'BG', 1: 'tumour'}


def check_mode(label_mode: str) -> str:
  """`label_mode` itself, or ValueError naming the known modes."""
  if label_mode not in LABEL_MODES:
    raise ValueError(f'unknown label_mode {label_mode!r}; known: {LABEL_MODES}')
  return label_mode


def num_outputs(label_mode: str) -> int:
  """Output channels of the model for a label mode."""
  return _NUM_OUTPUTS[check_mode(label_mode)]


def activation(label_mode: str) -> str:
  """The output activation of a label mode: softmax for classes, else sigmoid."""
  return 'softmax' if check_mode(label_mode) == 'multiclass' else 'sigmoid'


def output_channels(label_mode: str) -> list[str]:
  """The name of each output channel of a model trained in `label_mode`."""
  return list(_CHANNELS[check_mode(label_mode)])


def scored_regions(label_mode: str) -> tuple[str, ...]:
  """The regions a prediction of `label_mode` is scored on."""
  return ('WT',) if check_mode(label_mode) == 'binary' else REGION_NAMES


def _xp(x):
  """numpy for numpy input, jax.numpy for jax arrays."""
  if isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, (list, tuple)):
    return np
  import jax.numpy as jnp    # only reached for jax arrays: jax is loaded
  return jnp


@dataclasses.dataclass(frozen=True)
class LabelScheme:
  """The label values of a dataset and what they mean.

  Attributes:
    values: the values a label map may hold, background 0 first.
    enhancing: the enhancing-tumour value (4 for BraTS 2017-21, 3 from 2023
      on); None for binary masks.
  """
  values: tuple[int, ...]
  enhancing: int | None = None

  @property
  def binary(self) -> bool:
    """True for 0/1 tumour masks without BraTS sub-regions."""
    return self.enhancing is None

  @property
  def name(self) -> str:
    """'binary', 'brats' (ET 4) or 'brats23' (ET 3)."""
    if self.binary:
      return 'binary'
    return 'brats23' if self.enhancing == 3 else 'brats'

  @property
  def class_names(self) -> dict[int, str]:
    """{value: short name} of every value, for legends and class tables."""
    if self.binary:
      return {v: _BINARY_NAMES.get(v, str(v)) for v in self.values}
    names = {**_CLASS_NAMES, self.enhancing: 'ET'}
    return {v: names.get(v, str(v)) for v in self.values}

  def leaving(self, region: str) -> int:
    """The value a voxel takes when it leaves `region` but stays in the outer
    ones (WT -> background 0, TC -> oedema 2, ET -> necrosis 1), as label
    maps rebuilt from nested region outputs have it."""
    return {'WT': 0, 'TC': 2, 'ET': 1}[region]

  def check_trainable(self, label_mode: str) -> None:
    """ValueError when this scheme cannot give `label_mode`'s targets."""
    if check_mode(label_mode) != 'binary' and self.binary:
      raise ValueError(f"label_mode '{label_mode}' needs BraTS sub-region "
                       'labels, but this dataset has binary masks only')

  # ------------------------------------------------------------ regions

  def region_masks(self, label, regions=REGION_NAMES) -> dict[str, np.ndarray]:
    """{region: bool mask} of a label map (numpy or jax, (...,)), for each
    of `regions` the scheme has (binary masks have one, WT = label > 0)."""
    xp = _xp(label)
    label = xp.asarray(label)
    if self.binary:
      masks = {'WT': label > 0}
    else:
      ncr, enh = label == 1, label == self.enhancing
      masks = {'WT': ncr | (label == 2) | enh, 'TC': ncr | enh, 'ET': enh}
    unknown = [r for r in regions if r not in REGION_NAMES]
    if unknown:
      raise ValueError(f'unknown regions {unknown}; known: {REGION_NAMES}')
    return {r: masks[r] for r in regions if r in masks}

  def regions(self, label):
    """bool (..., 3) WT, TC, ET of a BraTS label map; numpy or jax in and out."""
    masks = self.region_masks(label)
    return _xp(label).stack([masks[r] for r in REGION_NAMES], axis=-1)

  # ------------------------------------------------- targets and labels

  def targets(self, label: np.ndarray, label_mode: str) -> np.ndarray:
    """float32 (..., K) 0/1 training target of an integer label map (...,)."""
    self.check_trainable(label_mode)
    if label_mode == 'binary':
      return (label > 0)[..., None].astype(np.float32)
    if label_mode == 'regions':
      return self.regions(label).astype(np.float32)
    classes = np.select([label == 1, label == 2, label == self.enhancing],
                        [1, 2, 3], 0)
    return np.eye(4, dtype=np.float32)[classes]

  def from_targets(self, pred: np.ndarray, label_mode: str) -> np.ndarray:
    """uint8 label map (...,) of hard predictions; inverse of `targets`.

    Args:
      pred: bool (..., K) for 'binary'/'regions' (thresholded sigmoid), or int
        class indices (...,) for 'multiclass'.
    """
    if check_mode(label_mode) == 'binary':
      return pred[..., 0].astype(np.uint8)
    et = 1 if self.binary else self.enhancing
    if label_mode == 'regions':
      wt, tc, en = pred[..., 0], pred[..., 1], pred[..., 2]
      # Nested regions, as BraTS defines them: ET inside TC inside WT.
      return np.select([en & tc & wt, tc & wt, wt], [et, 1, 2], 0).astype(np.uint8)
    return np.select([pred == 1, pred == 2, pred == 3], [1, 2, et], 0).astype(np.uint8)

  def from_probabilities(self, probs: np.ndarray, label_mode: str,
                         threshold: float = 0.5) -> np.ndarray:
    """uint8 label map (...,) from probabilities (..., K): argmax or threshold."""
    if check_mode(label_mode) == 'multiclass':
      return self.from_targets(probs.argmax(-1), label_mode)
    return self.from_targets(probs > threshold, label_mode)


def class_names(*schemes: LabelScheme) -> dict[int, str]:
  """{value: name} over the values of several schemes (a split's cases).

  A binary mask's names only where every scheme is binary; no schemes: the
  BraTS 2017-21 and 2023 names together.
  """
  schemes = schemes or (BRATS, BRATS23)
  named = [s for s in schemes if not s.binary] or schemes
  names = {}
  for scheme in named:
    names.update(scheme.class_names)
  return names


def region_probabilities(probs: np.ndarray, label_mode: str,
                         regions) -> dict[str, np.ndarray]:
  """{region: probability (...,)} of each of `regions` from a model's output.

  Args:
    probs: (..., K) sigmoid outputs ('binary', 'regions') or softmax class
      probabilities over (background, NCR, ED, ET) ('multiclass': WT = 1 -
      p_background, TC = p_NCR + p_ET, ET = p_ET).
  """
  if check_mode(label_mode) == 'binary':
    return {'WT': probs[..., 0]}
  if label_mode == 'regions':
    return {name: probs[..., i] for i, name in enumerate(REGION_NAMES)
            if name in regions}
  sums = {'WT': 1.0 - probs[..., 0], 'TC': probs[..., 1] + probs[..., 3],
          'ET': probs[..., 3]}
  return {name: sums[name] for name in regions}


BRATS = LabelScheme((0, 1, 2, 4), enhancing=4)
BRATS23 = LabelScheme((0, 1, 2, 3), enhancing=3)
BINARY = LabelScheme((0, 1))
SCHEMES = {'brats': BRATS, 'brats23': BRATS23, 'binary': BINARY}


def by_name(name: str) -> LabelScheme:
  """The scheme called `name` ('brats', 'brats23', 'binary'); ValueError else."""
  if name not in SCHEMES:
    raise ValueError(f"unknown label convention {name!r}; known: "
                     f"{', '.join(SCHEMES)}")
  return SCHEMES[name]


# ------------------------------------------- a datalist's "labels" names

# Words in a datalist's label names -> the BraTS 2017+ value of that region.
_LABEL_WORDS = (
    (('background', 'healthy', 'normal'), 0),
    (('non-enhancing', 'non enhancing', 'nonenhancing', 'necro', 'ncr', 'net',
      'core'), 1),
    (('edema', 'oedema', 'ed', 'peritumoral'), 2),
    (('enhancing', 'et'), 4),
)


def _brats_value(name: str) -> int | None:
  """'non-enhancing tumor' -> 1, 'edema' -> 2, 'enhancing tumour' -> 4."""
  name = str(name).strip().lower()
  words = name.replace('/', ' ').replace('_', ' ').replace('-', ' ').split()
  for keys, value in _LABEL_WORDS:
    for key in keys:
      if (' ' in key or '-' in key) and key in name:
        return value
      if key in words or (len(key) > 3 and any(w.startswith(key) for w in words)):
        return value
  return None


def from_names(labels: Any, where: str
               ) -> tuple[LabelScheme, tuple[tuple[int, int], ...]]:
  """(scheme, label_map) from a datalist's "labels" dict {"1": "edema", ...}.

  Names are matched to BraTS regions, so the Decathlon's Task01 order
  (1 oedema, 2 non-enhancing, 3 enhancing) is mapped to BraTS 2017+ values
  (2, 1, 4) by the returned label_map ((on-disk value, scheme value), ...);
  BraTS 2017+ ({1, 2, 4}) and BraTS 2023+ ({1, 2, 3}) conventions are kept as
  they are (empty label_map). Two values are a binary mask. None: BRATS.
  `where` (the file) is named in errors.
  """
  if labels is None:
    return BRATS, ()
  if not isinstance(labels, dict):
    raise InputError(where, '"labels" must be a dict like {"0": "background"}')
  try:
    values = tuple(sorted(int(k) for k in labels))
  except ValueError:
    raise InputError(where, f'"labels" keys must be integers, got '
                     f'{sorted(labels)}') from None
  if len(values) <= 2:
    return LabelScheme(values), ()
  named = {int(k): _brats_value(v) for k, v in labels.items()}
  if None not in named.values() and len(set(named.values())) == len(named):
    mapping = tuple(sorted(named.items()))
    if all(d == v for d, v in mapping):
      return LabelScheme(values, 4), ()                     # BraTS 2017-21
    if dict(mapping) != {0: 0, 1: 1, 2: 2, 3: 4}:           # not BraTS 2023+
      return LabelScheme(tuple(sorted(named.values())), 4), mapping
  et = None
  for key, name in labels.items():
    name = str(name).lower()
    if 'enhanc' in name and 'non' not in name:
      et = int(key)
  if et is None:
    et = 4 if 4 in values else max(values)
  return LabelScheme(values, et), ()
