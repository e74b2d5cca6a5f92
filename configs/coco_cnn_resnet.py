"""Seed 001, model C: the residual CNN encoder-decoder (figure 8, 435,553 parameters).

    python -m jaxseg.main --config=configs/coco_cnn_resnet.py --workdir=runs/cnn_resnet

As `coco_cnn_simple.py` (256x256 grey slices, flips), with batch norm and
Dropout2d in the residual blocks and BCE on logits (the study's
BCEWithLogitsLoss, which let it drop the final sigmoid layer).

On a CPU (about 5 min on 2 cores):

    python -m jaxseg.main --config=configs/coco_cnn_resnet.py --workdir=runs/cnn_resnet_cpu \
        --config.data.image_size=64 \
        --config.train.num_epochs=50 --config.train.steps_per_epoch=4

As `coco_cnn_simple.py`'s CPU run: 64 x 64 synthetic slices, 50 epochs of
4 steps. Measured 5 min 20 s (`time`; load 4.7 -> 4.4, another job
running), validation / test WT Dice 0.88 / 0.83 per volume. At 256 x 256
one step is 0.67 TFLOP: roughly an hour for the 200 steps at this run's
rate.
"""

import ml_collections

from jaxseg import config_base


def get_config():
  """Returns the seed-001 residual encoder-decoder setup."""
  config = config_base.sibling_config(__file__, 'coco_cnn_simple')
  config.model.name = 'resnet_encoder_decoder'
  config.loss = ml_collections.ConfigDict(dict(name='bce'))
  return config
