"""Optimiser: Adam with one learning rate for the feature CNN and one for the transformers.

GNT trains the ResUNet feature extractor at 1e-3 and the transformers at 5e-4, both
halved every 50k steps (staircase). Gradient clipping and accumulation are optional.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.traverse_util
import optax

# Top-level parameter collections of the image CNNs (GNT's ResUNet, Decoupling-NeRF's
# scene encoder): the "feature" learning-rate group; everything else is "transformer".
FEATURE_GROUPS = ("feature_net", "scene_encoder")


def learning_rate_fns(cfg) -> dict[str, Callable[[Any], Any]]:
  """Per-group step -> learning rate, from ``cfg`` (``config.optim``)."""
  def schedule(base):
    if cfg.decay_steps <= 0:
      return optax.constant_schedule(base)
    return optax.exponential_decay(base, transition_steps=cfg.decay_steps,
                                   decay_rate=cfg.decay_rate, staircase=True)
  return {"feature": schedule(cfg.lr_feature), "transformer": schedule(cfg.lr_transformer)}


def param_groups(params: Any) -> Any:
  """Same tree as ``params`` with "feature" or "transformer" at every leaf."""
  flat = flax.traverse_util.flatten_dict(params)
  labels = {k: "feature" if k[0] in FEATURE_GROUPS else "transformer" for k in flat}
  return flax.traverse_util.unflatten_dict(labels)


# The optimisers of ``config.optim.name``.
OPTIMIZERS = ("adam", "adamax")


def make_optimizer(cfg) -> optax.GradientTransformation:
  """The optimiser of ``config.optim``.

  Keys: ``name`` ("adam" / "adamax"), ``lr_feature``, ``lr_transformer``,
  ``decay_steps`` (0: constant), ``decay_rate``, ``b1``, ``b2``, ``eps``, ``clip_norm``
  (0: off), ``accumulate_steps`` (1: off; otherwise one update per that many steps, the
  mean of their gradients).
  """
  makers = {"adam": optax.adam, "adamax": optax.adamax}
  if cfg.name not in makers:
    raise ValueError(f"optim.name={cfg.name!r}: choose from " + ", ".join(map(repr, OPTIMIZERS)))
  fns = learning_rate_fns(cfg)
  groups = {g: makers[cfg.name](fn, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps) for g, fn in fns.items()}
  tx = optax.multi_transform(groups, param_groups)
  if cfg.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
  if cfg.accumulate_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulate_steps)
  return tx
