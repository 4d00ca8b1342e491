"""Routing, expert modules and losses shared by the MoE dispatch and expert tests."""

import jax.numpy as jnp
import numpy as np

from movenerf.moe import dispatch as dsp
from movenerf.moe.experts import FeedForwardExperts, moe_apply

KINDS = ("dense", "sorted")


def random_routing(rng, num_tokens, num_experts, top_k, skew=0.0):
  """Distinct experts per token (skew > 0 favours low expert ids), positive gates."""
  logits = rng.normal(size=(num_tokens, num_experts)) - skew * np.arange(num_experts)
  idx = np.argsort(-logits, axis=1)[:, :top_k]
  gates = rng.uniform(0.1, 1.0, size=(num_tokens, top_k))
  return jnp.asarray(idx, jnp.int32), jnp.asarray(gates, jnp.float32)


def experts_module(num_experts, hidden):
  return FeedForwardExperts(num_experts=num_experts, hidden=hidden, dropout=0.3)


def moe_loss(params, x, gates, idx, weights, module, capacity, kind):
  d = dsp.make_dispatcher(idx, gates, module.num_experts, capacity, kind=kind)
  out = moe_apply(lambda z: module.apply(params, z, deterministic=True), x, d)
  return jnp.sum(out * weights), (out, d.metrics())
