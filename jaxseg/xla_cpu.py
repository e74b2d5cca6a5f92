"""XLA:CPU options that jaxseg sets before JAX's backend starts.

jaxlib 0.10 hands convolutions, matrix products, elementwise fusions and
reductions on the CPU to its YNNPACK library (`__ynn_fusion` in the
optimised HLO). For the 3x3 convolutions of the model zoo YNNPACK is slower
than XLA's own (Eigen + oneDNN sgemm) convolution: ~2x on the forward pass
and 4-14x on the weight gradient on a 2-core CPU (docs/speed.md).
Its elementwise fusions are slower than XLA's own loops too wherever a
broadcast operand is involved (XLA materialises the broadcast for them): a
GroupNorm + ReLU forward and backward 1.9x, a ResU-Net step 1.1x
(docs/speed.md). Its matrix products and reductions are the
fastest there are here. JAXSEG_XLA_CPU picks:

  (unset)   YNNPACK for dots and reductions:
            --xla_cpu_experimental_ynn_fusion_type=dot,reduce
            gradients as accurate as XLA's defaults (a tiny ResU-Net's
            train-step gradient 1.33e-6 from float64, relative L2, against
            1.31e-6 with XLA's defaults and flax's layers).
  fast      YNNPACK for dots only (=dot): XLA's own reductions round more
            (5.7e-6 from float64), and it is no longer faster.
  xla       XLA's own defaults (convolutions in YNNPACK too), and glibc's
            allocator settings left alone.

Besides the option, configure() makes glibc keep freed memory for reuse
(`keep_freed_memory`) where JAX will run on the CPU and the machine has
memory to spare, since XLA:CPU maps and unmaps each step's temporary buffer
afresh otherwise. That costs memory: the heap ends up holding about two
step buffers (the seed-002 main job peaks at 4.9 GiB resident instead of
2.7 GiB, for a 1.17x faster run, on 2 cores). JAXSEG_MALLOC picks:

  (unset)   keep freed memory where the machine has at least 32 GiB of RAM,
            glibc's own behaviour below (a laptop).
  keep      keep freed memory.
  system    glibc's own behaviour.

`configure()` is the one function that applies these settings. Importing
jaxseg changes no environment variable; the entry points call configure()
before JAX's backend starts (jaxseg.main and jaxseg.sweep through
cli.setup(), the benchmarks, tests/conftest.py). It adds the option to
XLA_FLAGS unless XLA_FLAGS already names it, JAX's backend has started (it
has read XLA_FLAGS then: a warning says the call came too late), or the
installed jaxlib is not one it was measured on. The option is an XLA:CPU
one: GPU and TPU compilations do not read it, so non-CPU platforms are left
as they are.
"""

import ctypes
import importlib.metadata
import os
import sys
from typing import MutableMapping
import warnings

OPTION = 'xla_cpu_experimental_ynn_fusion_type'
ENV = 'JAXSEG_XLA_CPU'
MALLOC_ENV = 'JAXSEG_MALLOC'
# Physical memory from which JAXSEG_MALLOC's default keeps freed memory.
KEEP_FREED_FROM_BYTES = 32 * 2 ** 30
# JAXSEG_XLA_CPU value -> YNNPACK fusion kinds (None: XLA's defaults).
MODES = {'': 'dot,reduce', 'fast': 'dot', 'xla': None}
# jaxlib (major, minor) versions whose XLA knows OPTION and was measured.
MEASURED_JAXLIB = ((0, 10),)


def compiler_options(mode: str = '') -> dict[str, str] | None:
  """A mode's setting as `jax.jit(...).lower(...).compile(compiler_options)`.

  Benchmarks use it to compare modes in one process.
  """
  kinds = MODES[mode]
  if kinds is None:
    return None
  return {OPTION: ','.join(f'LIBRARY_FUSION_TYPE_{kind.upper()}'
                           for kind in kinds.split(','))}


def _jaxlib_version() -> tuple[int, int]:
  try:
    parts = importlib.metadata.version('jaxlib').split('.')
    return int(parts[0]), int(parts[1])
  except (importlib.metadata.PackageNotFoundError, ValueError, IndexError):
    return (0, 0)


# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# Installed packages that give JAX a GPU or TPU backend.
_ACCELERATOR_PACKAGES = ('jax-cuda', 'jax_cuda', 'jax-rocm', 'jax_rocm',
                         'libtpu')


def _cpu_only(environ) -> bool:
  """True if JAX will run on the CPU: JAX_PLATFORMS says so, or no GPU/TPU
  plugin is installed."""
  platforms = environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  names = (d.metadata['Name'] or '' for d in importlib.metadata.distributions())
  return not any(n.lower().startswith(_ACCELERATOR_PACKAGES) for n in names)


def keep_freed_memory() -> bool:
  """Makes glibc reuse freed memory instead of mapping it afresh.

  XLA:CPU allocates each execution's temporary buffer (hundreds of MB for a
  train step) with posix_memalign and frees it after the step. glibc serves
  such sizes with a fresh mmap from worker threads' arenas (even with
  M_MMAP_MAX=0, which only the main arena obeys), so every step faults in
  and zeroes every page and unmaps it again: 20-25 % of a ResU-Net step's
  CPU time in the kernel on a 2-core CPU. One arena, no mmap and a high
  trim threshold keep the pages in the heap for the next step (the process
  keeps its peak memory). Returns True if glibc took the settings; False
  off glibc.
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  return all([mallopt(_M_ARENA_MAX, 1) == 1, mallopt(_M_MMAP_MAX, 0) == 1,
              mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1])


def release_freed_memory() -> None:
  """Returns the heap's free pages to the system (glibc's malloc_trim).

  With `keep_freed_memory` the heap keeps whatever was freed, and a CPU
  compilation frees ~0.4 GB of LLVM's memory that the train step's buffers
  do not reuse (measured on the seed-002 ResU-Net); call this after
  compiling. A no-op off glibc.
  """
  if not sys.platform.startswith('linux'):
    return
  try:
    ctypes.CDLL(None).malloc_trim(0)
  except (OSError, AttributeError):
    pass


def _physical_memory_bytes() -> int:
  try:
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (ValueError, OSError, AttributeError):
    return 0


def wants_kept_memory(environ: MutableMapping[str, str] = os.environ,
                      physical_bytes: int | None = None) -> bool:
  """JAXSEG_MALLOC's choice (module docstring); ValueError for an unknown value."""
  choice = environ.get(MALLOC_ENV, '').strip().lower()
  if choice not in ('', 'keep', 'system'):
    raise ValueError(f'{MALLOC_ENV}={environ[MALLOC_ENV]!r}: use keep, system '
                     'or leave it unset')
  if choice:
    return choice == 'keep'
  if physical_bytes is None:
    physical_bytes = _physical_memory_bytes()
  return physical_bytes >= KEEP_FREED_FROM_BYTES


def _backend_started() -> bool:
  """True once JAX has created a backend (XLA_FLAGS is read then)."""
  xla_bridge = sys.modules.get('jax._src.xla_bridge')
  return bool(xla_bridge is not None and getattr(xla_bridge, '_backends', None))


def configure(environ: MutableMapping[str, str] = os.environ,
              jaxlib_version: tuple[int, int] | None = None) -> bool:
  """Sets jaxseg's XLA:CPU options; call it before JAX's backend starts.

  Adds the JAXSEG_XLA_CPU mode's option to environ['XLA_FLAGS'] (see the
  module docstring for when it does not) and, in this process
  (environ is os.environ) where JAX will run on the CPU and JAXSEG_MALLOC
  asks for it (`wants_kept_memory`), makes glibc keep freed memory
  (`keep_freed_memory`). Returns True if it changed anything. Raises
  ValueError for an unknown mode.
  """
  mode = environ.get(ENV, '').strip().lower()
  if mode not in MODES:
    raise ValueError(f'{ENV}={environ[ENV]!r} is not a jaxseg XLA:CPU mode; '
                     f'use one of: unset, {", ".join(m for m in MODES if m)}')
  flags = environ.get('XLA_FLAGS', '')
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if MODES[mode] is None:
    return False  # XLA's (and glibc's) own defaults
  this_process = environ is os.environ
  set_flag = OPTION not in flags and version in MEASURED_JAXLIB
  if this_process and _backend_started():
    if set_flag:
      warnings.warn('jaxseg.xla_cpu.configure() ran after JAX started its '
                    'backend: XLA_FLAGS is read then, so jaxseg\'s XLA:CPU '
                    'option is not set in this process', stacklevel=2)
    return False
  if set_flag:
    environ['XLA_FLAGS'] = f'{flags} --{OPTION}={MODES[mode]}'.strip()
  allocator = (this_process and _cpu_only(environ) and
               wants_kept_memory(environ) and keep_freed_memory())
  return set_flag or allocator
