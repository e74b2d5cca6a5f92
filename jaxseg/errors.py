"""One error type for bad input: it names the file or key and says what is wrong.

`jaxseg.main` catches `InputError`, prints its message on one line and exits
with status 2 before anything is written to the workdir.
"""


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
