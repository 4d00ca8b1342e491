"""The sliced, rematerialised training forward (``train.sub_chunk``, ``train.remat``) is the
same computation as rendering each slice on its own without remat, with the same
gradients (so remat changes memory, not results)."""

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import pytest

from movenerf import testing
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
from movenerf.moe.config import MoEConfig
from movenerf.training import step as train_step

NUM_RAYS = 16


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


def _loss(model, params, rays, target, sources, key, sub_chunk, remat):
  out, div, probs, _ = train_step.gnt_forward(model, params, rays, target, sources, 2.0, 6.0,
                                              key, sub_chunk, remat)
  value = jnp.mean(out.coarse.rgb ** 2) + jnp.mean(out.final.rgb ** 2) + div
  if probs is not None:
    value = value + jnp.mean(probs ** 2)
  return value, out


def test_slices_equal_separate_renders():
  # GNT-MoVE: its path includes the dense one, plus routing and the diversity loss per slice.
  model, params, rays, target, sources = _setup(MoEConfig(layers=(0,)))
  key = jax.random.PRNGKey(3)
  half = NUM_RAYS // 2
  sliced = lambda p: _loss(model, p, rays, target, sources, key, half, True)
  (value, out), grads = jax.jit(jax.value_and_grad(sliced, has_aux=True))(params)

  # The same thing by hand: each half rendered unsliced with its slice key, averaged.
  keys = jax.random.split(key, 2)

  def by_hand(p):
    parts = [_loss(model, p, rays[i * half:(i + 1) * half], target, sources, keys[i], 0,
                   False) for i in range(2)]
    return (parts[0][0] + parts[1][0]) / 2, [o for _, o in parts]

  (value_ref, outs), grads_ref = jax.jit(jax.value_and_grad(by_hand, has_aux=True))(params)
  np.testing.assert_allclose(value, value_ref, rtol=1e-5)
  np.testing.assert_allclose(out.coarse.depths,
                             np.concatenate([o.coarse.depths for o in outs]), atol=1e-6)
  # Float32 rounding of differently fused programs; the colours are O(1) with random
  # weights (measured up to 4.4e-5).
  np.testing.assert_allclose(out.coarse.rgb, np.concatenate([o.coarse.rgb for o in outs]),
                             atol=1e-4)
  flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(grads_ref)
  scale = max(float(jnp.max(jnp.abs(g))) for g in flat_ref)
  worst = max(float(jnp.max(jnp.abs(g - r))) for g, r in zip(flat, flat_ref))
  assert worst < 1e-4 * scale, (worst, scale)


def test_slices_must_divide_the_rays():
  model, params, rays, target, sources = _setup()
  with pytest.raises(ValueError, match="do not divide into slices of 5"):
    train_step.gnt_forward(model, params, rays, target, sources, 2.0, 6.0,
                           jax.random.PRNGKey(0), 5)


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


def test_per_slice_backward_equals_the_rematerialised_gradient():
  # GNT-MoVE (its path includes the dense one). The pairs (rows 0-15, 3-9) lie across
  # slices as given; both paths put them side by side (pairs_side_by_side), and the
  # per-slice path adds up its slices' consistency losses. (-1, -1) pads.
  model, params, *_ = _setup(MoEConfig(layers=(0,)))
  ex = _example(NUM_RAYS, [[0, 15], [3, 9], [-1, -1]])
  loss_cfg = _loss_cfg()
  key = jax.random.PRNGKey(5)
  quarter = NUM_RAYS // 4
  (loss, metrics), grads = jax.jit(lambda p: train_step.example_grads(
      model, p, ex, key, loss_cfg, (16, 16), quarter))(params)
  (loss_ref, metrics_ref), grads_ref = jax.jit(jax.value_and_grad(
      lambda p: train_step.example_loss(model, p, ex, key, loss_cfg, (16, 16), quarter,
                                        remat=True), has_aux=True))(params)
  assert set(metrics) == set(metrics_ref)
  for name in metrics_ref:
    np.testing.assert_allclose(metrics[name], metrics_ref[name], rtol=1e-5, atol=1e-7,
                               err_msg=name)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
  assert float(metrics["consistency"]) > 0
  flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(grads_ref)
  scale = max(float(jnp.max(jnp.abs(g))) for g in flat_ref)
  worst = max(float(jnp.max(jnp.abs(g - r))) for g, r in zip(flat, flat_ref))
  assert scale > 0 and worst < 1e-4 * scale, (worst, scale)
  # The consistency loss's share of the gradient is there: without it the gradient moves.
  loss_cfg.consistency_weight = 0.0
  _, grads_free = jax.jit(lambda p: train_step.example_grads(
      model, p, ex, key, loss_cfg, (16, 16), quarter))(params)
  moved = max(float(jnp.max(jnp.abs(g - r)))
              for g, r in zip(jax.tree.leaves(grads_free), flat_ref))
  assert moved > 100 * worst, (moved, worst)


def test_pairs_side_by_side_moves_each_pair_onto_two_rows():
  ex = _example(8, [[1, 6], [-1, -1], [0, 3]])
  out = train_step.pairs_side_by_side(ex)
  # Pairs in order (padding skipped), then the unpaired rows 2, 4, 5, 7 in order.
  order = np.array([1, 6, 0, 3, 2, 4, 5, 7])
  np.testing.assert_array_equal(out["pixels"], np.asarray(ex["pixels"])[order])
  np.testing.assert_array_equal(out["rgb"], np.asarray(ex["rgb"])[order])
  np.testing.assert_array_equal(out["pairs"], [[0, 1], [2, 3], [-1, -1]])
  for name in ("src_images", "tgt_c2w", "near"):
    assert out[name] is ex[name]
  # Under jit and vmap (the train step's forms) as well.
  both = jax.tree.map(lambda a: jnp.stack([a, a]), ex)
  batched = jax.jit(jax.vmap(train_step.pairs_side_by_side))(both)
  np.testing.assert_array_equal(batched["pixels"][1], out["pixels"])
  np.testing.assert_array_equal(batched["pairs"][0], out["pairs"])


def test_odd_slices_with_pairs_are_refused():
  model, params, *_ = _setup(MoEConfig(layers=(0,)))
  ex = _example(24, [[0, 23]])
  loss_cfg = _loss_cfg()
  with pytest.raises(ValueError, match="even number of rays; got train.sub_chunk=3 for 24"):
    train_step.example_grads(model, params, ex, jax.random.PRNGKey(0), loss_cfg, (16, 16), 3)
