"""Shared fixtures: where the shared reference data lives, and a small float32 setup."""

import os
import pathlib

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("MOVENERF_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def reference_dir():
  if not REFERENCE.exists():
    pytest.skip(f"shared reference vectors not found at {REFERENCE}")
  return REFERENCE
