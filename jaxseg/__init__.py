"""jaxseg: brain-tumour MRI segmentation in JAX/Flax."""

from jaxseg import xla_cpu as _xla_cpu

_xla_cpu.set_defaults()
