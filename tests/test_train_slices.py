"""The sliced, rematerialised training forward (``train.sub_chunk``, ``train.remat``) is the
same computation as rendering each slice on its own without remat, with the same
gradients (so remat changes memory, not results)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf import testing
from movenerf.models.gnt_model import GNTConfig, GNTModel, init_variables
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
