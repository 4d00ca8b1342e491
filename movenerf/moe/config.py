"""Configuration of the GNT-MoVE mixture of view experts."""

from __future__ import annotations

import dataclasses

from movenerf import validation


@dataclasses.dataclass(frozen=True)
class MoEConfig:
  """Where the experts go and how tokens are routed (defaults: the GNT-MoVE paper).

  Attributes:
    layers: view-transformer blocks whose FFN becomes a MoE (odd blocks of depth 8).
    num_experts: E.
    top_k: K experts per token.
    expert_hidden_ratio: expert hidden width / D.
    expert_activation: "gelu" (reference) or "relu".
    permanent_expert: add a dense FFN every token uses; output = (MoE + permanent) / 2.
    permanent_hidden_ratio: its hidden width / D.
    noise_std: router noise is N(0, (noise_std / E)^2) in training.
    renormalize: renormalise the K gates to sum to 1 (the reference does not).
    capacity_factor: expert capacity in training, C = ceil(T K cf / E).
    eval_capacity_factor: capacity factor in evaluation (larger: fewer drops).
    dispatch: "dense" (one-hot einsum, suits TPU), "sorted" (gather/scatter, for many
      tokens) or "auto" (by size).
    reference_init: zero-initialise the router projection like the reference.
    reference_load: the reference's (logit vs probability) noisy load estimate.
    gate_input_ahead: route on the block input instead of the normalised FFN input.
    expert_axis: mesh axis the experts are sharded over (expert parallelism). Under a
      mesh with that axis (``jax.set_mesh``), the dispatched [E, C, D] buffers are
      constrained to it, so XLA moves tokens to their experts' devices; without such
      a mesh it has no effect.
  """

  layers: tuple[int, ...] = (1, 3, 5, 7)
  num_experts: int = 4
  top_k: int = 2
  expert_hidden_ratio: int = 4
  expert_activation: str = "gelu"
  permanent_expert: bool = True
  permanent_hidden_ratio: int = 4
  noise_std: float = 1.0
  renormalize: bool = False
  capacity_factor: float = 1.25
  eval_capacity_factor: float = 1.25
  dispatch: str = "auto"
  reference_init: bool = False
  reference_load: bool = False
  gate_input_ahead: bool = False
  expert_axis: str | None = "expert"

  def __post_init__(self):
    for i in self.layers:
      validation.integer("moe.layers[]", i, minimum=0)
    validation.integer("moe.num_experts", self.num_experts, minimum=1)
    validation.integer("moe.top_k", self.top_k, minimum=1, maximum=self.num_experts)
    validation.integer("moe.expert_hidden_ratio", self.expert_hidden_ratio, minimum=1)
    validation.integer("moe.permanent_hidden_ratio", self.permanent_hidden_ratio, minimum=1)
    validation.one_of("moe.expert_activation", self.expert_activation, ("gelu", "relu"))
    validation.number("moe.noise_std", self.noise_std, minimum=0.0)
    validation.number("moe.capacity_factor", self.capacity_factor, above=0.0)
    validation.number("moe.eval_capacity_factor", self.eval_capacity_factor, above=0.0)
    validation.one_of("moe.dispatch", self.dispatch, ("dense", "sorted", "auto"))
