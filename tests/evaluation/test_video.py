"""Tests for camera paths (circle / spiral / auto) and MP4 video writing and rendering."""

import os
import warnings

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.geometry import camera_paths
from movenerf import testing
from movenerf.evaluation import video
from movenerf.geometry.cameras import Cameras
from movenerf.data import procedural
from movenerf.geometry.epipolar import SourceViews
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
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


# ---------------------------------------------------------------------------- video


def _smooth_frames(num, height, width):
  """[F, H, W, 3] float gradients that H.264 reproduces closely."""
  v, u = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
  return np.stack([np.stack([u, v, np.full_like(u, 0.2 + 0.1 * k)], axis=-1)
                   for k in range(num)]).astype(np.float32)


def _read(path):
  """[F, H, W, 3] uint8 frames of an MP4."""
  with warnings.catch_warnings():
    # The reader forks ffmpeg; fork-then-exec is safe despite JAX's threads.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                            category=RuntimeWarning)
    return iio.imread(path, index=None, plugin="FFMPEG")


@pytest.mark.parametrize("height,width", [(30, 40), (31, 41)])
def test_write_video_roundtrip(tmp_path, height, width):
  frames = _smooth_frames(6, height, width)
  path = str(tmp_path / "sub" / "video.mp4")  # the folder is created
  assert video.write_video(frames, path, fps=12) == path
  back = _read(path)
  assert back.shape == (6, height + height % 2, width + width % 2, 3) and back.dtype == np.uint8
  diff = np.abs(back[:, :height, :width].astype(np.float32) / 255.0 - frames)
  assert diff.mean() < 8 / 255
  assert os.listdir(tmp_path / "sub") == ["video.mp4"]  # no temp file left behind


def test_write_video_uint8_and_stream(tmp_path):
  frames = (_smooth_frames(4, 20, 24) * 255).astype(np.uint8)
  path = str(tmp_path / "stream.mp4")
  video.write_video((f for f in frames), path, fps=8)  # a generator is streamed
  back = _read(path)
  assert back.shape == (4, 20, 24, 3)
  assert np.abs(back.astype(np.float32) - frames).mean() < 8


@pytest.mark.parametrize("frames,match", [
    (np.zeros((0, 30, 40, 3), np.uint8), "no frames"),
    ([], "no frames"),
    (np.zeros((6, 30, 40), np.uint8), r"\[F, H, W, 3\]"),
    (np.zeros((6, 30, 40, 4), np.float32), r"\[F, H, W, 3\]"),
    (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN"),
    (np.zeros((2, 8, 8, 3), np.int64), "dtype"),
])
def test_write_video_rejects_bad_frames(tmp_path, frames, match):
  path = tmp_path / "bad.mp4"
  with pytest.raises(ValueError, match=match):
    video.write_video(frames, str(path))
  assert not path.exists() and os.listdir(tmp_path) == []


def test_write_video_failure_leaves_no_partial_file(tmp_path):
  good = _smooth_frames(3, 16, 16)

  def stream(last):
    yield from good
    yield last

  path = tmp_path / "out.mp4"
  # Failing after ffmpeg has started (a frame of the wrong size) leaves nothing behind.
  with pytest.raises(ValueError, match="differs"):
    video.write_video(stream(np.zeros((8, 8, 3), np.float32)), str(path))
  assert os.listdir(tmp_path) == []

  def broken():
    yield from good
    raise RuntimeError("renderer crashed")

  # An existing video is kept intact when its replacement fails midway.
  video.write_video(good, str(path))
  before = path.read_bytes()
  with pytest.raises(RuntimeError, match="crashed"):
    video.write_video(broken(), str(path))
  assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.mp4"]


def test_write_video_unreadable_output_is_not_published(tmp_path, monkeypatch):
  # imageio-ffmpeg does not report ffmpeg's exit status, so the header is read back.
  def unreadable(*args, **kwargs):
    raise OSError("Could not load meta information")

  monkeypatch.setattr(video.imageio_ffmpeg, "read_frames", unreadable)
  with pytest.raises(RuntimeError, match="readable"):
    video.write_video(_smooth_frames(2, 8, 8), str(tmp_path / "a.mp4"))
  assert os.listdir(tmp_path) == []


def test_write_video_rejects_bad_settings(tmp_path):
  with pytest.raises(ValueError, match="fps"):
    video.write_video(_smooth_frames(2, 8, 8), str(tmp_path / "a.mp4"), fps=0)
  with pytest.raises(ValueError, match="crf"):
    video.write_video(_smooth_frames(2, 8, 8), str(tmp_path / "a.mp4"), crf=60)
  assert os.listdir(tmp_path) == []


def test_side_by_side():
  rgb = np.random.default_rng(0).uniform(size=(5, 7, 3)).astype(np.float32)
  depth = np.linspace(2.0, 6.0, 35).reshape(5, 7)
  out = video.side_by_side(rgb, depth, 2.0, 6.0)
  assert out.shape == (5, 14, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, :7], np.round(rgb * 255).astype(np.uint8))
  # Same depth -> same colour in any frame (the scale is fixed by lo, hi, not by the
  # frame's own depth range).
  flat = video.side_by_side(rgb, np.full((5, 7), 2.0), 2.0, 6.0)
  np.testing.assert_array_equal(flat[:, 7:], np.broadcast_to(out[0, 7], (5, 7, 3)))
  assert not np.array_equal(out[0, 7], out[-1, -1])
  with pytest.raises(ValueError, match="depth"):
    video.side_by_side(rgb, depth[:, :3], 2.0, 6.0)


def test_depth_scale_ignores_outliers():
  depths = np.full((3, 10, 10), 4.0)
  depths[0, :5] = np.linspace(3.0, 5.0, 50).reshape(5, 10)
  depths[1, 0, 0] = 1e6
  depths[2, 0, 0] = np.nan
  lo, hi = video.depth_scale(depths)
  assert 3.0 <= lo < 4.0 < hi <= 5.0
  assert video.depth_scale(np.full((2, 3), 4.0)) == (3.5, 4.5)


# ---------------------------------------------------------------------------- render


def _tiny_model():
  """A tiny GNT with random weights: the variable tree of ``init_variables``.

  Compiling ``init_variables`` takes ~12 s on a 2-core CPU (the ResUNet initialisers),
  most of this file's budget, so its tree is only traced (``eval_shape``, < 1 s) and
  filled with fan-in-scaled normal kernels, unit norm scales and zero biases.
  """
  model = GNTModel(GNTConfig(width=16, depth=1, coarse_feat_dim=8, fine_feat_dim=8,
                             num_samples=8))
  shapes = jax.eval_shape(lambda key: init_variables(model, key), jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if "kernel" in name:
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
    return jnp.full(leaf.shape, 1.0 if "scale" in name else 0.0, leaf.dtype)

  return model, jax.tree_util.tree_map_with_path(fill, shapes)


def test_render_video_tiny_model(tmp_path, capsys):
  scene = procedural.make_scene(0, "object", num_views=3, height=SIZE, width=SIZE)
  cams = Cameras(jnp.asarray(scene.intrinsics), jnp.asarray(scene.c2w), SIZE, SIZE)
  sources = SourceViews(jnp.asarray(scene.images, jnp.float32) / 255.0, cams)
  model, variables = _tiny_model()
  path_c2w = camera_paths.circle_path(scene.c2w, 3)
  out = str(tmp_path / "orbit.mp4")
  result = video.render_video(model, variables, sources, scene.intrinsics[0], path_c2w, SIZE,
                              SIZE, scene.near, scene.far, 128, out, fps=6)
  assert result == out
  back = _read(out)
  assert back.shape == (3, SIZE, 2 * SIZE, 3)
  printed = capsys.readouterr().out
  assert "frame 3/3" in printed and "frames/s" in printed and "ETA" in printed
  assert os.listdir(tmp_path) == ["orbit.mp4"]
  # The depth half is coloured, not flat: the shared scale spans the rendered depths.
  assert back[:, :, SIZE:].std() > 1.0


def test_render_video_validates_inputs(tmp_path):
  model = GNTModel(GNTConfig(width=16, depth=1, coarse_feat_dim=8, fine_feat_dim=8,
                             num_samples=8))
  k = np.eye(3, dtype=np.float32)
  bad = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
  bad[1, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    video.render_video(model, {}, None, k, bad, 8, 8, 1.0, 2.0, 64, str(tmp_path / "x.mp4"))
  with pytest.raises(ValueError, match="intrinsics"):
    video.render_video(model, {}, None, np.eye(4), bad[:1], 8, 8, 1.0, 2.0, 64,
                       str(tmp_path / "x.mp4"))
  assert os.listdir(tmp_path) == []
