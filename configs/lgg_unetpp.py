"""Seed 003, section 9: U-Net++ ("fast mode") on the LGG slices (table 9).

    python -m jaxseg.main --config=configs/lgg_unetpp.py --workdir=runs/lgg_unetpp

As `lgg_unet.py`, with table 9's first U-Net++ row: Dice loss, Adam lr 1e-4,
batch 20, 50 epochs. The study ran "fast mode" without deep supervision.
Deep supervision ("accurate" mode, heads averaged at inference):
--config.model.deep_supervision=True
--config.loss.deep_supervision_weights='(0.25,0.25,0.25,0.25)'

On a CPU (about 6 min on 2 cores):

    python -m jaxseg.main --config=configs/lgg_unetpp.py --workdir=runs/lgg_unetpp_cpu \
        --config.data.image_size=64 \
        --config.train.num_epochs=10 --config.train.steps_per_epoch=4

The study's U-Net++ on 64 x 64 synthetic slices (96 x 96 in-plane), 10
epochs of 4 steps of 20 (40 steps, named so that the same flags with
`data.root` stay as short) instead of 50 epochs: a step at 64 x 64 is 0.24
TFLOP, 4-6 s on 2 cores. Measured 5 min 38 s (`time`; load 3.1 -> 2.2),
validation / test WT Dice 0.68 / 0.70 per volume.
"""

import ml_collections

from jaxseg import config_base


def get_config():
  """Returns the seed-003 U-Net++ setup."""
  config = config_base.sibling_config(__file__, 'lgg_unet')
  config.model = ml_collections.ConfigDict(dict(
      name='unetpp', features=(32, 64, 128, 256, 512), deep_supervision=False,
      mode='fast'))
  config.train.batch_size = 20
  config.train.eval_batch_size = 20
  config.train.num_epochs = 50
  return config
