"""Novel-view videos: render a camera path, write RGB | depth frames to an MP4.

Videos are H.264 in an MP4 container with yuv420p pixels, the combination every
browser and player decodes. yuv420p stores colour at half resolution in both
directions, so frames need even sizes: odd heights/widths are padded by repeating the
last row/column (``write_video``). Files are written atomically, like
``visualize.save_png``: ffmpeg writes a temporary file in the target folder that is
renamed into place only when complete, with mode 0666 less the umask (0644 with the
usual umask 022), like the files ``movenerf.storage`` writes.

Depth is coloured like the evaluation PNGs (``visualize.colorize``: grey where there is
no surface) on one scale for the whole video, by default ``visualize.depth_range`` of
the rendering's near / far.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from typing import Iterable

import imageio.v3 as iio
import imageio_ffmpeg
import jax
import jax.numpy as jnp
import numpy as np

from movenerf import storage
from movenerf.data import samplers
from movenerf.evaluation import visualize
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.models.family import ModelFamily


def _frame_uint8(frame, index: int, size: tuple[int, int] | None) -> np.ndarray:
  """One [H, W, 3] uint8 or float [0, 1] frame -> C-contiguous uint8, checked."""
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[-1] != 3:
    raise ValueError(f"frame {index}: expected shape [H, W, 3], got {frame.shape}")
  if size is not None and frame.shape[:2] != size:
    raise ValueError(f"frame {index}: size {frame.shape[:2]} differs from the first frame's "
                     f"{size}")
  if frame.shape[0] < 1 or frame.shape[1] < 1:
    raise ValueError(f"frame {index}: empty image of shape {frame.shape}")
  if frame.dtype == np.uint8:
    return np.ascontiguousarray(frame)
  if not np.issubdtype(frame.dtype, np.floating):
    raise ValueError(f"frame {index}: dtype must be uint8 or float in [0, 1], got "
                     f"{frame.dtype}")
  if not np.all(np.isfinite(frame)):
    raise ValueError(f"frame {index} contains NaN or inf")
  return visualize.to_uint8(frame)


def _pad_even(frame: np.ndarray) -> np.ndarray:
  """Pads an odd height/width by one repeated edge row/column (yuv420p needs even).

  Repeating the edge (rather than black) keeps the 2x2 chroma blocks on the border
  uniform, so the padding does not bleed a dark fringe into the last real pixels.
  """
  h, w = frame.shape[:2]
  if h % 2 == 0 and w % 2 == 0:
    return frame
  return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


@contextlib.contextmanager
def _quiet_fork_warning():
  """Silences JAX's warning about forking a multithreaded process, for ffmpeg only.

  subprocess forks and at once execs ffmpeg without running Python code in the child,
  so the deadlock JAX warns about (a child using locks held by other threads) cannot
  happen there.
  """
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                            category=RuntimeWarning)
    yield


def read_frame(path: str, index: int) -> np.ndarray:
  """Frame ``index`` of a video (a local path or a URL) as [H, W, 3] uint8."""
  with _quiet_fork_warning():
    if storage.is_remote(path):
      return np.asarray(iio.imread(storage.read_bytes(path), index=index, extension=".mp4",
                                   plugin="FFMPEG"))
    return np.asarray(iio.imread(path, index=index, plugin="FFMPEG"))


def _verify_video(path: str, size: tuple[int, int], num_frames: int, fps: float) -> None:
  """Raises RuntimeError unless ``path`` is a readable (W, H) ``size`` video whose
  duration matches ``num_frames`` (within half a frame plus the header's 10 ms rounding).

  imageio-ffmpeg does not report ffmpeg's exit status when writing ends, so the
  container header is read back (one short ffmpeg call, no decoding) before the file
  is published.
  """
  try:
    with _quiet_fork_warning():
      reader = imageio_ffmpeg.read_frames(path)
      try:
        meta = next(reader)
      finally:
        reader.close()
  except Exception as err:  # pylint: disable=broad-except
    raise RuntimeError(f"ffmpeg did not produce a readable video: {err}") from err
  duration = num_frames / fps
  if (tuple(meta.get("size", ())) != size
      or abs(meta.get("duration", 0.0) - duration) > 0.5 / fps + 0.01):
    raise RuntimeError(f"ffmpeg wrote an incomplete video: {meta.get('size')} pixels, "
                       f"{meta.get('duration')} s; expected {size}, {duration:.3f} s")


def write_video(frames, path: str, fps: float = 24, crf: int = 18) -> str:
  """Writes frames to an H.264 / yuv420p MP4, atomically.

  Args:
    frames: [F, H, W, 3] uint8 or float in [0, 1] (floats are clipped), or an iterable
      of such [H, W, 3] frames; an iterable is encoded as it is consumed, so long
      videos need not be held in memory.
    path: output file. Its folder is created if needed; an existing file is replaced
      only once the new video is complete.
    fps: frames per second.
    crf: x264 constant rate factor (0 = lossless .. 51; 18 is visually near-lossless).

  Returns:
    ``path``. The video is (H + H % 2) x (W + W % 2): odd sizes are padded to even.

  Raises:
    ValueError: no frames, frames not [H, W, 3], frames of different sizes, a dtype
      other than uint8/float, NaN/inf values, or invalid fps/crf. Raised before
      anything is written for array input; for an iterable, when the bad frame
      arrives, and then the partial video is deleted.
  """
  fps = float(fps)
  if not (np.isfinite(fps) and fps > 0):
    raise ValueError(f"fps must be a positive number, got {fps}")
  if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
    raise ValueError(f"crf must be an integer in [0, 51], got {crf!r}")
  if hasattr(frames, "__array__"):  # NumPy / JAX arrays
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
      raise ValueError(f"frames must have shape [F, H, W, 3], got {array.shape}")
    if array.shape[0] == 0:
      raise ValueError("no frames to write (F = 0)")
    # Check every frame before starting ffmpeg, so bad input costs no encoding.
    frame_list = [_frame_uint8(f, i, None) for i, f in enumerate(array)]
    frames_iter: Iterable = iter(frame_list)
  else:
    frames_iter = iter(frames)
  first = next(frames_iter, None)
  if first is None:
    raise ValueError("no frames to write (empty sequence)")
  first = _frame_uint8(first, 0, None)
  size = first.shape[:2]
  height, width = size[0] + size[0] % 2, size[1] + size[1] % 2

  # ffmpeg writes a local file: next to the target (an atomic rename on one file system)
  # or, for a URL, in a temporary folder, uploaded when complete. Its .mp4 suffix tells
  # ffmpeg the container.
  remote = storage.is_remote(path)
  directory = tempfile.gettempdir() if remote else os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp.mp4",
                             dir=directory)
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_umask())
  writer = None
  try:
    writer = imageio_ffmpeg.write_frames(
        tmp, (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
        ffmpeg_log_level="error",
        # faststart puts the index first so that browsers can play while downloading.
        output_params=["-crf", str(int(crf)), "-movflags", "+faststart"])
    with _quiet_fork_warning():
      writer.send(None)  # starts ffmpeg
    writer.send(_pad_even(first))
    count = 1
    for frame in frames_iter:
      writer.send(_pad_even(_frame_uint8(frame, count, size)))
      count += 1
    gen, writer = writer, None
    gen.close()  # flushes and waits for ffmpeg to exit
    _verify_video(tmp, (width, height), count, fps)
    if remote:
      storage.copy_file(tmp, path)
      os.unlink(tmp)
    else:
      os.replace(tmp, path)
  except BaseException:
    if writer is not None:
      try:
        writer.close()
      except Exception:  # pylint: disable=broad-except
        pass  # the original error is the one worth reporting
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def side_by_side(rgb, depth, lo: float, hi: float) -> np.ndarray:
  """RGB next to colourised depth.

  Args:
    rgb: [H, W, 3] uint8 or float in [0, 1].
    depth: [H, W] depths; NaN / inf (no surface) shows as ``visualize.NO_SURFACE``.
    lo, hi: depth mapped to the first / last colour (``visualize.colorize``). Pass the
      same values for every frame of a video, or its colours flicker;
      ``visualize.depth_range`` gives the scale evaluation uses for a scene's PNGs.

  Returns:
    [H, 2W, 3] uint8.
  """
  rgb = np.asarray(rgb)
  depth = np.asarray(depth)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ValueError(f"rgb must have shape [H, W, 3], got {rgb.shape}")
  if depth.shape != rgb.shape[:2]:
    raise ValueError(f"depth must have shape {rgb.shape[:2]} (the rgb size), got "
                     f"{depth.shape}")
  rgb8 = rgb if rgb.dtype == np.uint8 else visualize.to_uint8(rgb)
  return np.concatenate([rgb8, visualize.to_uint8(visualize.colorize(depth, lo, hi))], axis=1)


def frame_sources(path_c2w, pool_c2w, num_views: int, method: str = "position"
                  ) -> np.ndarray:
  """[F, num_views] indices of the pool cameras nearest to each frame of a path, nearest
  first (``samplers.select_source_views``, as evaluation picks them)."""
  return np.stack([samplers.select_source_views(c, pool_c2w, num_views, method=method)
                   for c in np.asarray(path_c2w)])


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def render_video(family: ModelFamily, variables, sources: SourceViews, intrinsics, path_c2w,
                 height: int, width: int, near: float, far: float, chunk_size: int,
                 out_path: str, fps: float = 24, progress: bool = True,
                 depth_range: tuple[float, float] | None = None,
                 map_fn=None, source_ids=None) -> str | None:
  """Renders every camera of a path and writes an RGB | depth MP4.

  The family's renderer encodes the source views once for the whole video (with
  ``source_ids``, once per run of frames that share their sources) and renders each
  frame (GNT: its H * W rays in chunks of one compiled program).
  Depth colours use one scale for the whole video, so that they do not flicker.

  Args:
    family, variables: a model family (:mod:`movenerf.models.family`) and its variables.
    sources: V source views for every frame, or with ``source_ids`` the pool they are
      chosen from.
    intrinsics: [3, 3] for every frame, or [F, 3, 3].
    path_c2w: [F, 4, 4] camera-to-world matrices (e.g. from ``movenerf.geometry.camera_paths``).
    height, width: frame size H x W of each rendered view.
    near, far: depth range of the samples along each ray.
    chunk_size: rays per compiled call (lower it if rendering runs out of memory).
    out_path: the MP4 to write.
    fps: frames per second of the video.
    progress: print frame i/F, frames/s and the estimated time left.
    depth_range: (lo, hi) of the depth colours, in scene units; default
      ``visualize.depth_range(near, far)``. Evaluation passes the scene's scale
      (``evaluate.scene_depth_range``), the one of its depth PNGs.
    map_fn: ``map_fn(fn, range(F))`` yields ``(i, fn(i))``: spreads the frames over the
      processes (``hosts.map_to_chief``); default: every frame here, in order.
    source_ids: [F, V'] indices into ``sources``: the source views of each frame (e.g.
      the ones nearest to it, ``frame_sources``); default: all of ``sources`` for every
      frame.

  Returns:
    ``out_path`` (None on a process that wrote nothing); the video is F frames of
    H x 2W (plus padding to even sizes).
  """
  c2w = np.asarray(path_c2w, np.float32)
  if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or len(c2w) == 0:
    raise ValueError(f"path_c2w must have shape [F, 4, 4] with F >= 1, got {c2w.shape}")
  if not np.all(np.isfinite(c2w)):
    raise ValueError("path_c2w contains NaN or inf")
  num_frames = len(c2w)
  k = np.asarray(intrinsics, np.float32)
  if k.shape == (3, 3):
    k = np.broadcast_to(k, (num_frames, 3, 3))
  if k.shape != (num_frames, 3, 3):
    raise ValueError(f"intrinsics must be [3, 3] or [{num_frames}, 3, 3], got {k.shape}")
  if not np.all(np.isfinite(k)):
    raise ValueError("intrinsics contain NaN or inf")
  if depth_range is not None and not (np.all(np.isfinite(depth_range))
                                      and depth_range[1] > depth_range[0]):
    raise ValueError(f"depth_range must be finite (lo, hi) with hi > lo, got {depth_range}")

  if source_ids is not None:
    source_ids = np.asarray(source_ids)
    if (source_ids.ndim != 2 or len(source_ids) != num_frames or source_ids.shape[1] < 1
        or not np.issubdtype(source_ids.dtype, np.integer) or source_ids.min() < 0
        or source_ids.max() >= sources.num_views):
      raise ValueError(f"source_ids must be [{num_frames}, V] indices into the "
                       f"{sources.num_views} source views, got {source_ids.shape} "
                       f"{source_ids.dtype}")
  renderers: dict = {}

  def renderer_of(i):
    """The renderer of frame i's sources (one kept: paths change sources rarely)."""
    key = None if source_ids is None else tuple(int(v) for v in source_ids[i])
    if key not in renderers:
      renderers.clear()
      chosen = sources if key is None else jax.tree.map(lambda a: a[np.asarray(key)],
                                                         sources)
      renderers[key] = family.renderer(variables, chosen, near, far, chunk_size)
    return renderers[key]

  def frame(i):
    out = renderer_of(i)(Cameras(jnp.asarray(k[i]), jnp.asarray(c2w[i]), height, width))
    # uint8: 4x less memory than float.
    return {"rgb": visualize.to_uint8(out["rgb"].reshape(height, width, 3)),
            "depth": np.asarray(out["depth"]).reshape(height, width).astype(np.float32)}

  rgbs, depths = [], []
  start = time.perf_counter()
  frames_of = map_fn or (lambda fn, items: enumerate(map(fn, items)))
  for i, out in frames_of(frame, range(num_frames)):
    rgbs.append(out["rgb"])
    depths.append(out["depth"])
    if progress:
      elapsed = time.perf_counter() - start
      rate = (i + 1) / max(elapsed, 1e-9)  # the first frame includes compilation
      speed = f"{rate:.2f} frames/s" if rate >= 0.1 else f"{1 / rate:.0f} s/frame"
      print(f"\r  frame {i + 1}/{num_frames}  {speed}  "
            f"ETA {(num_frames - i - 1) / rate:.0f}s", end="", flush=True)
  if not rgbs:  # a process of a multi-host job other than the chief: nothing to write
    return None
  if progress:
    print()
  lo, hi = visualize.depth_range(near, far) if depth_range is None else depth_range
  frames = (side_by_side(rgb, depth, lo, hi) for rgb, depth in zip(rgbs, depths))
  write_video(frames, out_path, fps=fps)
  if progress:
    print(f"  wrote {out_path}: {num_frames} frames of {height}x{2 * width} at {fps:g} fps, "
          f"depth colours {lo:.3g}..{hi:.3g}")
  return out_path
