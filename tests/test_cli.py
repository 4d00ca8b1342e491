"""The programs' failures (movenerf.cli): one line on standard error naming the flag,
key or path, exit status 2 for usage errors, nothing created; ``--verbose`` adds the
traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _train(tmp_path, *args, devices=1):
  env = dict(os.environ, PYTHONPATH=str(REPO),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run([sys.executable, "-m", "movenerf.train", *args], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, devices, expected", [
    (("--config", "gnt:tiny", "--config.model.widht=3"), 1,
     "--config.model.widht: the config has no key 'widht'; did you mean 'width'?"),
    (("--config", "missing/nope.py:tiny"), 1, "--config: no config file missing/nope.py"),
    (("--config", "gnt_move:tiny", "--config.data.example.rays_per_example=0"), 1,
     "data.example.rays_per_example=0: must be >= 1"),
    (("--config", "gnt_move:tiny", "--config.model.dtype=float16"), 1,
     "model.dtype='float16': choose from 'float32', 'bfloat16'"),
    (("--config", "gnt_move:tiny", "--config.data.global_batch=3"), 2,
     "data.global_batch=3: must be a multiple of the 2 data-parallel devices"),
])
def test_usage_errors_are_one_line_before_anything_is_written(tmp_path, args, devices,
                                                              expected):
  out = _train(tmp_path, *args, "--workdir", "run", devices=devices)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert lines == [f"movenerf.train: error: {expected}"] or (
      len(lines) == 1 and lines[0].startswith(f"movenerf.train: error: {expected}")), lines
  assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


def test_unusable_workdirs_are_named(tmp_path):
  (tmp_path / "afile").write_text("x")
  out = _train(tmp_path, "--config", "gnt_move:tiny", "--workdir", "afile")
  assert out.returncode == 2
  assert out.stderr.strip() == (f"movenerf.train: error: --workdir {tmp_path / 'afile'}: is "
                                "a file, give a folder")
  # A folder that cannot be created (even by root): /proc refuses new entries.
  out = _train(tmp_path, "--config", "gnt_move:tiny", "--workdir", "/proc/movenerf/run",
               "--verbose")
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith(
      "movenerf.train: error: --workdir cannot write to /proc/movenerf/run:")
  assert "Traceback" in out.stderr  # --verbose keeps it
