"""A small GNT (random weights) shared by the GNT model and renderer tests."""

import functools

import jax

from movenerf import testing
from movenerf.models.gnt.model import GNTConfig, GNTModel

SMALL = GNTConfig(width=16, depth=2, coarse_feat_dim=8, fine_feat_dim=8, num_samples=8,
                  num_importance=4)


@functools.lru_cache(maxsize=None)
def setup(config=SMALL, num_views=4, size=16, num_rays=6):
  rays, target, sources = testing.dummy_inputs(num_views, size, size, num_rays, seed=1)
  model = GNTModel(config)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), rays, target, sources, 2.0, 6.0)
  # Non-trivial weights everywhere (the default init leaves biases at zero).
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  leaves = [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
  return model, jax.tree.unflatten(tree, leaves), rays, target, sources
