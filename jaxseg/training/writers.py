"""Metric writers: TensorBoard event files and `metrics.jsonl` in the workdir.

clu.metric_writers would need TensorFlow; tensorboardX writes the same event
files without it. Only process 0 writes.
"""

import json
import os
import time

import jax


def keep_records_until(path: str, step: int) -> None:
  """Drops the records of a metrics.jsonl after `step` (atomically).

  A run resumed from the checkpoint of `step` replays the steps after it and
  writes their records again: without this, the file would hold them twice.
  """
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  kept = [line for line in lines
          if line.strip() and json.loads(line).get('step', 0) <= step]
  if len(kept) == len(lines):
    return
  tmp = f'{path}.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.writelines(kept)
  os.replace(tmp, path)


class MetricWriter:
  """Writes scalars to `<workdir>/tensorboard/` and `<workdir>/metrics.jsonl`.

  `start_step` is the step the run starts (or resumes) from: records after
  it, left by an interrupted run, are dropped from metrics.jsonl and hidden
  from TensorBoard (its purge_step), so both show the run once.
  """

  def __init__(self, workdir: str, start_step: int = 0):
    self._active = jax.process_index() == 0
    if not self._active:
      return
    from tensorboardX import SummaryWriter
    path = os.path.join(workdir, 'metrics.jsonl')
    keep_records_until(path, start_step)
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'),
                             purge_step=start_step + 1)
    self._jsonl = open(path, 'a')

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self._active:
      return
    for name, value in scalars.items():
      self._tb.add_scalar(name, float(value), step)
    record = dict(step=int(step), time=time.time(),
                  **{k: float(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()

  def close(self) -> None:
    if self._active:
      self._tb.close()
      self._jsonl.close()
