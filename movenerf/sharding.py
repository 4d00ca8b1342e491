"""Device meshes and parameter shardings.

Axes: ``data`` (rays are split over it) and ``expert`` (GNT-MoVE experts are split
over it). Meshes use Auto axes so that ``with_sharding_constraint`` and sharded
``jit`` inputs place data without explicit-sharding annotations everywhere.
"""

from __future__ import annotations

from typing import Any

import flax.traverse_util
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
EXPERT_AXIS = "expert"


def make_mesh(data: int | None = None, expert: int = 1) -> Mesh:
  """A (data, expert) mesh over all devices; ``data`` defaults to what is left."""
  count = jax.device_count()
  if data is None:
    data = count // expert
  if data * expert != count:
    raise ValueError(f"mesh {data} x {expert} does not match {count} devices")
  return jax.make_mesh((data, expert), (DATA_AXIS, EXPERT_AXIS),
                       axis_types=(AxisType.Auto, AxisType.Auto))


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
