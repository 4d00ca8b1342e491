"""Tests of movenerf.geometry.rays: pixel rays, points along them and depth samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.geometry.projection import project_points
from movenerf.geometry.rays import (flat_index_to_pixels, pixel_rays, points_along_rays,
                                    sample_depths)
from tests.geometry import helpers


def test_rays_round_trip_through_projection():
  cams = helpers.camera()
  pixels = jnp.array([[0, 0], [63, 47], [10, 30], [31, 23]], jnp.float32)
  rays = pixel_rays(cams[0], pixels)
  # Camera-frame z of the direction is 1, so depth z is the point's z-depth.
  depths = jnp.array([[1.0, 2.5], [3.0, 7.0], [0.5, 9.0], [4.0, 4.5]])
  points = points_along_rays(rays, depths)
  xy, front = project_points(points.reshape(-1, 3), cams)
  np.testing.assert_allclose(xy[0].reshape(4, 2, 2), np.repeat(pixels[:, None], 2, 1), atol=2e-4)
  assert bool(jnp.all(front))
  w2c = np.linalg.inv(np.asarray(cams.c2w[0]))
  cam_z = points.reshape(-1, 3) @ w2c[:3, :3].T + w2c[:3, 3]
  np.testing.assert_allclose(cam_z[:, 2], depths.reshape(-1), rtol=1e-5)


def test_flat_index_layout():
  np.testing.assert_array_equal(flat_index_to_pixels(jnp.array([0, 5, 64, 130]), 64),
                                [[0, 0], [5, 0], [0, 1], [2, 2]])


@pytest.mark.parametrize("inverse", [False, True])
def test_sample_depths_deterministic_and_stratified(inverse):
  z = sample_depths(2.0, 6.0, 3, 5, inverse_depth=inverse)
  expected = (1 / np.linspace(1 / 2, 1 / 6, 5)) if inverse else np.linspace(2, 6, 5)
  np.testing.assert_allclose(z[0], expected, rtol=1e-6)
  zs = sample_depths(2.0, 6.0, 1000, 5, inverse_depth=inverse, rng=jax.random.PRNGKey(0))
  mids = 0.5 * (expected[1:] + expected[:-1])
  lower = np.concatenate([[expected[0]], mids])
  upper = np.concatenate([mids, [expected[-1]]])
  assert np.all(zs >= lower - 1e-6) and np.all(zs <= upper + 1e-6)
  # Stratified draws cover each interval (not stuck at its centre).
  np.testing.assert_allclose(np.mean(zs, 0), 0.5 * (lower + upper), atol=0.05)
