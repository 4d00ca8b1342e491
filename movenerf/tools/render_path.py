r"""A fly-through of one scene: a smooth camera path in the scene's frame rendered by a
trained run or by official GNT weights, RGB | depth side by side.

  python -m movenerf.tools.render_path --workdir runs/demo --format llff \
      --src ../shared/data/real/nerf_llff_data --scene flower --path spiral --frames 60 \
      --downscale 4 --out flower.mp4
  python -m movenerf.tools.render_path --checkpoint model_720000.pth --config gnt:paper \
      --format nerf_synthetic --src data/nerf_synthetic --scene lego --path circle \
      --frames 120 --out lego.mp4
  # fine-tune on the scene's own views first (a movenerf training run in OUT.finetune/)
  python -m movenerf.tools.render_path --workdir runs/demo ... --finetune_steps 300

Weights: ``--workdir`` (a ``movenerf.train`` run, with the config saved beside its
checkpoints) or ``--checkpoint`` (official GNT ``.pth`` / ``.npz``; the architecture is
read from the file, ``--config`` gives the sampling). The scene: ``--src`` (a folder of
scenes, or one scene) in ``--format`` (``movenerf.data.formats``; ``--option KEY=VALUE``
passes reader options such as ``factor=8``), ``--scene`` its folder name.

Paths (``movenerf.geometry.camera_paths``): ``spiral`` (LLFF's spiral in front of a
forward-facing rig), ``circle`` (an orbit around an object), ``interpolate`` (through
the input cameras themselves) or ``auto`` (spiral or circle, from how widely the
cameras' axes spread). Every frame is rendered from its own ``--num_source_views``
nearest input views (by camera centre), every view of the scene being a candidate, at
the scene's image size divided by ``--downscale``; near and far span the scene's.

Writes OUT (the MP4: F frames of RGB | depth on one depth scale), ``OUT`` with ``.png``
(a labelled still of the middle frame) and with ``.json`` (the settings, the sources of
every frame, seconds per frame). Bad input (weights, format, folder, scene, option, path
name, frame count, an existing OUT without ``--overwrite``) is one line naming it (exit
status 2) before anything is read at length or written. Progress lines give frames/s
and the time left.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from absl import flags, logging
import ml_collections
import numpy as np

from movenerf import cli, configs, storage
from movenerf import eval as eval_main
from movenerf import train as train_main
from movenerf.data import images, samplers
from movenerf.data.formats import registry as formats
from movenerf.evaluation import video, visualize
from movenerf.geometry import camera_paths
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.models import registry
from movenerf.training import checkpoint
from movenerf.validation import UsageError

PATHS = ("auto", "spiral", "circle", "interpolate")

# Defined by _define_flags() when run as a program.
_F: dict = {}


def _define_flags() -> None:
  """Flags exist only when this module is the program (other programs define --config)."""
  _F["config"] = configs.define_config_flag("config", "gnt:paper", lock_config=True)
  _F.update(cli.define_flags((
      ("string", "workdir", None, "a movenerf training run"),
      ("string", "checkpoint", None, "official GNT weights (.pth / .npz)"),
      ("string", "format", None, f"the scene's format: {', '.join(sorted(formats.FORMATS))}"),
      ("string", "src", None, "folder of scenes (or one scene)"),
      ("string", "scene", None, "the scene's folder name under --src"),
      ("multi", "option", [], "reader option KEY=VALUE (e.g. factor=8); repeatable"),
      ("string", "path", "auto", f"camera path: {', '.join(PATHS)}"),
      ("integer", "frames", 60, "frames of the video"),
      ("float", "fps", 24.0, "frames per second"),
      ("string", "out", None, "the MP4 to write"),
      ("bool", "overwrite", False, "replace an existing --out"),
      ("integer", "num_source_views", 0, "source views per frame (0: the config's "
       "eval.num_source_views)"),
      ("integer", "downscale", 1, "render at the scene's image size divided by this"),
      ("integer", "chunk_size", 0, "rays per compiled call (0: the config's "
       "eval.chunk_size)"),
      ("integer", "finetune_steps", 0, "fine-tune this many steps on the scene's views "
       "first (a training run in OUT.finetune/)"))))


def _value(name: str):
  return _F[name].value


def _parse_options(fmt: str, items) -> dict:
  options = cli.key_values(items)
  try:
    return formats.parse_options(fmt, options)
  except ValueError as e:
    raise UsageError(f"--option: {e}") from None


def check_inputs(workdir, checkpoint_file, fmt, src, scene, path_kind, frames, out,
                 overwrite, downscale, num_source_views, chunk_size, finetune_steps,
                 options) -> tuple[Path, dict]:
  """(the scene folder, the reader options); UsageError naming the first bad input."""
  if bool(workdir) == bool(checkpoint_file):
    raise UsageError("give one of --workdir (a training run) and --checkpoint (official "
                     "weights)")
  if checkpoint_file:
    if not checkpoint_file.endswith(train_main.WEIGHT_FILE_SUFFIXES):
      raise UsageError(f"--checkpoint {checkpoint_file}: official GNT weights end in "
                       f"{', '.join(train_main.WEIGHT_FILE_SUFFIXES)}")
    if not storage.exists(checkpoint_file):
      raise UsageError(f"--checkpoint {checkpoint_file}: no such file")
  if fmt not in formats.FORMATS:
    raise UsageError(f"--format {fmt!r}: choose one of {', '.join(sorted(formats.FORMATS))}"
                     + (" (generated scenes have no folder; render_view renders them)"
                        if fmt == formats.GENERATED else ""))
  for name, value in (("--src", src), ("--scene", scene), ("--out", out)):
    if not value:
      raise UsageError(f"{name} is required")
  if path_kind not in PATHS:
    raise UsageError(f"--path {path_kind!r}: choose one of {', '.join(PATHS)}")
  if frames < (2 if path_kind == "interpolate" else 1):
    raise UsageError(f"--frames {frames}: at least {2 if path_kind == 'interpolate' else 1}")
  for name, value, least in (("--downscale", downscale, 1), ("--num_source_views",
                             num_source_views, 0), ("--chunk_size", chunk_size, 0),
                             ("--finetune_steps", finetune_steps, 0)):
    if value < least:
      raise UsageError(f"{name} {value}: must be >= {least}")
  if not out.endswith(".mp4"):
    raise UsageError(f"--out {out}: the video's name must end in .mp4")
  if storage.exists(out) and not overwrite:
    raise UsageError(f"--out {out} exists (pass --overwrite to replace it)")
  opts = _parse_options(fmt, options)
  try:
    scene_dir = formats.find_scenes(formats.FORMATS[fmt], Path(src).expanduser(), [scene])[0]
  except (FileNotFoundError, ValueError) as e:
    raise UsageError(f"--src/--scene: {e}") from None
  if not any(scene_dir.glob(formats.FORMATS[fmt].marker)):
    raise UsageError(f"--scene {scene}: {scene_dir} holds no {formats.FORMATS[fmt].marker}, "
                     f"so it is not a {fmt} scene")
  return scene_dir, opts


def load_weights(workdir, checkpoint_file, config) -> tuple:
  """(model family, params, the config to render and fine-tune with)."""
  if checkpoint_file:
    family, params = eval_main.load_model(config, checkpoint_file)
    return family, params, config
  try:
    params, stored = checkpoint.restore_params(workdir)
  except FileNotFoundError as e:
    raise UsageError(f"--workdir: {e}") from None
  if not stored:
    raise UsageError(f"--workdir {workdir}: its checkpoint holds no config")
  config = ml_collections.ConfigDict(stored)
  return registry.build(config.model), params, config


def finetune(config, source: str, fmt: str, src: str, scene: str, options: dict, steps: int,
             workdir: str, image_size: tuple[int, int]) -> str:
  """Trains ``steps`` steps from ``source`` (a run or official weights) on the scene's
  views resized to ``image_size`` (the rendered size), with the few-shot variant's
  optimiser (``gnt:fewshot``); returns the run."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.data.example.source_size = tuple(int(x) for x in image_size)
  entry = ml_collections.ConfigDict(dict(format=fmt, path=str(src), scenes=scene,
                                         weight=1.0, options=dict(options)))
  c.data.train = ml_collections.ConfigDict({"scene": entry})
  c.data.eval = ml_collections.ConfigDict({"scene": entry})
  fewshot = configs.load("gnt:fewshot").optim
  c.optim.update(decay_steps=fewshot.decay_steps, lr_feature=fewshot.lr_feature,
                 lr_transformer=fewshot.lr_transformer)
  c.init_from = source
  c.upcycle = False
  c.train.update(num_steps=steps, checkpoint_every=steps, log_every=max(1, steps // 10),
                 image_every=0)
  c.eval.at_end = False
  c.lock()
  train_main.train(c, workdir)
  return workdir


def camera_path(kind: str, c2w: np.ndarray, near: float, far: float, frames: int
                ) -> tuple[str, np.ndarray]:
  """(the path's kind, [F, 4, 4] camera-to-world)."""
  if kind == "auto":
    kind = camera_paths.path_kind(c2w)
  if kind == "spiral":
    return kind, camera_paths.spiral_path(c2w, near, far, frames)
  if kind == "circle":
    return kind, camera_paths.circle_path(c2w, frames)
  return kind, camera_paths.interpolate_path(c2w, frames)


def render_path(family, params, config, rec, path_kind: str, frames: int, out: str,
                fps: float = 24.0, num_source_views: int = 0, downscale: int = 1,
                chunk_size: int = 0, verbose: bool = True) -> dict:
  """Renders the fly-through of a scene record; writes the MP4, its still and its JSON;
  returns the summary."""
  h, w = rec.height // downscale, rec.width // downscale
  if min(h, w) < 1:
    raise UsageError(f"--downscale {downscale}: larger than the {rec.height}x{rec.width} "
                     "images")
  pool_images = np.stack([images.resize_image(im, (h, w)) for im in rec.images]) \
      if (h, w) != (rec.height, rec.width) else rec.images
  ks = np.stack([samplers.scale_intrinsics_for(k, (rec.height, rec.width), (h, w))
                 for k in rec.intrinsics]).astype(np.float32)
  v = num_source_views or int(config.eval.num_source_views)
  if v > rec.num_views:
    raise UsageError(f"--num_source_views {v}: the scene has {rec.num_views} views")
  near, far = float(np.min(rec.near)), float(np.max(rec.far))
  kind, path = camera_path(path_kind, rec.c2w, near, far, frames)
  ids = video.frame_sources(path, rec.c2w, v)
  pool = SourceViews(np.asarray(pool_images, np.float32) / 255.0,
                     Cameras(ks, rec.c2w.astype(np.float32), h, w))
  k = ks.mean(0)  # every frame: the mean of the inputs' intrinsics
  start = time.perf_counter()
  video.render_video(family, {"params": params}, pool, k, path, h, w, near, far,
                     chunk_size or int(config.eval.chunk_size), out, fps=fps,
                     progress=verbose, depth_range=visualize.depth_range(rec.near, rec.far),
                     source_ids=ids)
  seconds = time.perf_counter() - start
  middle = frames // 2
  still = video.read_frame(out, middle)[:h, :2 * w]
  base = out[:-len(".mp4")]
  visualize.save_png(base + ".png", visualize.panel(
      still, f"{rec.scene_id}: {kind} path, frame {middle + 1}/{frames}, RGB | depth"))
  summary = {"scene": rec.scene_id, "path": kind, "frames": frames, "fps": fps,
             "size": [h, w], "near": near, "far": far, "num_source_views": v,
             "seconds": round(seconds, 2), "seconds_per_frame": round(seconds / frames, 3),
             "sources_per_frame": ids.tolist(), "video": out, "still": base + ".png"}
  storage.write_json(base + ".json", summary, indent=1)
  return summary


def main(argv):
  if len(argv) > 1:
    raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  workdir, ckpt, out = _value("workdir"), _value("checkpoint"), _value("out")
  scene_dir, options = check_inputs(
      workdir, ckpt, _value("format"), _value("src"), _value("scene"), _value("path"),
      _value("frames"), out or "", _value("overwrite"), _value("downscale"),
      _value("num_source_views"), _value("chunk_size"), _value("finetune_steps"),
      _value("option"))
  try:
    storage.check_writable(os.path.dirname(os.path.abspath(out)))
  except storage.StorageError as e:
    raise UsageError(f"--out {out}: {e}") from None
  family, params, config = load_weights(workdir, ckpt, _F["config"].value)
  try:
    rec = formats.read_scene(_value("format"), scene_dir, **options)
  except (ValueError, FileNotFoundError) as e:
    raise UsageError(f"--scene {_value('scene')}: {e}") from None
  if _value("finetune_steps"):
    run = out[:-len(".mp4")] + ".finetune"
    print(f"fine-tuning {_value('finetune_steps')} steps on {rec.scene_id} in {run}")
    finetune(config, ckpt or workdir, _value("format"), _value("src"), _value("scene"),
             options, _value("finetune_steps"), run,
             (rec.height // _value("downscale"), rec.width // _value("downscale")))
    family, params, config = load_weights(run, None, None)
  print(f"rendering {_value('frames')} frames of {rec.scene_id} "
        f"({rec.num_views} input views) at "
        f"{rec.height // _value('downscale')}x{rec.width // _value('downscale')}")
  summary = render_path(family, params, config, rec, _value("path"), _value("frames"), out,
                        fps=_value("fps"), num_source_views=_value("num_source_views"),
                        downscale=_value("downscale"), chunk_size=_value("chunk_size"))
  print(f"wrote {out}, {summary['still']} and {out[:-4]}.json: {summary['path']} path, "
        f"{summary['seconds_per_frame']:.2f} s per frame")


def program() -> None:
  """The ``movenerf-render-path`` console script: ``main`` with one-line errors (exit
  status 2: bad input, 1: a failed run; ``--verbose``: the traceback)."""
  cli.run(main, "movenerf.tools.render_path", define=_define_flags,
          check=lambda: cli.config_check(_F["config"])())


if __name__ == "__main__":
  program()
