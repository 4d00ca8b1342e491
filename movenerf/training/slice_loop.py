"""The sliced train step: a loop on the host over small compiled programs.

With ``train.sub_chunk`` on one CPU device, the rays of an example go through in slices
of that many rays, each slice's backward pass right after its forward pass, so that only
one slice's activations are alive at a time. The step is five programs, and the host
loops over groups of slices:

=============  ========================================================  ===============
program        computes                                                  shapes depend on
=============  ========================================================  ===============
prepare        each example's views, slice inputs and scales; zeroed     rays, examples
               gradient and loss accumulators
encode         one example's feature maps and their vjp                  views
slice          a group of slices' gradients (a scan over up to           slice size,
               :data:`MAX_GROUP`), added to the accumulators             group size
encode_grad    the feature net's gradient, added to the accumulator      views
update         the mean over examples, the optimiser update, metrics     parameters
=============  ========================================================  ===============

Only ``prepare`` changes with the number of rays per step: steps of 512 and 2048 rays in
32-ray slices run the same slice program (16 and 64 slices, in groups of 16), so JAX's
persistent compilation cache (``jax_compilation_cache_dir``) compiles it once. The ray
and slice counts reach the slice and update programs as runtime scalars for that reason.
A group of slices per call, rather than one, lets XLA reuse one call's temporaries across
the group.

JAX dispatches asynchronously, so the host enqueues the programs ahead of the CPU running
them, and the accumulators are donated (updated in place). The loss is the model
family's :class:`~movenerf.models.family.SlicedLoss`: the slices' shares add up to the
example's loss, so the results are those of the whole-example step with the same slicing
up to float32 rounding (``tests/training/test_slice_loop.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from movenerf.models.family import SlicedLoss
from movenerf.training.state import apply_gradients


@dataclasses.dataclass(frozen=True)
class Programs:
  """The step's programs: jitted functions, or their compiled executables."""

  prepare: Callable
  encode: Callable
  slice: Callable
  encode_grad: Callable
  update: Callable


class SliceLoopStep:
  """``(state, batch) -> (state, metrics)`` by the host loop (see the module docstring).

  ``lower(state, batch).compile()`` compiles every program ahead of time, as for a
  jitted function (the bench times compilation apart from running).
  """

  def __init__(self, sliced: SlicedLoss, tx, loss_cfg, image_hw: tuple[int, int],
               sub_chunk: int, state_sharding, mesh):
    self._sliced, self._loss_cfg = sliced, loss_cfg
    self._image_hw, self._sub_chunk = image_hw, sub_chunk
    update = lambda state, acc, scales: _update(sliced, tx, loss_cfg, state, acc, scales)
    self.programs = Programs(
        prepare=jax.jit(self._prepare),
        encode=jax.jit(self._encode),
        slice=jax.jit(self._slice, donate_argnums=(2,)),
        encode_grad=jax.jit(_encode_grad, donate_argnums=(2,)),
        update=jax.jit(update, donate_argnums=(0,),
                       out_shardings=(state_sharding, NamedSharding(mesh, P()))))

  def __call__(self, state, batch):
    return run(self.programs, state, batch)

  def lower(self, state, batch) -> "_Lowered":
    """Every program lowered for this state and batch (see ``_Lowered.compile``)."""
    p = self.programs
    prepare_args = (state.params, batch, state.rng, state.step)
    acc, examples = jax.eval_shape(p.prepare, *prepare_args)
    views, slices, scales = examples[0]
    featmaps, encode_vjp, _ = jax.eval_shape(p.encode, state.params, views[1])
    # Every example has the same shapes: one program of each serves them all.
    return _Lowered(
        prepare=p.prepare.lower(*prepare_args),
        encode=p.encode.lower(state.params, views[1]),
        slice=p.slice.lower(state.params, featmaps, (acc[0], featmaps, acc[1]), views,
                            slices[0], scales),
        encode_grad=p.encode_grad.lower(encode_vjp, featmaps, acc[0]),
        update=p.update.lower(state, acc, scales + (len(examples),)))

  def _prepare(self, params, batch: dict, rng, step):
    """Zeroed accumulators, and per example ``(views, slice inputs, scales)``: the slice
    inputs a tuple of ``count`` slices, the scales float32 scalars."""
    num = batch["pixels"].shape[0]
    keys = jax.random.split(jax.random.fold_in(rng, step), num)
    examples = []
    for i in range(num):
      ex = jax.tree.map(lambda a, i=i: a[i], batch)
      views, xs, scales = self._sliced.inputs(ex, keys[i], self._image_hw, self._sub_chunk)
      group = slice_group(scales[1])
      groups = jax.tree.map(lambda a: a.reshape((-1, group) + a.shape[1:]), xs)
      slices = tuple(jax.tree.map(lambda a, j=j: a[j], groups)
                     for j in range(scales[1] // group))
      scales = tuple(None if s is None else jnp.asarray(s, jnp.float32) for s in scales)
      examples.append((views, slices, scales))
    views, slices, scales = examples[0]
    # The loss terms' structure (which differs with MoE and the fine pass), for zeros.
    featmaps = jax.eval_shape(self._encode, params, views[1])[0]
    objective = self._sliced.objective(views, self._loss_cfg, *scales)
    first = jax.tree.map(lambda a: a[0], slices[0])
    _, aux = jax.eval_shape(objective, params, featmaps, *first)
    zeros = lambda tree: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), tree)
    return (zeros(params), zeros(aux)), examples

  def _encode(self, params, sources):
    """One example's feature maps, the vjp of the feature net at them (a pytree of its
    residuals, passed on to ``encode_grad``) and zeroed feature-map gradients."""
    featmaps, encode_vjp = jax.vjp(
        lambda p: self._sliced.encode(p, sources), params)
    return featmaps, encode_vjp, jax.tree.map(jnp.zeros_like, featmaps)

  def _slice(self, params, featmaps, acc, views, xs, scales):
    """Adds the parameter and feature-map gradients and loss terms of a group of slices
    (``xs``, with a leading [group] axis) to ``acc`` = (parameter grads, feature-map
    grads, loss terms)."""
    objective = self._sliced.objective(views, self._loss_cfg, *scales)

    def body(acc, x):
      (_, aux), grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
          params, featmaps, *x)
      return jax.tree.map(jnp.add, acc, grads + (aux,)), None

    return jax.lax.scan(body, acc, xs)[0]


# Slices per call of the slice program (benchmarks/README.md: why groups).
MAX_GROUP = 16


def slice_group(count: int) -> int:
  """Slices per call of the slice program for ``count`` slices: the largest divisor of
  ``count`` up to :data:`MAX_GROUP` (so every call has the same shapes)."""
  return max(g for g in range(1, min(count, MAX_GROUP) + 1) if count % g == 0)


def _encode_grad(encode_vjp, featmap_grads, grads):
  """``grads`` plus the feature net's parameter gradient for ``featmap_grads``."""
  return jax.tree.map(jnp.add, grads, encode_vjp(featmap_grads)[0])


def _update(sliced: SlicedLoss, tx, loss_cfg, state, acc, scales):
  """The mean over the B examples of the summed gradients and loss terms ``acc`` =
  (grads, loss terms), then the optimiser update; ``scales`` = (rays per example,
  slices per example, pairs (unused), B)."""
  grads, aux = acc
  num, count, _, num_examples = scales
  mean = lambda tree: jax.tree.map(lambda a: a / num_examples, tree)
  loss, metrics = sliced.loss(loss_cfg, mean(aux), (num, count, None))
  return apply_gradients(state, tx, loss, metrics, mean(grads))


def run(programs: Programs, state, batch) -> tuple[Any, dict]:
  """One train step by ``programs`` (jitted or compiled); see the module docstring."""
  (grads, aux), examples = programs.prepare(state.params, batch, state.rng, state.step)
  for views, slices, scales in examples:
    featmaps, encode_vjp, featmap_grads = programs.encode(state.params, views[1])
    for x in slices:
      grads, featmap_grads, aux = programs.slice(state.params, featmaps,
                                                 (grads, featmap_grads, aux), views, x, scales)
    grads = programs.encode_grad(encode_vjp, featmap_grads, grads)
  return programs.update(state, (grads, aux), scales + (len(examples),))


@dataclasses.dataclass(frozen=True)
class _Lowered:
  """The lowered programs of a :class:`SliceLoopStep`."""

  prepare: Any
  encode: Any
  slice: Any
  encode_grad: Any
  update: Any

  def compile(self) -> "Compiled":
    return Compiled(Programs(**{f.name: getattr(self, f.name).compile()
                                for f in dataclasses.fields(self)}))


@dataclasses.dataclass(frozen=True)
class Compiled:
  """The compiled programs of a :class:`SliceLoopStep`, called as the step."""

  programs: Programs

  def __call__(self, state, batch):
    return run(self.programs, state, batch)

  def as_text(self) -> str:
    """The optimised HLO of every program."""
    return "\n".join(getattr(self.programs, f.name).as_text()
                     for f in dataclasses.fields(self.programs))
