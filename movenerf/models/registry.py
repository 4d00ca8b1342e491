"""The model families of the library, chosen by ``config.model.name``.

``"gnt"`` (the default when ``name`` is absent): GNT, and GNT-MoVE when ``model.moe`` is
set (:mod:`movenerf.models.gnt.model`). ``"decoupled"``: Decoupling-NeRF
(:mod:`movenerf.models.decoupled.model`). Training, evaluation and video call these helpers,
so a family plugs into the same configs, train loop, checkpoints and tools.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax

from movenerf.models.decoupled import model as decoupled
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables

GNT, DECOUPLED = "gnt", "decoupled"
FAMILIES = (GNT, DECOUPLED)


def family_of(model_cfg: Mapping) -> str:
  """The family a ``config.model`` section names; an unknown name is an error."""
  name = dict(model_cfg).get("name", GNT)
  if name not in FAMILIES:
    raise ValueError(f"unknown model name {name!r}; choose from {list(FAMILIES)}")
  return name


def build_model(model_cfg: Mapping) -> nn.Module:
  """``config.model`` (ConfigDict or dict) -> the Flax module it describes."""
  values = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
  name = family_of(values)
  values.pop("name", None)
  if name == DECOUPLED:
    return decoupled.DecoupledNeRF(decoupled.DecoupledConfig.from_dict(values))
  return GNTModel(GNTConfig.from_dict(values))


def is_decoupled(model: nn.Module) -> bool:
  return isinstance(model, decoupled.DecoupledNeRF)


def init_params(model: nn.Module, rng: jax.Array) -> Any:
  """Fresh parameters of either family (shapes do not depend on the data)."""
  if is_decoupled(model):
    return decoupled.init_params(model, rng)
  return init_variables(model, rng)["params"]
