"""Decoupling-NeRF's feature-level contrastive term (``loss.contrastive_weight``): the
InfoNCE formula, weight 0 is the base loss, source order is free, a short fit lowers it,
bad values name their key, and it trains and resumes through the shared loop."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from movenerf import train as train_main
from movenerf.geometry.cameras import Cameras
from movenerf.models.decoupled import loss as dc_loss
from movenerf.models.decoupled import model as dc
from movenerf.training import config_checks
from movenerf.validation import UsageError
from tests.models.decoupled.helpers import TINY_MODEL as TINY, small_config, whole_image_example

SIZE = 32
BASE = ml_collections.ConfigDict(dict(ssim_weight=1.0, mse_weight=0.0))


def _loss_cfg(weight, temperature=0.1, points=64):
  return ml_collections.ConfigDict(dict(
      ssim_weight=1.0, mse_weight=0.0, contrastive_weight=weight,
      contrastive_temperature=temperature, contrastive_points=points))


@pytest.fixture(scope="module")
def example():
  return whole_image_example(SIZE)


@pytest.fixture(scope="module")
def model_and_params(example):
  model = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY))
  params = jax.jit(model.init)(
      jax.random.key(0, impl="rbg"), jnp.zeros((4, SIZE, SIZE, 3)),
      Cameras(example["src_intrinsics"], example["src_c2w"], SIZE, SIZE),
      Cameras(example["tgt_intrinsics"], example["tgt_c2w"], SIZE, SIZE))["params"]
  return model, params


def test_info_nce_on_hand_computed_cases():
  tau = 0.5
  eye = jnp.eye(3)
  # 3 orthogonal points, the same features in both views: the analytic minimum.
  same = jnp.stack([eye, 2.0 * eye], axis=1)  # [P=3, V=2, C=3]; the norm is divided out
  visible = jnp.ones((3, 2), bool)
  np.testing.assert_allclose(dc_loss.info_nce(same, visible, tau),
                             math.log(1 + 2 * math.exp(-1 / tau)), rtol=1e-6)
  # View 1 sees point 0 as (1, 1, 0) / sqrt(2); c = 1 / sqrt(2). From view 0 the anchors
  # e0, e1, e2 meet view 1's points at cosines (c, 0, 0), (c, 1, 0), (0, 0, 1);
  # from view 1 the anchors (1, 1, 0) / sqrt(2), e1, e2 meet view 0's e0, e1, e2 at
  # (c, c, 0), (0, 1, 0), (0, 0, 1). Each term is -log(e^{s_ii} / sum_j e^{s_ij}).
  moved = same.at[0, 1].set(jnp.array([1.0, 1.0, 0.0]))
  c, e = 1 / math.sqrt(2), math.exp
  t0 = -math.log(e(c / tau) / (e(c / tau) + 2))
  t1 = -math.log(e(1 / tau) / (e(c / tau) + e(1 / tau) + 1))
  t2 = -math.log(e(1 / tau) / (e(1 / tau) + 2))
  u0 = -math.log(e(c / tau) / (2 * e(c / tau) + 1))
  u1 = -math.log(e(1 / tau) / (e(1 / tau) + 2))
  u2 = u1
  np.testing.assert_allclose(dc_loss.info_nce(moved, visible, tau),
                             (t0 + t1 + t2 + u0 + u1 + u2) / 6, rtol=1e-6)
  # Point 2 unseen in view 1: neither anchor nor negative, N = 2.
  hidden = visible.at[2, 1].set(False)
  np.testing.assert_allclose(dc_loss.info_nce(same, hidden, tau),
                             math.log(1 + math.exp(-1 / tau)), rtol=1e-6)
  grads = jax.grad(lambda f: dc_loss.info_nce(f, hidden, tau))(same)
  assert np.all(np.isfinite(grads))
  # Nothing visible in two views: 0, with finite gradients.
  alone = jnp.array([[True, False], [False, True], [True, False]])
  assert float(dc_loss.info_nce(same, alone, tau)) == 0.0
  assert np.all(np.isfinite(jax.grad(lambda f: dc_loss.info_nce(f, alone, tau))(same)))
  # Features unrelated across views: about log(N).
  rand = jax.random.normal(jax.random.key(3), (64, 3, 512))
  np.testing.assert_allclose(dc_loss.info_nce(rand, jnp.ones((64, 3), bool), 1.0),
                             math.log(64), atol=0.02)


def _loss_and_grads(model, params, ex, loss_cfg, key=jax.random.key(4)):
  fn = lambda p: dc_loss.example_loss(model, p, ex, key, loss_cfg, (SIZE, SIZE))
  return jax.jit(jax.value_and_grad(fn, has_aux=True))(params)


def test_weight_zero_is_the_base_loss_exactly(example, model_and_params):
  model, params = model_and_params
  (base, base_terms), base_grads = _loss_and_grads(model, params, example, BASE)
  (off, off_terms), off_grads = _loss_and_grads(model, params, example, _loss_cfg(0.0))
  assert float(off) == float(base) and set(off_terms) == set(base_terms)
  jax.tree.map(np.testing.assert_array_equal, off_grads, base_grads)
  (on, on_terms), on_grads = _loss_and_grads(model, params, example, _loss_cfg(0.5))
  np.testing.assert_allclose(float(on), float(base) + 0.5 * float(on_terms["contrastive"]),
                             rtol=1e-6)
  assert float(on_terms["contrastive"]) > 0.1
  # Only the scene encoder receives the term's gradient (the points' depth is held).
  enc = lambda g: np.asarray(g["scene_encoder"]["out"]["kernel"])
  assert np.abs(enc(on_grads) - enc(base_grads)).max() > 1e-6
  np.testing.assert_allclose(on_grads["renderer"]["conv_out"]["kernel"],
                             base_grads["renderer"]["conv_out"]["kernel"], atol=1e-7)


def test_source_order_is_free(example, model_and_params):
  model, params = model_and_params
  order = jnp.array([2, 0, 3, 1])
  shuffled = dict(example)
  for k in ("src_images", "src_intrinsics", "src_c2w"):
    shuffled[k] = example[k][order]
  (a, ta), _ = _loss_and_grads(model, params, example, _loss_cfg(1.0))
  (b, tb), _ = _loss_and_grads(model, params, shuffled, _loss_cfg(1.0))
  np.testing.assert_allclose(float(tb["contrastive"]), float(ta["contrastive"]), rtol=1e-5)
  np.testing.assert_allclose(float(b), float(a), rtol=1e-5)


def test_short_fit_lowers_the_contrastive_term(example, model_and_params):
  model, params = model_and_params
  cfg = _loss_cfg(1.0)
  opt = optax.adam(3e-3)

  @jax.jit
  def step(p, state, key):
    (_, terms), g = jax.value_and_grad(
        lambda p: dc_loss.example_loss(model, p, example, key, cfg, (SIZE, SIZE)),
        has_aux=True)(p)
    updates, state = opt.update(g, state, p)
    return optax.apply_updates(p, updates), state, terms["contrastive"]

  state = opt.init(params)
  terms = []
  for i in range(40):
    params, state, term = step(params, state, jax.random.key(i))
    terms.append(float(term))
  # Every step draws other points; the term still descends.
  assert np.mean(terms[-5:]) < 0.8 * np.mean(terms[:5]), terms


@pytest.mark.parametrize("key,value,message", [
    ("contrastive_weight", -0.1, "loss.contrastive_weight=-0.1: must be >= 0"),
    ("contrastive_temperature", 0.0, "loss.contrastive_temperature=0.0: must be > 0"),
    ("contrastive_points", 1, "loss.contrastive_points=1: must be >= 2"),
])
def test_bad_value_names_the_key(key, value, message):
  c = small_config()
  c.loss[key] = value
  with pytest.raises(UsageError, match=message) as err:
    config_checks.check_run_config(c, device_count=1)
  assert "\n" not in str(err.value)
  with pytest.raises(UsageError, match=message):
    dc_loss.contrastive_settings(c.loss)


def test_trains_and_resumes_through_the_shared_loop(tmp_path):
  workdir = tmp_path / "run"

  def config(weight=0.5):
    c = small_config(num_steps=2, checkpoint_every=2, image_every=0)
    c.loss.update(contrastive_weight=weight, contrastive_points=16)
    c.eval.at_end = False
    return c

  first = train_main.train(config(), str(workdir))
  assert first["step"] == 2 and first["train"]["skipped_updates"] == 0
  logged = [json.loads(line) for line in (workdir / "train_metrics.jsonl").open()]
  assert [r["step"] for r in logged] == [1, 2]
  assert all(np.isfinite(r["contrastive"]) and r["contrastive"] > 0 for r in logged)
  # The stored run resumes with the option (from its last checkpoint, nothing left to
  # do) and not without it.
  assert train_main.train(config(), str(workdir)) == {"step": 2, "train": {}}
  with pytest.raises(UsageError, match="loss.contrastive_weight: 0.5 -> 0.0"):
    train_main.train(config(weight=0.0), str(workdir))


def test_runs_stored_before_the_option_resume_with_it_off():
  stored = small_config().to_dict()
  for key in ("contrastive_weight", "contrastive_temperature", "contrastive_points"):
    del stored["loss"][key]
  assert config_checks.config_changes(stored, small_config()) == []
  on = small_config()
  on.loss.contrastive_weight = 0.5
  assert config_checks.config_changes(stored, on) == [
      "loss.contrastive_points: (absent) -> 64",
      "loss.contrastive_temperature: (absent) -> 0.1",
      "loss.contrastive_weight: (absent) -> 0.5"]
