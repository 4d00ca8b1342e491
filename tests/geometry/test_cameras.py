"""Tests of movenerf.geometry.cameras: the GNT 34-float layout, conventions and look-at."""

import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.geometry import cameras as cam_lib
from movenerf.geometry.projection import project_points
from tests.geometry import helpers


def test_gnt34_round_trip_and_layout():
  cams = helpers.camera()
  packed = cam_lib.to_gnt34(cams)
  assert packed.shape == (1, 34)
  assert packed[0, 0] == 48 and packed[0, 1] == 64 and packed[0, 2] == 50.0
  back = cam_lib.from_gnt34(packed)
  np.testing.assert_allclose(back.intrinsics, cams.intrinsics)
  np.testing.assert_allclose(back.c2w, cams.c2w)
  assert (back.height, back.width) == (48, 64)


def test_gnt34_rejects_bad_input():
  with pytest.raises(ValueError, match="34 floats"):
    cam_lib.from_gnt34(np.zeros((2, 33)))
  bad = cam_lib.to_gnt34(helpers.camera())
  bad[0, 20] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    cam_lib.from_gnt34(bad)


def test_opengl_to_opencv_flips_y_and_z():
  c2w_gl = np.eye(4, dtype=np.float32)
  c2w_cv = cam_lib.opengl_to_opencv(c2w_gl)
  np.testing.assert_array_equal(np.diag(c2w_cv), [1, -1, -1, 1])
  # A point in front of the OpenGL camera (z < 0) is in front of the OpenCV one.
  k = cam_lib.pinhole_intrinsics(10, 10, 5, 5)
  cams = cam_lib.Cameras(jnp.asarray(k)[None], jnp.asarray(c2w_cv)[None], 11, 11)
  _, front = project_points(jnp.array([[0.0, 0.0, -3.0]]), cams)
  assert bool(front[0, 0])


def test_look_at_points_z_at_target():
  c2w = cam_lib.look_at([4.0, 0.0, 1.0], [0.0, 0.0, 0.0])
  z = c2w[:3, 2]
  np.testing.assert_allclose(z, -np.array([4.0, 0, 1]) / np.sqrt(17), rtol=1e-6)
  np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-6)
  assert c2w[2, 1] < 0  # image "down" (y) points away from world up (+z)
