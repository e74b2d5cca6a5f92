"""Seed 003's next step: TransUNet on the LGG slices (a small, CPU-sized default).

    python -m jaxseg.main --config=configs/lgg_transunet.py --workdir=runs/lgg_transunet

The study proposed TransU-Net but did not train it; this runs it with the
U-Net's training setup (`lgg_unet.py`: Dice, Adam 1e-4, batch 16, 256x256x3).
The model fields give the original R50-ViT-B/16 layout too (see
jaxseg/models/transunet.py).

On a CPU (about 4 min on 2 cores):

    python -m jaxseg.main --config=configs/lgg_transunet.py --workdir=runs/lgg_transunet_cpu \
        --config.data.image_size=64 \
        --config.train.num_epochs=100 --config.train.steps_per_epoch=4

All 100 epochs of 4 steps (the synthetic set's epoch length, named so that
the same flags with `data.root` stay as short) on 64 x 64 synthetic slices
(96 x 96 in-plane). Measured 4 min 2 s (`time`; load 2.2 -> 2.7),
validation / test WT Dice 0.83 / 0.84 per volume (25 epochs: 2 min 1 s,
0.49 / 0.50). At 256 x 256 one step is 0.34 TFLOP.
"""

import ml_collections

from jaxseg import config_base


def get_config():
  """Returns the TransUNet setup on the seed-003 data."""
  config = config_base.sibling_config(__file__, 'lgg_unet')
  config.model = ml_collections.ConfigDict(dict(name='transunet'))
  return config
