"""Tests of movenerf.nn.prng: the hashed keep masks and the hashed PRNG key stream."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.nn import dropout as hashed
from movenerf.nn import prng

SHAPE = (32, 64, 10, 64)  # a view-attention slice: 1.3M elements


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_rate_is_one_minus_rate(rate):
  keep = np.asarray(prng.keep_mask(jax.random.key(3), SHAPE, rate))
  n = keep.size
  # 6 binomial standard deviations.
  assert abs(keep.mean() - (1 - rate)) < 6 * np.sqrt(rate * (1 - rate) / n)


def test_neighbours_and_keys_are_independent():
  rate = 0.5
  a = np.asarray(prng.keep_mask(jax.random.key(0), SHAPE, rate)).reshape(-1)
  b = np.asarray(prng.keep_mask(jax.random.key(1), SHAPE, rate)).reshape(-1)
  tol = 6 * np.sqrt(0.25 * 0.75 / a.size)
  # Pairs of elements at the strides of every axis (1 = channel, 64 = view, 640 =
  # sample, 40960 = ray), and the same element under two keys: both kept 1/4 of the time.
  for stride in (1, 64, 640, 40960):
    assert abs(np.mean(a[:-stride] & a[stride:]) - 0.25) < tol, stride
  assert abs(np.mean(a & b) - 0.25) < tol
  # Sub-keys as flax hands them to consecutive layers.
  k1, k2 = jax.random.split(jax.random.key(7))
  c = np.asarray(prng.keep_mask(k1, SHAPE, rate)).reshape(-1)
  d = np.asarray(prng.keep_mask(k2, SHAPE, rate)).reshape(-1)
  assert abs(np.mean(c & d) - 0.25) < tol


def test_mask_is_a_function_of_the_key():
  key = jax.random.key(11)
  eager = prng.keep_mask(key, (4, 5, 6), 0.3)
  jitted = jax.jit(lambda k: prng.keep_mask(k, (4, 5, 6), 0.3))(key)
  np.testing.assert_array_equal(eager, jitted)
  assert not np.array_equal(eager, prng.keep_mask(jax.random.key(12), (4, 5, 6), 0.3))


def test_hashed_key_streams_are_independent():
  """Masks and noise from hashed keys as flax derives them for sibling layers
  (fold-in of the module path, split under vmap) keep the rate and are independent."""
  rate = 0.5
  tol = 6 * np.sqrt(0.25 * 0.75 / np.prod(SHAPE))
  root = prng.hashed_key(jax.random.key(9))
  assert jax.random.key_impl(root) == prng.HASH_IMPL
  folded = [jax.random.fold_in(root, i) for i in (0, 1, 2 ** 31 + 1)]
  split = list(jax.random.split(root, 2))
  masks = [np.asarray(prng.keep_mask(k, SHAPE, rate)).reshape(-1) for k in folded + split]
  for i, a in enumerate(masks):
    assert abs(a.mean() - (1 - rate)) < tol
    for b in masks[i + 1:]:
      assert abs(np.mean(a & b) - 0.25) < tol
  # The keys are pure functions of their inputs (a rematerialised pass redraws them).
  np.testing.assert_array_equal(jax.random.key_data(jax.jit(jax.random.fold_in)(root, 1)),
                                jax.random.key_data(folded[1]))
  # Router noise: jax.random.normal through the hashed bits.
  noise = np.asarray(jax.random.normal(folded[0], (512, 512)))
  assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1) < 0.01
  assert abs(np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]) < 0.01


def test_children_of_a_zero_key_draw_uniform_first_elements():
  """Regression: children of ``hashed_key(PRNGKey(0))`` (key words 0, 0; flax's param
  and dropout streams are such children) once drew bits 0 at index 0 (initial weights at
  the truncation bound)."""
  root = prng.hashed_key(jax.random.PRNGKey(0))
  n = 4096
  folded = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n))
  children = {"fold_in": folded, "split": jax.random.split(root, n)}
  for name, keys in children.items():
    bits = np.asarray(jax.vmap(lambda k: jax.random.bits(k, (3,)))(keys))
    assert np.count_nonzero(bits == 0) == 0, name
    first = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (3,)))(keys))[:, 0]
    assert abs(first.mean() - 0.5) < 6 * np.sqrt(1 / 12 / n), name
    assert abs(np.mean(first < 0.5) - 0.5) < 6 * np.sqrt(0.25 / n), name


def test_hashed_keys_compile_without_threefry_loops():
  """What the hashed stream is for: on CPU every threefry call lowers to a while loop
  (a few hundred per train step); make_rng on a hashed key lowers to none."""

  class Stack(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(3):
        x = hashed.Dropout(0.5)(x, deterministic=False)
      return x

  x = jnp.ones((4, 8))
  hlo = lambda key: jax.jit(lambda k: Stack().apply({}, x, rngs={"dropout": k})).lower(
      key).compile().as_text()
  assert hlo(jax.random.key(0)).count(" while(") >= 3
  assert hlo(prng.hashed_key(jax.random.key(0))).count(" while(") == 0
  out = Stack().apply({}, x, rngs={"dropout": prng.hashed_key(jax.random.key(0))})
  assert set(np.unique(out)) <= {0.0, 8.0} and 0 < np.count_nonzero(out) < x.size
