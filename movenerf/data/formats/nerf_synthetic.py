"""Reader for NeRF-synthetic (Blender) scenes: ``transforms_{split}.json`` + RGBA PNGs.

Returns a :class:`~movenerf.data.formats.record.SceneRecord` in the library's camera
convention (pure NumPy + Pillow); malformed input raises ``ValueError`` or
``FileNotFoundError`` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Sequence

import numpy as np

from movenerf.data import images
from movenerf.data.formats import record
from movenerf.geometry import cameras

# Standard near/far for the Blender scenes (objects inside a radius-~1.5 ball, cameras at ~4).
BLENDER_NEAR = 2.0
BLENDER_FAR = 6.0


def read_nerf_synthetic(scene_dir, splits: Sequence[str] = record.SPLIT_NAMES,
                        white_background: bool = True, downsample: int = 1) -> record.SceneRecord:
  """Reads a NeRF-synthetic (Blender) scene.

  Intrinsics: focal ``0.5 * W / tan(0.5 * camera_angle_x)`` and principal point
  ``((W - 1) / 2, (H - 1) / 2)``: with integer pixel centres that is the exact image centre
  (Blender renders a centred frustum). Poses: ``transform_matrix`` is an OpenGL c2w and is
  converted with :func:`movenerf.geometry.cameras.opengl_to_opencv`. Near/far are the standard
  :data:`BLENDER_NEAR` and :data:`BLENDER_FAR` (2 and 6).

  Args:
    scene_dir: folder with ``transforms_{split}.json`` and the PNGs.
    splits: splits to read, in order; a split whose json is missing is skipped with a warning.
    white_background: composite RGBA onto white (True) or black (False). An image
      without alpha in a scene of RGBA images keeps its own background; a warning names
      it (one line per scene).
    downsample: positive integer; images are averaged over downsample x downsample
      blocks (:func:`movenerf.data.images.downscale_image`) and intrinsics scaled with
      :func:`movenerf.geometry.cameras.scale_intrinsics`.

  Returns:
    SceneRecord with views ordered by split, then by json order.
  """
  scene_dir = record.check_scene_dir(scene_dir)
  if int(downsample) != downsample or downsample < 1:
    raise ValueError(f"downsample must be a positive integer, got {downsample}")
  downsample = int(downsample)
  background = 1.0 if white_background else 0.0

  rgbs, paths, ks, c2ws, split_names = [], [], [], [], []
  no_alpha, with_alpha = [], 0
  for split in splits:
    meta_path = scene_dir / f"transforms_{split}.json"
    if not meta_path.is_file():
      logging.warning("nerf_synthetic: %s not found; skipping split %r", meta_path, split)
      continue
    try:
      meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{meta_path}: invalid JSON ({e})") from e
    if "camera_angle_x" not in meta or "frames" not in meta:
      raise ValueError(f"{meta_path}: needs 'camera_angle_x' and 'frames'")
    angle = float(meta["camera_angle_x"])
    if not math.isfinite(angle) or not 0.0 < angle < math.pi:
      raise ValueError(f"{meta_path}: camera_angle_x must be finite in (0, pi), got {angle}")
    for j, frame in enumerate(meta["frames"]):
      rel = frame.get("file_path")
      if rel is None or "transform_matrix" not in frame:
        raise ValueError(f"{meta_path}: frame {j} needs 'file_path' and 'transform_matrix'")
      path = scene_dir / rel
      if path.suffix == "":
        # The released json files name the PNGs without extension.
        path = path.with_name(path.name + ".png")
      if not path.is_file():
        raise FileNotFoundError(f"{meta_path}: frame {j} references missing image {path}")
      arr = record.load_image(path)
      if arr.shape[2] == 4:
        with_alpha += 1
      else:
        no_alpha.append(path)
      h, w = arr.shape[:2]
      if downsample > 1:
        if h % downsample or w % downsample:
          raise ValueError(f"{path}: size {w}x{h} not divisible by downsample={downsample}")
        arr = images.downscale_image(arr, downsample)
      rgbs.append(record.to_rgb(arr, background))
      paths.append(path)
      pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
      if pose.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"{meta_path}: frame {j} transform_matrix has shape {pose.shape}, "
                         "expected (4, 4)")
      if not np.all(np.isfinite(pose)):
        raise ValueError(f"{meta_path}: frame {j} transform_matrix contains NaN or inf")
      full = np.eye(4)
      full[:3] = pose[:3]
      c2ws.append(cameras.opengl_to_opencv(full))
      focal = 0.5 * w / math.tan(0.5 * angle)
      k = cameras.pinhole_intrinsics(focal, focal, (w - 1) / 2.0, (h - 1) / 2.0)
      ks.append(cameras.scale_intrinsics(k, 1.0 / downsample))
      split_names.append(split)

  if not rgbs:
    raise ValueError(f"empty scene: no frames found in {scene_dir} for splits {tuple(splits)}")
  if with_alpha and no_alpha:
    more = f" ({len(no_alpha) - 1} more such images)" if len(no_alpha) > 1 else ""
    logging.warning("nerf_synthetic: %s has no alpha channel, unlike %d other images of the "
                    "scene: it keeps its own background, not the %s one%s", no_alpha[0],
                    with_alpha, "white" if white_background else "black", more)
  n = len(rgbs)
  rec = record.SceneRecord(
      scene_id=scene_dir.name,
      images=record.stack_same_size(rgbs, paths),
      intrinsics=np.stack(ks).astype(np.float32),
      c2w=np.stack(c2ws).astype(np.float32),
      near=np.full([n], BLENDER_NEAR, np.float32),
      far=np.full([n], BLENDER_FAR, np.float32),
      split=np.asarray(split_names))
  return record.check_record(rec, scene_dir)
