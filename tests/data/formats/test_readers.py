"""Dataset readers against the real data pack, plus broken fixtures for the error paths."""

import json
import logging
import os
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from movenerf.geometry import cameras, projection
from movenerf.data.formats import record as readers

_REPO = Path(__file__).resolve().parents[3]
_SHARED = Path(os.environ.get("MOVENERF_SHARED", _REPO.parent / "shared"))
REAL = _SHARED / "data" / "real"

BLENDER = ["lego", "mic"]
LLFF = ["fern", "flower"]
DTU = ["dtu_scan24", "dtu_scan37"]


@pytest.fixture(scope="module")
def real():
  if not REAL.is_dir():
    pytest.skip(f"real data pack not found at {REAL}")
  return REAL


_CACHE = {}


def _read(real, fmt, name, **kw):
  """Reads each (scene, options) once per test session; readers are pure so caching is safe."""
  sub = {"nerf_synthetic": "nerf_synthetic", "llff": "nerf_llff_data", "dtu": "dtu"}[fmt]
  key = (fmt, name, tuple(sorted(kw.items())))
  if key not in _CACHE:
    _CACHE[key] = readers.read_scene(fmt, real / sub / name, **kw)
  return _CACHE[key]


def _check_common(rec, n, h, w):
  assert rec.images.shape == (n, h, w, 3) and rec.images.dtype == np.uint8
  assert rec.intrinsics.shape == (n, 3, 3) and rec.intrinsics.dtype == np.float32
  assert rec.c2w.shape == (n, 4, 4) and rec.c2w.dtype == np.float32
  assert rec.near.shape == (n,) and rec.far.shape == (n,)
  assert rec.near.dtype == np.float32 and rec.far.dtype == np.float32
  assert rec.split.shape == (n,)
  for a in (rec.intrinsics, rec.c2w, rec.near, rec.far):
    assert np.all(np.isfinite(a))
  assert np.all(rec.near < rec.far)
  np.testing.assert_allclose(rec.c2w[:, 3], np.tile([0, 0, 0, 1], (n, 1)))
  # Rotations are orthonormal with det +1 (a wrong axis swap would give det -1).
  rot = rec.c2w[:, :3, :3].astype(np.float64)
  np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.tile(np.eye(3), (n, 1, 1)),
                             atol=1e-4)
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-4)


def _axes_centre(c2w):
  """[3] least-squares point closest to all optical axes (camera centre + t * z axis)."""
  origins = c2w[:, :3, 3].astype(np.float64)
  dirs = c2w[:, :3, 2].astype(np.float64)
  dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
  proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # [N, 3, 3]
  return np.linalg.solve(proj.sum(0), np.einsum("nij,nj->i", proj, origins))


def _project_fraction(rec, point):
  cams = cameras.Cameras(jnp.asarray(rec.intrinsics), jnp.asarray(rec.c2w), rec.height,
                         rec.width)
  xy, front = projection.project_points(jnp.asarray(point, jnp.float32)[None], cams)
  inside = np.asarray(projection.in_image(xy, rec.height, rec.width) & front)[:, 0]
  return inside.mean(), np.asarray(front)[:, 0]


# ----------------------------------------------------------------------------- real scenes


@pytest.mark.parametrize("name", BLENDER)
def test_blender_counts_and_projection(real, name):
  rec = _read(real, "nerf_synthetic", name)
  _check_common(rec, 50, 100, 100)
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
  frac, front = _project_fraction(rec, np.zeros(3))
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
  white = _read(real, "nerf_synthetic", "lego")
  black = _read(real, "nerf_synthetic", "lego", white_background=False)
  corners = white.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
  assert np.all(corners == 255)
  assert np.all(black.images[:, [0, 0, -1, -1], [0, -1, 0, -1]] == 0)
  assert not np.all(black.images == 255)
  # Same content where the object is opaque: only the background changes.
  diff = white.images.astype(int) - black.images.astype(int)
  assert diff.min() >= 0

  half = _read(real, "nerf_synthetic", "lego", downsample=2)
  assert half.images.shape == (50, 50, 50, 3)
  np.testing.assert_allclose(half.intrinsics[:, 0, 0], white.intrinsics[:, 0, 0] / 2, rtol=1e-6)
  np.testing.assert_allclose(half.intrinsics[:, 1, 1], white.intrinsics[:, 1, 1] / 2, rtol=1e-6)
  np.testing.assert_allclose(half.c2w, white.c2w)
  frac, _ = _project_fraction(half, np.zeros(3))
  assert frac == 1.0


def test_blender_missing_split_warns(real, caplog):
  with caplog.at_level(logging.WARNING):
    rec = readers.read_nerf_synthetic(real / "nerf_synthetic" / "mic", splits=("val", "test"))
  assert rec.num_views == 10 and np.all(rec.split == "test")
  assert "transforms_val.json" in caplog.text


@pytest.mark.parametrize("name,n", [("fern", 20), ("flower", 34)])
def test_llff_counts_and_projection(real, name, n):
  rec = _read(real, "llff", name)
  _check_common(rec, n, 378, 504)
  pb = np.load(real / "nerf_llff_data" / name / "poses_bounds.npy")
  np.testing.assert_allclose(rec.intrinsics[:, 0, 0], pb[:, 14] * 504 / pb[:, 9], rtol=1e-5)
  np.testing.assert_allclose(rec.near, pb[:, 15], rtol=1e-6)
  np.testing.assert_allclose(rec.far, pb[:, 16], rtol=1e-6)
  # Poses are kept in the original world frame (camera centres = LLFF translations).
  np.testing.assert_allclose(rec.c2w[:, :3, 3], pb[:, :15].reshape(-1, 3, 5)[:, :, 3], rtol=1e-6)
  assert set(rec.split[::8]) == {"test"}
  assert (rec.split == "train").sum() == n - len(range(0, n, 8))
  _check_centre(rec, converging=False)


@pytest.mark.parametrize("name", DTU)
def test_dtu_counts_masks_and_projection(real, name):
  rec = _read(real, "dtu", name)
  n = len(list((real / "dtu" / name / "images_8").glob("*.png")))
  assert n == 49
  _check_common(rec, n, 150, 200)
  assert rec.masks.shape == (n, 150, 200) and rec.masks.dtype == bool
  frac_fg = rec.masks.mean()
  assert 0.02 < frac_fg < 0.98
  _check_centre(rec, converging=True)
  sub = rec.select(np.arange(0, n, 7))
  assert sub.num_views == 7 and sub.masks.shape[0] == 7
  np.testing.assert_array_equal(sub.images, rec.images[::7])


def _check_centre(rec, converging):
  """Scene centre projects into >= 90% of the views, in front of every camera.

  Converging rigs (DTU) use the point nearest all optical axes. Forward-facing LLFF axes are
  nearly parallel (flower's even meet behind the cameras), so there the centre is the mean
  camera centre pushed along the mean viewing direction by the mean of near and far.
  """
  if converging:
    centre = _axes_centre(rec.c2w)
  else:
    dirs = rec.c2w[:, :3, 2].mean(0)
    depth = 0.5 * (rec.near.mean() + rec.far.mean())
    centre = rec.c2w[:, :3, 3].mean(0) + depth * dirs / np.linalg.norm(dirs)
  frac, front = _project_fraction(rec, centre)
  assert front.all()
  assert frac >= 0.9


def test_select_and_split_indices(real):
  rec = _read(real, "nerf_synthetic", "lego")
  test = rec.select(rec.split_indices("test"))
  assert test.num_views == 10 and np.all(test.split == "test")
  by_mask = rec.select(rec.split == "test")
  np.testing.assert_array_equal(by_mask.c2w, test.c2w)


# ----------------------------------------------------------------------------- bad input


def test_unknown_format():
  with pytest.raises(ValueError, match=r"unknown dataset format 'colmap'.*nerf_synthetic"):
    readers.read_scene("colmap", "/nonexistent")


def _write_png(path, shape=(8, 8, 4)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full(shape, 128, np.uint8)).save(path)


def _blender_fixture(tmp_path, n=2, sizes=None):
  """Minimal Blender scene of n frames, 8x8 RGBA (or per-frame ``sizes``)."""
  scene = tmp_path / "blend"
  frames = []
  for i in range(n):
    hw = sizes[i] if sizes else (8, 8)
    _write_png(scene / "train" / f"r_{i}.png", hw + (4,))
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
  rec = readers.read_nerf_synthetic(_blender_fixture(tmp_path), splits=("train",))
  assert rec.images.shape == (2, 8, 8, 3)


def test_blender_missing_image(tmp_path):
  scene = _blender_fixture(tmp_path)
  (scene / "train" / "r_1.png").unlink()
  with pytest.raises(FileNotFoundError, match=r"missing image .*r_1\.png"):
    readers.read_nerf_synthetic(scene)


def test_blender_truncated_png(tmp_path):
  scene = _blender_fixture(tmp_path)
  png = scene / "train" / "r_0.png"
  png.write_bytes(png.read_bytes()[:40])
  with pytest.raises(ValueError, match=r"r_0\.png.*corrupt or truncated"):
    readers.read_nerf_synthetic(scene)


def test_blender_nan_pose(tmp_path):
  scene = _blender_fixture(tmp_path)

  def _break(meta):
    meta["frames"][1]["transform_matrix"][0][3] = float("nan")

  _rewrite_json(scene, _break)
  with pytest.raises(ValueError, match=r"transforms_train\.json.*frame 1.*NaN"):
    readers.read_nerf_synthetic(scene)


def test_blender_bad_pose_shape_and_angle(tmp_path):
  scene = _blender_fixture(tmp_path)
  _rewrite_json(scene, lambda m: m["frames"][0].update(transform_matrix=[[1, 0], [0, 1]]))
  with pytest.raises(ValueError, match=r"transforms_train\.json.*shape"):
    readers.read_nerf_synthetic(scene)
  scene = _blender_fixture(tmp_path / "b")
  _rewrite_json(scene, lambda m: m.update(camera_angle_x=float("inf")))
  with pytest.raises(ValueError, match=r"transforms_train\.json.*camera_angle_x"):
    readers.read_nerf_synthetic(scene)


def test_blender_mixed_sizes(tmp_path):
  scene = _blender_fixture(tmp_path, sizes=[(8, 8), (8, 6)])
  with pytest.raises(ValueError, match=r"mixed image sizes.*r_1\.png"):
    readers.read_nerf_synthetic(scene)


def test_blender_empty(tmp_path):
  scene = _blender_fixture(tmp_path)
  _rewrite_json(scene, lambda m: m.update(frames=[]))
  with pytest.raises(ValueError, match=r"empty scene"):
    readers.read_nerf_synthetic(scene)
  with pytest.raises(ValueError, match=r"empty scene"):
    readers.read_nerf_synthetic(tmp_path / "blend", splits=("val",))


def _llff_fixture(tmp_path, real, name="fern", sub="nerf_llff_data"):
  dst = tmp_path / name
  shutil.copytree(real / sub / name, dst)
  return dst


def _edit_poses(scene, fn):
  path = scene / "poses_bounds.npy"
  pb = np.load(path)
  np.save(path, fn(pb))


def test_llff_bad_shape(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)
  _edit_poses(scene, lambda pb: pb[:, :15])
  with pytest.raises(ValueError, match=r"poses_bounds\.npy.*\[N, 17\].*\(20, 15\)"):
    readers.read_llff(scene)


def test_llff_nan_pose(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)

  def _break(pb):
    pb[3, 7] = np.inf
    return pb

  _edit_poses(scene, _break)
  with pytest.raises(ValueError, match=r"poses_bounds\.npy.*NaN or inf"):
    readers.read_llff(scene)


def test_llff_near_ge_far(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)

  def _break(pb):
    pb[5, 15] = pb[5, 16] + 1.0
    return pb

  _edit_poses(scene, _break)
  with pytest.raises(ValueError, match=r"poses_bounds\.npy.*near >= far.*view 5"):
    readers.read_llff(scene)


def test_llff_empty_and_count_mismatch(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)
  (scene / "images_8" / "image019.png").unlink()
  with pytest.raises(ValueError, match=r"20 poses but 19 images"):
    readers.read_llff(scene)
  _edit_poses(scene, lambda pb: pb[:0])
  with pytest.raises(ValueError, match=r"empty scene.*poses_bounds\.npy"):
    readers.read_llff(scene)
  for p in (scene / "images_8").iterdir():
    p.unlink()
  _dummy_poses(scene, 3)
  with pytest.raises(ValueError, match=r"empty scene.*images_8"):
    readers.read_llff(scene)


def _dummy_poses(scene, n):
  pb = np.zeros([n, 17])
  pb[:, 15:] = [1.0, 2.0]
  pb[:, :15] = np.concatenate([np.eye(3), np.zeros([3, 1]), [[8], [8], [10]]], 1).reshape(15)
  np.save(scene / "poses_bounds.npy", pb)
  return scene


def test_llff_corrupt_and_mixed_images(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)
  png = scene / "images_8" / "image004.png"
  png.write_bytes(png.read_bytes()[:1000])
  with pytest.raises(ValueError, match=r"image004\.png.*corrupt or truncated"):
    readers.read_llff(scene)
  _write_png(png, (10, 12, 3))
  with pytest.raises(ValueError, match=r"mixed image sizes.*image004\.png"):
    readers.read_llff(scene)


def test_llff_missing_files(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)
  with pytest.raises(FileNotFoundError, match=r"images_4"):
    readers.read_llff(scene, factor=4)
  (scene / "poses_bounds.npy").unlink()
  with pytest.raises(FileNotFoundError, match=r"poses_bounds\.npy"):
    readers.read_llff(scene)


def test_dtu_bad_mask(tmp_path, real):
  scene = _llff_fixture(tmp_path, real, "dtu_scan24", "dtu")
  mask = scene / "mask_8" / "010.png"
  mask.write_bytes(mask.read_bytes()[:100])
  with pytest.raises(ValueError, match=r"010\.png.*corrupt or truncated"):
    readers.read_dtu(scene)
  _write_png(mask, (20, 20, 3))
  with pytest.raises(ValueError, match=r"mixed image sizes.*010\.png"):
    readers.read_dtu(scene)
  mask.unlink()
  with pytest.raises(ValueError, match=r"48 masks but 49 images"):
    readers.read_dtu(scene)
