"""`Conv`: flax's nn.Conv with its convolution through jaxseg.models.ops.

oneDNN's convolution in programs lowered for the CPU (where the extension
is built), XLA's elsewhere. Same fields, parameter names and shapes as
nn.Conv, so checkpoints and weight ports carry over.
"""

import flax.linen as nn

from jaxseg.models import ops


def Conv(*args, **kwargs) -> nn.Conv:  # pylint: disable=invalid-name
  """nn.Conv (same fields, parameters, auto-name) computing its convolution
  with `ops.conv_general_dilated`."""
  return nn.Conv(*args, conv_general_dilated=ops.conv_general_dilated,
                 **kwargs)
