"""View transformer: fuses, for every sample point, what the V source views see.

Subtraction-based attention (GNT's ``Attention2D``): per channel and per view, the
logit is ``attn_fc(k_v - q + pos_v)``, where ``pos_v = pos_fc(ray_diff_v)``; views
that do not see the point get -1e9 before the softmax over views; the output is
``sum_v softmax_v * (value_v + pos_v)``. As in the official code the values are
computed from the projected keys (``v = v_fc(k_fc(x))``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from movenerf.models.layers import MLP2, FeedForward, layer_norm

_MASKED_LOGIT = -1e9


class ViewAttention(nn.Module):
  """Subtraction-based attention over the view axis.

  Attributes:
    dropout: dropout on the attention weights and the output.
    dtype: compute dtype of the matmuls.
  """

  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q, k, ray_diff, mask, deterministic: bool = True):
    """Attends over views.

    Args:
      q: [R, S, D] normalised queries.
      k: [R, S, V, D] per-view features.
      ray_diff: [R, S, V, 4] view-direction features.
      mask: [R, S, V, 1] 0/1 visibility.

    Returns:
      [R, S, D].
    """
    width = q.shape[-1]
    dense = lambda name, bias=False: nn.Dense(width, use_bias=bias, dtype=self.dtype, name=name)
    q = dense("q_fc")(q)
    k = dense("k_fc")(k)
    v = dense("v_fc")(k)
    pos = MLP2(width // 8, width, dtype=self.dtype, name="pos_fc")(ray_diff)
    logits = MLP2(width // 8, width, dtype=self.dtype, name="attn_fc")(k - q[:, :, None, :] + pos)
    logits = jnp.where(mask == 0, _MASKED_LOGIT, logits.astype(jnp.float32))
    attn = jax.nn.softmax(logits, axis=-2).astype(v.dtype)
    attn = nn.Dropout(self.dropout)(attn, deterministic=deterministic)
    x = jnp.sum((v + pos) * attn, axis=-2)
    x = dense("out_fc", bias=True)(x)
    return nn.Dropout(self.dropout)(x, deterministic=deterministic)


class ViewTransformer(nn.Module):
  """Pre-norm block: q + attn(norm(q), views); then + FFN(norm(.)).

  Attributes:
    ff_hidden: hidden width of the FFN.
    dropout: dropout rate.
    dtype: compute dtype.
  """

  ff_hidden: int
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q, k, ray_diff, mask, deterministic: bool = True):
    """[R, S, D] queries, [R, S, V, D] keys -> [R, S, D] (float32 residual stream)."""
    x = ViewAttention(self.dropout, self.dtype, name="attn")(
        layer_norm("attn_norm")(q), k, ray_diff, mask, deterministic)
    x = x.astype(jnp.float32) + q
    y = FeedForward(self.ff_hidden, self.dropout, self.dtype, name="ff")(
        layer_norm("ff_norm")(x), deterministic)
    return y.astype(jnp.float32) + x
