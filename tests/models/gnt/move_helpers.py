"""Small GNT-MoVE models (upcycled from a dense GNT) shared by the MoE-in-the-model tests."""

import dataclasses
import functools

import jax

from movenerf import testing
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
from movenerf.models.gnt.upcycle import upcycle
from movenerf.moe.config import MoEConfig
from tests.models.gnt.helpers import perturbed

DENSE = GNTConfig(width=16, depth=4, coarse_feat_dim=8, num_samples=8)
MOE = MoEConfig(layers=(1, 3), eval_capacity_factor=4.0)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("mutable",))
def apply(model, v, rays, target, sources, mutable=()):
  """Evaluation forward pass, compiled (eager flax is slow on this CPU)."""
  return model.apply(v, rays, target, sources, 2.0, 6.0, mutable=list(mutable) or False)


@functools.lru_cache(maxsize=None)
def dense():
  rays, target, sources = testing.dummy_inputs(4, 16, 16, 6, seed=1)
  model = GNTModel(DENSE)
  # Non-trivial weights everywhere (the default init leaves biases at zero).
  v = perturbed(init_variables(model, jax.random.PRNGKey(0)))
  return model, v, rays, target, sources


# MoE settings that shape and initialise no parameter (they act on the routing only).
ROUTING_ONLY = ("renormalize", "expert_activation", "eval_capacity_factor", "dispatch")


@functools.lru_cache(maxsize=None)
def _template(moe: MoEConfig, seed: int):
  return init_variables(GNTModel(dataclasses.replace(DENSE, moe=moe)), jax.random.PRNGKey(seed))


@functools.lru_cache(maxsize=None)
def move(moe: MoEConfig = MOE, seed: int = 0):
  """The dense model upcycled into GNT-MoVE with ``moe`` (the router drawn from ``seed``);
  one per argument, shared: callers do not modify it. The fresh parameters are drawn
  with MOE's routing-only settings: the same values, from one init program for all."""
  _, dense_v, *_ = dense()
  model = GNTModel(dataclasses.replace(DENSE, moe=moe))
  drawn = dataclasses.replace(moe, **{f: getattr(MOE, f) for f in ROUTING_ONLY})
  return model, {"params": upcycle(dense_v["params"], _template(drawn, seed)["params"])}
