"""Image resizing on the host (NumPy + Pillow), the one place the data code resizes images.

Three resamplers, each for one job:

* :func:`downscale_image`: shrink by an integer factor with an area (box) average; the
  readers' ``downsample`` option (image pyramids). Any number of channels, uint8 or float.
* :func:`resize_image`: RGB uint8 to any size with Pillow, box filter when shrinking
  (no aliasing) and bilinear when enlarging; source views resized to a common size for
  batching, evaluation images resized to a model's size.
* :func:`resize_nearest`: nearest-neighbour to any size, for maps whose values must not
  blend (masks, depths).

Intrinsics for a resized image: :func:`movenerf.data.samplers.scale_intrinsics_for`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def downscale_image(image: np.ndarray, factor: int) -> np.ndarray:
  """Downscales an image by an integer factor with an area (box) average.

  When both sides are divisible by ``factor`` each output pixel is exactly the
  mean of its ``factor x factor`` block (reshape-mean); otherwise Pillow's BOX
  resize to ``(H // factor, W // factor)`` is used. uint8 results are rounded to
  nearest; float inputs stay float.

  Args:
    image: [H, W, C] or [H, W] uint8 (or float) image.
    factor: integer >= 1.

  Returns:
    [H // factor, W // factor(, C)] image of the input dtype.

  Raises:
    ValueError: ``factor`` is not a positive integer, or too large for the image; the
      image is not [H, W] or [H, W, C].
  """
  image = np.asarray(image)
  if int(factor) != factor or factor < 1:
    raise ValueError(f"factor must be a positive integer, got {factor}")
  factor = int(factor)
  if image.ndim not in (2, 3):
    raise ValueError(f"image must be [H, W] or [H, W, C], got {image.shape}")
  if factor == 1:
    return image.copy()
  h, w = image.shape[:2]
  nh, nw = h // factor, w // factor
  if nh < 1 or nw < 1:
    raise ValueError(f"factor {factor} too large for a {h}x{w} image")
  if h % factor == 0 and w % factor == 0:
    blocks = image.reshape((nh, factor, nw, factor) + image.shape[2:])
    out = blocks.astype(np.float64).mean(axis=(1, 3))
  else:
    # One float channel at a time: Pillow's multi-channel modes are uint8 and
    # limited to 3/4 channels.
    chans = image[..., None] if image.ndim == 2 else image
    out = np.stack([
        np.asarray(Image.fromarray(chans[..., c].astype(np.float32), mode="F").resize(
            (nw, nh), Image.Resampling.BOX)) for c in range(chans.shape[-1])
    ], axis=-1).astype(np.float64)
    if image.ndim == 2:
      out = out[..., 0]
  if image.dtype == np.uint8:
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
  return out.astype(image.dtype)


def resize_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """Resizes an RGB image with Pillow: box filter when shrinking, bilinear when enlarging.

  Shrinking means neither side grows; a size that grows one side and shrinks the other
  uses bilinear.

  Args:
    image: [H, W, 3] uint8.
    hw: (height, width) of the result.

  Returns:
    [hw[0], hw[1], 3] uint8; ``image`` itself when it already has that size.
  """
  if image.shape[:2] == tuple(hw):
    return image
  shrink = hw[0] <= image.shape[0] and hw[1] <= image.shape[1]
  method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
  return np.asarray(Image.fromarray(image).resize((hw[1], hw[0]), method))


def resize_nearest(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """Nearest-neighbour resize: each output pixel copies the input pixel under its centre.

  Output row ``i`` reads input row ``floor((i + 0.5) * H / hw[0])`` (columns alike), so
  values are never blended: masks stay masks and depths stay true depths.

  Args:
    image: [H, W, ...] array of any dtype.
    hw: (height, width) of the result.

  Returns:
    [hw[0], hw[1], ...] array of the input dtype.
  """
  rows = (np.arange(hw[0]) + 0.5) * image.shape[0] / hw[0]
  cols = (np.arange(hw[1]) + 0.5) * image.shape[1] / hw[1]
  return image[rows.astype(int)][:, cols.astype(int)]
