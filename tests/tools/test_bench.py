"""The benchmark's figures are consistent with each other and its JSON has the keys
other tools read (speed itself is measured by running it, never by a test)."""

import json

import pytest

from movenerf.tools import bench


def test_bench_json_figures_are_consistent(tmp_path, capsys):
  out = tmp_path / "bench.json"
  assert bench.main(["--model", "both", "--depth", "2", "--width", "16", "--feature-width",
                     "8", "--samples", "8", "--views", "2", "--size", "16", "--rays", "32",
                     "--sub-chunk", "8", "--train-sub-chunk", "16", "--repeats", "2",
                     "--json", str(out)]) == 0
  r = json.loads(out.read_text())
  text = capsys.readouterr().out
  assert "training" in text and "device peak" in text and "GNT-MoVE costs" in text
  for key in ("infer_rays_per_s", "train_rays_per_s", "train_step_s_median",
              "peak_gflops_per_s", "flops_per_ray", "peak_host_rss_mb", "compile_s",
              "train_compile_s", "infer_first_step_s", "train_first_step_s",
              "encode_s_median"):
    assert r[key] > 0, key
  # The running peak leaves out the compilations' memory, the other figure keeps it.
  assert 0 < r["peak_host_rss_mb"] <= r["peak_host_rss_with_compile_mb"]
  # Two programs compiled at a time: the run's compilations took at least the longest.
  assert r["compile_workers"] == 2
  for model in (r, r["move"]):
    assert model["case_compile_wall_s"] >= max(model["compile_s"], model["train_compile_s"])
  assert r["model"] == "GNT" and r["move"]["model"] == "GNT-MoVE"
  assert r["train_rays_per_s"] == pytest.approx(32 / r["train_step_s_median"])
  assert r["infer_rays_per_s"] == pytest.approx(32 / r["infer_step_s_median"])
  assert r["train_fraction_of_peak"] == pytest.approx(
      r["train_gflops_per_s"] / r["peak_gflops_per_s"])
  # MoVE does more work per ray than dense GNT (its experts and router).
  assert r["move"]["flops_per_ray"] > r["flops_per_ray"]
  assert r["move_cost_ratio"]["train_rays_per_s"] == pytest.approx(
      r["move"]["train_step_s_median"] / r["train_step_s_median"])
  # The suite's table row of each model carries its own figures.
  table = bench.suite_table([{k: v for k, v in r.items() if k != "move"}, r["move"]])
  rows = table.splitlines()[2:]
  assert len(rows) == 2 and rows[1].startswith("| GNT-MoVE | float32 | 32 | ")
  assert f"{r['train_compile_s']:.0f} s" in rows[0]


def test_flops_of_the_lowered_program_match_the_optimised_one():
  """The benchmark counts FLOPs before XLA's optimisations (no compile needed)."""
  import jax
  import numpy as np

  from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
  from movenerf.geometry.rays import image_rays

  config = GNTConfig(depth=2, width=16, feature_width=8, num_samples=8)
  model = GNTModel(config)
  variables = init_variables(model, jax.random.PRNGKey(0))
  target, sources, near, far = bench._scene(2, 16)
  rays = image_rays(target)[np.arange(32)]
  featmaps = bench.encode_sources(model, variables, sources.images)
  lowered = bench.render_chunk.lower(model, variables, rays, target, sources, featmaps, near,
                                     far, 0)
  # 0.15% apart at the reference configuration, 1% for this tiny model.
  assert bench._flops(lowered) == pytest.approx(bench._flops(lowered.compile()), rel=0.02)
