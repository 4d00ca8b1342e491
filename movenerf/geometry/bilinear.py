"""Bilinear sampling of images and feature maps at continuous pixel coordinates.

Semantics match ``torch.nn.functional.grid_sample(mode='bilinear',
padding_mode='zeros', align_corners=True)``: integer coordinates are pixel centres,
and each of the four neighbouring pixels that falls outside the image contributes
zero (so values fade to zero over the last pixel beyond the border).

Written as four gathers from a flat ``[pixels, C]`` table (one per corner), in
point-major order, so no per-view gather is transposed afterwards.
"""

from __future__ import annotations

import jax.numpy as jnp


def _corners(xy: jnp.ndarray, height: int, width: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """[..., 2] coordinates -> flat pixel indices [..., 4] and weights [..., 4].

  Corners are (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1); a corner outside the
  image gets weight 0 and a clipped (in-range) index.
  """
  xy = xy.astype(jnp.float32)
  x, y = xy[..., 0], xy[..., 1]
  x0f, y0f = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0f, y - y0f
  x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
  xs = jnp.stack([x0, x0 + 1, x0, x0 + 1], axis=-1)
  ys = jnp.stack([y0, y0, y0 + 1, y0 + 1], axis=-1)
  weights = jnp.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=-1)
  valid = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
  index = jnp.clip(ys, 0, height - 1) * width + jnp.clip(xs, 0, width - 1)
  return index, jnp.where(valid, weights, 0.0)


def _gather_corners(table: jnp.ndarray, index: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """sum_c table[index[..., c]] * weights[..., c]: [N, C] table -> [..., C]."""
  out = 0.0
  for c in range(4):
    out = out + jnp.take(table, index[..., c], axis=0) * weights[..., c:c + 1].astype(table.dtype)
  return out


def bilinear_sample(image: jnp.ndarray, xy: jnp.ndarray) -> jnp.ndarray:
  """Samples ``image`` at pixel coordinates ``xy``.

  Args:
    image: [H, W, C].
    xy: [..., 2] (x = column, y = row) in pixels of ``image``.

  Returns:
    [..., C] interpolated values (zero padding outside the image).
  """
  height, width, channels = image.shape
  index, weights = _corners(xy, height, width)
  return _gather_corners(image.reshape(height * width, channels), index, weights)


def bilinear_sample_views(images: jnp.ndarray, xy: jnp.ndarray) -> jnp.ndarray:
  """Samples every view at its own coordinates, point-major.

  Args:
    images: [V, H, W, C].
    xy: [P, V, 2] pixel coordinates of P points in each of the V images.

  Returns:
    [P, V, C].
  """
  views, height, width, channels = images.shape
  index, weights = _corners(xy, height, width)
  index = index + (jnp.arange(views, dtype=jnp.int32) * height * width)[None, :, None]
  return _gather_corners(images.reshape(views * height * width, channels), index, weights)
