"""Seed 003: U-Net on the LGG slices (section 6, table 6.7's best setup).

    python -m jaxseg.main --config=configs/lgg_unet.py --workdir=runs/lgg_unet

The study trained the Kaggle LGG framework's U-Net (mateuszbuda/brain-
segmentation-pytorch: 32 initial features, 4 poolings, 7,763,041 parameters)
on 3-channel 256x256 slices (pre-contrast, FLAIR, post-contrast: here T1,
FLAIR, T1ce), Dice loss, Adam lr 1e-4, batch 16, 100 epochs, no learning-rate
schedule, augmentation scale 0.05, angle 15 and horizontal flips (flips
here; scaling and rotation are not yet in jaxseg's augmentation set).
Table 7.7's SGD setup is configs/lgg_unet_sgd.py.
"""

from jaxseg import config_base


def get_config():
  """Returns the seed-003 U-Net + Dice + Adam setup."""
  config = config_base.get_config()
  config.data.modalities = ('t1', 'flair', 't1ce')
  config.data.image_size = 256
  config.model.name = 'unet'
  config.model.features = 32
  config.model.depth = 4
  config.loss.name = 'dice'
  config.loss.activation = 'sigmoid'
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-4
  config.train.batch_size = 16
  config.train.eval_batch_size = 16
  config.train.num_epochs = 100
  # No learning-rate schedule, every epoch runs; flips only.
  config_base.fixed_schedule(config, flip_prob=0.5)
  return config
