"""Metric writers: TensorBoard event files and `metrics.jsonl` in the workdir.

clu.metric_writers would need TensorFlow; tensorboardX writes the same event
files without it. Only process 0 writes.
"""

import json
import os
import time

import jax


class MetricWriter:
  """Writes scalars to `<workdir>/tensorboard/` and `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if not self._active:
      return
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

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
