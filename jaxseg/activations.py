"""The one table of output activations: logits -> probabilities.

Every model returns logits (N, *spatial, K). What turns them into
probabilities depends on the label mode (`labels.activation`):

  'sigmoid'  each channel an independent binary problem (binary masks, the
             nested BraTS regions WT/TC/ET)
  'softmax'  the channels are mutually exclusive classes (last axis)

Losses, metrics, prediction and Monte-Carlo dropout all look the activation
up here, so a new one is added in one place.
"""

from typing import Callable

import jax

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'sigmoid': jax.nn.sigmoid,
    'softmax': lambda logits: jax.nn.softmax(logits, axis=-1),
}


def check(activation: str) -> str:
  """`activation` if it is in the table; ValueError naming the known ones."""
  if activation not in ACTIVATIONS:
    raise ValueError(f'unknown activation {activation!r}; known: '
                     f'{", ".join(ACTIVATIONS)}')
  return activation


def probabilities(logits: jax.Array, activation: str) -> jax.Array:
  """(N, *spatial, K) logits -> probabilities of the same shape."""
  return ACTIVATIONS[check(activation)](logits)
