"""Seed 002's ResU-Net on eight real BraTS 2018 cases (the `brats18_wt` sample).

On a CPU (about 4 min on 2 cores):

    JAXSEG_DATA=/path/to/samples python -m jaxseg.main \
        --config=configs/brats18_wt_resunet.py --workdir=runs/brats18_wt
    # or: --config.data.root=/path/to/brats18_wt

Eight expert-annotated cases with FLAIR and T1 and a binary whole-tumour
mask: 6 train, 2 validate (no test split; the validation cases are scored
per volume at the end). Everything else is seed 002's setup. An epoch is
one pass over the 529 training slices (8 steps of 64), at most 40 epochs
(320 steps) with early stopping. Measured 4 min 22 s (`time`; load 2.2 ->
1.9): early stop after epoch 14 (best 9), validation WT Dice 0.883 per
volume.
"""

from jaxseg import config_base


def get_config():
  """Returns the seed-002 setup on the brats18_wt sample."""
  config = config_base.sibling_config(__file__, 'brats19_resunet')
  config.data.root = config_base.sample_data('brats18_wt')
  config.data.modalities = ('flair', 't1')
  config.data.label_mode = 'binary'
  config.data.split = (0.75, 0.25, 0.0)
  return config
