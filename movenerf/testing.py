"""Small deterministic inputs for initialising models and for tests."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from movenerf.geometry.cameras import Cameras, look_at, pinhole_intrinsics
from movenerf.geometry.epipolar import SourceViews
from movenerf.geometry.rays import Rays, flat_index_to_pixels, pixel_rays


def ring_cameras(num_views: int, height: int, width: int, radius: float = 4.0,
                 elevation_deg: float = 25.0) -> Cameras:
  """V cameras on a ring around the origin, looking at it (z up)."""
  focal = 1.0 * width
  k = pinhole_intrinsics(focal, focal, (width - 1) / 2, (height - 1) / 2)
  el = np.deg2rad(elevation_deg)
  c2w = []
  for az in np.linspace(0, 2 * np.pi, num_views, endpoint=False):
    eye = radius * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
    c2w.append(look_at(eye, np.zeros(3)))
  return Cameras(jnp.asarray(np.stack([k] * num_views)), jnp.asarray(np.stack(c2w)),
                 height, width)


def dummy_inputs(num_views: int = 4, height: int = 16, width: int = 16, num_rays: int = 8,
                 seed: int = 0) -> tuple[Rays, Cameras, SourceViews]:
  """(rays [R], target camera, V random-colour source views) for shape inference/tests."""
  cams = ring_cameras(num_views + 1, height, width)
  target, source_cams = cams[0], cams[1:]
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.uniform(size=(num_views, height, width, 3)), jnp.float32)
  pixels = flat_index_to_pixels(jnp.asarray(rng.integers(0, height * width, num_rays)), width)
  return pixel_rays(target, pixels), target, SourceViews(images, source_cams)
