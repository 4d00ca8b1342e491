"""Two-view geometry on analytic cases: known cameras and points give zero epipolar
distance and exact depths; a known displacement gives a known distance."""

import numpy as np
import pytest

from movenerf.geometry import cameras, two_view


def _rig():
  """Two cameras 0.5 apart looking at a point 4 in front, and random points near it."""
  k_a = cameras.pinhole_intrinsics(120.0, 110.0, 63.5, 47.5).astype(np.float64)
  k_b = cameras.pinhole_intrinsics(90.0, 95.0, 40.0, 52.0).astype(np.float64)
  c2w_a = cameras.look_at([0.0, 0.0, 0.0], [0.3, -0.2, 4.0], up=(0.0, -1.0, 0.0))
  c2w_b = cameras.look_at([0.5, 0.1, 0.2], [0.3, -0.2, 4.0], up=(0.0, -1.0, 0.2))
  rng = np.random.default_rng(0)
  points = np.array([0.3, -0.2, 4.0]) + rng.uniform(-1.0, 1.0, size=(50, 3))
  return k_a, c2w_a, k_b, c2w_b, points


def test_project_and_lift_are_inverse():
  k_a, c2w_a, _, _, points = _rig()
  xy, z = two_view.project(points, k_a, c2w_a)
  np.testing.assert_allclose(two_view.lift(xy, z, k_a, c2w_a), points, atol=1e-12)
  # The camera-frame z of a point straight ahead at distance d is d.
  ahead = c2w_a[:3, 3] + 2.5 * c2w_a[:3, 2]
  xy0, z0 = two_view.project(ahead[None], k_a, c2w_a)
  np.testing.assert_allclose(xy0[0], k_a[:2, 2], atol=1e-12)
  assert z0[0] == pytest.approx(2.5)


def test_true_correspondences_have_zero_epipolar_distance():
  k_a, c2w_a, k_b, c2w_b, points = _rig()
  xy_a, _ = two_view.project(points, k_a, c2w_a)
  xy_b, _ = two_view.project(points, k_b, c2w_b)
  f = two_view.fundamental_matrix(k_a, c2w_a, k_b, c2w_b)
  assert np.linalg.norm(f) == pytest.approx(1.0)
  assert np.abs(two_view.symmetric_epipolar_distance(f, xy_a, xy_b)).max() < 1e-9
  assert np.abs(two_view.sampson_distance(f, xy_a, xy_b)).max() < 1e-9
  # The epipole: every line of b passes through the projection of a's centre.
  e_b, _ = two_view.project(c2w_a[None, :3, 3], k_b, c2w_b)
  lines = two_view.epipolar_lines(f, xy_a)
  np.testing.assert_allclose(lines[:, :2] @ e_b[0] + lines[:, 2], 0.0, atol=1e-9)


def test_a_shift_across_the_line_is_the_distance():
  k_a, c2w_a, k_b, c2w_b, points = _rig()
  xy_a, _ = two_view.project(points, k_a, c2w_a)
  xy_b, _ = two_view.project(points, k_b, c2w_b)
  f = two_view.fundamental_matrix(k_a, c2w_a, k_b, c2w_b)
  lines = two_view.epipolar_lines(f, xy_a)
  normal = lines[:, :2]  # unit normals of the lines in b
  in_b, in_a = two_view.point_line_distances(f, xy_a, xy_b + 3.0 * normal)
  np.testing.assert_allclose(in_b, 3.0, atol=1e-9)
  # Along the line: no distance at all.
  along = np.stack([-normal[:, 1], normal[:, 0]], -1)
  moved = xy_b + 7.0 * along
  np.testing.assert_allclose(two_view.symmetric_epipolar_distance(f, xy_a, moved), 0.0,
                             atol=1e-9)
  # Sampson's error of a small shift d across the line is d / sqrt(1 + (|l_a| / |l_b|)^2)
  # for the unnormalised lines: between d / sqrt(2) and d when the two gradients agree.
  d = 1e-3
  small = two_view.sampson_distance(f, xy_a, xy_b + d * normal)
  fa = np.concatenate([xy_a, np.ones((50, 1))], -1) @ f.T
  fb = np.concatenate([xy_b, np.ones((50, 1))], -1) @ f
  ratio = np.linalg.norm(fb[:, :2], axis=-1) / np.linalg.norm(fa[:, :2], axis=-1)
  np.testing.assert_allclose(small, d / np.sqrt(1 + ratio**2), rtol=1e-3)
  assert np.all(in_a > 0)


def test_triangulation_gives_the_points_and_their_depths():
  k_a, c2w_a, k_b, c2w_b, points = _rig()
  xy_a, z_a = two_view.project(points, k_a, c2w_a)
  xy_b, z_b = two_view.project(points, k_b, c2w_b)
  found = two_view.triangulate(xy_a, xy_b, k_a, c2w_a, k_b, c2w_b)
  np.testing.assert_allclose(found, points, atol=1e-9)
  _, za = two_view.project(found, k_a, c2w_a)
  _, zb = two_view.project(found, k_b, c2w_b)
  np.testing.assert_allclose(za, z_a, rtol=1e-10)
  np.testing.assert_allclose(zb, z_b, rtol=1e-10)
  assert np.all(za > 0) and np.all(zb > 0)


def test_triangulation_behind_flipped_cameras():
  k_a, c2w_a, k_b, c2w_b, points = _rig()
  xy_a, _ = two_view.project(points, k_a, c2w_a)
  xy_b, _ = two_view.project(points, k_b, c2w_b)
  flip = np.diag([1.0, -1.0, -1.0, 1.0])
  # Cameras turned half a turn about their x axis see, through the same pixels, rays
  # mirrored in the image: their triangulation lies behind at least one of them.
  fa, fb = c2w_a @ flip, c2w_b @ flip
  found = two_view.triangulate(xy_a, xy_b, k_a, fa, k_b, fb)
  _, za = two_view.project(found, k_a, fa)
  _, zb = two_view.project(found, k_b, fb)
  assert np.mean((za > 0) & (zb > 0)) < 0.1


def test_epipolar_segment_runs_from_near_to_far_through_the_point():
  k_a, c2w_a, k_b, c2w_b, points = _rig()
  xy_a, z_a = two_view.project(points, k_a, c2w_a)
  xy_b, _ = two_view.project(points, k_b, c2w_b)
  near, far = 2.0, 7.0
  seg, front = two_view.epipolar_segments(xy_a, near, far, k_a, c2w_a, k_b, c2w_b, num=5)
  assert seg.shape == (50, 5, 2) and front.all()
  ends_near, _ = two_view.project(two_view.lift(xy_a, near, k_a, c2w_a), k_b, c2w_b)
  ends_far, _ = two_view.project(two_view.lift(xy_a, far, k_a, c2w_a), k_b, c2w_b)
  np.testing.assert_allclose(seg[:, 0], ends_near, atol=1e-9)
  np.testing.assert_allclose(seg[:, -1], ends_far, atol=1e-9)
  # The middle sample is at the harmonic mean depth; every sample is on the line.
  mid, _ = two_view.project(two_view.lift(xy_a, 2 / (1 / near + 1 / far), k_a, c2w_a),
                            k_b, c2w_b)
  np.testing.assert_allclose(seg[:, 2], mid, atol=1e-9)
  f = two_view.fundamental_matrix(k_a, c2w_a, k_b, c2w_b)
  lines = two_view.epipolar_lines(f, xy_a)
  on_line = np.einsum("pi,psi->ps", lines[:, :2], seg) + lines[:, 2:]
  np.testing.assert_allclose(on_line, 0.0, atol=1e-8)
  # The true point (depth within near/far) lies on its segment, between the ends.
  inside = (z_a > near) & (z_a < far)
  t = np.einsum("pi,pi->p", xy_b - seg[:, 0], seg[:, -1] - seg[:, 0]) / np.sum(
      (seg[:, -1] - seg[:, 0])**2, -1)
  assert np.all((t[inside] > 0) & (t[inside] < 1))


def test_cameras_sharing_a_centre_correspond_by_their_rotation():
  k_a, c2w_a, k_b, _, points = _rig()
  c2w_b = cameras.look_at(c2w_a[:3, 3], [1.0, 0.5, 4.0], up=(0.0, -1.0, 0.0))
  assert not two_view.has_baseline(c2w_a, c2w_b)
  with pytest.raises(ValueError, match="no baseline"):
    two_view.fundamental_matrix(k_a, c2w_a, k_b, c2w_b)
  xy_a, _ = two_view.project(points, k_a, c2w_a)
  xy_b, z_b = two_view.project(points, k_b, c2w_b)
  h = two_view.rotation_homography(k_a, c2w_a, k_b, c2w_b)
  dist = two_view.transfer_distance(h, xy_a, xy_b)
  np.testing.assert_allclose(dist[z_b > 0], 0.0, atol=1e-9)
  np.testing.assert_allclose(two_view.transfer_distance(h, xy_a, xy_b + [3.0, 4.0])[z_b > 0],
                             5.0, atol=1e-9)
