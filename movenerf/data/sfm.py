"""Structure from motion with pycolmap, and its cameras in the LLFF layout.

:func:`reconstruct` runs COLMAP's incremental pipeline through ``pycolmap`` (imported
only when it runs; ``pip install 'movenerf[sfm]'``) on a folder of same-sized photos:
SIFT feature extraction into one shared camera, matching (exhaustive, or sequential for
video frames) and incremental mapping. It reports progress (stage, count, rate, ETA)
through a callback and returns a :class:`Reconstruction` in plain NumPy.

Settings. ``auto`` (the default) first runs COLMAP's defaults with one shared camera
(``fast``: enough for fern's 20 ``images_8`` photos), and when that leaves an image
unregistered, runs ``robust`` again from scratch: SIFT with affine shape and domain-size
pooling and up to 16384 features, guided matching, and a mapper that starts from 50 (not
100) inlier matches and registers an image from 15 (not 30) inliers. With the defaults
none of flower's 34 ``images_8`` photos register (3 with a camera per image); with
``robust`` all do, at several times the cost, most of it matching
(``benchmarks/sfm_cpu_2core.json`` has the figures).

LLFF layout. :func:`poses_bounds` writes what LLFF's ``imgs2poses.py`` writes
(``llff/poses/pose_utils.py``, ``load_colmap_data`` and ``save_poses``): per view a
row-major 3x5 ``[R | t | hwf]`` whose rotation columns are (down, right, backwards) —
COLMAP's camera axes (right, down, forward) reordered as (col1, col0, -col2) — with the
height, width and focal of the images SfM ran on, then near and far: the 0.1 and 99.9
percentiles (NumPy's linear interpolation, LLFF's ``np.percentile(zs, .1)`` and
``np.percentile(zs, 99.9)``) of the z-depths of the sparse points that view observes.
:func:`movenerf.data.formats.llff.read_llff` reads it back (and scales the focal to the
``images_K`` it reads); :func:`read_sparse` reads back the sparse points, with where
each view observed them (from COLMAP's model in ``sparse/0/``), for the camera check
(:mod:`movenerf.data.camera_check`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from movenerf.data import images as image_ops
from movenerf.data.formats import llff, record
from movenerf.geometry import alignment
from movenerf.validation import UsageError

MIN_IMAGES = 3
# COLMAP's camera models that LLFF's pinhole cameras can hold (distortion is estimated
# and then ignored, as LLFF does), each with its initial parameters for a known focal.
CAMERA_MODELS = {
    "SIMPLE_RADIAL": lambda f, w, h: (f, w / 2, h / 2, 0.0),
    "SIMPLE_PINHOLE": lambda f, w, h: (f, w / 2, h / 2),
    "PINHOLE": lambda f, w, h: (f, f, w / 2, h / 2),
    "RADIAL": lambda f, w, h: (f, w / 2, h / 2, 0.0, 0.0),
}
MATCHERS = ("auto", "exhaustive", "sequential")
# LLFF's near/far rule: these percentiles of the depths of the points a view observes.
NEAR_PERCENTILE, FAR_PERCENTILE = 0.1, 99.9

Log = Callable[[str], None]


class SfmError(RuntimeError):
  """Structure from motion failed on usable input (no overlap, too few registered)."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """One attempt's COLMAP settings (the rest are COLMAP's defaults)."""

  name: str
  max_num_features: int = 8192
  estimate_affine_shape: bool = False
  domain_size_pooling: bool = False
  guided_matching: bool = False
  init_min_num_inliers: int = 100
  abs_pose_min_num_inliers: int = 30

  def describe(self) -> str:
    return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                     if f.name != "name")


FAST = Settings("fast")
ROBUST = Settings("robust", max_num_features=16384, estimate_affine_shape=True,
                  domain_size_pooling=True, guided_matching=True,
                  init_min_num_inliers=50, abs_pose_min_num_inliers=15)
# A preset is the attempts made in turn until one registers every image.
PRESETS: dict[str, tuple[Settings, ...]] = {
    "auto": (FAST, ROBUST), "fast": (FAST,), "robust": (ROBUST,)}


@dataclasses.dataclass(frozen=True, eq=False)
class Reconstruction:
  """A reconstruction of the images ``names`` (all given, sorted); arrays over views
  are in that order, unregistered views hold NaN cameras."""

  names: tuple[str, ...]
  registered: np.ndarray  # [N] bool
  c2w: np.ndarray  # [N, 4, 4] float64, OpenCV (x right, y down, z forward)
  hwf: np.ndarray  # [N, 3] float64: height, width, focal (pixels)
  camera_model: str  # COLMAP's model name, e.g. SIMPLE_RADIAL
  camera_params: np.ndarray  # [N, P] COLMAP's parameters of each view's camera
  points: np.ndarray  # [P, 3] float64, world
  colors: np.ndarray  # [P, 3] uint8
  point_errors: np.ndarray  # [P] float64, mean reprojection error (pixels)
  visibility: np.ndarray  # [P, N] bool, point p observed in view i
  mean_reprojection_error: float  # pixels
  settings: str  # name of the Settings that produced it
  attempts: tuple[dict, ...]  # per attempt: settings, registered, seconds

  @property
  def num_registered(self) -> int:
    return int(self.registered.sum())

  @property
  def unregistered(self) -> list[str]:
    return [n for n, r in zip(self.names, self.registered) if not r]

  def subset(self, keep: np.ndarray) -> "Reconstruction":
    """The views ``keep`` ([N] bool) only (points seen by none of them are dropped)."""
    keep = np.asarray(keep, bool)
    vis = self.visibility[:, keep]
    seen = vis.any(1)
    return dataclasses.replace(
        self, names=tuple(n for n, k in zip(self.names, keep) if k),
        registered=self.registered[keep], c2w=self.c2w[keep], hwf=self.hwf[keep],
        camera_params=self.camera_params[keep], points=self.points[seen],
        colors=self.colors[seen], point_errors=self.point_errors[seen], visibility=vis[seen])


class Progress:
  """Progress lines ``stage: done/total unit, rate, ETA`` at most every ``every_s``
  seconds (and at the end)."""

  def __init__(self, log: Log, stage: str, total: int, unit: str, every_s: float = 2.0):
    self.log, self.stage, self.total, self.unit, self.every_s = log, stage, total, unit, every_s
    self.start = time.perf_counter()
    self.last = -math.inf
    self.done = 0

  def update(self, done: int, force: bool = False) -> None:
    self.done = done
    now = time.perf_counter()
    if not force and done < self.total and now - self.last < self.every_s:
      return
    self.last = now
    elapsed = now - self.start
    rate = done / elapsed if elapsed > 0 else 0.0
    if done >= self.total:
      tail = f"done in {_seconds(elapsed)}"
    elif rate > 0:
      tail = f"ETA {_seconds((self.total - done) / rate)}"
    else:
      tail = "ETA unknown"
    self.log(f"{self.stage}: {done}/{self.total} {self.unit}, {rate:.2f} {self.unit}/s, "
             f"{tail}")


def _seconds(s: float) -> str:
  return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


# --- input checks ---------------------------------------------------------------------

def list_images(folder) -> list[str]:
  """The image files in ``folder`` (the suffixes the LLFF reader reads), sorted by name.

  Raises:
    UsageError: no such folder, or fewer than :data:`MIN_IMAGES` images (named).
  """
  folder = Path(folder)
  if not folder.is_dir():
    raise UsageError(f"--images={folder}: no such folder")
  names = sorted(p.name for p in folder.iterdir()
                 if p.suffix in record.IMAGE_SUFFIXES and p.is_file())
  if len(names) < MIN_IMAGES:
    have = f" ({', '.join(names)})" if names else ""
    raise UsageError(f"{folder}: {len(names)} image{'s' if len(names) != 1 else ''}{have}; "
                     f"structure from motion needs at least {MIN_IMAGES}")
  return names


def check_same_size(folder, names: Sequence[str]) -> tuple[int, int]:
  """The common (width, height) of the images; reads only their headers.

  Raises:
    UsageError: an image that does not open, or two of different sizes (both named with
      their sizes).
  """
  folder = Path(folder)
  first = None
  for name in names:
    try:
      with Image.open(folder / name) as im:
        size = im.size
    except (OSError, ValueError) as e:
      raise UsageError(f"{folder / name}: not a readable image ({e})") from None
    if first is None:
      first = (name, size)
    elif size != first[1]:
      raise UsageError(
          f"mixed image sizes: {first[0]} is {first[1][0]}x{first[1][1]}, {name} is "
          f"{size[0]}x{size[1]} (WxH); give images of one size (one camera)")
  return first[1]


# --- pairs ------------------------------------------------------------------------------

def exhaustive_pairs(n: int) -> list[tuple[int, int]]:
  return [(i, j) for i in range(n) for j in range(i + 1, n)]


def sequential_pairs(n: int, overlap: int = 10) -> list[tuple[int, int]]:
  """Each frame with its ``overlap`` successors and, like COLMAP's quadratic overlap,
  with the frames ``2^k`` after it (k < ``overlap``)."""
  pairs = set()
  for i in range(n):
    for j in range(i + 1, min(n, i + overlap + 1)):
      pairs.add((i, j))
    for k in range(overlap):
      if i + 2**k < n:
        pairs.add((i, i + 2**k))
  return sorted(pairs)


# --- the pipeline -----------------------------------------------------------------------

def _import_pycolmap():
  try:
    import pycolmap  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"structure from motion needs pycolmap ({e}): pip install "
                      "'movenerf[sfm]'", name="pycolmap") from e
  return pycolmap


def _attempt(pycolmap, image_dir: Path, names: Sequence[str], work: Path,
             settings: Settings, pairs: Sequence[tuple[int, int]], num_threads: int,
             seed: int, log: Log, focal: float | None = None,
             camera_model: str = "SIMPLE_RADIAL"):
  """One extraction + matching + mapping; returns the largest model (or None)."""
  if work.exists():
    shutil.rmtree(work)
  work.mkdir(parents=True)
  db = work / "database.db"
  pycolmap.Database.open(str(db)).close()
  # One shared camera for all images, created at import.
  reader = pycolmap.ImageReaderOptions()
  reader.camera_model = camera_model
  if focal is not None:  # a known focal: COLMAP keeps it
    width, height = check_same_size(image_dir, names[:1])
    reader.camera_params = ",".join(map(str, CAMERA_MODELS[camera_model](focal, width,
                                                                         height)))
  pycolmap.import_images(str(db), str(image_dir), camera_mode=pycolmap.CameraMode.SINGLE,
                         image_names=list(names), options=reader)
  ext = pycolmap.FeatureExtractionOptions()
  ext.num_threads = num_threads
  ext.sift.max_num_features = settings.max_num_features
  ext.sift.estimate_affine_shape = settings.estimate_affine_shape
  ext.sift.domain_size_pooling = settings.domain_size_pooling
  progress = Progress(log, f"[{settings.name}] features", len(names), "images")
  for i, name in enumerate(names):
    pycolmap.extract_features(str(db), str(image_dir), image_names=[name],
                              camera_mode=pycolmap.CameraMode.SINGLE,
                              extraction_options=ext, device=pycolmap.Device.cpu)
    progress.update(i + 1)

  match = pycolmap.FeatureMatchingOptions()
  match.num_threads = num_threads
  match.guided_matching = settings.guided_matching
  pair_file = work / "pairs.txt"
  chunk = max(1, math.ceil(len(pairs) / 12))
  progress = Progress(log, f"[{settings.name}] matching", len(pairs), "pairs")
  for start in range(0, len(pairs), chunk):
    part = pairs[start:start + chunk]
    pair_file.write_text("".join(f"{names[i]} {names[j]}\n" for i, j in part))
    pairing = pycolmap.ImportedPairingOptions()
    pairing.match_list_path = str(pair_file)
    pycolmap.match_image_pairs(str(db), matching_options=match, pairing_options=pairing,
                               device=pycolmap.Device.cpu)
    progress.update(start + len(part))

  pipe = pycolmap.IncrementalPipelineOptions()
  pipe.num_threads = num_threads
  pipe.random_seed = seed
  pipe.extract_colors = True
  pipe.mapper.init_min_num_inliers = settings.init_min_num_inliers
  pipe.mapper.abs_pose_min_num_inliers = settings.abs_pose_min_num_inliers
  if focal is not None:
    pipe.ba_refine_focal_length = False
    pipe.mapper.abs_pose_refine_focal_length = False
  progress = Progress(log, f"[{settings.name}] mapping", len(names), "images registered")
  count = [0]

  def initial_pair() -> None:
    count[0] = 2
    progress.update(2)

  def next_image() -> None:
    count[0] += 1
    progress.update(min(count[0], len(names)))

  sparse = work / "sparse"
  sparse.mkdir()
  models = pycolmap.incremental_mapping(str(db), str(image_dir), str(sparse), options=pipe,
                                        initial_image_pair_callback=initial_pair,
                                        next_image_callback=next_image)
  if not models:
    return None
  best = max(models.values(), key=lambda m: (m.num_reg_images(), m.num_points3D()))
  if progress.done != best.num_reg_images():
    progress.update(best.num_reg_images(), force=True)
  return best


def _to_numpy(pycolmap_model, names: Sequence[str], settings: str,
              attempts: Sequence[dict]) -> Reconstruction:
  n = len(names)
  index = {name: i for i, name in enumerate(names)}
  registered = np.zeros(n, bool)
  c2w = np.full([n, 4, 4], np.nan)
  hwf = np.full([n, 3], np.nan)
  model_name = ""
  params = None
  image_index = {}
  for image_id, image in pycolmap_model.images.items():
    if image.name not in index or not image.has_pose:
      continue
    i = index[image.name]
    image_index[image_id] = i
    pose = image.cam_from_world()
    rot = np.asarray(pose.rotation.matrix(), np.float64)
    centre = -rot.T @ np.asarray(pose.translation, np.float64)
    c2w[i] = np.eye(4)
    c2w[i, :3, :3] = rot.T
    c2w[i, :3, 3] = centre
    camera = pycolmap_model.cameras[image.camera_id]
    hwf[i] = (camera.height, camera.width, camera.mean_focal_length())
    model_name = camera.model.name
    if params is None:
      params = np.full([n, len(camera.params)], np.nan)
    params[i] = np.asarray(camera.params, np.float64)
    registered[i] = True
  point_ids = sorted(pycolmap_model.points3D.keys())
  pts = np.zeros([len(point_ids), 3])
  colors = np.zeros([len(point_ids), 3], np.uint8)
  errors = np.zeros([len(point_ids)])
  vis = np.zeros([len(point_ids), n], bool)
  for p, pid in enumerate(point_ids):
    point = pycolmap_model.points3D[pid]
    pts[p] = point.xyz
    colors[p] = point.color
    errors[p] = point.error
    for element in point.track.elements:
      if element.image_id in image_index:
        vis[p, image_index[element.image_id]] = True
  return Reconstruction(
      names=tuple(names), registered=registered, c2w=c2w, hwf=hwf,
      camera_model=model_name,
      camera_params=params if params is not None else np.zeros([n, 0]),
      points=pts, colors=colors, point_errors=errors, visibility=vis,
      mean_reprojection_error=float(pycolmap_model.compute_mean_reprojection_error()),
      settings=settings, attempts=tuple(attempts))


def reconstruct(image_dir, work_dir, names: Sequence[str] | None = None,
                preset: str = "auto", matcher: str = "exhaustive", overlap: int = 10,
                num_threads: int = -1, seed: int = 0, log: Log = print,
                keep_model: Path | None = None, focal: float | None = None,
                camera_model: str = "SIMPLE_RADIAL") -> Reconstruction:
  """Structure from motion on the images ``names`` of ``image_dir``.

  Args:
    image_dir: folder of the images (one size).
    work_dir: a folder for COLMAP's database and models (created; left for the caller
      to remove).
    names: the image file names (default: :func:`list_images`); sorted.
    preset: a key of :data:`PRESETS`; ``auto`` retries with ``robust`` settings when
      the ``fast`` ones leave an image unregistered.
    matcher: ``exhaustive`` (every pair) or ``sequential`` (neighbours in name order,
      ``overlap`` of them, for video frames).
    num_threads: threads of each stage (-1: all cores).
    seed: COLMAP's random seed (the mapper's RANSAC and image choices).
    log: receives progress lines.
    focal: the focal length in pixels of the images, when known (e.g. from EXIF or a
      calibration); None: COLMAP estimates it (from 1.2 x the larger side).
    camera_model: COLMAP's camera model, a key of :data:`CAMERA_MODELS`
      (``SIMPLE_RADIAL``, LLFF's: one focal and one radial distortion term).
    keep_model: where to write the chosen COLMAP model (binary ``cameras.bin``,
      ``images.bin``, ``points3D.bin``); None: not written.

  Returns:
    The attempt that registered the most images (with the most points on a tie).
  Raises:
    UsageError: fewer than 3 images, mixed sizes, an unknown preset or matcher.
    SfmError: no attempt reconstructed anything (no overlap between the images).
  """
  image_dir = Path(image_dir)
  work_dir = Path(work_dir)
  names = sorted(names) if names is not None else list_images(image_dir)
  if len(names) < MIN_IMAGES:
    raise UsageError(f"{image_dir}: {len(names)} images; structure from motion needs at "
                     f"least {MIN_IMAGES}")
  check_same_size(image_dir, names)
  if preset not in PRESETS:
    raise UsageError(f"preset={preset!r}: choose from {', '.join(map(repr, PRESETS))}")
  if focal is not None and not (math.isfinite(focal) and focal > 0):
    raise UsageError(f"focal={focal}: give a positive focal length in pixels")
  if camera_model not in CAMERA_MODELS:
    raise UsageError(f"camera_model={camera_model!r}: choose from "
                     f"{', '.join(map(repr, CAMERA_MODELS))}")
  if matcher not in ("exhaustive", "sequential"):
    raise UsageError(f"matcher={matcher!r}: choose from 'exhaustive', 'sequential'")
  pycolmap = _import_pycolmap()
  pycolmap.logging.minloglevel = 3  # COLMAP's own log: fatal only (errors are raised here)
  pycolmap.set_random_seed(seed)
  pairs = (exhaustive_pairs(len(names)) if matcher == "exhaustive"
           else sequential_pairs(len(names), overlap))
  best, best_key, attempts = None, None, []
  for k, settings in enumerate(PRESETS[preset]):
    start = time.perf_counter()
    log(f"structure from motion, {settings.name} settings ({settings.describe()}): "
        f"{len(names)} images, {len(pairs)} {matcher} pairs")
    model = _attempt(pycolmap, image_dir, names, work_dir / settings.name, settings, pairs,
                     num_threads, seed, log, focal, camera_model)
    seconds = time.perf_counter() - start
    registered = model.num_reg_images() if model is not None else 0
    attempts.append(dict(settings=settings.name, registered=registered, given=len(names),
                         seconds=round(seconds, 2)))
    log(f"[{settings.name}] registered {registered} of {len(names)} images in "
        f"{_seconds(seconds)}")
    if model is not None:
      key = (registered, model.num_points3D())
      if best_key is None or key > best_key:
        best, best_key = (model, settings.name), key
    if registered == len(names):
      break
    if k + 1 < len(PRESETS[preset]):
      log(f"retrying with {PRESETS[preset][k + 1].name} settings (slower)")
  if best is None:
    raise SfmError(f"structure from motion reconstructed nothing from the {len(names)} "
                   f"images of {image_dir}: no two images share enough matched features "
                   "(do the photos overlap?)")
  model, name = best
  if keep_model is not None:
    Path(keep_model).mkdir(parents=True, exist_ok=True)
    model.write_binary(str(keep_model))
  return _to_numpy(model, names, name, attempts)


# --- the LLFF layout --------------------------------------------------------------------

def opencv_to_llff(c2w) -> np.ndarray:
  """OpenCV [N, 4, 4] (or [N, 3, 4]) c2w -> LLFF [N, 3, 4] (columns down, right, back);
  the inverse of :func:`movenerf.data.formats.llff.llff_to_opencv`."""
  c2w = np.asarray(c2w, np.float64)
  return np.stack([c2w[:, :3, 1], c2w[:, :3, 0], -c2w[:, :3, 2], c2w[:, :3, 3]], axis=-1)


def view_bounds(c2w, points, visibility) -> np.ndarray:
  """[N, 2] near/far per view by LLFF's rule: the 0.1 and 99.9 percentiles of the
  camera-frame z-depths of the points the view observes.

  A view that observes no point gets the percentiles of every observed depth of every
  view (LLFF would fail there).

  Raises:
    SfmError: no point at all is observed in front of a camera.
  """
  c2w = np.asarray(c2w, np.float64)
  points = np.asarray(points, np.float64)
  visibility = np.asarray(visibility, bool)
  # z[p, i] = (X_p - c_i) . forward_i
  z = np.einsum("pni,ni->pn", points[:, None, :] - c2w[None, :, :3, 3], c2w[:, :3, 2])
  seen = z[visibility & (z > 0)]
  if seen.size == 0:
    raise SfmError("no sparse point lies in front of a camera that observes it")
  fallback = np.percentile(seen, [NEAR_PERCENTILE, FAR_PERCENTILE])
  bounds = np.empty([len(c2w), 2])
  for i in range(len(c2w)):
    zs = z[visibility[:, i], i]
    zs = zs[zs > 0]
    bounds[i] = (np.percentile(zs, [NEAR_PERCENTILE, FAR_PERCENTILE]) if zs.size
                 else fallback)
  return bounds


def poses_bounds(rec: Reconstruction) -> np.ndarray:
  """The registered views of ``rec`` as LLFF's ``poses_bounds.npy`` array [N, 17]."""
  keep = rec.registered
  if not keep.all():
    rec = rec.subset(keep)
  llff = opencv_to_llff(rec.c2w)  # [N, 3, 4]
  mats = np.concatenate([llff, rec.hwf[:, :, None]], axis=-1)  # [N, 3, 5]
  bounds = view_bounds(rec.c2w, rec.points, rec.visibility)
  return np.concatenate([mats.reshape(len(mats), 15), bounds], axis=1)


def _png_name(name: str) -> str:
  return os.path.splitext(name)[0] + ".png"


def write_llff(out_dir, image_dir, rec: Reconstruction, downscale: int = 1) -> dict:
  """Writes the registered views of ``rec`` as an LLFF scene in ``out_dir``.

  ``images/`` (the images SfM ran on, copied), ``images_{downscale}/`` (area-averaged
  PNGs; when ``downscale`` > 1), ``poses_bounds.npy`` (hwf of ``images/``, as LLFF's) and
  ``sparse/``: ``points3D.npy`` [P, 3] float64, ``colors.npy`` [P, 3] uint8,
  ``errors.npy`` [P] (reprojection error, pixels), ``visibility.npy`` [P, N] bool (point p
  observed in view i, views in file-name order: the rows of ``poses_bounds.npy``).

  Returns:
    What was written: ``{"views", "near", "far", "focal", "focal_downscaled"}``.
  """
  out_dir, image_dir = Path(out_dir), Path(image_dir)
  if not rec.registered.all():
    rec = rec.subset(rec.registered)
  pb = poses_bounds(rec)
  (out_dir / "images").mkdir(parents=True, exist_ok=True)
  for name in rec.names:
    if (image_dir / name).resolve() != (out_dir / "images" / name).resolve():
      shutil.copyfile(image_dir / name, out_dir / "images" / name)
  focal_k = None
  if downscale > 1:
    small = [_png_name(n) for n in rec.names]
    if sorted(small) != small or len(set(small)) != len(small):
      raise UsageError(f"--downscale={downscale}: the images' names do not sort the same "
                       "as PNGs (e.g. a.jpg and a.png): rename them")
    folder = out_dir / f"images_{downscale}"
    folder.mkdir()
    for name, png in zip(rec.names, small):
      with Image.open(image_dir / name) as im:
        rgb = np.asarray(im.convert("RGB"))
      Image.fromarray(image_ops.downscale_image(rgb, downscale)).save(folder / png)
    w_small = rgb.shape[1] // downscale
    focal_k = (pb[:, 14] * w_small / pb[:, 9]).tolist()
  np.save(out_dir / "poses_bounds.npy", pb)
  sparse = out_dir / "sparse"
  sparse.mkdir(exist_ok=True)
  np.save(sparse / "points3D.npy", rec.points)
  np.save(sparse / "colors.npy", rec.colors)
  np.save(sparse / "errors.npy", rec.point_errors)
  np.save(sparse / "visibility.npy", rec.visibility)
  return dict(views=len(rec.names), near=float(pb[:, 15].min()), far=float(pb[:, 16].max()),
              focal=pb[:, 14].tolist(), focal_downscaled=focal_k)


def llff_cameras(pb) -> np.ndarray:
  """The cameras of a ``poses_bounds`` array [N, 17] as OpenCV c2w [N, 4, 4]."""
  pb = np.asarray(pb, np.float64)
  return llff.llff_to_opencv(pb[:, :15].reshape(-1, 3, 5)[:, :, :4])


def compare_poses_bounds(pb, pb_ref) -> alignment.PoseErrors:
  """Errors of the cameras of ``pb`` against those of ``pb_ref`` (``poses_bounds``
  arrays of the same views in the same order) after a similarity alignment of the
  centres: :func:`movenerf.geometry.alignment.pose_errors`."""
  return alignment.pose_errors(llff_cameras(pb), llff_cameras(pb_ref))


# --- the sparse points of a written scene ------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class SparsePoints:
  """The sparse points of a scene :func:`write_llff` wrote, for its views in file-name
  order (the rows of ``poses_bounds.npy``)."""

  points: np.ndarray  # [P, 3] float64, world
  visibility: np.ndarray  # [P, N] bool, point p observed in view i
  # [P, N, 2] float64 where each view observed each point, in pixels of images of
  # ``image_size`` (the library's integer pixel centres); NaN where it did not. None when
  # the scene has no COLMAP model (``sparse/0/``) or pycolmap is not installed.
  observations: np.ndarray | None


def read_sparse(scene_dir, image_size: tuple[int, int] | None = None
                ) -> SparsePoints | None:
  """The sparse points of an LLFF-layout scene (``sparse/points3D.npy`` and
  ``visibility.npy``), or None when it has none.

  Args:
    scene_dir: the scene folder.
    image_size: (width, height) of the images the observations are wanted for (e.g. an
      ``images_K/`` folder; default: the images structure from motion ran on).

  The observations come from COLMAP's model in ``sparse/0/`` (read with pycolmap; its
  registered images sorted by name are the views; its points are found among
  ``points3D.npy``'s by their coordinates), scaled to ``image_size``.

  Raises:
    ValueError: the files disagree in their number of points.
  """
  sparse = Path(scene_dir) / "sparse"
  if not (sparse / "points3D.npy").is_file() or not (sparse / "visibility.npy").is_file():
    return None
  points = np.load(sparse / "points3D.npy", allow_pickle=False).astype(np.float64)
  visibility = np.load(sparse / "visibility.npy", allow_pickle=False).astype(bool)
  if points.ndim != 2 or points.shape[1] != 3 or visibility.shape[0] != len(points):
    raise ValueError(f"{sparse}: points3D.npy {points.shape} and visibility.npy "
                     f"{visibility.shape} do not describe the same [P, 3] points")
  observations = None
  if (sparse / "0").is_dir():
    try:
      pycolmap = _import_pycolmap()
    except ImportError:
      pycolmap = None
    if pycolmap is not None:
      observations = _observations(pycolmap, sparse / "0", points, visibility.shape[1],
                                   image_size)
  return SparsePoints(points, visibility, observations)


def _observations(pycolmap, model_dir: Path, points: np.ndarray, num_views: int,
                  image_size: tuple[int, int] | None) -> np.ndarray | None:
  """[P, N, 2] observed pixels of ``points`` from a COLMAP model (None when its
  registered images are not ``num_views``)."""
  model = pycolmap.Reconstruction(str(model_dir))
  images = sorted((image for image in model.images.values() if image.has_pose),
                  key=lambda image: image.name)
  if len(images) != num_views:
    return None
  row = {points[p].tobytes(): p for p in range(len(points))}
  out = np.full([len(points), num_views, 2], np.nan)
  for view, image in enumerate(images):
    camera = model.cameras[image.camera_id]
    scale = (np.array([image_size[0] / camera.width, image_size[1] / camera.height])
             if image_size is not None else np.ones(2))
    for point2d in image.points2D:
      if not point2d.has_point3D():
        continue
      xyz = np.asarray(model.points3D[point2d.point3D_id].xyz, np.float64)
      p = row.get(xyz.tobytes())
      if p is not None:
        # COLMAP's pixel centres are at half-integers, the library's at integers.
        out[p, view] = np.asarray(point2d.xy, np.float64) * scale - 0.5
  return out
