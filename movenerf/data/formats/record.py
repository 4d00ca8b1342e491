"""Readers for on-disk multi-view datasets (pure NumPy + Pillow).

Every reader returns a :class:`SceneRecord` in the library's camera convention
(see :mod:`movenerf.geometry.cameras`): OpenCV camera frame, 3x3 pinhole intrinsics, 4x4
camera-to-world matrices, integer pixel coordinates at pixel centres.

Supported layouts:

* ``nerf_synthetic`` (Blender): ``transforms_{split}.json`` + RGBA PNGs.
* ``llff``: ``poses_bounds.npy`` ([N, 17]) + ``images_{factor}/``.
* ``dtu``: the LLFF-style ``poses_bounds.npy`` + ``images_8/`` + ``mask_8/`` layout.

Readers only read; nothing is written to disk. Malformed input raises
``ValueError`` or ``FileNotFoundError`` with the offending file in the message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from movenerf.geometry import cameras
from movenerf.data import samplers

SPLIT_NAMES = ("train", "val", "test")
# Standard near/far for the Blender scenes (objects inside a radius-~1.5 ball, cameras at ~4).
BLENDER_NEAR = 2.0
BLENDER_FAR = 6.0
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


@dataclasses.dataclass(frozen=True, eq=False)
class SceneRecord:
  """All views of one scene, in the library's camera convention.

  Attributes:
    scene_id: scene name (the folder name).
    images: [N, H, W, 3] uint8 RGB.
    intrinsics: [N, 3, 3] float32 pinhole matrices for the stored image size.
    c2w: [N, 4, 4] float32 camera-to-world (OpenCV camera frame).
    near: [N] float32 per-view near depth.
    far: [N] float32 per-view far depth.
    split: [N] str array, the split ("train" / "val" / "test") of each view.
    masks: [N, H, W] bool foreground masks, or None.
    depths: [N, H, W] float32 z-depths (0 on background), or None; only the generated
      dataset knows them.
  """

  scene_id: str
  images: np.ndarray
  intrinsics: np.ndarray
  c2w: np.ndarray
  near: np.ndarray
  far: np.ndarray
  split: np.ndarray
  masks: np.ndarray | None = None
  depths: np.ndarray | None = None

  @property
  def num_views(self) -> int:
    return int(self.images.shape[0])

  @property
  def height(self) -> int:
    return int(self.images.shape[1])

  @property
  def width(self) -> int:
    return int(self.images.shape[2])

  def select(self, indices) -> "SceneRecord":
    """Subset of views.

    Args:
      indices: [M] integer indices or [N] bool mask (anything NumPy fancy indexing takes).

    Returns:
      A new SceneRecord with the M selected views (arrays are copies).
    """
    idx = np.asarray(indices)
    if idx.dtype != bool:
      idx = idx.astype(np.int64).reshape(-1)
    return SceneRecord(
        scene_id=self.scene_id,
        images=self.images[idx],
        intrinsics=self.intrinsics[idx],
        c2w=self.c2w[idx],
        near=self.near[idx],
        far=self.far[idx],
        split=self.split[idx],
        masks=None if self.masks is None else self.masks[idx],
        depths=None if self.depths is None else self.depths[idx])

  def split_indices(self, name: str) -> np.ndarray:
    """[M] int64 indices of the views in split ``name``."""
    return np.nonzero(self.split == name)[0]


# ----------------------------------------------------------------------------- helpers


def _load_image(path: Path) -> np.ndarray:
  """Reads an image fully (so truncation is caught here) -> [H, W, C] uint8."""
  if not path.is_file():
    raise FileNotFoundError(f"image file not found: {path}")
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode not in ("RGB", "RGBA", "L"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
      arr = np.asarray(im, dtype=np.uint8)
  except (OSError, SyntaxError, ValueError) as e:
    # Pillow reports truncated / corrupt files as OSError (or SyntaxError for bad headers).
    raise ValueError(f"cannot decode image {path}: corrupt or truncated ({e})") from e
  if arr.ndim == 2:
    arr = arr[..., None]
  return arr


def _stack_same_size(arrays: Sequence[np.ndarray], paths: Sequence[Path]) -> np.ndarray:
  """Stacks [H, W, C] images, raising ValueError naming the first file of a different size."""
  h, w = arrays[0].shape[:2]
  for a, p in zip(arrays, paths):
    if a.shape[:2] != (h, w):
      raise ValueError(
          f"mixed image sizes in scene: {p} is {a.shape[1]}x{a.shape[0]} (WxH), "
          f"but {paths[0]} is {w}x{h}")
  return np.stack(arrays)


def _to_rgb(arr: np.ndarray, background: float | None = None) -> np.ndarray:
  """[H, W, C] uint8 (C in 1, 3, 4) -> [H, W, 3] uint8, compositing alpha onto ``background``."""
  if arr.shape[2] == 1:
    return np.repeat(arr, 3, axis=2)
  if arr.shape[2] == 4:
    if background is None:
      return arr[..., :3]
    rgb = arr[..., :3].astype(np.float32) / 255.0
    alpha = arr[..., 3:].astype(np.float32) / 255.0
    out = rgb * alpha + background * (1.0 - alpha)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
  return arr[..., :3]


def _list_images(folder: Path) -> list[Path]:
  if not folder.is_dir():
    raise FileNotFoundError(f"image folder not found: {folder}")
  files = sorted(p for p in folder.iterdir() if p.suffix in _IMAGE_SUFFIXES and p.is_file())
  if not files:
    raise ValueError(f"empty scene: no images in {folder}")
  return files


def _check_record(rec: SceneRecord, source: Path) -> SceneRecord:
  """Final sanity checks shared by all readers; ``source`` is named in errors."""
  n = rec.images.shape[0]
  if n == 0:
    raise ValueError(f"empty scene: no views read from {source}")
  if not np.all(np.isfinite(rec.intrinsics)):
    raise ValueError(f"{source}: intrinsics contain NaN or inf")
  if not np.all(np.isfinite(rec.c2w)):
    raise ValueError(f"{source}: camera poses contain NaN or inf")
  if not (np.all(np.isfinite(rec.near)) and np.all(np.isfinite(rec.far))):
    raise ValueError(f"{source}: near/far bounds contain NaN or inf")
  bad = np.nonzero(rec.near >= rec.far)[0]
  if bad.size:
    i = int(bad[0])
    raise ValueError(
        f"{source}: near >= far for {bad.size} view(s), e.g. view {i}: "
        f"near={rec.near[i]} far={rec.far[i]}")
  if np.any(rec.near < 0):
    raise ValueError(f"{source}: negative near bound")
  return rec


# ----------------------------------------------------------------------------- Blender


def read_nerf_synthetic(scene_dir, splits: Sequence[str] = SPLIT_NAMES,
                        white_background: bool = True, downsample: int = 1) -> SceneRecord:
  """Reads a NeRF-synthetic (Blender) scene.

  Intrinsics: focal ``0.5 * W / tan(0.5 * camera_angle_x)`` and principal point
  ``((W - 1) / 2, (H - 1) / 2)``: with integer pixel centres that is the exact image centre
  (Blender renders a centred frustum). Poses: ``transform_matrix`` is an OpenGL c2w and is
  converted with :func:`movenerf.geometry.cameras.opengl_to_opencv`. Near/far are the standard 2 and 6.

  Args:
    scene_dir: folder with ``transforms_{split}.json`` and the PNGs.
    splits: splits to read, in order; a split whose json is missing is skipped with a warning.
    white_background: composite RGBA onto white (True) or black (False).
    downsample: positive integer; images are averaged over downsample x downsample
      blocks (``samplers.downscale_image``) and intrinsics scaled with
      :func:`movenerf.geometry.cameras.scale_intrinsics`.

  Returns:
    SceneRecord with views ordered by split, then by json order.
  """
  scene_dir = Path(scene_dir)
  if not scene_dir.is_dir():
    raise FileNotFoundError(f"scene folder not found: {scene_dir}")
  if int(downsample) != downsample or downsample < 1:
    raise ValueError(f"downsample must be a positive integer, got {downsample}")
  downsample = int(downsample)
  background = 1.0 if white_background else 0.0

  images, paths, ks, c2ws, split_names = [], [], [], [], []
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
      arr = _load_image(path)
      h, w = arr.shape[:2]
      if downsample > 1:
        if h % downsample or w % downsample:
          raise ValueError(f"{path}: size {w}x{h} not divisible by downsample={downsample}")
        arr = samplers.downscale_image(arr, downsample)
      images.append(_to_rgb(arr, background))
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

  if not images:
    raise ValueError(f"empty scene: no frames found in {scene_dir} for splits {tuple(splits)}")
  n = len(images)
  rec = SceneRecord(
      scene_id=scene_dir.name,
      images=_stack_same_size(images, paths),
      intrinsics=np.stack(ks).astype(np.float32),
      c2w=np.stack(c2ws).astype(np.float32),
      near=np.full([n], BLENDER_NEAR, np.float32),
      far=np.full([n], BLENDER_FAR, np.float32),
      split=np.asarray(split_names))
  return _check_record(rec, scene_dir)


# ----------------------------------------------------------------------------- LLFF / DTU


def _llff_to_opencv(poses: np.ndarray) -> np.ndarray:
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


def read_llff(scene_dir, factor: int = 8, split_fn: Callable[[int], np.ndarray] | None = None,
              llffhold: int = 8) -> SceneRecord:
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
    llffhold: hold-out period for the default split (<= 0: all views "train").

  Returns:
    SceneRecord with views in file-name order.
  """
  scene_dir = Path(scene_dir)
  if not scene_dir.is_dir():
    raise FileNotFoundError(f"scene folder not found: {scene_dir}")
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
  files = _list_images(img_dir)
  if len(files) != pb.shape[0]:
    raise ValueError(
        f"{pb_path}: {pb.shape[0]} poses but {len(files)} images in {img_dir}")
  arrays = [_to_rgb(_load_image(p)) for p in files]
  images = _stack_same_size(arrays, files)
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
      split[::llffhold] = "test"

  rec = SceneRecord(
      scene_id=scene_dir.name,
      images=images,
      intrinsics=ks.astype(np.float32),
      c2w=_llff_to_opencv(mats[:, :, :4]).astype(np.float32),
      near=bounds[:, 0].astype(np.float32),
      far=bounds[:, 1].astype(np.float32),
      split=split)
  return _check_record(rec, pb_path)


def read_dtu(scene_dir, factor: int = 8, **llff_kwargs) -> SceneRecord:
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
  files = _list_images(mask_dir)
  if len(files) != rec.num_views:
    raise ValueError(f"{mask_dir}: {len(files)} masks but {rec.num_views} images")
  masks = []
  for p in files:
    m = _load_image(p)
    if m.shape[:2] != (rec.height, rec.width):
      raise ValueError(f"mixed image sizes in scene: mask {p} is {m.shape[1]}x{m.shape[0]} "
                       f"(WxH), images are {rec.width}x{rec.height}")
    # Only colour channels decide foreground; a fully opaque alpha would mark everything.
    masks.append(np.any(m[..., :3] > 0, axis=-1))
  return dataclasses.replace(rec, masks=np.stack(masks))


_READERS = {
    "nerf_synthetic": read_nerf_synthetic,
    "llff": read_llff,
    "dtu": read_dtu,
}


def read_scene(format_name: str, scene_dir, **kwargs) -> SceneRecord:
  """Dispatches to the reader for ``format_name``: "nerf_synthetic", "llff", "dtu", or an
  IBRNet collection format of :mod:`movenerf.data.formats.ibrnet`."""
  # Imported here: ibrnet_readers builds on this module's helpers.
  from movenerf.data.formats import ibrnet as ibrnet_readers  # pylint: disable=g-import-not-at-top
  readers_by_name = dict(_READERS, **ibrnet_readers.READERS)
  reader = readers_by_name.get(format_name)
  if reader is None:
    raise ValueError(f"unknown dataset format {format_name!r}; allowed formats: "
                     f"{sorted(readers_by_name)}")
  return reader(scene_dir, **kwargs)
