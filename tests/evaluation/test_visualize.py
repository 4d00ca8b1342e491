"""Tests of movenerf.evaluation.visualize and movenerf.evaluation.tensorboard: the colours
of depth, "no surface" and experts, colour bars and legends, file modes, and what
TensorBoard receives."""

import io
import os

import numpy as np
from PIL import Image
import pytest

from movenerf.evaluation import evaluate, visualize
from movenerf.evaluation import tensorboard as tb_log
from movenerf.moe import expert_map
from tests.helpers import tensorboard_events


def _count(image: np.ndarray, colour) -> int:
  """Pixels of uint8 ``image`` that are exactly ``colour`` (float, as to_uint8 rounds it)."""
  target = visualize.to_uint8(np.asarray(colour, np.float32))
  return int(np.all(visualize.to_uint8(image) == target, axis=-1).sum())


# ----------------------------------------------------------------------------- depth


def test_non_finite_depth_is_no_surface_grey_and_ends_are_the_map_ends():
  depth = np.array([[2.0, 6.0, np.nan], [np.inf, -np.inf, 4.0], [1.0, 9.0, 3.0]], np.float32)
  rgb = visualize.colorize(depth, 2.0, 6.0)
  for y, x in [(0, 2), (1, 0), (1, 1)]:
    np.testing.assert_array_equal(rgb[y, x], visualize.NO_SURFACE)
  np.testing.assert_allclose(rgb[0, 0], visualize._ANCHORS[0], atol=1e-6)   # near
  np.testing.assert_allclose(rgb[0, 1], visualize._ANCHORS[-1], atol=1e-6)  # far
  np.testing.assert_allclose(rgb[2, 0], visualize._ANCHORS[0], atol=1e-6)   # nearer: clipped
  np.testing.assert_allclose(rgb[2, 1], visualize._ANCHORS[-1], atol=1e-6)  # farther
  np.testing.assert_allclose(rgb[1, 2], visualize._ANCHORS[3], atol=1e-6)   # the middle
  # Depth 3 is a quarter of the way: halfway between anchors 1 and 2 (6 intervals).
  np.testing.assert_allclose(rgb[2, 2], visualize._ANCHORS[1] * 0.5 + visualize._ANCHORS[2] * 0.5,
                             atol=1e-6)
  # Grey is far from every colour of the map, so "no surface" cannot be read as a depth.
  ramp = visualize._ramp(np.linspace(0.0, 1.0, 2001))
  assert np.min(np.linalg.norm(ramp - visualize.NO_SURFACE, axis=-1)) > 0.3


def test_depth_range_is_the_scene_bounds():
  assert visualize.depth_range([2.5, 2.0, np.nan], [5.0, 6.0, np.inf]) == (2.0, 6.0)
  assert visualize.depth_range(np.float32(1.5), np.float32(4.0)) == (1.5, 4.0)
  assert visualize.depth_range(3.0, 3.0) == (2.5, 3.5)
  assert visualize.depth_range([np.nan], [np.nan]) == (0.0, 1.0)


def test_colorbar_ends_are_the_map_ends_and_it_is_labelled():
  bar = visualize.colorbar(2.0, 6.0, 300)
  assert bar.shape[1] == 300
  np.testing.assert_array_equal(bar[0, 0], visualize.colorize(np.float32(2.0), 2.0, 6.0))
  np.testing.assert_array_equal(bar[0, -1], visualize.colorize(np.float32(6.0), 2.0, 6.0))
  np.testing.assert_array_equal(bar[0, 0], visualize._ANCHORS[0])
  np.testing.assert_array_equal(bar[0, -1], visualize._ANCHORS[-1])
  # Monotone position -> colour: each column is the colour of its depth.
  depths = np.linspace(2.0, 6.0, 300, dtype=np.float32)
  np.testing.assert_allclose(bar[0], visualize.colorize(depths, 2.0, 6.0), atol=1e-5)
  # Text under the bar (black pixels of the labels) and the grey "no surface" swatch.
  below = bar[16:]
  assert np.sum(np.all(below < 0.05, axis=-1)) > 100
  side = 9 * visualize.TEXT_SCALE
  assert _count(bar, visualize.NO_SURFACE) >= side * side
  # Labels are the numbers: the text row differs for another scale.
  other = visualize.colorbar(2.0, 7.5, 300)
  assert not np.array_equal(other[16:], below)


def test_depth_panel_marks_missing_true_depth_grey_on_one_scale():
  h = w = 8
  ex = {"tgt_image": np.zeros((h, w, 3), np.uint8), "near": np.float32(2.0),
        "far": np.float32(6.0), "tgt_depth": np.full((h, w), 3.0, np.float32),
        "tgt_mask": np.zeros((h, w), bool)}
  ex["tgt_mask"][:, :4] = True
  out = {"rgb": np.zeros((h * w, 3), np.float32), "depth": np.full((h * w,), 3.0, np.float32)}
  image = visualize.to_uint8(evaluate.panels(out, ex)["depth"])
  scale = -(-visualize.MIN_HEIGHT // h)  # 8 px upscaled to >= 256 px
  grey = _count(image, visualize.NO_SURFACE)
  swatch = (9 * visualize.TEXT_SCALE) ** 2
  assert grey == (h * scale) * (w // 2 * scale) + swatch  # the unmasked half, and the key
  depth3 = visualize.colorize(np.float32(3.0), 2.0, 6.0)
  assert _count(image, depth3) == 3 * (h * scale) * (w * scale) // 2  # pred + masked half
  assert image.shape[0] >= visualize.MIN_HEIGHT


def test_upscale_is_nearest_neighbour_to_min_height():
  image = np.random.default_rng(0).uniform(size=(32, 24, 3)).astype(np.float32)
  big = visualize.upscale(image)
  assert big.shape == (256, 192, 3)
  np.testing.assert_array_equal(big[::8, ::8], image)
  np.testing.assert_array_equal(big[7::8, 7::8], image)
  assert visualize.upscale(np.zeros((300, 10, 3))).shape == (300, 10, 3)


# ----------------------------------------------------------------------------- experts


def test_top1_expert_map_paints_the_largest_share():
  fractions = np.array([[[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4]],
                        [[0.25, 0.25, 0.5, 0.0], [0.4, 0.4, 0.1, 0.1]]], np.float32)
  top1 = expert_map.colorize_experts(fractions)
  np.testing.assert_array_equal(top1, expert_map.PALETTE[[[0, 3], [2, 0]]])  # tie: first
  blend = expert_map.colorize_experts(fractions, mode="blend")
  np.testing.assert_allclose(blend[0, 0], 0.5 * expert_map.PALETTE[0] +
                             0.3 * expert_map.PALETTE[1] + 0.2 * expert_map.PALETTE[2],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="mode"):
    expert_map.colorize_experts(fractions, mode="soft")


def test_experts_image_has_top1_maps_and_a_legend_of_every_expert():
  h, w, num_layers, num_experts = 4, 4, 2, 6
  winners = np.arange(h * w * num_layers).reshape(h, w, num_layers) % num_experts
  shares = np.full((h, w, num_layers, num_experts), 0.1 / (num_experts - 1), np.float32)
  np.put_along_axis(shares, winners[..., None], 0.9, axis=-1)
  image = visualize.experts_image(shares)
  scale = -(-visualize.MIN_HEIGHT // h)
  side = 9 * visualize.TEXT_SCALE  # the inside of a legend swatch
  for e in range(num_experts):
    expected = int((winners == e).sum()) * scale * scale  # map pixels of expert e
    assert _count(image, expert_map.PALETTE[e]) == expected + side * side, e
  # The legend alone: one swatch per expert, in the expert's colour, with its name.
  legend = visualize.expert_legend(num_experts, 600)
  for e in range(num_experts):
    assert _count(legend, expert_map.PALETTE[e]) == side * side
  assert np.sum(np.all(legend < 0.05, axis=-1)) > 100  # the names


# ----------------------------------------------------------------------------- sheets


def test_comparison_sheet_is_legible_and_captioned():
  rng = np.random.default_rng(1)
  h = w = 16
  ex = {"tgt_image": (rng.uniform(size=(h, w, 3)) * 255).astype(np.uint8),
        "near": np.float32(2.0), "far": np.float32(6.0)}
  gt = ex["tgt_image"].astype(np.float32) / 255
  out = {"rgb": gt, "depth": np.full((h, w), np.nan, np.float32)}
  sheet = evaluate.comparison_sheet(out, ex, {"psnr": 30.0, "ssim": 0.9, "lpips_alex": 0.25},
                                    "unseen / s / view 000")
  scale = -(-visualize.MIN_HEIGHT // h)
  assert sheet.shape[0] > visualize.MIN_HEIGHT
  # The ground-truth and prediction panels appear upscaled, pixel for pixel.
  big = visualize.to_uint8(visualize.upscale(gt))
  sheet8 = visualize.to_uint8(sheet)
  x = visualize.GAP + visualize.FRAME  # inside the sheet's margin and the panel's frame
  rows = [y for y in range(sheet.shape[0] - big.shape[0])
          if np.array_equal(sheet8[y, x:x + big.shape[1]], big[0])]
  assert rows and np.array_equal(sheet8[rows[0]:rows[0] + big.shape[0], x:x + big.shape[1]],
                                 big)
  frame = visualize.to_uint8(visualize.FRAME_COLOUR)
  np.testing.assert_array_equal(sheet8[rows[0]:rows[0] + big.shape[0], x - 1],
                                np.broadcast_to(frame, (big.shape[0], 3)))
  # Zero error: the error panel is uniformly the map's first colour; NaN depth is grey.
  assert _count(sheet, visualize._ANCHORS[0]) >= (h * scale) ** 2
  assert _count(sheet, visualize.NO_SURFACE) >= (h * scale) ** 2
  # Different scores give a different caption.
  other = evaluate.comparison_sheet(out, ex, {"psnr": 31.0, "ssim": 0.9, "lpips_alex": 0.25},
                                    "unseen / s / view 000")
  assert other.shape == sheet.shape and not np.array_equal(other[-40:], sheet[-40:])


def test_saved_png_is_mode_0644_and_exact(tmp_path):
  old = os.umask(0o022)
  try:
    image = np.random.default_rng(2).uniform(size=(5, 6, 3)).astype(np.float32)
    path = tmp_path / "sub" / "x.png"
    visualize.save_png(str(path), image)
    assert (os.stat(path).st_mode & 0o777) == 0o644
    np.testing.assert_array_equal(np.asarray(Image.open(path)), visualize.to_uint8(image))
    assert os.listdir(path.parent) == ["x.png"]
  finally:
    os.umask(old)


# ----------------------------------------------------------------------------- tensorboard


_events = tensorboard_events


def _values(events):
  return {v.tag: (e.step, v) for e in events for v in e.summary.value}


def test_tensorboard_gets_clipped_images_eval_scalars_and_config(tmp_path):
  from tensorboardX import SummaryWriter
  h = w = 8
  ex = {"tgt_image": np.full((h, w, 3), 128, np.uint8), "near": np.float32(2.0),
        "far": np.float32(6.0)}
  rgb = np.full((h, w, 3), 1.7, np.float32)  # above 1: tensorboardX alone would show ~black
  rgb[:, : w // 2] = 0.25
  out = {"rgb": rgb, "depth": np.full((h, w), 4.0, np.float32),
         "experts": np.tile(np.eye(4, dtype=np.float32)[1], (h, w, 1, 1))}
  writer = SummaryWriter(str(tmp_path), purge_step=None)
  tb_log.log_config(writer, {"model": {"width": 16}, "seed": 3}, step=0)
  psnr = tb_log.log_validation(writer, out, ex, step=5)
  writer.close()
  summary = {"overall": {"num_views": 2, "psnr": 21.5, "ssim": 0.75, "lpips_alex": 0.25,
                         "lpips_vgg": float("nan")},
             "datasets": {"unseen": {"num_views": 2, "psnr": 21.5, "ssim": 0.75,
                                     "lpips_alex": "n/a"}}}
  # As training does: the evaluation's scores in a second file, in the same second.
  with tb_log.open_writer(str(tmp_path), ".eval") as eval_writer:
    written = tb_log.log_eval(eval_writer, summary, step=9)
  assert len(os.listdir(tmp_path)) == 2
  assert written == {"eval/psnr": 21.5, "eval/ssim": 0.75, "eval/lpips_alex": 0.25,
                     "eval/unseen/psnr": 21.5, "eval/unseen/ssim": 0.75}

  values = _values(_events(tmp_path))
  assert set(values) >= {"val/render_vs_gt", "val/depth", "val/experts", "val/psnr",
                         "eval/psnr", "eval/ssim", "eval/unseen/psnr", "config/text_summary"}
  step, render = values["val/render_vs_gt"]
  assert step == 5
  image = np.asarray(Image.open(io.BytesIO(render.image.encoded_image_string)))
  expected = visualize.to_uint8(visualize.hstack([visualize.panel(rgb, "prediction"),
                                                  visualize.panel(ex["tgt_image"],
                                                                  "ground truth")]))
  np.testing.assert_array_equal(image[..., :3], expected)
  scale = visualize.MIN_HEIGHT // h
  assert _count(image[..., :3], [1.0, 1.0, 1.0]) >= h * scale * (w // 2) * scale  # 1.7 -> 255
  assert _count(image[..., :3], [0.25, 0.25, 0.25]) == h * scale * (w // 2) * scale
  _, experts = values["val/experts"]
  experts_png = np.asarray(Image.open(io.BytesIO(experts.image.encoded_image_string)))
  assert _count(experts_png[..., :3], expert_map.PALETTE[1]) >= (h * scale) ** 2
  np.testing.assert_allclose(values["val/psnr"][1].simple_value, psnr, rtol=1e-6)
  assert values["eval/psnr"][0] == 9
  np.testing.assert_allclose(values["eval/ssim"][1].simple_value, 0.75, rtol=1e-6)
  text = values["config/text_summary"][1].tensor.string_val[0].decode()
  assert '"width": 16' in text and text.startswith("    ")


class _BrightFamily:
  """A stand-in model family whose renderer returns RGB 1.5 (over-exposed) and depth 3."""

  def renderer(self, variables, sources, near, far, chunk_size):
    del variables, sources, near, far, chunk_size
    return lambda cams: {"rgb": np.full((cams.height, cams.width, 3), 1.5, np.float32),
                         "depth": np.full((cams.height, cams.width), 3.0, np.float32)}


def test_training_validation_images_are_clipped(tmp_path):
  import ml_collections
  from tensorboardX import SummaryWriter
  from movenerf import train as train_main
  from movenerf.data import pipeline, procedural, views
  rec = procedural.make_record(3, num_views=9, height=8, width=8)
  ex = next(pipeline.eval_examples(views.RecordSource([rec], "g"), 3))
  config = ml_collections.ConfigDict({"eval": {"chunk_size": 64}})
  writer = SummaryWriter(str(tmp_path))
  train_main._log_validation(writer, _BrightFamily(), {}, ex, 7, config)
  writer.close()
  step, render = _values(_events(tmp_path))["val/render_vs_gt"]
  image = np.asarray(Image.open(io.BytesIO(render.image.encoded_image_string)))[..., :3]
  top = visualize.text("prediction").shape[0] + visualize.GAP // 2 + visualize.FRAME
  x = visualize.FRAME
  np.testing.assert_array_equal(image[top:top + 256, x:x + 256], 255)  # 1.5: white, not dark
  assert step == 7
