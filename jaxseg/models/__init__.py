"""Model registry: `build(config.model)` -> a Flax Linen module;
`from_config(config)` the same with the label mode's outputs and precision.

`config.model.name` picks the family; every other key of `config.model` is
passed to the module as a keyword (a field of the module dataclass):

    config.model = ml_collections.ConfigDict(dict(
        name='resunet', num_classes=1, widths=(16, 32, 64, 128, 256)))
    model = models.build(config.model)

New families register themselves with `@register('name')`.
"""

from jaxseg.models import encoder_decoder  # 'simple_/deep_/resnet_encoder_decoder' (seed 001)
from jaxseg.models import med3d            # 'med3d_unet' (seed 004)
from jaxseg.models import resunet          # 'resunet' (seed 002)
from jaxseg.models import transunet        # 'transunet' (seed 003's next step)
from jaxseg.models import unet             # 'unet' (seed 003), 'unet3d' (seed 000)
from jaxseg.models import unet3d           # 'residual_unet3d', 'dilated_unet3d' (seed 000)
from jaxseg.models import unetpp           # 'unetpp' (seed 003)
from jaxseg.models.registry import (MODELS, PRECISIONS, build, fields,
                                    from_config, register)

# Importing a model module registers its classes; these are the families.
FAMILIES = (encoder_decoder, med3d, resunet, transunet, unet, unet3d, unetpp)
ResUNet = resunet.ResUNet

__all__ = ['FAMILIES', 'MODELS', 'PRECISIONS', 'ResUNet', 'build', 'fields',
           'from_config', 'register']
