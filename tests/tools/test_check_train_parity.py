"""Tests of movenerf.tools.check_train_parity: movenerf's train step replays the official
GNT's training steps (``gnt_train_vectors.npz``) within the stated tolerances, and the
check fails with each of two mistakes injected: Adam's epsilon 10x too large, and the
learning-rate schedule one step ahead."""

import json
import os
import pathlib
import subprocess
import sys

from movenerf.tools import check_parity, check_train_parity
from tests.conftest import REPO

EPS_ROWS = ["params_final/net_coarse:eps", "params_final/net_fine:eps"]
# Both replays compile the train step of the official network; XLA's cheaper compilation
# halves that, and the two processes share the CPU's cores.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _start(*args):
  return subprocess.Popen(
      [sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
                          XLA_FLAGS=FAST_COMPILE))


def test_replays_the_official_training_and_catches_injected_mistakes(reference_dir):
  path = str(reference_dir / "gnt_train_vectors.npz")
  script = str(pathlib.Path(__file__).with_name("train_parity_check.py"))
  offsets = _start(script, path)
  wrong_eps = _start("-m", "movenerf.tools.check_parity", "--vectors", path,
                     "--set", "optim.eps=1e-7")
  out, err = offsets.communicate(timeout=900)
  eps_out, eps_err = wrong_eps.communicate(timeout=900)
  assert offsets.returncode == 0, err
  stored, ahead = (json.loads(line) for line in out.strip().splitlines())

  assert stored["passed"], stored["text"]
  diff = stored["diffs"]
  # Well inside the tolerances (module docstring): the first step is the forward pass,
  # the first gradients float32 rounding.
  assert diff["step1/loss"] < 1e-6 and diff["step1/mse_fine"] < 1e-6
  assert diff["grads1/net_coarse"] < 2e-4 and diff["grads1/net_fine"] < 3e-4
  assert diff["params_final/net_coarse"] < 1e-2 and diff["params_final/net_fine"] < 1e-2
  assert max(diff[k] for k in EPS_ROWS) < 0.02

  # The schedule one step ahead (halving at step 2): the learning rate, the loss after
  # the change, the parameters and the render fail; the first step does not.
  assert {"step2/lr_transformer", "step3/loss", "params_final/net_coarse",
          "params_final/net_fine", "final/rgb_fine"} <= set(ahead["failures"]), ahead["text"]
  assert not any(k.startswith(("step1/", "grads1/")) for k in ahead["failures"])

  # Epsilon 1e-7: everything else within its tolerance; the step size of the weights
  # whose first gradient is near epsilon fails.
  assert wrong_eps.returncode == 1, eps_err
  assert eps_out.strip().splitlines()[-1] == (
      "FAIL: training quantities past their tolerances: " + ", ".join(EPS_ROWS))


def test_usage_errors(reference_dir, capsys):
  train = str(reference_dir / "gnt_train_vectors.npz")
  assert check_parity.main(["--vectors", train, "--set", "optim.epsilon=1e-7"]) == 2
  assert "the config has no key 'optim.epsilon'" in capsys.readouterr().err
  forward = str(reference_dir / "gnt_ref_vectors.npz")
  assert check_parity.main(["--vectors", forward, "--schedule_offset", "1"]) == 2
  assert "apply to training files only" in capsys.readouterr().err


def test_the_sidecar_names_the_run(reference_dir):
  """Sizes, sampling, learning rates, decay and Adam's settings come from the sidecar."""
  arrays, meta = check_train_parity.load(str(reference_dir / "gnt_train_vectors.npz"))
  params0 = check_train_parity.network_arrays(arrays, "params0")
  c = check_train_parity.train_config(meta, params0)
  assert (c.model.depth, c.model.width, c.model.single_net, c.model.num_samples,
          c.model.num_importance, c.model.inverse_depth, c.model.deterministic_sampling,
          c.model.dropout) == (4, 64, False, 16, 16, False, True, 0.0)
  assert (c.optim.lr_transformer, c.optim.lr_feature, c.optim.decay_steps,
          c.optim.decay_rate, c.optim.eps, c.optim.b1) == (5e-4, 1e-3, 2, 0.5, 1e-8, 0.9)
  other = dict(meta, trans_depth=2, n_samples=8, n_importance=0, inv_uniform=True,
               lr_gnt=1e-4, lr_feature=2e-4, decay_steps=5, decay=0.1, eps=1e-6,
               betas=[0.8, 0.99])
  c = check_train_parity.train_config(other, params0)
  assert (c.model.depth, c.model.num_samples, c.model.num_importance,
          c.model.inverse_depth) == (2, 8, 0, True)
  assert (c.optim.lr_transformer, c.optim.lr_feature, c.optim.decay_steps,
          c.optim.decay_rate, c.optim.eps, c.optim.b1, c.optim.b2) == (
              1e-4, 2e-4, 5, 0.1, 1e-6, 0.8, 0.99)
