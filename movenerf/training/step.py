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
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from movenerf.image import metrics as image_metrics
from movenerf import sharding
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.nn import dropout
from movenerf.models import registry
from movenerf.models.decoupled.model import DecoupledNeRF
from movenerf.models.gnt.model import GNTModel
from movenerf.moe import layer as moe_layer
from movenerf.moe import losses as moe_losses
from movenerf.geometry.rays import pixel_rays, points_along_rays
from movenerf.models.gnt.render import merge_slices, num_slices, split_slices


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


def source_views(ex: dict, image_hw: tuple[int, int]) -> SourceViews:
  """One example's source images (in [0, 1]) and cameras; ``image_hw``: their static size."""
  h, w = image_hw
  return SourceViews(ex["src_images"].astype(jnp.float32) / 255.0,
                     Cameras(ex["src_intrinsics"], ex["src_c2w"], h, w))


def example_views(ex: dict, image_hw: tuple[int, int]):
  """One example's arrays -> (rays, target camera, source views).

  ``image_hw`` is the static source image size; the target camera gets it too (only its
  matrices are used to cast the rays).
  """
  target = Cameras(ex["tgt_intrinsics"], ex["tgt_c2w"], *image_hw)
  return pixel_rays(target, ex["pixels"]), target, source_views(ex, image_hw)


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


def _slice_renderer(model: GNTModel, target, sources, near, far) -> Callable:
  """``(params, featmaps, rays, key) -> (RenderOutput, diversity, probs, MoE metrics)``:
  the training forward of one slice of rays (probs [R, L, S, E], or None for GNT)."""
  moe = model.config.moe is not None

  def render(params, featmaps, rays, key):
    sample_key, dropout_key, router_key = jax.random.split(key, 3)
    # The noise streams get hashed keys: their many make_rng fold-ins then compile to
    # fused integer ops instead of one threefry while loop each (see models.dropout).
    out, aux = model.apply({"params": params}, rays, target, sources, featmaps, near, far,
                           train=True, method=GNTModel.render_rays,
                           mutable=[moe_layer.MOE_COLLECTION],
                           rngs={"sample": sample_key,
                                 "dropout": dropout.hashed_key(dropout_key),
                                 "router": dropout.hashed_key(router_key)})
    if not moe:
      return out, jnp.zeros(()), None, {}
    return (out,) + _moe_summary(aux[moe_layer.MOE_COLLECTION], rays.num_rays)

  return render


def encode_features(model: GNTModel, params, sources: SourceViews):
  """(coarse, fine) feature maps [N, H/4, W/4, D] of ``sources.images`` [N, H, W, 3]."""
  return model.apply({"params": params}, sources.images, method=GNTModel.encode)


def gnt_forward(model: GNTModel, params, rays, target, sources, near, far, key: jax.Array,
                sub_chunk: int = 0, remat: bool = False):
  """Training forward of GNT / GNT-MoVE over R rays, optionally in slices.

  The feature maps are computed once; the rays are then rendered in consecutive slices of
  ``sub_chunk`` rays by one ``lax.map`` (0: all at once). Slices keep the
  ``[rays, samples, views, channels]`` activations small (cache-resident on CPU); with
  ``remat`` each slice's activations are recomputed in the backward pass instead of
  stored, so memory no longer grows with R. MoE routing, capacity and the diversity
  loss then apply per slice (a slice is a routing group, as a device's tokens are in
  expert-parallel MoE); the results are otherwise the same computation. (The train step
  without remat does not differentiate this function: see :func:`example_grads`.)

  Returns:
    (RenderOutput over R rays, diversity loss, router probs [R, L, S, E] or None,
    MoE metrics dict).
  """
  count = num_slices(rays.num_rays, sub_chunk, "train.sub_chunk")
  featmaps = encode_features(model, params, sources)
  render = _slice_renderer(model, target, sources, near, far)
  fn = lambda r, k: render(params, featmaps, r, k)
  fn = jax.checkpoint(fn) if remat else fn
  if count == 1:
    return fn(rays, key)
  xs = (split_slices(rays, count), jax.random.split(key, count))
  out, div, probs, metrics = jax.lax.map(lambda x: fn(*x), xs)
  probs = None if probs is None else merge_slices(probs)
  return merge_slices(out), jnp.mean(div), probs, jax.tree.map(jnp.mean, metrics)


def _gnt_loss(loss_cfg, sse: dict, num_rays: int, div, cons, moe_metrics: dict):
  """Loss and metrics from summed squared errors ('coarse', optional 'fine', 'final')
  over ``num_rays`` rays, the diversity and the consistency loss (None for GNT)."""
  mse = {k: v / (3 * num_rays) for k, v in sse.items()}
  metrics = {"mse_coarse": mse["coarse"], "mse": mse["final"]}
  loss = loss_cfg.coarse_weight * mse["coarse"]
  if "fine" in mse:
    metrics["mse_fine"] = mse["fine"]
    loss = loss + loss_cfg.fine_weight * mse["fine"]
  if cons is not None:
    loss = loss + loss_cfg.diversity_weight * div + loss_cfg.consistency_weight * cons
    metrics.update(diversity=div, consistency=cons, **moe_metrics)
  metrics["loss"] = loss
  return loss, metrics


def _squared_errors(out, rgb) -> dict:
  """Summed squared colour errors of the coarse, fine (if any) and final passes."""
  sse = lambda a: jnp.sum((a - rgb) ** 2)
  errors = {"coarse": sse(out.coarse.rgb), "final": sse(out.final.rgb)}
  if out.fine is not None:
    errors["fine"] = sse(out.fine.rgb)
  return errors


def _consistency(loss_cfg, rays, depths, probs, pairs, num_pairs=None):
  """Router consistency loss of R rays: probs [R, L, S, E], coarse depths [R, S]
  (``num_pairs``: see ``moe.losses.consistency_loss``)."""
  points = points_along_rays(rays, depths)
  cons, _ = moe_losses.consistency_loss(jnp.moveaxis(probs, 1, 0), points, pairs,
                                        symmetric=loss_cfg.symmetric_consistency,
                                        num_pairs=num_pairs)
  return cons


def pairs_side_by_side(ex: dict) -> dict:
  """The example with its rays reordered so that pair ``m`` takes rows ``(2m, 2m + 1)``.

  ``ex["pairs"]`` [Q, 2] must be a matching (no row in two pairs), as
  ``data.samplers.sample_pixels_with_pairs`` draws them; (-1, -1) rows are padding. The
  valid pairs come first, in their order, then the unpaired rays in theirs. Every loss
  term is a sum over rays or pairs, so the loss is the same; what changes is which rays
  share a slice of ``train.sub_chunk`` rays: with an even slice size both rays of every
  pair are in one slice, so each slice's consistency loss needs only its own router
  probabilities (see :func:`sliced_grads`).

  Returns:
    the example with ``pixels`` and ``rgb`` reordered and ``pairs`` [Q, 2] equal to
    ``(2m, 2m + 1)`` for the m-th valid pair, (-1, -1) after the last.
  """
  pairs = ex["pairs"]
  num_rays, num_pairs = ex["pixels"].shape[0], pairs.shape[0]
  if num_pairs == 0:
    return ex
  valid = pairs[:, 0] >= 0
  slot = jnp.cumsum(valid) - 1
  # Sort keys: 2 * slot (+1 for the partner) for paired rows, after every slot otherwise.
  keys = 2 * num_pairs + jnp.arange(num_rays)
  for side in (0, 1):
    rows = jnp.where(valid, pairs[:, side], num_rays)  # padding: out of range, dropped
    keys = keys.at[rows].set(2 * slot + side, mode="drop")
  order = jnp.argsort(keys)
  slots = jnp.arange(num_pairs)[:, None]
  side_by_side = jnp.where(slots < jnp.sum(valid), 2 * slots + jnp.arange(2), -1)
  return {**ex, "pixels": ex["pixels"][order], "rgb": ex["rgb"][order],
          "pairs": side_by_side.astype(pairs.dtype)}


def example_loss(model, params, ex: dict, key: jax.Array, loss_cfg,
                 image_hw: tuple[int, int], sub_chunk: int = 0,
                 remat: bool = False) -> tuple[jnp.ndarray, dict]:
  """Loss and metrics of one example (see the module docstring). GNT-MoVE's rays are
  first reordered by :func:`pairs_side_by_side`, as in :func:`sliced_grads`."""
  if registry.is_decoupled(model):
    return decoupled_example_loss(model, params, ex, loss_cfg, image_hw)
  if model.config.moe is not None:
    ex = pairs_side_by_side(ex)
  rays, target, sources = example_views(ex, image_hw)
  out, div, probs, moe_metrics = gnt_forward(model, params, rays, target, sources,
                                             ex["near"], ex["far"], key, sub_chunk, remat)
  cons = None
  if probs is not None:
    cons = _consistency(loss_cfg, rays, out.coarse.depths, probs, ex["pairs"])
  return _gnt_loss(loss_cfg, _squared_errors(out, ex["rgb"]), rays.num_rays, div, cons,
                   moe_metrics)


def example_grads(model: GNTModel, params, ex: dict, key: jax.Array, loss_cfg,
                  image_hw: tuple[int, int], sub_chunk: int):
  """Loss, metrics and parameter gradients of one example, one slice at a time.

  The feature net runs once; :func:`sliced_grads` renders the rays slice by slice and
  the feature net's backward pass runs once, on the summed feature-map gradient.

  Returns:
    ((loss, metrics), grads), as ``jax.value_and_grad(example_loss, has_aux=True)``.
  """
  sources = source_views(ex, image_hw)
  featmaps, encode_vjp = jax.vjp(lambda p: encode_features(model, p, sources), params)
  value, (grads, featmap_grads) = sliced_grads(model, params, featmaps, ex, key, loss_cfg,
                                               image_hw, sub_chunk)
  return value, jax.tree.map(jnp.add, grads, encode_vjp(featmap_grads)[0])


def sliced_grads(model: GNTModel, params, featmaps, ex: dict, key: jax.Array, loss_cfg,
                 image_hw: tuple[int, int], sub_chunk: int):
  """Loss and metrics of one example given its feature maps, with the gradients with
  respect to the parameters (the rendering part) and to the feature maps.

  The same loss as :func:`example_loss` with slices of ``sub_chunk`` rays, but each
  slice's backward pass runs right after its forward pass inside a ``lax.scan`` that
  sums the gradients. Only one slice's activations are alive at a time, as with remat,
  without recomputing the forward pass: on the 2-core CPU the gradient of a 512-ray GNT
  example (reference configuration, slices of 32) took 4.9-5.2 s against 6.5-6.7 s
  with remat, A/B in one process, and compiled in 26 s against 44 s.

  Every loss term is a sum over slices: GNT-MoVE's rays are reordered by
  :func:`pairs_side_by_side`, so that both rays of each consistency pair are in one
  slice (slices of an even number of rays), and each slice adds its pairs' share of the
  consistency loss (normalised by the example's number of pairs).

  Returns:
    ((loss, metrics), (parameter grads, feature-map grads)).

  Raises:
    ValueError: GNT-MoVE with consistency pairs in slices of an odd number of rays.
  """
  views, x, scales = slice_inputs(model, ex, key, image_hw, sub_chunk)
  objective = slice_objective(model, views, loss_cfg, *scales)

  def body(acc, xs):
    (_, aux), grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
        params, featmaps, *xs)
    return jax.tree.map(jnp.add, acc, grads), aux

  zeros = jax.tree.map(jnp.zeros_like, (params, featmaps))
  grads, aux = jax.lax.scan(body, zeros, x)
  return slices_loss(loss_cfg, jax.tree.map(lambda a: jnp.sum(a, axis=0), aux), scales), grads


def slice_inputs(model: GNTModel, ex: dict, key: jax.Array, image_hw: tuple[int, int],
                 sub_chunk: int):
  """What :func:`slice_objective` needs to take one example in slices of ``sub_chunk``.

  Returns:
    (views, per-slice inputs, scales): views ``(target camera, source views, near,
    far)``; the inputs (rays, key, target rgb [, pair flags [n / 2, 2]]) with a leading
    [count] axis; scales ``(num rays, count, num pairs)``, the pair count None without
    consistency pairs.

  Raises:
    ValueError: GNT-MoVE with consistency pairs in slices of an odd number of rays.
  """
  moe = model.config.moe is not None
  if moe:
    ex = pairs_side_by_side(ex)
  rays, target, sources = example_views(ex, image_hw)
  num = rays.num_rays
  count = num_slices(num, sub_chunk, "train.sub_chunk")
  views = (target, sources, ex["near"], ex["far"])
  xs = (split_slices(rays, count), jax.random.split(key, count),
        split_slices(ex["rgb"], count))
  if not (moe and ex["pairs"].shape[0] > 0):
    return views, xs, (num, count, None)
  if count > 1 and (num // count) % 2:
    raise ValueError(f"GNT-MoVE's consistency pairs need slices of an even number of "
                     f"rays; got train.sub_chunk={sub_chunk} for {num} rays")
  num_pairs = jnp.sum(ex["pairs"][:, 0] >= 0)
  # Rows (2m, 2m + 1) are pair m for m < num_pairs: [R / 2, 2] flags, split by slice.
  paired = jnp.arange(num // 2 * 2).reshape(-1, 2) // 2 < num_pairs
  return views, xs + (split_slices(paired, count),), (num, count, num_pairs)


def slice_objective(model: GNTModel, views, loss_cfg, num, count,
                    num_pairs=None) -> Callable:
  """``(params, featmaps, rays, key, rgb[, pair flags]) -> (value, aux)`` of one slice.

  ``views``: see :func:`slice_inputs`. ``value`` is the slice's share of its example's
  loss (an example of ``num`` rays in ``count`` slices, with ``num_pairs`` consistency
  pairs or None): the sum of the shares of all slices is :func:`example_loss`. ``aux`` =
  (summed squared errors, diversity, consistency or None, MoE metrics), to sum over
  slices for :func:`slices_loss`. The scales may be traced values.
  """
  moe = model.config.moe is not None
  render = _slice_renderer(model, *views)

  def objective(p, f, r, k, rgb, paired=None):
    out, div, probs, moe_metrics = render(p, f, r, k)
    sse = _squared_errors(out, rgb)
    value = loss_cfg.coarse_weight * sse["coarse"] / (3 * num)
    if "fine" in sse:
      value = value + loss_cfg.fine_weight * sse["fine"] / (3 * num)
    cons = None
    if moe:
      value = value + loss_cfg.diversity_weight * div / count
      cons = jnp.zeros(())
    if paired is not None:
      local = jnp.where(paired, jnp.arange(paired.size).reshape(-1, 2), -1)
      cons = _consistency(loss_cfg, r, out.coarse.depths, probs, local, num_pairs)
      if loss_cfg.consistency_weight:
        value = value + loss_cfg.consistency_weight * cons
    return value, (sse, div, cons, moe_metrics)

  return objective


def slices_loss(loss_cfg, aux_sum, scales) -> tuple[jnp.ndarray, dict]:
  """(loss, metrics) of an example from its slices' ``aux`` summed (:func:`slice_objective`)
  and its ``scales``; a mean over examples of these sums gives the batch's mean."""
  sse, div, cons, moe_metrics = aux_sum
  num, count, _ = scales
  return _gnt_loss(loss_cfg, sse, num, div / count, cons,
                   jax.tree.map(lambda m: m / count, moe_metrics))


def train_step(state: TrainState, batch: dict, *, model, tx, loss_cfg,
               image_hw: tuple[int, int], sub_chunk: int = 0, remat: bool = False,
               example_loop: str = "vmap") -> tuple[TrainState, dict]:
  """One update on a batch of B examples (unjitted; see :func:`make_train_step`).

  The gradient is the mean of the examples' gradients: of :func:`sliced_grads` (and the
  feature net's) when the rays are sliced without remat, else of :func:`example_loss`.

  ``example_loop``: "vmap" batches the examples' programs (accelerators, and a batch split
  over devices); "sequential" writes one program per example (up to 4, else ``lax.map``
  over them). On one CPU device the batched gathers and scatters of vmapped epipolar
  sampling are slow: the gradient of one 512-ray example at the reference configuration
  took 12.3 s vmapped, 10.0 s with ``lax.map`` and 7.1 s as its own program.
  """
  num = batch["pixels"].shape[0]
  keys = jax.random.split(jax.random.fold_in(state.rng, state.step), num)

  def over_examples(fn, *per_example):
    """``fn(example, key, *per_example)`` for every example of the batch (``per_example``:
    pytrees with a leading batch axis), outputs stacked."""
    xs = (batch, keys) + per_example
    if example_loop == "sequential" and num <= 4:
      parts = [fn(*jax.tree.map(lambda a, i=i: a[i], xs)) for i in range(num)]
      return jax.tree.map(lambda *ys: jnp.stack(ys), *parts)
    if example_loop == "sequential":
      return jax.lax.map(lambda ys: fn(*ys), xs)
    if example_loop == "vmap":
      return jax.vmap(fn)(*xs)
    raise ValueError(f"example_loop must be 'sequential' or 'vmap', got {example_loop!r}")

  mean = lambda tree: jax.tree.map(lambda a: jnp.mean(a, axis=0), tree)
  if sub_chunk and not remat and not registry.is_decoupled(model):
    # Per-slice backward passes (see sliced_grads), the mean over examples after. The
    # feature net's backward pass runs once for the batch, on the mean feature-map
    # gradient: per-example gradients of its convolutions, vmapped over a batch split
    # over devices, came out wrong (the last convolution's kernel gradient off by ~100%
    # on an 8-device CPU mesh; checked by tests/sharded_train_check.py).
    def encode(params):
      return over_examples(
          lambda ex, k: encode_features(model, params, source_views(ex, image_hw)))

    featmaps, encode_vjp = jax.vjp(encode, state.params)
    value, (grads, featmap_grads) = over_examples(
        lambda ex, k, f: sliced_grads(model, state.params, f, ex, k, loss_cfg, image_hw,
                                      sub_chunk), featmaps)
    (loss, metrics), grads = mean((value, grads))
    featmap_grads = jax.tree.map(lambda g: g / num, featmap_grads)
    grads = jax.tree.map(jnp.add, grads, encode_vjp(featmap_grads)[0])
  else:
    def loss_fn(params):
      losses, metrics = over_examples(
          lambda ex, k: example_loss(model, params, ex, k, loss_cfg, image_hw, sub_chunk,
                                     remat))
      return jnp.mean(losses), mean(metrics)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return apply_gradients(state, tx, loss, metrics, grads)


def apply_gradients(state: TrainState, tx, loss, metrics: dict,
                    grads) -> tuple[TrainState, dict]:
  """The optimiser update of a step's gradients, and the step's metrics (+ grad_norm,
  param_norm, update_skipped, psnr).

  The update runs only when the loss and every gradient are finite (a non-finite
  gradient makes the norm non-finite); otherwise parameters and optimiser state stay.
  """
  # Per-leaf norms and a ``cond`` compile in 4.8 s on CPU for the reference model (404
  # leaves), where raveling everything to one vector and masking took 10.9 s.
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)

  def update():
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), new_opt

  params, opt_state = jax.lax.cond(finite, update, lambda: (state.params, state.opt_state))
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      skipped=state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32))
  metrics = dict(
      metrics, grad_norm=grad_norm, param_norm=optax.global_norm(state.params),
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
                    state_sharding, sub_chunk: int = 0, remat: bool = False,
                    host_loop: bool | None = None) -> Callable:
  """``(state, batch) -> (state, metrics)`` jitted over ``mesh`` with the state donated.

  ``sub_chunk`` > 0 renders each example's rays in slices of that many, with a backward
  pass per slice (:func:`example_grads`), or with ``remat`` one backward pass through
  rematerialised slices (:func:`gnt_forward`); GNT family only. Examples are
  looped over on a single CPU device and vmapped otherwise (see :func:`train_step`).

  ``host_loop`` (default: on a single CPU device, for per-slice backward passes) runs
  the slices from a loop on the host over one compiled slice program instead
  (:mod:`movenerf.training.slice_loop`): the same step, whose programs are the same
  for every number of rays per step. Both have ``lower(state, batch).compile()``.
  """
  single_cpu = mesh.devices.size == 1 and mesh.devices.flat[0].platform == "cpu"
  per_slice = bool(sub_chunk) and not remat and not registry.is_decoupled(model)
  if host_loop is None:
    host_loop = single_cpu and per_slice
  if host_loop:
    if not (per_slice and mesh.devices.size == 1):
      raise ValueError("the host loop over slices needs train.sub_chunk > 0 without remat, "
                       f"a GNT-family model and one device (got sub_chunk={sub_chunk}, "
                       f"remat={remat}, {mesh.devices.size} devices)")
    from movenerf.training import slice_loop  # pylint: disable=g-import-not-at-top
    return slice_loop.SliceLoopStep(model, tx, loss_cfg, image_hw, sub_chunk,
                                    state_sharding, mesh)
  batch_sharding = NamedSharding(mesh, P(sharding.DATA_AXIS))
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
