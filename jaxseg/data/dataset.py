"""From `config.data` to prepared slice splits in the workdir.

    root (or the synthetic set) -> cases -> case-level split -> normalisation
    statistics (training split only) -> preprocessed slices in <workdir>/data/

`<workdir>/data/` holds `split.json` (case ids per split, the settings, the
normalisation statistics and the dataset's content fingerprint),
`files.json` (the fingerprint's digest cache) and one folder per split (see
`pipeline`). It is written in one atomic step after every case has been read
and checked; a rerun reuses it when the settings and the data's contents are
the same, wherever the data now lie.
"""

import json
import os
from typing import Callable

from absl import logging
import jax
import numpy as np

from jaxseg import labels
from jaxseg.data import fingerprint
from jaxseg.data import pipeline
from jaxseg.data import preprocess
from jaxseg.data import sources
from jaxseg.data import synthetic
from jaxseg.data.formats import coco
from jaxseg.errors import InputError

SPLITS = ('train', 'val', 'test')


# The folder of the sample data sets that sample-data configs name as
# '$JAXSEG_DATA/<set>'.
DATA_ENV = 'JAXSEG_DATA'


def expand_root(root: str) -> str:
  """`data.root` with `~` and environment variables ($JAXSEG_DATA) expanded."""
  expanded = os.path.expandvars(os.path.expanduser(root))
  if '$' in expanded:
    raise InputError('config.data.root', f'{root!r} names an environment '
                     f'variable that is not set: set {DATA_ENV} to the folder '
                     'that holds the data set, or give the folder itself with '
                     '--config.data.root=/path/to/data')
  return expanded


def resolve_root(data_config) -> str:
  """The dataset root: `data.root`, or the synthetic set (generated on first use)."""
  if data_config.root:
    return expand_root(data_config.root)
  syn = data_config.synthetic
  try:
    return synthetic.ensure_synthetic(
        cache_dir=data_config.cache_dir, num_cases=syn.num_cases,
        shape=tuple(syn.shape), seed=syn.seed)
  except ValueError as e:
    raise InputError('config.data.synthetic', str(e)) from e


def check_folds(folds: int, fold: int) -> None:
  """InputError unless `folds` is 0 (off) or >= 2 and 0 <= `fold` < `folds`."""
  if folds is None or folds == 0:
    return
  if not isinstance(folds, int) or folds < 2:
    raise InputError('config.data.folds', f'must be 0 (no cross-validation) '
                     f'or at least 2, got {folds!r}')
  if not isinstance(fold, int) or not 0 <= fold < folds:
    raise InputError('config.data.fold', f'{fold!r} is out of range: with '
                     f'data.folds={folds} it is one of 0 .. {folds - 1}')


def fold_of_cases(case_ids: list[str], folds: int, seed: int) -> dict[str, int]:
  """case id -> fold: a seeded permutation dealt round-robin into `folds`.

  Fold sizes differ by at most one; the assignment depends only on the
  sorted case ids, `folds` and `seed`.
  """
  ids = sorted(case_ids)
  order = np.random.default_rng(seed).permutation(len(ids))
  return {ids[i]: k % folds for k, i in enumerate(order)}


def _fold_split(cases: list[sources.Case], fractions, folds: int, fold: int,
                seed: int, root: str) -> dict[str, list[str]]:
  """Case ids per split for fold `fold` of `folds` (cross-validation).

  Test cases are set aside first (a datalist's "test"/"validation" lists;
  else, unless the datalist assigns every case a fold, the `fractions[2]`
  share, seeded) and never enter a fold. The folds come from the
  datalist's "fold" keys when every remaining case has one (MONAI's
  `create_cross_validation_datalist`), else `fold_of_cases`.
  Validation = fold `fold`, training = the other folds.
  """
  held_out = ('validation', 'test')
  pool = [c for c in cases if c.split not in held_out]
  if len(pool) < len(cases) or all(c.fold is not None for c in pool):
    test = sorted(c.case_id for c in cases if c.split in held_out)
  else:
    ids = sorted(c.case_id for c in cases)
    share = float(fractions[2]) / max(float(sum(fractions)), 1e-12)
    n_test = max(1, int(round(share * len(ids)))) if share > 0 else 0
    order = np.random.default_rng(seed).permutation(len(ids))
    test = sorted(ids[i] for i in order[:n_test])
    pool = [c for c in cases if c.case_id not in set(test)]
  given = [c.fold for c in pool]
  if pool and all(f is not None for f in given):
    if max(given) >= folds:
      raise InputError(root, f'the datalist assigns fold {max(given)}, but '
                       f'config.data.folds is {folds}')
    assignment = {c.case_id: c.fold for c in pool}
  else:
    if len(pool) < folds:
      raise InputError(root, f'{len(pool)} cases (after the test cases) are '
                       f'too few for {folds} folds')
    assignment = fold_of_cases([c.case_id for c in pool], folds, seed)
  val = sorted(i for i, f in assignment.items() if f == fold)
  if not val:
    raise InputError('config.data.fold', f'fold {fold} holds no cases')
  train = sorted(i for i, f in assignment.items() if f != fold)
  return dict(train=train, val=val, test=test)


def split_cases(cases: list[sources.Case], fractions, seed: int,
                root: str, folds: int = 0, fold: int = 0
                ) -> dict[str, list[str]]:
  """Case ids per split.

  With `folds` >= 2: fold `fold` of a case-level cross-validation
  (`_fold_split`). Otherwise the datalist's own splits, else a seeded
  shuffle by `fractions` (train, val, test).
  """
  if folds:
    check_folds(folds, fold)
    return _fold_split(cases, fractions, folds, fold, seed, root)
  listed = {c.split for c in cases if getattr(c, 'split', None)}
  if listed - {'training'}:
    named = {'training': 'train', 'validation': 'val', 'test': 'test'}
    out = {s: [] for s in SPLITS}
    for c in cases:
      out[named.get(c.split or 'training', 'train')].append(c.case_id)
    return out
  if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
    raise InputError('config.data.split',
                     f'expected three non-negative fractions, got {fractions}')
  ids = [c.case_id for c in cases]
  order = np.random.default_rng(seed).permutation(len(ids))
  total = float(sum(fractions))
  n_val = int(round(fractions[1] / total * len(ids)))
  n_test = int(round(fractions[2] / total * len(ids)))
  n_val = max(n_val, 1) if fractions[1] > 0 else 0
  n_test = max(n_test, 1) if fractions[2] > 0 else 0
  n_train = len(ids) - n_val - n_test
  if n_train < 1 or (fractions[1] > 0 and n_val < 1):
    raise InputError(root, f'{len(ids)} cases are too few for the split '
                     f'{tuple(fractions)} (train/val/test)')
  shuffled = [ids[i] for i in order]
  return dict(train=sorted(shuffled[:n_train]),
              val=sorted(shuffled[n_train:n_train + n_val]),
              test=sorted(shuffled[n_train + n_val:]))


def check_config(data_config) -> None:
  """Rejects data settings that have no meaning, before any work is done."""
  check_folds(data_config.get('folds'), data_config.get('fold'))
  if data_config.label_mode not in labels.LABEL_MODES:
    raise InputError('config.data.label_mode',
                     f'{data_config.label_mode!r} is not one of {labels.LABEL_MODES}')
  if data_config.normalization not in ('case', 'dataset'):
    raise InputError('config.data.normalization',
                     f"{data_config.normalization!r} is not 'case' or 'dataset'")
  if not data_config.modalities:
    raise InputError('config.data.modalities', 'name at least one channel')
  if data_config.image_size < 1:
    raise InputError('config.data.image_size', 'must be positive')
  if data_config.dims not in (2, 3):
    raise InputError('config.data.dims', f'{data_config.dims!r} is not 2 '
                     '(slices) or 3 (volumes)')
  if data_config.dims == 3 and (data_config.depth or 0) < 1:
    raise InputError('config.data.depth', 'must be positive for 3D volumes')
  patch = data_config.patch_size
  if patch is not None:
    volume = (data_config.depth, data_config.image_size, data_config.image_size)
    if data_config.dims != 3:
      raise InputError('config.data.patch_size', 'patches need data.dims=3')
    if len(patch) != 3 or any(p < 1 or p > n for p, n in zip(patch, volume)):
      raise InputError('config.data.patch_size', f'{tuple(patch)} must be 3 '
                       f'positive sizes within the volume {volume}')


def discover(data_config) -> tuple[str, list[sources.Case]]:
  """The dataset root and its cases; checks the label mode fits the labels."""
  root = resolve_root(data_config)
  cases = sources.discover_cases(root, data_config.get('formats'))
  if data_config.label_mode != 'binary':
    binary = [c.case_id for c in cases if c.scheme.binary and c.label]
    if binary:
      raise InputError(root, f"label_mode '{data_config.label_mode}' needs BraTS "
                       f'sub-region labels; case {binary[0]} has a binary mask')
  unlabeled = [c.case_id for c in cases if not c.label]
  if unlabeled:
    raise InputError(root, f'case {unlabeled[0]} has no label file; training '
                     'needs labels for every case')
  return root, cases


def preparation_settings(data_config, seed: int) -> dict:
  """The settings that shape `<workdir>/data`, as JSON values (to detect changes).

  The data root is not one of them: where the data lie does not matter,
  what they hold does (`fingerprint`).
  """
  keys = ('modalities', 'label_mode', 'image_size', 'normalization',
          'background_ratio', 'min_brain_fraction', 'split')
  settings = {k: data_config[k] for k in keys}
  settings['synthetic'] = None if data_config.root else data_config.synthetic.to_dict()
  if data_config.get('formats') is not None:
    settings['formats'] = data_config.formats.to_dict()
  if data_config.get('folds'):
    settings.update(folds=data_config.folds, fold=data_config.fold)
  settings['seed'] = seed
  if data_config.dims == 3:
    settings.update(dims=3, depth=data_config.depth)
  return json.loads(json.dumps(settings))   # tuples -> lists, as stored


def _fingerprint(cases, data_dir: str) -> tuple[dict, fingerprint.DigestCache]:
  """The dataset's content fingerprint, reading only files not seen before."""
  cache = fingerprint.DigestCache(os.path.join(data_dir, fingerprint.CACHE_FILE))
  return fingerprint.dataset_fingerprint(cases, cache), cache


def _reuse(info: dict, settings: dict, root: str, cases, workdir: str) -> dict:
  """The prepared data's split.json if they were made from these settings and data."""
  # (A key the stored settings lack is newer than the workdir: not compared.)
  changed = {k: (info['settings'][k], v) for k, v in settings.items()
             if k in info['settings'] and info['settings'][k] != v}
  if changed:
    key, (was, now) = next(iter(changed.items()))
    raise InputError(workdir, f'its data was prepared with {key}={was}, the '
                     f'config now says {now}: use a new --workdir')
  data_dir = os.path.join(workdir, 'data')
  root = os.path.abspath(root)
  if 'data' not in info:          # prepared before content fingerprints
    if info['root'] != root:
      raise InputError(workdir, f'its data was prepared from {info["root"]}, '
                       f'the config now says {root}: use a new --workdir')
    return info
  now, cache = _fingerprint(cases, data_dir)
  diff = fingerprint.difference(info['data'], now)
  if diff:
    raise InputError(root, f'holds other data than {workdir} was prepared '
                     f'from ({diff}): use a new --workdir')
  if jax.process_index() == 0:
    cache.save()
    if info['root'] != root:     # the same files, moved: remember where
      info = dict(info, root=root)
      _write_json(info, os.path.join(data_dir, 'split.json'))
  return dict(info, root=root)


def _write_json(content, path: str) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(content, f, indent=1)
  os.replace(tmp, path)


def prepare(data_config, workdir: str, seed: int,
            progress: Callable | None = None) -> dict:
  """Prepares (or reuses) `<workdir>/data`; returns the contents of its split.json.

  A rerun reuses the prepared data if the settings are the same and the
  data root holds the same files (by content: the data may have moved).
  """
  data_dir = os.path.join(workdir, 'data')
  settings = preparation_settings(data_config, seed)
  root, cases = discover(data_config)
  if os.path.exists(os.path.join(data_dir, 'split.json')):
    with open(os.path.join(data_dir, 'split.json')) as f:
      info = json.load(f)
    return _reuse(info, settings, root, cases, workdir)
  by_id = {c.case_id: c for c in cases}
  split = split_cases(cases, tuple(data_config.split), seed, root,
                      data_config.get('folds') or 0, data_config.get('fold') or 0)
  if not split['val']:
    raise InputError('config.data.split', 'no validation cases: the validation '
                     'loss drives the learning rate, early stopping and the '
                     'best checkpoint')
  coco.take_tinted()   # count this preparation's reads only
  mean = std = None
  if data_config.normalization == 'dataset':
    # Statistics from the training cases only.
    mean, std = preprocess.dataset_statistics(
        sources.load_case(by_id[i], data_config.modalities).image
        for i in split['train'])
  prepared = {}
  for name in SPLITS:
    if not split[name]:
      continue
    prepared[name] = pipeline.prepare_split(
        [by_id[i] for i in split[name]], modalities=data_config.modalities,
        image_size=data_config.image_size, label_mode=data_config.label_mode,
        background_ratio=data_config.background_ratio,
        min_brain_fraction=data_config.min_brain_fraction, seed=seed,
        mean=mean, std=std, dims=data_config.dims, depth=data_config.depth,
        progress=(lambda i, n, c, s=name: progress(s, i, n, c)) if progress else None)
  tinted = coco.take_tinted()
  if tinted:
    logging.warning('%s', coco.tinted_message(tinted, len(cases)))
  # After every case was read: a file that changed meanwhile shows as a
  # changed case on the next run.
  data, cache = _fingerprint(cases, data_dir)
  info = dict(root=os.path.abspath(root), data=data, split=split,
              settings=settings,
              label_values=sorted({v for c in cases for v in c.scheme.values}),
              normalization=dict(mode=data_config.normalization,
                                 mean=None if mean is None else mean.tolist(),
                                 std=None if std is None else std.tolist()))
  pipeline.write_splits(prepared, data_dir, extra={
      'split.json': info, fingerprint.CACHE_FILE: cache.entries})
  return info
