"""Decoupling-NeRF as a model family (:mod:`movenerf.models.family`)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.models.decoupled import loss as dc_loss
from movenerf.models.decoupled.model import DecoupledConfig, DecoupledNeRF, layer_depth
from movenerf.models.examples import dummy_inputs
from movenerf.models.family import Render

NAME = "decoupled"


@functools.partial(jax.jit, static_argnums=0)
def _render(model: DecoupledNeRF, variables, src_images, src_cameras, tgt_camera, near, far):
  out = model.apply(variables, src_images, src_cameras, tgt_camera)
  return {"rgb": out["rgb"], "depth": layer_depth(out["weights"], near, far),
          "acc": out["acc"]}


def render_view(model: DecoupledNeRF, variables, src_images: jnp.ndarray,
                src_cameras: Cameras, tgt_camera: Cameras, near: float, far: float) -> dict:
  """Renders one target view (compiled once per model and image size).

  Args:
    src_images: [V, H, W, 3] in [0, 1].
    src_cameras, tgt_camera: as for :class:`DecoupledNeRF`.
    near, far: range of the nominal depth map (``layer_depth``).

  Returns:
    NumPy 'rgb' [H, W, 3], 'depth' [H, W], 'acc' [H, W].
  """
  out = _render(model, variables, jnp.asarray(src_images, jnp.float32), src_cameras,
                tgt_camera, jnp.float32(near), jnp.float32(far))
  return {k: np.asarray(v) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class DecoupledFamily:
  """Decoupling-NeRF: whole images, no slices, no external weights."""

  module: DecoupledNeRF
  name: str = NAME
  sliced: None = None

  @classmethod
  def from_config(cls, values: Mapping[str, Any]) -> "DecoupledFamily":
    return cls(DecoupledNeRF(DecoupledConfig.from_dict(dict(values))))

  @property
  def config(self) -> DecoupledConfig:
    return self.module.config

  def init_params(self, rng: jax.Array) -> Any:
    """Fresh parameters; their shapes do not depend on the image size or view count."""
    _, target, sources = dummy_inputs(2, 32, 32, 1)
    return jax.jit(self.module.init)(rng, sources.images, sources.cameras, target)["params"]

  def example_loss(self, params, ex: dict, key: jax.Array, loss_cfg,
                   image_hw: tuple[int, int]):
    return dc_loss.example_loss(self.module, params, ex, key, loss_cfg, image_hw)

  def renderer(self, variables, sources: SourceViews, near: float, far: float,
               chunk_size: int) -> Render:
    """One compiled call renders a whole view; views must have the sources' size
    (``chunk_size`` is unused)."""
    del chunk_size
    return lambda camera: render_view(self.module, variables, sources.images,
                                      sources.cameras, camera, near, far)

  def import_params(self, path: str) -> Any:
    raise ValueError(f"init_from={path}: Decoupling-NeRF starts only from a movenerf run "
                     "of the same model")

  def upcycle(self, dense: Any, fresh: Any) -> Any:
    raise ValueError("upcycle=true: Decoupling-NeRF starts only from a movenerf run of the "
                     "same model")
