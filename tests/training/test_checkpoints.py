"""Checkpoints an operator meets damaged: each kind of truncated file, another
model's checkpoint, none left; plus the writable-workdir check, the log filter
and metrics.jsonl after a resume."""

import errno
import glob
import json
import logging as std_logging
import os
import tempfile

from flax.training import train_state
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.training import checkpoints
from jaxseg import cli
from jaxseg.training import writers
from jaxseg.errors import InputError
from jaxseg.errors import check_writable_folder


def _kernel(value: float, width: int = 4):
  """value + noise, (3, 3, 64, width): random, so that it stays ~9 KB compressed
  (small or constant arrays end up inside the OCDBT index itself)."""
  noise = np.random.default_rng(0).normal(size=(3, 3, 64, width))
  return jnp.asarray(value + noise, jnp.float32)


def _state(value: float, step: int, width: int = 4):
  params = {'conv': {'kernel': _kernel(value, width)},
            'bias': jnp.full((width,), value)}
  state = train_state.TrainState.create(apply_fn=None, params=params,
                                        tx=optax.adam(1e-3))
  return state.replace(step=step)


def _save(workdir, kind, value, step):
  mngr = checkpoints.manager(workdir, kind)
  checkpoints.save(mngr, _state(value, step), {'epoch': step, 'value': value})
  mngr.wait_until_finished()
  mngr.close()


@pytest.fixture
def workdir(tmp_path):
  """The latest checkpoint at step 5 (values 5), the best at step 4 (values 4)."""
  _save(str(tmp_path), checkpoints.BEST, 4.0, 4)
  _save(str(tmp_path), checkpoints.LATEST, 5.0, 5)
  return str(tmp_path)


def _truncate(path):
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(size // 2)


# Each file of a checkpoint a crash or a full disk can leave short.
DAMAGE = {
    'array data': 'state/ocdbt.process_0/d/*',
    'state/_METADATA': 'state/_METADATA',
    'loop/metadata': 'loop/metadata',
    'array index': 'state/manifest.ocdbt',
    'array metadata': 'state/array_metadatas/process_0',
}


def _damage(folder, kind):
  files = sorted(glob.glob(os.path.join(folder, DAMAGE[kind])), key=os.path.getsize)
  assert files, DAMAGE[kind]
  _truncate(files[-1])   # the largest data file holds several arrays


def test_the_newest_checkpoint_is_restored(workdir):
  state, loop, folder = checkpoints.restore_newest(workdir, _state(0.0, 0))
  assert int(state.step) == 5 and loop == {'epoch': 5, 'value': 5.0}
  assert folder == os.path.join(workdir, 'checkpoints', '5')
  np.testing.assert_array_equal(state.params['bias'], np.full(4, 5.0))


def test_no_checkpoint_is_none(tmp_path):
  assert checkpoints.restore_newest(str(tmp_path), _state(0.0, 0)) is None


@pytest.mark.parametrize('kind', sorted(DAMAGE))
def test_a_damaged_latest_is_set_aside_for_the_best(workdir, kind, caplog, capfd):
  latest = os.path.join(workdir, 'checkpoints', '5')
  _damage(latest, kind)
  with caplog.at_level(std_logging.WARNING):
    state, loop, folder = checkpoints.restore_newest(workdir, _state(0.0, 0))
  assert int(state.step) == 4 and loop['value'] == 4.0
  np.testing.assert_array_equal(state.params['conv']['kernel'], _kernel(4.0))
  assert folder == os.path.join(workdir, 'checkpoints_best', '4')
  # Set aside, not deleted: the damaged folder moved whole.
  moved = os.path.join(workdir, 'checkpoints_damaged', 'checkpoints_5')
  assert not os.path.exists(latest) and os.path.isdir(moved)
  assert os.path.isfile(os.path.join(moved, 'loop', 'metadata'))
  warnings = [r.getMessage() for r in caplog.records
              if 'set aside' in r.getMessage()]
  assert len(warnings) == 1
  assert latest in warnings[0] and moved in warnings[0] and folder in warnings[0]
  # One warning, no traceback from Orbax's concurrent reads.
  assert 'Traceback' not in capfd.readouterr().err


def test_the_run_s_managers_see_the_set_aside(workdir):
  _damage(os.path.join(workdir, 'checkpoints', '5'), 'array data')
  checkpoints.restore_newest(workdir, _state(0.0, 0))
  mngr = checkpoints.manager(workdir, checkpoints.LATEST)
  assert mngr.latest_step() is None
  mngr.close()


def test_none_restores_one_error_naming_each(workdir):
  _damage(os.path.join(workdir, 'checkpoints', '5'), 'loop/metadata')
  _damage(os.path.join(workdir, 'checkpoints_best', '4'), 'array data')
  with pytest.raises(InputError) as err:
    checkpoints.restore_newest(workdir, _state(0.0, 0))
  problem = err.value.problem
  assert problem.startswith('no checkpoint can be restored')
  assert 'checkpoints/5: damaged checkpoint (loop/metadata:' in problem
  assert 'checkpoints_best/4: damaged checkpoint (state/' in problem
  # Nothing is moved when there is nothing to resume from.
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_damaged'))


def test_another_model_is_not_damage(workdir):
  with pytest.raises(InputError) as err:
    checkpoints.restore_newest(workdir, _state(0.0, 0, width=8), 'resunet')
  assert "does not match the config's model 'resunet'" in err.value.problem
  assert 'bias has shape (4,), the model (8,)' in err.value.problem
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_damaged'))
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '5'))


def test_restore_best_names_the_damaged_file(workdir):
  best = os.path.join(workdir, 'checkpoints_best', '4')
  _damage(best, 'state/_METADATA')
  with pytest.raises(InputError) as err:
    checkpoints.restore_best(workdir, _state(0.0, 0))
  assert err.value.where == best
  assert err.value.problem.startswith('damaged checkpoint (state/_METADATA: ')


def test_restore_best_without_one(tmp_path):
  with pytest.raises(InputError, match='train first'):
    checkpoints.restore_best(str(tmp_path), _state(0.0, 0))


# --- the workdir and output folders ---------------------------------------


def test_a_folder_that_is_a_file(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  with pytest.raises(InputError) as err:
    check_writable_folder(str(blocker), 'the workdir')
  assert err.value.problem == 'is a file, not a folder: the workdir must be a folder'
  with pytest.raises(InputError) as err:
    check_writable_folder(str(blocker / 'run'), 'the workdir')
  assert err.value.problem == (f'cannot write the workdir: {blocker} is a file, '
                               'not a folder')


def test_a_read_only_workdir_is_refused_before_any_work(tmp_path, monkeypatch,
                                                        capsys):
  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))
  monkeypatch.setattr(tempfile, 'mkstemp', read_only)
  workdir = tmp_path / 'run'
  work = []
  with pytest.raises(SystemExit) as exit_:
    cli.run_in_workdir(str(workdir), lambda: work.append('preprocessed'))
  assert exit_.value.code == 2 and not work
  err = capsys.readouterr().err
  assert err == f'jaxseg: error: {workdir}: cannot write the workdir: Read-only file system\n'
  assert not workdir.exists()   # the folder the check made is removed


# --- logging -----------------------------------------------------------------


def _record(path, level=std_logging.INFO):
  return std_logging.LogRecord('absl', level, path, 1, 'message', None, None)


def test_only_jaxseg_s_own_info_lines_are_kept():
  keep = cli._OwnInfoOnly().filter  # pylint: disable=protected-access
  package = os.path.dirname(cli.__file__)
  assert keep(_record(os.path.join(package, 'train.py')))
  assert keep(_record(os.path.join(package, 'data', 'pipeline.py')))
  # A virtualenv inside a clone named jaxseg: its libraries' paths contain
  # /jaxseg/ but they are not jaxseg's modules.
  clone = os.path.dirname(package)
  venv_lib = os.path.join(clone, '.venv', 'lib', 'python3.11', 'site-packages')
  assert not keep(_record(os.path.join(venv_lib, 'orbax', 'checkpoint', 'x.py')))
  assert not keep(_record('/home/u/jaxseg/.venv/lib/site-packages/grain/y.py'))
  assert keep(_record('/home/u/jaxseg/.venv/lib/site-packages/grain/y.py',
                      std_logging.WARNING))


# --- metrics.jsonl -----------------------------------------------------------


def test_records_after_the_resumed_step_are_dropped(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  records = [{'step': s, 'loss': s / 10} for s in (1, 2, 2, 3, 4, 4, 5)]
  path.write_text(''.join(json.dumps(r) + '\n' for r in records))
  writers.keep_records_until(str(path), 4)
  kept = [json.loads(l) for l in path.read_text().splitlines()]
  assert kept == records[:6]
  writers.keep_records_until(str(path), 0)
  assert path.read_text() == ''
