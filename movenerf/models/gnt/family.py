"""GNT and GNT-MoVE as a model family (:mod:`movenerf.models.family`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax

from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.geometry.rays import image_rays
from movenerf.models.family import Render
from movenerf.models.gnt import loss as gnt_loss
from movenerf.models.gnt import official_checkpoint
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
from movenerf.models.gnt.render import encode_sources, render_rays_chunked
from movenerf.models.gnt.upcycle import upcycle

NAME = "gnt"
WEIGHT_SUFFIXES = (".pth", ".npz", ".pt")


@dataclasses.dataclass(frozen=True)
class GNTSlicedLoss:
  """The GNT loss slice by slice (:mod:`movenerf.models.gnt.loss`)."""

  module: GNTModel

  def inputs(self, ex: dict, key: jax.Array, image_hw: tuple[int, int], sub_chunk: int):
    return gnt_loss.slice_inputs(self.module, ex, key, image_hw, sub_chunk)

  def encode(self, params, sources: SourceViews):
    return gnt_loss.encode_features(self.module, params, sources)

  def objective(self, views, loss_cfg, *scales):
    return gnt_loss.slice_objective(self.module, views, loss_cfg, *scales)

  def loss(self, loss_cfg, terms_sum, scales):
    return gnt_loss.slices_loss(loss_cfg, terms_sum, scales)


@dataclasses.dataclass(frozen=True)
class GNTFamily:
  """GNT (``config.model.moe`` unset) or GNT-MoVE."""

  module: GNTModel
  name: str = NAME

  @classmethod
  def from_config(cls, values: Mapping[str, Any]) -> "GNTFamily":
    return cls(GNTModel(GNTConfig.from_dict(dict(values))))

  @property
  def config(self) -> GNTConfig:
    return self.module.config

  @property
  def sliced(self) -> GNTSlicedLoss:
    return GNTSlicedLoss(self.module)

  def init_params(self, rng: jax.Array) -> Any:
    return init_variables(self.module, rng)["params"]

  def example_loss(self, params, ex: dict, key: jax.Array, loss_cfg,
                   image_hw: tuple[int, int]):
    return gnt_loss.example_loss(self.module, params, ex, key, loss_cfg, image_hw)

  def renderer(self, variables, sources: SourceViews, near: float, far: float,
               chunk_size: int) -> Render:
    """Encodes the sources once; each call renders a camera's H * W rays in chunks."""
    featmaps = encode_sources(self.module, variables, sources.images)

    def render(camera: Cameras) -> dict:
      flat = render_rays_chunked(self.module, variables, image_rays(camera), camera, sources,
                                 near, far, chunk_size, featmaps=featmaps)
      hw = (camera.height, camera.width)
      return {k: v.reshape(hw + v.shape[1:]) for k, v in flat.items()}

    return render

  def import_params(self, path: str) -> Any:
    """Official GNT weights (``.pth``, ``.pt`` or ``.npz``)."""
    if not str(path).endswith(WEIGHT_SUFFIXES):
      raise ValueError(f"init_from={path}: official GNT weights end in {WEIGHT_SUFFIXES}")
    return official_checkpoint.load_official_checkpoint(path)[1]["params"]

  def upcycle(self, dense: Any, fresh: Any) -> Any:
    """Dense GNT parameters into this GNT-MoVE model's experts (``config.upcycle``)."""
    return upcycle(dense, fresh)
