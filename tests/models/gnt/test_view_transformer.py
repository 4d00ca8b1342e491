"""Tests of movenerf.models.gnt.view_transformer: the view-attention kernel."""

import jax
import jax.numpy as jnp
import numpy as np

from movenerf.models.gnt import view_transformer as vt
from movenerf.nn import dropout, prng


def test_attend_views_gradient_matches_autodiff():
  kl, kv, km, kd, kg = jax.random.split(jax.random.key(4), 5)
  logits = 3 * jax.random.normal(kl, (2, 5, 6, 8))
  visible = jax.random.bernoulli(km, 0.7, (2, 5, 6, 1))
  visible = visible.at[0, 0].set(False)  # a point no view sees: uniform weights
  logits = jnp.where(visible, logits, vt._MASKED_LOGIT)
  value = jax.random.normal(kv, (2, 5, 6, 8))
  scale = jnp.where(prng.keep_mask(kd, logits.shape, 0.25), 1 / 0.75, 0.0)
  dx = jax.random.normal(kg, (2, 5, 8))

  def plain(lg, v):
    return jnp.sum(jax.nn.softmax(lg, axis=-2) * scale * v, axis=-2)

  out, vjp = jax.vjp(lambda lg, v: vt.attend_views(lg, v, scale), logits, value)
  ref_out, ref_vjp = jax.vjp(plain, logits, value)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
  for a, b in zip(vjp(dx), ref_vjp(dx)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_biases_inside_and_after_the_matmuls_agree():
  """``bias_rows`` (the bfloat16 layout) and the float32 default compute the same
  attention, values and gradients, with non-zero biases and a point no view sees."""
  kq, kk, kd, km, kp, kc = jax.random.split(jax.random.key(7), 6)
  q = jax.random.normal(kq, (2, 5, 16))
  k = jax.random.normal(kk, (2, 5, 6, 16))
  ray_diff = jax.random.normal(kd, (2, 5, 6, 4))
  mask = jax.random.bernoulli(km, 0.7, (2, 5, 6, 1)).astype(jnp.float32).at[0, 0].set(0.0)
  params = vt.ViewAttention().init(jax.random.key(0), q, k, ray_diff, mask)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(kp, p.shape), params)
  cotangent = jax.random.normal(kc, (2, 5, 16))

  def loss(p, q, k, ray_diff, bias_rows, deterministic):
    out = vt.ViewAttention(0.2, bias_rows=bias_rows).apply(
        p, q, k, ray_diff, mask, deterministic,
        rngs={dropout.RNG_COLLECTION: jax.random.key(3)})
    return jnp.sum(out * cotangent)

  for deterministic in (True, False):
    grads = [jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(params, q, k, ray_diff,
                                                            rows, deterministic)
             for rows in (True, False)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
