"""Tests of movenerf.training.optim: learning-rate groups and schedule, gradient
accumulation, per-group learning rates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import gnt
from movenerf.training import optim


def test_learning_rate_groups_and_schedule():
  c = gnt.get_config("paper")
  fns = optim.learning_rate_fns(c.optim)
  assert float(fns["feature"](0)) == pytest.approx(1e-3)
  assert float(fns["transformer"](49_999)) == pytest.approx(5e-4)
  assert float(fns["transformer"](50_000)) == pytest.approx(2.5e-4)
  assert float(fns["feature"](120_000)) == pytest.approx(2.5e-4)
  labels = optim.param_groups({"feature_net": {"a": 1}, "net_coarse": {"b": 2}})
  assert labels == {"feature_net": {"a": "feature"}, "net_coarse": {"b": "transformer"}}
  assert c.data.global_batch * c.data.example.rays_per_example == 4096
  assert c.train.num_steps == 250_000


def test_accumulation_and_per_group_learning_rates():
  c = gnt.get_config("tiny")
  c.optim.update(lr_feature=2e-3, lr_transformer=1e-3, accumulate_steps=2)
  tx = optim.make_optimizer(c.optim)
  params = {"feature_net": {"w": jnp.ones(3)}, "net_coarse": {"w": jnp.ones(3)}}
  grads = {"feature_net": {"w": jnp.full(3, 0.5)}, "net_coarse": {"w": jnp.full(3, -0.5)}}
  opt = tx.init(params)
  updates, opt = tx.update(grads, opt, params)
  # First of two accumulated steps: no update yet.
  assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
  updates, opt = tx.update(grads, opt, params)
  # Adam's first update is lr * sign(g): each group moves by its own learning rate.
  np.testing.assert_allclose(updates["feature_net"]["w"], -2e-3, rtol=1e-4)
  np.testing.assert_allclose(updates["net_coarse"]["w"], 1e-3, rtol=1e-4)
  with pytest.raises(ValueError, match="optim.name='sgdd': choose from 'adam', 'adamax'"):
    c.optim.name = "sgdd"
    optim.make_optimizer(c.optim)
