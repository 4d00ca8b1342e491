"""Tests of movenerf.geometry.encoding: the sinusoidal position encoding."""

import jax.numpy as jnp
import numpy as np

from movenerf.geometry.encoding import encoding_size, sinusoidal_encoding


def test_sinusoidal_encoding_formula():
  x = jnp.array([[0.3, -1.2, 2.0]])
  enc = sinusoidal_encoding(x, num_freqs=4)
  assert enc.shape == (1, encoding_size(3, 4)) == (1, 27)
  expected = [np.array(x[0])]
  for f in [1, 2, 4, 8]:
    expected += [np.sin(f * np.array(x[0])), np.cos(f * np.array(x[0]))]
  np.testing.assert_allclose(enc[0], np.concatenate(expected), rtol=1e-6, atol=1e-6)
