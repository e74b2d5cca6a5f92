"""The one timing rule of the benchmarks: median wall time after warm-up."""

import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], steps: int, warmup: int = 1) -> float:
  """Median seconds of `steps` calls of fn() (which must block until done).

  `warmup` calls run first and are not timed (compilation, caches).
  """
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)
