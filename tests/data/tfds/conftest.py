"""Fixtures of the TFDS build tests."""

import pytest

from movenerf.data.tfds import build
from tests.data.tfds import helpers


@pytest.fixture(scope="session")
def built(tmp_path_factory):
  """The real pack built once per session: format -> dataset folder (test_builders.py checks
  it against the readers, test_build.py its summary)."""
  if not helpers.REAL.is_dir():
    pytest.skip(f"real data pack not found at {helpers.REAL}")
  out = tmp_path_factory.mktemp("tfds")
  return {fmt: build.build(fmt, out, helpers.REAL / sub) for fmt, sub in helpers.SUBDIR.items()}
