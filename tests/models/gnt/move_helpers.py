"""Small GNT-MoVE models (upcycled from a dense GNT) shared by the MoE-in-the-model tests."""

import dataclasses
import functools

import jax

from movenerf import testing
from movenerf.models.gnt.model import GNTConfig, GNTModel
from movenerf.models.gnt.upcycle import upcycle
from movenerf.moe.config import MoEConfig

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
  v = jax.jit(model.init)(jax.random.PRNGKey(0), rays, target, sources, 2.0, 6.0)
  leaves, tree = jax.tree.flatten(v)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  v = jax.tree.unflatten(tree, [l + 0.05 * jax.random.normal(k, l.shape)
                                for l, k in zip(leaves, keys)])
  return model, v, rays, target, sources


def move(moe: MoEConfig = MOE, seed: int = 0):
  dense_model, dense_v, rays, target, sources = dense()
  model = GNTModel(dataclasses.replace(DENSE, moe=moe))
  template = jax.jit(model.init)(jax.random.PRNGKey(seed), rays, target, sources, 2.0, 6.0)
  return model, {"params": upcycle(dense_v["params"], template["params"])}
