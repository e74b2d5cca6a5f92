"""Where the model zoo's ops run: oneDNN's kernels on the CPU, XLA's elsewhere.

The one place that chooses an implementation by platform:

  conv_general_dilated, conv_transpose
      oneDNN's convolution (`jaxseg.onednn`, the kernels PyTorch's CPU path
      calls) where the program is lowered for the CPU and the extension is
      built; XLA's convolution on every other platform (cuDNN on a GPU, the
      TPU's units), where the extension is missing (macOS, ARM, no compiler)
      and for what oneDNN does not run (float64, feature groups).
  on_cpu(cpu, native, *args)
      a CPU-only formulation of another op (jaxseg.models.norms' one-pass
      normalisation) on CPU lowerings, `native` elsewhere.

The choice is made per lowering platform (`lax.platform_dependent`), not
from the process's backend: a program lowered on a CPU host for a GPU or
TPU (`jax.export`, `.trace(...).lower(lowering_platforms=...)`) gets XLA's
ops, and one exported for several platforms carries both
(tests/models/test_lowering.py). Both implementations have the same parameters,
so checkpoints move between machines. `JAXSEG_ONEDNN=0` turns oneDNN off.
"""

import functools
from typing import Callable

from jax import lax

from jaxseg import onednn


def on_cpu(cpu: Callable, native: Callable, *args):
  """cpu(*args) in a program lowered for the CPU, native(*args) elsewhere.

  Both are traced; they must return the same shapes and dtypes. Arguments
  are arrays (pytrees); static settings are closed over.
  """
  return lax.platform_dependent(*args, cpu=cpu, default=native)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, precision=None,
                         preferred_element_type=None):
  """lax.conv_general_dilated (flax's nn.Conv takes it as an argument), on
  oneDNN in CPU lowerings where it runs this convolution."""
  settings = dict(window_strides=window_strides, padding=padding,
                  lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                  dimension_numbers=dimension_numbers,
                  feature_group_count=feature_group_count,
                  preferred_element_type=preferred_element_type)
  native = functools.partial(lax.conv_general_dilated, precision=precision,
                             **settings)
  if not onednn.available():
    return native(lhs, rhs)
  try:
    plan = onednn.plan(lhs, rhs, **settings)
  except onednn.Unsupported:
    return native(lhs, rhs)
  return on_cpu(functools.partial(onednn.run, plan), native, lhs, rhs)


def conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None,
                   dimension_numbers=None, transpose_kernel: bool = False):
  """lax.conv_transpose (flax's nn.ConvTranspose), through
  `conv_general_dilated`: oneDNN's deconvolution in CPU lowerings."""
  return onednn.conv_transpose(
      lhs, rhs, strides, padding, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, transpose_kernel=transpose_kernel,
      conv=conv_general_dilated)
