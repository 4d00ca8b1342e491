"""The sliced train step: a loop on the host over small compiled programs.

With ``train.sub_chunk`` on CPU, the rays of an example go through in slices of that
many rays, each slice's backward pass right after its forward pass, so that only one
slice's activations are alive at a time. The step is five programs, and the host loops
over groups of slices:

=============  ========================================================  ===============
program        computes                                                  shapes depend on
=============  ========================================================  ===============
prepare        each example's views, slice inputs and scales; zeroed     rays, examples
               gradient and loss accumulators
encode         one example's feature maps and their vjp                  views
slice          a group of slices' gradients (a scan over up to           slice size,
               :data:`MAX_GROUP`) on each device, added to that          group size
               device's accumulators
encode_grad    the feature net's gradient, added to the accumulator      views
update         the sum over devices, the mean over examples, the         parameters
               optimiser update, metrics
=============  ========================================================  ===============

On a mesh of several devices (one per core on a CPU, ``sharding.cpu_device_per_core``)
each example's slices are dealt out over them: every call of the slice program runs one
group of slices on each device, under ``shard_map``, into accumulators with a leading
[devices] axis, one row per device; no collective runs inside the loop. ``encode``
splits the source views over the devices when their number divides, and gathers the
feature maps to every device. When the devices do not divide an example's slices, the
last devices get copies of its first slice whose gradients and loss terms are dropped
(a select, so the rest add up exactly as without them).

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
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from movenerf.models.family import SlicedLoss
from movenerf.sharding import DATA_AXIS
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

  ``mesh``: a (data, expert) mesh of one process's devices with one row per device on
  ``data``; the slices are dealt out over them, the state is replicated on them. ``lower(state, batch).compile()`` compiles
  every program ahead of time, as for a jitted function (the bench times compilation
  apart from running).
  """

  def __init__(self, sliced: SlicedLoss, tx, loss_cfg, image_hw: tuple[int, int],
               sub_chunk: int, state_sharding, mesh: Mesh):
    self._sliced, self._loss_cfg = sliced, loss_cfg
    self._image_hw, self._sub_chunk = image_hw, sub_chunk
    self.mesh = mesh
    rows = NamedSharding(self.mesh, P(DATA_AXIS))
    update = lambda state, acc, scales: _update(sliced, tx, loss_cfg, state, acc, scales)
    self.programs = Programs(
        prepare=jax.jit(self._prepare),
        encode=jax.jit(self._encode),
        slice=jax.jit(self._slice, donate_argnums=(2,), out_shardings=rows),
        encode_grad=jax.jit(_encode_grad, donate_argnums=(2,), out_shardings=rows),
        update=jax.jit(update, donate_argnums=(0,),
                       out_shardings=(state_sharding, NamedSharding(mesh, P()))))

  @property
  def num_devices(self) -> int:
    return self.mesh.shape[DATA_AXIS]

  def __call__(self, state, batch):
    return run(self.programs, state, batch)

  def lower(self, state, batch) -> "_Lowered":
    """Every program lowered for this state and batch (see ``_Lowered.compile``).

    ``prepare`` and ``encode`` are compiled here: the other programs are lowered for
    the shapes and placements of what those two return.
    """
    p = self.programs
    prepare_args = (state.params, batch, state.rng, state.step)
    prepare = p.prepare.lower(*prepare_args).compile()
    acc, examples = prepare.out_info
    views, slices, scales = examples[0]
    encode = p.encode.lower(state.params, views[1]).compile()
    featmaps, encode_vjp, featmap_grads = encode.out_info
    # Every example has the same shapes: one program of each serves them all.
    return _Lowered(
        prepare=_Done(prepare),
        encode=_Done(encode),
        slice=p.slice.lower(state.params, featmaps, (acc[0], featmap_grads, acc[1]), views,
                            slices[0], scales),
        encode_grad=p.encode_grad.lower(encode_vjp, featmap_grads, acc[0]),
        update=p.update.lower(state, acc, scales + (len(examples),)))

  def _rows(self, tree):
    """``tree``'s leading axis split over the devices."""
    return jax.lax.with_sharding_constraint(tree, NamedSharding(self.mesh, P(DATA_AXIS)))

  def _replicated(self, tree):
    return jax.lax.with_sharding_constraint(tree, NamedSharding(self.mesh, P()))

  def _zero_rows(self, tree):
    """Zeros of ``tree``'s shapes with a leading [devices] axis, one row per device."""
    return self._rows(jax.tree.map(
        lambda a: jnp.zeros((self.num_devices,) + a.shape, a.dtype), tree))

  def _prepare(self, params, batch: dict, rng, step):
    """Zeroed accumulators, and per example ``(views, slice calls, scales)``: a tuple of
    calls, each ``(inputs, keep)`` with a leading [devices * group] axis split over the
    devices (``keep`` None, or 0 for the padding slices), the scales float32 scalars."""
    num = batch["pixels"].shape[0]
    keys = jax.random.split(jax.random.fold_in(rng, step), num)
    examples = []
    for i in range(num):
      ex = jax.tree.map(lambda a, i=i: a[i], batch)
      views, xs, scales = self._sliced.inputs(ex, keys[i], self._image_hw, self._sub_chunk)
      calls = self._deal(xs, scales[1])
      scales = tuple(None if s is None else jnp.asarray(s, jnp.float32) for s in scales)
      examples.append((self._replicated(views), calls, scales))
    views, calls, scales = examples[0]
    # The loss terms' structure (which differs with MoE and the fine pass), for zeros.
    featmaps = jax.eval_shape(self._sliced.encode, params, views[1])
    objective = self._sliced.objective(views, self._loss_cfg, *scales)
    first = jax.tree.map(lambda a: a[0], calls[0][0])
    _, aux = jax.eval_shape(objective, params, featmaps, *first)
    return (self._zero_rows(params), self._zero_rows(aux)), examples

  def _deal(self, xs, count: int) -> tuple:
    """The ``count`` slices of ``xs`` dealt out over the devices in calls of a group on
    each: device ``d`` takes slices ``[d * n, (d + 1) * n)``, ``n = ceil(count /
    devices)``, padded with copies of slice 0 (``keep`` 0)."""
    devices = self.num_devices
    per_device = -(-count // devices)
    pad = per_device * devices - count
    keep = None
    if pad:
      xs = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]), xs)
      keep = jnp.arange(per_device * devices) < count
    group = slice_group(per_device)
    num_calls = per_device // group
    arrange = lambda a: jnp.swapaxes(
        a.reshape((devices, num_calls, group) + a.shape[1:]), 0, 1).reshape(
            (num_calls, devices * group) + a.shape[1:])
    xs, keep = jax.tree.map(arrange, (xs, keep))
    return tuple(self._rows(jax.tree.map(lambda a, j=j: a[j], (xs, keep)))
                 for j in range(num_calls))

  def _encode(self, params, sources):
    """One example's feature maps on every device, the vjp of the feature net at them (a
    pytree of its residuals, passed on to ``encode_grad``) and zeroed feature-map
    gradients, one row per device. The views are split over the devices when their
    number divides."""
    if sources.images.shape[0] % self.num_devices == 0:
      sources = sources.replace(images=self._rows(sources.images))
    featmaps, encode_vjp = jax.vjp(
        lambda p: self._sliced.encode(p, sources), params)
    return self._replicated(featmaps), encode_vjp, self._zero_rows(featmaps)

  def _slice(self, params, featmaps, acc, views, call, scales):
    """Adds, on each device, the parameter and feature-map gradients and loss terms of
    its group of slices (``call`` = (inputs, keep), a leading [devices * group] axis) to
    its row of ``acc`` = (parameter grads, feature-map grads, loss terms)."""
    loss_cfg, sliced = self._loss_cfg, self._sliced

    def local(params, featmaps, acc, views, call, scales):
      objective = sliced.objective(views, loss_cfg, *scales)

      def body(acc, slice_keep):
        x, keep = slice_keep
        (_, aux), grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
            params, featmaps, *x)
        terms = grads + (aux,)
        if keep is not None:
          terms = jax.tree.map(lambda t: jnp.where(keep, t, jnp.zeros_like(t)), terms)
        return jax.tree.map(jnp.add, acc, terms), None

      acc = jax.tree.map(lambda a: a[0], acc)
      acc = jax.lax.scan(body, acc, call)[0]
      return jax.tree.map(lambda a: a[None], acc)

    rows = P(DATA_AXIS)
    return jax.shard_map(local, mesh=self.mesh,
                         in_specs=(P(), P(), rows, P(), rows, P()), out_specs=rows,
                         axis_names={DATA_AXIS}, check_vma=False)(params, featmaps, acc, views, call, scales)


class _Done:
  """A program compiled already, in place of its lowered form."""

  def __init__(self, compiled):
    self._compiled = compiled

  def compile(self):
    return self._compiled

  def as_text(self) -> str:
    return self._compiled.as_text()


# Slices per call of the slice program on each device (benchmarks/README.md: why groups).
MAX_GROUP = 16


def slice_group(count: int) -> int:
  """Slices per call of the slice program for ``count`` slices: the largest divisor of
  ``count`` up to :data:`MAX_GROUP` (so every call has the same shapes)."""
  return max(g for g in range(1, min(count, MAX_GROUP) + 1) if count % g == 0)


def _encode_grad(encode_vjp, featmap_grads, grads):
  """``grads`` (one row per device) plus, in the first row, the feature net's parameter
  gradient for the feature-map gradients summed over the devices' rows."""
  total = jax.tree.map(lambda a: jnp.sum(a, axis=0), featmap_grads)
  return jax.tree.map(lambda a, g: a.at[0].add(g), grads, encode_vjp(total)[0])


def _update(sliced: SlicedLoss, tx, loss_cfg, state, acc, scales):
  """The mean over the B examples of the gradients and loss terms ``acc`` = (grads,
  loss terms), summed over slices with one row per device, then the optimiser update;
  ``scales`` = (rays per example, slices per example, pairs (unused), B)."""
  grads, aux = acc
  num, count, _, num_examples = scales
  mean = lambda tree: jax.tree.map(lambda a: jnp.sum(a, axis=0) / num_examples, tree)
  loss, metrics = sliced.loss(loss_cfg, mean(aux), (num, count, None))
  return apply_gradients(state, tx, loss, metrics, mean(grads))


def run(programs: Programs, state, batch) -> tuple[Any, dict]:
  """One train step by ``programs`` (jitted or compiled); see the module docstring."""
  (grads, aux), examples = programs.prepare(state.params, batch, state.rng, state.step)
  for views, calls, scales in examples:
    featmaps, encode_vjp, featmap_grads = programs.encode(state.params, views[1])
    for call in calls:
      grads, featmap_grads, aux = programs.slice(state.params, featmaps,
                                                 (grads, featmap_grads, aux), views, call,
                                                 scales)
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
