"""Tests of movenerf.moe.dispatch: capacity-limited dispatch (dense and sorted paths)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.moe import dispatch as dsp
from movenerf.moe.experts import moe_apply
from tests.moe import helpers


def _scale_experts(y):
  """Expert e multiplies its inputs by e + 1: [E, C, D] -> [E, C, D]."""
  return y * (1.0 + jnp.arange(y.shape[0], dtype=y.dtype))[:, None, None]


def _probe_mask(d, num_tokens):
  """[T, E, C] dispatch mask read off a dispatcher by dispatching one-hot tokens."""
  return np.asarray(d.dispatch(jnp.eye(num_tokens))).transpose(2, 0, 1)


def _probe_weights(d):
  """[T, E, C] combine weights: combine slot-indicator outputs, one feature per slot."""
  num_slots = d.num_experts * d.capacity
  y = jnp.eye(num_slots).reshape(d.num_experts, d.capacity, num_slots)
  return np.asarray(d.combine(y)).reshape(-1, d.num_experts, d.capacity)


# Hand-derived cases: T=3 tokens, E=3 experts, K=2, C=2, gates g[t, k].
#
# Case "k_major": idx = [[0, 1], [1, 2], [1, 0]].
#   top-1 pass: t0 -> e0 slot 0; t1 -> e1 slot 0; t2 -> e1 slot 1 (e1 now full)
#   top-2 pass: t0 -> e1 FULL, dropped (later tokens' top-1 took it first);
#               t1 -> e2 slot 0; t2 -> e0 slot 1.
#   (Token-major order would instead keep t0 -> e1 and drop t2's top-1.)
# Case "top1_overflow": idx = [[0, 1], [0, 2], [0, 1]].
#   top-1 pass: t0 -> e0 s0; t1 -> e0 s1; t2 -> e0 FULL, dropped.
#   top-2 pass: t0 -> e1 s0; t1 -> e2 s0; t2 -> e1 s1 (t2 keeps its 2nd choice).
GATES = np.array([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2]], np.float32)
HAND_CASES = {
    "k_major": dict(
        idx=[[0, 1], [1, 2], [1, 0]],
        kept={(0, 0): (0, 0), (1, 0): (1, 0), (2, 0): (1, 1), (1, 1): (2, 0), (2, 1): (0, 1)},
        load=[2, 2, 1],
        # Expert e scales by e + 1; out[t] = sum over kept k of g[t, k] * (e + 1) * x[t].
        out_diag=[0.6 * 1, 0.7 * 2 + 0.3 * 3, 0.8 * 2 + 0.2 * 1],
        # Rows of the [E, C, D] buffer for x = I: e0 <- [t0, t2], e1 <- [t1, t2], e2 <- [t1, -].
        slots=[[0, 2], [1, 2], [1, None]],
    ),
    "top1_overflow": dict(
        idx=[[0, 1], [0, 2], [0, 1]],
        kept={(0, 0): (0, 0), (1, 0): (0, 1), (0, 1): (1, 0), (1, 1): (2, 0), (2, 1): (1, 1)},
        load=[2, 2, 1],
        out_diag=[0.6 * 1 + 0.4 * 2, 0.7 * 1 + 0.3 * 3, 0.2 * 2],
        slots=[[0, 1], [0, 2], [1, None]],
    ),
}


@pytest.mark.parametrize("kind", helpers.KINDS)
@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_hand_derived_routing(case, kind):
  c = HAND_CASES[case]
  d = dsp.make_dispatcher(jnp.array(c["idx"], jnp.int32), jnp.asarray(GATES), 3, 2, kind=kind)
  mask = np.zeros((3, 3, 2), bool)
  weights = np.zeros((3, 3, 2), np.float32)
  for (t, k), (e, s) in c["kept"].items():
    mask[t, e, s] = True
    weights[t, e, s] = GATES[t, k]
  if kind == "dense":
    assert isinstance(d, dsp.DenseDispatcher)
    np.testing.assert_array_equal(np.asarray(d.dispatch_mask), mask)
    np.testing.assert_allclose(np.asarray(d.combine_weights), weights, rtol=0, atol=0)
  else:
    assert isinstance(d, dsp.SortedDispatcher)
  np.testing.assert_array_equal(_probe_mask(d, 3), mask)
  np.testing.assert_allclose(_probe_weights(d), weights, rtol=0, atol=1e-7)

  x = jnp.eye(3)
  buf = np.asarray(d.dispatch(x))
  for e, row in enumerate(c["slots"]):
    for s, t in enumerate(row):
      np.testing.assert_array_equal(buf[e, s], np.zeros(3) if t is None else np.eye(3)[t])
  out = moe_apply(_scale_experts, x, d)
  np.testing.assert_allclose(np.asarray(out), np.diag(c["out_diag"]), rtol=1e-6, atol=1e-7)

  m = d.metrics()
  assert m["capacity"] == 2
  np.testing.assert_allclose(float(m["dropped_fraction"]), 1 / 6, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(m["expert_load"]), c["load"])


@pytest.mark.parametrize("kind", helpers.KINDS)
def test_no_drops_and_all_dropped_token(kind):
  # C=1, E=2, K=1: tokens 1 and 2 find expert 0 full; token 1's output is then zero.
  idx = jnp.array([[0], [0], [0], [1]], jnp.int32)
  gates = jnp.array([[0.5], [0.25], [2.0], [1.0]])
  d = dsp.make_dispatcher(idx, gates, 2, 1, kind=kind)
  x = jnp.arange(8.0).reshape(4, 2) + 1
  out = np.asarray(moe_apply(_scale_experts, x, d))
  np.testing.assert_allclose(out, [[0.5, 1.0], [0, 0], [0, 0], [14.0, 16.0]])
  m = d.metrics()
  np.testing.assert_allclose(float(m["dropped_fraction"]), 0.5)
  np.testing.assert_array_equal(np.asarray(m["expert_load"]), [1, 1])


def test_queue_positions_agree():
  rng = np.random.default_rng(0)
  idx = jnp.asarray(rng.integers(0, 5, size=(37, 3)), jnp.int32)
  a = np.asarray(dsp.queue_positions_cumsum(idx, 5))
  b = np.asarray(dsp.queue_positions_sorted(idx, 5))
  np.testing.assert_array_equal(a, b)
  # Reference: serve choices k-major, tokens in order.
  seen = np.zeros(5, int)
  ref = np.zeros((37, 3), int)
  for k in range(3):
    for t in range(37):
      e = int(idx[t, k])
      ref[t, k] = seen[e]
      seen[e] += 1
  np.testing.assert_array_equal(a, ref)


def test_compute_capacity_values(caplog):
  with caplog.at_level(logging.WARNING, logger=dsp.__name__):
    assert dsp.compute_capacity(10, 4, 2, 1.0) == 5  # 20 / 4 exactly
    assert not caplog.records
    assert dsp.compute_capacity(8, 4, 2, 1.0, multiple_of=4) == 4  # already a multiple
    assert dsp.compute_capacity(10, 4, 2, 1.002) == 6  # ceil(5.01): effective 1.2
    caplog.clear()
    assert dsp.compute_capacity(10, 4, 2, 1.25) == 7  # ceil(6.25)
  assert len(caplog.records) == 1
  assert "1.4000" in caplog.text and "1.2500" in caplog.text  # 7 * 4 / 20 = 1.4

  caplog.clear()
  with caplog.at_level(logging.WARNING, logger=dsp.__name__):
    assert dsp.compute_capacity(10, 4, 2, 1.0, multiple_of=4) == 8  # 5 -> 8
  assert "1.6000" in caplog.text

  caplog.clear()
  with caplog.at_level(logging.WARNING, logger=dsp.__name__):
    assert dsp.compute_capacity(1, 8, 1, 1.0) == 1  # at least one slot: effective 8
    # Rounding by less than 1 %: 400 * 1 * 0.995 / 4 = 99.5 -> 100, effective 1.0.
    assert dsp.compute_capacity(400, 4, 1, 0.995) == 100
  assert len(caplog.records) == 1 and "8.0000" in caplog.text

  with pytest.raises(ValueError):
    dsp.compute_capacity(10, 4, 2, 0.0)


def test_make_dispatcher_auto_rule():
  small = dsp.make_dispatcher(jnp.zeros((16, 2), jnp.int32), jnp.ones((16, 2)), 4, 8)
  assert isinstance(small, dsp.DenseDispatcher)
  # T * E * C = 4096 * 64 * 128 = 2**25 > 2**22: no [T, E, C] mask is built.
  t = 4096
  big = dsp.make_dispatcher(jnp.zeros((t, 2), jnp.int32), jnp.ones((t, 2)), 64, 128)
  assert isinstance(big, dsp.SortedDispatcher)
  with pytest.raises(ValueError):
    dsp.make_dispatcher(jnp.zeros((4, 2), jnp.int32), jnp.ones((4, 2)), 4, 2, kind="other")


def test_dense_and_sorted_agree_under_jit_with_drops():
  num_tokens, num_experts, top_k, width, hidden = 48, 6, 2, 8, 16
  rng = np.random.default_rng(2)
  idx, gates = helpers.random_routing(rng, num_tokens, num_experts, top_k, skew=0.3)
  x = jnp.asarray(rng.normal(size=(num_tokens, width)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(num_tokens, width)), jnp.float32)
  module = helpers.experts_module(num_experts, hidden)
  params = jax.jit(module.init)(jax.random.PRNGKey(3), jnp.zeros((num_experts, 1, width)))
  capacity = dsp.compute_capacity(num_tokens, num_experts, top_k, 0.75)  # 12

  fn = jax.jit(jax.value_and_grad(helpers.moe_loss, argnums=(0, 1, 2), has_aux=True),
               static_argnums=(5, 6, 7))
  results = {k: fn(params, x, gates, idx, weights, module, capacity, k) for k in helpers.KINDS}
  (loss_d, (out_d, m_d)), g_d = results["dense"]
  (loss_s, (out_s, m_s)), g_s = results["sorted"]

  assert 0.05 < float(m_d["dropped_fraction"]) < 0.5  # the skew makes drops happen
  assert float(m_d["dropped_fraction"]) == float(m_s["dropped_fraction"])
  np.testing.assert_array_equal(np.asarray(m_d["expert_load"]), np.asarray(m_s["expert_load"]))
  assert int(np.asarray(m_d["expert_load"]).max()) == capacity
  np.testing.assert_allclose(float(loss_d), float(loss_s), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out_d), np.asarray(out_s), rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(g_d), jax.tree_util.tree_leaves(g_s)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # Dropped choices get no gate gradient; kept ones do.
  kept = np.asarray(jax.jit(dsp.queue_positions_sorted, static_argnums=1)(idx, num_experts))
  kept = kept < capacity
  g_gates = np.asarray(g_s[2])
  assert np.all(g_gates[~kept] == 0) and np.all(g_gates[kept] != 0)


@pytest.mark.parametrize("kind", helpers.KINDS)
def test_dispatcher_is_a_pytree(kind):
  idx = jnp.array([[0, 1], [1, 2], [1, 0]], jnp.int32)
  d = dsp.make_dispatcher(idx, jnp.asarray(GATES), 3, 2, kind=kind)
  x = jnp.arange(6.0).reshape(3, 2)
  got = jax.jit(lambda disp, v: disp.combine(disp.dispatch(v)))(d, x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(d.combine(d.dispatch(x))))
