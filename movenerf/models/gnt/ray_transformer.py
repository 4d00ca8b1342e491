"""Ray transformer: multi-head self-attention among the samples of each ray."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from movenerf.nn.dropout import Dropout
from movenerf.nn.layers import Dense, FeedForward, layer_norm


class RayAttention(nn.Module):
  """Multi-head dot-product self-attention along the ray.

  Attributes:
    num_heads: number of heads (width must divide by it).
    dropout: dropout on attention weights and output.
    dtype: compute dtype.
  """

  num_heads: int = 4
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    """Self-attention.

    Args:
      x: [R, S, D].

    Returns:
      (out [R, S, D], attention [R, heads, S_query, S_key]).
    """
    rays, samples, width = x.shape
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
    head_dim = width // self.num_heads
    # Head-major [R, heads, S, head_dim] operands: both batched products then run on
    # contiguous [S, head_dim] blocks. The queries are scaled before the product.
    split = lambda t: jnp.transpose(t.reshape(rays, samples, self.num_heads, head_dim),
                                    (0, 2, 1, 3))
    dense = lambda name: Dense(width, use_bias=False, dtype=self.dtype, name=name)
    scale = jnp.sqrt(jnp.float32(head_dim)).astype(self.dtype)
    q, k, v = split(dense("q_fc")(x) / scale), split(dense("k_fc")(x)), split(dense("v_fc")(x))
    attn = jax.nn.softmax(jnp.einsum("rhqd,rhkd->rhqk", q, k).astype(jnp.float32), axis=-1)
    self.sow("intermediates", "attn_heads", attn)
    attn_d = Dropout(self.dropout)(attn.astype(v.dtype), deterministic=deterministic)
    out = jnp.transpose(jnp.einsum("rhqk,rhkd->rhqd", attn_d, v), (0, 2, 1, 3))
    out = Dense(width, dtype=self.dtype, name="out_fc")(out.reshape(rays, samples, width))
    return Dropout(self.dropout)(out, deterministic=deterministic), attn


class RayTransformer(nn.Module):
  """Pre-norm block: x + attn(norm(x)); then + FFN(norm(.)).

  Returns the block output and the attention paid by the first (nearest) sample to
  every sample, averaged over heads: GNT's "attention as density". The weights are
  taken before attention dropout (the official code returns them after it), so that
  importance sampling in training is not perturbed by dropout noise.
  """

  ff_hidden: int
  num_heads: int = 4
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    """[R, S, D] -> ([R, S, D] float32 residual stream, weights [R, S])."""
    y, attn = RayAttention(self.num_heads, self.dropout, self.dtype, name="attn")(
        layer_norm("attn_norm")(x), deterministic)
    x = x + y.astype(jnp.float32)
    y = FeedForward(self.ff_hidden, self.dropout, self.dtype, name="ff")(
        layer_norm("ff_norm")(x), deterministic)
    return x + y.astype(jnp.float32), jnp.mean(attn[:, :, 0, :], axis=1)
