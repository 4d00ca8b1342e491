"""The camera check on every format the library reads: correct cameras pass, and each
wrong convention (y/z axes flipped, the inverse pose, intrinsics scaled by 2) applied to
the read scene fails.

* llff, dtu, nerf_synthetic: the shared real scenes (keypoints matched in the images);
* the IBRNet family (google_scanned_objects, ibrnet_collected, realestate10k, spaces): a
  generated object scene (128x128, 30 views) written in each format's layout and read
  back by its reader (the images check);
* generated scenes: their depth maps (the depth check);
* a ``process_images`` scene: its sparse points and COLMAP model (the points check), here
  a generated scene with exact cameras written as structure from motion writes it.
"""

import dataclasses

import numpy as np
import pycolmap
import pytest

from movenerf.data import camera_check, matching, procedural, sfm
from movenerf.data.formats import registry
from tests.data.formats import helpers

WRONG = tuple(camera_check.CORRUPTIONS)


@pytest.fixture(scope="module")
def cache():
  return matching.Cache()


def _figures(check):
  return "; ".join(f"{c.label} {c.shown()}" for c in check.criteria)


def _assert_fails_each_corruption(rec, cache, sparse=None, **kwargs):
  for name in WRONG:
    bad = camera_check.check_scene(camera_check.corrupt(rec, name), sparse, cache=cache,
                                   **kwargs)
    print(f"  {name}: {bad.summary()}")
    assert not bad.passed, (name, bad.summary())
    if name == "intrinsics_x2" and bad.method == "images":
      # Whatever else it does, it moves the epipolar lines.
      assert "epipolar_px" in [c.name for c in bad.failed], bad.summary()


def test_corruptions_are_the_conventions_they_name():
  rec = procedural.make_record(0, num_views=3, height=8, width=8)
  flipped = camera_check.corrupt(rec, "flip_yz")
  np.testing.assert_array_equal(flipped.c2w[:, :, 0], rec.c2w[:, :, 0])
  np.testing.assert_array_equal(flipped.c2w[:, :3, 1:3], -rec.c2w[:, :3, 1:3])
  np.testing.assert_array_equal(flipped.c2w[:, :, 3], rec.c2w[:, :, 3])
  inverse = camera_check.corrupt(rec, "inverse")
  np.testing.assert_allclose(inverse.c2w @ rec.c2w, np.tile(np.eye(4), (3, 1, 1)), atol=1e-6)
  doubled = camera_check.corrupt(rec, "intrinsics_x2")
  np.testing.assert_allclose(doubled.intrinsics[:, :2], 2 * rec.intrinsics[:, :2])
  np.testing.assert_array_equal(doubled.intrinsics[:, 2], rec.intrinsics[:, 2])
  for other in (flipped, inverse, doubled):
    np.testing.assert_array_equal(other.images, rec.images)
  with pytest.raises(ValueError, match="unknown corruption 'transpose'"):
    camera_check.corrupt(rec, "transpose")


def test_a_criterion_decides_only_when_measured():
  below = camera_check.Criterion("epipolar_px", "median", 0.4, 1.5, at_most=True, unit=" px")
  above = dataclasses.replace(below, value=1.6)
  assert below.passed and not above.passed
  assert dataclasses.replace(below, value=np.inf).passed is False
  assert dataclasses.replace(below, value=None).passed is None
  share = camera_check.Criterion("in_front", "share", 0.9, 0.9, at_most=False)
  assert share.passed and not dataclasses.replace(share, value=0.89).passed
  check = camera_check.SceneCheck("s", "images", (below, dataclasses.replace(share,
                                                                               value=None)), {})
  assert check.passed
  assert not camera_check.SceneCheck("s", "images", (dataclasses.replace(below, value=None),),
                                     {}).passed  # nothing measured: no pass
  assert not camera_check.SceneCheck("s", "images", (below, above), {}).passed


# --- the real pack -----------------------------------------------------------------------

REAL_SCENES = [("llff", "nerf_llff_data/fern"), ("llff", "nerf_llff_data/flower"),
               ("nerf_synthetic", "nerf_synthetic/lego"),
               ("nerf_synthetic", "nerf_synthetic/mic"), ("dtu", "dtu/dtu_scan24"),
               ("dtu", "dtu/dtu_scan37")]


@pytest.mark.parametrize("fmt,path", REAL_SCENES, ids=[p.split("/")[1] for _, p in REAL_SCENES])
def test_real_scenes_pass_and_wrong_conventions_fail(fmt, path, cache):
  scene_dir = helpers.REAL / path
  if not scene_dir.is_dir():
    pytest.skip(f"real data pack not found at {helpers.REAL}")
  rec = registry.read_scene(fmt, scene_dir)
  check = camera_check.check_scene(rec, cache=cache)
  print(f"{path}: {_figures(check)}")
  assert check.method == "images"
  assert check.passed, check.summary()
  _assert_fails_each_corruption(rec, cache)


# --- the IBRNet family, written from a generated scene ------------------------------------

@pytest.fixture(scope="module")
def object_scene():
  return procedural.make_scene(3, "object", num_views=30, height=128, width=128)


def _scaled(scene, factor):
  """The same images from a world ``factor`` times smaller (cameras and depths scaled)."""
  c2w = scene.c2w.copy()
  c2w[:, :3, 3] *= factor
  return dataclasses.replace(scene, c2w=c2w, depths=scene.depths * factor)


WRITERS = {
    # IBRNet's GSO depth range assumes objects inside a ball of radius 0.78 at the origin:
    # the generated objects (radius 1.5) are scaled into it.
    "google_scanned_objects": lambda root, s: helpers.write_gso(root, _scaled(s, 0.45)),
    "ibrnet_collected": lambda root, s: helpers.write_collected(root, s),
    "realestate10k": lambda root, s: helpers.write_realestate(root, s),
    "spaces": lambda root, s: helpers.write_spaces(root, s),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_ibrnet_formats_pass_and_wrong_conventions_fail(fmt, object_scene, cache, tmp_path):
  scene_dir = WRITERS[fmt](tmp_path, object_scene)
  rec = registry.read_scene(fmt, scene_dir)
  assert rec.depths is None
  check = camera_check.check_scene(rec, cache=cache)
  print(f"{fmt}: {_figures(check)}")
  assert check.method == "images" and check.passed, check.summary()
  _assert_fails_each_corruption(rec, cache)


# --- generated scenes: depth -------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_scenes_pass_on_depth_and_wrong_conventions_fail(seed):
  rec = procedural.generated_record(seed, registry.parse_options("generated", {}))
  check = camera_check.check_scene(rec)
  print(f"seed {seed}: {_figures(check)}")
  assert check.method == "depth" and check.passed, check.summary()
  values = {c.name: c.value for c in check.criteria}
  assert values["in_front"] == 1.0 and values["near_far"] == 1.0
  _assert_fails_each_corruption(rec, None)


def test_depth_check_on_forward_scenes_catches_flips_and_scaled_intrinsics():
  rec = procedural.make_record(0, "forward", 20, 64, 64)
  assert camera_check.check_scene(rec).passed
  for name in ("flip_yz", "intrinsics_x2"):
    bad = camera_check.check_scene(camera_check.corrupt(rec, name))
    assert [c.name for c in bad.failed] == ["depth_seen"], bad.summary()


# --- a process_images scene: sparse points -----------------------------------------------

def _write_sfm_scene(root, scene):
  """``scene`` as ``process_images`` writes a reconstruction: images, poses_bounds.npy,
  sparse/*.npy and COLMAP's model in sparse/0, with exact cameras and points (depth
  pixels of every third view; observed where a view's depth map meets them)."""
  n, h, w = scene.images.shape[:3]
  names = [f"view_{i:03d}.png" for i in range(n)]
  for name, image in zip(names, scene.images):
    helpers.save_image(root / "photos" / name, image)
  points = []
  for i in range(0, n, 3):
    v, u = np.mgrid[2:h:6, 2:w:6].reshape(2, -1)
    keep = scene.depths[i][v, u] > 0
    xy = np.stack([u[keep], v[keep]], -1).astype(np.float64)
    rays = np.concatenate([xy, np.ones((len(xy), 1))], -1) @ np.linalg.inv(
        scene.intrinsics[i].astype(np.float64)).T
    cam = rays * scene.depths[i][v[keep], u[keep], None]
    points.append(cam @ scene.c2w[i, :3, :3].T.astype(np.float64) + scene.c2w[i, :3, 3])
  points = np.concatenate(points)
  model = pycolmap.Reconstruction()
  f = float(scene.intrinsics[0, 0, 0])
  model.add_camera_with_trivial_rig(pycolmap.Camera(
      model="SIMPLE_RADIAL", width=w, height=h, params=[f, w / 2, h / 2, 0.0], camera_id=1))
  tracks = [[] for _ in points]
  for i, name in enumerate(names):
    w2c = np.linalg.inv(scene.c2w[i].astype(np.float64))
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    xy = cam[:, :2] / cam[:, 2:] * f + scene.intrinsics[i, :2, 2]
    pix = np.round(xy).astype(int)
    inside = (cam[:, 2] > 0) & np.all((pix >= 0) & (pix < [w, h]), -1)
    depth = np.where(inside, scene.depths[i][np.clip(pix[:, 1], 0, h - 1),
                                             np.clip(pix[:, 0], 0, w - 1)], 0)
    seen = np.nonzero(inside & (np.abs(depth - cam[:, 2]) < 0.01 * cam[:, 2]))[0]
    # COLMAP's pixel centres are at half-integers.
    image = pycolmap.Image(name=name, camera_id=1, image_id=i + 1,
                           points2D=[pycolmap.Point2D(xy[p] + 0.5) for p in seen])
    model.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3]))
    for k, p in enumerate(seen):
      tracks[p].append((i + 1, k))
  for p, track in enumerate(tracks):
    if len(track) >= 2:
      pid = model.add_point3D(points[p], pycolmap.Track())
      for image_id, k in track:
        model.add_observation(pid, pycolmap.TrackElement(image_id, k))
  rec = sfm._to_numpy(model, names, "exact", [])  # pylint: disable=protected-access
  out = root / "scene"
  sfm.write_llff(out, root / "photos", rec)
  (out / "sparse" / "0").mkdir()
  model.write_binary(str(out / "sparse" / "0"))
  return out


def _moved(scene):
  """The scene in another world frame (rotated 40 degrees, shifted), as structure from
  motion leaves it: the generated forward rig sits at the world origin looking along +z
  with small rotations, where a pose and its inverse project alike (the images do not
  change)."""
  axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  a = np.radians(40.0)
  move = np.eye(4)
  move[:3, :3] = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
  move[:3, 3] = [2.0, -1.0, 3.0]
  return dataclasses.replace(scene, c2w=(move @ scene.c2w).astype(np.float32))


@pytest.fixture(scope="module")
def sfm_scene(tmp_path_factory):
  scene = procedural.make_scene(1, "forward", num_views=12, height=64, width=80)
  return _write_sfm_scene(tmp_path_factory.mktemp("sfm"), _moved(scene))


def test_sparse_points_of_a_reconstruction_pass_and_wrong_conventions_fail(sfm_scene):
  rec = registry.read_scene("llff", sfm_scene, factor=1)
  sparse = sfm.read_sparse(sfm_scene, (rec.width, rec.height))
  assert sparse.observations is not None
  # For images half the size: pixel centres (x + 0.5) / 2 - 0.5.
  half = sfm.read_sparse(sfm_scene, (rec.width // 2, rec.height // 2))
  np.testing.assert_allclose(half.observations, (sparse.observations + 0.5) / 2 - 0.5)
  check = camera_check.check_scene(rec, sparse)
  print(_figures(check))
  assert check.method == "points" and check.passed, check.summary()
  values = {c.name: c.value for c in check.criteria}
  assert values["in_front"] == values["inside"] == 1.0
  assert values["reprojection_px"] < 1e-3  # exact cameras, float32 poses
  assert values["near_far"] > 0.99  # LLFF's bounds: the 0.1 and 99.9 percentiles
  _assert_fails_each_corruption(rec, None, sparse)


def test_sparse_points_without_the_colmap_model(sfm_scene, tmp_path):
  rec = registry.read_scene("llff", sfm_scene, factor=1)
  sparse = sfm.read_sparse(sfm_scene)
  bare = dataclasses.replace(sparse, observations=None)
  check = camera_check.check_scene(rec, bare)
  assert check.passed and "reprojection error is not measured" in check.note
  assert {c.name for c in check.criteria if c.value is None} == {"reprojection_px"}
  assert not camera_check.check_scene(camera_check.corrupt(rec, "intrinsics_x2"), bare).passed
  assert sfm.read_sparse(tmp_path) is None
