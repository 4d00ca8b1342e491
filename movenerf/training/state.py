"""The train state, its shardings over a ``(data, expert)`` mesh, and the optimiser update."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from movenerf import sharding
from movenerf.image.metrics import mse_to_psnr


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator.

  Attributes:
    step: [] int32 updates done.
    params: model parameters.
    opt_state: optimiser state.
    rng: [2] uint32 base key; step ``s`` uses ``fold_in(rng, s)``.
    skipped: [] int32 updates skipped for non-finite gradients.
  """

  step: jnp.ndarray
  params: Any
  opt_state: Any
  rng: jnp.ndarray
  skipped: jnp.ndarray


def state_shardings(state: TrainState, mesh: Mesh) -> TrainState:
  """NamedShardings: MoVE experts (params and their optimiser moments) split over the
  ``expert`` axis, everything else replicated."""
  def spec_for(path, leaf):
    del leaf
    keys = [getattr(p, "key", getattr(p, "name", "")) for p in path]
    return P(sharding.EXPERT_AXIS) if "experts" in keys else P()
  specs = jax.tree_util.tree_map_with_path(spec_for, state)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs)


def create_state(params, tx, seed: int, mesh: Mesh) -> tuple[TrainState, Any]:
  """A fresh TrainState placed on ``mesh``; returns (state, its shardings)."""
  def build(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                      rng=jax.random.key_data(jax.random.PRNGKey(seed)),
                      skipped=jnp.zeros((), jnp.int32))
  abstract = jax.eval_shape(build, params)
  shardings = state_shardings(abstract, mesh)
  # Created directly in its sharded layout by a jitted constructor (no host copy of the
  # optimiser state).
  state = jax.jit(build, out_shardings=shardings)(params)
  return state, shardings


def apply_gradients(state: TrainState, tx, loss, metrics: dict,
                    grads) -> tuple[TrainState, dict]:
  """The optimiser update of a step's gradients, and the step's metrics (+ grad_norm,
  param_norm, update_skipped, psnr).

  The update runs only when the loss and every gradient are finite (a non-finite
  gradient makes the norm non-finite); otherwise parameters and optimiser state stay
  as they were and ``skipped`` counts the step.
  """
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)

  def update():
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), new_opt

  params, opt_state = jax.lax.cond(finite, update, lambda: (state.params, state.opt_state))
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      skipped=state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32))
  metrics = dict(
      metrics, grad_norm=grad_norm, param_norm=optax.global_norm(state.params),
      update_skipped=1.0 - finite.astype(jnp.float32), psnr=mse_to_psnr(metrics["mse"]))
  return new_state, metrics

