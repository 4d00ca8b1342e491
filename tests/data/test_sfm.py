"""movenerf.data.sfm without COLMAP: the LLFF conversion (LLFF's axis order and near/far
rule), its round trip through movenerf's LLFF reader, pairs and the input checks."""

import numpy as np
import pytest
from PIL import Image

from movenerf.data import procedural, sfm
from movenerf.data.formats import llff
from movenerf.validation import UsageError

H, W, F = 24, 32, 30.0


def _reconstruction(n=6, registered=None, seed=0) -> sfm.Reconstruction:
  """Cameras of a generated forward rig and random points in front of them."""
  # pylint: disable-next=protected-access
  scene_c2w = procedural._cameras(seed, "forward", n).astype(np.float64)
  rng = np.random.default_rng(seed)
  points = np.concatenate([rng.uniform(-2, 2, (200, 2)), rng.uniform(3, 9, (200, 1))], 1)
  vis = rng.uniform(size=(200, n)) < 0.6
  registered = np.ones(n, bool) if registered is None else np.asarray(registered)
  return sfm.Reconstruction(
      names=tuple(f"v{i:02d}.png" for i in range(n)), registered=registered, c2w=scene_c2w,
      hwf=np.tile([H, W, F], (n, 1)).astype(np.float64), camera_model="SIMPLE_RADIAL",
      camera_params=np.tile([F, W / 2, H / 2, 0.0], (n, 1)), points=points,
      colors=np.zeros((200, 3), np.uint8), point_errors=np.full(200, 0.5), visibility=vis,
      mean_reprojection_error=0.5, settings="fast", attempts=())


def _images(folder, names, size=(W, H)):
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for name in names:
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        folder / name)
  return folder


def test_llff_axis_order_is_the_inverse_of_the_reader():
  c2w = _reconstruction().c2w
  np.testing.assert_allclose(llff.llff_to_opencv(sfm.opencv_to_llff(c2w)), c2w, atol=1e-12)
  # LLFF's columns: down, right, backwards = OpenCV's (y, x, -z).
  pb = sfm.opencv_to_llff(c2w)
  np.testing.assert_allclose(pb[:, :, 0], c2w[:, :3, 1])
  np.testing.assert_allclose(pb[:, :, 1], c2w[:, :3, 0])
  np.testing.assert_allclose(pb[:, :, 2], -c2w[:, :3, 2])


def test_bounds_follow_llff_percentile_rule():
  c2w = np.eye(4)[None]
  depths = np.arange(1.0, 1001.0)  # points straight ahead at z = 1 .. 1000
  points = np.stack([np.zeros_like(depths), np.zeros_like(depths), depths], 1)
  bounds = sfm.view_bounds(c2w, points, np.ones((1000, 1), bool))
  np.testing.assert_allclose(bounds[0], np.percentile(depths, [0.1, 99.9]))
  # Only the points a view observes count.
  vis = (depths < 100)[:, None]
  np.testing.assert_allclose(sfm.view_bounds(c2w, points, vis)[0],
                             np.percentile(depths[:99], [0.1, 99.9]))


def test_poses_bounds_round_trip_through_the_llff_reader(tmp_path):
  rec = _reconstruction(n=6)
  _images(tmp_path / "src", rec.names, size=(W, H))
  written = sfm.write_llff(tmp_path / "scene", tmp_path / "src", rec, downscale=2)
  pb = np.load(tmp_path / "scene" / "poses_bounds.npy")
  assert pb.shape == (6, 17)
  np.testing.assert_allclose(pb[:, [4, 9, 14]], np.tile([H, W, F], (6, 1)))
  for factor, focal in ((1, F), (2, F / 2)):
    read = llff.read_llff(tmp_path / "scene", factor=factor, llffhold=0)
    np.testing.assert_allclose(read.c2w, rec.c2w, atol=1e-5)
    np.testing.assert_allclose(read.intrinsics[:, 0, 0], focal, rtol=1e-6)
    np.testing.assert_allclose(read.near, pb[:, 15], rtol=1e-6)
    np.testing.assert_allclose(read.far, pb[:, 16], rtol=1e-6)
    assert read.images.shape == (6, H // factor, W // factor, 3)
  assert written["focal_downscaled"] == pytest.approx([F / 2] * 6)
  sparse = tmp_path / "scene" / "sparse"
  np.testing.assert_array_equal(np.load(sparse / "points3D.npy"), rec.points)
  np.testing.assert_array_equal(np.load(sparse / "visibility.npy"), rec.visibility)
  # near/far: every view's bounds hold the depths of the points it observes.
  z = np.einsum("pni,ni->pn", rec.points[:, None] - rec.c2w[None, :, :3, 3], rec.c2w[:, :3, 2])
  for i in range(6):
    zs = z[rec.visibility[:, i], i]
    assert pb[i, 15] == pytest.approx(np.percentile(zs, 0.1))
    assert pb[i, 16] == pytest.approx(np.percentile(zs, 99.9))


def test_unregistered_views_are_left_out(tmp_path):
  rec = _reconstruction(n=6, registered=[True, True, False, True, True, False])
  rec = sfm.Reconstruction(**{**rec.__dict__, "c2w": np.where(
      rec.registered[:, None, None], rec.c2w, np.nan)})
  assert rec.unregistered == ["v02.png", "v05.png"]
  _images(tmp_path / "src", rec.names)
  sfm.write_llff(tmp_path / "scene", tmp_path / "src", rec)
  read = llff.read_llff(tmp_path / "scene", factor=1, llffhold=0)
  assert read.num_views == 4
  np.testing.assert_allclose(read.c2w, rec.c2w[rec.registered], atol=1e-5)
  assert sorted(p.name for p in (tmp_path / "scene" / "images").iterdir()) == [
      "v00.png", "v01.png", "v03.png", "v04.png"]
  assert np.load(tmp_path / "scene" / "sparse" / "visibility.npy").shape[1] == 4


def test_pairs():
  assert len(sfm.exhaustive_pairs(20)) == 190
  seq = sfm.sequential_pairs(100, overlap=3)
  assert (0, 1) in seq and (0, 3) in seq and (0, 4) in seq and (0, 5) not in seq
  assert all(i < j for i, j in seq) and len(set(seq)) == len(seq)


def test_too_few_images_are_named(tmp_path):
  _images(tmp_path, ["a.png", "b.jpg"])
  (tmp_path / "notes.txt").write_text("not an image")
  with pytest.raises(UsageError, match=r"2 images \(a.png, b.jpg\); structure from motion "
                     r"needs at least 3"):
    sfm.list_images(tmp_path)


def test_mixed_sizes_name_two_files_with_their_sizes(tmp_path):
  _images(tmp_path, ["a.png", "b.png"], size=(32, 24))
  _images(tmp_path, ["c.png"], size=(24, 32))
  with pytest.raises(UsageError, match=r"mixed image sizes: a.png is 32x24, c.png is 24x32"):
    sfm.check_same_size(tmp_path, sfm.list_images(tmp_path))


def test_an_unreadable_image_is_named(tmp_path):
  _images(tmp_path, ["a.png", "b.png"])
  (tmp_path / "c.png").write_bytes(b"not a png")
  with pytest.raises(UsageError, match="c.png: not a readable image"):
    sfm.check_same_size(tmp_path, sfm.list_images(tmp_path))


def test_progress_lines_have_rate_and_eta():
  lines = []
  progress = sfm.Progress(lines.append, "features", 4, "images", every_s=0.0)
  for i in range(1, 5):
    progress.update(i)
  assert lines[0].startswith("features: 1/4 images, ") and "ETA" in lines[0]
  assert lines[-1].startswith("features: 4/4 images, ") and "done in" in lines[-1]


def test_sparse_points_read_back(tmp_path):
  rec = _reconstruction(n=4)
  _images(tmp_path / "src", rec.names)
  sfm.write_llff(tmp_path / "scene", tmp_path / "src", rec)
  sparse = sfm.read_sparse(tmp_path / "scene")
  np.testing.assert_array_equal(sparse.points, rec.points)
  np.testing.assert_array_equal(sparse.visibility, rec.visibility)
  assert sparse.observations is None  # no COLMAP model in sparse/0
  assert sfm.read_sparse(tmp_path / "src") is None
  np.save(tmp_path / "scene" / "sparse" / "visibility.npy", rec.visibility[:10])
  with pytest.raises(ValueError, match="do not describe the same"):
    sfm.read_sparse(tmp_path / "scene")
