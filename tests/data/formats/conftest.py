"""Fixtures of the reader tests."""

import pytest

from tests.data.formats import helpers


@pytest.fixture(scope="module")
def real():
  if not helpers.REAL.is_dir():
    pytest.skip(f"real data pack not found at {helpers.REAL}")
  return helpers.REAL
