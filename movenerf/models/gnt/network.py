"""GNT: the generalizable NeRF transformer (network part, after epipolar aggregation).

Per ray: the V per-view features of each sample are projected to width D, the query of
each sample starts as their max over views, and ``depth`` rounds of
  view transformer (fuse views) -> [even rounds: q-MLP on (q, pos-enc, view-enc)]
  -> ray transformer (mix samples along the ray)
follow. The colour is a linear head on the mean over samples of the layer-normed
queries; the last ray transformer's attention from the first sample is returned as
the per-sample weights used for depth and for coarse-to-fine sampling.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from movenerf.geometry.encoding import sinusoidal_encoding
from movenerf.geometry.epipolar import EpipolarSamples
from movenerf.nn.layers import MLP2, layer_norm
from movenerf.models.gnt.ray_transformer import RayTransformer
from movenerf.models.gnt.view_transformer import ViewTransformer
from movenerf.moe.config import MoEConfig


class GNTNet(nn.Module):
  """The GNT transformer stack.

  Attributes:
    width: D, the token width (official ``netwidth``).
    depth: number of (view, ray) transformer rounds (official ``trans_depth``).
    num_heads: heads of the ray transformer.
    ff_ratio: FFN hidden width / D.
    dropout: dropout rate everywhere (active only when not deterministic).
    num_freqs: frequencies of the position and view-direction encodings.
    dtype: compute dtype (float32, or bfloat16 on GPU/TPU).
    moe: GNT-MoVE experts in the view-transformer blocks ``moe.layers`` (None: GNT).
  """

  width: int = 64
  depth: int = 8
  num_heads: int = 4
  ff_ratio: int = 4
  dropout: float = 0.1
  num_freqs: int = 10
  dtype: Any = jnp.float32
  moe: MoEConfig | None = None

  @nn.compact
  def __call__(self, samples: EpipolarSamples, points: jnp.ndarray, directions: jnp.ndarray,
               deterministic: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Colours and attention weights of a batch of rays.

    Args:
      samples: epipolar samples with rgb_feat [R, S, V, 3 + D_in], ray_diff, mask.
      points: [R, S, 3] sample points.
      directions: [R, 3] ray directions (any length; normalised here).
      deterministic: disables dropout.

    Returns:
      rgb [R, 3] and weights [R, S] (rows sum to 1).
    """
    ff_hidden = self.width * self.ff_ratio
    viewdirs = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    pos_enc = sinusoidal_encoding(points, self.num_freqs)
    view_enc = jnp.broadcast_to(sinusoidal_encoding(viewdirs, self.num_freqs)[:, None, :],
                                pos_enc.shape[:-1] + (pos_enc.shape[-1],))
    feats = MLP2(self.width, self.width, dtype=self.dtype, name="rgbfeat_fc")(
        samples.rgb_feat.astype(self.dtype))
    self.sow("intermediates", "rgbfeat_fc_out", feats)
    # The residual stream stays float32; only the matmuls run in ``dtype``.
    q = jnp.max(feats, axis=2).astype(jnp.float32)
    weights = None
    for i in range(self.depth):
      moe = self.moe if self.moe is not None and i in self.moe.layers else None
      q = ViewTransformer(ff_hidden, self.dropout, self.dtype, moe, name=f"view_trans_{i}")(
          q, feats, samples.ray_diff.astype(self.dtype), samples.mask, deterministic)
      self.sow("intermediates", f"q_after_view_trans_{i}", q)
      if i % 2 == 0:
        q = jnp.concatenate([q, pos_enc, view_enc], axis=-1)
        q = MLP2(self.width, self.width, dtype=self.dtype, name=f"q_fc_{i}")(q)
        q = q.astype(jnp.float32)
        self.sow("intermediates", f"q_after_q_fc_{i}", q)
      q, weights = RayTransformer(ff_hidden, self.num_heads, self.dropout, self.dtype,
                                  name=f"ray_trans_{i}")(q, deterministic)
      self.sow("intermediates", f"q_after_ray_trans_{i}", q)
      self.sow("intermediates", f"ray_attn_row0_headmean_{i}", weights)
    h = layer_norm("norm", eps=1e-5)(q)
    self.sow("intermediates", "final_layernorm_out", h)
    rgb = nn.Dense(3, name="rgb_fc")(jnp.mean(h, axis=1))  # float32 head: tiny, visible
    return rgb.astype(jnp.float32), weights.astype(jnp.float32)
