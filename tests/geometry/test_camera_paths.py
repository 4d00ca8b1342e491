"""Tests of movenerf.geometry.camera_paths: circle, spiral and automatic render paths."""

import jax.numpy as jnp
import numpy as np
import pytest

from movenerf import testing
from movenerf.data import procedural
from movenerf.geometry import camera_paths
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.projection import project_points

SIZE = 16


@pytest.fixture(scope="module")
def object_scene():
  return procedural.make_scene(0, "object", num_views=12, height=SIZE, width=SIZE)


@pytest.fixture(scope="module")
def forward_scene():
  return procedural.make_scene(0, "forward", num_views=12, height=SIZE, width=SIZE)


def _assert_rotations(path):
  rot = path[:, :3, :3].astype(np.float64)
  np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
  np.testing.assert_array_equal(path[:, 3], np.broadcast_to([0, 0, 0, 1], (len(path), 4)))


def _axis_distance(path, point):
  """[F] distance of ``point`` from each frame's optical axis, and its depth along it."""
  offset = point - path[:, :3, 3].astype(np.float64)
  z = path[:, :3, 2].astype(np.float64)
  along = np.einsum("fi,fi->f", offset, z)
  return np.linalg.norm(offset - along[:, None] * z, axis=-1), along


# ---------------------------------------------------------------------------- circle


def test_circle_path_orbits_object_scene(object_scene):
  c2w = object_scene.c2w
  frames = 24
  center = camera_paths.scene_center(c2w)
  # Object-scene cameras all look at the world origin.
  np.testing.assert_allclose(center, 0.0, atol=1e-4)
  up = camera_paths.estimate_up(c2w)
  np.testing.assert_allclose(up, [0.0, 1.0, 0.0], atol=1e-4)  # the generator's world up

  path = camera_paths.circle_path(c2w, frames)
  assert path.shape == (frames, 4, 4) and path.dtype == np.float32
  _assert_rotations(path)

  miss, depth = _axis_distance(path, center)
  assert np.all(miss < 1e-4) and np.all(depth > 0)
  cam_dist = np.linalg.norm(c2w[:, :3, 3] - center, axis=-1)
  np.testing.assert_allclose(np.linalg.norm(path[:, :3, 3] - center, axis=-1),
                             cam_dist.mean(), rtol=1e-5)
  # Constant height above the centre = the cameras' mean elevation.
  elev = np.arcsin((path[:, :3, 3] - center) @ up / cam_dist.mean())
  np.testing.assert_allclose(elev, np.mean(np.arcsin((c2w[:, :3, 3] - center) @ up / cam_dist)),
                             atol=1e-5)
  # Evenly spaced azimuths covering the full turn, starting at the first camera.
  ring = (path[:, :3, 3] - center) - np.outer((path[:, :3, 3] - center) @ up, up)
  azimuth = np.arctan2(ring[:, 2], ring[:, 0])
  steps = np.mod(np.diff(np.concatenate([azimuth, azimuth[:1]])), 2 * np.pi)
  np.testing.assert_allclose(np.minimum(steps, 2 * np.pi - steps), 2 * np.pi / frames,
                             atol=1e-5)
  first = c2w[0, :3, 3] - center
  np.testing.assert_allclose(np.arctan2(first[2], first[0]), azimuth[0], atol=1e-5)

  # Upright: image x is horizontal and world up points up the image (camera -y).
  np.testing.assert_allclose(path[:, :3, 0] @ up, 0.0, atol=1e-5)
  assert np.all(-path[:, :3, 1] @ up > 0)
  cams = Cameras(jnp.asarray(np.broadcast_to(object_scene.intrinsics[0], (frames, 3, 3))),
                 jnp.asarray(path), SIZE, SIZE)
  points = jnp.asarray(np.stack([center, center + 0.5 * up]), jnp.float32)
  xy, in_front = project_points(points, cams)
  xy = np.asarray(xy)
  assert np.all(np.asarray(in_front))
  principal = object_scene.intrinsics[0, :2, 2]
  np.testing.assert_allclose(xy[:, 0], np.broadcast_to(principal, (frames, 2)), atol=1e-2)
  # A point above the centre lands straight above the image centre (smaller row v).
  np.testing.assert_allclose(xy[:, 1, 0], xy[:, 0, 0], atol=1e-2)
  assert np.all(xy[:, 1, 1] < xy[:, 0, 1] - 1.0)


def test_circle_path_z_up_ring():
  # A different world convention: z up, cameras evenly spaced at 25 degrees elevation.
  c2w = np.asarray(testing.ring_cameras(6, SIZE, SIZE, radius=3.0, elevation_deg=25.0).c2w)
  np.testing.assert_allclose(camera_paths.estimate_up(c2w), [0, 0, 1], atol=1e-5)
  path = camera_paths.circle_path(c2w, 10, radius_scale=2.0)
  _assert_rotations(path)
  np.testing.assert_allclose(np.linalg.norm(path[:, :3, 3], axis=-1), 6.0, rtol=1e-5)
  np.testing.assert_allclose(path[:, 2, 3], 6.0 * np.sin(np.radians(25.0)), atol=1e-4)
  miss, _ = _axis_distance(path, np.zeros(3))
  assert np.all(miss < 1e-5)


# ---------------------------------------------------------------------------- spiral


def test_spiral_path_forward_scene(forward_scene):
  c2w = forward_scene.c2w
  near, far = forward_scene.near, forward_scene.far
  path = camera_paths.spiral_path(c2w, near, far, 30)
  assert path.shape == (30, 4, 4) and path.dtype == np.float32
  _assert_rotations(path)

  avg = camera_paths.average_pose(c2w)
  mean_dir = avg[:3, 2]
  centres = c2w[:, :3, 3]
  rig_extent = np.linalg.norm(centres - centres.mean(0), axis=-1).max()
  offsets = np.linalg.norm(path[:, :3, 3] - avg[:3, 3], axis=-1)
  assert np.all(offsets <= 1.01 * rig_extent) and offsets.max() > 0.3 * rig_extent
  angles = np.degrees(np.arccos(np.clip(path[:, :3, 2] @ mean_dir, -1, 1)))
  assert np.all(angles < 20.0)

  focus = camera_paths.focus_depth(near, far)
  assert near < focus < far
  np.testing.assert_allclose(focus, 1.0 / (0.25 / near + 0.75 / far))
  target = avg[:3, 3] + focus * mean_dir
  miss, depth = _axis_distance(path, target)
  assert np.all(miss < 1e-4) and np.all(depth > near)
  # Upright relative to the rig: image x stays horizontal for the rig's up.
  np.testing.assert_allclose(path[:, :3, 0] @ -avg[:3, 1], 0.0, atol=1e-5)


def test_spiral_path_radii_follow_rig(forward_scene):
  c2w = forward_scene.c2w
  small = camera_paths.spiral_path(c2w, 3.0, 10.0, 8, radius_scale=0.5)
  big = camera_paths.spiral_path(c2w, 3.0, 10.0, 8)
  avg = camera_paths.average_pose(c2w)
  np.testing.assert_allclose(small[:, :3, 3] - avg[:3, 3], 0.5 * (big[:, :3, 3] - avg[:3, 3]),
                             atol=1e-5)


# ---------------------------------------------------------------------------- auto


def test_auto_path_picks_circle_or_spiral(object_scene, forward_scene):
  assert camera_paths.path_kind(object_scene.c2w) == "circle"
  assert camera_paths.path_kind(forward_scene.c2w) == "spiral"
  obj = camera_paths.auto_path(object_scene.c2w, object_scene.near, object_scene.far, 8)
  np.testing.assert_array_equal(obj, camera_paths.circle_path(object_scene.c2w, 8))
  fwd = camera_paths.auto_path(forward_scene.c2w, forward_scene.near, forward_scene.far, 8)
  np.testing.assert_array_equal(
      fwd, camera_paths.spiral_path(forward_scene.c2w, forward_scene.near, forward_scene.far, 8))


def test_path_input_validation(object_scene):
  c2w = object_scene.c2w.copy()
  bad = c2w.copy()
  bad[3, 0, 3] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    camera_paths.circle_path(bad, 8)
  with pytest.raises(ValueError, match="NaN"):
    camera_paths.spiral_path(bad, 2.0, 6.0, 8)
  with pytest.raises(ValueError, match="shape"):
    camera_paths.auto_path(c2w[:, :2], 2.0, 6.0, 8)
  with pytest.raises(ValueError, match="num_frames"):
    camera_paths.circle_path(c2w, 0)
  with pytest.raises(ValueError, match="near < far"):
    camera_paths.spiral_path(c2w, 6.0, 2.0, 8)
  with pytest.raises(ValueError, match="near < far"):
    camera_paths.auto_path(c2w, float("nan"), 6.0, 8)
  with pytest.raises(ValueError, match="at least 2"):
    camera_paths.circle_path(c2w[:1], 8)
  # Translated copies of one camera: parallel axes, no centre to orbit.
  parallel = np.repeat(c2w[:1], 4, axis=0)
  parallel[:, :3, 3] += np.arange(4)[:, None] * np.array([0.1, 0.0, 0.0], np.float32)
  with pytest.raises(ValueError, match="parallel"):
    camera_paths.circle_path(parallel, 8)
  # Cameras facing away from their common centre.
  outward = c2w.astype(np.float64) @ np.diag([-1.0, 1.0, -1.0, 1.0])
  with pytest.raises(ValueError, match="behind"):
    camera_paths.circle_path(outward, 8)


def _rot_z(deg):
  a = np.radians(deg)
  return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def test_quaternions_round_trip_and_slerp_turns_at_constant_rate():
  rng = np.random.default_rng(0)
  for _ in range(20):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    rot = camera_paths.quaternion_to_rotation(q)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(camera_paths.rotation_to_quaternion(rot),
                               q if q[0] >= 0 else -q, atol=1e-12)
  q0 = camera_paths.rotation_to_quaternion(np.eye(3))
  q1 = camera_paths.rotation_to_quaternion(_rot_z(90))
  for t in (0.0, 0.25, 0.5, 1.0):
    np.testing.assert_allclose(
        camera_paths.quaternion_to_rotation(camera_paths.slerp(q0, q1, t)), _rot_z(90 * t),
        atol=1e-12)


def test_interpolate_path_passes_the_cameras_at_constant_speed():
  # Three cameras on a line, 1 and 3 units apart, turning 0 -> 90 -> 90 degrees.
  c2w = np.tile(np.eye(4), (3, 1, 1))
  c2w[:, :3, 3] = [[0, 0, 0], [1, 0, 0], [4, 0, 0]]
  c2w[1, :3, :3] = c2w[2, :3, :3] = _rot_z(90)
  path = camera_paths.interpolate_path(c2w, 9, order=[0, 1, 2])
  assert path.shape == (9, 4, 4) and path.dtype == np.float32
  np.testing.assert_allclose(path[0], c2w[0], atol=1e-6)
  np.testing.assert_allclose(path[-1], c2w[2], atol=1e-6)
  # Measure: segment 1 = 1/4 of the length + all of the turn = 1.25, segment 2 = 0.75;
  # 9 frames at 2/8 apart: frame 5 (s = 1.25) is camera 1, frame 2 (s = 0.5) is 40 % of
  # segment 1 (centre 0.4, 36 degrees).
  np.testing.assert_allclose(path[5], c2w[1], atol=1e-6)
  np.testing.assert_allclose(path[2, :3, 3], [0.4, 0, 0], atol=1e-6)
  np.testing.assert_allclose(path[2, :3, :3], _rot_z(36), atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(path[:, :3, :3]), 1.0, atol=1e-5)
  # Default order: a nearest-neighbour chain from one end of the rig.
  shuffled = c2w[[1, 2, 0]]
  assert list(camera_paths.neighbour_chain(shuffled)) == [1, 0, 2]  # x = 4, 1, 0
  with pytest.raises(ValueError, match="same pose"):
    camera_paths.interpolate_path(np.tile(np.eye(4), (3, 1, 1)), 5)
