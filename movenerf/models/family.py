"""What the training engine, the evaluation and the video renderer need of a model family.

A family wraps one Flax module with the few operations those layers call; they never
branch on which family they hold. :mod:`movenerf.models.registry` builds a family from
``config.model``.

===================  ===================================================================
member               what it is
===================  ===================================================================
``name``             the family's ``config.model.name``
``module``           the Flax module
``init_params``      ``rng -> params``, shaped by the family's own example inputs
``example_loss``     ``(params, example, key, loss_cfg, image_hw) -> (loss, metrics)``:
                     one training example (see :mod:`movenerf.models.examples`)
``sliced``           a :class:`SlicedLoss`, or None when the loss needs the whole
                     example at once
``renderer``         ``(variables, sources, near, far, chunk_size) -> render``:
                     ``render(camera)`` gives NumPy 'rgb' [H, W, 3], 'depth' [H, W]
                     (and 'experts' [H, W, L, E] for a mixture of experts)
``import_params``    ``path -> params`` from another code base's weights file
``upcycle``          ``(dense params, fresh params) -> params`` for a sparse model
===================  ===================================================================

``import_params`` and ``upcycle`` raise ValueError, naming the setting, where a family
has no such start.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

import flax.linen as nn
import jax

from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews

Render = Callable[[Cameras], dict]


class SlicedLoss(Protocol):
  """An example's loss taken in slices of rays (:mod:`movenerf.training.slice_loop`).

  ``inputs(example, key, image_hw, sub_chunk) -> (views, slices, scales)`` cuts an
  example: ``views[1]`` are its source views, ``slices`` a pytree with a leading [count]
  axis, ``scales`` the static-shaped numbers the objective needs. ``encode(params,
  sources)`` computes the feature maps the slices share. ``objective(views, loss_cfg,
  *scales)`` returns ``(params, featmaps, *slice) -> (value, terms)``: the slice's share
  of the loss and its terms, summed over slices by the caller and turned into the
  example's ``(loss, metrics)`` by ``loss(loss_cfg, summed terms, scales)``.
  """

  def inputs(self, ex: dict, key: jax.Array, image_hw: tuple[int, int], sub_chunk: int): ...

  def encode(self, params, sources: SourceViews): ...

  def objective(self, views, loss_cfg, *scales) -> Callable: ...

  def loss(self, loss_cfg, terms_sum, scales) -> tuple[Any, dict]: ...


class ModelFamily(Protocol):
  """See the module docstring."""

  name: str
  module: nn.Module
  sliced: Optional[SlicedLoss]

  def init_params(self, rng: jax.Array) -> Any: ...

  def example_loss(self, params, ex: dict, key: jax.Array, loss_cfg,
                   image_hw: tuple[int, int]) -> tuple[Any, dict]: ...

  def renderer(self, variables, sources: SourceViews, near: float, far: float,
               chunk_size: int) -> Render: ...

  def import_params(self, path: str) -> Any: ...

  def upcycle(self, dense: Any, fresh: Any) -> Any: ...
