"""Post-processing of predicted BraTS label maps, set in `config.postprocess`.

Label maps are integer (H, W, D) NumPy arrays in a BraTS label scheme
(`jaxseg.labels`: 0 background, 1 necrosis / non-enhancing core (NCR), 2
oedema (ED), enhancing tumour (ET) 4 in BraTS 2018-2021 files, 3 from BraTS
2023 on). Regions: WT = {1, 2, ET}, TC = {1, ET}, ET = {ET}. Two steps, in
this order, each off at 0:

1. `remove_small_components`: in the order WT, TC, ET, every 26-connected
   component of the region (as the previous step left it) with fewer than
   `min_component_voxels[region]` voxels leaves that region and keeps the
   outer ones, as when label maps are rebuilt from region outputs
   (nnU-Net's region-based BraTS training): a WT component becomes
   background (0), a TC component oedema (2, its ET included), an ET
   component necrosis (1). Removing a region's component so never changes an
   outer region, only the inner ones.
2. `et_to_ncr`: when the case's total ET is below `et_to_ncr_below` voxels,
   every ET voxel becomes NCR (1): nnU-Net's BraTS rule (Isensee et al.,
   BraTS 2020 and 2021; the BraTS 2023 winners kept it), because a case
   without enhancing tumour scores ET Dice 1 for an empty ET prediction and 0
   for any small false one. TC and WT do not change.

Thresholds count voxels (BraTS volumes are 1 mm isotropic). 26-connectivity
is that of the BraTS 2023 lesion-wise scores (`jaxseg.scoring.lesionwise`), which
count every false-positive component, however small, as a lesion with Dice
0, so these thresholds are worth choosing on validation cases:
`choose_thresholds` does that by mean lesion-wise Dice.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from jaxseg import errors
from jaxseg import labels
from jaxseg.scoring import lesionwise
from jaxseg.labels import LabelScheme

REGIONS = labels.REGION_NAMES
_CONNECT_26 = np.ones((3, 3, 3), bool)
CONFIG_KEYS = ('min_component_voxels', 'et_to_ncr_below',
               'choose_on_validation', 'candidates')
CANDIDATE_KEYS = REGIONS + ('et_to_ncr_below',)


def _label(label) -> np.ndarray:
  label = np.asarray(label)
  if label.ndim != 3 or not np.issubdtype(label.dtype, np.integer):
    raise ValueError(f'expected an integer (H, W, D) label map, got '
                     f'{label.dtype} {label.shape}')
  return label


def remove_small_components(label, min_voxels: Mapping[str, int], *,
                            scheme: LabelScheme) -> np.ndarray:
  """Removes the small components of each region (module docstring, step 1).

  Args:
    label: int (H, W, D) label map (not modified).
    min_voxels: region -> components with fewer voxels are removed; regions
      left out, or at 0, are not touched.
    scheme: the label scheme of `label`.

  Returns:
    a new label map of the same shape and dtype.
  """
  out = np.array(_label(label))
  for region in REGIONS:
    threshold = int(min_voxels.get(region, 0) or 0)
    if threshold <= 0:
      continue
    mask = scheme.region_masks(out, (region,))[region]
    if not mask.any():
      continue
    box = lesionwise._box(mask)
    components, _ = ndimage.label(mask[box], structure=_CONNECT_26)
    small = np.bincount(components.ravel()) < threshold
    small[0] = False
    out[box][small[components]] = scheme.leaving(region)
  return out


def et_to_ncr(label, below: int, *, scheme: LabelScheme) -> np.ndarray:
  """All ET -> NCR (1) if the case has fewer than `below` ET voxels (0: off)."""
  out = np.array(_label(label))
  enhancing = out == scheme.enhancing
  if below > 0 and np.count_nonzero(enhancing) < below:
    out[enhancing] = scheme.leaving('ET')
  return out


def postprocess(label, *, scheme: LabelScheme,
                min_component_voxels: Mapping[str, int] | None = None,
                et_to_ncr_below: int = 0) -> np.ndarray:
  """Both steps with explicit settings: components first, then ET -> NCR."""
  out = remove_small_components(label, min_component_voxels or {},
                                scheme=scheme)
  return et_to_ncr(out, et_to_ncr_below, scheme=scheme)


# ------------------------------------------------------------------ config


def _where(key: str) -> str:
  return f'config.postprocess.{key}'


def _count(value, key: str) -> int:
  """A voxel count >= 0 (an int, not a bool), else InputError."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)):
    raise errors.InputError(_where(key), f'must be a whole number of voxels '
                            f'>= 0 (0: off), got {value!r}')
  if value < 0:
    raise errors.InputError(_where(key), f'must be >= 0 (0: off), got {value}')
  return int(value)


def _keys(section) -> list[str]:
  if not hasattr(section, 'keys'):
    raise TypeError(f'expected a ConfigDict or dict, got {type(section)}')
  return list(section.keys())


def check_config(postprocess_config) -> dict[str, Any]:
  """Checks `config.postprocess`; InputError names the bad key.

  Returns:
    dict min_component_voxels ({region: int}), et_to_ncr_below (int),
    choose_on_validation (bool), candidates ({key: tuple of ints}).
  """
  cfg = postprocess_config
  for key in _keys(cfg):
    if key not in CONFIG_KEYS:
      raise errors.InputError(_where(key), f'unknown key; known: '
                              f'{", ".join(CONFIG_KEYS)}')
  minimum = cfg.get('min_component_voxels', None) or {}
  for region in _keys(minimum):
    if region not in REGIONS:
      raise errors.InputError(_where(f'min_component_voxels.{region}'),
                              f'unknown region; known: {", ".join(REGIONS)}')
  minimum = {r: _count(minimum.get(r, 0), f'min_component_voxels.{r}')
             for r in REGIONS}
  below = _count(cfg.get('et_to_ncr_below', 0), 'et_to_ncr_below')
  choose = cfg.get('choose_on_validation', False)
  if not isinstance(choose, (bool, np.bool_)):
    raise errors.InputError(_where('choose_on_validation'),
                            f'must be True or False, got {choose!r}')
  grid = cfg.get('candidates', None) or {}
  candidates = {}
  for key in _keys(grid):
    where = f'candidates.{key}'
    if key not in CANDIDATE_KEYS:
      raise errors.InputError(_where(where), f'unknown key; known: '
                              f'{", ".join(CANDIDATE_KEYS)}')
    values = grid[key]
    if isinstance(values, (str, bytes)) or not isinstance(
        values, (Sequence, np.ndarray)) or len(values) == 0:
      raise errors.InputError(_where(where), f'must be a non-empty list of '
                              f'voxel counts, got {values!r}')
    candidates[key] = tuple(_count(v, where) for v in values)
  return dict(min_component_voxels=minimum, et_to_ncr_below=below,
              choose_on_validation=bool(choose), candidates=candidates)


def apply(label, postprocess_config, scheme: LabelScheme) -> np.ndarray:
  """The post-processing `config.postprocess` sets (defaults: a copy).

  Args:
    label: int (H, W, D) predicted label map (not modified).
    postprocess_config: the `config.postprocess` ConfigDict (or a dict with
      its keys); `choose_on_validation` and `candidates` are not used here.
    scheme: the label scheme of `label`.

  Returns:
    the post-processed label map, same shape and dtype.
  """
  settings = check_config(postprocess_config)
  return postprocess(label, scheme=scheme,
                     min_component_voxels=settings['min_component_voxels'],
                     et_to_ncr_below=settings['et_to_ncr_below'])


# Settings chosen on validation cases, in a run's (or cross-validation's) folder.
CHOSEN_FILE = 'postprocess.json'


def chosen(folder: str) -> dict[str, Any] | None:
  """The settings chosen on validation cases for `folder` (CHOSEN_FILE), or None."""
  path = os.path.join(folder, CHOSEN_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)['settings']


def write_chosen(folder: str, settings: Mapping[str, Any], table, cases: int) -> str:
  """Writes CHOSEN_FILE: the settings, the score table and the case count."""
  path = os.path.join(folder, CHOSEN_FILE)
  content = dict(settings=settings, cases=cases,
                 mean_lesion_dice={k: {str(t): v for t, v in scores.items()}
                                   for k, scores in table.items()})
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(content, f, indent=1)
  os.replace(tmp, path)
  return path


def settings_of(postprocess_config) -> dict[str, Any]:
  """{'min_component_voxels', 'et_to_ncr_below'} of `config.postprocess`, checked."""
  checked = check_config(postprocess_config)
  return dict(min_component_voxels=checked['min_component_voxels'],
              et_to_ncr_below=checked['et_to_ncr_below'])


def is_off(settings: Mapping[str, Any]) -> bool:
  """True when the settings change no label map."""
  return (not any(settings['min_component_voxels'].values()) and
          not settings['et_to_ncr_below'])


def for_prediction(label, settings: Mapping[str, Any], scheme: LabelScheme,
                   label_mode: str) -> np.ndarray:
  """A predicted label map (in its case's `scheme`) post-processed.

  `settings` as `settings_of` or `choose_thresholds` give them. In the
  binary label mode, or for a binary-mask dataset, the label is one
  whole-tumour mask: only the WT threshold applies.
  """
  if is_off(settings):
    return label
  if label_mode == 'binary' or scheme.binary:
    wt = int(settings['min_component_voxels'].get('WT', 0))
    return (remove_small_components(label, {'WT': wt}, scheme=labels.BINARY)
            if wt else label)
  return postprocess(label, scheme=scheme, **settings)


# ------------------------------------------------- choosing the thresholds


def _best(scores: Mapping[int, float]) -> int:
  """The threshold of the highest score; ties: the smallest threshold."""
  best = None
  for threshold in sorted(scores):
    if best is None or scores[threshold] > scores[best] + 1e-12:
      best = threshold
  return best


def choose_thresholds(cases: Sequence[tuple[Any, Any]],
                      candidates: Mapping[str, Sequence[int]], *,
                      scheme: LabelScheme, spacing=None,
                      dilation: int = lesionwise.GLIOMA_DILATION,
                      min_lesion_volume: float = (
                          lesionwise.GLIOMA_MIN_LESION_VOLUME)
                      ) -> tuple[dict[str, Any], dict[str, dict[int, float]]]:
  """Thresholds that maximise the mean lesion-wise Dice on validation cases.

  Region by region, in the order WT, TC, ET, then `et_to_ncr_below`: each
  candidate (0, off, is always one) is applied with the thresholds chosen
  so far to every prediction, scored by that region's mean lesion-wise Dice
  over the cases (`et_to_ncr_below` by ET's), and the best one kept (ties:
  the smallest). A region's removal changes only itself and inner regions,
  so WT's score depends on WT's threshold alone, TC's on WT's and TC's, and
  so on: this order chooses each given everything its score depends on.

  Args:
    cases: (prediction, truth) int (H, W, D) label maps.
    candidates: thresholds (voxels) per key of CANDIDATE_KEYS ('WT', 'TC',
      'ET', 'et_to_ncr_below'); a key left out stays 0.
    scheme: the label scheme of the maps.
    spacing, dilation, min_lesion_volume: of the lesion-wise scores (`jaxseg.scoring.lesionwise.region_scores`).

  Returns:
    (settings, table): settings is dict min_component_voxels ({region:
    int}) and et_to_ncr_below (int), ready for `postprocess(**settings)` or
    config.postprocess; table maps each key searched to {threshold: mean
    lesion-wise Dice}.
  """
  if not cases:
    raise ValueError('choose_thresholds needs at least one case')
  unknown = [k for k in candidates if k not in CANDIDATE_KEYS]
  if unknown:
    raise ValueError(f'unknown candidate keys {unknown}; known: '
                     f'{CANDIDATE_KEYS}')
  preds = [_label(p) for p, _ in cases]
  truths = [scheme.region_masks(_label(t)) for _, t in cases]

  def mean_dice(maps, region):
    return float(np.mean([
        lesionwise.region_scores(
            scheme.region_masks(p, (region,))[region], t[region],
            spacing=spacing, dilation=dilation,
            min_lesion_volume=min_lesion_volume,
            with_hd95=False)['lesion_dice']
        for p, t in zip(maps, truths)]))

  chosen = {r: 0 for r in REGIONS}
  table = {}
  for region in REGIONS:
    if region not in candidates:
      continue
    grid = sorted({0, *(int(v) for v in candidates[region])})
    table[region] = {
        t: mean_dice([remove_small_components(p, {region: t},
                                              scheme=scheme)
                      for p in preds], region)
        for t in grid}
    chosen[region] = _best(table[region])
    preds = [remove_small_components(p, {region: chosen[region]},
                                     scheme=scheme) for p in preds]
  below = 0
  if 'et_to_ncr_below' in candidates:
    grid = sorted({0, *(int(v) for v in candidates['et_to_ncr_below'])})
    table['et_to_ncr_below'] = {
        t: mean_dice([et_to_ncr(p, t, scheme=scheme) for p in preds],
                     'ET')
        for t in grid}
    below = _best(table['et_to_ncr_below'])
  return dict(min_component_voxels=chosen, et_to_ncr_below=below), table
