"""Projection of world points into cameras (pure functions)."""

from __future__ import annotations

import jax.numpy as jnp

from movenerf.geometry.cameras import Cameras

# The official code clamps the depth divisor and the pixel coordinates so that points
# behind or on the camera plane give large but finite coordinates (masked later).
_MIN_DEPTH = 1e-8
_MAX_PIXEL = 1e6


def projection_matrices(cams: Cameras) -> jnp.ndarray:
  """[..., 3, 4] world-to-pixel matrices ``K @ inv(c2w)[:3]``."""
  w2c = jnp.linalg.inv(cams.c2w)
  return cams.intrinsics @ w2c[..., :3, :]


def project_points(points: jnp.ndarray, cams: Cameras) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Projects points into every camera of a batch.

  Args:
    points: [P, 3] world points.
    cams: V cameras (batch shape (V,)).

  Returns:
    xy: [V, P, 2] pixel coordinates (u, v), clamped to +-1e6.
    in_front: [V, P] bool, True where the point's camera z-depth is > 0.
  """
  mats = projection_matrices(cams)  # [V, 3, 4]
  proj = jnp.einsum("vij,pj->vpi", mats[..., :3], points) + mats[:, None, :, 3]
  depth = proj[..., 2:3]
  xy = proj[..., :2] / jnp.maximum(depth, _MIN_DEPTH)
  xy = jnp.clip(xy, -_MAX_PIXEL, _MAX_PIXEL)
  return xy, proj[..., 2] > 0


def in_image(xy: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """[..., 2] pixel coordinates -> [...] bool, inside [0, W-1] x [0, H-1] (closed)."""
  x, y = xy[..., 0], xy[..., 1]
  return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
