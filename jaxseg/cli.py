"""What every jaxseg command line shares: flag errors in one line, logging, the XLA cache."""

import logging as std_logging
import os
import re
import shutil
import sys
from typing import Any, Callable

from absl import flags
from absl import logging
import jax

from jaxseg import xla_cpu
from jaxseg.config_flags import UnknownField
from jaxseg.errors import InputError
from jaxseg.errors import check_writable_folder

FLAGS = flags.FLAGS


def _flag_error(argv, error: Exception) -> str:
  """One line for a flag-parsing error: the --config key at fault and why."""
  cause = error
  while cause is not None and not isinstance(cause, (InputError, UnknownField)):
    cause = cause.__cause__ or cause.__context__
  if cause is not None:
    return str(cause)
  text = str(error)
  key = re.search(r"'(\w+)\\?'", text)
  hint = re.search(r'Did you mean "(\w+)"', text)
  for arg in argv[1:]:
    name = arg.split('=')[0]
    if key and name.startswith('--config.') and key.group(1) in name.split('.')[1:]:
      return (f'{name}: unknown config key' +
              (f"; did you mean '{hint.group(1)}'?" if hint else ''))
  return text.replace('\\n', ' ').splitlines()[0]


def parse_flags(argv):
  """absl flag parsing; a bad config file or override ends with one line, exit 2."""
  try:
    argv = FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    print(f'jaxseg: error: {_flag_error(argv, e)}', file=sys.stderr)
    sys.exit(2)
  if 'config' not in FLAGS:
    return argv             # a command without --config (jaxseg.predict)
  try:
    if FLAGS.config is not None:
      FLAGS.config.keys()   # the config file is loaded lazily: load it now
  except Exception as e:  # pylint: disable=broad-except
    reason = [l.strip() for l in str(e).splitlines() if l.strip()][-1]
    print(f'jaxseg: error: --config={FLAGS["config"].config_filename}: cannot load '
          f'the config file: {reason}', file=sys.stderr)
    sys.exit(2)
  return argv


# The folder of jaxseg's own modules (this package), with a trailing separator.
_PACKAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '')


class _OwnInfoOnly(std_logging.Filter):
  """Keeps INFO lines of jaxseg; libraries (orbax, jax, grain) log WARNING and up.

  absl sends every library's lines through one logger ('absl'), so the name
  cannot tell them apart: a line is jaxseg's when the module that logged it
  is a file of this package. (Any path merely containing 'jaxseg', such as a
  virtualenv inside a clone named jaxseg, is not.)
  """

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING or
            os.path.abspath(record.pathname).startswith(_PACKAGE_DIR))


def setup() -> None:
  """jaxseg's XLA:CPU options, INFO lines only, compiled programs cached on disk.

  The XLA:CPU options (jaxseg.xla_cpu.configure) must be set before JAX's
  backend starts, so setup() comes first in a main. The cache
  (`$JAXSEG_CACHE/xla`, default ~/.cache/jaxseg/xla) lets a rerun or resume
  skip compilation.
  """
  xla_cpu.configure()
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  cache = os.environ.get('JAXSEG_CACHE', os.path.expanduser('~/.cache/jaxseg'))
  jax.config.update('jax_compilation_cache_dir', os.path.join(cache, 'xla'))


def peak_memory_gib() -> float:
  """The peak resident memory of this process and its finished children, GiB.

  Linux's VmHWM for this process plus the largest finished child's (Grain
  worker processes) maximum resident set; 0 where neither is known.
  """
  peak_kib = 0
  try:
    with open('/proc/self/status') as f:
      peak_kib = next(int(line.split()[1]) for line in f
                      if line.startswith('VmHWM:'))
  except (OSError, StopIteration):
    pass
  try:
    import resource  # pylint: disable=g-import-not-at-top  (POSIX only)
    peak_kib += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  except (ImportError, OSError):
    pass
  return peak_kib / 2 ** 20


def run_in_workdir(workdir: str | None, fn: Callable[[], Any],
                   writes: bool = True) -> Any:
  """fn(); on bad input one `jaxseg: error:` line, exit 2, and no new workdir.

  With `writes`, the workdir (created if needed) must be writable before
  fn() starts. A workdir that did not exist before fn() ran is removed, so a
  refused run leaves nothing half-written behind.
  """
  existed = workdir is None or os.path.exists(workdir)
  try:
    if workdir is not None and writes:
      check_writable_folder(workdir, 'the workdir')
    result = fn()
    logging.info('peak memory: %.2f GiB resident', peak_memory_gib())
    return result
  except InputError as e:
    if not existed and os.path.isdir(workdir):
      shutil.rmtree(workdir, ignore_errors=True)
    print(f'jaxseg: error: {e}', file=sys.stderr)
    sys.exit(2)
