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
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.models.gnt.model import GNTModel
from movenerf.moe.expert_map import expert_fractions
from movenerf.moe.layer import MOE_COLLECTION, moe_layers
from movenerf.geometry.rays import Rays, image_rays
from movenerf.sharding import DATA_AXIS


@functools.partial(jax.jit, static_argnums=0)
def encode_sources(model: GNTModel, variables, images: jnp.ndarray):
  """[V, H, W, 3] -> (coarse, fine) feature maps."""
  return model.apply(variables, images, method=GNTModel.encode)


def default_sub_chunk() -> int:
  """Rays per inner step: 16 on CPU, 0 (= whole chunk) on accelerators.

  On CPU the [rays, samples, views, D] intermediates of a small slice stay in cache
  (``benchmarks/README.md`` has the measurement).
  """
  return 16 if jax.default_backend() == "cpu" else 0


def num_slices(num_rays: int, sub_chunk: int, setting: str = "sub_chunk") -> int:
  """How many slices of ``sub_chunk`` rays make ``num_rays`` (1: 0 or >= R, no slicing).

  Raises:
    ValueError: naming ``setting`` when the rays do not divide into such slices.
  """
  if not sub_chunk or sub_chunk >= num_rays:
    return 1
  if num_rays % sub_chunk:
    raise ValueError(f"{num_rays} rays do not divide into slices of {sub_chunk} ({setting})")
  return num_rays // sub_chunk


def split_slices(tree, count: int):
  """Leading axis R -> [count, R / count] on every leaf."""
  return jax.tree.map(lambda a: a.reshape((count, a.shape[0] // count) + a.shape[1:]), tree)


def merge_slices(tree):
  """[count, n, ...] -> [count * n, ...] on every leaf (inverse of ``split_slices``)."""
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), tree)


def map_sub_chunks(fn: Callable, rays: Rays, sub_chunk: int):
  """Applies ``fn`` to consecutive slices of ``sub_chunk`` rays inside one program.

  ``lax.map`` runs the slices one after the other, so the per-slice intermediates stay
  small (cache-resident on CPU) while compiling ``fn`` once. R must divide by
  ``sub_chunk``; 0 or a size >= R applies ``fn`` to all rays at once.
  """
  count = num_slices(rays.num_rays, sub_chunk)
  if count == 1:
    return fn(rays)
  return merge_slices(jax.lax.map(fn, split_slices(rays, count)))


def ray_mesh(chunk_size: int, devices=None) -> Mesh:
  """A one-axis (``data``) mesh over the first n of ``devices`` (default: this
  process's), n the largest count that divides ``chunk_size``: each device renders an
  equal share of every chunk's rays."""
  devices = list(jax.local_devices() if devices is None else devices)
  count = max(n for n in range(1, len(devices) + 1) if chunk_size % n == 0)
  return Mesh(np.asarray(devices[:count]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def _put(tree, mesh: Mesh, spec: P):
  return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, spec)), tree)


def place_for_render(chunk_size: int, replicated, rays: Rays | None = None, devices=None):
  """Where chunks of ``chunk_size`` rays render: the ``ray_mesh`` of ``devices``.

  Returns:
    ``(mesh, replicated, rays)``: ``replicated`` (any pytree: variables, views, feature
    maps) copied to every device of the mesh, ``rays`` split over its ``data`` axis; on
    one device ``(None, replicated, rays)`` as given (``render_chunk``'s one-device
    program).
  """
  mesh = ray_mesh(chunk_size, devices)
  if mesh.size == 1:
    return None, replicated, rays
  if rays is not None:
    rays = _put(rays, mesh, P(DATA_AXIS))
  return mesh, _put(replicated, mesh, P()), rays


@functools.partial(jax.jit, static_argnums=(0, 8, 9, 10))
def render_chunk(model: GNTModel, variables, rays: Rays, target_camera: Cameras,
                 sources: SourceViews, featmaps, near, far, sub_chunk: int = 0,
                 collect_experts: bool = False, mesh: Mesh | None = None):
  """Evaluation rendering of R rays (deterministic sampling, no dropout).

  ``sub_chunk`` > 0 renders the rays in slices of that size inside the compiled call.
  With ``collect_experts`` (GNT-MoVE) returns ``(RenderOutput, top1 [L, R, S])``: the
  top-1 expert of every sample in each of the L MoE layers of the final pass.
  With a ``mesh`` of several devices (``ray_mesh``) each device renders its share of the
  rays (R / devices, in slices of ``sub_chunk``; rays are independent, so the result is
  the one-device result); ``place_for_render`` gives the mesh and puts the arguments on
  it.
  """
  if mesh is not None and mesh.size > 1:
    per_device = functools.partial(_render_chunk_local, model, sub_chunk=sub_chunk,
                                   collect_experts=collect_experts)
    rays_spec = P(DATA_AXIS)
    out_specs = (rays_spec, P(None, DATA_AXIS)) if collect_experts else rays_spec
    return jax.shard_map(per_device, mesh=mesh,
                         in_specs=(P(), rays_spec, P(), P(), P(), P(), P()),
                         out_specs=out_specs, check_vma=False)(
                             variables, rays, target_camera, sources, featmaps, near, far)
  return _render_chunk_local(model, variables, rays, target_camera, sources, featmaps, near,
                             far, sub_chunk, collect_experts)


def _render_chunk_local(model: GNTModel, variables, rays: Rays, target_camera: Cameras,
                        sources: SourceViews, featmaps, near, far, sub_chunk: int,
                        collect_experts: bool):
  """``render_chunk`` on one device (traced inside it)."""
  def one(r):
    if not collect_experts:
      return model.apply(variables, r, target_camera, sources, featmaps, near, far,
                         method=GNTModel.render_rays)
    out, aux = model.apply(variables, r, target_camera, sources, featmaps, near, far,
                           method=GNTModel.render_rays, mutable=[MOE_COLLECTION])
    top1 = jnp.stack([e["top1"][-1] for _, e in moe_layers(aux[MOE_COLLECTION])])
    return out, top1.reshape(top1.shape[0], r.num_rays, -1)

  if not collect_experts:
    return map_sub_chunks(one, rays, sub_chunk)
  out, top1 = map_sub_chunks(lambda r: _rays_leading(one(r)), rays, sub_chunk)
  return out, jnp.moveaxis(top1, 0, 1)


def _rays_leading(result):
  """(out, top1 [L, R, S]) -> (out, top1 [R, L, S]) so that rays lead for sub-chunking."""
  out, top1 = result
  return out, jnp.moveaxis(top1, 1, 0)


def render_rays_chunked(model: GNTModel, variables, rays: Rays, target_camera: Cameras,
                        sources: SourceViews, near: float, far: float, chunk_size: int = 512,
                        featmaps=None, progress: Callable[[int, int], Any] | None = None,
                        sub_chunk: int | None = None, devices=None) -> dict[str, np.ndarray]:
  """Renders any number of rays in fixed-size chunks (one compilation).

  Each chunk's rays are split over ``devices`` (default: this process's; ``ray_mesh``
  says how many). ``sub_chunk`` (default: ``default_sub_chunk()``) slices each device's
  share; a share it does not divide is rendered whole.

  Returns:
    dict with 'rgb' [R, 3], 'depth' [R] (final pass), with a fine pass 'rgb_coarse',
    'depth_coarse', and for GNT-MoVE 'experts' [R, L, E] (share of each ray's samples
    whose top-1 expert is e, per MoE layer).
  """
  if featmaps is None:
    featmaps = encode_sources(model, variables, sources.images)
  if sub_chunk is None:
    sub_chunk = default_sub_chunk()
  mesh, (variables, target_camera, sources, featmaps, near, far), _ = place_for_render(
      chunk_size, (variables, target_camera, sources, featmaps, near, far), devices=devices)
  if sub_chunk and (chunk_size // (1 if mesh is None else mesh.size)) % sub_chunk:
    sub_chunk = 0
  total = rays.num_rays
  padded = -(-total // chunk_size) * chunk_size
  pad = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], padded - total, 0)], 0)
  rays = Rays(pad(rays.origins), pad(rays.directions))
  moe = model.config.moe
  parts: dict[str, list] = {}
  for start in range(0, padded, chunk_size):
    chunk = rays[start:start + chunk_size]
    if mesh is not None:
      chunk = _put(chunk, mesh, P(DATA_AXIS))
    out = render_chunk(model, variables, chunk, target_camera, sources, featmaps, near, far,
                       sub_chunk, moe is not None, mesh)
    pieces = {}
    if moe is not None:
      out, top1 = out
      pieces["experts"] = jnp.moveaxis(expert_fractions(top1, moe.num_experts), 0, 1)
    pieces.update(rgb=out.final.rgb, depth=out.final.depth)
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
