"""Seed 000, figure 5: the dilated 3D U-Net with four losses (BCE, focal, IoU, Dice).

    python -m jaxseg.sweep --config=configs/brats20_unet3d_dilated.py \
        --sweep=sweeps/seed000_losses.py --workdir=runs/seed000_losses

Keras' BCE, Keras' binary focal cross-entropy (gamma 2, no class
balancing), 1 - IoU and 1 - Dice, each for the same number of epochs.
"""


def get_sweep():
  return [
      ('bce', {'loss': dict(name='bce')}),
      ('focal', {'loss': dict(name='focal', alpha=None, gamma=2.0)}),
      ('iou', {'loss': dict(name='iou')}),
      ('dice', {'loss': dict(name='dice', activation='sigmoid')}),
  ]
