"""Small building blocks shared by the transformers."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from movenerf.nn.dropout import Dropout


@jax.custom_vjp
def matmul(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  """``x @ w`` for x [..., I], w [I, O], with a backward pass laid out for XLA:CPU.

  The weight gradient ``x^T g`` contracts over the rows of both operands, so XLA
  transposes one of them; left to itself it fuses that transpose into the elementwise
  loop that produces ``g``, which then reads its (up to ~60) inputs column by column
  (``benchmarks/README.md`` has the profile). The optimisation barrier makes ``g`` a
  row-major buffer first. Values and gradients are those of ``x @ w``.
  """
  return x @ w


def _matmul_fwd(x, w):
  return x @ w, (x, w)


def _matmul_bwd(res, g):
  x, w = res
  g = jax.lax.optimization_barrier(g)
  dx = g @ w.T
  dw = x.reshape(-1, x.shape[-1]).T @ g.reshape(-1, g.shape[-1])
  return dx, dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nn.Module):
  """``nn.Dense`` (same parameter names, shapes and initialisers) computed with
  :func:`matmul`.

  Attributes:
    features: output width.
    use_bias: add a bias.
    dtype: compute dtype (parameters are stored in float32).
  """

  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features))
    y = matmul(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(
          self.dtype)
    return y


class MLP2(nn.Module):
  """Dense -> activation -> Dense (the official ``nn.Sequential(Linear, ReLU, Linear)``)."""

  hidden: int
  out: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = self.activation(Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    return Dense(self.out, dtype=self.dtype, name="fc2")(x)


class FeedForward(nn.Module):
  """Transformer FFN: Dense(hidden) -> ReLU -> dropout -> Dense(width) -> dropout."""

  hidden: int
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    width = x.shape[-1]
    x = nn.relu(Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    x = Dropout(self.dropout)(x, deterministic=deterministic)
    x = Dense(width, dtype=self.dtype, name="fc2")(x)
    return Dropout(self.dropout)(x, deterministic=deterministic)


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
    return matmul(x, self.kernel) + self.bias


class LinearMLP2(nn.Module):
  """Weights of ``MLP2`` (``fc1``, ``fc2``) exposed as ``Linear`` children."""

  in_features: int
  hidden: int
  out: int

  def setup(self):
    self.fc1 = Linear(self.in_features, self.hidden)
    self.fc2 = Linear(self.hidden, self.out)
