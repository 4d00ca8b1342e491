r"""Photos or a video to an LLFF-layout scene, by structure from motion (pycolmap).

  python -m movenerf.tools.process_images --images photos/ --out scenes/plant --downscale 4
  python -m movenerf.tools.process_images --video walk.mp4 --fps 2 --out scenes/walk
  python -m movenerf.data.tfds.build --format llff --src scenes --out ~/tfds \
      --option factor=4

Runs COLMAP (feature extraction, matching: exhaustive for photos, sequential for video
frames, incremental mapping; :mod:`movenerf.data.sfm` has the settings) on same-sized
photos, or on frames taken from a video (``--fps`` frames per second, or ``--frames``
evenly spaced), and writes the scene ``movenerf.data.tfds.build --format llff`` reads:

  OUT/images/            the photos (or frames) structure from motion ran on
  OUT/images_K/          with --downscale K: them downscaled K times (PNG)
  OUT/poses_bounds.npy   LLFF cameras (hwf of images/) and per-view near/far
  OUT/sparse/            the sparse points: points3D.npy, colors.npy, errors.npy,
                         visibility.npy ([points, views] bool), 0/ (COLMAP's model)
  OUT/sfm_summary.json   registered of given, reprojection error, bounds, timings

Progress lines give the stage, count, rate and ETA; the last lines summarise. Bad input
(fewer than 3 images, images of mixed sizes, an unreadable one, an existing OUT without
``--overwrite``) is one line naming it (exit status 2); structure from motion that fails
(nothing reconstructed, or images left unregistered without ``--allow_partial``) is one
line naming the images (exit status 1). The scene is written to ``OUT.tmp-<pid>`` and
renamed to OUT only when complete: a failure leaves nothing, and the folder of a run
that was killed is removed by the next run for that OUT.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from absl import flags
import numpy as np
from PIL import Image

from movenerf import cli, storage
from movenerf.data import sfm
from movenerf.validation import UsageError

# Defined by _define_flags() when run as a program (other tools define --out, --frames).
_F: dict = {}


def _define_flags() -> None:
  """The program's flags; importing the module (tests, other tools) defines none."""
  _F.update(cli.define_flags((
      ("string", "images", None, "folder of photos (one size)"),
      ("string", "video", None, "a video file (frames are taken from it)"),
      ("float", "fps", None, "with --video: frames per second to take (default 2 unless "
       "--frames)"),
      ("integer", "frames", None, "with --video: this many frames, evenly spaced"),
      ("integer", "downscale", 1, "also write images_K/ downscaled K times"),
      ("integer", "overlap", 10, "sequential matching: neighbours per frame"),
      ("bool", "allow_partial", False, "keep the registered images when some do not "
       "register (else an error)"),
      ("bool", "overwrite", False, "replace an existing OUT"),
      ("integer", "threads", -1, "CPU threads (-1: all)"),
      ("float", "focal", None, "the images' focal length in pixels, when known (default: "
       "estimated)"),
      ("integer", "seed", 0, "COLMAP's random seed"))))
  _F["out"] = flags.DEFINE_string("out", None, "the scene folder to write", required=True)
  _F["preset"] = flags.DEFINE_enum("preset", "auto", list(sfm.PRESETS), "COLMAP settings: "
                                   "auto = fast, then robust if an image is left unregistered")
  _F["matcher"] = flags.DEFINE_enum("matcher", "auto", list(sfm.MATCHERS), "auto: "
                                    "exhaustive for photos, sequential for video frames")
  _F["camera_model"] = flags.DEFINE_enum("camera_model", "SIMPLE_RADIAL",
                                         list(sfm.CAMERA_MODELS),
                                         "COLMAP's camera model (SIMPLE_RADIAL: LLFF's)")


DEFAULT_FPS = 2.0


def log(line: str) -> None:
  print(line, flush=True)


def check_video_options(video: str, fps: float | None, frames: int | None) -> None:
  if not Path(video).is_file():
    raise UsageError(f"--video={video}: no such file")
  if fps is not None and frames is not None:
    raise UsageError("give --fps or --frames, not both")
  if fps is not None and not fps > 0:
    raise UsageError(f"--fps={fps}: must be > 0")
  if frames is not None and frames < sfm.MIN_IMAGES:
    raise UsageError(f"--frames={frames}: must be >= {sfm.MIN_IMAGES}")


def frame_indices(num_frames: int, source_fps: float, fps: float | None,
                  frames: int | None) -> list[int]:
  """Which of a video's ``num_frames`` frames to take: ``frames`` evenly spaced
  (first and last included), or one every ``1 / fps`` seconds."""
  if num_frames <= 0:
    return []
  if frames is not None:
    return sorted(set(np.round(np.linspace(0, num_frames - 1, frames)).astype(int).tolist()))
  step = source_fps / (fps or DEFAULT_FPS)
  return sorted(set(int(round(k * step)) for k in range(int(num_frames / step) + 1)
                    if round(k * step) < num_frames))


def extract_frames(video: str, out_dir: Path, fps: float | None,
                   frames: int | None) -> list[str]:
  """Writes the chosen frames of ``video`` as ``frame_00000.png``, ... (index in the
  video); returns the file names."""
  try:
    import imageio_ffmpeg  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("--video needs imageio-ffmpeg: pip install 'movenerf[sfm]'",
                      name="imageio_ffmpeg") from e
  try:
    count, _ = imageio_ffmpeg.count_frames_and_secs(video)
    reader = imageio_ffmpeg.read_frames(video)
    meta = next(reader)
  except (RuntimeError, OSError, StopIteration) as e:
    raise UsageError(f"--video={video}: not a readable video ({' '.join(str(e).split())})") \
        from None
  wanted = set(frame_indices(count, float(meta.get("fps") or 30.0), fps, frames))
  width, height = meta["size"]
  out_dir.mkdir(parents=True, exist_ok=True)
  names = []
  progress = sfm.Progress(log, "frames", len(wanted), "frames")
  try:
    for index, data in enumerate(reader):
      if index in wanted:
        rgb = np.frombuffer(data, np.uint8).reshape(height, width, 3)
        name = f"frame_{index:05d}.png"
        Image.fromarray(rgb).save(out_dir / name)
        names.append(name)
        progress.update(len(names))
  finally:
    reader.close()
  if len(names) < sfm.MIN_IMAGES:
    raise UsageError(f"--video={video}: {len(names)} frames taken ({count} in the video); "
                     f"structure from motion needs at least {sfm.MIN_IMAGES}: give more "
                     "--fps or --frames")
  return names


def check_out(out: str, overwrite: bool) -> Path:
  path = Path(out)
  if path.exists() and not overwrite:
    raise UsageError(f"--out={out}: exists; give --overwrite to replace it")
  ancestor = path.parent
  while not ancestor.exists():
    ancestor = ancestor.parent
  if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
    raise UsageError(f"--out={out}: {ancestor} is not a writable folder")
  return path


def remove_stale(out_path: Path) -> None:
  """Removes ``OUT.tmp-<pid>`` / ``OUT.old-<pid>`` folders that a killed run of this
  host left (one line each); a running process's folder is left alone."""
  for path in out_path.parent.glob(f"{out_path.name}.*-*"):
    kind, _, pid = path.name[len(out_path.name) + 1:].partition("-")
    if kind in ("tmp", "old") and pid.isdigit() and not storage.process_alive(int(pid)):
      shutil.rmtree(path, ignore_errors=True)
      log(f"removed {path}, left by a run that was stopped")


def process(out: str, images: str | None = None, video: str | None = None,
            fps: float | None = None, frames: int | None = None, downscale: int = 1,
            preset: str = "auto", matcher: str = "auto", overlap: int = 10,
            allow_partial: bool = False, overwrite: bool = False, threads: int = -1,
            seed: int = 0, focal: float | None = None,
            camera_model: str = "SIMPLE_RADIAL") -> dict:
  """Runs structure from motion and writes the scene to ``out`` (atomically).

  Returns:
    The summary written to ``sfm_summary.json``.
  Raises:
    UsageError: bad input or options (nothing written).
    sfm.SfmError: structure from motion failed (nothing written).
  """
  if (images is None) == (video is None):
    raise UsageError("give --images DIR or --video FILE")
  if images is not None and (fps is not None or frames is not None):
    raise UsageError("--fps and --frames are for --video")
  if isinstance(downscale, bool) or downscale < 1:
    raise UsageError(f"--downscale={downscale}: must be >= 1")
  if overlap < 1:
    raise UsageError(f"--overlap={overlap}: must be >= 1")
  out_path = check_out(out, overwrite)
  if images is not None:
    image_dir = Path(images)
    names = sfm.list_images(image_dir)
    width, height = sfm.check_same_size(image_dir, names)
  else:
    check_video_options(video, fps, frames)
  start = time.perf_counter()
  remove_stale(out_path)
  tmp = out_path.parent / f"{out_path.name}.tmp-{os.getpid()}"
  if tmp.exists():
    shutil.rmtree(tmp)
  try:
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    if video is not None:
      image_dir = tmp / "images"
      names = extract_frames(video, image_dir, fps, frames)
      width, height = sfm.check_same_size(image_dir, names)
    if downscale > 1 and (width // downscale < 1 or height // downscale < 1):
      raise UsageError(f"--downscale={downscale}: too large for {width}x{height} images")
    chosen = matcher if matcher != "auto" else ("sequential" if video else "exhaustive")
    rec = sfm.reconstruct(image_dir, tmp / ".sfm", names, preset=preset, matcher=chosen,
                          overlap=overlap, num_threads=threads, seed=seed, log=log,
                          keep_model=tmp / "sparse" / "0", focal=focal,
                          camera_model=camera_model)
    missing = rec.unregistered
    if missing and not allow_partial:
      raise sfm.SfmError(
          f"structure from motion registered {rec.num_registered} of {len(names)} "
          f"images; not registered: {', '.join(missing)} (give --allow_partial to keep "
          f"the {rec.num_registered})")
    if rec.num_registered < sfm.MIN_IMAGES:
      raise sfm.SfmError(f"structure from motion registered only {rec.num_registered} "
                         f"of {len(names)} images")
    written = sfm.write_llff(tmp, image_dir, rec, downscale)
    if video is not None:
      for name in missing:  # frames that did not register are not part of the scene
        (tmp / "images" / name).unlink()
    shutil.rmtree(tmp / ".sfm", ignore_errors=True)
    summary = dict(
        given=len(names), registered=rec.num_registered, unregistered=missing,
        mean_reprojection_error_px=rec.mean_reprojection_error,
        num_points=int(len(rec.points)), near=written["near"], far=written["far"],
        image_size=[width, height], downscale=downscale,
        camera=dict(model=rec.camera_model,
                    params=np.nanmean(rec.camera_params, axis=0).tolist(),
                    focal=float(np.nanmean(rec.hwf[:, 2])),
                    focal_downscaled=(written["focal_downscaled"][0]
                                      if written["focal_downscaled"] else None)),
        settings=rec.settings, attempts=list(rec.attempts),
        matcher=chosen, source=os.path.abspath(video or images),
        seconds=round(time.perf_counter() - start, 2))
    (tmp / "sfm_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if out_path.exists():
      old = out_path.parent / f"{out_path.name}.old-{os.getpid()}"
      out_path.rename(old)
      tmp.rename(out_path)
      shutil.rmtree(old)
    else:
      tmp.rename(out_path)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  log(f"registered {summary['registered']} of {summary['given']} images "
      f"({summary['settings']} settings); mean reprojection error "
      f"{summary['mean_reprojection_error_px']:.3f} px; {summary['num_points']} points; "
      f"near/far {summary['near']:.3g} .. {summary['far']:.3g}; "
      f"{summary['seconds']:.0f} s")
  if missing:
    log(f"not registered (left out): {', '.join(missing)}")
  log(f"wrote {out_path}/ (poses_bounds.npy, images/"
      + (f", images_{downscale}/" if downscale > 1 else "") + ", sparse/, sfm_summary.json)")
  return summary


def main(argv):
  if len(argv) > 1:
    raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  keys = ("images", "video", "fps", "frames", "downscale", "preset", "matcher", "overlap",
          "allow_partial", "overwrite", "threads", "seed", "focal", "camera_model")
  process(_F["out"].value, **{k: _F[k].value for k in keys})


def program() -> None:
  """The ``movenerf-process-images`` console script: ``main`` with one-line errors (exit
  status 2: bad input, 1: structure from motion failed; ``--verbose``: the traceback)."""
  cli.run(main, "movenerf.tools.process_images", define=_define_flags)


if __name__ == "__main__":
  program()
