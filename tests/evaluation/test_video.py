"""Tests of movenerf.evaluation.video: MP4 writing, depth colouring and video rendering."""

import os
import warnings

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.data import procedural
from movenerf.evaluation import evaluate, video, visualize
from movenerf.geometry import camera_paths
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.models.gnt.family import GNTFamily
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables

SIZE = 16


# ---------------------------------------------------------------------------- video


def _smooth_frames(num, height, width):
  """[F, H, W, 3] float gradients that H.264 reproduces closely."""
  v, u = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
  return np.stack([np.stack([u, v, np.full_like(u, 0.2 + 0.1 * k)], axis=-1)
                   for k in range(num)]).astype(np.float32)


def _read(path):
  """[F, H, W, 3] uint8 frames of an MP4."""
  with warnings.catch_warnings():
    # The reader forks ffmpeg; fork-then-exec is safe despite JAX's threads.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                            category=RuntimeWarning)
    return iio.imread(path, index=None, plugin="FFMPEG")


@pytest.mark.parametrize("height,width", [(30, 40), (31, 41)])
def test_write_video_roundtrip(tmp_path, height, width):
  frames = _smooth_frames(6, height, width)
  path = str(tmp_path / "sub" / "video.mp4")  # the folder is created
  assert video.write_video(frames, path, fps=12) == path
  back = _read(path)
  assert back.shape == (6, height + height % 2, width + width % 2, 3) and back.dtype == np.uint8
  diff = np.abs(back[:, :height, :width].astype(np.float32) / 255.0 - frames)
  assert diff.mean() < 8 / 255
  assert os.listdir(tmp_path / "sub") == ["video.mp4"]  # no temp file left behind


def test_write_video_uint8_and_stream(tmp_path):
  frames = (_smooth_frames(4, 20, 24) * 255).astype(np.uint8)
  path = str(tmp_path / "stream.mp4")
  video.write_video((f for f in frames), path, fps=8)  # a generator is streamed
  back = _read(path)
  assert back.shape == (4, 20, 24, 3)
  assert np.abs(back.astype(np.float32) - frames).mean() < 8


@pytest.mark.parametrize("frames,match", [
    (np.zeros((0, 30, 40, 3), np.uint8), "no frames"),
    ([], "no frames"),
    (np.zeros((6, 30, 40), np.uint8), r"\[F, H, W, 3\]"),
    (np.zeros((6, 30, 40, 4), np.float32), r"\[F, H, W, 3\]"),
    (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN"),
    (np.zeros((2, 8, 8, 3), np.int64), "dtype"),
])
def test_write_video_rejects_bad_frames(tmp_path, frames, match):
  path = tmp_path / "bad.mp4"
  with pytest.raises(ValueError, match=match):
    video.write_video(frames, str(path))
  assert not path.exists() and os.listdir(tmp_path) == []


def test_write_video_failure_leaves_no_partial_file(tmp_path):
  good = _smooth_frames(3, 16, 16)

  def stream(last):
    yield from good
    yield last

  path = tmp_path / "out.mp4"
  # Failing after ffmpeg has started (a frame of the wrong size) leaves nothing behind.
  with pytest.raises(ValueError, match="differs"):
    video.write_video(stream(np.zeros((8, 8, 3), np.float32)), str(path))
  assert os.listdir(tmp_path) == []

  def broken():
    yield from good
    raise RuntimeError("renderer crashed")

  # An existing video is kept intact when its replacement fails midway.
  video.write_video(good, str(path))
  before = path.read_bytes()
  with pytest.raises(RuntimeError, match="crashed"):
    video.write_video(broken(), str(path))
  assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.mp4"]


def test_write_video_unreadable_output_is_not_published(tmp_path, monkeypatch):
  # imageio-ffmpeg does not report ffmpeg's exit status, so the header is read back.
  def unreadable(*args, **kwargs):
    raise OSError("Could not load meta information")

  monkeypatch.setattr(video.imageio_ffmpeg, "read_frames", unreadable)
  with pytest.raises(RuntimeError, match="readable"):
    video.write_video(_smooth_frames(2, 8, 8), str(tmp_path / "a.mp4"))
  assert os.listdir(tmp_path) == []


def test_write_video_rejects_bad_settings(tmp_path):
  with pytest.raises(ValueError, match="fps"):
    video.write_video(_smooth_frames(2, 8, 8), str(tmp_path / "a.mp4"), fps=0)
  with pytest.raises(ValueError, match="crf"):
    video.write_video(_smooth_frames(2, 8, 8), str(tmp_path / "a.mp4"), crf=60)
  assert os.listdir(tmp_path) == []


def test_side_by_side():
  rgb = np.random.default_rng(0).uniform(size=(5, 7, 3)).astype(np.float32)
  depth = np.linspace(2.0, 6.0, 35).reshape(5, 7)
  out = video.side_by_side(rgb, depth, 2.0, 6.0)
  assert out.shape == (5, 14, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, :7], np.round(rgb * 255).astype(np.uint8))
  # Same depth -> same colour in any frame (the scale is fixed by lo, hi, not by the
  # frame's own depth range).
  flat = video.side_by_side(rgb, np.full((5, 7), 2.0), 2.0, 6.0)
  np.testing.assert_array_equal(flat[:, 7:], np.broadcast_to(out[0, 7], (5, 7, 3)))
  assert not np.array_equal(out[0, 7], out[-1, -1])
  with pytest.raises(ValueError, match="depth"):
    video.side_by_side(rgb, depth[:, :3], 2.0, 6.0)


def test_side_by_side_paints_no_surface_grey():
  rgb = np.zeros((2, 3, 3), np.float32)
  depth = np.array([[np.nan, 2.0, np.inf], [4.0, 6.0, 3.0]])
  out = video.side_by_side(rgb, depth, 2.0, 6.0)
  grey = visualize.to_uint8(visualize.NO_SURFACE)
  np.testing.assert_array_equal(out[0, 3], grey)
  np.testing.assert_array_equal(out[0, 5], grey)
  np.testing.assert_array_equal(out[0, 4], visualize.to_uint8(visualize._ANCHORS[0]))
  np.testing.assert_array_equal(out[1, 4], visualize.to_uint8(visualize._ANCHORS[-1]))


def test_write_video_mode_matches_png(tmp_path):
  old = os.umask(0o022)
  try:
    path = tmp_path / "v.mp4"
    video.write_video(_smooth_frames(2, 8, 8), str(path), fps=4)
    visualize.save_png(str(tmp_path / "p.png"), np.zeros((2, 2, 3)))
    assert (os.stat(path).st_mode & 0o777) == 0o644
    assert (os.stat(tmp_path / "p.png").st_mode & 0o777) == 0o644
    os.umask(0o027)  # a stricter umask applies to both alike
    video.write_video(_smooth_frames(2, 8, 8), str(path), fps=4)
    visualize.save_png(str(tmp_path / "p.png"), np.zeros((2, 2, 3)))
    assert (os.stat(path).st_mode & 0o777) == 0o640
    assert (os.stat(tmp_path / "p.png").st_mode & 0o777) == 0o640
  finally:
    os.umask(old)


class _FlatDepthFamily:
  """A stand-in model family whose renderer returns grey RGB and a fixed depth map."""

  def __init__(self, depth):
    self.depth = np.asarray(depth, np.float32)

  def renderer(self, variables, sources, near, far, chunk_size):
    del variables, sources, near, far, chunk_size
    return lambda cams: {"rgb": np.full((self.depth.size, 3), 0.5, np.float32),
                         "depth": self.depth.reshape(-1)}


def test_video_depth_uses_the_scale_of_the_evaluation_pngs(tmp_path, monkeypatch):
  h = w = 4
  depth = np.array([[2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 1.0, np.nan]] * 2, np.float32)
  frames = []

  def capture(frames_iter, path, fps=24, crf=18):
    frames.extend(frames_iter)
    return path

  monkeypatch.setattr(video, "write_video", capture)
  path_c2w = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
  video.render_video(_FlatDepthFamily(depth), {}, None, np.eye(3), path_c2w, h, w, 2.0, 6.0,
                     64, str(tmp_path / "v.mp4"), progress=False)
  assert len(frames) == 2
  # The evaluation PNG of the same depth and near / far (the predicted-depth panel).
  ex = {"tgt_image": np.zeros((h, w, 3), np.uint8), "near": np.float32(2.0),
        "far": np.float32(6.0)}
  png = visualize.to_uint8(evaluate.panels({"rgb": np.zeros((h, w, 3)), "depth": depth},
                                           ex)["depth"])
  scale = -(-visualize.MIN_HEIGHT // h)
  # Under the label, inside the frame.
  top = visualize.text("predicted depth").shape[0] + visualize.GAP // 2 + visualize.FRAME
  x = visualize.FRAME
  panel = png[top:top + h * scale, x:x + w * scale]
  np.testing.assert_array_equal(panel, visualize.magnify(panel[::scale, ::scale], scale))
  panel = panel[::scale, ::scale]
  expected = visualize.to_uint8(visualize.colorize(depth, *visualize.depth_range(2.0, 6.0)))
  np.testing.assert_array_equal(panel, expected)
  for frame in frames:
    np.testing.assert_array_equal(frame[:, w:], expected)
  # An explicit scale (evaluation passes the scene's) is used as given.
  frames.clear()
  video.render_video(_FlatDepthFamily(depth), {}, None, np.eye(3), path_c2w, h, w, 2.0, 6.0,
                     64, str(tmp_path / "v.mp4"), progress=False, depth_range=(1.0, 7.0))
  np.testing.assert_array_equal(frames[0][:, w:],
                                visualize.to_uint8(visualize.colorize(depth, 1.0, 7.0)))


# ---------------------------------------------------------------------------- render


def _tiny_model():
  """A tiny GNT with random weights: the variable tree of ``init_variables``.

  Compiling ``init_variables`` takes ~12 s on a 2-core CPU (the ResUNet initialisers),
  most of this file's budget, so its tree is only traced (``eval_shape``, < 1 s) and
  filled with fan-in-scaled normal kernels, unit norm scales and zero biases.
  """
  model = GNTModel(GNTConfig(width=16, depth=1, coarse_feat_dim=8, fine_feat_dim=8,
                             num_samples=8))
  shapes = jax.eval_shape(lambda key: init_variables(model, key), jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if "kernel" in name:
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
    return jnp.full(leaf.shape, 1.0 if "scale" in name else 0.0, leaf.dtype)

  return model, jax.tree_util.tree_map_with_path(fill, shapes)


def test_render_video_tiny_model(tmp_path, capsys):
  scene = procedural.make_scene(0, "object", num_views=3, height=SIZE, width=SIZE)
  cams = Cameras(jnp.asarray(scene.intrinsics), jnp.asarray(scene.c2w), SIZE, SIZE)
  sources = SourceViews(jnp.asarray(scene.images, jnp.float32) / 255.0, cams)
  model, variables = _tiny_model()
  path_c2w = camera_paths.circle_path(scene.c2w, 3)
  out = str(tmp_path / "orbit.mp4")
  family = GNTFamily(model)
  result = video.render_video(family, variables, sources, scene.intrinsics[0], path_c2w, SIZE,
                              SIZE, scene.near, scene.far, 128, out, fps=6)
  assert result == out
  back = _read(out)
  assert back.shape == (3, SIZE, 2 * SIZE, 3)
  printed = capsys.readouterr().out
  assert "frame 3/3" in printed and ("frames/s" in printed or "s/frame" in printed)
  assert "ETA" in printed
  assert os.listdir(tmp_path) == ["orbit.mp4"]
  # The depth half is coloured, not flat: the shared scale spans the rendered depths.
  assert back[:, :, SIZE:].std() > 1.0


def test_render_video_validates_inputs(tmp_path):
  family = GNTFamily(GNTModel(GNTConfig(width=16, depth=1, coarse_feat_dim=8, fine_feat_dim=8,
                                        num_samples=8)))
  k = np.eye(3, dtype=np.float32)
  bad = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
  bad[1, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    video.render_video(family, {}, None, k, bad, 8, 8, 1.0, 2.0, 64, str(tmp_path / "x.mp4"))
  with pytest.raises(ValueError, match="intrinsics"):
    video.render_video(family, {}, None, np.eye(4), bad[:1], 8, 8, 1.0, 2.0, 64,
                       str(tmp_path / "x.mp4"))
  assert os.listdir(tmp_path) == []


class _SourceColourFamily:
  """A stand-in family whose frames are one grey level: the mean of its sources' first
  pixel; it counts how often it encodes sources."""

  def __init__(self):
    self.encoded = []

  def renderer(self, variables, sources, near, far, chunk_size):
    self.encoded.append(np.asarray(sources.images[:, 0, 0, 0]))
    level = float(np.mean(sources.images[:, 0, 0, 0]))

    def render(camera):
      hw = (camera.height, camera.width)
      return {"rgb": jnp.full(hw + (3,), level), "depth": jnp.full(hw, 1.5)}

    return render


def test_render_video_takes_each_frames_own_sources(tmp_path):
  levels = np.array([0.1, 0.3, 0.5, 0.7, 0.9], np.float32)
  images = np.broadcast_to(levels[:, None, None, None], (5, SIZE, SIZE, 3))
  cams = Cameras(jnp.tile(jnp.eye(3), (5, 1, 1)), jnp.tile(jnp.eye(4), (5, 1, 1)), SIZE,
                 SIZE)
  pool = SourceViews(jnp.asarray(images), cams)
  ids = np.array([[0, 1], [0, 1], [3, 4], [3, 4], [2, 2], [0, 1]])
  family = _SourceColourFamily()
  path = np.tile(np.eye(4, dtype=np.float32), (6, 1, 1))
  out = video.render_video(family, {}, pool, np.eye(3) * SIZE, path, SIZE, SIZE, 1.0, 2.0, 64,
                           str(tmp_path / "v.mp4"), progress=False, source_ids=ids)
  # Sources are encoded once per run of frames that share them.
  assert [list(np.round(e, 2)) for e in family.encoded] == [
      [0.1, 0.3], [0.7, 0.9], [0.5, 0.5], [0.1, 0.3]]
  frames = _read(out)[:, :, :SIZE].astype(float) / 255.0
  np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [0.2, 0.2, 0.8, 0.8, 0.5, 0.2],
                             atol=0.02)
  with pytest.raises(ValueError, match=r"source_ids must be \[6, V\] indices into the 5"):
    video.render_video(family, {}, pool, np.eye(3), path, SIZE, SIZE, 1.0, 2.0, 64,
                       str(tmp_path / "w.mp4"), source_ids=ids + 1)


def test_frame_sources_are_the_nearest_pool_views():
  pool = np.tile(np.eye(4), (4, 1, 1))
  pool[:, 0, 3] = [0.0, 1.0, 2.0, 3.0]
  path = np.tile(np.eye(4), (2, 1, 1))
  path[:, 0, 3] = [0.2, 2.9]
  np.testing.assert_array_equal(video.frame_sources(path, pool, 2), [[0, 1], [3, 2]])
