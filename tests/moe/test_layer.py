"""GNT-MoVE in the model: upcycling, invariances, dispatch paths, auxiliaries."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf import testing
from movenerf.models.gnt.model import GNTConfig, GNTModel
from movenerf.moe import losses
from movenerf.moe.config import MoEConfig
from movenerf.moe.expert_map import colorize_experts, expert_map
from movenerf.moe.layer import moe_layers, stacked_router_probs, total_diversity_loss
from movenerf.models.gnt.upcycle import UpcycleError, upcycle
from movenerf.models.gnt.render import render_rays_chunked

DENSE = GNTConfig(width=16, depth=4, coarse_feat_dim=8, num_samples=8)
MOE = MoEConfig(layers=(1, 3), eval_capacity_factor=4.0)
RNGS = lambda s: {"dropout": jax.random.PRNGKey(s), "sample": jax.random.PRNGKey(s + 1),
                  "router": jax.random.PRNGKey(s + 2)}


@functools.partial(jax.jit, static_argnums=0, static_argnames=("mutable",))
def _apply(model, v, rays, target, sources, mutable=()):
  """Evaluation forward pass, compiled (eager flax is slow on this CPU)."""
  return model.apply(v, rays, target, sources, 2.0, 6.0, mutable=list(mutable) or False)


@functools.lru_cache(maxsize=None)
def _dense():
  rays, target, sources = testing.dummy_inputs(4, 16, 16, 6, seed=1)
  model = GNTModel(DENSE)
  v = jax.jit(model.init)(jax.random.PRNGKey(0), rays, target, sources, 2.0, 6.0)
  leaves, tree = jax.tree.flatten(v)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  v = jax.tree.unflatten(tree, [l + 0.05 * jax.random.normal(k, l.shape)
                                for l, k in zip(leaves, keys)])
  return model, v, rays, target, sources


def _move(moe: MoEConfig = MOE, seed: int = 0):
  dense_model, dense_v, rays, target, sources = _dense()
  model = GNTModel(dataclasses.replace(DENSE, moe=moe))
  template = jax.jit(model.init)(jax.random.PRNGKey(seed), rays, target, sources, 2.0, 6.0)
  return model, {"params": upcycle(dense_v["params"], template["params"])}


def test_upcycled_model_with_identical_experts_reproduces_dense():
  dense_model, dense_v, rays, target, sources = _dense()
  model, v = _move(dataclasses.replace(MOE, renormalize=True, expert_activation="relu"))
  ref = _apply(dense_model, dense_v, rays, target, sources)
  out = _apply(model, v, rays, target, sources)
  np.testing.assert_allclose(out.coarse.rgb, ref.coarse.rgb, atol=2e-6)
  # With the reference's GELU experts and unnormalised gates it is a different model.
  model_g, v_g = _move()
  out_g = _apply(model_g, v_g, rays, target, sources)
  assert float(jnp.max(jnp.abs(out_g.coarse.rgb - ref.coarse.rgb))) > 1e-3


def test_upcycle_rejects_mismatched_expert_width():
  dense_model, dense_v, rays, target, sources = _dense()
  model = GNTModel(dataclasses.replace(DENSE, moe=dataclasses.replace(MOE, expert_hidden_ratio=2)))
  template = jax.jit(model.init)(jax.random.PRNGKey(0), rays, target, sources, 2.0, 6.0)
  with pytest.raises(UpcycleError, match="experts/fc1/kernel"):
    upcycle(dense_v["params"], template["params"])


def test_moe_params_sit_in_odd_view_blocks_only():
  model, v = _move()
  net = v["params"]["net_coarse"]
  assert "moe" in net["view_trans_1"] and "ff" not in net["view_trans_1"]
  assert "ff" in net["view_trans_0"] and "moe" not in net["view_trans_0"]
  assert net["view_trans_3"]["moe"]["experts"]["fc1"]["kernel"].shape == (4, 16, 64)
  assert "moe" not in net["ray_trans_1"]


@pytest.mark.parametrize("kind", ["dense", "sorted"])
def test_dispatch_paths_agree_in_the_model(kind):
  _, _, rays, target, sources = _dense()
  tight = dataclasses.replace(MOE, eval_capacity_factor=0.6)  # drops happen
  model_a, v = _move(dataclasses.replace(tight, dispatch="dense"))
  model_b = GNTModel(dataclasses.replace(DENSE, moe=dataclasses.replace(tight, dispatch=kind)))
  a, aux = _apply(model_a, v, rays, target, sources, mutable=("moe",))
  b = _apply(model_b, v, rays, target, sources)
  np.testing.assert_allclose(b.coarse.rgb, a.coarse.rgb, atol=1e-6)
  dropped = [float(e["metrics"][0]["dropped_fraction"]) for _, e in moe_layers(aux["moe"])]
  assert max(dropped) > 0


def test_source_view_permutation_and_jit_with_moe():
  _, _, rays, target, sources = _dense()
  model, v = _move()
  out = _apply(model, v, rays, target, sources)
  perm = jnp.array([3, 1, 0, 2])
  permuted = sources.replace(images=sources.images[perm], cameras=sources.cameras[perm])
  np.testing.assert_allclose(_apply(model, v, rays, target, permuted).coarse.rgb,
                             out.coarse.rgb, atol=1e-5)
  eager = model.apply(v, rays, target, sources, 2.0, 6.0)
  np.testing.assert_allclose(eager.coarse.rgb, out.coarse.rgb, atol=1e-4)


def test_auxiliaries_losses_and_gradients():
  _, _, rays, target, sources = _dense()
  model, v = _move()
  _, aux_eval = _apply(model, v, rays, target, sources, mutable=("moe",))
  assert float(total_diversity_loss(aux_eval["moe"])) == 0.0  # no gating loss in eval

  def loss_fn(params):
    out, aux = model.apply(params, rays, target, sources, 2.0, 6.0, train=True,
                           rngs=RNGS(0), mutable=["moe"])
    probs = stacked_router_probs(aux["moe"], rays.num_rays)
    points = rays.origins[:, None] + out.coarse.depths[..., None] * rays.directions[:, None]
    pairs = jnp.array([[1, 0], [3, 2], [5, 4]])
    consistency, _ = losses.consistency_loss(probs, points, pairs)
    diversity = total_diversity_loss(aux["moe"])
    return jnp.mean(out.coarse.rgb ** 2) + 0.01 * diversity + 0.1 * consistency, (
        diversity, consistency, probs)

  (loss, (div, cons, probs)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(v)
  assert probs.shape == (2, 6, 8, 4)
  np.testing.assert_allclose(jnp.sum(probs, -1), 1.0, rtol=1e-5)
  assert float(div) > 0 and float(cons) > 0 and np.isfinite(float(loss))
  router_grad = grads["params"]["net_coarse"]["view_trans_1"]["moe"]["router"]["reduce_dim"]
  assert float(jnp.linalg.norm(router_grad)) > 0
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_expert_map_from_rendering():
  _, _, rays, target, sources = _dense()
  model, v = _move()
  out = render_rays_chunked(model, v, rays, target, sources, 2.0, 6.0, chunk_size=6)
  assert out["experts"].shape == (6, 2, 4)
  np.testing.assert_allclose(out["experts"].sum(-1), 1.0, rtol=1e-6)
  winner, fractions = expert_map(jnp.array([[0, 2, 2, 1], [3, 3, 3, 3]]), 4)
  np.testing.assert_array_equal(winner, [2, 3])
  np.testing.assert_allclose(fractions[0], [0.25, 0.25, 0.5, 0.0])
  np.testing.assert_allclose(colorize_experts(np.eye(4))[1], [0.10, 0.45, 0.90], rtol=1e-6)
