"""The region-based 3D U-Net recipe, shrunk for a 2-core CPU, on the brats21_4mod sample.

On a CPU (about 10 min on 2 cores):

    JAXSEG_DATA=/path/to/samples python -m jaxseg.main \
        --config=configs/brats21_regions_sample.py --workdir=runs/b21
    # or: --config.data.root=/path/to/brats21_4mod

(400 steps, 44.9 GFLOP each; the time depends on the machine: 4 min 59 s
on the machine of the measurements below, 12 min 14 s on a 2-core AMD
EPYC with another job running for its last 4 minutes, where the first 300
steps took 6.5 min, so about 10 min on a quiet one; validation WT Dice
0.915 per volume on both.)

`brats_unet3d_regions.py` (nnU-Net style: WT/TC/ET as three sigmoid
channels, Dice + BCE, SGD-Nesterov 0.99 with the poly schedule, nnU-Net's
augmentation, mirrored Gaussian sliding-window inference) on the four
expert-labelled BraTS 2021 cases with FLAIR, T1, T1ce and T2: 3 train, 1
validates (seeded case split, `data/split.json`; seed 0 holds out
BraTS2021_00005), no test split. What the CPU budget changed, and nothing
else: the volumes are resampled to half the recipe's resolution (80 x 96 x 96
for the brain box, about 1.8 mm instead of 144 x 160 x 160 at about 1 mm),
patches are 64^3 instead of 128^3 (about the same share of the volume),
the U-Net is a quarter as wide (features 8: 8..128 over its 4 levels, 1.4M
parameters instead of 22.6M), and training is 20 epochs of 20 steps of 2
patches (400 steps) instead of 300 x 250. The best checkpoint (lowest
validation loss) is the model that is scored and used by evaluate/predict.

Measured on the 2-core CPU (shared with other jobs; `uptime` load average
at start -> end), code of commit 2a8bf40:
**4 min 59 s** for the whole command (`time`; case preparation, a 14 s
compile, 400 steps in 4 min 32 s, the mirrored sliding-window evaluation of
the validation case), load 1.5 -> 2.3. Best epoch 11 of 20. Earlier code
took 6 min 23 s for the same config (load 3.9 -> 2.1), and the features-16
variant (240 steps) 22 min 49 s at load 4.9 -> 3.9 (5-7 s per step with 3-4
other jobs running), so features 8 leaves the 25 minute budget room for a
busy machine.

Scores of the best checkpoint on each case's original 240 x 240 x 155 grid:
legacy Dice (`cases.csv` of --mode=evaluate) and BraTS 2023 lesion-wise
Dice (`jaxseg.scoring.lesionwise.lesion_scores` on the written `<case>_seg.nii.gz`;
no post-processing, so every false-positive component counts as a lesion
with Dice 0):

| case | split | WT | TC | ET | lesion-wise WT | TC | ET |
|---|---|---|---|---|---|---|---|
| BraTS2021_00005 | validation | 0.915 | 0.713 | 0.601 | 0.102 | 0.241 | 0.203 |
| TCGA-FG-6692 | held out | 0.379 | 0.518 | 0.621 | 0.039 | 0.070 | 0.132 |
| TCGA-DU-7294 (no ET in its label) | held out | 0.243 | 0.000 | 0.000 | 0.061 | 0.000 | 0.000 |

    python -m jaxseg.main --config=runs/b21/config.json --workdir=runs/b21 \
        --mode=evaluate --input=$JAXSEG_DATA/tcga_4mod --output=eval_tcga/
    python -m jaxseg.main --config=runs/b21/config.json --workdir=runs/b21 \
        --mode=predict --input=$JAXSEG_DATA/brats23_unlabeled --output=pred_b23/

(about 15-25 s per case). On the unlabelled BraTS 2023 case the overlay
(`pred_b23/BraTS-GLI-00001-000.png`, labels written 0/1/2/3) shows the
lesion where FLAIR and T1c show it: oedema around a rim-enhancing core with
necrosis; a second, frontal component (32k voxels, with NCR and ET) lies on
tissue that looks normal and is most likely a false positive.

Read them as a smoke test of the recipe, not as a result: three training
cases. A second seed of the same config gave 0.840 / 0.443 / 0.553 on the
validation case, so single runs differ by up to 0.3 in TC. On the two TCGA
cases (older scans with other contrasts; labels = majority vote of five
BraTS 2020 algorithms, which agree with it to 0.91-0.99) the model finds
the tumours (WT recall 0.77 and 0.92) but also marks the lateral ventricles and
periventricular white matter as tumour (WT precision 0.25 and 0.14); longer
training (800 steps), 80^3 patches, features 16 and nnU-Net's Gaussian blur
(p 0.2) did not remove it. That is what 3 training cases give, not a
property of the recipe. The lesion-wise scores are low mostly from small
false-positive components: `config.postprocess` (removing small components,
chosen on validation cases) is the BraTS 2023 answer, but one validation
case is too few to choose its thresholds, so it is left off here.

The full recipe on BraTS 2021 (1,251 cases) on a GPU: drop this file's
changes, i.e. start from `brats_unet3d_regions.py` with
`--config.data.root=/data/BraTS2021`, or set back
`--config.data.image_size=160 --config.data.depth=144`,
`--config.data.patch_size='(128,128,128)'`, `--config.model.features=32`,
`--config.train.batch_size=2`, `--config.train.num_epochs=300
--config.train.steps_per_epoch=250`, `--config.data.split='(0.8,0.1,0.1)'`;
mirroring stays on in training (`augment.flip_prob=0.5`) and inference
(`inference.mirror_axes=(0,1,2)`). For memory add
`--config.train.precision=bfloat16` and/or `--config.model.remat=True`.
"""

from jaxseg import config_base


def get_config():
  """Returns the region 3D U-Net recipe shrunk for the brats21_4mod sample."""
  config = config_base.sibling_config(__file__, 'brats_unet3d_regions')
  config.data.root = config_base.sample_data('brats21_4mod')
  config.data.split = (0.75, 0.25, 0.0)   # 3 train / 1 validation case
  # Half the recipe's resolution (~1.8 mm) and patch edge; depth and size
  # stay multiples of 16 for the 4 poolings of the whole-volume validation.
  config.data.image_size = 96
  config.data.depth = 80
  config.data.patch_size = (64, 64, 64)
  config.model.features = 8
  config.train.num_epochs = 20
  config.train.steps_per_epoch = 20
  config.train.log_every_steps = 5
  return config
