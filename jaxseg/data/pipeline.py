"""Datasets: preprocess the cases of a split once, then Grain loaders over records.

A prepared split is a folder with
  images.npy   (S, size, size, C) float32  every slice of every case
  targets.npy  (S, size, size, K) uint8    targets of the label mode
  slices.json  case id and axial index of each slice, and the `records`:
               the slices used for training/validation (all tumour slices plus
               `background_ratio` tumour-free brain slices per tumour slice).
For 3D models (`dims=3`) each case is one record instead: images.npy is
(cases, depth, size, size, C), targets.npy (cases, depth, size, size, K), the
axial index is -1, and the loader may cut random patches (`RandomPatch`).
The arrays are memory-mapped, so Grain worker processes share them.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Iterator, Sequence

import grain
import jax
import numpy as np

from jaxseg.data import augment as augment_lib
from jaxseg.data import checks
from jaxseg.data import preprocess
from jaxseg.data import sources


def select_records(stacks: Sequence[preprocess.SliceStack], label_mode: str,
                   background_ratio: float, min_brain_fraction: float,
                   rng: np.random.Generator) -> np.ndarray:
  """Global slice indices of the training records.

  Every slice with tumour, plus round(background_ratio * n_tumour) slices
  drawn without replacement from the tumour-free slices that hold at least
  `min_brain_fraction` brain.
  """
  tumour, background, offset = [], [], 0
  for stack in stacks:
    fg = stack.targets[..., 1:] if label_mode == 'multiclass' else stack.targets
    has_tumour = fg.reshape(len(fg), -1).any(axis=1)
    brainy = stack.brain_fraction >= min_brain_fraction
    tumour.extend(offset + np.nonzero(has_tumour)[0])
    background.extend(offset + np.nonzero(~has_tumour & brainy)[0])
    offset += len(stack.images)
  n_bg = min(len(background), int(round(background_ratio * len(tumour))))
  chosen = rng.choice(np.asarray(background, np.int64), n_bg, replace=False)
  return np.sort(np.concatenate([np.asarray(tumour, np.int64), chosen]))


@dataclasses.dataclass
class PreparedSplit:
  """Preprocessed slices of one split, in memory until `write_splits`."""
  images: np.ndarray      # (S, size, size, C) float32
  targets: np.ndarray     # (S, size, size, K) uint8
  slices: list            # [(case_id, z)] for each of the S slices
  records: np.ndarray     # (R,) int64 slice indices used as records


def prepare_split(cases: Sequence[sources.Case], *, modalities: Sequence[str],
                  image_size: int, label_mode: str, background_ratio: float,
                  min_brain_fraction: float, seed: int, mean=None, std=None,
                  dims: int = 2, depth: int | None = None,
                  progress=None) -> PreparedSplit:
  """Reads, checks and preprocesses `cases` (raises InputError on bad input).

  dims 2: every axial slice is stored, the records are selected slices;
  dims 3: each case is one (depth, size, size, C) volume and one record.
  """
  stacks, slices = [], []
  for i, case in enumerate(cases):
    volume = sources.load_case(case, modalities)
    checks.check_label_not_copy(volume, case.label or case.case_id)
    if dims == 3:
      stack = preprocess.case_to_volume(
          volume.image, volume.label, image_size=image_size, depth=depth,
          label_mode=label_mode, scheme=case.scheme, mean=mean, std=std)
      stacks.append(dataclasses.replace(stack, images=stack.images[None],
                                        targets=stack.targets[None]))
      slices.append((case.case_id, -1))
    else:
      stack = preprocess.case_to_slices(
          volume.image, volume.label, image_size=image_size,
          label_mode=label_mode, scheme=case.scheme, mean=mean, std=std)
      stacks.append(stack)
      slices.extend((case.case_id, z) for z in range(len(stack.images)))
    if progress:
      progress(i + 1, len(cases), case.case_id)
  if dims == 3:
    records = np.arange(len(stacks), dtype=np.int64)
  else:
    records = select_records(stacks, label_mode, background_ratio,
                             min_brain_fraction, np.random.default_rng(seed))
  return PreparedSplit(
      images=np.concatenate([s.images for s in stacks]),
      targets=np.concatenate([s.targets for s in stacks]).astype(np.uint8),
      slices=slices, records=records)


def write_splits(splits: dict[str, PreparedSplit], out_dir: str,
                 extra: dict[str, dict] | None = None) -> None:
  """Writes `out_dir/<name>/` for every split, and `extra` {file name: JSON}.

  The folder appears whole (written to a temporary sibling, then renamed) or
  not at all. When another process of a multi-process run on a shared file
  system renamed its (identical) folder first, this one's is discarded.
  """
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.prepare-', dir=parent)
  try:
    for name, split in splits.items():
      os.makedirs(os.path.join(tmp, name))
      np.save(os.path.join(tmp, name, 'images.npy'), split.images)
      np.save(os.path.join(tmp, name, 'targets.npy'), split.targets)
      with open(os.path.join(tmp, name, 'slices.json'), 'w') as f:
        json.dump(dict(slices=split.slices, records=split.records.tolist()), f)
    for filename, content in (extra or {}).items():
      with open(os.path.join(tmp, filename), 'w') as f:
        json.dump(content, f, indent=1)
    try:
      os.rename(tmp, out_dir)
    except OSError:
      if not os.path.isdir(out_dir):
        raise
      shutil.rmtree(tmp, ignore_errors=True)   # another process was first
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


class SliceSource(grain.sources.RandomAccessDataSource):
  """Grain source over the records of a prepared split.

  Each record is {'image': (size, size, C) float32, 'target': (size, size, K)
  float32, 'weight': float32 1.0}; for 3D splits image and target are
  (depth, size, size, C|K). Arrays are opened lazily per process.
  """

  def __init__(self, split_dir: str):
    self.split_dir = split_dir
    with open(os.path.join(split_dir, 'slices.json')) as f:
      meta = json.load(f)
    self.records = np.asarray(meta['records'], np.int64)
    self._arrays = None

  def _open(self):
    if self._arrays is None:
      self._arrays = tuple(
          np.load(os.path.join(self.split_dir, name), mmap_mode='r')
          for name in ('images.npy', 'targets.npy'))
    return self._arrays

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, record_key: int):
    images, targets = self._open()
    i = self.records[record_key]
    return dict(image=np.array(images[i]), target=targets[i].astype(np.float32),
                weight=np.float32(1.0))

  def __repr__(self) -> str:
    # Grain checks a restored iterator against repr(source): keep it stable
    # across processes (no object address) and independent of the workdir path.
    return (f'SliceSource({os.path.basename(os.path.normpath(self.split_dir))}, '
            f'{len(self.records)} records)')

  def __getstate__(self):
    return dict(self.__dict__, _arrays=None)


def train_loader(source: SliceSource, *, global_batch_size: int, seed: int,
                 augment: augment_lib.AugmentConfig | None,
                 worker_count: int = 0,
                 patch_size: Sequence[int] | None = None,
                 foreground_fraction: float = 0.0,
                 label_mode: str = 'binary',
                 process_index: int | None = None,
                 process_count: int | None = None,
                 read_ahead: int | None = None) -> grain.IterDataset:
  """An endless, shuffled (a new order each epoch), augmented batch stream.

  `augment` None: no augmentation chain (with `config.augment.where`
  'device' the train step augments); patches are still cut.
  `read_ahead`: batches Grain's threads prepare ahead (its
  `ReadOptions.prefetch_buffer_size`); None: Grain's default, 500. Bound it
  for large 3D batches (`read_ahead_batches`): 500 batches of 2 x 128^3
  patches are ~59 GB of host memory.

  With `patch_size` (3D records), each record is first cut to a random
  patch; `foreground_fraction` of the patches are centred on a tumour voxel
  (a target channel > 0; in 'multiclass' mode the non-background classes).

  One global record stream, the same for any number of processes and
  workers: a seeded shuffle per epoch, and augmentation draws seeded by the
  record's position in that stream. Global batch k is rows [k B, (k+1) B);
  process p of n yields its rows [k B + p B/n, k B + (p+1) B/n) (the rows
  `parallel.to_global` expects), so a run on n hosts or with w Grain worker
  processes sees the batches a single process sees. Iterate with `iter()`;
  the iterator's `get_state()` / `set_state()` resume it.
  """
  p = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  if global_batch_size % n:
    raise ValueError(f'batch {global_batch_size} does not split over {n} '
                     'processes')
  local_batch = global_batch_size // n
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  if patch_size:
    ds = ds.random_map(augment_lib.RandomPatch(
        tuple(patch_size), foreground_fraction=foreground_fraction,
        foreground_channels=(slice(1, None) if label_mode == 'multiclass'
                             else None)))
  if augment:
    ds = ds.random_map(augment_lib.AugmentSlices(augment))
  # Chunks of local_batch rows of the global stream; this process's are
  # every n-th, from the p-th.
  ds = ds.batch(local_batch, drop_remainder=True)[p::n]
  stream = ds.to_iter_dataset(
      None if read_ahead is None
      else grain.ReadOptions(num_threads=min(16, int(read_ahead)),
                             prefetch_buffer_size=int(read_ahead)))
  if worker_count:
    stream = stream.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count))
  return stream


# The most batches read ahead (Grain's default, ReadOptions.prefetch_buffer_size,
# is 500).
MAX_READ_AHEAD = 64


def read_ahead_batches(batch_bytes: int, budget_bytes: int = 2 ** 27) -> int:
  """Read-ahead that keeps prefetched batches within `budget_bytes` (128 MiB).

  At least 4 (so the threads overlap), at most 64. The loader outruns the
  step by far (seed 002 on 2 cores: 40 batches/s against a step's 0.25), so
  a few batches ahead keep the step fed; Grain's default, 500 batches, held
  2.1 GB of seed-002 batches (5 MB each) in memory.
  """
  return int(max(4, min(MAX_READ_AHEAD, budget_bytes // max(batch_bytes, 1))))


def eval_batches(source: SliceSource, batch_size: int) -> Iterator[dict]:
  """Every record once, in order, in full batches; padding has weight 0."""
  n = len(source)
  for start in range(0, n, batch_size):
    items = [source[i] for i in range(start, min(start + batch_size, n))]
    pad = batch_size - len(items)
    items += [dict(items[0], weight=np.float32(0.0))] * pad
    yield {k: np.stack([it[k] for it in items]) for k in items[0]}
