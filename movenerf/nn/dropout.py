"""Inverted dropout with masks from the hashed PRNG of :mod:`movenerf.nn.prng`.

``Dropout`` replaces ``flax.linen.Dropout``: the same semantics (zero with probability
``rate``, scale the rest by 1 / (1 - ``rate``)), with masks that are a hash of the
element index and the key rather than a threefry draw.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from movenerf.nn.prng import keep_mask

RNG_COLLECTION = "dropout"


def keep_scale(key: jax.Array, shape: tuple[int, ...], rate: float,
               dtype=jnp.float32) -> jnp.ndarray:
  """Inverted-dropout multipliers of ``shape``: 0 with probability ``rate``, else
  1 / (1 - ``rate``); a scalar 1 when ``rate`` is 0."""
  if rate == 0.0:
    return jnp.ones((), dtype)
  if rate >= 1.0:
    return jnp.zeros(shape, dtype)
  keep = keep_mask(key, shape, rate)
  return jnp.where(keep, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.zeros((), dtype))


def dropout(x: jnp.ndarray, rate: float, key: jax.Array) -> jnp.ndarray:
  """Inverted dropout: zeroes elements with probability ``rate``, scales the rest."""
  if rate == 0.0:
    return x
  return x * keep_scale(key, x.shape, rate, x.dtype)


class Dropout(nn.Module):
  """Drop-in for ``nn.Dropout(rate)(x, deterministic)`` with hashed masks.

  Attributes:
    rate: probability of zeroing an element.
  """

  rate: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
    if deterministic or self.rate == 0.0:
      return x
    return dropout(x, self.rate, self.make_rng(RNG_COLLECTION))
