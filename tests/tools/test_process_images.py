"""process_images: structure from motion on real photos (fern; flower opt-in) and on a
generated scene with known cameras, checked after a similarity alignment; bad input and
failed reconstructions are one line naming the images, and leave nothing behind.

Thresholds (max over views; centre error relative to the reference rig's extent, its
largest distance between two camera centres), from the values measured with pycolmap
4.2.1 (``benchmarks/sfm_cpu_2core.json``):

* fern, 20 ``images_8`` photos against the published LLFF poses (COLMAP's, from the
  4032x3024 originals): measured 0.41 deg rotation (0.20 deg between pairs, no alignment
  involved) and 0.53 % centre error; held under 1 deg and 1 %, about twice that, which
  still flags a wrong axis order (90 deg) or a wrong scale/focal (several %).
* flower, 34 ``images_8`` photos (``MOVENERF_SLOW_TESTS=1``: it takes many minutes): none
  register with the defaults, all with the robust retry; measured 0.15 deg (0.11 between
  pairs) and 0.40 %; held under the same 1 deg and 1 %.
* a generated forward-facing scene (16 views, 192x192, exact cameras): over five runs
  (COLMAP's threads make runs differ) 1.6 to 1.8 deg and 1.5 to 2.0 %, and the focal
  4 to 11 % above the true one (seed 1 of the same layout: 2.0 deg, 1.7 %). A small,
  narrow rig leaves the focal weakly observed (it stays near COLMAP's initial 1.2 x the
  image size) and the rotations follow it; even with the focal given (``--focal``) the
  pairwise rotations are 1.9 deg off, so the limit is the scene (400 points on
  hard-edged, aliased solids), not the conversion. Held under 3 deg and 3 %, and the
  focal within 15 %: a wrong axis order, a lost view or a scale bug is far beyond.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from movenerf.data import procedural, sfm
from movenerf.data.formats import llff
from movenerf.geometry import alignment
from movenerf.tools import process_images
from movenerf.validation import UsageError

REPO = Path(__file__).resolve().parents[2]
REAL = Path(os.environ.get("MOVENERF_SHARED", REPO.parent / "shared")) / "data" / "real"
LLFF = REAL / "nerf_llff_data"
SLOW = os.environ.get("MOVENERF_SLOW_TESTS") == "1"

needs_pycolmap = pytest.mark.skipif(
    importlib.util.find_spec("pycolmap") is None,
    reason="pycolmap not installed (pip install 'movenerf[sfm]')")


def _leftovers(parent: Path, name: str) -> list[str]:
  return sorted(p.name for p in parent.iterdir() if p.name.startswith(name))


def _run(*args):
  return subprocess.run([sys.executable, "-m", "movenerf.tools.process_images", *args],
                        capture_output=True, text=True, cwd=REPO, timeout=600)


def _save(folder: Path, images, prefix="view"):
  folder.mkdir(parents=True, exist_ok=True)
  for i, im in enumerate(images):
    Image.fromarray(im).save(folder / f"{prefix}_{i:03d}.png")
  return folder


def generated_scene(seed=0, num_views=16, size=192, spacing=0.6, focal_factor=1.1):
  """A cluttered forward-facing scene (40 textured solids before a textured wall) seen
  from a jittered 4x4 grid: images [N, S, S, 3] uint8, c2w [N, 4, 4], focal."""
  # pylint: disable=protected-access
  rng = np.random.default_rng(seed)
  prims = []
  for _ in range(40):
    z = rng.uniform(2.5, 8.0)
    centre = np.array([rng.uniform(-0.45, 0.45) * z, rng.uniform(-0.45, 0.45) * z, z])
    prims.append(procedural._random_solid(rng, centre, rng.uniform(0.15, 0.45), (0.04, 0.12)))
  prims.append(procedural.Plane((0, 0, 9.0), (0, 0, -1.0),
                                procedural._random_texture(rng, (0.15, 0.3))))
  spec = procedural.SceneSpec(tuple(prims), "forward", (0.3, 0.6, -1.0), 0.35,
                              (0.6, 0.75, 0.95))
  cols = int(np.ceil(np.sqrt(num_views)))
  c2w = []
  for k in range(num_views):
    r, c = divmod(k, cols)
    eye = np.array([(c - (cols - 1) / 2) * spacing, ((cols - 1) / 2 - r) * spacing, 0.0])
    eye += rng.uniform(-0.05, 0.05, 3)
    c2w.append(procedural.look_at(eye, np.array([0, 0, 6.0]) + rng.uniform(-0.2, 0.2, 3)))
  c2w = np.stack(c2w).astype(np.float32)
  f = focal_factor * size
  k = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]])
  intrinsics = np.tile(k, (num_views, 1, 1)).astype(np.float32)
  images, _, _ = procedural.render_views(spec, intrinsics, c2w, size, size)
  return images, c2w, f


# --- end to end -------------------------------------------------------------------------

def _check_scene(out: Path, given: int, c2w_ref, factor: int):
  summary = json.loads((out / "sfm_summary.json").read_text())
  assert summary["registered"] == summary["given"] == given
  assert summary["unregistered"] == []
  pb = np.load(out / "poses_bounds.npy")
  assert pb.shape == (given, 17)
  if c2w_ref.shape[-1] == 17:  # a published poses_bounds.npy
    errors = sfm.compare_poses_bounds(pb, c2w_ref)
  else:
    errors = alignment.pose_errors(sfm.llff_cameras(pb), c2w_ref)
  # The written scene reads back with the recovered cameras.
  read = llff.read_llff(out, factor=factor, llffhold=0)
  np.testing.assert_allclose(read.c2w, sfm.llff_cameras(pb), atol=1e-4)
  assert np.all(read.near > 0) and np.all(read.near < read.far)
  assert sorted(p.name for p in out.iterdir()) == sorted(
      ["images", "poses_bounds.npy", "sparse", "sfm_summary.json"]
      + ([f"images_{factor}"] if factor > 1 else []))
  return summary, pb, errors, read


@needs_pycolmap
def test_generated_scene_is_recovered(tmp_path):
  images, c2w, focal = generated_scene()
  src = _save(tmp_path / "photos", images)
  out = tmp_path / "scenes" / "scene"  # a parent that does not exist yet is made
  summary = process_images.process(str(out), images=str(src), threads=2)
  summary, pb, errors, _ = _check_scene(out, len(images), c2w, factor=1)
  print(errors.summary(), "focal", pb[0, 14], "of", focal)
  assert errors.rotation_deg.max() < 3.0
  assert errors.centre_relative.max() < 0.03
  assert pb[0, 14] == pytest.approx(focal, rel=0.15)
  assert summary["mean_reprojection_error_px"] < 1.5


def _llff_scene(tmp_path, name, given):
  if not (LLFF / name / "images_8").is_dir():
    pytest.skip(f"real data pack not found at {REAL}")
  ref = np.load(LLFF / name / "poses_bounds.npy")
  out = tmp_path / name
  start = time.perf_counter()
  process_images.process(str(out), images=str(LLFF / name / "images_8"), downscale=2,
                         threads=2)
  seconds = time.perf_counter() - start
  summary, pb, errors, read = _check_scene(out, given, ref, factor=2)
  print(name, errors.summary(), f"{seconds:.0f} s", summary["attempts"])
  assert read.images.shape[1:3] == (189, 252)
  # The published focal (full resolution) scaled to images_8, then to images_2 of it.
  np.testing.assert_allclose(read.intrinsics[:, 0, 0], ref[:, 14] * 504 / 4032 / 2,
                             rtol=0.05)
  assert errors.rotation_deg.max() < 1.0
  assert errors.centre_relative.max() < 0.01
  return summary


@needs_pycolmap
def test_fern_registers_every_photo_near_the_published_poses(tmp_path):
  summary = _llff_scene(tmp_path, "fern", 20)
  assert summary["settings"] == "fast"  # the defaults are enough for fern: seconds


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="many minutes: set MOVENERF_SLOW_TESTS=1")
@needs_pycolmap
def test_flower_registers_every_photo_near_the_published_poses(tmp_path):
  summary = _llff_scene(tmp_path, "flower", 34)
  assert [a["settings"] for a in summary["attempts"]] == ["fast", "robust"]



@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="another reconstruction: set MOVENERF_SLOW_TESTS=1")
@needs_pycolmap
def test_generated_scene_is_recovered_from_a_video(tmp_path):
  imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
  images, c2w, _ = generated_scene()
  path = tmp_path / "clip.mp4"
  writer = imageio_ffmpeg.write_frames(str(path), images.shape[2:0:-1], fps=4, quality=9,
                                       macro_block_size=16)
  writer.send(None)
  for image in images:
    writer.send(np.ascontiguousarray(image).tobytes())
  writer.close()
  out = tmp_path / "scene"
  summary = process_images.process(str(out), video=str(path), frames=len(images), threads=2)
  assert summary["matcher"] == "sequential"
  _, _, errors, _ = _check_scene(out, len(images), c2w, factor=1)
  # Measured: 2.0 deg, 1.6 % (H.264 at quality 9 costs little).
  assert errors.rotation_deg.max() < 3.0 and errors.centre_relative.max() < 0.03

# --- failures ---------------------------------------------------------------------------

def test_too_few_images_exit_2_naming_them_and_write_nothing(tmp_path):
  _save(tmp_path / "photos", np.zeros((2, 16, 16, 3), np.uint8))
  done = _run("--images", str(tmp_path / "photos"), "--out", str(tmp_path / "scene"))
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip() == (
      f"movenerf.tools.process_images: error: {tmp_path / 'photos'}: 2 images "
      "(view_000.png, view_001.png); structure from motion needs at least 3")
  assert _leftovers(tmp_path, "scene") == []


def test_mixed_sizes_name_two_files_and_write_nothing(tmp_path):
  src = _save(tmp_path / "photos", np.zeros((3, 16, 16, 3), np.uint8))
  Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(src / "view_001.png")
  with pytest.raises(UsageError, match=r"^mixed image sizes: view_000.png is 16x16, "
                     r"view_001.png is 16x20 \(WxH\)"):
    process_images.process(str(tmp_path / "scene"), images=str(src))
  assert _leftovers(tmp_path, "scene") == []


def test_an_existing_out_needs_overwrite(tmp_path):
  src = _save(tmp_path / "photos", np.zeros((3, 16, 16, 3), np.uint8))
  (tmp_path / "scene").mkdir()
  with pytest.raises(UsageError, match="exists; give --overwrite"):
    process_images.process(str(tmp_path / "scene"), images=str(src))


@pytest.mark.parametrize("kwargs,match", [
    (dict(), "give --images DIR or --video FILE"),
    (dict(images="x", video="y"), "give --images DIR or --video FILE"),
    (dict(images="x", fps=2.0), "--fps and --frames are for --video"),
    (dict(video="missing.mp4"), "--video=missing.mp4: no such file"),
])
def test_bad_options_are_named(tmp_path, kwargs, match):
  with pytest.raises(UsageError, match=match):
    process_images.process(str(tmp_path / "scene"), **kwargs)


@needs_pycolmap
def test_no_overlap_exits_1_and_leaves_nothing(tmp_path):
  rng = np.random.default_rng(0)
  src = _save(tmp_path / "photos", rng.integers(0, 255, (3, 48, 48, 3), dtype=np.uint8))
  done = _run("--images", str(src), "--out", str(tmp_path / "scene"), "--threads", "2",
              "--preset", "fast")
  assert done.returncode == 1, done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("movenerf.tools.process_images: structure from motion "
                         "reconstructed nothing from the 3 images"), done.stderr
  assert _leftovers(tmp_path, "scene") == []


def _fake_reconstruct(registered):
  def reconstruct(image_dir, work_dir, names, **kwargs):
    del work_dir, kwargs
    rng = np.random.default_rng(0)
    n = len(names)
    c2w = np.stack([procedural.look_at((0.2 * i, 0.1 * (i % 2), 0.0), (0, 0, 5.0))
                    for i in range(n)])
    points = np.concatenate([rng.uniform(-1, 1, (50, 2)), rng.uniform(3, 7, (50, 1))], 1)
    return sfm.Reconstruction(
        names=tuple(names), registered=np.asarray(registered), c2w=c2w,
        hwf=np.tile([16.0, 16.0, 20.0], (n, 1)), camera_model="SIMPLE_RADIAL",
        camera_params=np.tile([20.0, 8.0, 8.0, 0.0], (n, 1)), points=points,
        colors=np.zeros((50, 3), np.uint8), point_errors=np.ones(50),
        visibility=np.ones((50, n), bool), mean_reprojection_error=1.0, settings="fast",
        attempts=({"settings": "fast", "registered": int(sum(registered))},))
  return reconstruct


def test_unregistered_images_are_named_unless_allowed(tmp_path, monkeypatch):
  src = _save(tmp_path / "photos", np.zeros((5, 16, 16, 3), np.uint8))
  monkeypatch.setattr(sfm, "reconstruct", _fake_reconstruct([True, False, True, True, False]))
  with pytest.raises(sfm.SfmError, match=r"registered 3 of 5 images; not registered: "
                     r"view_001.png, view_004.png \(give --allow_partial"):
    process_images.process(str(tmp_path / "scene"), images=str(src))
  assert _leftovers(tmp_path, "scene") == []
  summary = process_images.process(str(tmp_path / "scene"), images=str(src),
                                   allow_partial=True)
  assert summary["unregistered"] == ["view_001.png", "view_004.png"]
  assert llff.read_llff(tmp_path / "scene", factor=1).num_views == 3
  assert _leftovers(tmp_path, "scene") == ["scene"]


def test_overwrite_replaces_the_scene_atomically(tmp_path, monkeypatch):
  src = _save(tmp_path / "photos", np.zeros((4, 16, 16, 3), np.uint8))
  monkeypatch.setattr(sfm, "reconstruct", _fake_reconstruct([True] * 4))
  (tmp_path / "scene").mkdir()
  (tmp_path / "scene" / "old.txt").write_text("old")
  process_images.process(str(tmp_path / "scene"), images=str(src), overwrite=True,
                         downscale=2)
  assert not (tmp_path / "scene" / "old.txt").exists()
  assert llff.read_llff(tmp_path / "scene", factor=2).images.shape == (4, 8, 8, 3)
  assert _leftovers(tmp_path, "scene") == ["scene"]


# --- video ------------------------------------------------------------------------------

def test_frame_indices():
  assert process_images.frame_indices(100, 30.0, None, 5) == [0, 25, 50, 74, 99]
  assert process_images.frame_indices(90, 30.0, 2.0, None) == [0, 15, 30, 45, 60, 75]
  assert process_images.frame_indices(10, 30.0, 60.0, None) == list(range(10))


def test_frames_are_taken_from_a_video(tmp_path):
  imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
  path = tmp_path / "clip.mp4"
  writer = imageio_ffmpeg.write_frames(str(path), (32, 32), fps=10, macro_block_size=16)
  writer.send(None)
  for i in range(20):
    writer.send(np.full((32, 32, 3), 10 * i, np.uint8).tobytes())
  writer.close()
  names = process_images.extract_frames(str(path), tmp_path / "frames", None, 4)
  assert names == ["frame_00000.png", "frame_00006.png", "frame_00013.png",
                   "frame_00019.png"]
  assert np.asarray(Image.open(tmp_path / "frames" / names[-1])).shape == (32, 32, 3)
  with pytest.raises(UsageError, match=r"frames? taken \(20 in the video\)"):
    process_images.extract_frames(str(path), tmp_path / "few", 0.1, None)


_WITHOUT_PYCOLMAP = """
import sys
class Blocker:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "pycolmap":
      raise ImportError("not installed: " + name)
sys.meta_path.insert(0, Blocker())
from movenerf import cli
cli.process_images()
"""


def test_without_pycolmap_the_extra_is_named_and_nothing_is_left(tmp_path):
  src = _save(tmp_path / "photos", np.zeros((3, 16, 16, 3), np.uint8))
  done = subprocess.run([sys.executable, "-c", _WITHOUT_PYCOLMAP, "--images", str(src),
                         "--out", str(tmp_path / "scene")],
                        capture_output=True, text=True, cwd=REPO, timeout=600)
  assert done.returncode == 1, done.stderr
  assert done.stderr.strip().startswith("movenerf.tools.process_images: structure from "
                                        "motion needs pycolmap")
  assert done.stderr.strip().endswith("pip install 'movenerf[sfm]'")
  assert _leftovers(tmp_path, "scene") == []


def test_a_killed_runs_folder_is_removed(tmp_path, monkeypatch):
  src = _save(tmp_path / "photos", np.zeros((4, 16, 16, 3), np.uint8))
  monkeypatch.setattr(sfm, "reconstruct", _fake_reconstruct([True] * 4))
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True).stdout.strip()
  (tmp_path / f"scene.tmp-{dead}").mkdir()
  (tmp_path / f"scene.tmp-{os.getpid()}x").mkdir()  # not a run's folder: kept
  process_images.process(str(tmp_path / "scene"), images=str(src))
  assert _leftovers(tmp_path, "scene") == ["scene", f"scene.tmp-{os.getpid()}x"]
