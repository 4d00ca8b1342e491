"""Tests of movenerf.training.step: the jitted train step on a (data, expert) mesh of 8
simulated CPU devices gives the one-device result.

The check runs in a subprocess (sharded_train_check.py, beside this file) because the
device count is fixed when JAX starts."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def test_eight_devices_match_one():
  """GNT on (8 data) and GNT-MoVE on (4 data x 2 expert) vs one device, 2 steps."""
  env = dict(os.environ, PYTHONPATH=str(REPO),
             XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, str(HERE / "sharded_train_check.py")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "OK" in out.stdout
