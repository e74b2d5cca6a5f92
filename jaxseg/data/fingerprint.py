"""What a dataset *is*, independent of where it lies: a digest of its files' contents.

A workdir's prepared data belong to the dataset they were made from. Moving
the data, or reaching the same files through a symlink or another mount,
must not invalidate the workdir; changing, adding or removing a file must.
So a workdir records, per case, the size and BLAKE2b digest of every file
the case reads (channels and label), and the dataset's fingerprint is the
digest of those records sorted by case id.

Hashing every file on every run would cost a minute on a full BraTS set, so
digests are cached in `<workdir>/data/files.json` by (absolute path, size,
modification time): an unchanged file in an unchanged place is not read
again; a moved one is read once, and its digest must match.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable

from jaxseg.data.case import Case

CACHE_FILE = 'files.json'
_CHUNK = 1 << 22


def file_digest(path: str) -> str:
  """BLAKE2b (128-bit) hex digest of a file's bytes."""
  digest = hashlib.blake2b(digest_size=16)
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(_CHUNK), b''):
      digest.update(block)
  return digest.hexdigest()


class DigestCache:
  """Digests keyed by (absolute path, size, mtime); reads a file only when that changes."""

  def __init__(self, path: str | None = None):
    self.path = path
    self.entries: dict[str, list] = {}
    if path and os.path.isfile(path):
      with open(path) as f:
        self.entries = json.load(f)

  def digest(self, path: str) -> tuple[int, str]:
    """(size, digest) of `path`."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = [stat.st_size, stat.st_mtime_ns]
    cached = self.entries.get(real)
    if cached is None or cached[:2] != key:
      cached = key + [file_digest(real)]
      self.entries[real] = cached
    return cached[0], cached[2]

  def save(self, path: str | None = None) -> None:
    path = path or self.path
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
      json.dump(self.entries, f)
    os.replace(tmp, path)


def case_files(case: Case) -> list[tuple[str, str]]:
  """(role, path) of every file a case reads: channels by name, then 'label'."""
  files = [(name, path) for name, path in sorted(case.images.items())]
  if case.label:
    files.append(('label', case.label))
  return files


def dataset_fingerprint(cases: Iterable[Case], cache: DigestCache) -> dict:
  """{'digest': hex, 'bytes': total, 'cases': {case id: hex}} of the cases' files.

  Independent of the root's location: only case ids, roles, sizes and file
  digests enter it (a file shared by several cases, such as a COCO json,
  counts once per case).
  """
  per_case, total = {}, 0
  for case in sorted(cases, key=lambda c: c.case_id):
    lines = []
    for role, path in case_files(case):
      size, digest = cache.digest(path)
      total += size
      lines.append(f'{role}\t{size}\t{digest}')
    per_case[case.case_id] = _digest('\n'.join(lines))
  whole = _digest('\n'.join(f'{k}\t{v}' for k, v in per_case.items()))
  return dict(digest=whole, bytes=total, cases=per_case)


def difference(was: dict, now: dict) -> str:
  """In words, how fingerprint `now` differs from `was` ('' if it does not)."""
  if was['digest'] == now['digest']:
    return ''
  old, new = was['cases'], now['cases']
  gone = sorted(set(old) - set(new))
  added = sorted(set(new) - set(old))
  changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
  parts = []
  for what, ids in (('missing', gone), ('new', added), ('changed', changed)):
    if ids:
      more = f' and {len(ids) - 3} more' if len(ids) > 3 else ''
      parts.append(f'{what} case(s) {", ".join(ids[:3])}{more}')
  return '; '.join(parts)


def _digest(text: str) -> str:
  return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
