"""The train step: the gradient of a batch and the optimiser update.

A batch is B examples (see :mod:`movenerf.data.pipeline`), each a target view's rays with
its own source views. The loss of an example is its model family's
(:mod:`movenerf.models.family`); the batch's loss is the mean over its examples. Two
strategies compute the gradient, chosen by :func:`make_train_step`:

=======================  ===================  ==========================================
where                    ``train.sub_chunk``  how
=======================  ===================  ==========================================
one CPU device           > 0                  a loop on the host over compiled per-slice
                                              programs: each slice's backward pass right
                                              after its forward pass
                                              (:mod:`movenerf.training.slice_loop`)
everywhere else          ignored              one ``jit`` program: ``value_and_grad`` of
                                              the mean whole-example loss
=======================  ===================  ==========================================

The jitted step runs over a ``(data, expert)`` mesh: the batch is split over ``data``,
parameters are replicated except the MoVE experts, which are split over ``expert``; XLA
inserts the all-reduce that averages gradients and metrics over ``data``. Its examples
are vmapped, except on a single CPU device, where each of up to four examples is its own
part of the program (batched gathers of vmapped epipolar sampling are slow there; more
examples go through ``lax.map``). An update whose
gradients are not all finite is not applied (see
:func:`movenerf.training.state.apply_gradients`).
"""

from __future__ import annotations

import functools
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from movenerf import sharding
from movenerf.models.family import ModelFamily
from movenerf.training import slice_loop
from movenerf.training.state import TrainState, apply_gradients


def train_step(state: TrainState, batch: dict, *, family: ModelFamily, tx, loss_cfg,
               image_hw: tuple[int, int], vmap: bool = True) -> tuple[TrainState, dict]:
  """One update on a batch of B examples (unjitted; see :func:`make_train_step`).

  ``vmap``: batch the examples' programs; else one program part per example (up to 4,
  else ``lax.map`` over them).
  """
  num = batch["pixels"].shape[0]
  keys = jax.random.split(jax.random.fold_in(state.rng, state.step), num)

  def loss_fn(params):
    fn = lambda ex, key: family.example_loss(params, ex, key, loss_cfg, image_hw)
    if vmap:
      losses, metrics = jax.vmap(fn)(batch, keys)
    elif num <= 4:
      parts = [fn(*jax.tree.map(lambda a, i=i: a[i], (batch, keys))) for i in range(num)]
      losses, metrics = jax.tree.map(lambda *ys: jnp.stack(ys), *parts)
    else:
      losses, metrics = jax.lax.map(lambda xs: fn(*xs), (batch, keys))
    return jnp.mean(losses), jax.tree.map(lambda a: jnp.mean(a, axis=0), metrics)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return apply_gradients(state, tx, loss, metrics, grads)


def make_train_step(family: ModelFamily, tx, loss_cfg, image_hw: tuple[int, int], mesh: Mesh,
                    state_sharding, sub_chunk: int = 0,
                    host_loop: bool | None = None) -> Callable:
  """``(state, batch) -> (state, metrics)``, with ``lower(state, batch).compile()``.

  ``host_loop`` (default: on a single CPU device when ``sub_chunk`` > 0 and the family
  has a sliced loss) runs the examples in slices of ``sub_chunk`` rays from a loop on the
  host (:class:`~movenerf.training.slice_loop.SliceLoopStep`); otherwise the step is one
  program jitted over ``mesh`` with the state donated (the module docstring's table).

  Raises:
    ValueError: ``host_loop=True`` without a sliced loss, ``sub_chunk`` or a single device.
  """
  single_device = mesh.devices.size == 1
  single_cpu = single_device and mesh.devices.flat[0].platform == "cpu"
  sliceable = bool(sub_chunk) and family.sliced is not None
  if host_loop is None:
    host_loop = single_cpu and sliceable
  if host_loop:
    if not (sliceable and single_device):
      raise ValueError(
          "the host loop over slices needs train.sub_chunk > 0, a model family with a "
          f"sliced loss and one device (got sub_chunk={sub_chunk}, family {family.name}, "
          f"{mesh.devices.size} devices)")
    return slice_loop.SliceLoopStep(family.sliced, tx, loss_cfg, image_hw, sub_chunk,
                                    state_sharding, mesh)
  if sub_chunk:
    logging.info("train.sub_chunk=%d is not used: the step takes whole examples in one "
                 "program (%d devices)", sub_chunk, mesh.devices.size)
  fn = functools.partial(train_step, family=family, tx=tx, loss_cfg=loss_cfg,
                         image_hw=image_hw, vmap=not single_cpu)
  return jax.jit(fn, in_shardings=(state_sharding, NamedSharding(mesh, P(sharding.DATA_AXIS))),
                 out_shardings=(state_sharding, NamedSharding(mesh, P())),
                 donate_argnums=(0,))
