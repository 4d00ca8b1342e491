"""Small building blocks shared by the transformers."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp


class MLP2(nn.Module):
  """Dense -> activation -> Dense (the official ``nn.Sequential(Linear, ReLU, Linear)``)."""

  hidden: int
  out: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = self.activation(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(self.out, dtype=self.dtype, name="fc2")(x)


class FeedForward(nn.Module):
  """Transformer FFN: Dense(hidden) -> ReLU -> dropout -> Dense(width) -> dropout."""

  hidden: int
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    width = x.shape[-1]
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = nn.Dense(width, dtype=self.dtype, name="fc2")(x)
    return nn.Dropout(self.dropout)(x, deterministic=deterministic)


def layer_norm(name: str, eps: float = 1e-6) -> nn.Module:
  # Statistics in float32 whatever the compute dtype: bfloat16 variance is too coarse.
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)
