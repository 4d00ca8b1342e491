"""Decoupling-NeRF's vector-quantised encoder features (``model.vq_codebook_size``,
``loss.vq_commitment``): nearest codewords, the straight-through gradient, the codebook
and commitment losses, off is the base model, a short fit lowers the loss, bad values
name their key, and runs stored before the option resume."""

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
  with pytest.raises(ValueError, match="vq_normalise=True needs vq_codebook_size > 0"):
    dc.DecoupledConfig(vq_normalise=True)


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


@pytest.mark.parametrize("normalise", [False, True])
def test_short_fit_lowers_the_loss(example, normalise):
  model = dc.DecoupledNeRF(dc.DecoupledConfig(**TINY, vq_codebook_size=16,
                                              vq_normalise=normalise))
  params = _init(model, example)
  opt = optax.adam(3e-3)

  @jax.jit
  def step(p, state):
    (loss, terms), g = jax.value_and_grad(
        lambda p: dc_loss.example_loss(model, p, example, jax.random.key(0), VQ,
                                       (SIZE, SIZE)), has_aux=True)(p)
    updates, state = opt.update(g, state, p)
    return optax.apply_updates(p, updates), state, loss, terms

  state = opt.init(params)
  losses = []
  for i in range(30):
    params, state, loss, terms = step(params, state)
    losses.append(float(loss))
    if i == 0:  # the loss is the image term plus codebook + beta x commitment
      np.testing.assert_allclose(
          losses[0], 1 - float(terms["ssim"]) + float(terms["vq_codebook"])
          + 0.25 * float(terms["vq_commitment"]), rtol=1e-6)
      assert float(terms["vq_codebook"]) > 0 and 1 <= float(terms["vq_perplexity"]) <= 16
  assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
  assert all(math.isfinite(x) for x in losses)


@pytest.mark.parametrize("section,key,value,message", [
    ("model", "vq_codebook_size", -1, "model.vq_codebook_size=-1: must be >= 0"),
    ("loss", "vq_commitment", -0.1, "loss.vq_commitment=-0.1: must be >= 0"),
])
def test_bad_value_names_the_key(tmp_path, section, key, value, message):
  c = small_config()
  c[section][key] = value
  with pytest.raises(UsageError, match="^" + message) as err:
    train_main.prepare(c, str(tmp_path / "run"))
  assert "\n" not in str(err.value)


def test_runs_stored_before_the_option_resume_with_it_off():
  stored = small_config().to_dict()
  del stored["model"]["vq_codebook_size"]
  del stored["loss"]["vq_commitment"]
  assert config_checks.config_changes(stored, small_config()) == []
  on = small_config()
  on.model.vq_codebook_size = 64
  assert config_checks.config_changes(stored, on) == [
      "loss.vq_commitment: (absent) -> 0.25", "model.vq_codebook_size: (absent) -> 64"]
