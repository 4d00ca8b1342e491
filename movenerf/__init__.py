"""movenerf: generalizable novel view synthesis (GNT, GNT-MoVE) in JAX/Flax.

Axis letters used in every docstring of the package:
  R rays, S samples per ray, V source views, D features, H W image height/width,
  E experts, K top-k, C expert capacity, T tokens routed together.

Camera convention (the one used everywhere inside the library; converters live in
`movenerf.geometry.cameras`): OpenCV camera frame (x right, y down, z forward), 3x3 pinhole
intrinsics, 4x4 camera-to-world matrices, integer pixel coordinates addressing pixel
centres (no +0.5 offset), as in the official GNT/IBRNet code.

The public API is the names below (``from movenerf import GNTModel``); each is imported
when first used, so ``import movenerf`` imports neither JAX nor the optional dependencies
(the models and the MoE layer need only the core install; ``ExampleSpec`` and the
training programs need the ``data`` / ``training`` extras). The experiment configs are
``movenerf.configs`` (``load_config("gnt_move:tiny")``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    # Models: GNT / GNT-MoVE, Decoupling-NeRF, and the family protocol the engine uses.
    "GNTConfig": "movenerf.models.gnt.model",
    "GNTModel": "movenerf.models.gnt.model",
    "RenderOutput": "movenerf.models.gnt.model",
    "init_variables": "movenerf.models.gnt.model",
    "DecoupledConfig": "movenerf.models.decoupled.model",
    "DecoupledNeRF": "movenerf.models.decoupled.model",
    "ModelFamily": "movenerf.models.family",
    "build_model": "movenerf.models.registry",
    # The mixture of view experts.
    "MoEConfig": "movenerf.moe.config",
    "MoVEFeedForward": "movenerf.moe.layer",
    "total_diversity_loss": "movenerf.moe.layer",
    "consistency_loss": "movenerf.moe.losses",
    # Geometry.
    "Cameras": "movenerf.geometry.cameras",
    "Rays": "movenerf.geometry.rays",
    "SourceViews": "movenerf.geometry.epipolar",
    # Data (the ``data`` extra) and configs.
    "ExampleSpec": "movenerf.data.pipeline",
    "load_config": "movenerf.configs",
}
# Exported under another name than the defining module's.
_RENAMED = {"build_model": "build", "load_config": "load"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module 'movenerf' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), _RENAMED.get(name, name))
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # the same names for type checkers
  from movenerf.configs import load as load_config
  from movenerf.data.pipeline import ExampleSpec
  from movenerf.geometry.cameras import Cameras
  from movenerf.geometry.epipolar import SourceViews
  from movenerf.geometry.rays import Rays
  from movenerf.models.decoupled.model import DecoupledConfig, DecoupledNeRF
  from movenerf.models.family import ModelFamily
  from movenerf.models.gnt.model import GNTConfig, GNTModel, RenderOutput, init_variables
  from movenerf.models.registry import build as build_model
  from movenerf.moe.config import MoEConfig
  from movenerf.moe.layer import MoVEFeedForward, total_diversity_loss
  from movenerf.moe.losses import consistency_loss
