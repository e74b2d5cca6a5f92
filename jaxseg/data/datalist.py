"""The one reader of JSON datalists (Decathlon / MONAI style).

    {"modality": {"0": "FLAIR", "1": "T1w", ...},          optional
     "labels": {"0": "background", "1": "edema", ...},     optional
     "training": [{"image": ["a_flair.nii.gz", ...] | "a.nii.gz",
                   "label": "a_seg.nii.gz", "fold": 0}, ...],
     "validation": [...], "test": [...]}                  optional

Paths are relative to the json's folder. An "image" list has one file per
channel (named by "modality", else ch0, ch1, ...); one file with several
"modality" names is a 4D (H, W, D, C) volume, as the Decathlon's imagesTr.
"labels" names are mapped to the BraTS convention (`labels.from_names`).
An entry's "fold" (MONAI's `create_cross_validation_datalist` writes it)
becomes `Case.fold`; "case_id" or "id" names the case, else the file name
does. Every listed file must exist; each problem is one `InputError`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from jaxseg import labels
from jaxseg.data.case import MODALITIES, Case, canonical_modality
from jaxseg.data.formats import nifti
from jaxseg.errors import InputError, read_json_object

SPLITS = ('training', 'validation', 'test')
FILE_NAME = 'dataset.json'


def _case_id_from_path(path: str, modalities: Sequence[str]) -> str:
  """'X/Brats18_1/Brats18_1_flair.nii.gz' -> 'Brats18_1'."""
  stem = nifti.strip_nifti_ext(os.path.basename(path)) or os.path.basename(path)
  for sep in ('_', '-'):
    if sep in stem:
      head, suffix = stem.rsplit(sep, 1)
      known = (canonical_modality(suffix) in MODALITIES or
               suffix.lower() in modalities)
      nnunet = suffix.isdigit() and len(suffix) == 4  # x_0000.nii.gz
      if known or nnunet:
        return head
  return stem


def read(path: str) -> list[Case]:
  """The cases of a Decathlon/MONAI-style datalist `path` (module docstring)."""
  data = read_json_object(path, 'the datalist', 'a "training" list')
  if not any(isinstance(data.get(s), list) for s in SPLITS):
    raise InputError(path, 'no "training", "validation" or "test" list of '
                     '{"image": ..., "label": ...} entries')
  modality = data.get('modality')
  if modality is None:
    names = None
  elif isinstance(modality, dict):
    try:
      items = sorted(modality.items(), key=lambda kv: int(kv[0]))
    except ValueError:
      raise InputError(path, '"modality" keys must be channel indices like '
                       '"0", "1"') from None
    names = [canonical_modality(v) for _, v in items]
    if len(set(names)) != len(names):
      raise InputError(path, f'"modality" names repeat: {names}')
  else:
    raise InputError(path, '"modality" must be a dict like {"0": "FLAIR"}')
  scheme, label_map = labels.from_names(data.get('labels'), path)
  base = os.path.dirname(os.path.abspath(path))

  def resolve(p: Any, what: str, index: int, split: str) -> str:
    if not isinstance(p, str) or not p:
      raise InputError(path, f'{split}[{index}] "{what}" must be a path '
                       f'string, got {p!r}')
    full = os.path.normpath(os.path.join(base, p))
    if not os.path.isfile(full):
      raise InputError(full, f'listed in {path} ({split}[{index}]) but does '
                       'not exist')
    return full

  cases = []
  seen = set()
  for split in SPLITS:
    entries = data.get(split)
    if entries is None:
      continue
    if not isinstance(entries, list):
      raise InputError(path, f'"{split}" must be a list of entries')
    for i, entry in enumerate(entries):
      if isinstance(entry, str):  # Decathlon "test": ["./imagesTs/x.nii.gz"]
        entry = {'image': entry}
      if not isinstance(entry, dict) or 'image' not in entry:
        raise InputError(path, f'{split}[{i}] must be an object with "image"')
      image = entry['image']
      paths = [image] if isinstance(image, str) else image
      if not isinstance(paths, list) or not paths:
        raise InputError(path, f'{split}[{i}] "image" must be a path or a '
                         'non-empty list of paths')
      paths = [resolve(p, 'image', i, split) for p in paths]
      channel_index = None
      if names is None:
        mods = [f'ch{c}' for c in range(len(paths))]
      elif len(paths) == 1 and len(names) > 1:
        # One 4D (H, W, D, C) file, as the Decathlon's imagesTr.
        mods = names
        paths = paths * len(names)
        channel_index = {m: c for c, m in enumerate(names)}
      elif len(names) != len(paths):
        raise InputError(path, f'{split}[{i}] lists {len(paths)} image files '
                         f'but "modality" names {len(names)} channels')
      else:
        mods = names
      label = entry.get('label')
      label = None if label is None else resolve(label, 'label', i, split)
      case_id = entry.get('case_id', entry.get('id'))
      if case_id is None:
        case_id = _case_id_from_path(paths[0], mods)
      case_id = str(case_id)
      if case_id in seen:
        case_id = f'{case_id}_{split}{i}'
      seen.add(case_id)
      fold = entry.get('fold')
      if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)
                               or fold < 0):
        raise InputError(path, f'{split}[{i}] "fold" must be a non-negative '
                         f'integer, got {fold!r}')
      cases.append(Case(
          case_id=case_id,
          images=dict(zip(mods, paths)),
          label=label,
          scheme=scheme,
          split=split,
          source=path,
          channel_index=channel_index,
          label_map=label_map,
          fold=fold))
  if not cases:
    raise InputError(path, 'the datalist has no entries')
  return cases

