"""XLA:CPU options that jaxseg sets before JAX's backend starts.

jaxlib 0.10 hands convolutions on the CPU to its YNNPACK library fusion
(`__ynn_fusion` in the optimised HLO). For the 3x3 convolutions of the model
zoo that path is slower than XLA's own (Eigen) convolution: ~2x on the
forward pass and 4-14x on the weight gradient on this 2-core CPU, while
YNNPACK's matrix products are faster than XLA's (benchmarks/conv_grad.py).
Keeping YNNPACK for elementwise ops and reductions as well cost the U-Net
step ~25 %, so jaxseg keeps it for dots only:

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot

It is opt-in, with JAXSEG_XLA_CPU=fast: without YNNPACK for elementwise ops
and reductions, a tiny seed-002 run on 1 and on 4 devices ends 3 SGD steps
4.5e-4 apart (1.7e-5 after one step) where XLA's defaults keep them within
1e-5, while each convolution stays within 3e-7 of a float64 reference.
Until that is understood the default is XLA's own pipeline.

`set_defaults()` adds the flag when JAXSEG_XLA_CPU=fast asks for it, JAX has
not started yet, the installed jaxlib is one it was measured on, and
XLA_FLAGS does not already name the option. It only touches the CPU
backend; GPU and TPU compilations ignore it.
"""

import importlib.metadata
import os
import sys
from typing import MutableMapping

OPTION = 'xla_cpu_experimental_ynn_fusion_type'
YNN_KINDS = 'dot'
# The same setting as `compiler_options` of one jit (benchmarks compare it
# with XLA's defaults in one process).
COMPILER_OPTIONS = {OPTION: ','.join(
    f'LIBRARY_FUSION_TYPE_{kind.upper()}' for kind in YNN_KINDS.split(','))}
# jaxlib (major, minor) versions whose XLA knows OPTION and was measured.
MEASURED_JAXLIB = ((0, 10),)


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


def set_defaults(environ: MutableMapping[str, str] = os.environ,
                 jaxlib_version: tuple[int, int] | None = None) -> bool:
  """Adds jaxseg's XLA:CPU flag to environ['XLA_FLAGS']; True if it did.

  A started backend has read os.environ already: then nothing changes.
  """
  flags = environ.get('XLA_FLAGS', '')
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  started = environ is os.environ and _backend_started()
  if (environ.get('JAXSEG_XLA_CPU') != 'fast' or OPTION in flags
      or version not in MEASURED_JAXLIB or started):
    return False
  environ['XLA_FLAGS'] = f'{flags} --{OPTION}={YNN_KINDS}'.strip()
  return True
