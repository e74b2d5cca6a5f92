"""Seed 003, section 7: the U-Net of `lgg_unet.py` trained with SGD (table 7.7).

    python -m jaxseg.main --config=configs/lgg_unet_sgd.py --workdir=runs/lgg_unet_sgd

Table 7.7's best SGD row: Dice loss, SGD with momentum 0.9 and weight decay
1e-4, learning rate 1e-3, batch 20, 100 epochs, no schedule. The study ran
PyTorch (torch.optim.SGD), whose weight_decay adds 1e-4 * w to the gradient
before the momentum: `weight_decay_mode='l2'`, not AdamW-style decoupled
decay. Everything else is as in `lgg_unet.py`.

On a CPU (about 3 min on 2 cores):

    python -m jaxseg.main --config=configs/lgg_unet_sgd.py --workdir=runs/lgg_unet_sgd_cpu \
        --config.data.image_size=64 \
        --config.train.num_epochs=25 --config.train.steps_per_epoch=4

As `lgg_unet.py`'s CPU run: 64 x 64 synthetic slices, 25 epochs of 4 steps
(of 20 here). Measured 3 min 0 s (`time`; load 2.1 -> 2.2), validation /
test WT Dice 0.58 / 0.64 per volume.
"""

from jaxseg import config_base


def get_config():
  """Returns the seed-003 U-Net + Dice + SGD setup."""
  config = config_base.sibling_config(__file__, 'lgg_unet')
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 1e-4
  config.optimizer.weight_decay_mode = 'l2'
  config.train.batch_size = 20
  config.train.eval_batch_size = 20
  return config
