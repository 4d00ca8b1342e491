"""Inverse-CDF importance sampling: analytic cases."""

import jax
import jax.numpy as jnp
import numpy as np

from movenerf.geometry.importance import fine_depths, linspace01, sample_pdf


def test_uniform_weights_give_evenly_spaced_samples():
  bins = jnp.linspace(0.0, 1.0, 11)[None]
  samples = sample_pdf(bins, jnp.ones((1, 10)), 6)
  np.testing.assert_allclose(samples[0], np.linspace(0, 1, 6), atol=1e-5)


def test_peaked_weight_puts_samples_in_its_bin():
  bins = jnp.linspace(2.0, 6.0, 9)[None]  # 8 bins of width 0.5
  w = jnp.full((1, 8), 1e-9).at[0, 5].set(1.0)  # bin [4.5, 5.0]
  samples = np.asarray(sample_pdf(bins, w, 32))[0]
  inside = (samples >= 4.5) & (samples <= 5.0)
  # 1e-5 padding per bin leaves ~7e-5 of the mass elsewhere: all interior u hit the bin.
  assert inside[1:-1].all(), samples
  assert samples[0] == 2.0


def test_random_samples_follow_the_pdf():
  bins = jnp.array([[0.0, 1.0, 2.0]])
  w = jnp.array([[1.0, 3.0]])
  samples = np.asarray(sample_pdf(jnp.repeat(bins, 2000, 0), jnp.repeat(w, 2000, 0), 8,
                                  rng=jax.random.PRNGKey(0)))
  np.testing.assert_allclose(np.mean(samples > 1.0), 0.75, atol=0.01)


def test_fine_depths_are_sorted_union_and_inverse_depth_works():
  z = jnp.tile(jnp.linspace(2.0, 6.0, 8)[None], (3, 1))
  w = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (3, 8)))
  extra, merged = fine_depths(z, w, 5)
  assert merged.shape == (3, 13)
  np.testing.assert_allclose(np.sort(np.concatenate([z, extra], 1), 1), merged)
  inv_z = 1.0 / jnp.tile(jnp.linspace(1 / 2, 1 / 6, 8)[None], (3, 1))
  extra, merged = fine_depths(inv_z, w, 5, inverse_depth=True)
  assert float(extra.min()) >= 2.0 - 1e-4 and float(extra.max()) <= 6.0 + 1e-4


def test_linspace_matches_torch_rounding_rule():
  u = np.asarray(linspace01(32))
  assert u[0] == 0.0 and u[-1] == 1.0
  np.testing.assert_allclose(u, np.linspace(0, 1, 32), atol=1e-7)
