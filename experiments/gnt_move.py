r"""GNT-MoVE experiment configs: GNT with a mixture of view experts.

Variants (``--config experiments/gnt_move.py:VARIANT``): as in ``experiments/gnt.py``
(tiny, reference, paper), plus the MoE settings of the paper: the FFN of the odd
view-transformer blocks is a sparse MoE of 4 experts with top-2 routing and a
permanent expert; capacity factor 1.25 in training and evaluation
(measured: MoVE costs 1.26x dense GNT per ray at evaluation factor 1.25, 1.18x at 1.0).

Training adds the diversity (load-balancing) regulariser and the geometry-aware
consistency loss between nearby rays (a quarter of each example's rays come in pairs
at most 2 pixels apart). The weights 0.01 and 0.1 are this library's defaults (the
usual MoE balancing coefficient, and a consistency term an order of magnitude below the
photometric loss at convergence); the paper does not state them.

The main job (README, first command) trains the tiny variant on generated scenes for a
few minutes on a CPU, then evaluates zero-shot on unseen generated scenes:

  python -m movenerf.train --config experiments/gnt_move.py:tiny --workdir runs/demo

It writes renders, depth and expert maps, a video and a metrics table under the workdir.
"""

import ml_collections

from experiments import gnt


def get_config(variant: str = "reference") -> ml_collections.ConfigDict:
  """GNT config of the same variant with ``model.moe`` filled in."""
  c = gnt.get_config(variant)
  c.unlock()
  depth = c.model.depth
  c.model.moe = ml_collections.ConfigDict(dict(
      layers=tuple(range(1, depth, 2)), num_experts=4, top_k=2, expert_hidden_ratio=4,
      expert_activation="gelu", permanent_expert=True, permanent_hidden_ratio=4,
      noise_std=1.0, renormalize=False, capacity_factor=1.25, eval_capacity_factor=1.25,
      dispatch="auto", reference_init=False, reference_load=False, gate_input_ahead=False))
  c.loss.update(diversity_weight=0.01, consistency_weight=0.1)
  c.data.example.pair_fraction = 0.25
  c.lock()
  return c
