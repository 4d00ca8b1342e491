"""Tests of movenerf.geometry.epipolar: the view-direction features of a point."""

import jax.numpy as jnp
import numpy as np

from movenerf.geometry.epipolar import view_direction_features


def test_view_direction_features_analytic():
  point = jnp.zeros((1, 3))
  target = jnp.array([0.0, 0.0, 2.0])
  sources = jnp.array([[0.0, 0.0, 5.0], [2.0, 0.0, 0.0]])
  f = view_direction_features(point, target, sources)[0]
  # Same direction: dot = 1; the direction of the (rounding-level) difference is
  # divided by max(|d|, 1e-6) as in the official code, so it stays bounded.
  np.testing.assert_allclose(f[0, 3], 1.0, atol=1e-6)
  assert float(jnp.linalg.norm(f[0, :3])) <= 1.0 + 1e-6
  # Perpendicular: a - b = (-1, 0, 1)/|.|, dot 0.
  np.testing.assert_allclose(f[1], [-2 ** -0.5, 0, 2 ** -0.5, 0], atol=1e-6)
