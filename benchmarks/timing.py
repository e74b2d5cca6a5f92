"""The one timing rule of the benchmarks: median wall time after warm-up."""

import os
import statistics
import time
from typing import Callable, Mapping


def median_time(fn: Callable[[], object], steps: int, warmup: int = 1) -> float:
  """Median seconds of `steps` calls of fn() (which must block until done).

  `warmup` calls run first and are not timed (compilation, caches).
  """
  return median_times({'fn': fn}, steps, warmup)['fn']


def median_times(fns: Mapping[str, Callable[[], object]], steps: int,
                 warmup: int = 1, pause: float = 0.0,
                 clock: str = 'wall', settle: int = 0) -> dict:
  """{name: median seconds of `steps` calls}, the calls interleaved.

  Each round calls every fn once, in order, so that a change of load on a
  shared machine falls on all of them alike (a ratio of two medians taken
  minutes apart on a busy machine can move by 2x). `pause` seconds of sleep
  before each timed call let the previous call's worker threads go idle
  (OpenMP and Eigen spin for a while after a parallel region). `settle`
  untimed calls of the same fn then run right before the timed one: after a
  pause the worker threads (and on a VM the virtual cores) must wake up
  again, which costs a millisecond-scale call ~10 ms here; settled, the
  timed call sees threads as hot as they are between a train step's ops.

  clock='cpu' measures the process's CPU time instead of wall time: on a
  machine others load, and with the process pinned to one core
  (`taskset -c 0`, so that XLA and PyTorch both run one thread), it counts
  the work and not the waiting for a core. A diagnostic: the speed that
  matters is wall time on an idle machine.
  """
  now = {'wall': time.perf_counter, 'cpu': time.process_time}[clock]
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(steps):
    for name, fn in fns.items():
      if pause:
        time.sleep(pause)
      for _ in range(settle):
        fn()
      t0 = now()
      fn()
      times[name].append(now() - t0)
  return {name: statistics.median(t) for name, t in times.items()}


def load_average() -> float:
  """The 1-minute load average (nan where the OS has none)."""
  try:
    return os.getloadavg()[0]
  except (AttributeError, OSError):
    return float('nan')
