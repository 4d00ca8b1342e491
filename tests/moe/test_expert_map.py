"""Tests of movenerf.moe.expert_map: per-pixel winning experts from a rendering, and colours."""

import jax.numpy as jnp
import numpy as np

from movenerf.models.gnt.render import render_rays_chunked
from movenerf.moe.expert_map import colorize_experts, expert_map
from tests.models.gnt import move_helpers


def test_expert_map_from_rendering():
  _, _, rays, target, sources = move_helpers.dense()
  model, v = move_helpers.move()
  out = render_rays_chunked(model, v, rays, target, sources, 2.0, 6.0, chunk_size=6)
  assert out["experts"].shape == (6, 2, 4)
  np.testing.assert_allclose(out["experts"].sum(-1), 1.0, rtol=1e-6)
  winner, fractions = expert_map(jnp.array([[0, 2, 2, 1], [3, 3, 3, 3]]), 4)
  np.testing.assert_array_equal(winner, [2, 3])
  np.testing.assert_allclose(fractions[0], [0.25, 0.25, 0.5, 0.0])
  np.testing.assert_allclose(colorize_experts(np.eye(4))[1], [0.10, 0.45, 0.90], rtol=1e-6)
