"""Tests of movenerf.geometry.projection: pinhole projection and the image bounds."""

import jax.numpy as jnp
import numpy as np

from movenerf.geometry import cameras as cam_lib
from movenerf.geometry.projection import in_image, project_points


def test_known_point_projects_to_known_pixel():
  # Camera at the origin looking down +z (identity pose): X = (1, -0.5, 4) lands at
  # u = fx * 1/4 + cx, v = fy * (-0.5)/4 + cy.
  k = cam_lib.pinhole_intrinsics(100.0, 80.0, 32.0, 24.0)
  cams = cam_lib.Cameras(jnp.asarray(k)[None], jnp.eye(4)[None], 48, 64)
  xy, front = project_points(jnp.array([[1.0, -0.5, 4.0], [0.0, 0.0, -1.0]]), cams)
  np.testing.assert_allclose(xy[0, 0], [100 * 0.25 + 32, 80 * -0.125 + 24], rtol=1e-6)
  assert bool(front[0, 0]) and not bool(front[0, 1])


def test_in_image_is_closed_interval():
  xy = jnp.array([[0.0, 0.0], [63.0, 47.0], [63.01, 0.0], [-0.01, 3.0], [10.0, 47.5]])
  np.testing.assert_array_equal(in_image(xy, 48, 64), [True, True, False, False, False])
