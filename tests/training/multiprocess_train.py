"""Trains the tiny seed-002 run for a few steps as one of several processes.

    python tests/training/multiprocess_train.py WORKDIR OUT.npz STEPS [PORT NUM PID]

Run by tests/training/test_multihost.py: once alone and as 2 processes on this
machine (CPU collectives over gloo), on the same global batch. Every process
trains, checkpoints with Orbax and restores, trains on to the end of the
epoch, exports the model folder (`model_folder.export`) and loads it;
process 0 writes the restored and the exported parameters to OUT.npz.
"""

import os
import sys

# conftest.py (the shared fixtures) is in tests/, one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from conftest import load_config, tiny  # pylint: disable=g-import-not-at-top
from jaxseg.training import checkpoints
from jaxseg import model_folder
from jaxseg.training import optim
from jaxseg import parallel
from jaxseg.training import loop as loop_lib
from jaxseg import models
from jaxseg import modes
from jaxseg.training import state as state_lib
def main(argv):
  workdir, out, steps = argv[1], argv[2], int(argv[3])
  if len(argv) > 4:
    port, num, pid = argv[4:7]
    assert parallel.initialize(f'localhost:{port}', int(num), int(pid))
  config = tiny(load_config())
  # SGD, not the config's Adam: Adam's first steps move every weight by ~lr
  # whatever its gradient's size, so a gradient component that is float
  # noise (~1e-9) and differs between reduction orders moves a weight by up
  # to 2 lr; with SGD the parameter difference measures the gradients'.
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.train.halt_after_steps = steps
  config.train.steps_per_epoch = steps + 1
  config.data.cache_dir = os.path.join(os.path.dirname(workdir), 'cache')
  modes.train(config, workdir)
  # Restore what was written, on this process's mesh.
  mesh = parallel.make_mesh(config.mesh)
  model = models.from_config(config)
  tx = optim.build_for_run(config, config.train.steps_per_epoch)
  source_shape = (config.data.image_size, config.data.image_size,
                  len(config.data.modalities))
  # The run's own initial parameters (loop.py splits key(seed) the same way).
  init_key = jax.random.split(jax.random.key(config.seed))[0]
  state = jax.device_put(
      state_lib.create_train_state(model, tx, init_key, source_shape),
      parallel.replicated(mesh))
  initial = jax.device_get(state.params)
  restored, loop_json, _ = checkpoints.restore_newest(workdir, state)
  loop = loop_lib.LoopState(**loop_json)
  assert int(restored.step) == steps, int(restored.step)
  params = jax.tree_util.tree_flatten_with_path(
      jax.device_get(restored.params))[0]
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(jax.device_get(restored.params)), jax.tree.leaves(initial)))
  assert loop.data_iterator, 'the data iterator position was not saved'
  # Train on to the end of epoch 1 (a best checkpoint), export the model
  # folder from every process, and read it back.
  config.train.halt_after_steps = None
  config.train.num_epochs = 1
  modes.train(config, workdir)
  folder = model_folder.export(config, workdir)
  exported = model_folder.load(folder, mesh)
  exported = jax.tree_util.tree_flatten_with_path(
      jax.device_get(exported.state.params))[0]
  if jax.process_index() == 0:
    np.savez(out, **{jax.tree_util.keystr(k): v for k, v in params},
             **{'exported' + jax.tree_util.keystr(k): v for k, v in exported},
             moved_from_init=np.asarray(moved),
             partial_left=np.asarray(any(
                 n.startswith('.export-') for n in os.listdir(workdir))))
  print('process', jax.process_index(), 'of', jax.process_count(), 'done')


if __name__ == '__main__':
  main(sys.argv)
