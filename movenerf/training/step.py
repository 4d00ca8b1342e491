"""The train state and the sharded train step.

A batch is ``B`` examples (see :mod:`movenerf.data.pipeline`), each a target view's rays
with its own source views. The step ``vmap`` s the per-example loss over the batch and
runs as one ``jit`` program over a ``(data, expert)`` mesh: the batch is split over
``data`` (each device renders its examples' rays), parameters are replicated except the
MoVE experts, which are split over ``expert``; XLA inserts the all-reduce that averages
the gradients and metrics over ``data``. This is the pmap program written as sharded
``jit`` (``jax.pmap`` is the legacy form in this JAX).

Loss = coarse MSE + fine MSE + diversity weight x diversity + consistency weight x
consistency, averaged over examples. An update whose gradients are not all finite is
not applied (parameters and optimiser state stay as they were) and is counted in
``TrainState.skipped``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from movenerf import sharding
from movenerf.cameras import Cameras
from movenerf.epipolar import SourceViews
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


def example_loss(model: GNTModel, params, ex: dict, key: jax.Array, loss_cfg,
                 image_hw: tuple[int, int]) -> tuple[jnp.ndarray, dict]:
  """Loss and metrics of one example (see the module docstring)."""
  rays, target, sources = example_views(ex, image_hw)
  sample_key, dropout_key, router_key = jax.random.split(key, 3)
  out, aux = model.apply({"params": params}, rays, target, sources, ex["near"], ex["far"],
                         train=True, mutable=[moe_layer.MOE_COLLECTION],
                         rngs={"sample": sample_key, "dropout": dropout_key,
                               "router": router_key})
  mse_c = jnp.mean((out.coarse.rgb - ex["rgb"]) ** 2)
  metrics = {"mse_coarse": mse_c}
  loss = loss_cfg.coarse_weight * mse_c
  if out.fine is not None:
    mse_f = jnp.mean((out.fine.rgb - ex["rgb"]) ** 2)
    metrics["mse_fine"] = mse_f
    loss = loss + loss_cfg.fine_weight * mse_f
  metrics["mse"] = jnp.mean((out.final.rgb - ex["rgb"]) ** 2)
  collection = aux.get(moe_layer.MOE_COLLECTION, {})
  if model.config.moe is not None:
    div = moe_layer.total_diversity_loss(collection)
    probs = moe_layer.stacked_router_probs(collection, rays.num_rays)  # coarse pass
    points = points_along_rays(rays, out.coarse.depths)
    cons, _ = moe_losses.consistency_loss(probs, points, ex["pairs"],
                                          symmetric=loss_cfg.symmetric_consistency)
    loss = loss + loss_cfg.diversity_weight * div + loss_cfg.consistency_weight * cons
    metrics.update(diversity=div, consistency=cons)
    for i, (_, entry) in enumerate(moe_layer.moe_layers(collection)):
      m = entry["metrics"][0]
      metrics[f"moe/layer{i}/dropped_fraction"] = m["dropped_fraction"]
      metrics[f"moe/layer{i}/router_entropy"] = m["router_entropy"]
      for e in range(m["importance"].shape[-1]):
        metrics[f"moe/layer{i}/importance_{e}"] = m["importance"][e]
        metrics[f"moe/layer{i}/load_{e}"] = m["load"][e]
  metrics["loss"] = loss
  return loss, metrics


def _tree_all_finite(tree) -> jnp.ndarray:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def train_step(state: TrainState, batch: dict, *, model: GNTModel, tx, loss_cfg,
               image_hw: tuple[int, int]) -> tuple[TrainState, dict]:
  """One update on a batch of B examples (unjitted; see :func:`make_train_step`)."""
  num = batch["pixels"].shape[0]
  keys = jax.random.split(jax.random.fold_in(state.rng, state.step), num)

  def loss_fn(params):
    losses, metrics = jax.vmap(
        lambda ex, k: example_loss(model, params, ex, k, loss_cfg, image_hw))(batch, keys)
    return jnp.mean(losses), jax.tree.map(jnp.mean, metrics)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  finite = _tree_all_finite(grads) & jnp.isfinite(loss)
  # Zeros instead of NaNs keep the skipped branch's optimiser arithmetic finite.
  safe = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
  updates, new_opt = tx.update(safe, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jnp.where(finite, new, old)
  new_state = state.replace(
      step=state.step + 1,
      params=jax.tree.map(keep, new_params, state.params),
      opt_state=jax.tree.map(keep, new_opt, state.opt_state),
      skipped=state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32))
  metrics.update(
      grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(state.params),
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


def make_train_step(model: GNTModel, tx, loss_cfg, image_hw: tuple[int, int], mesh: Mesh,
                    state_sharding) -> Callable:
  """``(state, batch) -> (state, metrics)`` jitted over ``mesh`` with the state donated."""
  batch_sharding = NamedSharding(mesh, P(sharding.DATA_AXIS))
  fn = functools.partial(train_step, model=model, tx=tx, loss_cfg=loss_cfg, image_hw=image_hw)
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
