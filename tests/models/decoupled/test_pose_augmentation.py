"""Decoupling-NeRF's pose augmentation (``model.pose_augmentation``): the rig transform
keeps what the sources see of the target, the loss uses it, a short fit descends, and
it trains and resumes through the shared loop."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from movenerf import train as train_main
from movenerf.geometry import rig
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.projection import project_points
from movenerf.geometry.rays import pixel_rays
from movenerf.models import registry
from movenerf.models.decoupled import loss as dc_loss
from movenerf.models.decoupled import model as dc
from movenerf.validation import UsageError
from tests.models.decoupled.helpers import TINY_MODEL as TINY, small_config, whole_image_example

SIZE = 32
LOSS = ml_collections.ConfigDict(dict(ssim_weight=1.0, mse_weight=0.0))


@pytest.fixture(scope="module")
def example():
  return whole_image_example(SIZE)


def test_rig_transform_keeps_the_epipolar_projections(example):
  moved = rig.random_rig_transform(example, jax.random.key(5), max_scale=2.0)
  scale = float(moved["far"] / example["far"])
  assert scale != pytest.approx(1.0, abs=1e-3)
  np.testing.assert_allclose(float(moved["near"]), scale * float(example["near"]), rtol=1e-6)
  assert not np.allclose(moved["tgt_c2w"], example["tgt_c2w"], atol=1e-2)

  def projections(ex, depth_scale):
    target = Cameras(ex["tgt_intrinsics"], ex["tgt_c2w"], SIZE, SIZE)
    rays = pixel_rays(target, ex["pixels"][::37])
    depths = depth_scale * jnp.linspace(float(example["near"]), float(example["far"]), 5)
    points = rays.origins[:, None] + depths[None, :, None] * rays.directions[:, None]
    sources = Cameras(ex["src_intrinsics"], ex["src_c2w"], SIZE, SIZE)
    return np.asarray(project_points(points.reshape(-1, 3), sources)[0])

  # Every sample of every target ray lands on the same source pixels, s times deeper.
  np.testing.assert_allclose(projections(moved, scale), projections(example, 1.0),
                             atol=5e-3)


def test_loss_applies_the_transform_drawn_from_its_key(example):
  plain = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY))
  augmented = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY, pose_augmentation="similarity"))
  params = jax.jit(plain.init)(jax.random.key(0, impl="rbg"), jnp.zeros((4, SIZE, SIZE, 3)),
                               Cameras(example["src_intrinsics"], example["src_c2w"], SIZE,
                                       SIZE),
                               Cameras(example["tgt_intrinsics"], example["tgt_c2w"], SIZE,
                                       SIZE))["params"]
  loss = jax.jit(lambda m, ex, key: dc_loss.example_loss(m, params, ex, key, LOSS,
                                                         (SIZE, SIZE))[0], static_argnums=0)
  key = jax.random.key(7)
  moved = rig.random_rig_transform(example, key, 2.0)
  with_aug = float(loss(augmented, example, key))
  np.testing.assert_allclose(with_aug, float(loss(plain, moved, key)), rtol=1e-6)
  # The base model reads absolute positions: the transform changes its loss.
  assert abs(with_aug - float(loss(plain, example, key))) > 1e-5
  assert abs(with_aug - float(loss(augmented, example, jax.random.key(8)))) > 1e-5


def test_short_fit_with_augmentation_lowers_the_loss(example):
  model = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY, pose_augmentation="rigid"))
  params = jax.jit(model.init)(
      jax.random.key(0, impl="rbg"), jnp.zeros((4, SIZE, SIZE, 3)),
      Cameras(example["src_intrinsics"], example["src_c2w"], SIZE, SIZE),
      Cameras(example["tgt_intrinsics"], example["tgt_c2w"], SIZE, SIZE))["params"]
  opt = optax.adam(3e-3)

  @jax.jit
  def step(p, state, key):
    loss, g = jax.value_and_grad(
        lambda p: dc_loss.example_loss(model, p, example, key, LOSS, (SIZE, SIZE))[0])(p)
    updates, state = opt.update(g, state, p)
    return optax.apply_updates(p, updates), state, loss

  state = opt.init(params)
  losses = []
  for i in range(40):
    params, state, loss = step(params, state, jax.random.key(i))
    losses.append(float(loss))
  # Every step sees another random rig; the loss still descends.
  assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses


def test_bad_value_names_the_key():
  with pytest.raises(ValueError, match="pose_augmentation='affine': choose from"):
    registry.build({"name": "decoupled", "pose_augmentation": "affine"})


def test_trains_and_resumes_through_the_shared_loop(tmp_path):
  workdir = tmp_path / "run"
  config = lambda steps: small_config(num_steps=steps, checkpoint_every=2)
  c = config(2)
  c.model.pose_augmentation = "similarity"
  c.eval.at_end = False
  first = train_main.train(c, str(workdir))
  c = config(3)
  c.model.pose_augmentation = "similarity"
  c.eval.at_end = False
  resumed = train_main.train(c, str(workdir))
  assert first["step"] == 2 and resumed["step"] == 3
  assert np.isfinite(resumed["train"]["loss"]) and resumed["train"]["skipped_updates"] == 0
  stored = json.loads((workdir / "config.json").read_text())
  assert stored["model"]["pose_augmentation"] == "similarity"
  # Resuming without the augmentation is another run.
  c = config(4)
  c.eval.at_end = False
  with pytest.raises(UsageError, match="model.pose_augmentation: 'similarity' -> ''"):
    train_main.train(c, str(workdir))
