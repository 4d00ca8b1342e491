"""ResUNet-34 feature extractor of GNT/IBRNet (NHWC).

Encoder: a 7x7/2 stem and the first three ResNet-34 stages (3, 4, 6 basic blocks, each
stage down-sampling by 2), instance norm instead of batch norm, reflect padding.
Decoder: two bilinear (align_corners) x2 up-convolutions with skip connections, ELU,
and a 1x1 output conv. Output resolution is 1/4 of the input.

With ``single_net`` the network emits one ``coarse_out_ch`` map used for both passes;
otherwise ``coarse_out_ch + fine_out_ch`` channels split into a coarse and a fine map.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_STAGES = ((64, 3), (128, 4), (256, 6))  # (channels, blocks) of ResNet-34 stages 1-3
_NORM_EPS = 1e-5


def reflect_pad(x: jnp.ndarray, pad: int) -> jnp.ndarray:
  """[B, H, W, C] -> [B, H + 2p, W + 2p, C], reflecting without repeating the edge."""
  if pad == 0:
    return x
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def upsample2x_align_corners(x: jnp.ndarray) -> jnp.ndarray:
  """Bilinear x2 up-sampling with align_corners=True, [B, h, w, C] -> [B, 2h, 2w, C].

  Written as two small interpolation matrices (exact, and a matmul on accelerators).
  """
  def matrix(n_in: int) -> jnp.ndarray:
    n_out = 2 * n_in
    src = jnp.arange(n_out, dtype=jnp.float32) * ((n_in - 1) / max(n_out - 1, 1))
    lo = jnp.clip(jnp.floor(src).astype(jnp.int32), 0, n_in - 1)
    hi = jnp.clip(lo + 1, 0, n_in - 1)
    frac = src - lo
    return (jax.nn.one_hot(lo, n_in) * (1 - frac)[:, None] +
            jax.nn.one_hot(hi, n_in) * frac[:, None])

  my = matrix(x.shape[1]).astype(x.dtype)
  mx = matrix(x.shape[2]).astype(x.dtype)
  x = jnp.einsum("oh,bhwc->bowc", my, x, precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("ow,bhwc->bhoc", mx, x, precision=jax.lax.Precision.HIGHEST)


class ReflectConv(nn.Module):
  """Conv2d with PyTorch-style reflect padding ((k - 1) // 2 each side)."""

  features: int
  kernel: int
  stride: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = reflect_pad(x, (self.kernel - 1) // 2)
    return nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                   padding="VALID", use_bias=self.use_bias, dtype=self.dtype, name="conv")(x)


def instance_norm(name: str, dtype: Any) -> nn.Module:
  # use_fast_variance=False: E[(x - mean)^2], as PyTorch computes it.
  return nn.InstanceNorm(epsilon=_NORM_EPS, use_fast_variance=False, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """ResNet basic block: conv-norm-relu-conv-norm + (projected) identity, relu."""

  features: int
  stride: int = 1
  project: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = ReflectConv(self.features, 3, self.stride, use_bias=False, dtype=self.dtype,
                    name="conv1")(x)
    y = nn.relu(instance_norm("bn1", self.dtype)(y))
    y = ReflectConv(self.features, 3, use_bias=False, dtype=self.dtype, name="conv2")(y)
    y = instance_norm("bn2", self.dtype)(y)
    if self.project:
      x = ReflectConv(self.features, 1, self.stride, use_bias=False, dtype=self.dtype,
                      name="downsample_conv")(x)
      x = instance_norm("downsample_norm", self.dtype)(x)
    return nn.relu(y + x)


class ConvNormELU(nn.Module):
  """Decoder conv: reflect-padded conv with bias, instance norm, ELU."""

  features: int
  kernel: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = ReflectConv(self.features, self.kernel, dtype=self.dtype, name="conv")(x)
    return nn.elu(instance_norm("norm", self.dtype)(x))


def _skip_concat(skip: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """[up-sampled x, skip], the skip zero-padded (or cropped) to x's size.

  Sizes differ only for inputs whose size is not a multiple of 16; the official code
  pads the skip by the (signed) size difference, split between both sides.
  """
  dy = x.shape[1] - skip.shape[1]
  dx = x.shape[2] - skip.shape[2]
  skip = jax.lax.pad(skip, jnp.array(0, skip.dtype),
                     ((0, 0, 0), (dy // 2, dy - dy // 2, 0), (dx // 2, dx - dx // 2, 0), (0, 0, 0)))
  return jnp.concatenate([x, skip], axis=-1)


class ResUNet(nn.Module):
  """Feature extractor.

  Attributes:
    coarse_out_ch: channels of the coarse map (D).
    fine_out_ch: channels of the fine map (used when not ``single_net``).
    single_net: one map serves both passes.
    stages: (channels, blocks) of the encoder stages (ResNet-34's for width 64).
    width: channel scale: every layer's channels are multiplied by ``width / 64``
      (64 is the official network; small CPU configs use 16).
    dtype: compute dtype.
  """

  coarse_out_ch: int = 32
  fine_out_ch: int = 32
  single_net: bool = True
  stages: Sequence[tuple[int, int]] = _STAGES
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Extracts feature maps.

    Args:
      images: [V, H, W, 3] colours in [0, 1].

    Returns:
      (coarse [V, h, w, D_c], fine [V, h, w, D_f]) with h = ceil(H / 4) for even sizes;
      the same array twice when ``single_net``.
    """
    out_ch = self.coarse_out_ch if self.single_net else self.coarse_out_ch + self.fine_out_ch
    scale = lambda ch: max(1, ch * self.width // 64)  # noqa: E731
    stages = [(scale(ch), blocks) for ch, blocks in self.stages]
    x = images.astype(self.dtype)
    x = ReflectConv(stages[0][0], 7, 2, use_bias=False, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(instance_norm("bn1", self.dtype)(x))
    skips = []
    in_ch = stages[0][0]
    for s, (ch, blocks) in enumerate(stages):
      for b in range(blocks):
        stride = 2 if b == 0 else 1
        project = b == 0 and (stride != 1 or in_ch != ch)
        x = BasicBlock(ch, stride, project, self.dtype, name=f"layer{s + 1}_{b}")(x)
        in_ch = ch
      skips.append(x)
    x = skips[-1]
    for level, (skip, ch) in zip((3, 2), ((skips[1], scale(128)), (skips[0], scale(64)))):
      x = ConvNormELU(ch, dtype=self.dtype, name=f"upconv{level}")(upsample2x_align_corners(x))
      x = _skip_concat(skip, x)
      x = ConvNormELU(scale(128) if level == 3 else out_ch, dtype=self.dtype,
                      name=f"iconv{level}")(x)
    x = nn.Conv(out_ch, (1, 1), dtype=self.dtype, name="out_conv")(x)
    if self.single_net:
      return x, x
    return x[..., :self.coarse_out_ch], x[..., -self.fine_out_ch:]
