"""Writing results people look at: colour images, depth maps, contact sheets."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from movenerf import storage

# Anchor colours of a perceptually ordered map (dark blue -> cyan -> yellow -> red).
_ANCHORS = np.array([[0.19, 0.07, 0.23], [0.16, 0.47, 0.93], [0.1, 0.85, 0.75],
                     [0.65, 0.98, 0.24], [0.98, 0.73, 0.22], [0.85, 0.22, 0.05],
                     [0.48, 0.02, 0.01]])


def to_uint8(image: np.ndarray) -> np.ndarray:
  """[H, W, C] float in [0, 1] (clipped) -> uint8."""
  return (np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colorize(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
  """[H, W] scalars -> [H, W, 3] float colours (near = dark, far = bright red)."""
  values = np.asarray(values, np.float32)
  finite = values[np.isfinite(values)]
  lo = float(finite.min()) if lo is None and finite.size else (lo or 0.0)
  hi = float(finite.max()) if hi is None and finite.size else (hi or 1.0)
  t = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
  t = np.nan_to_num(t) * (len(_ANCHORS) - 1)
  i = np.minimum(t.astype(np.int32), len(_ANCHORS) - 2)
  f = (t - i)[..., None]
  return _ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a PNG atomically to a local path or a URL (never half-written)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = to_uint8(image)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  storage.write_bytes(path, buf.getvalue())


def contact_sheet(images: list[np.ndarray], columns: int = 5, pad: int = 2) -> np.ndarray:
  """Tiles same-size [H, W, 3] images into one image (white padding)."""
  h, w = images[0].shape[:2]
  rows = -(-len(images) // columns)
  sheet = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), np.float32)
  for n, img in enumerate(images):
    r, c = divmod(n, columns)
    y, x = pad + r * (h + pad), pad + c * (w + pad)
    sheet[y:y + h, x:x + w] = np.asarray(img, np.float32)[..., :3]
  return sheet
