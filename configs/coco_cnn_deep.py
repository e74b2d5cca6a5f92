"""Seed 001, model B: the deeper CNN encoder-decoder (figure 5, 133,857 parameters).

    python -m jaxseg.main --config=configs/coco_cnn_deep.py --workdir=runs/cnn_deep

As `coco_cnn_simple.py` (256x256 grey slices, flips), with the study's
better loss for this model, binary cross-entropy.
"""

import ml_collections

from jaxseg import config_base


def get_config():
  """Returns the seed-001 deep encoder-decoder setup."""
  config = config_base.sibling_config(__file__, 'coco_cnn_simple')
  config.model.name = 'deep_encoder_decoder'
  config.loss = ml_collections.ConfigDict(dict(name='bce'))
  return config
