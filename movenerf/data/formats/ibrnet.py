"""Readers for the IBRNet / GNT training collection (pure NumPy + Pillow).

Each reader returns a :class:`movenerf.data.formats.record.SceneRecord` in the library's
camera convention (OpenCV camera frame, 3x3 pinhole intrinsics for the stored image size, 4x4
camera-to-world float32, integer pixel coordinates at pixel centres, per-view near/far).

Formats, as read by IBRNet's ``ibrnet/data_loaders`` (GNT's ``gnt/data_loaders`` are copies):

* ``google_scanned_objects``: ``rgb/*.png`` + ``pose/*.txt`` + ``intrinsics/*.txt``
  (``google_scanned_objects.py``).
* ``ibrnet_collected``: LLFF layout (``ibrnet_collected.py``, ``llff_data_utils.py``).
* ``realestate10k``: ``{mode}/frames/{scene}/{timestamp}.png`` +
  ``{mode}/cameras/{scene}.txt`` (``realestate.py``).
* ``spaces``: Spaces (DeepView) ``models.json`` + ``cam_XX/image_YYY.JPG``
  (``spaces_dataset.py``, adapted from Google's ``spaces_dataset/code/utils.py``).

Where IBRNet's numbers differ from the library convention (principal points stored with
pixel centres at half-integers), the conversion is documented on the reader. Readers only
read; malformed input raises ``ValueError`` or ``FileNotFoundError`` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from movenerf.data import samplers
from movenerf.data.formats import llff, record
from movenerf.data.images import downscale_image
from movenerf.geometry import cameras

# Google Scanned Objects (google_scanned_objects.py): objects fit a ball of this radius
# around the world origin, and near is never closer than this fraction of the origin depth.
GSO_MAX_RADIUS = 0.5 * math.sqrt(2.0) * 1.1
GSO_MIN_NEAR_RATIO = 0.1
# RealEstate10K and Spaces: IBRNet uses one fixed depth range for every view.
REALESTATE_NEAR, REALESTATE_FAR = 1.0, 100.0
SPACES_NEAR, SPACES_FAR = 1.0, 100.0
# IBRNet-collected: the scene-wide bounds range, widened (ibrnet_collected.py).
COLLECTED_NEAR_SCALE, COLLECTED_FAR_SCALE = 0.9, 1.5
# Image folder factor per collection: ibrnet_collected_2 ships images_8, the rest images_2.
COLLECTED_2_NAME = "ibrnet_collected_2"
COLLECTED_2_FACTOR, COLLECTED_1_FACTOR = 8, 2
# Below this angle (radians) a Spaces orientation is the identity, as in Google's utils.py.
_SPACES_MIN_ANGLE = 1e-7
# Rotation blocks further than this from orthonormal are rejected (text files carry ~6+
# significant digits, so real poses are far inside it).
_RIGID_TOL = 1e-2
_MIXED_SIZE_MODES = ("error", "crop", "pad")


# ----------------------------------------------------------------------------- helpers


def _check_downsample(downsample) -> int:
  if isinstance(downsample, bool) or int(downsample) != downsample or downsample < 1:
    raise ValueError(f"downsample must be a positive integer, got {downsample!r}")
  return int(downsample)


def _read_numbers(path: Path, sizes: Sequence[int], what: str) -> np.ndarray:
  """Whitespace-separated numbers of a text file -> [K] float64, K one of ``sizes``."""
  if not path.is_file():
    raise FileNotFoundError(f"{what} file not found: {path}")
  try:
    values = np.array([float(t) for t in path.read_text().split()], np.float64)
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: cannot parse {what} as numbers ({e})") from e
  if values.size not in sizes:
    raise ValueError(f"{path}: {what} has {values.size} numbers, expected one of "
                     f"{tuple(sizes)}")
  if not np.all(np.isfinite(values)):
    raise ValueError(f"{path}: {what} contains NaN or inf")
  return values


def _check_rigid(mat: np.ndarray, where: str) -> None:
  """Raises ValueError unless ``mat`` [4, 4] is a rotation + translation."""
  if not np.allclose(mat[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
    raise ValueError(f"{where}: last row must be [0, 0, 0, 1], got {mat[3].tolist()}")
  rot = mat[:3, :3]
  if (not np.allclose(rot @ rot.T, np.eye(3), atol=_RIGID_TOL)
      or np.linalg.det(rot) <= 0.0):
    raise ValueError(f"{where}: rotation block is not a proper rotation (orthonormal, det +1)")


def _load_rgb(path: Path, downsample: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Reads an image -> ([H', W', 3] uint8 after downsampling, (H, W) as stored)."""
  arr = record.load_image(path)
  hw = arr.shape[:2]
  if downsample > 1:
    if hw[0] < downsample or hw[1] < downsample:
      raise ValueError(f"{path}: size {hw[1]}x{hw[0]} too small for downsample={downsample}")
    arr = downscale_image(arr, downsample)
  # Alpha, if any, is dropped: IBRNet feeds the stored colour channels unchanged.
  return record.to_rgb(arr), hw


def _pixel_intrinsics(fx: float, fy: float, cx: float, cy: float,
                      half_pixel_shift: bool) -> np.ndarray:
  """[3, 3] intrinsics from a principal point in edge coordinates (pixel i spans [i, i+1]).

  With ``half_pixel_shift`` the principal point moves by -0.5 px into the library's
  integer-centre coordinates; without it the values are kept as IBRNet keeps them.
  """
  shift = 0.5 if half_pixel_shift else 0.0
  return cameras.pinhole_intrinsics(fx, fy, cx - shift, cy - shift)


def _fit_common_size(images: list[np.ndarray], ks: list[np.ndarray], paths: list[Path],
                     mode: str, source: Path) -> np.ndarray:
  """Stacks images of possibly different sizes; shifts ``ks`` in place for crop / pad.

  Offsets are whole pixels, so the principal-point shift is exact.
  """
  if mode == "error":
    try:
      return record.stack_same_size(images, paths)
    except ValueError as e:
      raise ValueError(f"{source}: {e}; pass mixed_sizes='crop' or 'pad' to read it") from e
  sizes = np.array([im.shape[:2] for im in images])
  h, w = (sizes.min(0) if mode == "crop" else sizes.max(0)).tolist()
  out = np.zeros([len(images), h, w, 3], np.uint8)
  for i, im in enumerate(images):
    ih, iw = im.shape[:2]
    if mode == "crop":
      top, left = (ih - h) // 2, (iw - w) // 2
      out[i] = im[top:top + h, left:left + w]
      ks[i][0, 2] -= left
      ks[i][1, 2] -= top
    else:
      # Centred zero padding, as IBRNet pads Spaces source views to a common size.
      top, left = (h - ih) // 2, (w - iw) // 2
      out[i, top:top + ih, left:left + iw] = im
      ks[i][0, 2] += left
      ks[i][1, 2] += top
  return out


# ----------------------------------------------------------------------------- GSO


def read_google_scanned_objects(scene_dir, downsample: int = 1) -> record.SceneRecord:
  """Reads one Google Scanned Objects scene as rendered for IBRNet.

  Layout (IBRNet ``data_loaders/google_scanned_objects.py``)::

    {scene}/rgb/{name}.png          RGB renders (alpha, if present, is dropped)
    {scene}/pose/{name}.txt         16 numbers: row-major 4x4 camera-to-world
    {scene}/intrinsics/{name}.txt   16 numbers (row-major 4x4, pinhole in the top-left 3x3)
                                    or 9 numbers (3x3), in pixels for the stored image

  Files pair by name (IBRNet derives the pose / intrinsics path from the rgb path). The
  poses are used directly by IBRNet's projector (``K @ inv(c2w) @ X``, a point is valid
  when its camera z > 0), so they already are OpenCV camera-to-world and are kept as is;
  the intrinsics too. Near/far follow IBRNet: with ``d = inv(c2w)[2, 3]`` the z-depth of
  the world origin (the object centre), ``near = max(d - r, 0.1 * d)`` and ``far = d + r``
  with ``r = 0.5 * sqrt(2) * 1.1``. (IBRNet also skips scenes with fewer than 250 views
  when building its training list; this reader reads any number.) All views are "train".

  Args:
    scene_dir: the scene folder.
    downsample: positive integer; images are box-averaged
      (:func:`~movenerf.data.images.downscale_image`) and intrinsics scaled with
      ``samplers.scale_intrinsics_for``.

  Returns:
    SceneRecord with views in rgb file-name order.
  """
  scene_dir = record.check_scene_dir(scene_dir)
  downsample = _check_downsample(downsample)
  rgb_files = record.list_images(scene_dir / "rgb")

  images, ks, c2ws, near, far = [], [], [], [], []
  for path in rgb_files:
    pose_path = scene_dir / "pose" / (path.stem + ".txt")
    k_path = scene_dir / "intrinsics" / (path.stem + ".txt")
    pose = _read_numbers(pose_path, (16,), "pose").reshape(4, 4)
    _check_rigid(pose, str(pose_path))
    k_vals = _read_numbers(k_path, (9, 16), "intrinsics")
    k = k_vals.reshape(3, 3) if k_vals.size == 9 else k_vals.reshape(4, 4)[:3, :3]
    if not np.allclose(k[2], [0.0, 0.0, 1.0]) or k[0, 0] <= 0 or k[1, 1] <= 0:
      raise ValueError(f"{k_path}: not a pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] "
                       f"with positive focal lengths: {k.tolist()}")
    rgb, hw = _load_rgb(path, downsample)
    images.append(rgb)
    ks.append(samplers.scale_intrinsics_for(k, hw, rgb.shape[:2]))
    c2ws.append(pose)
    # z of the world origin in camera coordinates: row 2 of w2c applied to (0, 0, 0, 1).
    depth = float(np.linalg.inv(pose)[2, 3])
    if depth <= 0.0:
      raise ValueError(f"{pose_path}: the world origin (object centre) is behind the camera "
                       f"(z = {depth:.4g}), so IBRNet's depth range is undefined")
    near.append(max(depth - GSO_MAX_RADIUS, GSO_MIN_NEAR_RATIO * depth))
    far.append(depth + GSO_MAX_RADIUS)

  n = len(images)
  rec = record.SceneRecord(
      scene_id=scene_dir.name,
      images=record.stack_same_size(images, rgb_files),
      intrinsics=np.stack(ks).astype(np.float32),
      c2w=np.stack(c2ws).astype(np.float32),
      near=np.asarray(near, np.float32),
      far=np.asarray(far, np.float32),
      split=np.full([n], "train", dtype="<U5"))
  return record.check_record(rec, scene_dir)


# ----------------------------------------------------------------------------- collected


def read_ibrnet_collected(scene_dir, factor: int | None = None,
                          llffhold: int = 0) -> record.SceneRecord:
  """Reads an IBRNet-collected scene (LLFF layout: ``poses_bounds.npy`` + ``images_{factor}``).

  Cameras and images come from :func:`movenerf.data.formats.llff.read_llff` (original COLMAP
  frame, principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)``). IBRNet
  (``data_loaders/ibrnet_collected.py`` via ``llff_data_utils.load_llff_data``) instead
  rescales the world by ``1 / (0.75 * min(bounds))``, recentres the poses and puts the
  principal point at ``(W / 2, H / 2)``; the first two are a similarity transform of the
  world (geometry and depth ratios unchanged), the last a half-pixel shift. Differences
  from plain :func:`~movenerf.data.formats.llff.read_llff`:

  * folder factor: IBRNet reads ``images_8`` for scenes under ``ibrnet_collected_2/`` and
    ``images_2`` for all others (``ibrnet_collected_1/``);
  * near/far: one range for the whole scene, ``0.9 * min(bounds)`` to
    ``1.5 * max(bounds)`` over every view's bounds (in the unscaled COLMAP units);
  * split: IBRNet trains on every view, so all views are "train" by default.

  Args:
    scene_dir: scene folder, e.g. ``.../ibrnet_collected_1/{scene}``.
    factor: image folder factor; None or 0 picks IBRNet's: 8 if a folder named
      ``ibrnet_collected_2`` is on the scene's path, else 2.
    llffhold: > 0 marks every ``llffhold``-th view "test" (IBRNet's evaluation mode).

  Returns:
    SceneRecord with views in file-name order.
  """
  scene_dir = record.check_scene_dir(scene_dir)
  if not factor:
    in_second = COLLECTED_2_NAME in scene_dir.resolve().parts
    factor = COLLECTED_2_FACTOR if in_second else COLLECTED_1_FACTOR
  rec = llff.read_llff(scene_dir, factor=factor, llffhold=llffhold)
  bounds = np.concatenate([rec.near, rec.far]).astype(np.float64)
  n = rec.num_views
  rec = dataclasses.replace(
      rec,
      near=np.full([n], COLLECTED_NEAR_SCALE * bounds.min(), np.float32),
      far=np.full([n], COLLECTED_FAR_SCALE * bounds.max(), np.float32))
  return record.check_record(rec, scene_dir / "poses_bounds.npy")


# ----------------------------------------------------------------------------- RealEstate10K


_REALESTATE_COLUMNS = 19  # timestamp, fx fy cx cy, 2 distortion placeholders, 3x4 w2c


def _parse_realestate_cameras(path: Path) -> dict[int, np.ndarray]:
  """Camera file -> {timestamp: [18] float64 (fx fy cx cy k1 k2 then the 3x4 w2c)}."""
  if not path.is_file():
    raise FileNotFoundError(f"camera file not found: {path}")
  try:
    lines = path.read_text().splitlines()
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not a text file ({e})") from e
  cams = {}
  for i, line in enumerate(lines):
    tokens = line.split()
    if not tokens:
      continue
    if i == 0 and len(tokens) != _REALESTATE_COLUMNS:
      continue  # the first line is the source video URL (IBRNet skips it unread)
    if len(tokens) != _REALESTATE_COLUMNS:
      raise ValueError(f"{path}:{i + 1}: expected {_REALESTATE_COLUMNS} numbers (timestamp, "
                       f"fx fy cx cy, 2 distortion, 3x4 world-to-camera), got {len(tokens)}")
    try:
      stamp = int(tokens[0])
      values = np.array([float(t) for t in tokens[1:]], np.float64)
    except ValueError as e:
      raise ValueError(f"{path}:{i + 1}: cannot parse camera line ({e})") from e
    if not np.all(np.isfinite(values)):
      raise ValueError(f"{path}:{i + 1}: camera line contains NaN or inf")
    if stamp in cams:
      raise ValueError(f"{path}:{i + 1}: duplicate timestamp {stamp}")
    cams[stamp] = values
  if not cams:
    raise ValueError(f"empty scene: no camera lines in {path}")
  return cams


def _default_camera_file(scene_dir: Path) -> Path:
  """``{mode}/frames/{scene}`` -> ``{mode}/cameras/{scene}.txt``, as IBRNet derives it."""
  if scene_dir.parent.name != "frames":
    raise ValueError(f"{scene_dir}: not inside a 'frames' folder; pass camera_file explicitly")
  return scene_dir.parent.parent / "cameras" / (scene_dir.name + ".txt")


def read_realestate10k(scene_dir, camera_file=None, downsample: int = 1, split: str = "train",
                       half_pixel_shift: bool = True) -> record.SceneRecord:
  """Reads one RealEstate10K clip in IBRNet's layout.

  Layout (IBRNet ``data_loaders/realestate.py``, ``RealEstate10K-subset/``)::

    {mode}/frames/{scene}/{timestamp}.png    one frame per camera timestamp (integer name)
    {mode}/cameras/{scene}.txt               the clip's camera file

  Camera file: the first line is the video URL; every other line is
  ``timestamp fx fy cx cy k1 k2 P`` with ``fx, cx`` divided by the image width, ``fy, cy``
  by the height, ``k1 k2`` unused placeholders and ``P`` the row-major 3x4
  world-to-camera matrix (OpenCV camera frame, used directly by IBRNet's projector).
  Camera lines without a frame are ignored; a frame without a camera line is an error.

  Conversion: ``c2w = inv(P)``; intrinsics are unnormalised with the image size as stored
  (after ``downsample``). IBRNet first resizes every frame to 450x800 and multiplies by
  that size; here ``cx = cx_n * W - 0.5`` (``half_pixel_shift``): normalised coordinates
  span the image edges, so the image centre ``cx_n = 0.5`` is pixel ``(W - 1) / 2`` with
  integer pixel centres. Near/far are IBRNet's fixed 1 and 100.

  Args:
    scene_dir: the frames folder of one clip.
    camera_file: the clip's camera file; default derived from ``scene_dir`` as IBRNet does.
    downsample: positive integer; frames are box-averaged
      (:func:`~movenerf.data.images.downscale_image`).
    split: split name given to every view (IBRNet splits by the ``{mode}`` folder).
    half_pixel_shift: False keeps IBRNet's ``cx_n * W`` (half a pixel off).

  Returns:
    SceneRecord with views in timestamp order.
  """
  scene_dir = record.check_scene_dir(scene_dir)
  downsample = _check_downsample(downsample)
  camera_file = _default_camera_file(scene_dir) if camera_file is None else Path(camera_file)
  cams = _parse_realestate_cameras(camera_file)
  files = record.list_images(scene_dir)
  stamps = []
  for p in files:
    try:
      stamps.append(int(p.stem))
    except ValueError as e:
      raise ValueError(f"{p}: frame name must be an integer timestamp") from e
  order = np.argsort(np.asarray(stamps, np.int64), kind="stable")
  files = [files[i] for i in order]
  stamps = [stamps[i] for i in order]

  images, ks, c2ws = [], [], []
  for path, stamp in zip(files, stamps):
    if stamp not in cams:
      raise ValueError(f"{path}: no camera line with timestamp {stamp} in {camera_file}")
    values = cams[stamp]
    rgb, _ = _load_rgb(path, downsample)
    h, w = rgb.shape[:2]
    fx_n, fy_n, cx_n, cy_n = values[:4]
    if fx_n <= 0 or fy_n <= 0:
      raise ValueError(f"{camera_file}: timestamp {stamp} has non-positive focal length")
    ks.append(_pixel_intrinsics(fx_n * w, fy_n * h, cx_n * w, cy_n * h, half_pixel_shift))
    w2c = np.eye(4)
    w2c[:3] = values[6:].reshape(3, 4)
    _check_rigid(w2c, f"{camera_file}: timestamp {stamp} world-to-camera")
    c2ws.append(np.linalg.inv(w2c))
    images.append(rgb)

  n = len(images)
  rec = record.SceneRecord(
      scene_id=scene_dir.name,
      images=record.stack_same_size(images, files),
      intrinsics=np.stack(ks).astype(np.float32),
      c2w=np.stack(c2ws).astype(np.float32),
      near=np.full([n], REALESTATE_NEAR, np.float32),
      far=np.full([n], REALESTATE_FAR, np.float32),
      split=np.full([n], split))
  return record.check_record(rec, camera_file)


# ----------------------------------------------------------------------------- Spaces


def _axis_angle_matrix(rotvec: np.ndarray) -> np.ndarray:
  """[3] axis-angle (angle = norm) -> [3, 3] rotation (Rodrigues)."""
  angle = float(np.linalg.norm(rotvec))
  if angle < _SPACES_MIN_ANGLE:
    return np.eye(3)
  x, y, z = rotvec / angle
  skew = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
  return np.eye(3) + math.sin(angle) * skew + (1.0 - math.cos(angle)) * (skew @ skew)


def _spaces_number(view: dict, key: str, size: int | None, where: str) -> np.ndarray:
  if key not in view:
    raise ValueError(f"{where}: missing '{key}'")
  try:
    value = np.asarray(view[key], np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: '{key}' is not numeric ({e})") from e
  expected = () if size is None else (size,)
  if value.shape != expected:
    raise ValueError(f"{where}: '{key}' has shape {value.shape}, expected {expected}")
  if not np.all(np.isfinite(value)):
    raise ValueError(f"{where}: '{key}' contains NaN or inf")
  return value


def read_spaces(scene_dir, downsample: int = 1, mixed_sizes: str = "error",
                half_pixel_shift: bool = True) -> record.SceneRecord:
  """Reads one Spaces (DeepView) scene, e.g. ``spaces_dataset/data/800/scene_000``.

  Layout (Google's ``spaces_dataset`` README and ``code/utils.py``, reused by IBRNet's
  ``data_loaders/spaces_dataset.py``)::

    {scene}/models.json                 list of rig positions, each a list of cameras
    {scene}/cam_{XX}/image_{YYY}.JPG    camera XX at rig position YYY

  Each camera is a dict: ``relative_path`` (image, relative to the scene), ``width``,
  ``height`` (the calibrated image size), ``focal_length`` (fx in pixels),
  ``pixel_aspect_ratio`` (fy = fx * ratio), ``principal_point`` [2] in pixels,
  ``orientation`` [3] axis-angle (angle = norm) of the world-to-camera rotation ``R`` and
  ``position`` [3] the camera centre ``c``: ``x_cam = R (X - c)``, so
  ``c2w = [R^T | c]``, OpenCV camera frame (IBRNet uses it directly).

  Intrinsics: when an image's size differs from the json ``width``/``height`` (or after
  ``downsample``), x terms scale by the width ratio and y terms by the height ratio, as in
  IBRNet. The calibration puts pixel centres at half-integers (``utils.py`` adds 0.5 to
  pixel indices), so the principal point moves by -0.5 px into integer-centre coordinates
  (``half_pixel_shift``; IBRNet keeps it unshifted). Near/far are IBRNet's fixed 1 and 100.
  IBRNet splits Spaces by scene (evaluation scenes 0, 9, 10, 23, 24, 52, 56, 62, 63, 73);
  within a scene all views are "train".

  The released images of one rig differ in height by a few pixels (e.g. 467 to 489 at
  800 wide). ``mixed_sizes`` chooses what to do: "error" raises, "crop" centre-crops
  every image to the smallest size, "pad" centre-pads with black to the largest (IBRNet
  pads its source views that way); both shift the principal point by the whole-pixel
  offset.

  Args:
    scene_dir: scene folder with ``models.json``.
    downsample: positive integer; images are box-averaged
      (:func:`~movenerf.data.images.downscale_image`).
    mixed_sizes: "error", "crop" or "pad".
    half_pixel_shift: False keeps the principal point as stored (IBRNet's numbers).

  Returns:
    record.SceneRecord with views ordered rig position first, then camera, as in models.json.
  """
  scene_dir = record.check_scene_dir(scene_dir)
  downsample = _check_downsample(downsample)
  if mixed_sizes not in _MIXED_SIZE_MODES:
    raise ValueError(f"mixed_sizes must be one of {_MIXED_SIZE_MODES}, got {mixed_sizes!r}")
  models_path = scene_dir / "models.json"
  if not models_path.is_file():
    raise FileNotFoundError(f"camera file not found: {models_path}")
  try:
    rigs = json.loads(models_path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{models_path}: invalid JSON ({e})") from e
  if not isinstance(rigs, list) or not all(isinstance(r, list) for r in rigs):
    raise ValueError(f"{models_path}: expected a list of rig positions, each a list of cameras")
  if not any(rigs):
    raise ValueError(f"empty scene: no cameras in {models_path}")

  images, ks, c2ws, paths = [], [], [], []
  for r, rig in enumerate(rigs):
    for c, view in enumerate(rig):
      where = f"{models_path}: rig {r} camera {c}"
      if not isinstance(view, dict):
        raise ValueError(f"{where}: expected a dict, got {type(view).__name__}")
      rel = view.get("relative_path")
      if not isinstance(rel, str) or not rel:
        raise ValueError(f"{where}: missing 'relative_path'")
      width = float(_spaces_number(view, "width", None, where))
      height = float(_spaces_number(view, "height", None, where))
      focal = float(_spaces_number(view, "focal_length", None, where))
      aspect = float(_spaces_number(view, "pixel_aspect_ratio", None, where))
      pp = _spaces_number(view, "principal_point", 2, where)
      rotvec = _spaces_number(view, "orientation", 3, where)
      position = _spaces_number(view, "position", 3, where)
      if min(width, height, focal, aspect) <= 0:
        raise ValueError(f"{where}: width, height, focal_length and pixel_aspect_ratio must be "
                         "positive")
      path = scene_dir / rel
      if not path.is_file():
        raise FileNotFoundError(f"{where}: references missing image {path}")
      rgb, _ = _load_rgb(path, downsample)
      sy, sx = rgb.shape[0] / height, rgb.shape[1] / width
      ks.append(_pixel_intrinsics(focal * sx, focal * aspect * sy, pp[0] * sx, pp[1] * sy,
                                  half_pixel_shift))
      c2w = np.eye(4)
      c2w[:3, :3] = _axis_angle_matrix(rotvec).T
      c2w[:3, 3] = position
      c2ws.append(c2w)
      images.append(rgb)
      paths.append(path)

  n = len(images)
  rec = record.SceneRecord(
      scene_id=scene_dir.name,
      images=_fit_common_size(images, ks, paths, mixed_sizes, models_path),
      intrinsics=np.stack(ks).astype(np.float32),
      c2w=np.stack(c2ws).astype(np.float32),
      near=np.full([n], SPACES_NEAR, np.float32),
      far=np.full([n], SPACES_FAR, np.float32),
      split=np.full([n], "train", dtype="<U5"))
  return record.check_record(rec, models_path)


READERS = {
    "google_scanned_objects": read_google_scanned_objects,
    "ibrnet_collected": read_ibrnet_collected,
    "realestate10k": read_realestate10k,
    "spaces": read_spaces,
}
