"""Predict with model folders alone: `python -m jaxseg.predict`.

    python -m jaxseg.predict -i path/to/cases -o path/to/predictions \
        -m runs/x/model [-m runs/y/model ...]      # an ensemble
    python -m jaxseg.main --config=configs/brats19_resunet.py --workdir=runs/x \
        --mode=predict --input=path/to/cases --output=path/to/predictions

`-i` is one case folder, a folder of case folders or a datalist; `-m` an
exported model folder (`--mode=export`) or a training workdir. Each case is
preprocessed as in training, predicted (slices, whole volumes or sliding
windows; `--mirror` averages mirrored passes, `--mc_samples` samples
Monte-Carlo dropout), mapped back onto its own grid, converted to its own
label convention (BraTS 0/1/2/4, BraTS 2023 0/1/2/3, or 0/1 masks) and
post-processed; `<case>_seg.nii.gz` overlays the input in ITK-SNAP or 3D
Slicer and `<case>.png` shows it (`jaxseg.inference`). This entry point
imports the inference code only: no training loop, data loader or
optimiser schedule.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from jaxseg import cli
from jaxseg.inference import cases


def _define_flags():
  flags.DEFINE_multi_string('model', None, 'A model folder (--mode=export) or '
                            'a training workdir; repeat for an ensemble.',
                            short_name='m')
  flags.DEFINE_string('input', None, 'A case folder, a folder of cases or a '
                      'datalist .json.', short_name='i')
  flags.DEFINE_string('output', None, 'The folder for <case>_seg.nii.gz and '
                      '<case>.png.', short_name='o')
  flags.DEFINE_integer('mc_samples', None, 'Monte-Carlo dropout samples per '
                       'model (writes the uncertainty maps too).')
  flags.DEFINE_bool('mirror', False, 'Test-time mirroring over every '
                    'spatial axis.')
  flags.DEFINE_bool('score', False, 'Also score the cases that have labels '
                    '(cases.csv, summary.json, dice_box.png in --output).')
  return flags.FLAGS


def main_cli() -> None:
  """`python -m jaxseg.predict -i IN -o OUT -m MODEL [-m ...]`."""
  options = _define_flags()

  def main(argv):
    if len(argv) > 1:
      print(f'jaxseg: error: unexpected arguments: {argv[1:]}', file=sys.stderr)
      sys.exit(2)
    cli.setup()
    paths = cli.run_in_workdir(options.output, lambda: cases.run_models(
        options.model, options.input, options.output, options.mc_samples,
        options.mirror, options.score))
    logging.info('wrote %d files to %s', len(paths), options.output)

  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  main_cli()
