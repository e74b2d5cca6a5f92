"""Shared fixtures: a tiny synthetic BraTS set, a tiny config, the real-data path."""

import os
from pathlib import Path

import pytest

# The suite compiles hundreds of small programs once each, and on a CPU
# XLA's LLVM optimisation dominates that time (a tiny ResU-Net's init: 23 s
# at the default level, 2.4 s at level 0). Convolutions and matrix products
# call the same library kernels at any level, and no float semantics change.
_FAST_COMPILE = '--xla_backend_optimization_level=0'
if _FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' +
                             _FAST_COMPILE).strip()
# jaxseg's XLA:CPU options, as the entry points set them (importing jaxseg
# sets none); before any test starts JAX's backend.
from jaxseg import xla_cpu  # noqa: E402  pylint: disable=g-import-not-at-top
xla_cpu.configure()

REPO = Path(__file__).resolve().parents[1]
# The real BraTS sample data: $JAXSEG_DATA, else ../shared/data beside the
# repository. Sample-data configs name '$JAXSEG_DATA/<set>', so it is set
# for them too. Tests that need the data skip with a reason without it.
SAMPLE_DATA = Path(os.environ.get('JAXSEG_DATA') or REPO.parent / 'shared' / 'data')
os.environ['JAXSEG_DATA'] = str(SAMPLE_DATA)
needs_sample_data = pytest.mark.skipif(
    not SAMPLE_DATA.is_dir(),
    reason=f'real BraTS sample data not found at {SAMPLE_DATA} (set JAXSEG_DATA)')


def load_config(name='brats19_resunet'):
  from jaxseg import config_base
  return config_base.load_config_file(str(REPO / 'configs' / f'{name}.py'))


def tiny(config, root=None):
  """The seed-002 config with a tiny ResU-Net and a short run, for tests."""
  config.model.widths = (4, 8, 8)
  config.model.depths = (1, 1, 1)
  config.model.decoder_widths = (8, 4)
  config.model.decoder_depths = (1, 1)
  config.model.output_depth = 1
  config.data.image_size = 32
  config.train.batch_size = 8
  config.train.eval_batch_size = 8
  config.train.num_epochs = 2
  config.train.log_every_steps = 1
  config.data.synthetic.num_cases = 6
  config.data.synthetic.shape = (48, 48, 32)
  config.data.synthetic.steps_per_epoch = 2
  config.data.root = root
  return config


@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory):
  """A session-wide cache for the synthetic set and compiled programs."""
  path = tmp_path_factory.mktemp('jaxseg_cache')
  os.environ['JAXSEG_CACHE'] = str(path)
  return path


@pytest.fixture(scope='session')
def shared_data():
  """The sample data folder (SAMPLE_DATA); skips the test without it."""
  if not SAMPLE_DATA.is_dir():
    pytest.skip(f'real BraTS sample data not found at {SAMPLE_DATA} (set '
                'JAXSEG_DATA)')
  return SAMPLE_DATA


def random_array(shape, seed=0):
  """Standard-normal float32 test input of `shape`."""
  import jax.numpy as jnp
  import numpy as np
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def assert_layer_matches(ours, ref, x, *, key, atol, grad_atol, grad_seed):
  """Flax module `ours` equals `ref` on x: parameter shapes, values, gradients.

  The gradients are those of sum(layer(x) * w) for a random w, with respect
  to the parameters and the input, both computed with `ref`'s parameters.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  variables = ref.init(key, x)
  assert (jax.tree.map(np.shape, ours.init(key, x)) ==
          jax.tree.map(np.shape, variables))
  y_ref, y = ref.apply(variables, x), ours.apply(variables, x)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(y, y_ref, atol=atol)
  w = random_array(y.shape, seed=grad_seed)
  loss = lambda m: lambda v, x: jnp.sum(m.apply(v, x) * w)  # noqa: E731
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(variables, x)
  g = jax.grad(loss(ours), argnums=(0, 1))(variables, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=grad_atol),
               g, g_ref)
