"""Tests of movenerf.tools.zero_shot: the comparison table of runs against the
nearest-source-view baseline, on a short Decoupling-NeRF run."""

import pytest

from movenerf.tools import zero_shot

# One worker runs every test of the shared decoupled_run fixture (conftest.py).
pytestmark = pytest.mark.xdist_group("decoupled_run")


@pytest.fixture
def trained(decoupled_run):
  """A 6-step Decoupling-NeRF run, then resumed to 8 steps; returns (workdir, first
  result, resumed). One run per session (tests/conftest.py), shared with
  tests/models/decoupled/test_family.py."""
  return decoupled_run


def test_zero_shot_table(trained, tmp_path):
  workdir, _, _ = trained
  results = zero_shot.compare([("A", str(workdir)), ("B", str(workdir))], str(tmp_path),
                              seen_scenes=1, verbose=False)
  assert list(results) == [zero_shot.BASELINE, "A", "B"]
  # The same checkpoint twice scores identically; the baseline differs from both.
  for group in ("unseen", "seen"):
    assert results["A"][group] == results["B"][group]
    assert results["A"][group]["num_views"] == 1
    assert results[zero_shot.BASELINE][group]["psnr"] != results["A"][group]["psnr"]
    assert 0 < results["A"][group]["lpips_vgg"] < 1
  assert results["A"]["budget"]["updates"] == 8
  table = (tmp_path / "zero_shot.md").read_text()
  assert "| nearest source view |" in table and "| A | 8 |" in table
  assert "| unseen PSNR | unseen SSIM | unseen LPIPS-vgg | seen PSNR |" in table
  sheets = list((tmp_path / "sheets").glob("*.png"))
  assert len(sheets) == 2  # one unseen view, one seen view
