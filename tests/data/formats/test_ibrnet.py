"""IBRNet / GNT training-collection readers against fixtures written in the on-disk formats.

Each fixture is a procedural scene (exact cameras and depths) written out in one format's
own conventions (LLFF axes, normalised world-to-camera lines, axis-angle rigs, ...); the
reader must give back the original OpenCV cameras and the pixels unchanged.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from movenerf.geometry import cameras, projection
from movenerf.data.formats import ibrnet
from movenerf.data import images, procedural
# The fixtures' writers, one per format (shared with the camera checks' tests).
from tests.data.formats.helpers import (save_image as _png, write_collected as _write_collected,
                                        write_gso as _write_gso,
                                        write_realestate as _write_realestate,
                                        write_spaces as _write_spaces)

H, W, N = 32, 40, 6
# Intrinsics pass through a text/JSON round trip and float32; values are O(40) px.
ATOL = 1e-5


@pytest.fixture(scope="module")
def scene():
  return procedural.make_scene(5, kind="object", num_views=N, height=H, width=W)


def _truncate(path: Path) -> None:
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _spaces_models(d: Path) -> list:
  return json.loads((d / "models.json").read_text())


# ----------------------------------------------------------------------------- checks


def _check_common(rec, n=N, h=H, w=W):
  assert rec.images.shape == (n, h, w, 3) and rec.images.dtype == np.uint8
  assert rec.intrinsics.shape == (n, 3, 3) and rec.intrinsics.dtype == np.float32
  assert rec.c2w.shape == (n, 4, 4) and rec.c2w.dtype == np.float32
  assert rec.near.dtype == np.float32 and rec.far.dtype == np.float32
  assert rec.near.shape == rec.far.shape == rec.split.shape == (n,)
  assert np.all(rec.near < rec.far)


def _assert_same_cameras(rec, scene, intrinsics=None):
  k = scene.intrinsics if intrinsics is None else intrinsics
  np.testing.assert_allclose(rec.intrinsics, k, rtol=0, atol=ATOL)
  np.testing.assert_allclose(rec.c2w, scene.c2w, rtol=0, atol=ATOL)


def _check_projection(rec, scene):
  """Foreground points of view 0, lifted with the reader's cameras, land where the original
  cameras put them in every view (and back on their own pixel in view 0)."""
  v, u = np.nonzero(scene.masks[0])
  pick = np.linspace(0, v.size - 1, 20).astype(int)
  uv = np.stack([u[pick], v[pick]], -1).astype(np.float64)
  z = scene.depths[0][v[pick], u[pick]].astype(np.float64)

  def lift(k, c2w):
    cam = np.concatenate([uv, np.ones_like(z[:, None])], -1) @ np.linalg.inv(k).T * z[:, None]
    return cam @ c2w[:3, :3].T + c2w[:3, 3]

  def project(points, ks, c2ws):
    cams = cameras.Cameras(np.asarray(ks, np.float32), np.asarray(c2ws, np.float32), H, W)
    xy, front = projection.project_points(np.asarray(points, np.float32), cams)
    assert np.all(np.asarray(front))
    return np.asarray(xy)

  ours = project(lift(rec.intrinsics[0], rec.c2w[0]), rec.intrinsics, rec.c2w)
  ref = project(lift(scene.intrinsics[0], scene.c2w[0]), scene.intrinsics, scene.c2w)
  np.testing.assert_allclose(ours, ref, atol=1e-2)
  np.testing.assert_allclose(ours[0], uv, atol=1e-2)


# ----------------------------------------------------------------------------- round trips


def test_registry():
  assert set(ibrnet.READERS) == {
      "google_scanned_objects", "ibrnet_collected", "realestate10k", "spaces"}
  assert all(callable(f) for f in ibrnet.READERS.values())


def test_gso_round_trip(tmp_path, scene):
  d = _write_gso(tmp_path, scene)
  rec = ibrnet.READERS["google_scanned_objects"](d)
  _check_common(rec)
  assert rec.scene_id == "gso_object"
  np.testing.assert_array_equal(rec.images, scene.images)
  _assert_same_cameras(rec, scene)
  _check_projection(rec, scene)
  # IBRNet's depth range: the world origin's z-depth -/+ 0.5 * sqrt(2) * 1.1.
  depth = np.linalg.inv(scene.c2w.astype(np.float64))[:, 2, 3]
  r = 0.5 * np.sqrt(2.0) * 1.1
  np.testing.assert_allclose(rec.near, np.maximum(depth - r, 0.1 * depth), rtol=1e-6)
  np.testing.assert_allclose(rec.far, depth + r, rtol=1e-6)
  assert list(rec.split) == ["train"] * N


def test_gso_downsample(tmp_path, scene):
  rec = ibrnet.read_google_scanned_objects(_write_gso(tmp_path, scene), downsample=2)
  _check_common(rec, h=H // 2, w=W // 2)
  np.testing.assert_array_equal(rec.images[3], images.downscale_image(scene.images[3], 2))
  np.testing.assert_allclose(rec.intrinsics, cameras.scale_intrinsics(scene.intrinsics, 0.5),
                             atol=ATOL)


@pytest.mark.parametrize("collection,factor", [("ibrnet_collected_1", 2),
                                               ("ibrnet_collected_2", 8)])
def test_collected_round_trip(tmp_path, scene, collection, factor):
  d = _write_collected(tmp_path, scene, collection, factor)
  rec = ibrnet.read_ibrnet_collected(d)  # factor picked from the collection name
  _check_common(rec)
  assert rec.scene_id == "room"
  np.testing.assert_array_equal(rec.images, scene.images)
  _assert_same_cameras(rec, scene)
  _check_projection(rec, scene)
  bounds = np.load(d / "poses_bounds.npy")[:, 15:]
  np.testing.assert_allclose(rec.near, 0.9 * bounds.min(), rtol=1e-6)
  np.testing.assert_allclose(rec.far, 1.5 * bounds.max(), rtol=1e-6)
  assert list(rec.split) == ["train"] * N
  held = ibrnet.read_ibrnet_collected(d, llffhold=4)
  assert list(held.split_indices("test")) == [0, 4]


def test_collected_wrong_factor_folder(tmp_path, scene):
  d = _write_collected(tmp_path, scene, "ibrnet_collected_2", factor=2)
  with pytest.raises(FileNotFoundError, match="images_8"):
    ibrnet.read_ibrnet_collected(d)
  assert ibrnet.read_ibrnet_collected(d, factor=2).num_views == N


def test_realestate_round_trip(tmp_path, scene):
  frames = _write_realestate(tmp_path, scene, mode="test")
  rec = ibrnet.READERS["realestate10k"](frames, split="test")
  _check_common(rec)
  assert rec.scene_id == "clip"
  # Views come back in timestamp order, i.e. the original order.
  np.testing.assert_array_equal(rec.images, scene.images)
  _assert_same_cameras(rec, scene)
  _check_projection(rec, scene)
  np.testing.assert_array_equal(rec.near, 1.0)
  np.testing.assert_array_equal(rec.far, 100.0)
  assert list(rec.split) == ["test"] * N

  # IBRNet's numbers: principal point half a pixel further, focal unchanged.
  plain = ibrnet.read_realestate10k(frames, half_pixel_shift=False)
  shift = np.zeros((3, 3), np.float32)
  shift[:2, 2] = 0.5
  np.testing.assert_allclose(plain.intrinsics, scene.intrinsics + shift, atol=ATOL)

  # Normalised intrinsics are unnormalised with the downsampled size: exact centre again.
  half = ibrnet.read_realestate10k(
      frames, camera_file=tmp_path / "test" / "cameras" / "clip.txt", downsample=2)
  _check_common(half, h=H // 2, w=W // 2)
  centre = np.tile([(W // 2 - 1) / 2, (H // 2 - 1) / 2], (N, 1))
  np.testing.assert_allclose(half.intrinsics[:, :2, 2], centre, atol=ATOL)
  np.testing.assert_allclose(half.intrinsics[:, 0, 0], scene.intrinsics[:, 0, 0] / 2, atol=ATOL)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_spaces_round_trip(tmp_path, scene, scale):
  # scale 2: the json is calibrated for images twice the stored size (IBRNet rescales).
  d = _write_spaces(tmp_path, scene, scale)
  rec = ibrnet.READERS["spaces"](d)
  _check_common(rec)
  assert rec.scene_id == "scene_000"
  np.testing.assert_array_equal(rec.images, scene.images)  # rig-major order
  _assert_same_cameras(rec, scene)
  _check_projection(rec, scene)
  np.testing.assert_array_equal(rec.near, 1.0)
  np.testing.assert_array_equal(rec.far, 100.0)


def _grow_spaces_view(d: Path, scene, i: int, top: int, left: int) -> None:
  """Re-writes view i (rig 1, camera i - 3) bordered by top/left pixels on each side."""
  img = np.pad(scene.images[i], ((top, top), (left, left), (0, 0)), constant_values=255)
  models = _spaces_models(d)
  view = models[1][i - 3]
  _png(d / view["relative_path"], img)
  view["width"], view["height"] = W + 2 * left, H + 2 * top
  view["principal_point"] = [view["principal_point"][0] + left, view["principal_point"][1] + top]
  (d / "models.json").write_text(json.dumps(models))


def test_spaces_mixed_sizes_crop_and_pad(tmp_path, scene):
  d = _write_spaces(tmp_path, scene)
  _grow_spaces_view(d, scene, 4, top=1, left=2)
  with pytest.raises(ValueError, match=r"image_001\.png.*mixed_sizes"):
    ibrnet.read_spaces(d)

  crop = ibrnet.read_spaces(d, mixed_sizes="crop")
  _check_common(crop)
  np.testing.assert_array_equal(crop.images, scene.images)
  _assert_same_cameras(crop, scene)

  pad = ibrnet.read_spaces(d, mixed_sizes="pad")
  _check_common(pad, h=H + 2, w=W + 4)
  np.testing.assert_array_equal(pad.images[0, 1:-1, 2:-2], scene.images[0])
  assert not pad.images[0, 0].any() and not pad.images[0, :, :2].any()
  expected = scene.intrinsics.copy()
  expected[:, 0, 2] += 2
  expected[:, 1, 2] += 1
  _assert_same_cameras(pad, scene, intrinsics=expected)


# ----------------------------------------------------------------------------- bad input


def _gso_missing_pose(d):
  (d / "pose" / "000002.txt").unlink()


def _gso_truncated(d):
  _truncate(d / "rgb" / "000001.png")


def _gso_bad_shape(d):
  np.savetxt(d / "pose" / "000003.txt", np.eye(4)[:3])


def _gso_nan(d):
  (d / "intrinsics" / "000004.txt").write_text("44 0 19.5 0 nan 15.5 0 0 1\n")


def _gso_mixed(d):
  _png(d / "rgb" / "000005.png", np.zeros((H - 2, W, 3), np.uint8))


def _gso_empty(d):
  shutil.rmtree(d / "rgb")
  (d / "rgb").mkdir()


def _gso_not_rigid(d):
  np.savetxt(d / "pose" / "000000.txt", np.diag([2.0, 2.0, 2.0, 1.0]) @ np.eye(4))


def _gso_behind(d):
  pose = np.eye(4)
  pose[2, 3] = 4.0  # looks along +z from z = 4: the origin is behind it
  np.savetxt(d / "pose" / "000001.txt", pose)


@pytest.mark.parametrize("mutate,exc,pattern", [
    (_gso_missing_pose, FileNotFoundError, r"pose.*000002\.txt"),
    (_gso_truncated, ValueError, r"000001\.png.*truncated"),
    (_gso_bad_shape, ValueError, r"000003\.txt.*12 numbers"),
    (_gso_nan, ValueError, r"000004\.txt.*NaN"),
    (_gso_mixed, ValueError, r"mixed image sizes.*000005\.png"),
    (_gso_empty, ValueError, r"empty scene.*rgb"),
    (_gso_not_rigid, ValueError, r"000000\.txt.*rotation"),
    (_gso_behind, ValueError, r"000001\.txt.*behind"),
])
def test_gso_bad_input(tmp_path, scene, mutate, exc, pattern):
  d = _write_gso(tmp_path, scene)
  mutate(d)
  with pytest.raises(exc, match=pattern):
    ibrnet.read_google_scanned_objects(d)


def _cam_file(frames: Path) -> Path:
  return frames.parent.parent / "cameras" / f"{frames.name}.txt"


def _edit_camera_line(frames: Path, stamp: int, edit) -> None:
  path = _cam_file(frames)
  lines = path.read_text().splitlines()
  lines = [edit(l) if l.split()[0] == str(stamp) else l for l in lines]
  path.write_text("\n".join(lines) + "\n")


def _re_missing_camera_file(frames):
  _cam_file(frames).unlink()


def _re_frame_without_camera(frames):
  (frames / "1000.png").rename(frames / "1234.png")


def _re_truncated(frames):
  _truncate(frames / "20000.png")


def _re_bad_shape(frames):
  _edit_camera_line(frames, 900, lambda l: " ".join(l.split()[:-1]))


def _re_nan(frames):
  _edit_camera_line(frames, 100000, lambda l: " ".join(l.split()[:-1] + ["nan"]))


def _re_mixed(frames):
  _png(frames / "3000000.png", np.zeros((H, W + 2, 3), np.uint8))


def _re_empty(frames):
  for p in frames.iterdir():
    p.unlink()


def _re_bad_name(frames):
  (frames / "5.png").rename(frames / "frame_5.png")


@pytest.mark.parametrize("mutate,exc,pattern", [
    (_re_missing_camera_file, FileNotFoundError, r"cameras.clip\.txt"),
    (_re_frame_without_camera, ValueError, r"1234\.png.*no camera line"),
    (_re_truncated, ValueError, r"20000\.png.*truncated"),
    (_re_bad_shape, ValueError, r"clip\.txt:\d+: expected 19 numbers"),
    (_re_nan, ValueError, r"clip\.txt:\d+: .*NaN"),
    (_re_mixed, ValueError, r"mixed image sizes.*3000000\.png"),
    (_re_empty, ValueError, r"empty scene.*clip"),
    (_re_bad_name, ValueError, r"frame_5\.png.*integer timestamp"),
])
def test_realestate_bad_input(tmp_path, scene, mutate, exc, pattern):
  frames = _write_realestate(tmp_path, scene)
  mutate(frames)
  with pytest.raises(exc, match=pattern):
    ibrnet.read_realestate10k(frames)


def _edit_spaces_view(d: Path, rig: int, cam: int, key: str, value) -> None:
  models = _spaces_models(d)
  models[rig][cam][key] = value
  (d / "models.json").write_text(json.dumps(models))


def _sp_missing_image(d):
  (d / "cam_02" / "image_001.png").unlink()


def _sp_truncated(d):
  _truncate(d / "cam_01" / "image_000.png")


def _sp_bad_shape(d):
  _edit_spaces_view(d, 0, 2, "orientation", [0.1, 0.2])


def _sp_nan(d):
  _edit_spaces_view(d, 1, 0, "focal_length", float("nan"))


def _sp_mixed(d):
  _png(d / "cam_00" / "image_001.png", np.zeros((H + 2, W, 3), np.uint8))


def _sp_empty(d):
  (d / "models.json").write_text("[[], []]")


def _sp_bad_json(d):
  (d / "models.json").write_text("[[{")


def _sp_missing_models(d):
  (d / "models.json").unlink()


@pytest.mark.parametrize("mutate,exc,pattern", [
    (_sp_missing_image, FileNotFoundError, r"rig 1 camera 2.*image_001\.png"),
    (_sp_truncated, ValueError, r"image_000\.png.*truncated"),
    (_sp_bad_shape, ValueError, r"models\.json: rig 0 camera 2: 'orientation' has shape"),
    (_sp_nan, ValueError, r"models\.json: rig 1 camera 0: 'focal_length'.*NaN"),
    (_sp_mixed, ValueError, r"models\.json.*mixed image sizes.*image_001\.png"),
    (_sp_empty, ValueError, r"empty scene.*models\.json"),
    (_sp_bad_json, ValueError, r"models\.json: invalid JSON"),
    (_sp_missing_models, FileNotFoundError, r"models\.json"),
])
def test_spaces_bad_input(tmp_path, scene, mutate, exc, pattern):
  d = _write_spaces(tmp_path, scene)
  mutate(d)
  with pytest.raises(exc, match=pattern):
    ibrnet.read_spaces(d)


def test_collected_bad_input(tmp_path, scene):
  d = _write_collected(tmp_path, scene)
  pb = np.load(d / "poses_bounds.npy")
  pb[2, 3] = np.nan
  np.save(d / "poses_bounds.npy", pb)
  with pytest.raises(ValueError, match=r"poses_bounds\.npy.*NaN"):
    ibrnet.read_ibrnet_collected(d)
  d = _write_collected(tmp_path / "again", scene)
  for p in (d / "images_2").iterdir():
    p.unlink()
  with pytest.raises(ValueError, match=r"empty scene.*images_2"):
    ibrnet.read_ibrnet_collected(d)


def test_bad_arguments(tmp_path, scene):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    ibrnet.read_google_scanned_objects(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="downsample"):
    ibrnet.read_google_scanned_objects(_write_gso(tmp_path, scene), downsample=0)
  with pytest.raises(ValueError, match="mixed_sizes"):
    ibrnet.read_spaces(_write_spaces(tmp_path, scene), mixed_sizes="stretch")
  with pytest.raises(ValueError, match="camera_file"):
    ibrnet.read_realestate10k(_write_gso(tmp_path / "x", scene))
