"""Seed 001, model A: the simple CNN encoder-decoder (figure 2, 27,169 parameters).

    python -m jaxseg.main --config=configs/coco_cnn_simple.py --workdir=runs/cnn_simple

The study: 256x256 grey MRI slices (Kaggle "Brain Tumor Image Dataset -
Semantic Segmentation", COCO annotations), random flips and rotations,
Dice loss (better than BCE for this model), up to 50 epochs. Optimiser and
batch size are not given: Adam 1e-3 and batch 16 here. Flips p 0.5 per
axis; the rotation range is not given: +-15 degrees with probability 0.5.

The study's data, the COCO export (`train|valid|test/*.jpg` with
`_annotations.coco.json`), keeps its own train/valid/test split; each
grey image answers the one channel the config names:

    python -m jaxseg.main --config=configs/coco_cnn_simple.py --workdir=runs/cnn \
        --config.data.root=/data/brain-tumor-coco

Without `data.root`, FLAIR slices of the synthetic set stand in.

On a CPU (about 1 min on 2 cores):

    python -m jaxseg.main --config=configs/coco_cnn_simple.py --workdir=runs/cnn_simple_cpu \
        --config.data.image_size=64 \
        --config.train.num_epochs=50 --config.train.steps_per_epoch=4

Every study value but the image size: 64 x 64 slices of the synthetic set
(96 x 96 in-plane, so little is lost), 50 epochs of 4 steps of 16 (the
synthetic set's epoch length, named so that the same flags with
`data.root` stay as short). Measured 1 min 5 s (`time`; load 6.4 -> 5.4,
another job running), validation / test WT Dice 0.88 / 0.82 per volume. At
256 x 256 a step took 3.4 s, about 12 min for the same 200 steps.
"""

from jaxseg import config_base


def get_config():
  """Returns the seed-001 simple encoder-decoder setup."""
  config = config_base.get_config()
  config.data.modalities = ('flair',)
  config.data.image_size = 256
  config.model.name = 'simple_encoder_decoder'
  config.loss.name = 'dice'
  config.loss.activation = 'sigmoid'
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  config.train.batch_size = 16
  config.train.eval_batch_size = 16
  config.train.num_epochs = 50
  # No learning-rate schedule, every epoch runs.
  config_base.fixed_schedule(config, flip_prob=0.5)
  config.augment.rotate_prob = 0.5
  config.augment.rotate_degrees = 15.0
  return config
