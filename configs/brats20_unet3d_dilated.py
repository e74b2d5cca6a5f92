"""Seed 000, second network: Henry et al.'s 3D U-Net with a dilated fourth stage (23M+ parameters).

    python -m jaxseg.main --config=configs/brats20_unet3d_dilated.py --workdir=runs/unet3d_dilated

The network the study kept (section 4): a 3D U-Net whose fourth stage uses
dilated convolutions (rate 2) instead of a further down-sampling, output of
the last layer only. Training as in `brats15_resunet3d_ds.py`: FLAIR, input
(96, 144, 144, 1), batch 1, Adam 1e-4, binary focal cross-entropy, 5 epochs.
"""

from jaxseg import config_base


def get_config():
  """Returns the seed-000 dilated 3D U-Net setup."""
  config = config_base.sibling_config(__file__, 'brats15_resunet3d_ds')
  config.model.name = 'dilated_unet3d'
  return config
