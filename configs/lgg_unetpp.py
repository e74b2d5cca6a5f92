"""Seed 003, section 9: U-Net++ ("fast mode") on the LGG slices (table 9).

    python -m jaxseg.main --config=configs/lgg_unetpp.py --workdir=runs/lgg_unetpp

As `lgg_unet.py`, with table 9's first U-Net++ row: Dice loss, Adam lr 1e-4,
batch 20, 50 epochs. The study ran "fast mode" without deep supervision.
Deep supervision ("accurate" mode, heads averaged at inference):
--config.model.deep_supervision=True
--config.loss.deep_supervision_weights='(0.25,0.25,0.25,0.25)'
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
