"""The train state and the sharded train step.

A batch is ``B`` examples (see :mod:`movenerf.data.pipeline`), each a target view's rays
with its own source views. The step ``vmap`` s the per-example loss over the batch (on
a single CPU device it loops over the examples instead, see :func:`train_step`) and
runs as one ``jit`` program over a ``(data, expert)`` mesh: the batch is split over
``data`` (each device renders its examples' rays), parameters are replicated except the
MoVE experts, which are split over ``expert``; XLA inserts the all-reduce that averages
the gradients and metrics over ``data``. This is the pmap program written as sharded
``jit`` (``jax.pmap`` is the legacy form in this JAX).

GNT loss = coarse MSE + fine MSE + diversity weight x diversity + consistency weight x
consistency; Decoupling-NeRF loss = ssim weight x (1 - SSIM) + mse weight x MSE over the
whole target image (examples drawn with ``pixel_mode="image"``); averaged over examples.
An update whose gradients are not all finite is not applied (parameters and optimiser
state stay as they were) and is counted in ``TrainState.skipped``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from movenerf import metrics as image_metrics
from movenerf import sharding
from movenerf.cameras import Cameras
from movenerf.epipolar import SourceViews
from movenerf.models import registry
from movenerf.models.decoupled import DecoupledNeRF
from movenerf.models.gnt_model import GNTModel
from movenerf.moe import layer as moe_layer
from movenerf.moe import losses as moe_losses
from movenerf.rays import pixel_rays, points_along_rays


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator.

  Attributes:
    step: [] int32 updates done.
    params: model parameters.
    opt_state: optimiser state.
    rng: [2] uint32 base key; step ``s`` uses ``fold_in(rng, s)``.
    skipped: [] int32 updates skipped for non-finite gradients.
  """

  step: jnp.ndarray
  params: Any
  opt_state: Any
  rng: jnp.ndarray
  skipped: jnp.ndarray


def example_views(ex: dict, image_hw: tuple[int, int]):
  """One example's arrays -> (rays, target camera, source views).

  ``image_hw`` is the static source image size; the target camera gets it too (only its
  matrices are used to cast the rays).
  """
  h, w = image_hw
  target = Cameras(ex["tgt_intrinsics"], ex["tgt_c2w"], h, w)
  sources = SourceViews(ex["src_images"].astype(jnp.float32) / 255.0,
                        Cameras(ex["src_intrinsics"], ex["src_c2w"], h, w))
  return pixel_rays(target, ex["pixels"]), target, sources


def decoupled_example_loss(model: DecoupledNeRF, params, ex: dict, loss_cfg,
                           image_hw: tuple[int, int]) -> tuple[jnp.ndarray, dict]:
  """Decoupling-NeRF: the whole target image from its source views; SSIM (+ MSE) loss.

  ``ex["rgb"]`` holds every target pixel in raster order ([H * W, 3]).
  """
  h, w = image_hw
  if ex["rgb"].shape[0] != h * w:
    raise ValueError(f"Decoupling-NeRF trains on whole images: {ex['rgb'].shape[0]} target "
                     f"pixels for a {h}x{w} view; draw examples with pixel_mode='image'")
  _, target, sources = example_views(ex, image_hw)
  out = model.apply({"params": params}, sources.images, sources.cameras, target)
  gt = ex["rgb"].reshape(h, w, 3)
  mse = jnp.mean((out["rgb"] - gt) ** 2)
  ssim = jnp.mean(image_metrics.ssim(out["rgb"], gt, data_range=1.0))
  loss = loss_cfg.ssim_weight * (1.0 - ssim) + loss_cfg.mse_weight * mse
  return loss, {"mse": mse, "ssim": ssim, "loss": loss}


def _moe_summary(collection, num_rays: int) -> tuple[jnp.ndarray, jnp.ndarray, dict]:
  """(diversity, coarse router probs [R, L, S, E], per-layer metrics) of one forward."""
  div = moe_layer.total_diversity_loss(collection)
  probs = jnp.moveaxis(moe_layer.stacked_router_probs(collection, num_rays), 0, 1)
  metrics = {}
  for i, (_, entry) in enumerate(moe_layer.moe_layers(collection)):
    m = entry["metrics"][0]
    metrics[f"moe/layer{i}/dropped_fraction"] = m["dropped_fraction"]
    metrics[f"moe/layer{i}/router_entropy"] = m["router_entropy"]
    for e in range(m["importance"].shape[-1]):
      metrics[f"moe/layer{i}/importance_{e}"] = m["importance"][e]
      metrics[f"moe/layer{i}/load_{e}"] = m["load"][e]
  return div, probs, metrics


def gnt_forward(model: GNTModel, params, rays, target, sources, near, far, key: jax.Array,
                sub_chunk: int = 0, remat: bool = False):
  """Training forward of GNT / GNT-MoVE over R rays, optionally in slices.

  The feature maps are computed once; the rays are then rendered in consecutive slices of
  ``sub_chunk`` rays by one ``lax.map`` (0: all at once). Slices keep the
  ``[rays, samples, views, channels]`` activations small (cache-resident on CPU); with
  ``remat`` each slice's activations are recomputed in the backward pass instead of
  stored, so memory no longer grows with R. MoE routing, capacity and the diversity
  loss then apply per slice (a slice is a routing group, as a device's tokens are in
  expert-parallel MoE); the results are otherwise the same computation.

  Returns:
    (RenderOutput over R rays, diversity loss, router probs [R, L, S, E] or None,
    MoE metrics dict).
  """
  num = rays.num_rays
  if sub_chunk and sub_chunk < num and num % sub_chunk:
    raise ValueError(f"{num} rays per example do not divide into slices of {sub_chunk} "
                     "(train.sub_chunk)")
  featmaps = model.apply({"params": params}, sources.images, method=GNTModel.encode)
  moe = model.config.moe is not None

  def one(r, k):
    sample_key, dropout_key, router_key = jax.random.split(k, 3)
    out, aux = model.apply({"params": params}, r, target, sources, featmaps, near, far,
                           train=True, method=GNTModel.render_rays,
                           mutable=[moe_layer.MOE_COLLECTION],
                           rngs={"sample": sample_key, "dropout": dropout_key,
                                 "router": router_key})
    if not moe:
      return out, jnp.zeros(()), None, {}
    return (out,) + _moe_summary(aux[moe_layer.MOE_COLLECTION], r.num_rays)

  if not sub_chunk or sub_chunk >= num:
    return (jax.checkpoint(one) if remat else one)(rays, key)
  count = num // sub_chunk
  fn = jax.checkpoint(one) if remat else one
  split = jax.tree.map(lambda a: a.reshape((count, sub_chunk) + a.shape[1:]), rays)
  out, div, probs, metrics = jax.lax.map(lambda xs: fn(*xs),
                                         (split, jax.random.split(key, count)))
  merge = lambda a: a.reshape((num,) + a.shape[2:])
  out = jax.tree.map(merge, out)
  probs = None if probs is None else merge(probs)
  return out, jnp.mean(div), probs, jax.tree.map(jnp.mean, metrics)


def example_loss(model, params, ex: dict, key: jax.Array, loss_cfg,
                 image_hw: tuple[int, int], sub_chunk: int = 0,
                 remat: bool = False) -> tuple[jnp.ndarray, dict]:
  """Loss and metrics of one example (see the module docstring)."""
  if registry.is_decoupled(model):
    return decoupled_example_loss(model, params, ex, loss_cfg, image_hw)
  rays, target, sources = example_views(ex, image_hw)
  out, div, probs, moe_metrics = gnt_forward(model, params, rays, target, sources,
                                             ex["near"], ex["far"], key, sub_chunk, remat)
  mse_c = jnp.mean((out.coarse.rgb - ex["rgb"]) ** 2)
  metrics = {"mse_coarse": mse_c}
  loss = loss_cfg.coarse_weight * mse_c
  if out.fine is not None:
    mse_f = jnp.mean((out.fine.rgb - ex["rgb"]) ** 2)
    metrics["mse_fine"] = mse_f
    loss = loss + loss_cfg.fine_weight * mse_f
  metrics["mse"] = jnp.mean((out.final.rgb - ex["rgb"]) ** 2)
  if probs is not None:
    points = points_along_rays(rays, out.coarse.depths)
    cons, _ = moe_losses.consistency_loss(jnp.moveaxis(probs, 1, 0), points, ex["pairs"],
                                          symmetric=loss_cfg.symmetric_consistency)
    loss = loss + loss_cfg.diversity_weight * div + loss_cfg.consistency_weight * cons
    metrics.update(diversity=div, consistency=cons, **moe_metrics)
  metrics["loss"] = loss
  return loss, metrics


def train_step(state: TrainState, batch: dict, *, model, tx, loss_cfg,
               image_hw: tuple[int, int], sub_chunk: int = 0, remat: bool = False,
               example_loop: str = "vmap") -> tuple[TrainState, dict]:
  """One update on a batch of B examples (unjitted; see :func:`make_train_step`).

  ``example_loop``: "vmap" batches the examples' programs (accelerators, and a batch split
  over devices); "sequential" writes one program per example (up to 4, else ``lax.map``
  over them). On one CPU device the batched gathers and scatters of vmapped epipolar
  sampling are slow: the gradient of one 512-ray example at the reference configuration
  took 12.3 s vmapped, 10.0 s with ``lax.map`` and 7.1 s as its own program.
  """
  num = batch["pixels"].shape[0]
  keys = jax.random.split(jax.random.fold_in(state.rng, state.step), num)

  def loss_fn(params):
    one = lambda ex, k: example_loss(model, params, ex, k, loss_cfg, image_hw, sub_chunk,
                                     remat)
    if example_loop == "sequential" and num <= 4:
      parts = [one(jax.tree.map(lambda a, i=i: a[i], batch), keys[i]) for i in range(num)]
      losses, metrics = jax.tree.map(lambda *xs: jnp.stack(xs), *parts)
    elif example_loop == "sequential":
      losses, metrics = jax.lax.map(lambda xs: one(*xs), (batch, keys))
    elif example_loop == "vmap":
      losses, metrics = jax.vmap(one)(batch, keys)
    else:
      raise ValueError(f"example_loop must be 'sequential' or 'vmap', got {example_loop!r}")
    return jnp.mean(losses), jax.tree.map(jnp.mean, metrics)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  # Checks and norms run on one raveled vector, not per parameter: XLA on CPU compiles
  # every small per-leaf op separately, and the per-leaf forms (isfinite, where, norms
  # over ~200 leaves) more than doubled the compile time of the step (measured 41 -> 25 s
  # for the tiny model). A non-finite gradient makes the norm non-finite.
  flat_grads, unravel = jax.flatten_util.ravel_pytree(grads)
  grad_norm = jnp.sqrt(jnp.sum(jnp.square(flat_grads)))
  finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
  # Zeros instead of NaNs keep the skipped branch's optimiser arithmetic finite.
  safe = unravel(jnp.where(finite, flat_grads, jnp.zeros_like(flat_grads)))
  updates, new_opt = tx.update(safe, state.opt_state, state.params)
  # A skipped update: zero steps (exactly the old parameters) and the old optimiser state.
  updates = jax.tree.map(lambda u: u * finite.astype(u.dtype), updates)
  new_opt = jax.lax.cond(finite, lambda: new_opt, lambda: state.opt_state)
  new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      opt_state=new_opt,
      skipped=state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32))
  flat_params, _ = jax.flatten_util.ravel_pytree(state.params)
  metrics.update(
      grad_norm=grad_norm, param_norm=jnp.sqrt(jnp.sum(jnp.square(flat_params))),
      update_skipped=1.0 - finite.astype(jnp.float32), psnr=-10.0 * jnp.log10(metrics["mse"]))
  return new_state, metrics


def state_shardings(state: TrainState, mesh: Mesh) -> TrainState:
  """NamedShardings: MoVE experts (params and their optimiser moments) split over the
  ``expert`` axis, everything else replicated."""
  def spec_for(path, leaf):
    del leaf
    keys = [getattr(p, "key", getattr(p, "name", "")) for p in path]
    return P(sharding.EXPERT_AXIS) if "experts" in keys else P()
  specs = jax.tree_util.tree_map_with_path(spec_for, state)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs)


def make_train_step(model, tx, loss_cfg, image_hw: tuple[int, int], mesh: Mesh,
                    state_sharding, sub_chunk: int = 0, remat: bool = False) -> Callable:
  """``(state, batch) -> (state, metrics)`` jitted over ``mesh`` with the state donated.

  ``sub_chunk`` / ``remat``: see :func:`gnt_forward` (GNT family only). Examples are
  looped over on a single CPU device and vmapped otherwise (see :func:`train_step`).
  """
  batch_sharding = NamedSharding(mesh, P(sharding.DATA_AXIS))
  single_cpu = mesh.devices.size == 1 and mesh.devices.flat[0].platform == "cpu"
  example_loop = "sequential" if single_cpu else "vmap"
  fn = functools.partial(train_step, model=model, tx=tx, loss_cfg=loss_cfg, image_hw=image_hw,
                         sub_chunk=sub_chunk, remat=remat,
                         example_loop=example_loop)
  return jax.jit(fn, in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, NamedSharding(mesh, P())),
                 donate_argnums=(0,))


def create_state(params, tx, seed: int, mesh: Mesh) -> tuple[TrainState, Any]:
  """A fresh TrainState placed on ``mesh``; returns (state, its shardings)."""
  def build(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                      rng=jax.random.key_data(jax.random.PRNGKey(seed)),
                      skipped=jnp.zeros((), jnp.int32))
  abstract = jax.eval_shape(build, params)
  shardings = state_shardings(abstract, mesh)
  # Created directly in its sharded layout by a jitted constructor (no host copy of the
  # optimiser state).
  state = jax.jit(build, out_shardings=shardings)(params)
  return state, shardings
