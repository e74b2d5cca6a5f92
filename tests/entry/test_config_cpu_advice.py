"""Every config's docstring says how to run it on a CPU in minutes, and that run works.

A user on a laptop reads the config's docstring first; a config whose
published setup takes hours on a CPU (brats_unet3d_regions.py's old shrink
printed "step 10/75000 ... 3687.6 min left") must say which command does
finish. Every file in configs/ carries one block, in this form:

    On a CPU (about N min on 2 cores):

        python -m jaxseg.main --config=configs/X.py --workdir=runs/x \\
            --config.a=1 --config.b=2

(the command may start with `JAXSEG_DATA=/path/to/samples` for the
sample-data configs). For each config this file

- parses the block: a config without one fails, and so does a --config, or
  any `configs/*.py` the docstring names, that does not exist; N must be at
  most MAX_MINUTES;
- runs that command as written, with a temporary workdir and
  `--config.train.halt_after_steps=2` added (a subprocess, as a user runs
  it; commands on the real sample data skip without it); and
- bounds the run it advises on the config the run resolved and wrote
  (`<workdir>/config.json`): its steps, `loop.epoch_length` (of the
  prepared training records) times `train.num_epochs`, and its training
  FLOPs, those steps times XLA's count of the lowered train step.

Why these bounds (timing assertions are not used in this suite): every
advised command was measured with `time` on a 2-core AMD EPYC, mostly with
another job running (the minutes and loads are in each docstring; 1-12
min). Their training, per-epoch validation included, ran at 12-59 GFLOP/s
(XLA's count of the steps run over their wall time: the small 2D models at
64 x 64 and the 3D models at 32-48 voxels an edge at the bottom, the 2D
U-Nets at the top). The advised runs train 0.4-18 TFLOP; the most is
brats18_wt_resunet.py's ceiling of 40 epochs of 8 steps, 34 TFLOP, which
its early stopping ended after 112 steps (4 min 22 s). MAX_TRAIN_TFLOP = 40
is that ceiling with a little room: about 10-30 min at the rates measured,
a bound against advice that is hours long, not a timing. Most published
setups are far above it (brats_unet3d_regions.py: 75,000 steps of 5.6
TFLOP; lgg_unet.py: 400 steps of 1.1 TFLOP), but not all: coco_cnn_simple.py
at 256 x 256 is 7 TFLOP that ran at 3.4 s a step (about 12 min), which is
why the docstring's minutes are checked too (MAX_MINUTES). The step caps
(2,000 2D / 500 3D; the advised runs take 20-400) catch a schedule shrunk
per step but not in length.
"""

import ast
import functools
import os
import re
import shlex
import subprocess
import sys
import unittest.mock

import pytest

from conftest import REPO, SAMPLE_DATA
from jaxseg import labels
from jaxseg.training import loop
from jaxseg import models
from jaxseg.training import state as state_lib
from jaxseg.training import step as step_lib

CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py'))

# "On a CPU (about 4 min on 2 cores):", then (after blank lines) an indented
# command whose lines end in a backslash but the last.
HEADER = re.compile(r'^On a CPU \(about (\d+(?:\.\d+)?) min on 2 cores\):\s*$',
                    re.MULTILINE)
MAX_MINUTES = 10
MAX_STEPS = {2: 2000, 3: 500}
MAX_TRAIN_TFLOP = 40.0
HALT_AFTER = 2


def _docstring(name: str) -> str:
  source = (REPO / 'configs' / f'{name}.py').read_text()
  return ast.get_docstring(ast.parse(source)) or ''


def cpu_advice(name: str) -> dict:
  """{'minutes', 'env', 'args'} of the config's "On a CPU" block.

  Raises AssertionError (a test failure naming the config) without one.
  """
  doc = _docstring(name)
  found = HEADER.findall(doc)
  assert len(found) == 1, (
      f'configs/{name}.py: its docstring needs exactly one "On a CPU (about N '
      f'min on 2 cores):" block with the command that finishes in minutes '
      f'(found {len(found)})')
  lines = doc[HEADER.search(doc).end():].splitlines()
  while lines and not lines[0].strip():
    lines.pop(0)
  command = []
  for line in lines:
    assert line.startswith(' '), (
        f'configs/{name}.py: the "On a CPU" command must follow its header, '
        f'indented: {line!r}')
    command.append(line.strip().rstrip('\\').strip())
    if not line.rstrip().endswith('\\'):
      break
  words = shlex.split(' '.join(command))
  env = {}
  while words and re.fullmatch(r'[A-Z_]+=.*', words[0]):
    key, _, value = words.pop(0).partition('=')
    env[key] = value
  assert words[:3] == ['python', '-m', 'jaxseg.main'], (
      f'configs/{name}.py: the CPU command must be "python -m jaxseg.main ...", '
      f'got {words[:3]}')
  args = words[3:]
  for arg in args:
    assert re.fullmatch(r'--(config|workdir|config\.[\w.]+)=.+', arg), (
        f'configs/{name}.py: unexpected argument {arg!r} in the CPU command')
  assert set(env) <= {'JAXSEG_DATA'}, env
  return dict(minutes=float(found[0]), env=env, args=args)


def _flag(args, name):
  values = [a.split('=', 1)[1] for a in args if a.startswith(f'--{name}=')]
  return values[-1] if values else None


def check_advice(name: str) -> dict:
  """cpu_advice(name), checked: a short run of an existing config, runnable here."""
  advice = cpu_advice(name)
  assert 0 < advice['minutes'] <= MAX_MINUTES, (
      f'configs/{name}.py: about {advice["minutes"]:g} min is not a run that '
      f'finishes in minutes (at most {MAX_MINUTES})')
  config = _flag(advice['args'], 'config')
  assert config and config.startswith('configs/'), advice['args']
  assert (REPO / config).is_file(), (
      f'configs/{name}.py: its CPU command runs {config}, which does not exist')
  assert _flag(advice['args'], 'workdir'), advice['args']
  # The advice is runnable here: the embedded synthetic set or a sample set,
  # not a path on the user's machine.
  assert _flag(advice['args'], 'config.data.root') is None, advice['args']
  # Every config file the docstring points to exists.
  doc = _docstring(name)
  for other in re.findall(r'configs/\w+\.py', doc):
    assert (REPO / other).is_file(), f'configs/{name}.py names {other}, which does not exist'
  for other in re.findall(r'`(\w+\.py)`', doc):
    assert (REPO / 'configs' / other).is_file(), (
        f'configs/{name}.py names {other}, which is not in configs/')
  return advice


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_says_how_to_run_it_on_a_cpu(name):
  check_advice(name)


def _with_docstring(doc):
  return unittest.mock.patch.object(sys.modules[__name__], '_docstring',
                                    return_value=doc)


DOC = '''Title.

On a CPU (about 3 min on 2 cores):

    JAXSEG_DATA=/path/to/samples python -m jaxseg.main \\
        --config=configs/brats21_regions_sample.py --workdir=runs/x \\
        "--config.data.patch_size=(32,32,32)"

Prose after it; see `lgg_unet.py`.
'''


def test_the_parser_reads_the_documented_form():
  with _with_docstring(DOC):
    advice = check_advice('x')
  assert advice == dict(
      minutes=3.0, env={'JAXSEG_DATA': '/path/to/samples'},
      args=['--config=configs/brats21_regions_sample.py', '--workdir=runs/x',
            '--config.data.patch_size=(32,32,32)'])


@pytest.mark.parametrize('doc, message', [
    (DOC.replace('On a CPU', 'On a GPU'), 'needs exactly one "On a CPU'),
    (DOC.replace('brats21_regions_sample', 'brats21_regions_small'),
     'runs configs/brats21_regions_small.py, which does not exist'),
    (DOC.replace('`lgg_unet.py`', '`lgg_unet_small.py`'),
     'names lgg_unet_small.py, which is not in configs/'),
    (DOC.replace('about 3 min', 'about 60 min'), 'is not a run that finishes'),
    (DOC.replace('--workdir=runs/x', '--workdir=runs/x --config.data.root=/data'),
     'data.root'),
])
def test_advice_that_is_missing_or_points_nowhere_fails(doc, message):
  with _with_docstring(doc), pytest.raises(AssertionError, match=re.escape(message)):
    check_advice('x')


def _uses_sample_data(config_path: str) -> bool:
  from jaxseg import config_base
  root = config_base.load_config_file(str(REPO / config_path)).data.root
  return bool(root) and 'JAXSEG_DATA' in root


def _train_step_flops(config) -> float:
  """XLA's FLOP count of the lowered train step of `config` (no compile)."""
  import jax
  import jax.numpy as jnp
  from jaxseg import benchmark
  from jaxseg import losses
  from jaxseg.training import optim
  from jaxseg.models import shapes

  model = models.from_config(config)
  shape = benchmark.input_shape(config)
  variables = shapes.variable_shapes(
      model, jax.ShapeDtypeStruct((1,) + shape[1:], jnp.float32))
  tx = optim.build_for_run(config, 10)
  state = jax.eval_shape(lambda v: state_lib.TrainState.create(
      apply_fn=model.apply, params=v['params'], tx=tx,
      batch_stats=v.get('batch_stats', {})), variables)
  outputs = labels.num_outputs(config.data.label_mode)
  batch = dict(image=jax.ShapeDtypeStruct(shape, jnp.float32),
               target=jax.ShapeDtypeStruct(shape[:-1] + (outputs,), jnp.float32),
               weight=jax.ShapeDtypeStruct(shape[:1], jnp.float32))
  step = jax.jit(functools.partial(
      step_lib.train_step, loss_fn=losses.build(config.loss),
      activation=labels.activation(config.data.label_mode)))
  return benchmark._flops(step.lower(state, batch, jax.random.key(0)))  # pylint: disable=protected-access


@pytest.mark.slow
@pytest.mark.parametrize('name', CONFIGS)
def test_the_cpu_command_runs_and_is_a_short_run(name, tmp_path, cache_dir):
  from jaxseg import config_base
  from jaxseg.data import pipeline

  advice = cpu_advice(name)
  if _uses_sample_data(_flag(advice['args'], 'config')) and not SAMPLE_DATA.is_dir():
    pytest.skip(f'real BraTS sample data not found at {SAMPLE_DATA} (set '
                'JAXSEG_DATA)')
  workdir = tmp_path / 'run'
  args = [f'--workdir={workdir}' if a.startswith('--workdir=') else a
          for a in advice['args']]
  env = dict(os.environ)           # conftest's XLA_FLAGS, JAXSEG_CACHE
  env['JAXSEG_DATA'] = str(SAMPLE_DATA)
  run = subprocess.run(
      [sys.executable, '-m', 'jaxseg.main', *args,
       f'--config.train.halt_after_steps={HALT_AFTER}',
       '--config.train.log_every_steps=1'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'halting after step {HALT_AFTER}' in run.stderr
  assert (workdir / 'checkpoints' / str(HALT_AFTER)).is_dir()
  line = [l for l in run.stderr.splitlines() if f'step {HALT_AFTER}/' in l]
  assert line, run.stderr[-3000:]

  config = config_base.load_config_file(str(workdir / 'config.json'))
  records = len(pipeline.SliceSource(str(workdir / 'data' / 'train')))
  steps = loop.epoch_length(config, records) * config.train.num_epochs
  # The run's own progress line counts the same steps.
  assert f'step {HALT_AFTER}/{steps} ' in line[0]
  dims = int(config.data.dims)
  assert steps <= MAX_STEPS[dims], (
      f'configs/{name}.py: the CPU command trains {steps} steps, over the '
      f'{MAX_STEPS[dims]} a {dims}D run finishes in minutes')
  tflop = steps * _train_step_flops(config) / 1e12
  assert tflop <= MAX_TRAIN_TFLOP, (
      f'configs/{name}.py: the CPU command trains {steps} steps, {tflop:.1f} '
      f'TFLOP, over the {MAX_TRAIN_TFLOP} that finish in minutes on 2 cores')
