"""The import direction: the layers contract, and what the entry points load."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


def test_the_layers_contract_holds():
  # import-linter reads [tool.importlinter] from pyproject.toml.
  run = subprocess.run([sys.executable, '-c',
                        'from importlinter.cli import lint_imports_command; '
                        'lint_imports_command()'],
                       cwd=REPO, capture_output=True, text=True)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  assert '1 kept, 0 broken' in run.stdout


def _loaded_after(module: str) -> set:
  script = (f'import sys, json; import {module}; '
            'print(json.dumps(sorted(sys.modules)))')
  run = subprocess.run([sys.executable, '-c', script], cwd=REPO,
                       capture_output=True, text=True, check=True)
  return set(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_predicting_loads_no_training_loop_nor_loader():
  loaded = _loaded_after('jaxseg.predict')
  assert 'jaxseg.inference.cases' in loaded          # the check can see
  for module in ('jaxseg.training.loop', 'jaxseg.training.step',
                 'jaxseg.training.writers', 'jaxseg.evaluation',
                 'jaxseg.data.pipeline', 'jaxseg.data.dataset', 'grain',
                 'tensorboardX', 'clu.parameter_overview'):
    assert module not in loaded, f'python -m jaxseg.predict imports {module}'


@pytest.mark.slow
def test_scoring_loads_no_model_data_or_training():
  loaded = {m for m in _loaded_after('jaxseg.scoring.cases')
            if m.startswith('jaxseg.')}
  assert not {m for m in loaded if m.startswith(
      ('jaxseg.models', 'jaxseg.data', 'jaxseg.training', 'jaxseg.inference'))}
