"""Rays through pixels and depth samples along them (pure functions).

Directions are *not* normalised: ``d = R @ inv(K) @ [u, v, 1]`` has camera-frame z = 1,
so a depth ``z`` along a ray is the point's z-depth in the camera that cast the ray.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from movenerf.geometry.cameras import Cameras


@flax.struct.dataclass
class Rays:
  """A batch of rays.

  Attributes:
    origins: [R, 3] world-space origins.
    directions: [R, 3] world-space directions, unnormalised (camera z = 1).
  """

  origins: jnp.ndarray
  directions: jnp.ndarray

  @property
  def num_rays(self) -> int:
    return self.origins.shape[0]

  def __getitem__(self, index) -> "Rays":
    return Rays(self.origins[index], self.directions[index])


def pixel_grid(height: int, width: int) -> jnp.ndarray:
  """[H * W, 2] integer (u, v) pixel coordinates, row-major (flat index = v * W + u)."""
  v, u = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  return jnp.stack([u.reshape(-1), v.reshape(-1)], axis=-1)


def flat_index_to_pixels(indices: jnp.ndarray, width: int) -> jnp.ndarray:
  """[R] flat indices (v * W + u) -> [R, 2] (u, v)."""
  return jnp.stack([indices % width, indices // width], axis=-1)


def pixel_rays(camera: Cameras, pixels: jnp.ndarray) -> Rays:
  """Rays of one camera through given pixels.

  Args:
    camera: a single camera (batch shape ()).
    pixels: [R, 2] (u, v) pixel coordinates; integers address pixel centres.

  Returns:
    Rays with origins [R, 3] (the camera centre) and directions [R, 3].
  """
  pixels = jnp.asarray(pixels, jnp.float32)
  homogeneous = jnp.concatenate([pixels, jnp.ones_like(pixels[:, :1])], axis=-1)
  # Same association as the official code: (R @ inv(K)) @ pixel.
  cam_to_dir = camera.c2w[:3, :3] @ jnp.linalg.inv(camera.intrinsics)
  directions = homogeneous @ cam_to_dir.T
  origins = jnp.broadcast_to(camera.c2w[:3, 3], directions.shape)
  return Rays(origins, directions)


def image_rays(camera: Cameras) -> Rays:
  """All H * W rays of a camera, flat row-major order."""
  return pixel_rays(camera, pixel_grid(camera.height, camera.width))


def sample_depths(near: jnp.ndarray, far: jnp.ndarray, num_rays: int, num_samples: int,
                  inverse_depth: bool = False, rng: jax.Array | None = None) -> jnp.ndarray:
  """Depths along rays between near and far.

  Deterministic (``rng=None``, evaluation): ``num_samples`` evenly spaced values including
  both ends, in depth or (``inverse_depth``) in inverse depth, computed as
  ``start + i * step`` like the official code. Stratified (training): each value is drawn
  uniformly inside its interval (bounded by the midpoints to its neighbours).

  Args:
    near, far: scalars or [R] depth bounds.
    num_rays: R.
    num_samples: S (>= 2).
    inverse_depth: sample uniformly in 1/z.
    rng: PRNG key for stratified sampling, or None.

  Returns:
    [R, S] depths, ascending in depth.
  """
  if num_samples < 2:
    raise ValueError(f"num_samples must be >= 2, got {num_samples}")
  near = jnp.broadcast_to(jnp.asarray(near, jnp.float32), (num_rays,))
  far = jnp.broadcast_to(jnp.asarray(far, jnp.float32), (num_rays,))
  i = jnp.arange(num_samples, dtype=jnp.float32)
  if inverse_depth:
    start = 1.0 / near
    step = (1.0 / far - start) / (num_samples - 1)
    z = 1.0 / (start[:, None] + i * step[:, None])
  else:
    step = (far - near) / (num_samples - 1)
    z = near[:, None] + i * step[:, None]
  if rng is not None:
    mids = 0.5 * (z[:, 1:] + z[:, :-1])
    upper = jnp.concatenate([mids, z[:, -1:]], axis=-1)
    lower = jnp.concatenate([z[:, :1], mids], axis=-1)
    z = lower + (upper - lower) * jax.random.uniform(rng, z.shape)
  return z


def points_along_rays(rays: Rays, depths: jnp.ndarray) -> jnp.ndarray:
  """[R, S] depths -> [R, S, 3] points ``o + z * d``."""
  return depths[..., None] * rays.directions[:, None, :] + rays.origins[:, None, :]
