"""The MoE layer used on its own (README "Use as a library"): init, then apply with the
'moe' collection mutable; the diversity loss is that call's, checked against NumPy."""

import pathlib
import re

import jax
import numpy as np
import pytest

from movenerf.moe import MoEConfig, MoVEFeedForward, total_diversity_loss

TOKENS, WIDTH = 48, 16
README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _numpy_diversity(probs: np.ndarray, top_k: int) -> float:
  """cv^2(importance) + cv^2(load) of noiseless top-k routing, from the probabilities."""
  top = np.argsort(-probs, axis=1)[:, :top_k]
  gates = np.zeros_like(probs)
  np.put_along_axis(gates, top, np.take_along_axis(probs, top, axis=1), axis=1)
  importance = gates.sum(0)
  load = (gates > 0).sum(0).astype(np.float64)
  cv2 = lambda v: np.var(v, ddof=1) / (np.mean(v) ** 2 + 1e-10)
  return float(cv2(importance) + cv2(load))


@pytest.fixture(scope="module")
def x():
  return jax.random.normal(jax.random.key(0), (TOKENS, WIDTH))


def test_diversity_loss_is_the_calls_own(x):
  # No routing noise, so that the load is the count of tokens per expert (NumPy below).
  layer = MoVEFeedForward(MoEConfig(num_experts=4, top_k=2, noise_std=0.0), dropout=0.1)
  variables = layer.init(jax.random.key(1), x)
  assert set(variables) == {"params"}  # init sows no auxiliaries
  rngs = {"dropout": jax.random.key(2)}
  y, aux = layer.apply(variables, x, deterministic=False, rngs=rngs, mutable=["moe"])
  assert y.shape == x.shape
  (loss,) = aux["moe"]["diversity_loss"]  # one call, one entry
  probs = np.asarray(aux["moe"]["probs"][0], np.float64)
  assert float(loss) > 0
  np.testing.assert_allclose(float(loss), _numpy_diversity(probs, 2), rtol=1e-5)
  np.testing.assert_allclose(float(total_diversity_loss(aux["moe"])), float(loss))

  # The same with a stale 'moe' collection beside the parameters (e.g. init's variables
  # of another version, or a previous call's auxiliaries merged in).
  stale = {**variables, **aux}
  _, again = layer.apply(stale, x, deterministic=False, rngs=rngs, mutable=["moe"])
  assert len(again["moe"]["diversity_loss"]) == 1
  np.testing.assert_allclose(float(total_diversity_loss(again["moe"])), float(loss))


def test_router_noise_needs_the_router_rng(x):
  layer = MoVEFeedForward(MoEConfig(num_experts=4, top_k=2), dropout=0.0)
  variables = layer.init(jax.random.key(1), x)
  rngs = {"router": jax.random.key(3)}
  _, a = layer.apply(variables, x, deterministic=False, rngs=rngs, mutable=["moe"])
  _, b = layer.apply({**variables, **a}, x, deterministic=False, rngs=rngs, mutable=["moe"])
  np.testing.assert_array_equal(np.asarray(total_diversity_loss(a["moe"])),
                                np.asarray(total_diversity_loss(b["moe"])))
  with pytest.raises(Exception, match="router"):
    layer.apply(variables, x, deterministic=False, mutable=["moe"])
  # Evaluation needs no RNG and has no gating loss.
  _, ev = layer.apply(variables, x, mutable=["moe"])
  assert float(total_diversity_loss(ev["moe"])) == 0.0


def test_readme_example_runs():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  (example,) = [b for b in blocks if "MoVEFeedForward(" in b]
  scope = {}
  exec(compile(example, str(README), "exec"), scope)  # pylint: disable=exec-used
  assert scope["y"].shape == scope["x"].shape
  assert len(scope["aux"]["moe"]["diversity_loss"]) == 1
  assert float(scope["diversity"]) > 0
