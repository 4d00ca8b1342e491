"""Bilinear sampling of images and feature maps at continuous pixel coordinates.

Semantics match ``torch.nn.functional.grid_sample(mode='bilinear',
padding_mode='zeros', align_corners=True)``: integer coordinates are pixel centres,
and each of the four neighbouring pixels that falls outside the image contributes
zero (so values fade to zero over the last pixel beyond the border).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bilinear_sample(image: jnp.ndarray, xy: jnp.ndarray) -> jnp.ndarray:
  """Samples ``image`` at pixel coordinates ``xy``.

  Args:
    image: [H, W, C].
    xy: [..., 2] (x = column, y = row) in pixels of ``image``.

  Returns:
    [..., C] interpolated values (zero padding outside the image).
  """
  height, width, channels = image.shape
  batch_shape = xy.shape[:-1]
  xy = xy.reshape(-1, 2).astype(jnp.float32)
  x, y = xy[:, 0], xy[:, 1]
  x0 = jnp.floor(x)
  y0 = jnp.floor(y)
  wx1 = x - x0
  wy1 = y - y0
  x0 = x0.astype(jnp.int32)
  y0 = y0.astype(jnp.int32)
  flat = image.reshape(height * width, channels)

  def corner(xi, yi, weight):
    valid = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
    # Clipped indices keep the gather in range; the weight of an outside corner is 0.
    index = jnp.clip(yi, 0, height - 1) * width + jnp.clip(xi, 0, width - 1)
    values = jnp.take(flat, index, axis=0)
    return values * jnp.where(valid, weight, 0.0)[:, None].astype(values.dtype)

  out = (corner(x0, y0, (1 - wx1) * (1 - wy1)) + corner(x0 + 1, y0, wx1 * (1 - wy1)) +
         corner(x0, y0 + 1, (1 - wx1) * wy1) + corner(x0 + 1, y0 + 1, wx1 * wy1))
  return out.reshape(batch_shape + (channels,))


def bilinear_sample_views(images: jnp.ndarray, xy: jnp.ndarray) -> jnp.ndarray:
  """Per-view bilinear sampling.

  Args:
    images: [V, H, W, C].
    xy: [V, ..., 2] pixel coordinates in each view's own image.

  Returns:
    [V, ..., C].
  """
  return jax.vmap(bilinear_sample)(images, xy)
