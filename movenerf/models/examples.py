"""Training examples as cameras and rays, and small inputs for initialising a model.

A training example is one entry of a batch of :mod:`movenerf.data.pipeline`: the arrays
``pixels`` [R, 2], ``rgb`` [R, 3], ``src_images`` [V, H, W, 3] uint8, ``src_intrinsics``
[V, 3, 3], ``src_c2w`` [V, 4, 4], ``tgt_intrinsics`` [3, 3], ``tgt_c2w`` [4, 4], ``near``,
``far`` and ``pairs`` [Q, 2]. The model families read them through these functions.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from movenerf.geometry.cameras import Cameras, ring_cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.geometry.rays import Rays, flat_index_to_pixels, pixel_rays


def source_views(ex: dict, image_hw: tuple[int, int]) -> SourceViews:
  """One example's source images (in [0, 1]) and cameras; ``image_hw``: their static size."""
  h, w = image_hw
  return SourceViews(ex["src_images"].astype(jnp.float32) / 255.0,
                     Cameras(ex["src_intrinsics"], ex["src_c2w"], h, w))


def example_views(ex: dict, image_hw: tuple[int, int]) -> tuple[Rays, Cameras, SourceViews]:
  """One example's arrays -> (rays of its target pixels, target camera, source views).

  ``image_hw`` is the static source image size; the target camera gets it too (only its
  matrices are used to cast the rays).
  """
  target = Cameras(ex["tgt_intrinsics"], ex["tgt_c2w"], *image_hw)
  return pixel_rays(target, ex["pixels"]), target, source_views(ex, image_hw)


def dummy_inputs(num_views: int = 4, height: int = 16, width: int = 16, num_rays: int = 8,
                 seed: int = 0) -> tuple[Rays, Cameras, SourceViews]:
  """(rays [R], target camera, V random-colour source views) on a ring of cameras: the
  inputs that shape a model's parameters at initialisation (and small test inputs)."""
  cams = ring_cameras(num_views + 1, height, width)
  target, source_cams = cams[0], cams[1:]
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.uniform(size=(num_views, height, width, 3)), jnp.float32)
  pixels = flat_index_to_pixels(jnp.asarray(rng.integers(0, height * width, num_rays)), width)
  return pixel_rays(target, pixels), target, SourceViews(images, source_cams)
