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


class Linear(nn.Module):
  """A dense layer whose weights can be read without applying it.

  Same parameter names, shapes and initialisers as ``nn.Dense`` (``kernel [in, out]``,
  ``bias [out]``), so checkpoints are interchangeable; modules that fold several
  linear maps into one matmul read ``.kernel`` / ``.bias`` directly.
  """

  in_features: int
  features: int
  use_bias: bool = True

  def setup(self):
    self.kernel = self.param("kernel", nn.initializers.lecun_normal(),
                             (self.in_features, self.features))
    self.bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,))
                 if self.use_bias else jnp.zeros((self.features,)))

  def __call__(self, x):
    return x @ self.kernel + self.bias


class LinearMLP2(nn.Module):
  """Weights of ``MLP2`` (``fc1``, ``fc2``) exposed as ``Linear`` children."""

  in_features: int
  hidden: int
  out: int

  def setup(self):
    self.fc1 = Linear(self.in_features, self.hidden)
    self.fc2 = Linear(self.hidden, self.out)
