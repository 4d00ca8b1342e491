"""Tests of movenerf.nn.dropout: hashed dropout, its gradient and the flax module."""

import jax
import jax.numpy as jnp
import numpy as np

from movenerf.nn import dropout as hashed
from movenerf.nn import prng


def test_dropout_values_and_gradient_under_remat():
  x = jnp.linspace(0.5, 2.0, 4096).reshape(64, 64)
  key = jax.random.key(5)
  out = hashed.dropout(x, 0.25, key)
  keep = np.asarray(prng.keep_mask(key, x.shape, 0.25))
  np.testing.assert_allclose(out, np.where(keep, np.asarray(x) / 0.75, 0.0), rtol=1e-6)
  # The expectation is preserved.
  assert abs(float(jnp.mean(hashed.dropout(jnp.ones((512, 512)), 0.25, key))) - 1) < 0.01
  # A rematerialised backward pass redraws the same mask.
  loss = lambda v: jnp.sum(hashed.dropout(v, 0.25, key) ** 2)
  np.testing.assert_allclose(jax.grad(jax.checkpoint(loss))(x), jax.grad(loss)(x), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(loss)(x), np.where(keep, 2 * np.asarray(x) / 0.75 ** 2, 0),
                             rtol=1e-5)
  np.testing.assert_array_equal(hashed.dropout(x, 1.0, key), 0.0)
  np.testing.assert_array_equal(hashed.dropout(x, 0.0, key), x)


def test_dropout_module_uses_the_dropout_stream():
  x = jnp.ones((8, 16))
  layer = hashed.Dropout(0.5)
  np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
  a = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
  b = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
  assert set(np.unique(a)) <= {0.0, 2.0} and not np.array_equal(a, b)
