"""jaxseg: brain-tumour MRI segmentation in JAX/Flax.

Importing jaxseg sets no environment variable and no XLA option: entry
points call `jaxseg.xla_cpu.configure()` before JAX's backend starts.
"""
