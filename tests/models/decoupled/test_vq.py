"""Decoupling-NeRF's vector-quantised encoder features (``model.vq_codebook_size``,
``loss.vq_commitment``; ``vq_linear``, ``vq_renderer_input``, ``loss.vq_entropy_weight``):
nearest codewords, the straight-through gradient, the codebook and commitment losses,
linear codewords, the quantised renderer input, the codebook usage term, off is the base
model, a short fit lowers the loss, training and resuming through the shared loop, bad
values name their key, and runs stored before the options resume."""

import functools
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
VQ = ml_collections.ConfigDict(dict(ssim_weight=1.0, mse_weight=0.0, vq_commitment=0.25))
CODEBOOK = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
# Nearest codewords by squared distance: 0 (0.16 vs 0.36, 4), 1 (0.17 vs 0.37), 2 (0.81
# vs 1.21), and a tie, 0.25 to codewords 0 and 1, which goes to the lower index 0.
Z = jnp.array([[0.4, 0.0], [0.6, 0.1], [0.0, 1.1], [0.5, 0.0]])
NEAREST = [0, 1, 2, 0]


@pytest.fixture(scope="module")
def example():
  return whole_image_example(SIZE)


def _init(model, example):
  return jax.jit(model.init)(
      jax.random.key(0, impl="rbg"), jnp.zeros((4, SIZE, SIZE, 3)),
      Cameras(example["src_intrinsics"], example["src_c2w"], SIZE, SIZE),
      Cameras(example["tgt_intrinsics"], example["tgt_c2w"], SIZE, SIZE))["params"]


def _loss(model, params, ex, loss_cfg):
  fn = lambda p: dc_loss.example_loss(model, p, ex, jax.random.key(4), loss_cfg, (SIZE, SIZE))
  return jax.jit(fn)(params)


def test_quantisation_picks_the_nearest_codeword_and_the_loss_formulas():
  out = dc.vector_quantise(Z, CODEBOOK)
  np.testing.assert_array_equal(out["indices"], NEAREST)
  np.testing.assert_allclose(out["quantised"], CODEBOOK[jnp.array(NEAREST)], atol=1e-7)
  # Squared distances to the chosen codewords: 0.16, 0.17, 0.81, 0.25, over 4 x 2
  # elements; both losses have this value, they differ only in their gradients.
  expected = (0.16 + 0.17 + 0.81 + 0.25) / 8
  np.testing.assert_allclose(out["codebook"], expected, rtol=1e-6)
  np.testing.assert_allclose(out["commitment"], expected, rtol=1e-6)
  # Frequencies (1/2, 1/4, 1/4): entropy 1.5 log 2, perplexity 2^1.5.
  np.testing.assert_allclose(out["perplexity"], 2 ** 1.5, rtol=1e-6)
  # Leading axes are kept.
  grid = dc.vector_quantise(Z.reshape(2, 2, 2), CODEBOOK)
  np.testing.assert_array_equal(grid["indices"], np.reshape(NEAREST, (2, 2)))


def test_normalised_quantisation_compares_directions():
  # Unit codewords (1, 0), (0, 1), (-1, 0) from codewords of other lengths; every vector
  # goes to the codeword nearest in direction, whatever its own length.
  codebook = jnp.array([[3.0, 0.0], [0.0, 0.1], [-0.5, 0.0]])
  z = jnp.array([[0.9, 0.2], [0.01, 0.03], [-40.0, 10.0], [2.0, 2.5]])
  quantiser = dc.VectorQuantiser(3, normalise=True)
  out = quantiser.apply({"params": {"codebook": codebook}}, z)
  np.testing.assert_array_equal(out["indices"], [0, 1, 2, 1])
  unit = np.array([[1.0, 0], [0, 1], [-1, 0]])[[0, 1, 2, 1]]
  np.testing.assert_allclose(out["quantised"], unit, atol=1e-6)
  scaled = quantiser.apply({"params": {"codebook": codebook}}, 7.0 * z)
  np.testing.assert_allclose(scaled["quantised"], out["quantised"], atol=1e-6)
  zn = z / np.linalg.norm(z, axis=-1, keepdims=True)
  np.testing.assert_allclose(out["commitment"], np.mean((zn - unit) ** 2), rtol=1e-5)
  # Without normalising, the short codeword (0, 0.1), nearest the origin, takes the
  # vector (0.9, 0.2) that points along (3, 0).
  plain = dc.VectorQuantiser(3).apply({"params": {"codebook": codebook}}, z)
  assert int(plain["indices"][0]) == 1
  for key in ("vq_normalise", "vq_linear", "vq_renderer_input"):
    with pytest.raises(ValueError, match=f"{key}=True needs vq_codebook_size > 0"):
      dc.DecoupledConfig(**{key: True})


def test_straight_through_and_loss_gradients():
  w = jnp.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 1.0], [2.0, 0.0]])
  beta = 0.25
  e = CODEBOOK[jnp.array(NEAREST)]

  def f(z, codebook):
    out = dc.vector_quantise(z, codebook)
    return jnp.sum(w * out["quantised"]) + out["codebook"] + beta * out["commitment"]

  gz, gc = jax.grad(f, argnums=(0, 1))(Z, CODEBOOK)
  # The encoder: the gradient w.r.t. the quantised output, passed straight through, plus
  # the commitment term's 2 beta (z - e) / N; the codebook loss sends z nothing.
  np.testing.assert_allclose(gz, w + beta * 2 * (Z - e) / Z.size, rtol=1e-6, atol=1e-7)
  # The codebook: only the codebook loss, 2 (e - z) / N summed over the vectors using
  # each codeword (none from the quantised output or the commitment).
  expected = np.zeros((3, 2), np.float32)
  for i, k in enumerate(NEAREST):
    expected[k] += 2 * (np.asarray(e[i]) - np.asarray(Z[i])) / Z.size
  np.testing.assert_allclose(gc, expected, rtol=1e-6, atol=1e-7)


def test_linear_codewords_are_the_fixed_codebook_times_a_learned_matrix():
  basis = CODEBOOK
  projection = jnp.array([[1.0, 0.5], [0.0, 2.0]])
  quantiser = dc.VectorQuantiser(3, linear=True)

  def run(params, z=Z):
    return quantiser.apply({"params": params}, z)

  params = {"codebook": basis, "projection": projection}
  out = run(params)
  codewords = np.asarray(basis) @ np.asarray(projection)  # (0, 0), (1, 0.5), (0, 4)
  expected = dc.vector_quantise(Z, jnp.asarray(codewords))
  for key in ("indices", "quantised", "codebook", "commitment", "perplexity"):
    np.testing.assert_allclose(out[key], expected[key], rtol=1e-6, atol=1e-7)
  # The codebook loss trains only the projection: d/dP sum_i |z_i - b_k P|^2 / N =
  # sum_i 2 b_k^T (b_k P - z_i) / N over the vectors i and their codewords k.
  grads = jax.grad(lambda p: run(p)["codebook"])(params)
  np.testing.assert_array_equal(grads["codebook"], np.zeros((3, 2)))
  idx = np.asarray(expected["indices"])
  b, z = np.asarray(basis)[idx], np.asarray(Z)
  want = sum(2 * np.outer(b[i], codewords[idx[i]] - z[i]) for i in range(4)) / Z.size
  np.testing.assert_allclose(grads["projection"], want, rtol=1e-5, atol=1e-7)
  # A codeword that no vector picks does not move with a codebook of its own, and moves
  # with a learned projection: codewords (1, 0), (0, 1), (1, 1); the vectors pick the
  # first two.
  basis = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  z = jnp.array([[0.9, 0.0], [0.0, 0.8]])
  params = {"codebook": basis, "projection": jnp.eye(2)}
  assert list(run(params, z)["indices"]) == [0, 1]
  plain = jax.grad(lambda cb: dc.vector_quantise(z, cb)["codebook"])(basis)
  assert np.all(np.asarray(plain[2]) == 0)
  step = jax.grad(lambda p: run(p, z)["codebook"])(params)
  moved = np.asarray(basis)[2] @ np.asarray(jnp.eye(2) - 0.1 * step["projection"])
  np.testing.assert_allclose(moved, [1.0 - 0.1 * 0.05, 1.0 - 0.1 * 0.1], rtol=1e-5)


def test_renderer_input_is_made_of_codewords(example):
  cfg = dict(TINY, vq_codebook_size=8)
  model = dc.DecoupledNeRF(dc.DecoupledConfig(**cfg, vq_renderer_input=True))
  params = _init(model, example)
  assert params["vq_renderer"]["codebook"].shape == (8, TINY["width"])
  sources = (jnp.asarray(example["src_images"], jnp.float32) / 255.0,
             Cameras(example["src_intrinsics"], example["src_c2w"], SIZE, SIZE),
             Cameras(example["tgt_intrinsics"], example["tgt_c2w"], SIZE, SIZE))
  out, state = jax.jit(functools.partial(model.apply, capture_intermediates=True))(
      {"params": params}, *sources)
  idx = out["vq_renderer_indices"]
  assert idx.shape == (SIZE // 8, SIZE // 8)
  # The renderer's output is that of the chosen codewords.
  codewords = params["vq_renderer"]["codebook"][idx]
  layers = jax.jit(dc.LayeredRenderer(TINY["num_layers"], TINY["render_width"]).apply)(
      {"params": params["renderer"]}, codewords)
  np.testing.assert_allclose(out["layers"], layers, atol=1e-5)
  # The losses are the sums of the two quantisers'.
  rebuilt = state["intermediates"]["attention"]["__call__"][0]
  second = dc.vector_quantise(rebuilt, params["vq_renderer"]["codebook"])
  np.testing.assert_array_equal(second["indices"], idx)
  base = dc.DecoupledNeRF(dc.DecoupledConfig(**cfg))
  first = jax.jit(base.apply)(
      {"params": {k: v for k, v in params.items() if k != "vq_renderer"}}, *sources)
  for key in ("codebook", "commitment"):
    np.testing.assert_allclose(out[f"vq_{key}"], first[f"vq_{key}"] + second[key], rtol=1e-5)
  np.testing.assert_allclose(out["vq_renderer_perplexity"], second["perplexity"], rtol=1e-6)


def test_codebook_usage_term_on_hand_computed_cases():
  log = math.log
  # Equal distances: every assignment uniform over K = 4, both entropies log 4.
  np.testing.assert_allclose(dc_loss.codebook_usage_loss(jnp.ones((5, 4)), 0.1), 0.0,
                             atol=1e-6)
  # Three vectors each certain of a different codeword: 0 - log 3.
  certain = 100.0 * (1.0 - jnp.eye(3, 4))
  np.testing.assert_allclose(dc_loss.codebook_usage_loss(certain, 0.1), -log(3), rtol=1e-6)
  # All certain of the same codeword (the collapse): 0 - 0.
  same = jnp.tile(100.0 * (1.0 - jnp.eye(1, 4)), (3, 1))
  np.testing.assert_allclose(dc_loss.codebook_usage_loss(same, 0.1), 0.0, atol=1e-6)
  # One vector, distances (0, log 3) at temperature 1: p = (3/4, 1/4); its own entropy
  # and the mean's are equal, so 0; two such vectors mirrored: H(p) - log 2.
  d = jnp.array([[0.0, log(3)], [log(3), 0.0]])
  h = -(0.75 * log(0.75) + 0.25 * log(0.25))
  np.testing.assert_allclose(dc_loss.codebook_usage_loss(d[:1], 1.0), 0.0, atol=1e-6)
  np.testing.assert_allclose(dc_loss.codebook_usage_loss(d, 1.0), h - log(2), rtol=1e-6)
  # Leading axes are flattened; the temperature divides the distances.
  np.testing.assert_allclose(dc_loss.codebook_usage_loss(d.reshape(1, 2, 2) * 0.5, 0.5),
                             h - log(2), rtol=1e-6)


def test_off_is_the_base_model(example):
  base = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY))
  params = _init(base, example)
  assert "vq" not in params
  base_loss, base_terms = _loss(base, params, example, BASE)
  off_loss, off_terms = _loss(base, params, example, VQ)  # beta set, no codebook: off
  assert float(off_loss) == float(base_loss) and set(off_terms) == set(base_terms)
  # On, the codebook is the only new parameter; the others are initialised the same.
  on = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY, vq_codebook_size=16))
  on_params = jax.eval_shape(lambda: _init(on, example))
  assert on_params["vq"]["codebook"].shape == (16, TINY["enc_width"])
  assert set(on_params) == set(params) | {"vq"}


@pytest.mark.parametrize("options,usage", [
    ({}, 0.0), ({"vq_normalise": True}, 0.5),
    ({"vq_linear": True, "vq_renderer_input": True, "vq_normalise": True}, 0.0)])
def test_short_fit_lowers_the_loss(example, options, usage):
  model = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY, vq_codebook_size=16, **options))
  loss_cfg = ml_collections.ConfigDict(dict(VQ.to_dict(), vq_entropy_weight=usage))
  params = _init(model, example)
  opt = optax.adam(3e-3)

  @jax.jit
  def step(p, state):
    (loss, terms), g = jax.value_and_grad(
        lambda p: dc_loss.example_loss(model, p, example, jax.random.key(0), loss_cfg,
                                       (SIZE, SIZE)), has_aux=True)(p)
    updates, state = opt.update(g, state, p)
    return optax.apply_updates(p, updates), state, loss, terms

  state = opt.init(params)
  losses = []
  for i in range(30):
    params, state, loss, terms = step(params, state)
    losses.append(float(loss))
    if i == 0:  # the loss is the image term plus codebook + beta x commitment + usage
      np.testing.assert_allclose(
          losses[0], 1 - float(terms["ssim"]) + float(terms["vq_codebook"])
          + 0.25 * float(terms["vq_commitment"]) + usage * float(terms.get("vq_entropy", 0)),
          rtol=1e-6)
      assert ("vq_entropy" in terms) == (usage > 0)
      first = terms
      assert float(terms["vq_codebook"]) > 0 and 1 <= float(terms["vq_perplexity"]) <= 16
      assert ("vq_renderer_perplexity" in terms) == bool(options.get("vq_renderer_input"))
  assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
  assert all(math.isfinite(x) for x in losses)
  if usage:  # the usage term is trained down and the codebook's use up
    assert float(terms["vq_entropy"]) < float(first["vq_entropy"]) - 0.1
    assert float(terms["vq_perplexity"]) > float(first["vq_perplexity"])


@pytest.mark.parametrize("section,key,value,message", [
    ("model", "vq_codebook_size", -1, "model.vq_codebook_size=-1: must be >= 0"),
    ("loss", "vq_commitment", -0.1, "loss.vq_commitment=-0.1: must be >= 0"),
    ("model", "vq_linear", True, "model.vq_linear=True needs vq_codebook_size > 0"),
    ("loss", "vq_entropy_weight", -1.0, "loss.vq_entropy_weight=-1.0: must be >= 0"),
    ("loss", "vq_entropy_temperature", 0.0, "loss.vq_entropy_temperature=0.0: must be > 0"),
])
def test_bad_value_names_the_key(tmp_path, section, key, value, message):
  c = small_config()
  c[section][key] = value
  with pytest.raises(UsageError, match="^" + message) as err:
    train_main.prepare(c, str(tmp_path / "run"))
  assert "\n" not in str(err.value)


def test_runs_stored_before_the_option_resume_with_it_off():
  stored = small_config().to_dict()
  for key in ("vq_codebook_size", "vq_linear", "vq_renderer_input"):
    del stored["model"][key]
  for key in ("vq_commitment", "vq_entropy_weight", "vq_entropy_temperature"):
    del stored["loss"][key]
  assert config_checks.config_changes(stored, small_config()) == []
  on = small_config()
  on.model.vq_codebook_size = 64
  assert config_checks.config_changes(stored, on) == [
      "loss.vq_commitment: (absent) -> 0.25", "model.vq_codebook_size: (absent) -> 64"]


def test_trains_and_resumes_through_the_shared_loop(tmp_path):
  workdir = tmp_path / "run"

  def config(steps, linear=True):
    c = small_config(num_steps=steps, checkpoint_every=2, image_every=0)
    c.model.update(vq_codebook_size=8, vq_linear=linear, vq_renderer_input=True)
    c.eval.at_end = False
    return c

  first = train_main.train(config(2), str(workdir))
  resumed = train_main.train(config(3), str(workdir))
  assert first["step"] == 2 and resumed["step"] == 3
  assert resumed["train"]["skipped_updates"] == 0
  logged = [json.loads(line) for line in (workdir / "train_metrics.jsonl").open()]
  assert [r["step"] for r in logged] == [1, 2, 3]
  for r in logged:
    assert r["vq_codebook"] > 0 and 1 <= r["vq_perplexity"] <= 8
    assert 1 <= r["vq_renderer_perplexity"] <= 8
  with pytest.raises(UsageError, match="model.vq_linear: True -> False"):
    train_main.train(config(4, linear=False), str(workdir))
