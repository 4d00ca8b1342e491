"""A counter-based hashed PRNG for dropout masks, router noise and parameter init.

Every element's bits are a hash of its flat index and the two 32-bit words of the key
(two rounds of a 32-bit multiply-xorshift mixer), which XLA fuses into the consumer of
the bits instead of running a threefry computation per draw. ``HASH_IMPL`` is a JAX PRNG
implementation whose seed, fold-in, split and bits are such hashes; ``hashed_key``
wraps any key in it, so that flax's ``make_rng`` fold-ins compile to a few fused integer
ops (on CPU each threefry call lowers to a while loop of its own).

The bits are a pure function of the key, so a rematerialised backward pass redraws the
same mask. They are not cryptographic random numbers, which dropout, router noise and
initialisation do not need; ``tests/nn/test_prng.py`` checks the keep rate, the
independence of neighbouring elements, of different keys and of sibling keys (fold-in,
split), and the moments of normal noise drawn from a hashed key. Why this exists, with
the measurements: ``benchmarks/README.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import random as jex_random


def _mix(x: jnp.ndarray) -> jnp.ndarray:
  """A bijective 32-bit integer mixer (xorshift-multiply, full avalanche)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def key_words(key: jax.Array) -> jnp.ndarray:
  """The first two uint32 words of a typed or raw (uint32) key."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return key.astype(jnp.uint32).reshape(-1)[:2]


def hash_bits(words: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
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
  bits = hash_bits(key_words(key), shape)
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
    pair = hash_bits(key, tuple(shape) + (2,)).astype(jnp.uint64)
    return (pair[..., 0] << jnp.uint64(32)) | pair[..., 1]
  bits = hash_bits(key, tuple(shape))
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
  return jax.random.wrap_key_data(key_words(key), impl=HASH_IMPL)
