"""Tests of movenerf.models.gnt.loss: the sliced loss adds up to the example's loss, and
the whole-example loss is its one-slice case, against the loss assembled by hand from
separate renders of each slice."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import pytest

from movenerf import testing
from movenerf.geometry.rays import points_along_rays
from movenerf.models.examples import example_views
from movenerf.models.gnt import loss as gnt_loss
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
from movenerf.moe import layer as moe_layer
from movenerf.moe import losses as moe_losses
from movenerf.moe.config import MoEConfig
from movenerf.nn import prng

NUM_RAYS = 16


@functools.lru_cache(maxsize=None)
def _setup(moe=None):
  # Coarse only: the fine pass inverts the CDF of the coarse weights, so float32
  # rounding differences between differently fused programs move its samples (and, with
  # MoE, its routing) and would hide what is compared here.
  config = GNTConfig(width=16, depth=1, num_heads=2, coarse_feat_dim=8, fine_feat_dim=8,
                     num_samples=8, num_importance=0, dropout=0.0,
                     feature_width=8, moe=moe)
  model = GNTModel(config)
  params = init_variables(model, jax.random.PRNGKey(0))["params"]
  rays, target, sources = testing.dummy_inputs(3, 16, 16, NUM_RAYS)
  return model, params, rays, target, sources


def _example(num_rays, pairs):
  """One 16x16 example with 3 source views of a generated scene (pipeline layout)."""
  from movenerf.tools import bench  # pylint: disable=import-outside-toplevel
  ex = jax.tree.map(lambda a: jnp.asarray(a[0]), bench._train_batch(3, 16, num_rays))
  ex["pairs"] = jnp.asarray(pairs, jnp.int32)
  return ex


def _loss_cfg():
  return ml_collections.ConfigDict(dict(
      coarse_weight=1.0, fine_weight=1.0, diversity_weight=0.5, consistency_weight=2.0,
      symmetric_consistency=True))


def _by_hand(model, params, ex, key, loss_cfg, count):
  """(loss, metrics) written out: each of ``count`` slices rendered on its own with its
  key, the outputs put together, the loss of the whole example's outputs."""
  ex = gnt_loss.pairs_side_by_side(ex)
  rays, target, sources = example_views(ex, (16, 16))
  featmaps = model.apply({"params": params}, sources.images, method=GNTModel.encode)
  n = NUM_RAYS // count
  rgbs, depths, probs, divs = [], [], [], []
  for i, k in enumerate(jax.random.split(key, count)):
    sample, drop, router = jax.random.split(k, 3)
    out, aux = model.apply({"params": params}, rays[i * n:(i + 1) * n], target, sources,
                           featmaps, ex["near"], ex["far"], train=True,
                           method=GNTModel.render_rays, mutable=[moe_layer.MOE_COLLECTION],
                           rngs={"sample": sample, "dropout": prng.hashed_key(drop),
                                 "router": prng.hashed_key(router)})
    rgbs.append(out.coarse.rgb)
    depths.append(out.coarse.depths)
    probs.append(moe_layer.stacked_router_probs(aux[moe_layer.MOE_COLLECTION], n))
    divs.append(moe_layer.total_diversity_loss(aux[moe_layer.MOE_COLLECTION]))
  rgb, depth = jnp.concatenate(rgbs), jnp.concatenate(depths)
  mse = jnp.mean((rgb - ex["rgb"]) ** 2)
  div = jnp.mean(jnp.stack(divs))
  cons, _ = moe_losses.consistency_loss(jnp.concatenate(probs, axis=1),
                                        points_along_rays(rays, depth), ex["pairs"],
                                        symmetric=loss_cfg.symmetric_consistency)
  loss = (loss_cfg.coarse_weight * mse + loss_cfg.diversity_weight * div
          + loss_cfg.consistency_weight * cons)
  return loss, {"mse": mse, "mse_coarse": mse, "diversity": div, "consistency": cons}


def _sliced(model, params, ex, key, loss_cfg, sub_chunk):
  """(value summed over the slices, (loss, metrics)) by the sliced loss."""
  views, xs, scales = gnt_loss.slice_inputs(model, ex, key, (16, 16), sub_chunk)
  featmaps = gnt_loss.encode_features(model, params, views[1])
  objective = gnt_loss.slice_objective(model, views, loss_cfg, *scales)
  count = scales[1]
  parts = [objective(params, featmaps, *jax.tree.map(lambda a, i=i: a[i], xs))
           for i in range(count)]
  value = sum(v for v, _ in parts)
  terms = jax.tree.map(lambda *t: sum(t), *[t for _, t in parts])
  return value, gnt_loss.slices_loss(loss_cfg, terms, scales)


def _assert_close_grads(grads, grads_ref):
  flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(grads_ref)
  scale = max(float(jnp.max(jnp.abs(g))) for g in flat_ref)
  worst = max(float(jnp.max(jnp.abs(g - r))) for g, r in zip(flat, flat_ref))
  assert scale > 0 and worst < 1e-4 * scale, (worst, scale)
  return worst


@pytest.mark.parametrize("count", [1, 2])
def test_sliced_loss_equals_the_loss_written_out(count):
  # GNT-MoVE (its path includes the dense one). The pairs (rows 0-15, 3-9) lie across
  # slices as given; the loss puts them side by side (pairs_side_by_side) and each slice
  # adds its pairs' share of the consistency loss. (-1, -1) pads.
  model, params, *_ = _setup(MoEConfig(layers=(0,)))
  ex = _example(NUM_RAYS, [[0, 15], [3, 9], [-1, -1]])
  loss_cfg = _loss_cfg()
  key = jax.random.PRNGKey(5)
  sub_chunk = NUM_RAYS // count if count > 1 else 0
  (value, (loss, metrics)), grads = jax.jit(jax.value_and_grad(
      lambda p: _sliced(model, p, ex, key, loss_cfg, sub_chunk), has_aux=True))(params)
  (loss_ref, metrics_ref), grads_ref = jax.jit(jax.value_and_grad(
      lambda p: _by_hand(model, p, ex, key, loss_cfg, count), has_aux=True))(params)
  np.testing.assert_allclose(value, loss, rtol=1e-6)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
  for name, ref in metrics_ref.items():
    np.testing.assert_allclose(metrics[name], ref, rtol=1e-5, atol=1e-7, err_msg=name)
  assert float(metrics["consistency"]) > 0
  worst = _assert_close_grads(grads, grads_ref)
  # The consistency loss's share of the gradient is there: without it the gradient moves.
  loss_cfg.consistency_weight = 0.0
  grads_free = jax.jit(jax.grad(
      lambda p: _sliced(model, p, ex, key, loss_cfg, sub_chunk)[0]))(params)
  moved = max(float(jnp.max(jnp.abs(g - r)))
              for g, r in zip(jax.tree.leaves(grads_free), jax.tree.leaves(grads_ref)))
  assert moved > 100 * worst, (moved, worst)


def test_example_loss_is_the_one_slice_case():
  model, params, *_ = _setup(MoEConfig(layers=(0,)))
  ex = _example(NUM_RAYS, [[0, 15], [3, 9], [-1, -1]])
  loss_cfg = _loss_cfg()
  key = jax.random.PRNGKey(5)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      lambda p: gnt_loss.example_loss(model, p, ex, key, loss_cfg, (16, 16)),
      has_aux=True))(params)
  (_, (loss_one, metrics_one)), grads_one = jax.jit(jax.value_and_grad(
      lambda p: _sliced(model, p, ex, key, loss_cfg, 0), has_aux=True))(params)
  np.testing.assert_allclose(loss, loss_one, rtol=1e-6)
  assert set(metrics) == set(metrics_one)
  for name in metrics:
    np.testing.assert_allclose(metrics[name], metrics_one[name], rtol=1e-6, err_msg=name)
  _assert_close_grads(grads, grads_one)


def test_slices_must_divide_the_rays():
  model, *_ = _setup()
  ex = _example(NUM_RAYS, np.zeros((0, 2)))
  with pytest.raises(ValueError, match="do not divide into slices of 5"):
    gnt_loss.slice_inputs(model, ex, jax.random.PRNGKey(0), (16, 16), 5)


def test_pairs_side_by_side_moves_each_pair_onto_two_rows():
  ex = _example(8, [[1, 6], [-1, -1], [0, 3]])
  out = gnt_loss.pairs_side_by_side(ex)
  # Pairs in order (padding skipped), then the unpaired rows 2, 4, 5, 7 in order.
  order = np.array([1, 6, 0, 3, 2, 4, 5, 7])
  np.testing.assert_array_equal(out["pixels"], np.asarray(ex["pixels"])[order])
  np.testing.assert_array_equal(out["rgb"], np.asarray(ex["rgb"])[order])
  np.testing.assert_array_equal(out["pairs"], [[0, 1], [2, 3], [-1, -1]])
  for name in ("src_images", "tgt_c2w", "near"):
    assert out[name] is ex[name]
  # Under jit and vmap (the train step's forms) as well.
  both = jax.tree.map(lambda a: jnp.stack([a, a]), ex)
  batched = jax.jit(jax.vmap(gnt_loss.pairs_side_by_side))(both)
  np.testing.assert_array_equal(batched["pixels"][1], out["pixels"])
  np.testing.assert_array_equal(batched["pairs"][0], out["pairs"])


def test_odd_slices_with_pairs_are_refused():
  model, *_ = _setup(MoEConfig(layers=(0,)))
  ex = _example(24, [[0, 23]])
  with pytest.raises(ValueError, match="even number of rays; got train.sub_chunk=3 for 24"):
    gnt_loss.slice_inputs(model, ex, jax.random.PRNGKey(0), (16, 16), 3)
