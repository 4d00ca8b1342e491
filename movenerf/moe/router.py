"""The GNT-MoVE router: a cosine gate with a learned per-expert temperature.

Axis letters: T tokens routed together, D features, E experts, K top-k.

For tokens x [T, D]:
  r       = x @ R                                   R: reduce_dim [D, E/2]
  clean_e = (r . W_e) / (|r| |W_e| + 1e-8)          W: w_gate [E/2, E] (cosine logits)
  noisy   = clean + (noise_std / E) * N(0, 1)       (training only)
  p       = softmax(noisy / temp)                   temp [1, E], learned
  top-K of p; the gates are the top-K probabilities, not renormalised (as in the
  reference; ``renormalize=True`` makes them sum to 1).
"""

from __future__ import annotations

import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

_COSINE_EPS = 1e-8


@flax.struct.dataclass
class RouterOutput:
  """What the router decided for T tokens.

  Attributes:
    probs: [T, E] softmax probabilities (used by the consistency loss).
    clean_logits: [T, E] cosine logits without noise.
    noisy_logits: [T, E] logits after noise (== clean in evaluation).
    scaled_logits: [T, E] ``noisy / temp``: the values the ranking is made on.
    top_k_idx: [T, K] int32 chosen experts, best first.
    top_k_gates: [T, K] combine weights.
    top_k1_probs: [T, K + 1] the K + 1 largest probabilities (K + 1 <= E), else [T, K].
    temperature: [E] per-expert temperature.
    noise_std: effective noise std (noise_std / E in training, 0 in evaluation).
  """

  probs: jnp.ndarray
  clean_logits: jnp.ndarray
  noisy_logits: jnp.ndarray
  scaled_logits: jnp.ndarray
  top_k_idx: jnp.ndarray
  top_k_gates: jnp.ndarray
  top_k1_probs: jnp.ndarray
  temperature: jnp.ndarray
  noise_std: float = flax.struct.field(pytree_node=False)

  @property
  def top_k(self) -> int:
    return self.top_k_idx.shape[-1]

  @property
  def num_experts(self) -> int:
    return self.probs.shape[-1]


def _w_gate_init(key, shape, dtype=jnp.float32):
  # PyTorch kaiming_uniform_(a=sqrt(5)) on a [E/2, E] tensor: U(-1/sqrt(E), 1/sqrt(E)).
  bound = 1.0 / math.sqrt(shape[1])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class CosineRouter(nn.Module):
  """Noisy top-K cosine router.

  Attributes:
    num_experts: E (even, >= 2).
    top_k: K.
    noise_std: training noise is N(0, (noise_std / E)^2).
    renormalize: make the K gates sum to 1 (the reference does not).
    reference_init: initialise ``reduce_dim`` to zeros as the reference does, which
      makes every router uniform at step 0 (its gradient is then ~1/eps-scaled); by
      default it gets a LeCun-normal init so that routing starts diverse.
  """

  num_experts: int = 4
  top_k: int = 2
  noise_std: float = 1.0
  renormalize: bool = False
  reference_init: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> RouterOutput:
    """Routes tokens.

    Args:
      x: [T, D] gate inputs.
      train: adds routing noise (needs the 'router' RNG stream when noise_std > 0).
    """
    num_experts, k = self.num_experts, self.top_k
    if num_experts % 2 or num_experts < 2:
      raise ValueError(f"num_experts must be even and >= 2, got {num_experts}")
    if not 1 <= k <= num_experts:
      raise ValueError(f"top_k must be in [1, {num_experts}], got {k}")
    init_r = nn.initializers.zeros_init() if self.reference_init else nn.initializers.lecun_normal()
    reduce_dim = self.param("reduce_dim", init_r, (x.shape[-1], num_experts // 2))
    w_gate = self.param("w_gate", _w_gate_init, (num_experts // 2, num_experts))
    temp = self.param("temp", nn.initializers.ones_init(), (1, num_experts))
    x = x.astype(jnp.float32)
    r = x @ reduce_dim
    clean = (r @ w_gate) / (jnp.linalg.norm(r, axis=-1, keepdims=True)
                            * jnp.linalg.norm(w_gate, axis=0, keepdims=True) + _COSINE_EPS)
    sigma = self.noise_std / num_experts if train else 0.0
    noisy = clean
    if sigma > 0:
      noisy = clean + sigma * jax.random.normal(self.make_rng("router"), clean.shape)
    return route(clean, noisy, temp[0], k, sigma, self.renormalize)


def route(clean: jnp.ndarray, noisy: jnp.ndarray, temperature: jnp.ndarray, top_k: int,
          noise_std: float, renormalize: bool = False) -> RouterOutput:
  """Softmax and top-K given logits (separate so tests can inject stored noise).

  Args:
    clean, noisy: [T, E] logits.
    temperature: [E].
  """
  scaled = noisy / temperature
  probs = jax.nn.softmax(scaled, axis=-1)
  num_experts = probs.shape[-1]
  vals, idx = jax.lax.top_k(probs, min(top_k + 1, num_experts))
  gates = vals[:, :top_k]
  if renormalize:
    gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
  return RouterOutput(probs, clean, noisy, scaled, idx[:, :top_k].astype(jnp.int32), gates, vals,
                      temperature, noise_std)
