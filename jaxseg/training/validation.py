"""Validation during training: metrics over every record of a prepared split."""

from jaxseg import parallel
from jaxseg.data import pipeline


def slice_metrics(eval_fn, state, source: pipeline.SliceSource, batch_size: int,
                  mesh) -> dict:
  """SegMetrics (pooled over all voxels) on every record of a prepared split."""
  merged = None
  for batch in pipeline.eval_batches(source, batch_size):
    out = eval_fn(state, parallel.to_global(parallel.local_rows(batch), mesh))
    merged = out if merged is None else merged.merge(out)
  return {k: float(v) for k, v in merged.compute().items()}
