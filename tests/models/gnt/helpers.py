"""A small GNT (random weights) shared by the GNT model and renderer tests."""

import functools

import jax
import numpy as np

from movenerf import testing
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables

SMALL = GNTConfig(width=16, depth=2, coarse_feat_dim=8, fine_feat_dim=8, num_samples=8,
                  num_importance=4)


def perturbed(variables, seed=1, scale=0.05):
  """``variables`` plus ``scale`` times standard normal noise on every leaf (NumPy draws:
  no program to compile per leaf shape), so that no weight or bias is trivially zero."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda l: l + scale * rng.standard_normal(l.shape).astype(np.asarray(l).dtype),
      variables)


@functools.lru_cache(maxsize=None)
def setup(config=SMALL, num_views=4, size=16, num_rays=6):
  rays, target, sources = testing.dummy_inputs(num_views, size, size, num_rays, seed=1)
  model = GNTModel(config)
  # Non-trivial weights everywhere (the default init leaves biases at zero).
  variables = perturbed(init_variables(model, jax.random.PRNGKey(0)))
  return model, variables, rays, target, sources


@functools.partial(jax.jit, static_argnums=0, static_argnames=("train",))
def render(model, variables, rays, target, sources, train=False, rngs=None):
  """The model's forward pass over depths [2, 6], compiled (eager flax is slow on CPU)."""
  return model.apply(variables, rays, target, sources, 2.0, 6.0, train=train, rngs=rngs)
