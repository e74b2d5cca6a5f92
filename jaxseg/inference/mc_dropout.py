"""Monte-Carlo dropout: T dropout draws of a model in one compiled program.

Monte-Carlo dropout (seed 002, section 2.3; Gal & Ghahramani 2016): run the
model T times in inference mode with dropout still sampling, and read the
spread of the T predictions as the model's (epistemic) uncertainty. Here
batch norm keeps its running statistics and only the dropout masks change:
`apply_fn(variables, x, train=False, rngs={'mc_dropout': key})` (see
`jaxseg.models.layers.SpatialDropout`). The T draws are one `jax.vmap` over
the T keys inside one jitted program, optionally `chunk` keys at a time
(`jax.lax.map` over chunks of keys, vmap inside) so that T x batch
activations need not fit in memory at once.

    probs = mc_dropout_probs(model.apply, variables, images, key, 20, 'sigmoid')
    maps = uncertainty.uncertainty_maps(probs, 'sigmoid')  # mean, std, entropy, MI
    maps = mc_dropout_predict(model.apply, variables, images, key, 20,
                              'sigmoid')           # the same, in one call

The maps and their scores are `jaxseg.scoring.uncertainty`.
"""

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import activations
from jaxseg.errors import InputError
from jaxseg.models.layers import MC_DROPOUT
from jaxseg.scoring.uncertainty import uncertainty_maps

ApplyFn = Callable[..., Any]

_check_activation = activations.check


def _activate(logits, activation: str):
  """Logits (..., K) -> probabilities; 'identity' returns the logits."""
  logits = logits.astype(jnp.float32)
  if activation == 'identity':
    return logits
  return activations.probabilities(logits, activation)


def _main_output(out):
  """One logits array; a deep-supervision list keeps its main head (last)."""
  if isinstance(out, (list, tuple)):
    return out[-1]
  return out


def sample_probs(apply_fn: ApplyFn, variables, images, key,
                 activation: str):
  """One Monte-Carlo dropout draw: images (N, *spatial, C) -> (N, *spatial, K)."""
  out = apply_fn(variables, images, train=False, rngs={MC_DROPOUT: key})
  return _activate(_main_output(out), activation)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'num_samples',
                                             'activation', 'chunk'))
def _mc_probs(apply_fn, variables, images, key, num_samples, activation,
              chunk):
  """(T, N, *spatial, K): draw t uses `jax.random.split(key, T)[t]`."""
  keys = jax.random.split(key, num_samples)
  draw = lambda k: sample_probs(apply_fn, variables, images, k, activation)  # noqa: E731
  if chunk <= 0 or chunk >= num_samples:
    return jax.vmap(draw)(keys)
  # Sequential over chunks, vmap inside. T is padded up to a multiple of
  # chunk by repeating keys, and the extra draws are dropped: one compiled
  # body (lax.map's batch_size would compile the model a second time for
  # the remainder).
  num_chunks = -(-num_samples // chunk)
  index = np.arange(num_chunks * chunk) % num_samples
  keys = keys[index].reshape((num_chunks, chunk) + keys.shape[1:])
  probs = jax.lax.map(jax.vmap(draw), keys)
  return probs.reshape((num_chunks * chunk,) + probs.shape[2:])[:num_samples]


def mc_dropout_probs(apply_fn: ApplyFn, variables: Mapping[str, Any], images,
                     key, num_samples: int, activation: str, chunk: int = 0):
  """Monte-Carlo dropout probabilities, all draws in one compiled program.

  Draw t is `activation(apply_fn(variables, images, train=False,
  rngs={'mc_dropout': k_t}))` with `k_t = jax.random.split(key, T)[t]`, so a
  Python loop over the same keys gives the same stack. The program is
  compiled once per (apply_fn, shapes, T, activation, chunk): pass a stable
  callable such as `model.apply`, not a new lambda per call.

  Args:
    apply_fn: `model.apply`; with `train=False` it returns logits
      (N, *spatial, K) (a list, as deep supervision returns in training,
      keeps its last, main head).
    variables: the model's variables ('params', 'batch_stats', ...).
    images: (N, *spatial, C) inputs.
    key: a PRNG key (`jax.random.key` or `jax.random.PRNGKey`).
    num_samples: T >= 1 draws.
    activation: 'sigmoid' (independent channels) or 'softmax' (over the
      last axis).
    chunk: draws evaluated at once (vmap width); 0 or >= T: all T at once.
      Smaller values bound the activation memory to chunk x N images; T is
      padded up to a multiple of chunk (up to chunk - 1 extra draws, dropped).

  Returns:
    float32 (T, N, *spatial, K) probabilities.
  """
  _check_activation(activation)
  if num_samples < 1:
    raise ValueError(f'num_samples must be >= 1, got {num_samples}')
  if chunk < 0:
    raise ValueError(f'chunk must be >= 0 (0: all at once), got {chunk}')
  return _mc_probs(apply_fn, variables, images, key, int(num_samples),
                   activation, int(chunk))


def mc_dropout_predict(apply_fn: ApplyFn, variables: Mapping[str, Any], images,
                       key, num_samples: int, activation: str,
                       chunk: int = 0) -> dict:
  """Monte-Carlo dropout prediction and its uncertainty maps.

  Same arguments as `mc_dropout_probs`; returns `uncertainty_maps` of the
  (T, N, *spatial, K) stack: 'mean', 'std' (N, *spatial, K), 'entropy',
  'expected_entropy', 'mutual_information' (N, *spatial), and for sigmoid
  the per-channel entropy and MI (N, *spatial, K).
  """
  probs = mc_dropout_probs(apply_fn, variables, images, key, num_samples,
                           activation, chunk)
  return uncertainty_maps(probs, activation)


def has_dropout(apply_fn: ApplyFn, variables: Mapping[str, Any], x,
                num_keys: int = 4) -> bool:
  """True if different 'mc_dropout' keys give different outputs on x.

  Draws `num_keys` logits maps (one compiled vmap) and compares them to the
  first bit for bit: without active dropout the draws do not depend on the
  key and are identical. x: a small (N, *spatial, C) probe batch.
  """
  logits = np.asarray(_mc_probs(apply_fn, variables, x, jax.random.key(0),
                                int(num_keys), 'identity', 0))
  return any(not np.array_equal(logits[0], s) for s in logits[1:])


def require_dropout(apply_fn: ApplyFn, variables: Mapping[str, Any], x,
                    where: str = 'config.inference.mc_samples') -> None:
  """Raises InputError(where) if the model has no active dropout on x."""
  if not has_dropout(apply_fn, variables, x):
    raise InputError(where, 'Monte-Carlo dropout needs a model with dropout, '
                     'but different dropout keys give the same output; set '
                     'config.model.dropout_rate > 0 or mc_samples = 0')
