"""Which implementation a layer runs: XLA's native op or a CPU substitute.

Some layers of the model zoo have a second implementation that was measured
faster on XLA's CPU backend (jax 0.10) and only there:

  * 3D stride-1 convolutions as 2D convolutions of the depth slices
    (`convolution`),
  * max-pooling as reshape + argmax, transposed convolution as sub-pixel
    stride-1 convolutions (`sampling`),
  * batch, instance, group and layer norm with one-pass float32 statistics
    and a closed-form backward pass (`norms`).

On a GPU or TPU XLA's native convolution, transposed convolution,
reduce-window pooling and flax's normalisation are what its compilers are
built for (cuDNN, the TPU's convolution units), and the substitutes would
cost memory (the 3D convolution's kd shifted copies) and speed.
Every registered model has a field `kernels` (config key
`model.kernels`) that every layer gets:

  'auto'    (default) the substitutes where the program is lowered for the
            CPU, the native ops on every other platform. The choice is made
            per lowering platform (`lax.platform_dependent`), not from the
            backend of the process, so a program lowered on a CPU host for
            a GPU or TPU (`jax.export`, `.trace(...).lower(
            lowering_platforms=...)`) gets the native ops, and a program
            exported for several platforms carries both.
  'native'  XLA's native ops on every platform.
  'cpu'     the substitutes on every platform (to test them anywhere).

Both implementations have the same parameters, so checkpoints move between
them; their values and gradients agree up to float summation order
(tests/test_convolution.py, test_sampling.py, test_norms.py; whole train
steps in test_lowering.py, which also lowers them for cuda and tpu on a CPU
host).
"""

from typing import Callable

from jax import lax

KERNELS = ('auto', 'native', 'cpu')


def check(kernels: str) -> str:
  """Returns `kernels`; ValueError unless it is one of KERNELS."""
  if kernels not in KERNELS:
    raise ValueError(f'kernels={kernels!r}; known: {", ".join(KERNELS)}')
  return kernels


def choose(kernels: str, cpu: Callable, native: Callable, *args):
  """cpu(*args) or native(*args), as `kernels` says (see the module doc).

  Under 'auto' both are traced and the lowering keeps the one of each
  lowering platform: `cpu` for 'cpu', `native` for any other. Both must
  return the same shapes and dtypes; arguments are arrays (pytrees), static
  settings are closed over.
  """
  check(kernels)
  if kernels == 'native':
    return native(*args)
  if kernels == 'cpu':
    return cpu(*args)
  return lax.platform_dependent(*args, cpu=cpu, default=native)
