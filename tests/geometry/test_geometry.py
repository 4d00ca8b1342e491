"""Analytic checks of cameras, rays, projection, bilinear sampling and encodings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from movenerf.geometry import cameras as cam_lib
from movenerf.geometry.bilinear import bilinear_sample
from movenerf.geometry.encoding import encoding_size, sinusoidal_encoding
from movenerf.geometry.epipolar import view_direction_features
from movenerf.geometry.projection import in_image, project_points
from movenerf.geometry.rays import (flat_index_to_pixels, pixel_rays, points_along_rays, sample_depths)


def _camera(height=48, width=64):
  k = cam_lib.pinhole_intrinsics(50.0, 55.0, 31.5, 23.5)
  c2w = cam_lib.look_at([3.0, -2.0, 1.5], [0.2, 0.1, -0.3])
  return cam_lib.Cameras(jnp.asarray(k)[None], jnp.asarray(c2w)[None], height, width)


def test_known_point_projects_to_known_pixel():
  # Camera at the origin looking down +z (identity pose): X = (1, -0.5, 4) lands at
  # u = fx * 1/4 + cx, v = fy * (-0.5)/4 + cy.
  k = cam_lib.pinhole_intrinsics(100.0, 80.0, 32.0, 24.0)
  cams = cam_lib.Cameras(jnp.asarray(k)[None], jnp.eye(4)[None], 48, 64)
  xy, front = project_points(jnp.array([[1.0, -0.5, 4.0], [0.0, 0.0, -1.0]]), cams)
  np.testing.assert_allclose(xy[0, 0], [100 * 0.25 + 32, 80 * -0.125 + 24], rtol=1e-6)
  assert bool(front[0, 0]) and not bool(front[0, 1])


def test_rays_round_trip_through_projection():
  cams = _camera()
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


def test_in_image_is_closed_interval():
  xy = jnp.array([[0.0, 0.0], [63.0, 47.0], [63.01, 0.0], [-0.01, 3.0], [10.0, 47.5]])
  np.testing.assert_array_equal(in_image(xy, 48, 64), [True, True, False, False, False])


def test_gnt34_round_trip_and_layout():
  cams = _camera()
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
  bad = cam_lib.to_gnt34(_camera())
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


def test_sinusoidal_encoding_formula():
  x = jnp.array([[0.3, -1.2, 2.0]])
  enc = sinusoidal_encoding(x, num_freqs=4)
  assert enc.shape == (1, encoding_size(3, 4)) == (1, 27)
  expected = [np.array(x[0])]
  for f in [1, 2, 4, 8]:
    expected += [np.sin(f * np.array(x[0])), np.cos(f * np.array(x[0]))]
  np.testing.assert_allclose(enc[0], np.concatenate(expected), rtol=1e-6, atol=1e-6)
