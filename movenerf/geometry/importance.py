"""Coarse-to-fine importance sampling from GNT's attention weights.

Follows the official ``sample_fine_pts`` / ``sample_pdf``: the first and last coarse
weights are dropped, the remaining S - 2 weights own the intervals between the
midpoints of consecutive coarse depths (in inverse depth when sampling uniformly in
1/z), 1e-5 is added to every weight, and the inverse CDF is evaluated at evenly
spaced (evaluation) or uniform random (training) ``u``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_WEIGHT_PAD = 1e-5
_MIN_DENOM = 1e-5


def linspace01(num: int) -> jnp.ndarray:
  """[num] float32 evenly spaced values in [0, 1], rounded the way torch.linspace rounds.

  torch fills the first half as ``start + i * step`` and the second as
  ``end - (num - 1 - i) * step``; matching it keeps deterministic importance samples
  bit-comparable with the official code.
  """
  if num == 1:
    return jnp.zeros((1,), jnp.float32)
  step = jnp.float32(1.0) / jnp.float32(num - 1)
  i = jnp.arange(num, dtype=jnp.float32)
  return jnp.where(i < num // 2, i * step, 1.0 - (num - 1 - i) * step).astype(jnp.float32)


def sample_pdf(bins: jnp.ndarray, weights: jnp.ndarray, num_samples: int,
               rng: jax.Array | None = None) -> jnp.ndarray:
  """Inverse-CDF sampling of a piecewise-constant pdf.

  Args:
    bins: [R, M + 1] ascending bin edges.
    weights: [R, M] non-negative bin weights (not modified).
    num_samples: N samples per ray.
    rng: None for deterministic ``u = linspace(0, 1, N)``, else a PRNG key.

  Returns:
    [R, N] samples (in ``u`` order, i.e. ascending, when deterministic).
  """
  num_rays, num_bins = weights.shape
  weights = weights + _WEIGHT_PAD
  pdf = weights / jnp.sum(weights, axis=-1, keepdims=True)
  cdf = jnp.concatenate([jnp.zeros((num_rays, 1), pdf.dtype), jnp.cumsum(pdf, axis=-1)], -1)
  if rng is None:
    u = jnp.broadcast_to(linspace01(num_samples), (num_rays, num_samples))
  else:
    u = jax.random.uniform(rng, (num_rays, num_samples))
  # Only cdf[:, :M] takes part in the search, like the official loop over M bins:
  # above is in [1, M], so the last edge is reached through t ~ 1.
  above = jnp.sum(u[:, :, None] >= cdf[:, None, :num_bins], axis=-1)
  below = jnp.maximum(above - 1, 0)
  take = lambda a, idx: jnp.take_along_axis(a, idx, axis=-1)
  cdf_lo, cdf_hi = take(cdf, below), take(cdf, above)
  bin_lo, bin_hi = take(bins, below), take(bins, above)
  denom = cdf_hi - cdf_lo
  denom = jnp.where(denom < _MIN_DENOM, 1.0, denom)
  t = (u - cdf_lo) / denom
  return bin_lo + t * (bin_hi - bin_lo)


def fine_depths(coarse_depths: jnp.ndarray, weights: jnp.ndarray, num_importance: int,
                inverse_depth: bool = False, rng: jax.Array | None = None
                ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Importance depths from coarse weights, merged with the coarse depths.

  Args:
    coarse_depths: [R, S] ascending coarse depths.
    weights: [R, S] coarse weights (gradients are stopped).
    num_importance: N extra samples.
    inverse_depth: the coarse samples were uniform in 1/z.
    rng: None (deterministic) or a PRNG key.

  Returns:
    (importance depths [R, N] before merging, merged ascending depths [R, S + N]).
  """
  weights = jax.lax.stop_gradient(weights)[:, 1:-1]
  if inverse_depth:
    inv = 1.0 / coarse_depths
    bins = jnp.flip(0.5 * (inv[:, 1:] + inv[:, :-1]), axis=-1)
    samples = 1.0 / sample_pdf(bins, jnp.flip(weights, axis=-1), num_importance, rng)
  else:
    bins = 0.5 * (coarse_depths[:, 1:] + coarse_depths[:, :-1])
    samples = sample_pdf(bins, weights, num_importance, rng)
  samples = jax.lax.stop_gradient(samples)
  return samples, jnp.sort(jnp.concatenate([coarse_depths, samples], axis=-1), axis=-1)
