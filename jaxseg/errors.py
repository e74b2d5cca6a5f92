"""One error type for bad input: it names the file or key and says what is wrong.

`jaxseg.main` catches `InputError`, prints its message on one line and exits
with status 2 before anything is written to the workdir.
"""

import json
import os
import tempfile


class InputError(Exception):
  """Bad user input: a missing or corrupt file, a wrong shape, a bad config key.

  Args:
    where: the file path or config key at fault.
    problem: what is wrong with it, in words a user can act on.
  """

  def __init__(self, where, problem: str):
    self.where = str(where)
    self.problem = problem
    super().__init__(f"{self.where}: {problem}")


def read_json_object(path: str, what: str, expected: str) -> dict:
  """The JSON object in file `path`, or an InputError naming it.

  Args:
    path: the JSON file.
    what: what the file is, for the message ('the datalist').
    expected: what the object must hold, said when the file holds another
      JSON value ('a "training" list').
  """
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise InputError(path, f'malformed JSON: {e}') from None
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(path, f'cannot read {what}: {e}') from None
  if not isinstance(data, dict):
    raise InputError(path, f'{what} must be a JSON object with {expected}')
  return data


def check_writable_folder(folder: str, what: str = 'the output folder') -> None:
  """Creates `folder` if needed; InputError unless a file can be written there.

  Called before any work, so that a read-only mount or a path that names a
  file fails in one line instead of after the work.
  """
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise InputError(folder, f'is a file, not a folder: {what} must be a folder')
  parent = os.path.dirname(os.path.abspath(folder))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise InputError(folder, f'cannot write {what}: {parent} is a file, not a '
                     'folder')
  try:
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix='.probe-', dir=folder)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise InputError(folder, f'cannot write {what}: {e.strerror or e}') from None
