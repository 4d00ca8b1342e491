"""The GNT / GNT-MoVE training loss, written once as the loss of a slice of rays.

An example's R target rays are taken in ``count`` slices of R / count rays (``count`` =
1: the whole example). Each slice renders its rays from the example's feature maps and
adds its share of the loss; every term is a sum over rays or pairs, so the shares add up
to the example's loss whatever the slicing:

  loss = coarse_weight x MSE(coarse) + fine_weight x MSE(fine)
         + diversity_weight x diversity + consistency_weight x consistency

with the MSEs over the R rays' colours, the diversity (load-balancing) loss averaged over
the slices (each slice is one routing group) and the geometry-aware consistency loss over
the example's pairs of nearby rays (GNT-MoVE; :mod:`movenerf.moe.losses`). GNT-MoVE's rays
are first reordered by :func:`pairs_side_by_side`, so that both rays of every pair fall in
one slice of an even number of rays.

:func:`example_loss` is the whole example in one slice; :class:`SlicedLoss` gives the
training engine the pieces to take an example slice by slice, each slice's backward pass
right after its forward pass (:mod:`movenerf.training.slice_loop`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from movenerf.geometry.epipolar import SourceViews
from movenerf.geometry.rays import points_along_rays
from movenerf.models.examples import example_views
from movenerf.models.gnt.model import GNTModel
from movenerf.models.gnt.render import num_slices, split_slices
from movenerf.moe import layer as moe_layer
from movenerf.moe import losses as moe_losses
from movenerf.nn import prng


def encode_features(model: GNTModel, params, sources: SourceViews):
  """(coarse, fine) feature maps [V, H/4, W/4, D] of ``sources.images`` [V, H, W, 3]."""
  return model.apply({"params": params}, sources.images, method=GNTModel.encode)


def pairs_side_by_side(ex: dict) -> dict:
  """The example with its rays reordered so that pair ``m`` takes rows ``(2m, 2m + 1)``.

  ``ex["pairs"]`` [Q, 2] must be a matching (no row in two pairs), as
  ``data.samplers.sample_pixels_with_pairs`` draws them; (-1, -1) rows are padding. The
  valid pairs come first, in their order, then the unpaired rays in theirs. Every loss
  term is a sum over rays or pairs, so the loss is the same; what changes is which rays
  share a slice: with an even slice size both rays of every pair are in one slice, so
  each slice's consistency loss needs only its own router probabilities.

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
    # Hashed keys for the noise streams: flax's make_rng fold-ins on them compile to
    # fused integer ops (see movenerf.nn.prng).
    out, aux = model.apply({"params": params}, rays, target, sources, featmaps, near, far,
                           train=True, method=GNTModel.render_rays,
                           mutable=[moe_layer.MOE_COLLECTION],
                           rngs={"sample": sample_key,
                                 "dropout": prng.hashed_key(dropout_key),
                                 "router": prng.hashed_key(router_key)})
    if not moe:
      return out, jnp.zeros(()), None, {}
    return (out,) + _moe_summary(aux[moe_layer.MOE_COLLECTION], rays.num_rays)

  return render


def _squared_errors(out, rgb) -> dict:
  """Summed squared colour errors of the coarse, fine (if any) and final passes."""
  sse = lambda a: jnp.sum((a - rgb) ** 2)
  errors = {"coarse": sse(out.coarse.rgb), "final": sse(out.final.rgb)}
  if out.fine is not None:
    errors["fine"] = sse(out.fine.rgb)
  return errors


def _weighted(loss_cfg, terms, num, count) -> jnp.ndarray:
  """The loss of summed ``terms`` = (squared errors, diversity, consistency or None, _)
  of an example of ``num`` rays in ``count`` slices: one slice's share of the example's
  loss from its own terms, the example's loss from the terms summed over its slices."""
  sse, div, cons, _ = terms
  loss = loss_cfg.coarse_weight * sse["coarse"] / (3 * num)
  if "fine" in sse:
    loss = loss + loss_cfg.fine_weight * sse["fine"] / (3 * num)
  if cons is not None:
    loss = loss + loss_cfg.diversity_weight * div / count
    if loss_cfg.consistency_weight:
      loss = loss + loss_cfg.consistency_weight * cons
  return loss


def slice_inputs(model: GNTModel, ex: dict, key: jax.Array, image_hw: tuple[int, int],
                 sub_chunk: int):
  """What :func:`slice_objective` needs to take one example in slices of ``sub_chunk``
  rays (0: one slice).

  Returns:
    (views, per-slice inputs, scales): views ``(target camera, source views, near,
    far)``; the inputs (rays, key, target rgb [, pair flags [n / 2, 2]]) with a leading
    [count] axis; scales ``(num rays, count, num pairs)``, the pair count None without
    consistency pairs.

  Raises:
    ValueError: the rays do not divide into slices of ``sub_chunk``, or GNT-MoVE with
      consistency pairs in slices of an odd number of rays.
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
  """``(params, featmaps, rays, key, rgb[, pair flags]) -> (value, terms)`` of one slice.

  ``views``: see :func:`slice_inputs`. ``value`` is the slice's share of its example's
  loss (an example of ``num`` rays in ``count`` slices, with ``num_pairs`` consistency
  pairs or None); ``terms`` = (summed squared errors, diversity, consistency or None,
  MoE metrics), to sum over the slices for :func:`slices_loss`. The scales may be traced
  values.
  """
  moe = model.config.moe is not None
  render = _slice_renderer(model, *views)

  def objective(p, f, r, k, rgb, paired=None):
    out, div, probs, moe_metrics = render(p, f, r, k)
    cons = jnp.zeros(()) if moe else None
    if paired is not None:
      local = jnp.where(paired, jnp.arange(paired.size).reshape(-1, 2), -1)
      cons, _ = moe_losses.consistency_loss(
          jnp.moveaxis(probs, 1, 0), points_along_rays(r, out.coarse.depths), local,
          symmetric=loss_cfg.symmetric_consistency, num_pairs=num_pairs)
    terms = (_squared_errors(out, rgb), div, cons, moe_metrics)
    return _weighted(loss_cfg, terms, num, count), terms

  return objective


def slices_loss(loss_cfg, terms_sum, scales) -> tuple[jnp.ndarray, dict]:
  """(loss, metrics) of an example from its slices' ``terms`` summed
  (:func:`slice_objective`) and its ``scales``; a mean over examples of these sums gives
  the batch's mean."""
  sse, div, cons, moe_metrics = terms_sum
  num, count, _ = scales
  loss = _weighted(loss_cfg, terms_sum, num, count)
  metrics = {"mse_coarse": sse["coarse"] / (3 * num), "mse": sse["final"] / (3 * num)}
  if "fine" in sse:
    metrics["mse_fine"] = sse["fine"] / (3 * num)
  if cons is not None:
    metrics.update(diversity=div / count, consistency=cons,
                   **jax.tree.map(lambda m: m / count, moe_metrics))
  metrics["loss"] = loss
  return loss, metrics


def example_loss(model: GNTModel, params, ex: dict, key: jax.Array, loss_cfg,
                 image_hw: tuple[int, int]) -> tuple[jnp.ndarray, dict]:
  """(loss, metrics) of one whole example: the one-slice case of :func:`slice_objective`."""
  views, xs, scales = slice_inputs(model, ex, key, image_hw, 0)
  featmaps = encode_features(model, params, views[1])
  objective = slice_objective(model, views, loss_cfg, *scales)
  _, terms = objective(params, featmaps, *jax.tree.map(lambda a: a[0], xs))
  return slices_loss(loss_cfg, terms, scales)
