"""Tests of movenerf.nn.layers: the row-major-gradient matmul and the Dense layer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from movenerf.nn.layers import Dense, matmul


def test_matmul_gradients_match_plain_matmul():
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, 5, 7, 16))
  w = jax.random.normal(kw, (16, 24))
  g = jax.random.normal(kg, (3, 5, 7, 24))
  ours = jax.vjp(matmul, x, w)
  ref = jax.vjp(lambda a, b: a @ b, x, w)
  np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6)
  for a, b in zip(ours[1](g), ref[1](g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # Under vmap with shared weights (the per-example loop): weight gradients add up.
  f = lambda fn, w_: jnp.sum(jax.vmap(lambda a: fn(a, w_))(x) ** 2)
  np.testing.assert_allclose(jax.grad(lambda w_: f(matmul, w_))(w),
                             jax.grad(lambda w_: f(jnp.matmul, w_))(w), rtol=1e-4, atol=1e-3)


def test_dense_matches_flax_dense():
  x = jax.random.normal(jax.random.key(1), (4, 9, 12))
  ours, theirs = Dense(20), nn.Dense(20)
  params = theirs.init(jax.random.key(2), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(2), x)) == jax.tree.map(
      jnp.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5,
                             atol=1e-6)
  grad = lambda m: jax.grad(lambda p: jnp.sum(jnp.sin(m.apply(p, x))))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grad(ours), grad(theirs))
