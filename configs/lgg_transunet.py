"""Seed 003's next step: TransUNet on the LGG slices (a small, CPU-sized default).

    python -m jaxseg.main --config=configs/lgg_transunet.py --workdir=runs/lgg_transunet

The study proposed TransU-Net but did not train it; this runs it with the
U-Net's training setup (`lgg_unet.py`: Dice, Adam 1e-4, batch 16, 256x256x3).
The model fields give the original R50-ViT-B/16 layout too (see
jaxseg/models/transunet.py).
"""

import ml_collections

from jaxseg import config_base


def get_config():
  """Returns the TransUNet setup on the seed-003 data."""
  config = config_base.sibling_config(__file__, 'lgg_unet')
  config.model = ml_collections.ConfigDict(dict(name='transunet'))
  return config
