"""3D U-Net on 128^3 patches of the four BraTS modalities, region-based (nnU-Net style).

    python -m jaxseg.main --config=configs/brats_unet3d_regions.py --workdir=runs/unet3d_regions \
        --config.data.root=/data/BraTS2021

The common BraTS 3D recipe, beside the seeds' own 3D setups: every case
cropped around the brain and resampled to 144 x 160 x 160 (about 1 mm),
trained on random 128^3 patches of FLAIR, T1, T1ce and T2, one third of them
centred on tumour (nnU-Net's foreground oversampling), with rotation,
scaling, mirroring, intensity, gamma and noise augmentation; WT/TC/ET as
three sigmoid channels with Dice + BCE (nnU-Net's BraTS regions;
`--config.data.label_mode=multiclass --config.loss.activation=softmax` trains
the 4-class softmax instead); SGD with Nesterov momentum 0.99 and the
polynomial schedule; inference in Gaussian-weighted 128^3 windows
overlapping by half, averaged over all 8 mirrorings.

Memory: a batch of 2 x 128^3 x 4 needs a GPU. `--config.model.remat=True`
recomputes stage activations in the backward pass and
`--config.train.precision=bfloat16` computes in bf16 (benchmarks/memory.py).
The recipe's 300 epochs of 250 steps (75,000 steps of 5.6 TFLOP) need a
GPU; a smaller volume, patch and U-Net alone still leave days of steps on
a CPU. What finishes there:

On a CPU (about 4 min on 2 cores):

    python -m jaxseg.main --config=configs/brats_unet3d_regions.py --workdir=runs/unet3d_regions_cpu \
        --config.data.image_size=64 --config.data.depth=48 \
        --config.data.patch_size='(32,32,32)' --config.model.features=8 \
        --config.train.num_epochs=20 --config.train.steps_per_epoch=20

400 steps of 2 patches of 32^3 from cases resampled to 48 x 64 x 64, a
quarter-width U-Net (1.4M parameters), on the embedded synthetic set (no
`data.root`). Measured 4 min 21 s (`time`; load 5.3 -> 4.7, another job
running), validation / test WT Dice 0.88 / 0.69 per volume. With
`--config.data.root=/data/BraTS2021` the same flags train the same 400
steps on your data (measured on four brats21_4mod cases split 2 / 1 / 1:
2 min 55 s in all, 2 min 5 s of it training), but every case is prepared
first (about 2 s per BraTS case: 40 min for all 1,251) and the validation
and test cases are evaluated at the end (about 11 s each with the 8
mirrorings): start with a datalist .json of a few cases.
`configs/brats21_regions_sample.py` is this recipe shrunk for four real
BraTS 2021 cases.
"""

from jaxseg import config_base


def get_config():
  """Returns the region-based 3D U-Net setup."""
  config = config_base.get_config()
  config.data.modalities = ('flair', 't1', 't1ce', 't2')
  config.data.label_mode = 'regions'
  config.data.dims = 3
  config.data.image_size = 160
  config.data.depth = 144
  config.data.patch_size = (128, 128, 128)
  config.data.foreground_fraction = 0.33
  config.data.split = (0.8, 0.1, 0.1)

  config.model.name = 'unet'
  config.model.features = 32
  config.model.depth = 4
  config.model.norm = 'instance'
  config.model.activation = 'leaky_relu'
  config.model.remat = False

  # Dice + BCE on the three region channels.
  config.loss.name = 'dice_ce'
  config.loss.activation = 'sigmoid'

  config.augment.flip_prob = 0.5
  config.augment.cutout_prob = 0.0
  config.augment.rotate_prob = 0.2
  config.augment.rotate_degrees = 15.0
  config.augment.scale_prob = 0.2
  config.augment.scale_range = 0.15
  config.augment.intensity_prob = 0.15
  config.augment.gamma_prob = 0.3
  config.augment.noise_prob = 0.1
  config.augment.noise_mean = 0.0
  config.augment.noise_variance = 0.01

  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.99
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 3e-5
  config.schedule.name = 'poly'
  config.schedule.monitor = 'val_dice'
  config.schedule.early_stopping_patience = 0

  config.train.batch_size = 2
  config.train.eval_batch_size = 1
  config.train.num_epochs = 300
  config.train.steps_per_epoch = 250

  config.inference.overlap = 0.5
  config.inference.window_batch_size = 2
  config.inference.mirror_axes = (0, 1, 2)
  return config
