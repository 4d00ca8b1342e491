"""Tests of movenerf.tools.parity_report: which rows decide the verdict."""

from movenerf.tools.parity_report import Comparison, ParityReport


def test_rows_with_their_own_tolerance_decide_with_the_final_keys():
  rows = [Comparison("outputs/rgb", 5e-5), Comparison("inter/z_vals", 1.0),
          Comparison("step1/loss", 2e-6, "relative", tolerance=1e-5)]
  assert ParityReport(rows, 1e-4).passed  # inter/z_vals is for information
  rows.append(Comparison("params_final/net_coarse", float("nan"), tolerance=1e-2))
  report = ParityReport(rows, 1e-4)
  assert not report.passed and report.failures == ["params_final/net_coarse"]
  assert report.format().splitlines()[-1] == (
      "FAIL: final colours past their tolerances: params_final/net_coarse")
  assert not ParityReport([Comparison("inter/z_vals", 0.0)], 1e-4).passed  # nothing decides
