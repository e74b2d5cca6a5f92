"""Training with the augmentation chain in the train step (augment.where='device').

An interrupted run resumed in a fresh process ends with the parameters and
optimiser state of the uninterrupted run, bit for bit, as with host
augmentation (tests/training/test_train.py): the draws are keyed by the step and the
sample's row. The resumed run asks for 'auto' (on this CPU: the host), and
keeps the placement the run started with.
"""

import jax
import numpy as np
import pytest

from test_train import _main, _params

# Trains or runs whole pipelines: the full suite's, not the fast loop's.
pytestmark = pytest.mark.slow

DEVICE_AUGMENT = [
    '--config.augment.where=device', '--config.augment.rotate_prob=0.5',
    '--config.augment.scale_prob=0.5', '--config.augment.elastic_prob=0.3',
    '--config.augment.gamma_prob=0.3', '--config.train.num_epochs=2',
]


def test_device_augmentation_resumes_exactly(tmp_path, cache_dir):
  straight = tmp_path / 'straight'
  log = _main(straight, *DEVICE_AUGMENT)
  assert 'augmentation on the device' in log
  resumed = tmp_path / 'resumed'
  # Step 3 of 4: in the middle of epoch 2.
  _main(resumed, *DEVICE_AUGMENT, '--config.train.halt_after_steps=3')
  assert _params(resumed)[0] == 3
  log = _main(resumed, *DEVICE_AUGMENT, '--config.augment.where=auto')
  assert 'resumed from step 3' in log
  assert 'augmentation on the device' in log   # 'auto' kept the run's place
  step_a, params_a, opt_a = _params(straight)
  step_b, params_b, opt_b = _params(resumed)
  assert step_a == step_b == 4
  for a, b in zip(jax.tree.leaves((params_a, opt_a)),
                  jax.tree.leaves((params_b, opt_b))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
