"""Tests of movenerf.models.gnt.upcycle: dense GNT weights copied into GNT-MoVE experts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.models.gnt.model import GNTModel
from movenerf.models.gnt.upcycle import UpcycleError, upcycle
from tests.models.gnt import move_helpers


def test_upcycled_model_with_identical_experts_reproduces_dense():
  dense_model, dense_v, rays, target, sources = move_helpers.dense()
  model, v = move_helpers.move(dataclasses.replace(move_helpers.MOE, renormalize=True,
                                                   expert_activation="relu"))
  ref = move_helpers.apply(dense_model, dense_v, rays, target, sources)
  out = move_helpers.apply(model, v, rays, target, sources)
  np.testing.assert_allclose(out.coarse.rgb, ref.coarse.rgb, atol=2e-6)
  # With the reference's GELU experts and unnormalised gates it is a different model.
  model_g, v_g = move_helpers.move()
  out_g = move_helpers.apply(model_g, v_g, rays, target, sources)
  assert float(jnp.max(jnp.abs(out_g.coarse.rgb - ref.coarse.rgb))) > 1e-3


def test_upcycle_rejects_mismatched_expert_width():
  _, dense_v, rays, target, sources = move_helpers.dense()
  model = GNTModel(dataclasses.replace(
      move_helpers.DENSE, moe=dataclasses.replace(move_helpers.MOE, expert_hidden_ratio=2)))
  # The template's shapes are what upcycle checks: traced only, nothing computed.
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0), rays, target, sources, 2.0, 6.0)
  with pytest.raises(UpcycleError, match="experts/fc1/kernel"):
    upcycle(dense_v["params"], template["params"])
