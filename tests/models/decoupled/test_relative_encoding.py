"""Decoupling-NeRF's relative encodings (``model.relative_encoding``): the Plücker
coordinates of target rays in each source camera's frame, per-view attention, and a
render invariant to a rigid transform of the whole rig."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from movenerf.data.procedural import make_scene
from movenerf.geometry import rig
from movenerf.geometry.cameras import Cameras
from movenerf.models.decoupled import loss as dc_loss
from tests.models.decoupled.helpers import TINY_MODEL as TINY
from movenerf.models.decoupled import model as dc

SIZE = 32


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def test_plucker_and_camera_frame_formulas():
  # Ray from the origin along +z; a source camera at (1, 0, 0) looking along +z.
  origins, directions = jnp.array([[0.0, 0.0, 0.0]]), jnp.array([[0.0, 0.0, 2.0]])
  cam = Cameras(jnp.eye(3), jnp.eye(4).at[0, 3].set(1.0), 8, 8)
  o, d = dc.rays_in_camera(cam, origins, directions)
  np.testing.assert_allclose(o, [[-1.0, 0.0, 0.0]], atol=1e-7)
  np.testing.assert_allclose(d, [[0.0, 0.0, 2.0]], atol=1e-7)
  # d = (0, 0, 1), moment (-1, 0, 0) x (0, 0, 1) = (0, 1, 0): distance 1 from the camera.
  np.testing.assert_allclose(dc.plucker(o, d), [[0, 0, 1, 0, 1, 0]], atol=1e-7)
  # The moment does not depend on the point chosen along the ray.
  np.testing.assert_allclose(dc.plucker(o + 3.5 * d, d), dc.plucker(o, d), atol=1e-6)
  # A camera turned 90 degrees about z (its x axis along world y) sees the world
  # direction (0, 1, 0) as its x axis.
  turn = jnp.eye(4).at[:3, :3].set(jnp.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]))
  o, d = dc.rays_in_camera(Cameras(jnp.eye(3), turn, 8, 8), jnp.array([[0.0, 2, 0]]),
                           jnp.array([[0.0, 1, 0]]))
  np.testing.assert_allclose(o, [[2.0, 0, 0]], atol=1e-7)
  np.testing.assert_allclose(d, [[1.0, 0, 0]], atol=1e-7)


def test_per_view_queries_of_one_view_equal_the_shared_query():
  attn = dc.RebuildViewAttention(num_heads=2, head_dim=4, width=7)
  k = jax.random.split(_key(1), 3)
  q = jax.random.normal(k[0], (2, 2, 6))
  kp = jax.random.normal(k[1], (1, 2, 2, 6))
  vals = jax.random.normal(k[2], (1, 2, 2, 5))
  params = attn.init(_key(0), q, kp, vals)
  shared = attn.apply(params, q, kp, vals)
  per_view = attn.apply(params, q[None], kp, vals)
  np.testing.assert_allclose(per_view, shared, atol=1e-6)


@pytest.fixture(scope="module")
def scene():
  s = make_scene(0, "object", num_views=5, height=SIZE, width=SIZE)
  images = jnp.asarray(s.images, jnp.float32) / 255.0
  return images, Cameras(jnp.asarray(s.intrinsics), jnp.asarray(s.c2w), SIZE, SIZE)


def _model(scene, relative):
  images, cams = scene
  model = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY, relative_encoding=relative))
  return model, jax.jit(model.init)(_key(0), images[:4], cams[:4], cams[4])


@pytest.fixture(scope="module")
def relative_model(scene):
  return _model(scene, True)


def test_render_is_invariant_to_a_rigid_transform_of_the_rig(scene, relative_model):
  images, cams = scene
  rotation, shift, _ = rig.random_similarity(jax.random.key(3), translation=4.0)
  moved = rig.transform_c2w(cams.c2w, rotation, shift)

  def changes(model, params):
    """Max change of the rebuilt encoding and of the rgb under the transform, and the
    mean change of the rebuilt encoding for another target camera."""
    @functools.partial(jax.jit, static_argnums=(1, 2))
    def run(c2w, target, perm=(0, 1, 2, 3)):
      perm = jnp.array(perm)
      out, inter = model.apply(
          params, images[perm], Cameras(cams.intrinsics[perm], c2w[perm], SIZE, SIZE),
          Cameras(cams.intrinsics[target], c2w[target], SIZE, SIZE),
          capture_intermediates=True)
      return out["rgb"], inter["intermediates"]["attention"]["__call__"][0]

    rgb, enc = run(cams.c2w, 4)
    rgb_m, enc_m = run(moved, 4)
    rgb_p, enc_p = run(cams.c2w, 4, (2, 0, 3, 1))
    np.testing.assert_allclose(rgb_p, rgb, atol=1e-6)  # the order of sources is free
    np.testing.assert_allclose(enc_p, enc, atol=1e-6)
    _, enc_o = run(cams.c2w, 0)
    return (float(jnp.max(jnp.abs(enc_m - enc))), float(jnp.max(jnp.abs(rgb_m - rgb))),
            float(jnp.mean(jnp.abs(enc_o - enc))))

  enc_rigid, rgb_rigid, enc_other = changes(*relative_model)
  # Float rounding only, while the pose relative to the sources still matters.
  assert enc_rigid < 1e-6 and rgb_rigid < 1e-6
  assert enc_other > 1e-4
  # The world-point encoding of the base model moves with the rig.
  enc_rigid, rgb_rigid, _ = changes(*_model(scene, False))
  assert enc_rigid > 1e-3 and rgb_rigid > 1e-5


def test_short_fit_with_relative_encoding_lowers_the_loss(scene, relative_model):
  images, cams = scene
  model, params = relative_model
  opt = optax.adam(3e-3)

  @jax.jit
  def step(p, state):
    loss, g = jax.value_and_grad(lambda p: dc_loss.image_loss(
        model.apply(p, images[:4], cams[:4], cams[4])["rgb"], images[4])[0])(p)
    updates, state = opt.update(g, state, p)
    return optax.apply_updates(p, updates), state, loss

  state = opt.init(params)
  losses = []
  for _ in range(30):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert losses[-1] < 0.8 * losses[0], losses


def test_rig_size_formula_and_its_invariances():
  c2w = jnp.tile(jnp.eye(4), (3, 1, 1)).at[:, :3, 3].set(
      jnp.array([[1.0, 0, 0], [-1, 0, 0], [0, 2, 0]]))
  src = Cameras(jnp.tile(jnp.eye(3), (2, 1, 1)), c2w[:2], 8, 8)
  tgt = Cameras(jnp.eye(3), c2w[2], 8, 8)
  # Centroid (0, 2/3, 0): distances sqrt(1 + 4/9) twice and 4/3.
  expected = (2 * np.sqrt(1 + 4 / 9) + 4 / 3) / 3
  np.testing.assert_allclose(dc.rig_size(src, tgt), expected, rtol=1e-6)
  # A padded source is left out: centroid (1/2, 1, 0) of the other two.
  np.testing.assert_allclose(dc.rig_size(src, tgt, jnp.array([True, False])),
                             np.sqrt(1 / 4 + 1), rtol=1e-6)
  rotation, shift, _ = rig.random_similarity(jax.random.key(5), translation=3.0)
  moved = rig.transform_c2w(c2w, rotation, shift, 2.5)
  np.testing.assert_allclose(
      dc.rig_size(Cameras(src.intrinsics, moved[:2], 8, 8), Cameras(tgt.intrinsics, moved[2],
                                                                    8, 8)),
      2.5 * expected, rtol=1e-5)
  one = jnp.tile(jnp.eye(4), (2, 1, 1))  # every centre at the origin
  assert float(dc.rig_size(Cameras(src.intrinsics, one, 8, 8),
                           Cameras(jnp.eye(3), one[0], 8, 8))) == 1.0
  with pytest.raises(ValueError, match="normalise_scale=True needs relative_encoding"):
    dc.DecoupledConfig(normalise_scale=True)


def test_scale_normalised_render_is_invariant_to_a_similarity(scene):
  images, cams = scene
  rotation, shift, _ = rig.random_similarity(jax.random.key(7), translation=4.0)

  def rgb_change(normalise, scale):
    model = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY, relative_encoding=True,
                                                normalise_scale=normalise))
    params = jax.jit(model.init)(_key(0), images[:4], cams[:4], cams[4])
    render = jax.jit(lambda c2w: model.apply(
        params, images[:4], Cameras(cams.intrinsics[:4], c2w[:4], SIZE, SIZE),
        Cameras(cams.intrinsics[4], c2w[4], SIZE, SIZE))["rgb"])
    moved = rig.transform_c2w(cams.c2w, rotation, shift, scale)
    return float(jnp.max(jnp.abs(render(moved) - render(cams.c2w))))

  assert rgb_change(True, 2.0) < 1e-5 and rgb_change(True, 0.5) < 1e-5
  # Without the normalisation the moments, and so the render, follow the scale.
  assert rgb_change(False, 2.0) > 1e-4
