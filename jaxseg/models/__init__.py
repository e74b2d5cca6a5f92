"""Model registry: `build(config.model)` -> a Flax Linen module.

`config.model.name` picks the family; every other key of `config.model` is
passed to the module as a keyword (a field of the module dataclass):

    config.model = ml_collections.ConfigDict(dict(
        name='resunet', num_classes=1, widths=(16, 32, 64, 128, 256)))
    model = models.build(config.model)

New families register themselves with `@register('name')`.
"""

from jaxseg.models.registry import MODELS, build, fields, register

# Each model module registers its classes on import. One line per module:
from jaxseg.models import resunet  # noqa: E402,F401  'resunet'
# (end of model modules)

ResUNet = resunet.ResUNet

__all__ = ['MODELS', 'ResUNet', 'build', 'fields', 'register']
