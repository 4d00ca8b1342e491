"""Tests of GNT-MoVE in movenerf.models.gnt: where the experts sit, model invariances."""

import jax.numpy as jnp
import numpy as np

from tests.models.gnt import move_helpers


def test_moe_params_sit_in_odd_view_blocks_only():
  model, v = move_helpers.move()
  net = v["params"]["net_coarse"]
  assert "moe" in net["view_trans_1"] and "ff" not in net["view_trans_1"]
  assert "ff" in net["view_trans_0"] and "moe" not in net["view_trans_0"]
  assert net["view_trans_3"]["moe"]["experts"]["fc1"]["kernel"].shape == (4, 16, 64)
  assert "moe" not in net["ray_trans_1"]


def test_source_view_permutation_and_jit_with_moe():
  _, _, rays, target, sources = move_helpers.dense()
  model, v = move_helpers.move()
  out = move_helpers.apply(model, v, rays, target, sources)
  perm = jnp.array([3, 1, 0, 2])
  permuted = sources.replace(images=sources.images[perm], cameras=sources.cameras[perm])
  np.testing.assert_allclose(move_helpers.apply(model, v, rays, target, permuted).coarse.rgb,
                             out.coarse.rgb, atol=1e-5)
  eager = model.apply(v, rays, target, sources, 2.0, 6.0)
  np.testing.assert_allclose(eager.coarse.rgb, out.coarse.rgb, atol=1e-4)
