"""LLFF and DTU readers: the real fern, flower and DTU scans, and broken fixtures."""

import shutil

import numpy as np
import pytest

from movenerf.data.formats import llff
from tests.data.formats import helpers

DTU = ["dtu_scan24", "dtu_scan37"]
_read = helpers.read_cached


# ----------------------------------------------------------------------------- real scenes


@pytest.mark.parametrize("name,n", [("fern", 20), ("flower", 34)])
def test_llff_counts_and_projection(real, name, n):
  rec = _read(llff.read_llff, real / "nerf_llff_data" / name)
  helpers.check_common(rec, n, 378, 504)
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
  rec = _read(llff.read_dtu, real / "dtu" / name)
  n = len(list((real / "dtu" / name / "images_8").glob("*.png")))
  assert n == 49
  helpers.check_common(rec, n, 150, 200)
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
    centre = helpers.axes_centre(rec.c2w)
  else:
    dirs = rec.c2w[:, :3, 2].mean(0)
    depth = 0.5 * (rec.near.mean() + rec.far.mean())
    centre = rec.c2w[:, :3, 3].mean(0) + depth * dirs / np.linalg.norm(dirs)
  frac, front = helpers.project_fraction(rec, centre)
  assert front.all()
  assert frac >= 0.9



# ----------------------------------------------------------------------------- bad input


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
    llff.read_llff(scene)


def test_llff_nan_pose(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)

  def _break(pb):
    pb[3, 7] = np.inf
    return pb

  _edit_poses(scene, _break)
  with pytest.raises(ValueError, match=r"poses_bounds\.npy.*NaN or inf"):
    llff.read_llff(scene)


def test_llff_near_ge_far(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)

  def _break(pb):
    pb[5, 15] = pb[5, 16] + 1.0
    return pb

  _edit_poses(scene, _break)
  with pytest.raises(ValueError, match=r"poses_bounds\.npy.*near >= far.*view 5"):
    llff.read_llff(scene)


def test_llff_empty_and_count_mismatch(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)
  (scene / "images_8" / "image019.png").unlink()
  with pytest.raises(ValueError, match=r"20 poses but 19 images"):
    llff.read_llff(scene)
  _edit_poses(scene, lambda pb: pb[:0])
  with pytest.raises(ValueError, match=r"empty scene.*poses_bounds\.npy"):
    llff.read_llff(scene)
  for p in (scene / "images_8").iterdir():
    p.unlink()
  _dummy_poses(scene, 3)
  with pytest.raises(ValueError, match=r"empty scene.*images_8"):
    llff.read_llff(scene)


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
    llff.read_llff(scene)
  helpers.write_png(png, (10, 12, 3))
  with pytest.raises(ValueError, match=r"mixed image sizes.*image004\.png"):
    llff.read_llff(scene)


def test_llff_missing_files(tmp_path, real):
  scene = _llff_fixture(tmp_path, real)
  with pytest.raises(FileNotFoundError, match=r"images_4"):
    llff.read_llff(scene, factor=4)
  (scene / "poses_bounds.npy").unlink()
  with pytest.raises(FileNotFoundError, match=r"poses_bounds\.npy"):
    llff.read_llff(scene)


def test_dtu_bad_mask(tmp_path, real):
  scene = _llff_fixture(tmp_path, real, "dtu_scan24", "dtu")
  mask = scene / "mask_8" / "010.png"
  mask.write_bytes(mask.read_bytes()[:100])
  with pytest.raises(ValueError, match=r"010\.png.*corrupt or truncated"):
    llff.read_dtu(scene)
  helpers.write_png(mask, (20, 20, 3))
  with pytest.raises(ValueError, match=r"mixed image sizes.*010\.png"):
    llff.read_dtu(scene)
  mask.unlink()
  with pytest.raises(ValueError, match=r"48 masks but 49 images"):
    llff.read_dtu(scene)


def test_llffhold_zero_is_all_train_and_negative_is_an_error(tmp_path):
  scene = tmp_path / "scene"
  for i in range(3):
    helpers.write_png(scene / "images_8" / f"{i:03d}.png", (8, 8, 3))
  _dummy_poses(scene, 3)
  assert llff.read_llff(scene).split.tolist() == ["test", "train", "train"]
  assert llff.read_llff(scene, llffhold=0).split.tolist() == ["train"] * 3
  for bad in (-1, 2.5):
    with pytest.raises(ValueError, match=rf"^llffhold={bad}: give N >= 1 \(every N-th view "
                       r"is a test view\) or 0 \(no test views\)$"):
      llff.read_llff(scene, llffhold=bad)
