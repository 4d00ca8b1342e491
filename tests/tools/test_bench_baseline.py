"""``bench --baseline official``: the official harness's calls interleave with movenerf's
runs, the medians and ratios follow from the step times, and a missing harness or
PyTorch is one line and a skip (a fake harness stands in for the official code)."""

import json
import os
import sys
import textwrap

import pytest

from movenerf.tools import bench, official_baseline

TINY = ["--depth", "2", "--width", "16", "--feature-width", "8", "--samples", "8",
        "--views", "2", "--size", "16", "--rays", "32", "--sub-chunk", "8",
        "--train-sub-chunk", "16"]
TINY_REFERENCE = {"depth": 2, "width": 16, "feature_width": 8, "views": 2, "size": 16,
                  "samples": 8, "importance": 0, "dtype": "float32"}

# Step times the fake harness reports, per call in order: infer, train, infer, train.
FAKE_TIMES = {"infer": [[1.0, 4.0], [2.0, 3.0]], "train": [[8.0, 2.0], [4.0, 16.0]]}


def _fake_harness(tmp_path):
  """A harness that logs its calls and prints FAKE_TIMES as RESULT lines."""
  log = tmp_path / "calls.jsonl"
  script = tmp_path / "fake_harness.py"
  script.write_text(textwrap.dedent(f"""
      import argparse, json, os
      ap = argparse.ArgumentParser()
      ap.add_argument("--phase"); ap.add_argument("--n-rays", type=int)
      ap.add_argument("--reps", type=int); ap.add_argument("--warmup", type=int)
      o = ap.parse_args()
      log = {str(log)!r}
      calls = open(log).read().splitlines() if os.path.exists(log) else []
      index = sum(json.loads(c)["phase"] == o.phase for c in calls)
      with open(log, "a") as f:
        f.write(json.dumps({{"phase": o.phase, "n_rays": o.n_rays, "reps": o.reps,
                            "warmup": o.warmup, "threads": os.environ["OMP_NUM_THREADS"],
                            "cwd": os.getcwd()}}) + "\\n")
      times = {FAKE_TIMES!r}[o.phase][index]
      print("some chatter")
      print("RESULT " + json.dumps({{"phase": o.phase, "n_rays": o.n_rays, "times_s": times,
                                    "rays_per_s": o.n_rays / sorted(times)[len(times) // 2]}}))
  """))
  return script, log


def test_summarize_medians_spreads_and_ratios():
  rounds = [{"movenerf": {"infer": [0.5, 0.25], "train": [1.0]},
             "official": {"infer": [4.0], "train": [8.0, 10.0]}},
            {"movenerf": {"infer": [1.0], "train": [2.0]},
             "official": {"infer": [2.0], "train": [6.0]}}]
  s = official_baseline.summarize(rounds, {"infer": 100, "train": 200})
  infer, train = s["infer"], s["train"]
  assert infer["movenerf"]["rays_per_s"] == [200.0, 400.0, 100.0]
  assert infer["movenerf"]["median_rays_per_s"] == 200.0  # 100 rays / median 0.5 s
  assert infer["movenerf"]["min_rays_per_s"] == 100.0
  assert infer["movenerf"]["max_rays_per_s"] == 400.0
  assert infer["official"]["median_rays_per_s"] == pytest.approx(100 / 3.0)  # median 3 s
  assert infer["ratio"] == pytest.approx(200 / (100 / 3.0))  # 6x
  assert infer["ratio_min"] == pytest.approx(100 / 50)  # slowest mine, fastest theirs
  assert infer["ratio_max"] == pytest.approx(400 / 25)
  assert train["movenerf"]["median_rays_per_s"] == pytest.approx(200 / 1.5)
  assert train["official"]["median_rays_per_s"] == 25.0  # 200 rays / 8 s
  assert train["ratio"] == pytest.approx((200 / 1.5) / 25.0)
  assert official_baseline.config_mismatch(
      {"depth": 8, "width": 32, "dtype": "bfloat16"}) == ["width 32 != 64",
                                                          "dtype bfloat16 != float32"]


def test_bench_runs_the_official_harness_interleaved(tmp_path, capsys, monkeypatch):
  script, log = _fake_harness(tmp_path)
  monkeypatch.setattr(official_baseline, "REFERENCE", TINY_REFERENCE)
  # The fake needs no PyTorch (the project's CI has none).
  monkeypatch.setattr(official_baseline.OfficialHarness, "check",
                      lambda self: setattr(self, "torch_version", "0.0-fake"))
  out = tmp_path / "bench.json"
  assert bench.main(["--model", "gnt", *TINY, "--repeats", "2", "--train-repeats", "1",
                     "--baseline", "official", "--baseline-python", sys.executable,
                     "--baseline-harness", str(script), "--baseline-rounds", "2",
                     "--baseline-repeats", "2", "--baseline-warmup", "3",
                     "--json", str(out)]) == 0
  text = capsys.readouterr().out
  r = json.loads(out.read_text())
  b = r["baseline"]
  assert b["order"] == ["movenerf infer", "official infer", "movenerf train",
                        "official train"] * 2
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  assert [c["phase"] for c in calls] == ["infer", "train"] * 2
  threads = official_baseline.thread_count()
  for c in calls:
    assert (c["n_rays"], c["reps"], c["warmup"], c["threads"]) == (32, 2, 3, str(threads))
    assert c["cwd"] == str(tmp_path)
  assert b["threads"] == threads and b["rounds"] == 2
  assert b["torch_version"] == "0.0-fake" and "PyTorch 0.0-fake, " in text
  assert b["cpu_model"] == official_baseline.cpu_model() and b["date"].startswith("20")
  # The official figures: every step of every round.
  infer, train = b["infer"], b["train"]
  assert infer["official"]["rays_per_s"] == [32.0, 8.0, 16.0, 32 / 3.0]
  assert infer["official"]["median_rays_per_s"] == pytest.approx(32 / 2.5)
  assert (infer["official"]["min_rays_per_s"], infer["official"]["max_rays_per_s"]) == (8, 32)
  assert train["official"]["median_rays_per_s"] == pytest.approx(32 / 6.0)
  assert train["official"]["rays_per_s"] == [4.0, 16.0, 8.0, 2.0]
  # movenerf's: --repeats per round (and --train-repeats), the same as its main figures.
  assert infer["movenerf"]["steps"] == r["repeats"] == 4
  assert train["movenerf"]["steps"] == r["train_repeats"] == 2
  assert infer["movenerf"]["median_rays_per_s"] == pytest.approx(r["infer_rays_per_s"])
  assert train["movenerf"]["median_rays_per_s"] == pytest.approx(r["train_rays_per_s"])
  assert [len(p["movenerf"]["infer"]) for p in b["per_round"]] == [2, 2]
  assert infer["ratio"] == pytest.approx(r["infer_rays_per_s"] / (32 / 2.5))
  assert train["ratio"] == pytest.approx(r["train_rays_per_s"] / (32 / 6.0))
  # The same model's FLOPs at each side's rate, over the run's matmul peak.
  assert train["official"]["fraction_of_peak"] == pytest.approx(
      3 * r["flops_per_ray"] * (32 / 6.0) / (r["peak_gflops_per_s"] * 1e9))
  assert infer["movenerf"]["fraction_of_peak"] == pytest.approx(r["infer_fraction_of_peak"])
  assert train["movenerf"]["fraction_of_peak"] == pytest.approx(r["train_fraction_of_peak"])
  assert train["ratio_max"] == pytest.approx(train["movenerf"]["max_rays_per_s"] / 2.0)
  assert f"{infer['ratio']:.2f}x the official rays/s" in text
  assert f"{train['ratio']:.2f}x the official rays/s" in text
  assert "skipped" not in text


def test_bench_skips_the_baseline_without_harness_or_torch(tmp_path, capsys, monkeypatch):
  out = tmp_path / "bench.json"
  assert bench.main(["--model", "gnt", *TINY, "--no-train", "--repeats", "1",
                     "--baseline", "official", "--baseline-harness",
                     str(tmp_path / "missing.py"), "--json", str(out)]) == 0
  text = capsys.readouterr().out
  skips = [line for line in text.splitlines() if line.startswith("baseline official")]
  assert skips == [f"baseline official: skipped: no harness at {tmp_path / 'missing.py'} "
                   f"({official_baseline.SETUP_HINT})"]
  r = json.loads(out.read_text())
  assert "baseline" not in r and r["infer_rays_per_s"] > 0  # the rest of the bench ran
  # A Python without torch (the project's CI): the check says so.
  harness = tmp_path / "harness.py"
  harness.write_text("")
  no_torch = tmp_path / "python"
  no_torch.write_text("#!/bin/sh\nexit 1\n")
  no_torch.chmod(0o755)
  with pytest.raises(official_baseline.Unavailable, match="cannot import torch"):
    official_baseline.OfficialHarness(str(no_torch), str(harness), 2).check()
  # Not on another configuration than the harness's.
  monkeypatch.setattr(official_baseline.OfficialHarness, "check", lambda self: "0.0-fake")
  args = bench.argparse.Namespace(baseline="official", model="gnt", baseline_python="x",
                                  baseline_harness=str(harness), baseline_repeats=1,
                                  baseline_warmup=1, **TINY_REFERENCE)
  assert bench._baseline_harness(args) is None
  assert capsys.readouterr().out.startswith(
      "baseline official: skipped: the official harness runs the reference configuration "
      "only (depth 2 != 8, ")


@pytest.mark.skipif(not (os.path.isfile(official_baseline.DEFAULT_HARNESS)
                         and os.path.isfile(official_baseline.DEFAULT_PYTHON)),
                    reason="no official harness (../shared/tools/official_gnt/setup.sh)")
def test_the_official_harness_is_found_with_torch():
  harness = official_baseline.OfficialHarness(official_baseline.DEFAULT_PYTHON,
                                              official_baseline.DEFAULT_HARNESS, 2)
  version = harness.check()
  assert version[0].isdigit() and harness.torch_version == version
  assert harness.command("train", 512)[2:] == ["--phase", "train", "--n-rays", "512",
                                               "--reps", "1", "--warmup", "1"]
