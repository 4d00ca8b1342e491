"""Dropout whose masks come from a counter-based integer hash, not from threefry.

``flax.linen.Dropout`` draws its mask with ``jax.random.bernoulli`` (threefry-2x32). On
CPU that costs ~5 ns per element: the view transformer drops out [R, S, V, D] attention
weights, and in the profile of a GNT train step (512 rays, reference configuration,
2-core CPU) mask generation took ~40% of the step, more than any layer's arithmetic.
Here every element's keep bit is a hash of its flat index and the two 32-bit words of
the key (two rounds of a 32-bit multiply-xorshift mixer), which XLA fuses into the
consumer of the mask: ~0.3 ms instead of ~7 ms for a [32, 64, 10, 64] mask.

Deriving the keys costs compile time too: on CPU, JAX lowers each threefry call to its
own while loop, and the train step (512 rays, reference configuration) had 138 of them
for GNT and 309 for GNT-MoVE (a ``make_rng`` fold-in and a draw per dropout, the
router noise). The mask now takes the key's two words as its seeds, and
``hashed_key`` wraps a key in ``HASH_IMPL``, a PRNG implementation whose fold-in,
split and bits are integer hashes, so that flax's ``make_rng`` costs a few fused
integer ops; the train step gives its 'dropout' and 'router' streams such keys. That
leaves 10 and 16 while loops, at the same step time. Compiled alternately with the
threefry keys in one process on the 2-core CPU, GNT took 20-35 s against 35-45 s and
GNT-MoVE 34-60 s against 56-64 s (this host's compile times vary by up to 2x between
identical runs). ``init_variables`` draws the initial parameters through such a key too
(its program had 348 loops, one per parameter).

The masks are a pure function of the key, so a rematerialised backward pass sees the
mask of its forward pass. They are not cryptographic random numbers, which dropout and
router noise do not need; the tests check the keep rate, the independence of
neighbouring elements, of different keys and of sibling keys (fold-in, split), and
the moments of normal noise drawn from a hashed key.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import random as jex_random

RNG_COLLECTION = "dropout"


def _mix(x: jnp.ndarray) -> jnp.ndarray:
  """A bijective 32-bit integer mixer (xorshift-multiply, full avalanche)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _key_words(key: jax.Array) -> jnp.ndarray:
  """The first two uint32 words of a typed or raw (uint32) key."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return key.astype(jnp.uint32).reshape(-1)[:2]


def _hash_bits(words: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
  """uint32 hashes of the flat indices of ``shape`` under the two key words."""
  size = int(np.prod(shape))
  if size >= 2 ** 32:
    raise ValueError(f"random array of {size} elements: the hash counter has 32 bits")
  index = jax.lax.iota(jnp.uint32, size).reshape(shape)
  return _mix(_mix(index + words[0]) ^ words[1])


def keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jnp.ndarray:
  """Bool mask of ``shape``, each element True with probability 1 - ``rate``.

  The probability is exact to 2^-32. Arrays must have fewer than 2^32 elements.
  """
  bits = _hash_bits(_key_words(key), shape)
  return bits >= jnp.uint32(min(round(rate * 2.0 ** 32), 2 ** 32 - 1))


# The hashed PRNG implementation: a key is two uint32 words. Fold-in and split derive
# keys with different salts, so that split(k)[i] differs from fold_in(k, i).
_FOLD_SALT, _SPLIT_SALT, _WORD_SALT = 0x9E3779B9, 0x6A09E667, 0xBB67AE85


def _hash_seed(seed: jnp.ndarray) -> jnp.ndarray:
  seed = seed.astype(jnp.uint32)
  return jnp.stack([_mix(seed + jnp.uint32(_FOLD_SALT)), _mix(seed ^ jnp.uint32(_SPLIT_SALT))])


def _derive(key: jnp.ndarray, data, salt: int) -> jnp.ndarray:
  # Each word of the child mixes in one word of the parent. (A second word of
  # mix(key[1] + first) made every child of a key whose second word is 0, such as
  # hashed_key(PRNGKey(0)), draw bits 0 at index 0: mix(mix(first) ^ mix(first)).)
  first = _mix(key[0] ^ _mix(jnp.asarray(data).astype(jnp.uint32) + jnp.uint32(salt)))
  return jnp.stack([first, _mix(key[1] ^ _mix(first + jnp.uint32(_WORD_SALT)))])


def _hash_fold_in(key: jnp.ndarray, data) -> jnp.ndarray:
  return _derive(key, data, _FOLD_SALT)


def _hash_split(key: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
  count = int(np.prod(shape))
  words = jax.vmap(_derive, (None, 0, None))(key, jax.lax.iota(jnp.uint32, count), _SPLIT_SALT)
  return words.reshape(tuple(shape) + (2,))


def _hash_random_bits(key: jnp.ndarray, bit_width: int, shape: tuple[int, ...]) -> jnp.ndarray:
  if bit_width == 64:
    pair = _hash_bits(key, tuple(shape) + (2,)).astype(jnp.uint64)
    return (pair[..., 0] << jnp.uint64(32)) | pair[..., 1]
  bits = _hash_bits(key, tuple(shape))
  if bit_width == 32:
    return bits
  return (bits >> (32 - bit_width)).astype(jnp.dtype(f"uint{bit_width}"))


HASH_IMPL = jex_random.define_prng_impl(
    key_shape=(2,), seed=_hash_seed, split=_hash_split, random_bits=_hash_random_bits,
    fold_in=_hash_fold_in, name="movenerf_hash", tag="hsh")


def hashed_key(key: jax.Array) -> jax.Array:
  """A ``HASH_IMPL`` key made from the words of ``key`` (typed or raw), for the noise
  streams ('dropout', 'router') and the parameter initialisation: flax's ``make_rng``
  fold-ins on it compile to fused integer ops."""
  return jax.random.wrap_key_data(_key_words(key), impl=HASH_IMPL)


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
