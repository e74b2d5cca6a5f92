"""Seed 003, tables 6.7 and 7.7: U-Net with four losses, under Adam and under SGD.

    python -m jaxseg.sweep --config=configs/lgg_unet.py \
        --sweep=sweeps/seed003_losses_optimizers.py --workdir=runs/seed003_losses

Adam: lr 1e-4, batch 16 (table 6.7); SGD: lr 1e-3, momentum 0.9, weight
decay 1e-4, batch 20 (table 7.7). Losses: Dice, BCE, log-cosh Dice,
shape-aware (section 5).
"""

LOSSES = {
    'dice': dict(name='dice', activation='sigmoid'),
    'bce': dict(name='bce'),
    'log_cosh_dice': dict(name='log_cosh_dice'),
    'shape_aware': dict(name='shape_aware'),
}
OPTIMIZERS = {
    'adam': {'optimizer.name': 'adam', 'optimizer.learning_rate': 1e-4,
             'optimizer.weight_decay': 0.0, 'train.batch_size': 16},
    'sgd': {'optimizer.name': 'sgd', 'optimizer.learning_rate': 1e-3,
            'optimizer.momentum': 0.9, 'optimizer.weight_decay': 1e-4,
            'train.batch_size': 20},
}


def get_sweep():
  return [(f'{opt}_{loss}', dict(opt_overrides, loss=loss_config))
          for opt, opt_overrides in OPTIMIZERS.items()
          for loss, loss_config in LOSSES.items()]
