"""Readers for the LLFF layout (``poses_bounds.npy`` + ``images_{factor}/``) and for DTU
scans stored in it (plus ``mask_{factor}/``).

``poses_bounds.npy`` stores LLFF camera-to-world matrices whose rotation columns are
(down, right, backwards); :func:`llff_to_opencv` turns them into the library's OpenCV
convention. Readers return a :class:`~movenerf.data.formats.record.SceneRecord` (pure
NumPy + Pillow); malformed input raises ``ValueError`` or ``FileNotFoundError`` naming
the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from movenerf.data.formats import record
from movenerf.geometry import cameras


def llff_to_opencv(poses: np.ndarray) -> np.ndarray:
  """LLFF [N, 3, 4] (rotation columns: down, right, back) -> OpenCV [N, 4, 4] c2w.

  OpenCV columns are (right, down, forward) = (col1, col0, -col2); this is the same as LLFF's
  (col1, -col0, col2) OpenGL reordering followed by the OpenGL->OpenCV y/z flip.
  """
  n = poses.shape[0]
  out = np.zeros([n, 4, 4], np.float64)
  out[:, :3, 0] = poses[:, :, 1]
  out[:, :3, 1] = poses[:, :, 0]
  out[:, :3, 2] = -poses[:, :, 2]
  out[:, :3, 3] = poses[:, :, 3]
  out[:, 3, 3] = 1.0
  return out


def check_llffhold(llffhold: int) -> None:
  """Raises ValueError unless ``llffhold`` is a hold-out period (>= 1) or 0 (no test
  views)."""
  if isinstance(llffhold, bool) or int(llffhold) != llffhold or llffhold < 0:
    raise ValueError(f"llffhold={llffhold!r}: give N >= 1 (every N-th view is a test "
                     "view) or 0 (no test views)")


def read_llff(scene_dir, factor: int = 8, split_fn: Callable[[int], np.ndarray] | None = None,
              llffhold: int = 8) -> record.SceneRecord:
  """Reads an LLFF-layout scene: ``poses_bounds.npy`` + ``images_{factor}/``.

  ``poses_bounds.npy`` is [N, 17]: a row-major 3x5 ``[R | t | hwf]`` (rotation columns in
  LLFF's order down, right, backwards; hwf at full resolution) then the near/far bounds.
  Poses are kept in the original (COLMAP) world frame: no recentring, no rescaling, and
  the bounds are used unchanged as per-view near/far depths. Focal is scaled by
  ``W_image / W_full`` where ``W_image`` is read from the image files; the principal point
  is the image centre ``((W - 1) / 2, (H - 1) / 2)``.

  Args:
    scene_dir: scene folder.
    factor: downscale factor naming the image folder (``images_{factor}``; 1 -> ``images``).
    split_fn: optional ``n -> [n] str array`` assigning splits; default is the usual LLFF
      hold-out: every ``llffhold``-th view is "test", the rest "train".
    llffhold: hold-out period for the default split (0: all views "train").

  Returns:
    SceneRecord with views in file-name order.
  Raises:
    ValueError: ``llffhold`` < 0 (named), or malformed input (naming the file).
  """
  check_llffhold(llffhold)
  scene_dir = record.check_scene_dir(scene_dir)
  pb_path = scene_dir / "poses_bounds.npy"
  if not pb_path.is_file():
    raise FileNotFoundError(f"poses file not found: {pb_path}")
  try:
    pb = np.load(pb_path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise ValueError(f"{pb_path}: cannot read poses array ({e})") from e
  if pb.ndim != 2 or pb.shape[1] != 17:
    raise ValueError(f"{pb_path}: poses array must have shape [N, 17], got {pb.shape}")
  if pb.shape[0] == 0:
    raise ValueError(f"empty scene: {pb_path} has no views")
  pb = pb.astype(np.float64)
  if not np.all(np.isfinite(pb)):
    raise ValueError(f"{pb_path}: poses array contains NaN or inf")

  mats = pb[:, :15].reshape(-1, 3, 5)
  hwf = mats[:, :, 4]  # [N, 3] full-resolution (H, W, focal)
  bounds = pb[:, 15:17]
  if np.any(hwf <= 0):
    raise ValueError(f"{pb_path}: hwf (height, width, focal) must be positive")

  img_dir = scene_dir / ("images" if factor == 1 else f"images_{factor}")
  files = record.list_images(img_dir)
  if len(files) != pb.shape[0]:
    raise ValueError(
        f"{pb_path}: {pb.shape[0]} poses but {len(files)} images in {img_dir}")
  arrays = [record.to_rgb(record.load_image(p)) for p in files]
  images = record.stack_same_size(arrays, files)
  n, h, w = images.shape[:3]

  # Focal scales with the width ratio; the images may not be exactly full/factor in size.
  focal = hwf[:, 2] * (w / hwf[:, 1])
  ks = np.stack([cameras.pinhole_intrinsics(f, f, (w - 1) / 2.0, (h - 1) / 2.0) for f in focal])

  if split_fn is not None:
    split = np.asarray(split_fn(n))
    if split.shape != (n,):
      raise ValueError(f"split_fn must return shape ({n},), got {split.shape}")
  else:
    split = np.full([n], "train", dtype="<U5")
    if llffhold > 0:
      split[::int(llffhold)] = "test"

  rec = record.SceneRecord(
      scene_id=scene_dir.name,
      images=images,
      intrinsics=ks.astype(np.float32),
      c2w=llff_to_opencv(mats[:, :, :4]).astype(np.float32),
      near=bounds[:, 0].astype(np.float32),
      far=bounds[:, 1].astype(np.float32),
      split=split)
  return record.check_record(rec, pb_path)


def read_dtu(scene_dir, factor: int = 8, **llff_kwargs) -> record.SceneRecord:
  """Reads a DTU scan in the LLFF-style layout, with foreground masks.

  Cameras, images, near/far and splits come from :func:`read_llff`; masks from
  ``mask_{factor}/`` (sorted file names, one per image; any nonzero channel -> True).

  Args:
    scene_dir: scan folder (``poses_bounds.npy``, ``images_{factor}/``, ``mask_{factor}/``).
    factor: downscale factor naming the folders.
    **llff_kwargs: passed to :func:`read_llff` (``split_fn``, ``llffhold``).

  Returns:
    SceneRecord with ``masks`` [N, H, W] bool.
  """
  rec = read_llff(scene_dir, factor=factor, **llff_kwargs)
  mask_dir = Path(scene_dir) / ("mask" if factor == 1 else f"mask_{factor}")
  files = record.list_images(mask_dir)
  if len(files) != rec.num_views:
    raise ValueError(f"{mask_dir}: {len(files)} masks but {rec.num_views} images")
  masks = []
  for p in files:
    m = record.load_image(p)
    if m.shape[:2] != (rec.height, rec.width):
      raise ValueError(f"mixed image sizes in scene: mask {p} is {m.shape[1]}x{m.shape[0]} "
                       f"(WxH), images are {rec.width}x{rec.height}")
    # Only colour channels decide foreground; a fully opaque alpha would mark everything.
    masks.append(np.any(m[..., :3] > 0, axis=-1))
  return dataclasses.replace(rec, masks=np.stack(masks))
