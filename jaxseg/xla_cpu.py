"""XLA:CPU options that jaxseg sets before JAX's backend starts.

jaxlib 0.10 hands convolutions, matrix products, elementwise fusions and
reductions on the CPU to its YNNPACK library (`__ynn_fusion` in the
optimised HLO). For the 3x3 convolutions of the model zoo YNNPACK is slower
than XLA's own (Eigen) convolution: ~2x on the forward pass and 4-14x on the
weight gradient on a 2-core CPU (benchmarks/conv_grad.py). So jaxseg takes
convolutions out of YNNPACK and keeps the rest; JAXSEG_XLA_CPU picks:

  (unset)   YNNPACK for dots, elementwise ops and reductions:
            --xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce
            U-Net step 1.47x XLA's defaults; gradients as accurate as them.
  fast      YNNPACK for dots only (=dot): 2.05x XLA's defaults, but XLA's
            own reductions round more: a tiny ResU-Net's gradient on one
            device is 9e-6 from float64 (relative L2) instead of 6e-7, so
            1- and N-device runs drift apart faster.
  xla       XLA's own defaults (convolutions in YNNPACK too).

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

import importlib.metadata
import os
import sys
from typing import MutableMapping
import warnings

OPTION = 'xla_cpu_experimental_ynn_fusion_type'
ENV = 'JAXSEG_XLA_CPU'
# JAXSEG_XLA_CPU value -> YNNPACK fusion kinds (None: XLA's defaults).
MODES = {'': 'dot,eltwise,reduce', 'fast': 'dot', 'xla': None}
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


def _backend_started() -> bool:
  """True once JAX has created a backend (XLA_FLAGS is read then)."""
  xla_bridge = sys.modules.get('jax._src.xla_bridge')
  return bool(xla_bridge is not None and getattr(xla_bridge, '_backends', None))


def configure(environ: MutableMapping[str, str] = os.environ,
              jaxlib_version: tuple[int, int] | None = None) -> bool:
  """Sets jaxseg's XLA:CPU options; call it before JAX's backend starts.

  Adds the JAXSEG_XLA_CPU mode's option to environ['XLA_FLAGS'] (see the
  module docstring for when it does not). Returns True if it did. Raises
  ValueError for an unknown mode.
  """
  mode = environ.get(ENV, '').strip().lower()
  if mode not in MODES:
    raise ValueError(f'{ENV}={environ[ENV]!r} is not a jaxseg XLA:CPU mode; '
                     f'use one of: unset, {", ".join(m for m in MODES if m)}')
  flags = environ.get('XLA_FLAGS', '')
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if MODES[mode] is None or OPTION in flags or version not in MEASURED_JAXLIB:
    return False
  if environ is os.environ and _backend_started():
    warnings.warn('jaxseg.xla_cpu.configure() ran after JAX started its '
                  'backend: XLA_FLAGS is read then, so jaxseg\'s XLA:CPU '
                  'option is not set in this process', stacklevel=2)
    return False
  environ['XLA_FLAGS'] = f'{flags} --{OPTION}={MODES[mode]}'.strip()
  return True
