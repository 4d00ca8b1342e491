"""NeRF-synthetic (Blender) reader: the real lego and mic scenes, and broken fixtures."""

import json
import logging

import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.data.formats import nerf_synthetic
from movenerf.geometry import cameras, projection
from tests.data.formats import helpers

BLENDER = ["lego", "mic"]


def _read(real, name, **kw):
  return helpers.read_cached(nerf_synthetic.read_nerf_synthetic, real / "nerf_synthetic" / name,
                             **kw)


# ----------------------------------------------------------------------------- real scenes


@pytest.mark.parametrize("name", BLENDER)
def test_blender_counts_and_projection(real, name):
  rec = _read(real, name)
  helpers.check_common(rec, 50, 100, 100)
  assert rec.scene_id == name
  assert (rec.split == "train").sum() == 40 and (rec.split == "test").sum() == 10
  assert rec.masks is None
  np.testing.assert_allclose(rec.near, 2.0)
  np.testing.assert_allclose(rec.far, 6.0)
  k = rec.intrinsics[0]
  angle = json.loads((real / "nerf_synthetic" / name / "transforms_train.json").read_text())[
      "camera_angle_x"]
  np.testing.assert_allclose(k[0, 0], 50.0 / np.tan(0.5 * angle), rtol=1e-6)
  np.testing.assert_allclose(k[:2, 2], [49.5, 49.5])
  # The object sits at the world origin: it must project to the image centre region of
  # every view and lie in front of the camera, between near and far.
  frac, front = helpers.project_fraction(rec, np.zeros(3))
  assert frac == 1.0 and front.all()
  cams = cameras.Cameras(jnp.asarray(rec.intrinsics), jnp.asarray(rec.c2w), 100, 100)
  xy, _ = projection.project_points(jnp.zeros((1, 3)), cams)
  assert np.all(np.abs(np.asarray(xy)[:, 0] - 49.5) < 10)
  depth = np.linalg.norm(rec.c2w[:, :3, 3], axis=-1)
  assert np.all((depth > rec.near) & (depth < rec.far))
  # Blender's world is z-up and its cameras are upright: the OpenCV y axis (image down)
  # must point downwards in the world, which catches a 180-degree roll the centre test misses.
  assert np.all(rec.c2w[:, 2, 1] < 0)


def test_blender_background_and_downsample(real):
  white = _read(real, "lego")
  black = _read(real, "lego", white_background=False)
  corners = white.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
  assert np.all(corners == 255)
  assert np.all(black.images[:, [0, 0, -1, -1], [0, -1, 0, -1]] == 0)
  assert not np.all(black.images == 255)
  # Same content where the object is opaque: only the background changes.
  diff = white.images.astype(int) - black.images.astype(int)
  assert diff.min() >= 0

  half = _read(real, "lego", downsample=2)
  assert half.images.shape == (50, 50, 50, 3)
  np.testing.assert_allclose(half.intrinsics[:, 0, 0], white.intrinsics[:, 0, 0] / 2, rtol=1e-6)
  np.testing.assert_allclose(half.intrinsics[:, 1, 1], white.intrinsics[:, 1, 1] / 2, rtol=1e-6)
  np.testing.assert_allclose(half.c2w, white.c2w)
  frac, _ = helpers.project_fraction(half, np.zeros(3))
  assert frac == 1.0


def test_blender_missing_split_warns(real, caplog):
  with caplog.at_level(logging.WARNING):
    rec = nerf_synthetic.read_nerf_synthetic(real / "nerf_synthetic" / "mic",
                                             splits=("val", "test"))
  assert rec.num_views == 10 and np.all(rec.split == "test")
  assert "transforms_val.json" in caplog.text



# ----------------------------------------------------------------------------- bad input


def _blender_fixture(tmp_path, n=2, sizes=None):
  """Minimal Blender scene of n frames, 8x8 RGBA (or per-frame ``sizes``)."""
  scene = tmp_path / "blend"
  frames = []
  for i in range(n):
    hw = sizes[i] if sizes else (8, 8)
    helpers.write_png(scene / "train" / f"r_{i}.png", hw + (4,))
    c2w = np.eye(4)
    c2w[2, 3] = 4.0
    frames.append({"file_path": f"./train/r_{i}", "transform_matrix": c2w.tolist()})
  (scene / "transforms_train.json").write_text(
      json.dumps({"camera_angle_x": 0.7, "frames": frames}))
  return scene


def _rewrite_json(scene, fn):
  path = scene / "transforms_train.json"
  meta = json.loads(path.read_text())
  fn(meta)
  path.write_text(json.dumps(meta))


def test_blender_fixture_reads(tmp_path):
  rec = nerf_synthetic.read_nerf_synthetic(_blender_fixture(tmp_path), splits=("train",))
  assert rec.images.shape == (2, 8, 8, 3)


def test_blender_missing_image(tmp_path):
  scene = _blender_fixture(tmp_path)
  (scene / "train" / "r_1.png").unlink()
  with pytest.raises(FileNotFoundError, match=r"missing image .*r_1\.png"):
    nerf_synthetic.read_nerf_synthetic(scene)


def test_blender_truncated_png(tmp_path):
  scene = _blender_fixture(tmp_path)
  png = scene / "train" / "r_0.png"
  png.write_bytes(png.read_bytes()[:40])
  with pytest.raises(ValueError, match=r"r_0\.png.*corrupt or truncated"):
    nerf_synthetic.read_nerf_synthetic(scene)


def test_blender_nan_pose(tmp_path):
  scene = _blender_fixture(tmp_path)

  def _break(meta):
    meta["frames"][1]["transform_matrix"][0][3] = float("nan")

  _rewrite_json(scene, _break)
  with pytest.raises(ValueError, match=r"transforms_train\.json.*frame 1.*NaN"):
    nerf_synthetic.read_nerf_synthetic(scene)


def test_blender_bad_pose_shape_and_angle(tmp_path):
  scene = _blender_fixture(tmp_path)
  _rewrite_json(scene, lambda m: m["frames"][0].update(transform_matrix=[[1, 0], [0, 1]]))
  with pytest.raises(ValueError, match=r"transforms_train\.json.*shape"):
    nerf_synthetic.read_nerf_synthetic(scene)
  scene = _blender_fixture(tmp_path / "b")
  _rewrite_json(scene, lambda m: m.update(camera_angle_x=float("inf")))
  with pytest.raises(ValueError, match=r"transforms_train\.json.*camera_angle_x"):
    nerf_synthetic.read_nerf_synthetic(scene)


def test_blender_mixed_sizes(tmp_path):
  scene = _blender_fixture(tmp_path, sizes=[(8, 8), (8, 6)])
  with pytest.raises(ValueError, match=r"mixed image sizes.*r_1\.png"):
    nerf_synthetic.read_nerf_synthetic(scene)


def test_blender_empty(tmp_path):
  scene = _blender_fixture(tmp_path)
  _rewrite_json(scene, lambda m: m.update(frames=[]))
  with pytest.raises(ValueError, match=r"empty scene"):
    nerf_synthetic.read_nerf_synthetic(scene)
  with pytest.raises(ValueError, match=r"empty scene"):
    nerf_synthetic.read_nerf_synthetic(tmp_path / "blend", splits=("val",))


def test_blender_image_without_alpha_warns_naming_it(tmp_path, caplog):
  scene = _blender_fixture(tmp_path, n=3)
  (scene / "train" / "r_2.png").unlink()
  helpers.write_png(scene / "train" / "r_2.jpg", (8, 8, 3))
  _rewrite_json(scene, lambda m: m["frames"][2].update(file_path="./train/r_2.jpg"))
  with caplog.at_level(logging.WARNING):
    rec = nerf_synthetic.read_nerf_synthetic(scene, splits=("train",),
                                             white_background=False)
  assert rec.images.shape == (3, 8, 8, 3)
  lines = [r.getMessage() for r in caplog.records]
  assert lines == [f"nerf_synthetic: {scene / 'train' / 'r_2.jpg'} has no alpha channel, "
                   "unlike 2 other images of the scene: it keeps its own background, not "
                   "the black one"]


def test_blender_all_without_alpha_is_quiet(tmp_path, caplog):
  scene = tmp_path / "blend"
  for i in range(2):
    helpers.write_png(scene / "train" / f"r_{i}.png", (8, 8, 3))
  c2w = np.eye(4)
  c2w[2, 3] = 4.0
  (scene / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": [
      {"file_path": f"./train/r_{i}", "transform_matrix": c2w.tolist()} for i in range(2)]}))
  with caplog.at_level(logging.WARNING):
    nerf_synthetic.read_nerf_synthetic(scene, splits=("train",))
  assert not caplog.records
