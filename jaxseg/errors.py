"""One error type for bad input: it names the file or key and says what is wrong.

`jaxseg.main` catches `InputError`, prints its message on one line and exits
with status 2 before anything is written to the workdir.
"""

import json


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
