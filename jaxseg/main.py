"""Entry point: train, evaluate or predict with a config.

    python -m jaxseg.main --config=configs/brats19_resunet.py --workdir=runs/resunet
    python -m jaxseg.main --config=configs/brats19_resunet.py --workdir=runs/resunet \
        --mode=evaluate [--input=labelled/cases --output=scores/]
    python -m jaxseg.main --config=configs/brats19_resunet.py --workdir=runs/resunet \
        --mode=predict --input=cases/ --output=predictions/
    python -m jaxseg.main --config=configs/brats19_resunet.py --workdir=runs/x \
        --config.optimizer.learning_rate=1e-3
    python -m jaxseg.main --config=configs/brats19_resunet.py --workdir=runs/b \
        --mode=benchmark          # step time, FLOP/s, utilisation, loader
    python -m jaxseg.main --config=runs/resunet/config.json --workdir=runs/resunet \
        --mode=export [--output=models/resunet]   # for python -m jaxseg.predict
    python -m jaxseg.main ... --coordinator_address=node0:1234 \
        --num_processes=2 --process_id=0      # one of several processes

Several processes (hosts) run the same command; see `launch/` and
jaxseg/parallel.py. Under SLURM (`srun`) and on TPU pods no flags are needed.

Bad input (a missing or corrupt file, wrong shapes, NaN voxels, unknown label
values, an unknown config key) ends the run with one line naming the file or
key and the problem, exit status 2, and nothing new in the workdir.
"""

from absl import app
from absl import flags
from absl import logging
import jax

from jaxseg import cli
from jaxseg import config_flags
from jaxseg import modes
from jaxseg import parallel

FLAGS = flags.FLAGS
config_flags.define_config()
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics and results.')
flags.DEFINE_enum('mode', 'train', list(modes.MODES),
                  'train: train (or resume) then evaluate the best checkpoint; '
                  'evaluate: evaluate the best checkpoint of --workdir on its '
                  'val/test splits, or on the labelled set --input; '
                  'predict: segment the cases of --input into --output; '
                  'export: write the best model as a shareable folder '
                  '(--output, default <workdir>/model) for python -m '
                  'jaxseg.predict; '
                  'benchmark: time the training step, loader and FLOP/s '
                  '(<workdir>/benchmark.json).')
flags.DEFINE_integer('benchmark_steps', 10, 'benchmark: timed steps.')
flags.DEFINE_string('input', None, 'evaluate/predict: a case folder, a folder '
                    'of cases or a datalist .json.')
flags.DEFINE_string('output', None, 'evaluate/predict: the folder for the '
                    'scores or the predicted NIfTI files and PNGs.')
flags.DEFINE_string('coordinator_address', None, 'Multi-process runs: '
                    'host:port of process 0 (or JAXSEG_COORDINATOR_ADDRESS); '
                    'not needed under SLURM or on a Cloud TPU pod.')
flags.DEFINE_integer('num_processes', None, 'Multi-process runs: the number '
                     'of processes (or JAXSEG_NUM_PROCESSES).')
flags.DEFINE_integer('process_id', None, 'Multi-process runs: this process, '
                     '0 .. num_processes - 1 (or JAXSEG_PROCESS_ID).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.setup()
  def start():
    parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                        FLAGS.process_id)
    logging.info('JAX devices: %s (process %d of %d)', jax.devices(),
                 jax.process_index(), jax.process_count())
    return modes.run(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.input,
               FLAGS.output, FLAGS.benchmark_steps)
  # --mode=predict only reads the workdir; the others write into it.
  cli.run_in_workdir(FLAGS.workdir, start, writes=FLAGS.mode != 'predict')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
