"""Seed 001, model C: the residual CNN encoder-decoder (figure 8, 435,553 parameters).

    python -m jaxseg.main --config=configs/coco_cnn_resnet.py --workdir=runs/cnn_resnet

As `coco_cnn_simple.py` (256x256 grey slices, flips), with batch norm and
Dropout2d in the residual blocks and BCE on logits (the study's
BCEWithLogitsLoss, which let it drop the final sigmoid layer).
"""

import ml_collections

from jaxseg import config_base


def get_config():
  """Returns the seed-001 residual encoder-decoder setup."""
  config = config_base.sibling_config(__file__, 'coco_cnn_simple')
  config.model.name = 'resnet_encoder_decoder'
  config.loss = ml_collections.ConfigDict(dict(name='bce'))
  return config
