"""The model families of the library, chosen by ``config.model.name``.

``"gnt"`` (the default when ``name`` is absent): GNT, and GNT-MoVE when ``model.moe`` is
set (:mod:`movenerf.models.gnt`). ``"decoupled"``: Decoupling-NeRF
(:mod:`movenerf.models.decoupled`). This is the only module that knows the families:
training, evaluation and video work with the :class:`~movenerf.models.family.ModelFamily`
that :func:`build` returns. A new family is a module with a ``from_config`` class and
one line here.
"""

from __future__ import annotations

from typing import Mapping

from movenerf.models.decoupled.family import DecoupledFamily
from movenerf.models.family import ModelFamily
from movenerf.models.gnt.family import GNTFamily

FAMILIES = {GNTFamily.name: GNTFamily, DecoupledFamily.name: DecoupledFamily}
DEFAULT = GNTFamily.name


def family_of(model_cfg: Mapping) -> str:
  """The family a ``config.model`` section names; an unknown name is an error."""
  name = dict(model_cfg).get("name", DEFAULT)
  if name not in FAMILIES:
    raise ValueError(f"unknown model name {name!r}; choose from {list(FAMILIES)}")
  return name


def build(model_cfg: Mapping) -> ModelFamily:
  """``config.model`` (ConfigDict or dict) -> the family of the model it describes."""
  values = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
  name = family_of(values)
  values.pop("name", None)
  return FAMILIES[name].from_config(values)
