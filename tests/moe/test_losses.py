"""Tests of movenerf.moe.losses: top-K probabilities, the diversity and consistency losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.moe import losses
from movenerf.moe.router import route


def test_prob_in_top_k_matches_monte_carlo():
  """The corrected formula: P(expert e in top-K when only its own noise is re-drawn)."""
  rng = np.random.default_rng(0)
  tokens, experts, k, sigma = 6, 4, 2, 0.25
  clean = jnp.asarray(rng.normal(0, 0.3, (tokens, experts)), jnp.float32)
  temp = jnp.asarray([1.0, 0.7, 1.3, 0.9])
  noisy = clean + sigma * jnp.asarray(rng.normal(size=(tokens, experts)), jnp.float32)
  r = route(clean, noisy, temp, k, sigma)
  p = np.asarray(losses.prob_in_top_k(r))
  scaled = np.asarray(noisy / temp)
  draws = 20000
  for e in range(experts):
    s = np.repeat(scaled[None], draws, 0)
    s[:, :, e] = (np.asarray(clean)[:, e] + sigma * rng.normal(size=(draws, tokens))) / float(temp[e])
    rank = np.sum(s > s[:, :, e:e + 1], axis=-1)  # competitors strictly above e
    np.testing.assert_allclose(np.mean(rank < k, 0), p[:, e], atol=0.015)
  # The released formula compares logits with probabilities and does not.
  assert np.max(np.abs(np.asarray(losses.prob_in_top_k(r, reference=True)) - p)) > 0.1


def test_cv_squared_and_balanced_routing_has_zero_loss():
  np.testing.assert_allclose(losses.cv_squared(jnp.array([1.0, 1.0, 1.0])), 0.0)
  np.testing.assert_allclose(losses.cv_squared(jnp.array([0.0, 2.0])), 2.0, rtol=1e-6)
  assert float(losses.cv_squared(jnp.array([3.0]))) == 0.0
  # 4 tokens, each expert first choice once and second choice once, equal gates.
  idx = jnp.array([[0, 1], [1, 2], [2, 3], [3, 0]])
  gates = jnp.full((4, 2), 0.4)
  r = route(jnp.zeros((4, 4)), jnp.zeros((4, 4)), jnp.ones(4), 2, 0.0)
  r = r.replace(top_k_idx=idx, top_k_gates=gates)
  loss, aux = losses.diversity_loss(r)
  np.testing.assert_allclose(aux["importance"], 0.8)
  np.testing.assert_allclose(aux["load"], 2.0)
  assert float(loss) == pytest.approx(0.0, abs=1e-9)


def test_consistency_loss_analytic_and_padding():
  # Two rays of 2 samples; ray 1's samples sit exactly on ray 0's (distance 0 -> 0.01).
  pts = jnp.array([[[0.0, 0, 0], [1.0, 0, 0]], [[1.0, 0, 0], [0.0, 0, 0]]])
  pa = jnp.array([0.7, 0.3])
  pb = jnp.array([0.4, 0.6])
  # probs [L=1, R=2, S=2, E=2]: ray 0 = (pa, pa); ray 1 = (pb, pb).
  probs = jnp.stack([jnp.stack([pa, pa]), jnp.stack([pb, pb])])[None]
  pairs = jnp.array([[1, 0], [-1, -1]])  # second row is padding
  loss, aux = losses.consistency_loss(probs, pts, pairs, symmetric=False)
  kl_ba = np.sum(np.asarray(pa) * np.log(np.asarray(pa) / np.asarray(pb))) / 2  # mean over E
  # Reference form: KL(p_partner || p_ray) with ray a = 1, partner b = 0 -> KL(pa || pb).
  np.testing.assert_allclose(aux["kl"][0], kl_ba, rtol=1e-5)
  np.testing.assert_allclose(aux["weights"][0], 0.5, rtol=1e-6)  # equal distances
  np.testing.assert_allclose(loss, kl_ba * 0.5, rtol=1e-5)  # mean over the valid pair only
  sym, aux_s = losses.consistency_loss(probs, pts, pairs, symmetric=True)
  kl_ab = np.sum(np.asarray(pb) * np.log(np.asarray(pb) / np.asarray(pa))) / 2
  np.testing.assert_allclose(aux_s["kl"][0], 0.5 * (kl_ab + kl_ba), rtol=1e-4)
  g = jax.grad(lambda p: losses.consistency_loss(p, pts, pairs)[0])(probs)
  assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
