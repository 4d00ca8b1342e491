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

from movenerf.nn import dropout
from movenerf.nn.dropout import Dropout
from movenerf.nn.layers import FeedForward, Linear, LinearMLP2, layer_norm, matmul
from movenerf.moe.config import MoEConfig
from movenerf.moe.layer import MoVEFeedForward

_MASKED_LOGIT = -1e9


@jax.custom_vjp
def attend_views(logits: jnp.ndarray, value: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
  """``sum_v softmax_v(logits) * scale * value``: the training form of the attention.

  Args:
    logits: [..., V, D] float32 (masked views at -1e9).
    value: [..., V, D].
    scale: dropout multipliers of the weights, [..., V, D] or a scalar.

  Returns:
    [..., D] float32.

  Its backward pass is written out: with ``w`` the weights and ``t = scale * value *
  dx``, ``dlogits = w * (t - sum_v w * t)`` and ``dvalue = w * scale * dx``, one
  reduction over views, where XLA's derivative goes back through the max, exp, sum and
  division, each over [R, S, V, D].
  """
  return _attend_views_fwd(logits, value, scale)[0]


def _view_softmax(logits):
  expo = jnp.exp(logits - jnp.max(logits, axis=-2, keepdims=True))
  return expo / jnp.sum(expo, axis=-2, keepdims=True)


def _attend_views_fwd(logits, value, scale):
  weights = _view_softmax(logits)
  return jnp.sum(weights * scale * value, axis=-2), (weights, value, scale)


def _attend_views_bwd(res, dx):
  weights, value, scale = res
  dx = dx[..., None, :]
  t = scale * value * dx
  dlogits = weights * (t - jnp.sum(weights * t, axis=-2, keepdims=True))
  dvalue = (weights * scale * dx).astype(value.dtype)
  return dlogits.astype(weights.dtype), dvalue, None


attend_views.defvjp(_attend_views_fwd, _attend_views_bwd)


def mask_logits(logits, mask):
  """float32 logits, ``_MASKED_LOGIT`` where ``mask`` is 0."""
  return jnp.where(mask == 0, _MASKED_LOGIT, logits.astype(jnp.float32))


class ViewAttention(nn.Module):
  """Subtraction-based attention over the view axis.

  Computed with the linear maps folded (same parameters and result as the official
  formulation up to float rounding, fewer passes over the [R, S, V, D] tensors, which
  bound the speed):
    value  = x Wk Wv + pos_h P2 + pb2                           (v + pos)
    hidden = relu(x Wk A1 + pos_h P2 A1 - q Wq A1 + pb2 A1 + ab1)   (attn_fc layer 1)
    pos_h  = relu(ray_diff P1 + pb1)                            (pos_fc layer 1)
  In inference each product of ``x`` and of ``pos_h`` is its own matmul, so that no
  [R, S, V, .] tensor is concatenated or sliced; in training ``[x | pos_h]`` is
  projected by ``[[Wk Wv, Wk A1], [P2, P2 A1]]`` in one matmul and sliced, whose
  backward pass is one matmul per gradient.

  Attributes:
    dropout: dropout on the attention weights and the output.
    dtype: compute dtype of the matmuls.
    bias_rows: add the biases inside the matmuls, as a row of the weights against a
      column of ones (None: in bfloat16 only). The result is the same either way.
  """

  dropout: float = 0.1
  dtype: Any = jnp.float32
  bias_rows: bool | None = None

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
    hidden = width // 8
    wq = Linear(width, width, use_bias=False, name="q_fc").kernel
    wk = Linear(width, width, use_bias=False, name="k_fc").kernel
    wv = Linear(width, width, use_bias=False, name="v_fc").kernel
    pos_fc = LinearMLP2(ray_diff.shape[-1], hidden, width, name="pos_fc")
    attn_fc = LinearMLP2(width, hidden, width, name="attn_fc")
    out_fc = Linear(width, width, name="out_fc")
    a1, ab1 = attn_fc.fc1.kernel, attn_fc.fc1.bias
    p2, pb2 = pos_fc.fc2.kernel, pos_fc.fc2.bias
    cast = lambda t: t.astype(self.dtype)
    # In bfloat16 the biases ride in the matmuls as a row of the weights against a column
    # of ones: their gradients then come out of the weight-gradient matmuls instead of
    # sums over [R, S, V], which XLA:CPU computes in bfloat16 as converts plus tree
    # reductions. In float32 they are added after the matmuls.
    bias_rows = self.bias_rows
    if bias_rows is None:
      bias_rows = jnp.dtype(self.dtype) != jnp.float32

    def dense(x, w, b=None):
      if b is None:
        return matmul(x, cast(w))
      if bias_rows:
        ones = jnp.ones(x.shape[:-1] + (1,), self.dtype)
        return matmul(jnp.concatenate([x, ones], axis=-1),
                      cast(jnp.concatenate([w, b[None]], axis=0)))
      return matmul(x, cast(w)) + cast(b)

    pos_h = nn.relu(dense(cast(ray_diff), pos_fc.fc1.kernel, pos_fc.fc1.bias))
    value, pre = self.project(dense, cast(k), pos_h, wk @ wv, wk @ a1, p2, pb2, a1, ab1,
                              deterministic)
    q_term = matmul(cast(q), cast(wq @ a1))  # [R, S, h]
    attn_hidden = nn.relu(pre - q_term[:, :, None, :])
    logits = dense(attn_hidden, attn_fc.fc2.kernel, attn_fc.fc2.bias)
    logits = mask_logits(logits, mask)
    if deterministic:
      # Softmax over views, normalised after the sum (one division per [R, S, D]
      # instead of per view); all-masked points get uniform weights (as with -1e9 fill).
      expo = jnp.exp(logits - jnp.max(logits, axis=-2, keepdims=True))
      x = jnp.sum(expo * value, axis=-2) / jnp.sum(expo, axis=-2)
    else:
      scale = jnp.ones((), jnp.float32)  # dropout multipliers of the attention weights
      if self.dropout > 0.0:
        scale = dropout.keep_scale(self.make_rng(dropout.RNG_COLLECTION), logits.shape,
                                   self.dropout)
      x = attend_views(logits, value, scale)
    x = x.astype(self.dtype)
    x = matmul(x, cast(out_fc.kernel)) + cast(out_fc.bias)
    return Dropout(self.dropout)(x, deterministic=deterministic)

  def project(self, dense, k, pos_h, wkv, wka, p2, pb2, a1, ab1, deterministic: bool):
    """The values ``k Wk Wv + pos_h P2 + pb2`` [R, S, V, D] and the hidden
    pre-activations ``k Wk A1 + pos_h P2 A1 + pb2 A1 + ab1`` [R, S, V, h] (the class
    docstring), ``wkv = Wk Wv`` and ``wka = Wk A1``; ``dense(x, w, b=None)`` multiplies
    in the compute dtype. In inference one matmul per operand, in training one of the
    concatenation, sliced."""
    if deterministic:
      value = dense(k, wkv) + dense(pos_h, p2, pb2)
      return value, dense(k, wka) + dense(pos_h, p2 @ a1, pb2 @ a1 + ab1)
    proj = jnp.concatenate([jnp.concatenate([wkv, wka], axis=1),
                            jnp.concatenate([p2, p2 @ a1], axis=1)], axis=0)
    z = dense(jnp.concatenate([k, pos_h], axis=-1), proj,
              jnp.concatenate([pb2, pb2 @ a1 + ab1]))  # [R, S, V, D + h]
    width = wkv.shape[1]
    return z[..., :width], z[..., width:]


class ViewTransformer(nn.Module):
  """Pre-norm block: q + attn(norm(q), views); then + FFN(norm(.)).

  Attributes:
    ff_hidden: hidden width of the FFN.
    dropout: dropout rate.
    dtype: compute dtype.
    moe: when set, the FFN is a mixture of view experts (GNT-MoVE) named ``moe``.
  """

  ff_hidden: int
  dropout: float = 0.1
  dtype: Any = jnp.float32
  moe: MoEConfig | None = None

  @nn.compact
  def __call__(self, q, k, ray_diff, mask, deterministic: bool = True):
    """[R, S, D] queries, [R, S, V, D] keys -> [R, S, D] (float32 residual stream)."""
    x = ViewAttention(self.dropout, self.dtype, name="attn")(
        layer_norm("attn_norm")(q), k, ray_diff, mask, deterministic)
    x = x.astype(jnp.float32) + q
    h = layer_norm("ff_norm")(x)
    if self.moe is None:
      y = FeedForward(self.ff_hidden, self.dropout, self.dtype, name="ff")(h, deterministic)
    else:
      gate_input = q if self.moe.gate_input_ahead else None
      y = MoVEFeedForward(self.moe, self.dropout, self.dtype, name="moe")(h, gate_input,
                                                                         deterministic)
    return y.astype(jnp.float32) + x
