"""Seed 000, first network: Kayalibay et al.'s residual 3D U-Net with summed stage maps.

    python -m jaxseg.main --config=configs/brats15_resunet3d_ds.py --workdir=runs/resunet3d

Section 4: residual blocks, 3x3x3 kernels, down-sampling by 2 (strided
convolution in Kayalibay et al.; the study swapped in max-pooling), the
segmentation maps of several decoder stages up-sampled and summed.
Section 6: one modality per model (FLAIR scored best), each case cropped to
the central 144x144 in-plane and resized to 96 slices: input (96, 144, 144,
1), batch 1, Adam lr 1e-4, Keras' binary focal cross-entropy (the best loss
of figure 5: gamma 2, no alpha balancing), no augmentation.

The study's data, BraTS 2015 as MetaImage (`HGG|LGG/brats_*/VSD.Brain.XX.O.
MR_<modality>.<id>/*.mha`, labels 0-4 in the `OT` volume), is read with
SimpleITK (`pip install -e '.[formats]'`):

    python -m jaxseg.main --config=configs/brats15_resunet3d_ds.py --workdir=runs/x \
        --config.data.root=/data/BRATS2015_Training

On a CPU (about 8 min on 2 cores):

    python -m jaxseg.main --config=configs/brats15_resunet3d_ds.py --workdir=runs/resunet3d_cpu \
        --config.data.image_size=48 --config.data.depth=32 \
        --config.train.num_epochs=5 --config.train.steps_per_epoch=4

The whole 141.8M-parameter network and the study's 5 epochs, on volumes
of 32 x 48 x 48 (a third of the edge) from the embedded synthetic set (no
`data.root`; 4 steps per epoch, its epoch length, named so that the same
flags with `data.root` stay as short). Measured 8 min 2 s (`time`; load
4.1 -> 5.2, another job running): 20 steps of ~12 s, a 1.5 GB checkpoint
per epoch (latest and best: 3 GB on disk), validation / test WT Dice 0.62 /
0.56 per volume (best epoch 1). At the study's 96 x 144 x 144 one step is
12.4 TFLOP (XLA's count), minutes per step on 2 cores.
"""

from jaxseg import config_base


def get_config():
  """Returns the seed-000 residual 3D U-Net setup."""
  config = config_base.get_config()
  config.data.modalities = ('flair',)
  config.data.dims = 3
  config.data.image_size = 144
  config.data.depth = 96
  config.data.split = (0.7, 0.2, 0.1)
  config.model.name = 'residual_unet3d'
  config.loss.name = 'focal'
  config.loss.alpha = None
  config.loss.gamma = 2.0
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-4
  config.train.batch_size = 1
  config.train.eval_batch_size = 1
  config.train.num_epochs = 5
  # No learning-rate schedule, every epoch runs; flips only.
  config_base.fixed_schedule(config, flip_prob=0.0)
  return config
