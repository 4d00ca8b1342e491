"""Regularisers of GNT-MoVE: router diversity and geometry-aware consistency.

Axis letters: T tokens, E experts, K top-k, L MoE layers, R rays, S samples, P ray pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from movenerf.moe.router import RouterOutput

_CV_EPS = 1e-10


def cv_squared(v: jnp.ndarray) -> jnp.ndarray:
  """Squared coefficient of variation ``var_unbiased(v) / (mean(v)^2 + 1e-10)`` (0 if E=1)."""
  if v.shape[-1] <= 1:
    return jnp.zeros(())
  return jnp.var(v, ddof=1) / (jnp.mean(v) ** 2 + _CV_EPS)


def dense_gates(route: RouterOutput) -> jnp.ndarray:
  """[T, E] gates: the top-K gates at their experts, zero elsewhere."""
  onehot = jax.nn.one_hot(route.top_k_idx, route.num_experts, dtype=route.top_k_gates.dtype)
  return jnp.einsum("tk,tke->te", route.top_k_gates, onehot)


def prob_in_top_k(route: RouterOutput, reference: bool = False) -> jnp.ndarray:
  """[T, E] probability that each expert is in the token's top-K under re-drawn noise.

  Default (correct) form: the ranking is made on ``noisy / temp``; expert e is kept if
  its scaled logit beats the best competitor outside the top K (for a kept expert, the
  (K+1)-th largest scaled logit; otherwise the K-th), i.e. with probability
  ``Phi((clean_e - threshold * temp_e) / sigma)``.

  ``reference=True`` reproduces the released code, which takes the thresholds from the
  *probabilities* but compares them with raw *logits*.
  """
  k, sigma = route.top_k, route.noise_std
  if reference:
    thr_in, thr_out = route.top_k1_probs[:, k:k + 1], route.top_k1_probs[:, k - 1:k]
    is_in = route.noisy_logits > thr_in
    thr = jnp.where(is_in, thr_in, thr_out)
    return norm.cdf((route.clean_logits - thr) / sigma)
  top = jax.lax.top_k(route.scaled_logits, k + 1)[0]
  thr_in, thr_out = top[:, k:k + 1], top[:, k - 1:k]
  is_in = route.scaled_logits > thr_in
  thr = jnp.where(is_in, thr_in, thr_out) * route.temperature
  return norm.cdf((route.clean_logits - thr) / sigma)


def diversity_loss(route: RouterOutput, reference: bool = False
                   ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Importance + load balance loss ``cv^2(importance) + cv^2(load)`` of one layer.

  importance_e = sum_t gate_te. load_e = sum_t P(e in top-K) when routing is noisy
  (smooth, differentiable), else the number of tokens routed to e.

  Returns:
    (loss scalar, {'importance': [E], 'load': [E]}).
  """
  gates = dense_gates(route)
  importance = jnp.sum(gates, axis=0)
  noisy = route.top_k < route.num_experts and route.noise_std > 1e-6
  if noisy:
    load = jnp.sum(prob_in_top_k(route, reference), axis=0)
  else:
    load = jnp.sum((gates > 0).astype(gates.dtype), axis=0)
  return cv_squared(importance) + cv_squared(load), {"importance": importance, "load": load}


def consistency_loss(probs: jnp.ndarray, points: jnp.ndarray, pairs: jnp.ndarray,
                     symmetric: bool = True, min_dist: float = 0.01, max_dist: float = 1e4,
                     log_eps: float = 1e-9, num_pairs=None
                     ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Geometry-aware consistency of router distributions between nearby rays.

  For each pair (a, b) of rays and each sample s of ray a: the nearest sample j_s of
  ray b (Euclidean distance d_s), the divergence between the router distributions of
  (a, s) and (b, j_s) averaged over layers and experts, weighted over the samples of
  the ray by ``softmax_s(-clamp(d_s, min_dist, max_dist))``; the loss is the mean over
  pairs and samples.

  Args:
    probs: [L, R, S, E] router probabilities of the L MoE layers.
    points: [R, S, 3] sample points.
    pairs: [P, 2] int (a, b) ray indices; rows with a < 0 are padding (ignored).
    symmetric: 0.5 * (KL(b||a) + KL(a||b)) as the paper describes; False gives the
      released code's KL(b||a) (there ``a`` is ray i and ``b`` ray i - 1).
    log_eps: added inside logs in symmetric mode (0 in the reference form).
    num_pairs: [] the number of pairs the mean is over (default: the valid rows of
      ``pairs``); a slice of a batch's rays passes the batch's, so that the slices'
      losses add up to the batch's.

  Returns:
    (loss, {'kl': [P, S], 'weights': [P, S]}).
  """
  valid = pairs[:, 0] >= 0
  a_idx = jnp.where(valid, pairs[:, 0], 0)
  b_idx = jnp.where(valid, pairs[:, 1], 0)
  pa_pts, pb_pts = points[a_idx], points[b_idx]  # [P, S, 3]
  dist = jnp.linalg.norm(pa_pts[:, :, None, :] - pb_pts[:, None, :, :], axis=-1)  # [P, S, S]
  nearest = jnp.argmin(dist, axis=-1)  # [P, S]
  d = jnp.min(dist, axis=-1)
  d = jnp.clip(jnp.where(jnp.isnan(d), max_dist, d), min_dist, max_dist)
  weights = jax.nn.softmax(-d, axis=-1)
  pa = probs[:, a_idx]  # [L, P, S, E]
  pb = jnp.take_along_axis(probs[:, b_idx], nearest[None, :, :, None], axis=2)
  if symmetric:
    la, lb = jnp.log(pa + log_eps), jnp.log(pb + log_eps)
    div = 0.5 * (pb * (lb - la) + pa * (la - lb))
  else:
    div = pb * (jnp.log(pb) - jnp.log(pa))
  kl = jnp.mean(div, axis=(0, 3))  # [P, S]
  num_pairs = jnp.sum(valid) if num_pairs is None else num_pairs
  count = jnp.maximum(num_pairs * kl.shape[1], 1)
  loss = jnp.sum(jnp.where(valid[:, None], kl * weights, 0.0)) / count
  return loss, {"kl": kl, "weights": weights}


def reference_pairs(close_inds) -> jnp.ndarray:
  """Pairs of the released code: ray i with ray i - 1 wherever close_inds[i] != 0."""
  rows = [(i, i - 1) for i, c in enumerate(np.asarray(close_inds)) if c != 0]
  return jnp.asarray(np.array(rows, np.int32).reshape(-1, 2))
