"""Seed 000, preliminary experiment: a plain 3D U-Net on 96^3 volumes of one modality.

    python -m jaxseg.main --config=configs/brats15_unet3d.py --workdir=runs/unet3d

Section 6: "a simple U-Net with the input layer, followed by convolution with
elu activation, maxpooling, upsampling and concatenation layers (20 in
total) and finally output layer with sigmoid", learning rate 1e-6, image size
(96, 96, 96), binary cross-entropy, 100 epochs, batch 8, 20 % validation;
whole tumour (all non-zero labels) as one channel, intensities scaled, no
augmentation. The modality is not named for this experiment; T1c was the
study's default, so T1ce here. Each case is cropped around the brain and
resized to 96^3 (`data.dims=3`).

The study's data, BraTS 2015 as MetaImage (`HGG|LGG/brats_*/VSD.Brain.XX.O.
MR_<modality>.<id>/*.mha`, labels 0-4 in the `OT` volume), is read with
SimpleITK (`pip install -e '.[formats]'`):

    python -m jaxseg.main --config=configs/brats15_unet3d.py --workdir=runs/x \
        --config.data.root=/data/BRATS2015_Training

On a CPU (about 5 min on 2 cores):

    python -m jaxseg.main --config=configs/brats15_unet3d.py --workdir=runs/unet3d_cpu \
        --config.data.image_size=48 --config.data.depth=32 \
        --config.train.num_epochs=10 --config.train.steps_per_epoch=4

The study's network, loss, optimiser and batch of 8 on volumes of 32 x 48 x
48 from the embedded synthetic set (no `data.root`), 10 epochs of 4 steps
(40 steps, named so that the same flags with `data.root` stay as short)
instead of 100 epochs. Measured 4 min 58 s (`time`; load 4.7 -> 4.1,
another job running). At the study's learning rate of 1e-6 40 steps barely
move the weights (validation WT Dice 0.12); the full run (100 epochs at 96^3,
2.2 TFLOP per step) needs a GPU.
"""

from jaxseg import config_base


def get_config():
  """Returns the seed-000 preliminary 3D U-Net setup."""
  config = config_base.get_config()
  config.data.modalities = ('t1ce',)
  config.data.dims = 3
  config.data.image_size = 96
  config.data.depth = 96
  config.data.split = (0.7, 0.2, 0.1)
  config.model.name = 'unet3d'
  config.loss.name = 'bce'
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-6
  config.train.batch_size = 8
  config.train.eval_batch_size = 1
  config.train.num_epochs = 100
  # No learning-rate schedule, every epoch runs; flips only.
  config_base.fixed_schedule(config, flip_prob=0.0)
  return config
