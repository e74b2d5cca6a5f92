"""Seed 003, table 9: U-Net vs U-Net++ (fast mode), Dice and log-cosh Dice, Adam 1e-4.

    python -m jaxseg.sweep --config=configs/lgg_unet.py \
        --sweep=sweeps/seed003_unet_vs_unetpp.py --workdir=runs/seed003_unetpp

Table 9's rows: U-Net + Dice (batch 16), U-Net++ + Dice (batch 20),
U-Net++ + log-cosh Dice (batch 16 and 20).
"""

UNETPP = dict(name='unetpp', features=(32, 64, 128, 256, 512),
              deep_supervision=False, mode='fast')
LOG_COSH = dict(name='log_cosh_dice')


def get_sweep():
  return [
      ('unet_dice_b16', {'train.batch_size': 16}),
      ('unetpp_dice_b20', {'model': UNETPP, 'train.batch_size': 20}),
      ('unetpp_logcosh_b16', {'model': UNETPP, 'loss': LOG_COSH,
                              'train.batch_size': 16}),
      ('unetpp_logcosh_b20', {'model': UNETPP, 'loss': LOG_COSH,
                              'train.batch_size': 20}),
  ]
