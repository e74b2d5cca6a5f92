"""Seed 000, second network: Henry et al.'s 3D U-Net with a dilated fourth stage (23M+ parameters).

    python -m jaxseg.main --config=configs/brats20_unet3d_dilated.py --workdir=runs/unet3d_dilated

The network the study kept (section 4): a 3D U-Net whose fourth stage uses
dilated convolutions (rate 2) instead of a further down-sampling, output of
the last layer only. Training as in `brats15_resunet3d_ds.py`: FLAIR, input
(96, 144, 144, 1), batch 1, Adam 1e-4, binary focal cross-entropy, 5 epochs.

On a CPU (about 3 min on 2 cores):

    python -m jaxseg.main --config=configs/brats20_unet3d_dilated.py --workdir=runs/unet3d_dilated_cpu \
        --config.data.image_size=48 --config.data.depth=32 \
        --config.train.num_epochs=5 --config.train.steps_per_epoch=4

The whole network and the study's 5 epochs, on volumes of 32 x 48 x 48 from
the embedded synthetic set (no `data.root`; 4 steps per epoch, its epoch
length, named so that the same flags with `data.root` stay as short).
Measured 2 min 38 s (`time`; load 5.2 -> 4.3, another job running),
validation / test WT Dice 0.84 / 0.75 per volume. At the study's 96 x 144 x
144 one step is 5.5 TFLOP, minutes each on a CPU.
"""

from jaxseg import config_base


def get_config():
  """Returns the seed-000 dilated 3D U-Net setup."""
  config = config_base.sibling_config(__file__, 'brats15_resunet3d_ds')
  config.model.name = 'dilated_unet3d'
  return config
