"""Decoupling-NeRF as a model family through the shared tooling: the train loop,
checkpoints and resume, evaluation and video, rendering a checkpoint, bad configs."""

import json
import os

import numpy as np
import pytest

from movenerf import train as train_main
from movenerf.data import pipeline
from movenerf.data import sources as train_data
from movenerf.evaluation import evaluate as evaluation
from movenerf.models import registry
from movenerf.tools import zero_shot
from tests.models.decoupled.helpers import SIZE, small_config

# One worker runs every test of the shared decoupled_run fixture (conftest.py).
pytestmark = pytest.mark.xdist_group("decoupled_run")


@pytest.fixture
def trained(decoupled_run):
  """A 6-step run, then resumed to 8 steps; returns (workdir, first result, resumed).
  One run per session (tests/conftest.py), shared with tests/tools/test_zero_shot.py."""
  return decoupled_run


def test_config_trains_through_the_shared_loop(trained):
  workdir, first, resumed = trained
  assert first["step"] == 6 and resumed["step"] == 8
  assert np.isfinite(first["train"]["loss"]) and 0.0 < first["train"]["loss"] < 2.0
  assert first["train"]["skipped_updates"] == 0
  # Checkpoints every 3 steps and at the end; the resumed run continued from step 6.
  assert sorted(int(p) for p in os.listdir(workdir / "checkpoints")
                if p.isdigit()) == [3, 6, 8]
  steps = [json.loads(l)["step"] for l in (workdir / "train_metrics.jsonl").read_text()
           .splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
  # The SSIM metric is logged next to the loss it defines (pure SSIM: loss = 1 - ssim).
  last = json.loads((workdir / "train_metrics.jsonl").read_text().splitlines()[-1])
  assert last["loss"] == pytest.approx(1.0 - last["ssim"], abs=1e-5)


def test_eval_and_video_after_training(trained):
  workdir, _, resumed = trained  # the resumed run re-evaluated at its end
  summary = json.loads((workdir / "eval" / "metrics.json").read_text())
  assert summary["overall"]["num_views"] == 1
  assert summary["overall"]["psnr"] == pytest.approx(resumed["eval"]["overall"]["psnr"])
  pngs = sorted(p.name for p in (workdir / "eval").rglob("*.png"))
  assert {n.split("_", 1)[1] for n in pngs} == {"pred.png", "gt.png", "depth.png", "sheet.png"}
  assert (workdir / "eval" / "video.mp4").stat().st_size > 0


def test_checkpoint_renders_like_the_trained_params(trained):
  workdir, _, _ = trained
  config, model, params, budget = zero_shot.load_run(str(workdir))
  assert model.name == "decoupled" and budget["steps"] == 8
  ex = next(pipeline.eval_examples(
      train_data.make_source("unseen", config.data.eval.unseen), 3))
  a = evaluation.render_example(model, {"params": params}, ex, 64)
  b = evaluation.render_example(model, {"params": params}, ex, 64)
  np.testing.assert_array_equal(a["rgb"], b["rgb"])
  assert a["rgb"].shape == (SIZE, SIZE, 3) and a["depth"].shape == (SIZE, SIZE)
  near, far = float(ex["near"]), float(ex["far"])
  assert np.all((a["depth"] >= near - 1e-4) & (a["depth"] <= far + 1e-4))


def test_bad_model_configs_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="unknown model name 'nerf'"):
    registry.build({"name": "nerf"})
  with pytest.raises(ValueError, match=r"unknown decoupled model config keys: \['depth'\]"):
    registry.build({"name": "decoupled", "depth": 3})
  c = small_config()
  c.init_from = str(tmp_path / "gnt.pth")
  with pytest.raises(ValueError, match="Decoupling-NeRF starts only from a movenerf run"):
    train_main.initial_params(c, train_main.build_model(c))
  c = small_config()
  c.data.example.rays_per_example = 100
  with pytest.raises(ValueError, match="pixel_mode='image' needs"):
    train_main.train(c, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()
