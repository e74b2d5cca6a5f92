"""Seed 004: MedicalNet ResNet-10 per modality (shared weights) + 3D U-Net decoder.

    python -m jaxseg.main --config=configs/brats19_med3d_unet.py --workdir=runs/med3d

The study's best model: "U-net with pre trained Resnet-10 with changing the
pretrained weights" on BraTS 2019, four modalities, outputs ET/TC/WT
(`label_mode='regions'`), BCE-with-logits loss, Adam lr 1e-3 stepped every
epoch for 10 epochs, batch 1, centre crop, random flips and rotation (flips
here). The crop size is not given: each case is cropped around the brain and
resized to (96, 128, 128) here. Start from MedicalNet's weights with
--config.pretrained.path=/path/to/resnet_10.pth ; freeze the backbone (the
study's "without changing the pretrained weights") with
--config.optimizer.frozen='("backbone",)'.

On a CPU (about 5 min on 2 cores):

    python -m jaxseg.main --config=configs/brats19_med3d_unet.py --workdir=runs/med3d_cpu \
        --config.data.image_size=48 --config.data.depth=32 \
        --config.train.num_epochs=10 --config.train.steps_per_epoch=4

The whole network and the study's 10 epochs, on volumes of 32 x 48 x 48 of
the embedded synthetic set (no `data.root`; 4 steps per epoch, its epoch
length, named so that the same flags with `data.root` stay as short).
Measured 4 min 45 s (`time`; load 4.6 -> 4.9, another job running),
validation / test WT Dice 0.73 / 0.75 per volume. At 48 x 64 x 64 the same
run took 9 min 22 s; at 96 x 128 x 128 one step is 1.6 TFLOP.
"""

from jaxseg import config_base


def get_config():
  """Returns the seed-004 Med3D U-Net setup."""
  config = config_base.get_config()
  config.data.modalities = ('t1', 't1ce', 't2', 'flair')
  config.data.label_mode = 'regions'
  config.data.dims = 3
  config.data.image_size = 128
  config.data.depth = 96
  config.model.name = 'med3d_unet'
  config.model.depth = 10
  config.loss.name = 'bce'
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  config.train.batch_size = 1
  config.train.eval_batch_size = 1
  config.train.num_epochs = 10
  # No learning-rate schedule, every epoch runs; flips only.
  config_base.fixed_schedule(config, flip_prob=0.5)
  return config
