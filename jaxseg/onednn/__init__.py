"""oneDNN convolutions for JAX on the CPU (XLA FFI), with XLA's as fallback.

    from jaxseg import onednn
    y = onednn.conv_general_dilated(x, w, (1, 1), 'SAME',
                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    nn.Conv(16, (3, 3), conv_general_dilated=onednn.conv_general_dilated)

`conv_general_dilated` has lax.conv_general_dilated's signature and result.
It runs oneDNN's forward, backward-data and backward-weights primitives
(conv.cc, through `jax.ffi.ffi_call`) for 2D/3D channels-last f32/bf16
convolutions with strides, padding, rhs dilation and lhs dilation
(transposed convolution), and lax.conv_general_dilated for everything else
(`plan` says what and why; `fallback=False` raises `Unsupported` instead).
It is differentiable (custom_vjp), vmappable (activations-only batches fold
into N) and partitioned per batch shard under jit with sharded inputs.
`conv_transpose` is lax.conv_transpose (flax's nn.ConvTranspose) on it.

`available()` is False where the extension is not built or oneDNN's
runtime wheel is missing (one warning per process says so), or with
JAXSEG_ONEDNN=0; the functions then are lax's. JAXSEG_ONEDNN_THREADS sets
the OpenMP threads of a call (default: cores // devices running it).
"""

from jaxseg.onednn._loader import extension_path
from jaxseg.onednn._ops import available
from jaxseg.onednn._ops import cache_size
from jaxseg.onednn._ops import conv_general_dilated
from jaxseg.onednn._ops import conv_transpose
from jaxseg.onednn._ops import describe
from jaxseg.onednn._ops import plan
from jaxseg.onednn._ops import Plan
from jaxseg.onednn._ops import run
from jaxseg.onednn._ops import Spec
from jaxseg.onednn._ops import threads
from jaxseg.onednn._ops import unavailable_reason
from jaxseg.onednn._ops import Unsupported
from jaxseg.onednn import _loader as _loader_module

# Load now: the one warning (where unavailable) comes at import.
_loader_module.state()

__all__ = ['available', 'cache_size', 'conv_general_dilated',
           'conv_transpose', 'describe', 'extension_path', 'plan', 'Plan',
           'run', 'Spec', 'threads', 'unavailable_reason', 'Unsupported']
