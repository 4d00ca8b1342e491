"""Device meshes and parameter shardings.

Axes: ``data`` (rays are split over it) and ``expert`` (GNT-MoVE experts are split
over it). Meshes use Auto axes so that ``with_sharding_constraint`` and sharded
``jit`` inputs place data without explicit-sharding annotations everywhere.
"""

from __future__ import annotations

import os
from typing import Any

import flax.traverse_util
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
EXPERT_AXIS = "expert"


def make_mesh(data: int | None = None, expert: int = 1, devices=None) -> Mesh:
  """A (data, expert) mesh over ``devices`` (default: all); ``data`` defaults to what
  is left."""
  count = jax.device_count() if devices is None else len(devices)
  if data is None:
    data = count // expert
  if data * expert != count:
    raise ValueError(f"mesh {data} x {expert} does not match {count} devices")
  return jax.make_mesh((data, expert), (DATA_AXIS, EXPERT_AXIS),
                       axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


_CPU_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def cpu_device_per_core() -> int | None:
  """Gives JAX's CPU backend one device per core this process may run on.

  Rendering splits its rays over the devices (``render.ray_mesh``); on a CPU one program
  per core is faster than one program whose operations are each split over the cores.
  Leaves the count alone where it is chosen already (``JAX_NUM_CPU_DEVICES``, the
  ``jax_num_cpu_devices`` config, ``XLA_FLAGS``' ``--xla_force_host_platform_device_count``)
  or too late (JAX has started its backends). Programs call it first thing in ``main``;
  the library itself never changes it.

  Returns:
    the count set, or None where it was left alone.
  """
  if (jax.config.jax_num_cpu_devices != -1 or "JAX_NUM_CPU_DEVICES" in os.environ
      or _CPU_DEVICE_COUNT_FLAG in os.environ.get("XLA_FLAGS", "")):
    return None
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  try:
    jax.config.update("jax_num_cpu_devices", cores or 1)
  except RuntimeError:  # the backends have started: the count is fixed
    return None
  return cores or 1


def data_share(mesh: Mesh, process_index: int | None = None) -> tuple[int, int]:
  """(index, count): this process reads block ``index`` of ``count`` equal contiguous
  blocks of every global batch.

  The blocks follow the ``data`` rows of ``mesh`` that hold this process's devices:
  with the data axis split over the hosts each reads its own block; with the expert axis
  spanning hosts, the hosts of one data row read the same block (the batch is replicated
  over the expert axis).

  Raises:
    ValueError: a mesh whose data rows do not split into equal contiguous runs per host.
  """
  me = jax.process_index() if process_index is None else process_index
  devices = mesh.devices.reshape(mesh.shape[DATA_AXIS], -1)
  rows = [r for r in range(devices.shape[0])
          if any(d.process_index == me for d in devices[r])]
  n = len(rows)
  if not rows or rows != list(range(rows[0], rows[0] + n)) or devices.shape[0] % n \
      or rows[0] % n:
    raise ValueError(f"process {me} holds the data rows {rows} of a "
                     f"{devices.shape[0]}-row mesh: not one of equal contiguous blocks")
  return rows[0] // n, devices.shape[0] // n


def param_specs(params: Any, expert_axis: str = EXPERT_AXIS) -> Any:
  """PartitionSpecs: stacked expert parameters [E, ...] over ``expert_axis``, the rest
  replicated."""
  flat = flax.traverse_util.flatten_dict(params)
  specs = {k: P(expert_axis) if "experts" in k else P() for k in flat}
  return flax.traverse_util.unflatten_dict(specs)


def shard_params(params: Any, mesh: Mesh, expert_axis: str = EXPERT_AXIS) -> Any:
  """Places parameters on ``mesh`` (experts split over ``expert_axis``)."""
  specs = param_specs(params, expert_axis)
  return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), params, specs)


def shard_rays(tree: Any, mesh: Mesh) -> Any:
  """Splits the leading (ray) axis of every leaf over the ``data`` axis."""
  return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, P(DATA_AXIS))), tree)
