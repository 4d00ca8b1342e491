"""Tests of movenerf.moe.layer in a GNT-MoVE model: dispatch paths, sown auxiliaries, losses."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.models.gnt.model import GNTModel
from movenerf.moe import losses
from movenerf.moe.layer import moe_layers, stacked_router_probs, total_diversity_loss
from tests.models.gnt import move_helpers

RNGS = lambda s: {"dropout": jax.random.PRNGKey(s), "sample": jax.random.PRNGKey(s + 1),
                  "router": jax.random.PRNGKey(s + 2)}


@pytest.mark.parametrize("kind", ["dense", "sorted"])
def test_dispatch_paths_agree_in_the_model(kind):
  _, _, rays, target, sources = move_helpers.dense()
  tight = dataclasses.replace(move_helpers.MOE, eval_capacity_factor=0.6)  # drops happen
  model_a, v = move_helpers.move(dataclasses.replace(tight, dispatch="dense"))
  model_b = GNTModel(dataclasses.replace(move_helpers.DENSE,
                                         moe=dataclasses.replace(tight, dispatch=kind)))
  a, aux = move_helpers.apply(model_a, v, rays, target, sources, mutable=("moe",))
  b = move_helpers.apply(model_b, v, rays, target, sources)
  np.testing.assert_allclose(b.coarse.rgb, a.coarse.rgb, atol=1e-6)
  dropped = [float(e["metrics"][0]["dropped_fraction"]) for _, e in moe_layers(aux["moe"])]
  assert max(dropped) > 0


def test_auxiliaries_losses_and_gradients():
  _, _, rays, target, sources = move_helpers.dense()
  model, v = move_helpers.move()
  _, aux_eval = move_helpers.apply(model, v, rays, target, sources, mutable=("moe",))
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
