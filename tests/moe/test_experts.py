"""Tests of movenerf.moe.experts: stacked FFN experts and applying them through a dispatcher."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.moe.experts import ExpertFFN, FeedForwardExperts
from tests.moe import helpers


def _gelu_np(z):
  return 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def _loop_reference(params, x, idx, gates):
  """sum_k gate[t, k] * expert_{idx[t, k]}(x[t]), one token and one choice at a time."""
  p = params["params"]
  rows = []
  for t in range(x.shape[0]):
    acc = jnp.zeros(x.shape[1])
    for k in range(idx.shape[1]):
      e = int(idx[t, k])
      h = jax.nn.gelu(x[t] @ p["fc1"]["kernel"][e] + p["fc1"]["bias"][e], approximate=False)
      acc = acc + gates[t, k] * (h @ p["fc2"]["kernel"][e] + p["fc2"]["bias"][e])
    rows.append(acc)
  return jnp.stack(rows)


def test_ample_capacity_matches_token_loop():
  num_tokens, num_experts, top_k, width, hidden = 7, 4, 2, 5, 6
  rng = np.random.default_rng(1)
  idx, gates = helpers.random_routing(rng, num_tokens, num_experts, top_k)
  x = jnp.asarray(rng.normal(size=(num_tokens, width)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(num_tokens, width)), jnp.float32)
  module = helpers.experts_module(num_experts, hidden)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((num_experts, 1, width)))

  # Values against plain NumPy.
  p = jax.tree_util.tree_map(np.asarray, params["params"])
  xn, gn, idn = np.asarray(x), np.asarray(gates), np.asarray(idx)
  ref = np.zeros((num_tokens, width))
  for t in range(num_tokens):
    for k in range(top_k):
      e = idn[t, k]
      h = _gelu_np(xn[t] @ p["fc1"]["kernel"][e] + p["fc1"]["bias"][e])
      ref[t] += gn[t, k] * (h @ p["fc2"]["kernel"][e] + p["fc2"]["bias"][e])
  # Gradients against autodiff of the per-token loop (routing closed over as NumPy).
  ref_grads = jax.jit(jax.grad(
      lambda pr, xx, gg: jnp.sum(_loop_reference(pr, xx, idn, gg) * weights),
      argnums=(0, 1, 2)))(params, x, gates)

  grad_fn = jax.jit(jax.value_and_grad(helpers.moe_loss, argnums=(0, 1, 2), has_aux=True),
                    static_argnums=(5, 6, 7))
  for kind in helpers.KINDS:
    (_, (out, metrics)), grads = grad_fn(params, x, gates, idx, weights, module, num_tokens,
                                         kind)
    assert float(metrics["dropped_fraction"]) == 0.0
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-6, err_msg=kind)
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6,
                                 err_msg=kind)
    # Every expert was chosen by someone, so each got a parameter gradient.
    assert np.all(np.abs(np.asarray(grads[0]["params"]["fc2"]["bias"])).sum(-1) > 0)


def test_feed_forward_experts_params_and_math():
  num_experts, cap, width, hidden = 3, 4, 5, 7
  module = FeedForwardExperts(num_experts=num_experts, hidden=hidden, dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(0), (num_experts, cap, width))
  params = jax.jit(module.init)(jax.random.PRNGKey(1), x)
  shapes = jax.tree_util.tree_map(jnp.shape, params["params"])
  assert shapes == {"fc1": {"kernel": (3, 5, 7), "bias": (3, 7)},
                    "fc2": {"kernel": (3, 7, 5), "bias": (3, 5)}}
  p = params["params"]
  # Each expert initialised independently.
  assert not np.allclose(p["fc1"]["kernel"][0], p["fc1"]["kernel"][1])

  out = module.apply(params, x, deterministic=True)
  pn = jax.tree_util.tree_map(np.asarray, p)
  for e in range(num_experts):
    h = _gelu_np(np.asarray(x[e]) @ pn["fc1"]["kernel"][e] + pn["fc1"]["bias"][e])
    want = h @ pn["fc2"]["kernel"][e] + pn["fc2"]["bias"][e]
    np.testing.assert_allclose(np.asarray(out[e]), want, rtol=1e-5, atol=1e-6)

  # Deterministic: dropout RNGs are irrelevant.
  out2 = module.apply(params, x, deterministic=True, rngs={"dropout": jax.random.PRNGKey(9)})
  np.testing.assert_array_equal(np.asarray(out), np.asarray(out2))
  with pytest.raises(ValueError):
    module.apply(params, x[:2])


def test_feed_forward_experts_dropout_masks_differ_per_expert():
  num_experts, width, hidden = 2, 4, 64
  module = FeedForwardExperts(num_experts=num_experts, hidden=hidden, dropout=0.5)
  single = ExpertFFN(hidden=hidden, dropout=0.5)
  one = single.init(jax.random.PRNGKey(0), jnp.zeros((1, width)))
  # Same parameters and same input for both experts: only the dropout masks differ.
  params = jax.tree_util.tree_map(lambda a: jnp.stack([a] * num_experts), one)
  x = jnp.ones((num_experts, 3, width))
  out = module.apply(params, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(4)})
  ref = module.apply(params, x, deterministic=True)
  assert not np.allclose(out[0], out[1])
  assert not np.allclose(out, ref)
  np.testing.assert_allclose(np.asarray(ref[0]), np.asarray(ref[1]))
