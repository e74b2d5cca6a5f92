"""Seed 002's ResU-Net on the real BraTS 2018 sample (`../shared/data/brats18_wt`).

    python -m jaxseg.main --config=configs/brats18_wt_resunet.py --workdir=runs/brats18_wt

Eight expert-annotated cases with FLAIR and T1 and a binary whole-tumour
mask: 6 train, 2 validate (no test split; the validation cases are scored
per volume at the end). Everything else is seed 002's setup.
"""

import os

from jaxseg import config_base

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                     'shared', 'data', 'brats18_wt')


def get_config():
  """Returns the seed-002 setup on the brats18_wt sample."""
  config = config_base.sibling_config(__file__, 'brats19_resunet')
  config.data.root = os.path.normpath(_ROOT)
  config.data.modalities = ('flair', 't1')
  config.data.label_mode = 'binary'
  config.data.split = (0.75, 0.25, 0.0)
  return config
