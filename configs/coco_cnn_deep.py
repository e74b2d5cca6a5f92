"""Seed 001, model B: the deeper CNN encoder-decoder (figure 5, 133,857 parameters).

    python -m jaxseg.main --config=configs/coco_cnn_deep.py --workdir=runs/cnn_deep

As `coco_cnn_simple.py` (256x256 grey slices, flips), with the study's
better loss for this model, binary cross-entropy.

On a CPU (about 1 min on 2 cores):

    python -m jaxseg.main --config=configs/coco_cnn_deep.py --workdir=runs/cnn_deep_cpu \
        --config.data.image_size=64 \
        --config.train.num_epochs=50 --config.train.steps_per_epoch=4

As `coco_cnn_simple.py`'s CPU run: 64 x 64 synthetic slices, 50 epochs of
4 steps. Measured 1 min 12 s (`time`; load 4.5 -> 4.7, another job
running), validation / test WT Dice 0.86 / 0.81 per volume.
"""

import ml_collections

from jaxseg import config_base


def get_config():
  """Returns the seed-001 deep encoder-decoder setup."""
  config = config_base.sibling_config(__file__, 'coco_cnn_simple')
  config.model.name = 'deep_encoder_decoder'
  config.loss = ml_collections.ConfigDict(dict(name='bce'))
  return config
