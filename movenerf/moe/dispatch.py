"""Capacity-limited dispatch of routed tokens to experts, and the way back.

Axis letters: T tokens routed together, D features, E experts, K top-k,
C expert capacity (slots per expert).

A router has already chosen, for each token, K experts (``top_k_idx [T, K]``, k = 0
the best) and K combine weights (``top_k_gates [T, K]``). Every expert has C slots.
The T * K choices are served in k-major order: all top-1 choices first (tokens in
index order), then all top-2 choices, and so on. A choice takes the next free slot
of its expert; a choice that finds its expert full is *dropped*: the token simply
gets nothing from that expert, and its other choices are unaffected. k-major order
means a token's 2nd choice can lose its slot to the 1st choices of later tokens,
which is what keeps the best choices alive under tight capacity.

Two interchangeable implementations give identical values and gradients:

* ``DenseDispatcher`` builds a one-hot dispatch mask and combine weights ``[T, E, C]``
  and moves tokens with einsums: simple, matmul-only (good on TPU), but O(T * E * C)
  memory.
* ``SortedDispatcher`` computes each choice's flat slot ``e * C + c`` with a stable
  sort and moves tokens with gathers: O(T * K + E * C) memory, for large T.

``make_dispatcher`` picks one of them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

# Dense masks up to this many [T, E, C] elements (16 MiB as bool, 16M floats) are
# cheap; beyond it the sorted path's O(T * K) index arrays win.
# The dense path's einsums cost 2 T E C D multiply-adds, the experts 2 E C D H: the
# masks cost more than the experts once T > H (256 at width 64). 2**16 elements keeps the dense path to small token groups (e.g. T = 128, E = 4,
# C = 128), where its einsums are cheap and suit TPUs.
DENSE_MAX_ELEMENTS = 2**16

# Relative change of the capacity factor, caused by rounding C, worth a warning.
_CAPACITY_FACTOR_TOLERANCE = 0.01

_log = logging.getLogger(__name__)


def compute_capacity(num_tokens: int, num_experts: int, top_k: int,
                     capacity_factor: float, multiple_of: int = 1) -> int:
  """Slots per expert for a given capacity factor.

  ``C = ceil(T * K * capacity_factor / E)``, at least 1, then rounded up to a
  multiple of ``multiple_of`` (e.g. 4 or 8 for friendlier tile shapes). A capacity
  factor of 1 gives exactly enough slots when the load is perfectly balanced.

  The rounding makes the effective factor ``C * E / (T * K)`` larger than asked; when
  it differs by more than 1 % from ``capacity_factor`` a warning reports the
  effective factor, because it changes how many tokens get dropped (and the memory).

  Args:
    num_tokens: T.
    num_experts: E.
    top_k: K.
    capacity_factor: > 0, slots per expert relative to a perfectly balanced load.
    multiple_of: C is rounded up to a multiple of this.

  Returns:
    C, a Python int >= 1.
  """
  if num_tokens < 1 or num_experts < 1 or top_k < 1 or multiple_of < 1:
    raise ValueError("num_tokens, num_experts, top_k and multiple_of must be >= 1, got "
                     f"{num_tokens}, {num_experts}, {top_k}, {multiple_of}")
  if capacity_factor <= 0:
    raise ValueError(f"capacity_factor must be > 0, got {capacity_factor}")
  choices = num_tokens * top_k
  capacity = max(1, math.ceil(choices * capacity_factor / num_experts))
  capacity = -(-capacity // multiple_of) * multiple_of
  effective = capacity * num_experts / choices
  if abs(effective - capacity_factor) > _CAPACITY_FACTOR_TOLERANCE * capacity_factor:
    _log.warning(
        "Expert capacity %d (T=%d, K=%d, E=%d, multiple_of=%d) gives an effective "
        "capacity factor of %.4f instead of the requested %.4f.", capacity, num_tokens,
        top_k, num_experts, multiple_of, effective, capacity_factor)
  return capacity


def _k_major(a: jnp.ndarray) -> jnp.ndarray:
  """[T, K] -> [K * T], all k = 0 entries first: the order choices are served in."""
  return a.T.reshape(-1)


def _from_k_major(a: jnp.ndarray, num_tokens: int) -> jnp.ndarray:
  """Inverse of ``_k_major``: [K * T] -> [T, K]."""
  return a.reshape(-1, num_tokens).T


def queue_positions_cumsum(top_k_idx: jnp.ndarray, num_experts: int) -> jnp.ndarray:
  """Each choice's place in its expert's queue, by a cumsum of one-hot choices.

  Args:
    top_k_idx: [T, K] int expert of each choice.
    num_experts: E.

  Returns:
    [T, K] int32: 0 for the first choice served by that expert, 1 for the next, ...
    (not clipped to the capacity; a position >= C means dropped). O(T * K * E).
  """
  one_hot = jax.nn.one_hot(_k_major(top_k_idx), num_experts, dtype=jnp.int32)  # [K*T, E]
  # Inclusive cumsum counts the choice itself; exactly one entry per row is non-zero.
  pos = jnp.sum(one_hot * jnp.cumsum(one_hot, axis=0), axis=-1) - 1
  return _from_k_major(pos, top_k_idx.shape[0])


def queue_positions_sorted(top_k_idx: jnp.ndarray, num_experts: int) -> jnp.ndarray:
  """Same as ``queue_positions_cumsum``, by a stable sort: O(T * K log(T * K) + E).

  A stable argsort by expert keeps the k-major serving order inside each expert's
  run, so the rank inside the run is the queue position.
  """
  flat = _k_major(top_k_idx).astype(jnp.int32)  # [K*T]
  order = jnp.argsort(flat, stable=True)
  counts = jnp.bincount(flat, length=num_experts)  # [E]
  run_start = jnp.cumsum(counts) - counts
  rank = jnp.arange(flat.shape[0], dtype=jnp.int32) - run_start[flat[order]].astype(jnp.int32)
  pos = jnp.zeros_like(flat).at[order].set(rank)
  return _from_k_major(pos, top_k_idx.shape[0])


@flax.struct.dataclass
class DenseDispatcher:
  """Dispatch and combine with one-hot ``[T, E, C]`` tensors and einsums.

  Attributes:
    dispatch_mask: [T, E, C] bool, True where token t sits in slot c of expert e.
    combine_weights: [T, E, C] the gate of that choice at the same place, else 0.
    num_experts: E (static).
    capacity: C (static).
    top_k: K (static; the mask alone cannot tell how many choices were made).
    precision: einsum precision. Dispatch is an exact copy only when the matmul runs
      in full precision (TPUs default to bfloat16 passes); None follows
      ``jax_default_matmul_precision``.
  """

  dispatch_mask: jnp.ndarray
  combine_weights: jnp.ndarray
  num_experts: int = flax.struct.field(pytree_node=False)
  capacity: int = flax.struct.field(pytree_node=False)
  top_k: int = flax.struct.field(pytree_node=False)
  precision: Any = flax.struct.field(pytree_node=False, default=None)

  @classmethod
  def create(cls, top_k_idx: jnp.ndarray, top_k_gates: jnp.ndarray, num_experts: int,
             capacity: int, precision: Any = None) -> "DenseDispatcher":
    """Builds the masks from router choices.

    Args:
      top_k_idx: [T, K] int experts, best first.
      top_k_gates: [T, K] combine weights (gradients flow into ``combine_weights``).
      num_experts: E.
      capacity: C.
      precision: see the class attribute.
    """
    pos = queue_positions_cumsum(top_k_idx, num_experts)  # [T, K]
    expert_hot = jax.nn.one_hot(top_k_idx, num_experts, dtype=jnp.bool_)  # [T, K, E]
    # one_hot of a position >= C is all zeros: that is exactly the drop.
    slot_hot = jax.nn.one_hot(pos, capacity, dtype=jnp.bool_)  # [T, K, C]
    hot = expert_hot[..., :, None] & slot_hot[..., None, :]  # [T, K, E, C]
    # Each (e, c) holds at most one choice, so summing over k never mixes choices; a
    # product and sum (not an einsum) keeps the gates exact whatever the precision.
    weights = jnp.sum(jnp.where(hot, top_k_gates[..., None, None], 0), axis=1)
    return cls(jnp.any(hot, axis=1), weights, num_experts, capacity, top_k_idx.shape[1],
               precision)

  def dispatch(self, x: jnp.ndarray) -> jnp.ndarray:
    """[T, D] tokens -> [E, C, D] expert inputs (empty slots are zero)."""
    return jnp.einsum("tec,td->ecd", self.dispatch_mask.astype(x.dtype), x,
                      precision=self.precision)

  def combine(self, y: jnp.ndarray) -> jnp.ndarray:
    """[E, C, D] expert outputs -> [T, D] gate-weighted sums over each token's kept choices."""
    return jnp.einsum("tec,ecd->td", self.combine_weights.astype(y.dtype), y,
                      precision=self.precision)

  def metrics(self) -> dict[str, Any]:
    """``dropped_fraction`` (scalar), ``expert_load`` [E] int32 kept choices, ``capacity``."""
    num_choices = self.dispatch_mask.shape[0] * self.top_k
    load = jnp.sum(self.dispatch_mask, axis=(0, 2), dtype=jnp.int32)
    dropped = num_choices - jnp.sum(load)
    return {"dropped_fraction": dropped / num_choices, "expert_load": load,
            "capacity": self.capacity}


@flax.struct.dataclass
class SortedDispatcher:
  """Dispatch and combine with flat slot indices and gathers (no ``[T, E, C]`` tensor).

  Flat slot ``s = e * C + c`` addresses row s of an ``[E * C, D]`` buffer.

  Attributes:
    top_k_idx: [T, K] int32 expert of each choice.
    top_k_gates: [T, K] combine weights.
    slot: [T, K] int32 flat slot of each choice; ``E * C`` (out of range) if dropped.
    token_of_slot: [E * C] int32 token sitting in each slot; T (out of range) if empty.
    num_experts: E (static).
    capacity: C (static).
  """

  top_k_idx: jnp.ndarray
  top_k_gates: jnp.ndarray
  slot: jnp.ndarray
  token_of_slot: jnp.ndarray
  num_experts: int = flax.struct.field(pytree_node=False)
  capacity: int = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, top_k_idx: jnp.ndarray, top_k_gates: jnp.ndarray, num_experts: int,
             capacity: int) -> "SortedDispatcher":
    """Computes the slot of every choice from router choices (arguments as DenseDispatcher)."""
    num_tokens = top_k_idx.shape[0]
    num_slots = num_experts * capacity
    top_k_idx = top_k_idx.astype(jnp.int32)
    pos = queue_positions_sorted(top_k_idx, num_experts)
    slot = jnp.where(pos < capacity, top_k_idx * capacity + pos, num_slots)
    tokens = jnp.broadcast_to(jnp.arange(num_tokens, dtype=jnp.int32)[:, None], slot.shape)
    # The inverse map turns dispatch into a gather (whose gradient is a scatter-add);
    # dropped choices point past the end and mode="drop" ignores them.
    token_of_slot = jnp.full((num_slots,), num_tokens, jnp.int32).at[slot.reshape(-1)].set(
        tokens.reshape(-1), mode="drop")
    return cls(top_k_idx, top_k_gates, slot, token_of_slot, num_experts, capacity)

  def dispatch(self, x: jnp.ndarray) -> jnp.ndarray:
    """[T, D] tokens -> [E, C, D] expert inputs (empty slots are zero)."""
    rows = jnp.take(x, self.token_of_slot, axis=0, mode="fill", fill_value=0)  # [E*C, D]
    return rows.reshape(self.num_experts, self.capacity, x.shape[-1])

  def combine(self, y: jnp.ndarray) -> jnp.ndarray:
    """[E, C, D] expert outputs -> [T, D] gate-weighted sums over each token's kept choices."""
    flat = y.reshape(self.num_experts * self.capacity, y.shape[-1])
    picked = jnp.take(flat, self.slot, axis=0, mode="fill", fill_value=0)  # [T, K, D]
    # Elementwise product and sum rather than an einsum: exact at any matmul precision.
    return jnp.sum(self.top_k_gates.astype(y.dtype)[..., None] * picked, axis=1)

  def metrics(self) -> dict[str, Any]:
    """``dropped_fraction`` (scalar), ``expert_load`` [E] int32 kept choices, ``capacity``."""
    kept = self.slot < self.num_experts * self.capacity  # [T, K]
    load = jnp.zeros((self.num_experts,), jnp.int32).at[self.top_k_idx].add(
        kept.astype(jnp.int32))
    dropped = kept.size - jnp.sum(kept, dtype=jnp.int32)
    return {"dropped_fraction": dropped / kept.size, "expert_load": load,
            "capacity": self.capacity}


Dispatcher = DenseDispatcher | SortedDispatcher


def make_dispatcher(top_k_idx: jnp.ndarray, top_k_gates: jnp.ndarray, num_experts: int,
                    capacity: int, kind: str = "auto") -> Dispatcher:
  """Builds a dispatcher for router choices.

  Args:
    top_k_idx: [T, K] int experts, best first.
    top_k_gates: [T, K] combine weights.
    num_experts: E.
    capacity: C (see ``compute_capacity``).
    kind: "dense", "sorted", or "auto": dense when ``T * E * C <= DENSE_MAX_ELEMENTS``
      (2**16; the masks are then small and einsums are cheap, the TPU-friendly way),
      sorted otherwise (memory O(T * K + E * C) instead of O(T * E * C)). Shapes are
      static, so the choice is made at trace time.

  Returns:
    A ``DenseDispatcher`` or ``SortedDispatcher``; both give identical results.
  """
  if top_k_idx.ndim != 2 or top_k_idx.shape != top_k_gates.shape:
    raise ValueError("top_k_idx and top_k_gates must both be [T, K], got "
                     f"{top_k_idx.shape} and {top_k_gates.shape}")
  if capacity < 1:
    raise ValueError(f"capacity must be >= 1, got {capacity}")
  if kind == "auto":
    kind = ("dense" if top_k_idx.shape[0] * num_experts * capacity <= DENSE_MAX_ELEMENTS
            else "sorted")
  if kind == "dense":
    return DenseDispatcher.create(top_k_idx, top_k_gates, num_experts, capacity)
  if kind == "sorted":
    return SortedDispatcher.create(top_k_idx, top_k_gates, num_experts, capacity)
  raise ValueError(f"kind must be 'dense', 'sorted' or 'auto', got {kind!r}")
