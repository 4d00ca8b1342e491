"""The scene record every format reader returns, and the helpers the readers share.

A :class:`SceneRecord` holds all views of one scene in the library's camera convention
(see :mod:`movenerf.geometry.cameras`): OpenCV camera frame, 3x3 pinhole intrinsics, 4x4
camera-to-world matrices, integer pixel coordinates at pixel centres, per-view near/far.

The readers, one module per format: :mod:`~movenerf.data.formats.nerf_synthetic`,
:mod:`~movenerf.data.formats.llff` (LLFF and DTU), :mod:`~movenerf.data.formats.ibrnet`
(the IBRNet / GNT training collection); :mod:`~movenerf.data.formats.registry` picks one
by format name. The helpers here (:func:`load_image`, :func:`list_images`,
:func:`stack_same_size`, :func:`to_rgb`, :func:`check_scene_dir`, :func:`check_record`)
give every reader the same checks and the same error messages: malformed input raises
``ValueError`` or ``FileNotFoundError`` with the offending file in the message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

SPLIT_NAMES = ("train", "val", "test")
# Suffixes of the files list_images counts as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


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


def load_image(path: Path) -> np.ndarray:
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


def stack_same_size(arrays: Sequence[np.ndarray], paths: Sequence[Path]) -> np.ndarray:
  """Stacks [H, W, C] images, raising ValueError naming the first file of a different size."""
  h, w = arrays[0].shape[:2]
  for a, p in zip(arrays, paths):
    if a.shape[:2] != (h, w):
      raise ValueError(
          f"mixed image sizes in scene: {p} is {a.shape[1]}x{a.shape[0]} (WxH), "
          f"but {paths[0]} is {w}x{h}")
  return np.stack(arrays)


def to_rgb(arr: np.ndarray, background: float | None = None) -> np.ndarray:
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


def check_scene_dir(scene_dir) -> Path:
  """``scene_dir`` as a Path; FileNotFoundError unless it is a folder."""
  scene_dir = Path(scene_dir)
  if not scene_dir.is_dir():
    raise FileNotFoundError(f"scene folder not found: {scene_dir}")
  return scene_dir


def list_images(folder: Path) -> list[Path]:
  """The image files (:data:`IMAGE_SUFFIXES`) in ``folder``, sorted by name.

  Raises:
    FileNotFoundError: ``folder`` does not exist.
    ValueError: it holds no image (the empty scene).
  """
  if not folder.is_dir():
    raise FileNotFoundError(f"image folder not found: {folder}")
  files = sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES and p.is_file())
  if not files:
    raise ValueError(f"empty scene: no images in {folder}")
  return files


def check_record(rec: SceneRecord, source: Path) -> SceneRecord:
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
