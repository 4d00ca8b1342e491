"""Shared fixtures: where the shared reference data lives, and a small float32 setup."""

import os
import pathlib
import tempfile

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")
# Several tests compile the same train step (in this process and in subprocesses, which
# inherit the environment): a persistent compilation cache compiles it once per session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="movenerf-jax-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("MOVENERF_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def reference_dir():
  if not REFERENCE.exists():
    pytest.skip(f"shared reference vectors not found at {REFERENCE}")
  return REFERENCE


@pytest.fixture(scope="session")
def decoupled_run(tmp_path_factory):
  """A 6-step Decoupling-NeRF run, then resumed to 8 steps; returns (workdir, first result,
  resumed). One run for the family's tests and the zero-shot comparison's
  (tests/models/decoupled/test_family.py, tests/tools/test_zero_shot.py)."""
  # Imported here: only the tests that use the run load the training program.
  from movenerf import train as train_main
  from tests.models.decoupled.helpers import small_config
  workdir = tmp_path_factory.mktemp("dc_run")
  first = train_main.train(small_config(), str(workdir))
  resumed = train_main.train(small_config(num_steps=8), str(workdir))
  return workdir, first, resumed


@pytest.fixture(scope="session")
def s3_server():
  """A local S3 server (moto) on 127.0.0.1 for the session; the environment points boto3,
  s3fs and subprocesses at it with dummy keys. Yields its endpoint URL."""
  from tests.s3 import LocalS3  # pylint: disable=import-outside-toplevel
  with LocalS3() as server:
    yield server


@pytest.fixture
def s3_bucket(s3_server):
  """A new, empty bucket on the local S3 server: its ``s3://`` URL."""
  return s3_server.new_bucket()
