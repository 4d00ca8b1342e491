"""Experts as one batch of stacked parameters, and the dispatch -> experts -> combine step.

Axis letters: T tokens routed together, D features, E experts, C expert capacity,
H expert hidden width.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from movenerf.nn.dropout import Dropout
from movenerf.nn.layers import Dense
from movenerf.moe.dispatch import Dispatcher


ACTIVATIONS = {
    # Exact erf GELU (approximate=False) to match PyTorch nn.GELU(), the reference.
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "relu": nn.relu,
}


class ExpertFFN(nn.Module):
  """One expert: Dense(H) -> activation -> Dropout -> Dense(D).

  Attributes:
    hidden: H.
    dropout: dropout rate after the activation (active only when not deterministic).
    dtype: compute dtype.
    activation: "gelu" (the reference's experts) or "relu" (the dense GNT FFN's).
  """

  hidden: int
  dropout: float = 0.1
  dtype: Any = jnp.float32
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
    """[..., D] -> [..., D]."""
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"unknown expert activation {self.activation!r}; "
                       f"choose from {sorted(ACTIVATIONS)}")
    h = ACTIVATIONS[self.activation](Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    h = Dropout(self.dropout)(h, deterministic=deterministic)
    return Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)


class FeedForwardExperts(nn.Module):
  """E independent ``ExpertFFN``s run as one vmapped module.

  Parameters (directly under this module, stacked on a leading expert axis)::

    fc1/kernel [E, D, H], fc1/bias [E, H], fc2/kernel [E, H, D], fc2/bias [E, D]

  Each expert draws its own parameter initialisation and its own dropout masks.

  Attributes:
    num_experts: E.
    hidden: H.
    dropout: dropout rate inside each expert.
    dtype: compute dtype.
    activation: see ``ExpertFFN``.
  """

  num_experts: int
  hidden: int
  dropout: float = 0.1
  dtype: Any = jnp.float32
  activation: str = "gelu"

  def setup(self):
    stacked = nn.vmap(ExpertFFN, in_axes=(0, None), out_axes=0,
                      variable_axes={"params": 0},
                      split_rngs={"params": True, "dropout": True},
                      axis_size=self.num_experts)
    self.experts = stacked(self.hidden, self.dropout, self.dtype, self.activation)
    # Share the scope so that the parameter tree reads fc1/..., fc2/... rather than
    # experts/fc1/...: one level less for checkpoint converters.
    nn.share_scope(self, self.experts)

  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
    """Runs expert e on x[e].

    Args:
      x: [E, C, D] dispatched tokens.
      deterministic: disables dropout (needs the 'dropout' RNG stream otherwise).

    Returns:
      [E, C, D].
    """
    if x.ndim != 3 or x.shape[0] != self.num_experts:
      raise ValueError(f"expected [E={self.num_experts}, C, D] inputs, got {x.shape}")
    return self.experts(x, deterministic)


def moe_apply(experts_fn: Callable[[jnp.ndarray], jnp.ndarray], x: jnp.ndarray,
              dispatcher: Dispatcher) -> jnp.ndarray:
  """Dispatches tokens, runs the experts, and combines their outputs.

  Args:
    experts_fn: [E, C, D] -> [E, C, D], e.g. a bound ``FeedForwardExperts`` or
      ``functools.partial(experts.apply, params)``.
    x: [T, D] tokens.
    dispatcher: a ``DenseDispatcher`` or ``SortedDispatcher`` built for these tokens.

  Returns:
    [T, D]: for each token, the sum over its kept choices of gate * expert(token);
    zero for a token whose choices were all dropped (callers usually add a residual).
  """
  return dispatcher.combine(experts_fn(dispatcher.dispatch(x)))
