"""Rendering whole images in jit-compiled chunks of rays.

The feature extractor runs once per set of source views; rays are rendered in chunks of
``chunk_size`` (pad the last one) through one compiled function, so peak memory is set
by the chunk size: lower it when rendering runs out of memory.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from movenerf.cameras import Cameras
from movenerf.epipolar import SourceViews
from movenerf.models.gnt_model import GNTModel, RenderOutput
from movenerf.rays import Rays, image_rays


@functools.partial(jax.jit, static_argnums=0)
def encode_sources(model: GNTModel, variables, images: jnp.ndarray):
  """[V, H, W, 3] -> (coarse, fine) feature maps."""
  return model.apply(variables, images, method=GNTModel.encode)


@functools.partial(jax.jit, static_argnums=0)
def render_chunk(model: GNTModel, variables, rays: Rays, target_camera: Cameras,
                 sources: SourceViews, featmaps, near, far) -> RenderOutput:
  """Evaluation rendering of R rays (deterministic sampling, no dropout)."""
  return model.apply(variables, rays, target_camera, sources, featmaps, near, far,
                     method=GNTModel.render_rays)


def render_rays_chunked(model: GNTModel, variables, rays: Rays, target_camera: Cameras,
                        sources: SourceViews, near: float, far: float, chunk_size: int = 512,
                        featmaps=None, progress: Callable[[int, int], Any] | None = None
                        ) -> dict[str, np.ndarray]:
  """Renders any number of rays in fixed-size chunks (one compilation).

  Returns:
    dict with 'rgb' [R, 3], 'depth' [R] (final pass) and, with a fine pass,
    'rgb_coarse', 'depth_coarse'.
  """
  if featmaps is None:
    featmaps = encode_sources(model, variables, sources.images)
  total = rays.num_rays
  padded = -(-total // chunk_size) * chunk_size
  pad = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], padded - total, 0)], 0)
  rays = Rays(pad(rays.origins), pad(rays.directions))
  parts: dict[str, list] = {}
  for start in range(0, padded, chunk_size):
    out = render_chunk(model, variables, rays[start:start + chunk_size], target_camera,
                       sources, featmaps, near, far)
    pieces = {"rgb": out.final.rgb, "depth": out.final.depth}
    if out.fine is not None:
      pieces.update(rgb_coarse=out.coarse.rgb, depth_coarse=out.coarse.depth)
    for k, v in pieces.items():
      parts.setdefault(k, []).append(v)
    if progress is not None:
      progress(min(start + chunk_size, total), total)
  return {k: np.concatenate([np.asarray(p) for p in v], 0)[:total] for k, v in parts.items()}


def render_image(model: GNTModel, variables, target_camera: Cameras, sources: SourceViews,
                 near: float, far: float, chunk_size: int = 512, verbose: bool = False
                 ) -> dict[str, np.ndarray]:
  """Renders every pixel of ``target_camera``.

  Returns:
    dict of 'rgb' [H, W, 3], 'depth' [H, W] (and coarse versions with a fine pass).
  """
  height, width = target_camera.height, target_camera.width
  start = time.perf_counter()

  def progress(done, total):
    if verbose:
      rate = done / max(time.perf_counter() - start, 1e-9)
      print(f"\r  rendered {done}/{total} rays  {rate:,.0f} rays/s  "
            f"ETA {(total - done) / max(rate, 1e-9):.0f}s", end="", flush=True)

  flat = render_rays_chunked(model, variables, image_rays(target_camera), target_camera,
                             sources, near, far, chunk_size, progress=progress)
  if verbose:
    print()
  return {k: v.reshape((height, width) + v.shape[1:]) for k, v in flat.items()}
