"""Expert-selection maps: which expert wins each pixel.

For each ray, the top-1 expert of every sample is counted along the ray; the expert
chosen most often wins the pixel. The fractions are kept too (a soft map);
``colorize_experts`` paints the winner (default) or the share-weighted blend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Distinct colours for up to 8 experts (cycled beyond).
PALETTE = np.array([[0.90, 0.10, 0.10], [0.10, 0.45, 0.90], [0.15, 0.70, 0.20],
                    [0.95, 0.75, 0.10], [0.60, 0.20, 0.75], [0.10, 0.75, 0.75],
                    [0.95, 0.45, 0.70], [0.45, 0.30, 0.15]], np.float32)


def expert_fractions(top1: jnp.ndarray, num_experts: int) -> jnp.ndarray:
  """[..., S] top-1 expert per sample -> [..., E] share of the ray's samples per expert."""
  return jnp.mean(jax.nn.one_hot(top1, num_experts), axis=-2)


def expert_map(top1: jnp.ndarray, num_experts: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Winner per ray.

  Args:
    top1: [R, S] int top-1 expert of each sample.

  Returns:
    (winner [R] int, fractions [R, E]).
  """
  fractions = expert_fractions(top1, num_experts)
  return jnp.argmax(fractions, axis=-1), fractions


def colorize_experts(fractions: np.ndarray, mode: str = "top1") -> np.ndarray:
  """[..., E] expert shares -> [..., 3] colours.

  Args:
    fractions: [..., E] share of each pixel's samples routed to each expert.
    mode: "top1": the colour of the expert with the largest share (the first of equal
      shares), ``PALETTE[e % 8]``; "blend": the share-weighted mix of expert colours.
      Either way a pixel whose samples all pick one expert shows that expert's colour.
  """
  fractions = np.asarray(fractions, np.float32)
  colours = PALETTE[np.arange(fractions.shape[-1]) % len(PALETTE)]
  if mode == "top1":
    return colours[np.argmax(fractions, axis=-1)]
  if mode == "blend":
    return fractions @ colours
  raise ValueError(f"mode must be 'top1' or 'blend', got {mode!r}")
