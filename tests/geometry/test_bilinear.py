"""Tests of movenerf.geometry.bilinear: bilinear sampling, its borders and its gradient."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from movenerf.geometry.bilinear import bilinear_sample


def test_bilinear_matches_scipy_including_borders():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(7, 9, 3)).astype(np.float32)
  # Inside, on the edges, just beyond them (fading to zero) and far outside.
  xy = np.concatenate([rng.uniform(-1.5, 9.5, size=(400, 1)),
                       rng.uniform(-1.5, 7.5, size=(400, 1))], axis=1).astype(np.float32)
  xy[:4] = [[0, 0], [8, 6], [8.5, 3.2], [-0.3, 6.0]]
  ours = np.asarray(bilinear_sample(jnp.asarray(image), jnp.asarray(xy)))
  for c in range(3):
    ref = ndimage.map_coordinates(image[..., c], [xy[:, 1], xy[:, 0]], order=1,
                                  mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(ours[:, c], ref, atol=1e-5)


def test_bilinear_gradient_is_finite_and_correct():
  image = jnp.asarray(np.random.default_rng(1).normal(size=(5, 6, 2)), jnp.float32)
  f = lambda xy: jnp.sum(bilinear_sample(image, xy) ** 2)
  xy = jnp.array([[2.3, 1.7], [0.0, 0.0], [5.0, 4.0], [-3.0, 9.0], [1e6, -1e6]])
  g = jax.grad(f)(xy)
  assert bool(jnp.all(jnp.isfinite(g)))
  eps = 1e-3
  e = jnp.array([[eps, 0.0]] + [[0.0, 0.0]] * 4)
  numeric = (f(xy + e) - f(xy - e)) / (2 * eps)
  np.testing.assert_allclose(g[0, 0], numeric, rtol=2e-2)
  np.testing.assert_allclose(g[3:], 0.0)  # far outside: no signal
