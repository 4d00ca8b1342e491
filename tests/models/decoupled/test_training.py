"""Decoupling-NeRF through the shared tooling: whole-image examples, the train loop,
checkpoints and resume, evaluation, video and the zero-shot comparison."""

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import decoupled_nerf
from movenerf import train as train_main
from movenerf.data import pipeline, procedural, views
from movenerf.data import sources as train_data
from movenerf.evaluation import evaluate as evaluation
from movenerf.models import registry
from movenerf.models.decoupled import model as decoupled
from movenerf.tools import zero_shot

SIZE = 16


def small_config(**train_overrides):
  """The tiny variant shrunk so that a run takes seconds."""
  c = decoupled_nerf.get_config("tiny")
  c.model.update(num_freqs=4, enc_width=8, attn_heads=2, head_dim=8, width=16,
                 render_width=8, num_layers=3)
  for group in ("train", "eval"):
    entry = c.data[group][sorted(c.data[group].keys())[0]]
    entry.options.update(num_scenes=2 if group == "train" else 1, num_views=9, height=SIZE,
                         width=SIZE)
  c.data.example.update(num_source_views=3, rays_per_example=SIZE * SIZE)
  c.data.global_batch = 2
  c.train.update(num_steps=6, log_every=1, image_every=3, checkpoint_every=3,
                 async_checkpoints=False)
  c.eval.update(num_source_views=3, max_views_per_scene=1, video_frames=2)
  c.train.update(**train_overrides)
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 6-step run, then resumed to 8 steps; returns (workdir, first result, resumed)."""
  workdir = tmp_path_factory.mktemp("dc_run")
  first = train_main.train(small_config(), str(workdir))
  resumed = train_main.train(small_config(num_steps=8), str(workdir))
  return workdir, first, resumed


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
  assert {n.split("_", 1)[1] for n in pngs} == {"pred.png", "gt.png", "depth.png"}
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
  assert results["A"]["budget"]["updates"] == 8
  table = (tmp_path / "zero_shot.md").read_text()
  assert "| nearest source view |" in table and "| A | 8 |" in table
  sheets = list((tmp_path / "sheets").glob("*.png"))
  assert len(sheets) == 2  # one unseen view, one seen view


def test_nearest_view_baseline_scores_the_closest_source():
  rec = procedural.make_record(3, num_views=9, height=SIZE, width=SIZE)
  ex = next(pipeline.eval_examples(views.RecordSource([rec], "g"), 3))
  pred = evaluation.nearest_view(ex)["rgb"]
  np.testing.assert_array_equal(pred, ex["src_images"][0] / np.float32(255.0))


def test_whole_image_examples():
  rec = procedural.make_record(1, num_views=9, height=24, width=32)
  src = views.RecordSource([rec], "g")
  spec = pipeline.ExampleSpec(num_source_views=3, rays_per_example=24 * 32,
                              pixel_mode="image")
  ex = pipeline.ExampleMaker({"g": src}, spec=spec, seed=0)(5)
  h, w = 24, 32
  np.testing.assert_array_equal(ex["pixels"][:, 0], np.tile(np.arange(w), h))
  np.testing.assert_array_equal(ex["pixels"][:, 1], np.repeat(np.arange(h), w))
  view = int(ex["ids"][2])  # the view's index in the whole scene
  np.testing.assert_allclose(ex["rgb"].reshape(h, w, 3), rec.images[view] / 255.0,
                             atol=1e-7)
  assert ex["pairs"].shape == (0, 2)

  # With source_size the target is resized too, and its intrinsics scaled with it.
  spec = pipeline.ExampleSpec(num_source_views=3, rays_per_example=12 * 16,
                              pixel_mode="image", source_size=(12, 16))
  small = pipeline.ExampleMaker({"g": src}, spec=spec, seed=0)(5)
  assert small["src_images"].shape == (3, 12, 16, 3) and small["rgb"].shape == (192, 3)
  np.testing.assert_allclose(small["tgt_intrinsics"][:2], ex["tgt_intrinsics"][:2] / 2,
                             rtol=1e-6)

  with pytest.raises(ValueError, match=r"rays_per_example = H \* W = 24x32 = 768"):
    pipeline.ExampleMaker({"g": src}, seed=0, spec=pipeline.ExampleSpec(
        num_source_views=3, rays_per_example=512, pixel_mode="image"))


def test_eval_examples_resize():
  rec = procedural.make_record(2, num_views=9, height=24, width=32)
  src = views.RecordSource([rec], "g")
  full = next(pipeline.eval_examples(src, 3))
  half = next(pipeline.eval_examples(src, 3, image_size=(12, 16)))
  assert half["tgt_image"].shape == (12, 16, 3) and half["src_images"].shape == (3, 12, 16, 3)
  assert half["tgt_depth"].shape == (12, 16) and half["tgt_mask"].shape == (12, 16)
  np.testing.assert_allclose(half["src_intrinsics"][:, :2], full["src_intrinsics"][:, :2] / 2,
                             rtol=1e-6)
  # Nearest resizing of the depth keeps true depth values (no blending across edges).
  assert set(np.unique(half["tgt_depth"])) <= set(np.unique(full["tgt_depth"]))


def test_layer_depth_is_analytic():
  d, near, far = 4, 2.0, 6.0
  weights = np.zeros((d, 2, 2), np.float32)
  weights[1, 0, 0] = 1.0            # one opaque layer: its plane, 2 + 1.5 / 4 * 4
  weights[[0, 3], 0, 1] = 0.5       # half and half: the mean of planes 0 and 3
  # pixel (1, *): nothing composited: far
  depth = np.asarray(decoupled.layer_depth(jnp.asarray(weights), near, far))
  np.testing.assert_allclose(depth, [[3.5, 4.0], [6.0, 6.0]], atol=1e-6)


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


def test_paper_and_real_variants_match_the_method():
  paper = decoupled_nerf.get_config("paper")
  assert paper.data.train.synthetic.scenes == "chair,drums,ficus,hotdog,lego,materials"
  assert paper.data.eval.synthetic.scenes == "mic,ship"
  assert tuple(paper.data.example.source_size) == (64, 64)
  assert paper.optim.name == "adamax" and paper.optim.lr_transformer == 0.002
  assert (paper.optim.b1, paper.optim.b2) == (0.9, 0.999)
  assert paper.data.global_batch == 4 and paper.optim.accumulate_steps == 8
  m = paper.model
  assert (m.num_freqs, m.attn_heads, m.head_dim, m.width) == (12, 32, 32, 256)
  real = decoupled_nerf.get_config("real")
  assert (real.data.train.lego.scenes, real.data.eval.mic.scenes) == ("lego", "mic")
  assert Path(real.data.train.lego.path).name == "nerf_synthetic"
