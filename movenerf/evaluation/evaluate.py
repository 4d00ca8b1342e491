"""Evaluation: render held-out views from their nearest source views; PSNR / SSIM / LPIPS.

For every evaluation dataset of the config (``config.data.eval``) and every held-out
view (split "test", sources from "train" of the same scene), writes under ``out_dir``::

  <dataset>/<scene>/<view>_pred.png     prediction (rendered size)
  <dataset>/<scene>/<view>_gt.png       ground truth (rendered size)
  <dataset>/<scene>/<view>_depth.png    predicted | true depth (when known), labelled, on
                                        the scene's scale, with a colour bar
  <dataset>/<scene>/<view>_experts.png  GNT-MoVE: top-1 expert per pixel, one map per MoE
                                        layer, with a legend of expert colours
  <dataset>/<scene>/<view>_sheet.png    ground truth | prediction | error | depth
                                        (| experts), labelled, PSNR / SSIM / LPIPS below
  metrics.json                          per view, per scene, per dataset and overall means
  video.mp4                             with eval.video_frames > 0: RGB | depth along a path

and prints a table. Images for people (depth, experts, sheets) are magnified with
nearest neighbour to at least ``visualize.MIN_HEIGHT`` pixels in height. Depth of a
scene is coloured on one scale, ``scene_depth_range``, in the PNGs and the video alike;
grey is "no surface" (see ``visualize``). LPIPS is reported for every network of
``eval.lpips`` (default "alex,vgg": ``lpips_alex`` and ``lpips_vgg``) with the weights of
``lpips.default_lpips``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import jax.numpy as jnp
import numpy as np

from movenerf import storage, validation
from movenerf.data import images, pipeline
from movenerf.data import sources as train_data
from movenerf.evaluation import lpips as lpips_lib
from movenerf.evaluation import hosts, video, visualize
from movenerf.geometry import camera_paths
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.image import metrics as image_metrics
from movenerf.models.family import ModelFamily


def example_cameras(ex: dict) -> tuple[Cameras, SourceViews]:
  """(target camera, source views) of an evaluation example."""
  h, w = ex["tgt_image"].shape[:2]
  sh, sw = ex["src_images"].shape[1:3]
  target = Cameras(jnp.asarray(ex["tgt_intrinsics"]), jnp.asarray(ex["tgt_c2w"]), h, w)
  sources = SourceViews(jnp.asarray(ex["src_images"], jnp.float32) / 255.0,
                        Cameras(jnp.asarray(ex["src_intrinsics"]), jnp.asarray(ex["src_c2w"]),
                                sh, sw))
  return target, sources


def render_example(family: ModelFamily, variables, ex: dict, chunk_size: int) -> dict:
  """Renders the whole target of an evaluation example with the family's renderer:
  'rgb' [H, W, 3], 'depth' [H, W] (and 'experts' [H, W, L, E] for GNT-MoVE)."""
  target, sources = example_cameras(ex)
  render = family.renderer(variables, sources, float(ex["near"]), float(ex["far"]),
                           chunk_size)
  return render(target)


def nearest_view(ex: dict) -> dict:
  """The baseline a generalising model must beat: the nearest source view, unchanged
  (resized to the target's size if needed), as the prediction: 'rgb' [H, W, 3]."""
  image = ex["src_images"][0]  # eval_examples ranks the sources best first
  hw = ex["tgt_image"].shape[:2]
  if image.shape[:2] != hw:
    image = images.resize_image(image, hw)
  return {"rgb": image.astype(np.float32) / 255.0}


# The error panel colours the mean absolute RGB error over [0, ERROR_MAX].
ERROR_MAX = 0.25


def scene_depth_range(source, scene_id: str, splits=("test", "train")) -> tuple[float, float]:
  """The depth colour scale of a scene: ``visualize.depth_range`` of the near / far of
  all its cameras in ``splits`` (those that have the scene)."""
  near, far = [], []
  for split in splits:
    try:
      cams = source.scene(split, scene_id)
    except KeyError:
      continue
    near.append(np.asarray(cams.near).reshape(-1))
    far.append(np.asarray(cams.far).reshape(-1))
  if not near:
    return visualize.depth_range([], [])
  return visualize.depth_range(np.concatenate(near), np.concatenate(far))


def _depth_pairs(out: dict, ex: dict) -> list[tuple[str, np.ndarray]]:
  """(label, [H, W] depth): predicted, and true depth when known (NaN off the mask)."""
  h, w = ex["tgt_image"].shape[:2]
  pairs = [("predicted depth", np.asarray(out["depth"], np.float32).reshape(h, w))]
  if "tgt_depth" in ex:
    true = np.where(ex.get("tgt_mask", ex["tgt_depth"] > 0), ex["tgt_depth"], np.nan)
    pairs.append(("true depth", np.asarray(true, np.float32).reshape(h, w)))
  return pairs


def panels(out: dict, ex: dict, depth_range: Optional[tuple[float, float]] = None) -> dict:
  """Images for people, float [H, W, 3]: 'depth' (predicted | true depth on one scale,
  with a colour bar) and, for GNT-MoVE, 'experts' (top-1 expert per pixel per MoE layer,
  with a legend). ``depth_range`` (lo, hi) defaults to ``visualize.depth_range`` of the
  example's near / far."""
  result = {}
  if "depth" not in out:
    return result
  lo, hi = depth_range or visualize.depth_range(ex["near"], ex["far"])
  result["depth"] = visualize.depth_image(_depth_pairs(out, ex), lo, hi)
  if "experts" in out:
    result["experts"] = visualize.experts_image(out["experts"])
  return result


def _fmt(value, digits: int) -> str:
  return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def comparison_sheet(out: dict, ex: dict, scores: dict, title: str,
                     depth_range: Optional[tuple[float, float]] = None) -> np.ndarray:
  """ground truth | prediction | error | depth (| experts), labelled, with ``title`` and
  the view's PSNR / SSIM / LPIPS (``scores``) as the caption: float [H, W, 3].

  The error panel is the mean absolute RGB error on [0, ``ERROR_MAX``]; depth uses
  ``depth_range`` (default: the example's near / far) and experts the top-1 maps.
  """
  gt = ex["tgt_image"].astype(np.float32) / 255.0
  pred = np.clip(np.asarray(out["rgb"], np.float32).reshape(gt.shape), 0.0, 1.0)
  error = np.mean(np.abs(pred - gt), axis=-1)
  columns = [visualize.panel(gt, "ground truth"), visualize.panel(pred, "prediction")]
  width = visualize.upscale(gt).shape[1] + 2 * visualize.FRAME
  columns.append(visualize.panel(
      visualize.colorize(error, 0.0, ERROR_MAX), "error",
      visualize.colorbar(0.0, ERROR_MAX, width, title="|pred - gt|", ends=("", ""),
                         no_surface=False)))
  if "depth" in out:
    lo, hi = depth_range or visualize.depth_range(ex["near"], ex["far"])
    depth = _depth_pairs(out, ex)[0][1]
    columns.append(visualize.panel(visualize.colorize(depth, lo, hi), "depth",
                                   visualize.colorbar(lo, hi, width)))
  if "experts" in out:
    columns.append(visualize.experts_image(out["experts"]))
  caption = (f"{title}   PSNR {_fmt(scores.get('psnr'), 2)} dB   "
             f"SSIM {_fmt(scores.get('ssim'), 4)}" +
             "".join(f"   LPIPS-{k[len('lpips_'):]} {_fmt(v, 4)}"
                     for k, v in scores.items() if k.startswith("lpips_")))
  return visualize.comparison_sheet(columns, caption)


def evaluate_source(family: ModelFamily, variables, name: str, source, cfg, out_dir: str,
                    lpips_fns=None, verbose: bool = True, scene_ids=None,
                    predict: Optional[Callable[[dict], dict]] = None) -> list[dict]:
  """Renders and scores every held-out view of one dataset; returns per-view rows.

  ``scene_ids`` limits the scenes; ``predict`` (example -> {'rgb', ...}) replaces
  rendering with ``family`` (e.g. ``nearest_view``).
  """
  rows = []
  limit = cfg.max_views_per_scene or None
  examples = list(pipeline.eval_examples(source, cfg.num_source_views,
                                         scene_ids=scene_ids, max_views_per_scene=limit,
                                         image_size=cfg.get("image_size")))
  check_lpips_size(lpips_fns, name, examples)
  scales = {sid: scene_depth_range(source, sid) for sid in {ex["scene_id"] for ex in examples}}
  if predict is None:
    predict = lambda ex: render_example(family, variables, ex, cfg.chunk_size)

  def score(ex):
    out = predict(ex)
    gt = ex["tgt_image"].astype(np.float32) / 255.0
    scores = image_metrics.image_metrics(out["rgb"], gt, lpips_fns)
    result = {f"score_{k}": v for k, v in scores.items()}
    result["pred"] = visualize.to_uint8(out["rgb"])
    scale = scales[ex["scene_id"]]
    for kind, image in panels(out, ex, scale).items():
      result[f"panel_{kind}"] = visualize.to_uint8(image)
    title = f"{name} / {ex['scene_id']} / view {ex['view_id']:03d}"
    result["panel_sheet"] = visualize.to_uint8(comparison_sheet(out, ex, scores, title, scale))
    return result

  start = time.perf_counter()
  for i, result in hosts.map_to_chief(score, examples):
    ex = examples[i]
    stem = storage.join(out_dir, name, ex["scene_id"], f"{ex['view_id']:03d}")
    visualize.save_png(stem + "_pred.png", result["pred"])
    visualize.save_png(stem + "_gt.png", ex["tgt_image"])
    for key, image in result.items():
      if key.startswith("panel_"):
        visualize.save_png(f"{stem}_{key[len('panel_'):]}.png", image)
    scores = {k[len("score_"):]: v for k, v in result.items() if k.startswith("score_")}
    rows.append(dict(dataset=name, scene=ex["scene_id"], view=ex["view_id"], **scores))
    if verbose:
      done = i + 1
      eta = (len(examples) - done) * (time.perf_counter() - start) / done
      print(f"  eval {name}: {done}/{len(examples)} views  psnr {scores['psnr']:.2f}  "
            f"ETA {eta:.0f}s", flush=True)
  return rows


def check_lpips_size(lpips_fns, name: str, examples: list[dict]) -> None:
  """Raises UsageError when a view of dataset ``name`` is smaller than an LPIPS
  network of ``lpips_fns`` takes (`lpips.min_image_size`)."""
  for net in lpips_fns or {}:
    need = lpips_lib.min_image_size(net)
    for ex in examples:
      h, w = ex["tgt_image"].shape[:2]
      if min(h, w) < need:
        raise validation.UsageError(
            f"eval.lpips: LPIPS-{net} needs views of at least {need}x{need} pixels, the "
            f"views of {name!r} are {h}x{w}; set eval.image_size, or leave {net} out of "
            "eval.lpips")


def metric_keys(rows: list[dict]) -> tuple[str, ...]:
  """psnr, ssim and the lpips_<net> keys the rows have, in that order."""
  lpips_keys = sorted({k for r in rows for k in r if k.startswith("lpips_")},
                      key=lambda k: (k != "lpips_alex", k))
  return ("psnr", "ssim", *lpips_keys)


def _mean(rows, key):
  vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
  return float(np.mean(vals)) if len(vals) == len(rows) and vals else "n/a"


def summarize(rows: list[dict]) -> dict:
  """Means per scene, per dataset and overall."""
  keys = metric_keys(rows)
  scenes: dict[tuple, list] = {}
  datasets: dict[str, list] = {}
  for r in rows:
    scenes.setdefault((r["dataset"], r["scene"]), []).append(r)
    datasets.setdefault(r["dataset"], []).append(r)
  return {
      "views": rows,
      "scenes": [dict(dataset=d, scene=s, num_views=len(v), **{k: _mean(v, k) for k in keys})
                 for (d, s), v in scenes.items()],
      "datasets": {d: dict(num_views=len(v), **{k: _mean(v, k) for k in keys})
                   for d, v in datasets.items()},
      "overall": dict(num_views=len(rows), **{k: _mean(rows, k) for k in keys}),
  }


def format_table(summary: dict) -> str:
  """The summary's per-scene and overall means as a fixed-width text table."""
  fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
  keys = [k for k in summary["overall"] if k != "num_views"]
  title = lambda k: k.upper() if k in ("psnr", "ssim") else "LPIPS-" + k[len("lpips_"):]
  lines = [f"{'dataset':<12} {'scene':<28} {'views':>5} " +
           " ".join(f"{title(k):>10}" for k in keys)]
  for s in summary["scenes"]:
    lines.append(f"{s['dataset']:<12} {s['scene']:<28} {s['num_views']:>5} " +
                 " ".join(f"{fmt(s[k]):>10}" for k in keys))
  o = summary["overall"]
  lines.append(f"{'mean':<12} {'':<28} {o['num_views']:>5} " +
               " ".join(f"{fmt(o[k]):>10}" for k in keys))
  return "\n".join(lines)


def load_lpips(eval_cfg) -> dict:
  """{net: LpipsFn} of ``eval_cfg.lpips`` (default "alex,vgg"); UsageError when a
  network is unknown or its weights are missing or altered."""
  spec = eval_cfg.get("lpips", ",".join(lpips_lib.DEFAULT_NETS))
  try:
    return lpips_lib.default_lpips(spec)
  except ValueError as e:
    raise validation.UsageError(f"eval.lpips={spec!r}: {e}") from None


def prepare_eval(config) -> tuple[dict, dict]:
  """What an evaluation of ``config`` needs, checked before anything is written:
  ({net: LpipsFn} of ``eval.lpips``, {name: source} of ``data.eval``).

  Raises:
    UsageError: an LPIPS network is unknown, its weights are missing or altered, or a
      dataset's views are too small for it.
  """
  lpips_fns = load_lpips(config.eval)
  sources = {}
  for name in sorted(config.data.eval.keys()):
    sources[name] = train_data.make_source(name, config.data.eval[name])
    first = next(pipeline.eval_examples(sources[name], config.eval.num_source_views,
                                        max_views_per_scene=1,
                                        image_size=config.eval.get("image_size")), None)
    check_lpips_size(lpips_fns, name, [first] if first else [])
  return lpips_fns, sources


def run_eval(config, family: ModelFamily, params: Any, out_dir: str,
             verbose: bool = True) -> Optional[dict]:
  """Evaluates ``params`` on every dataset of ``config.data.eval``; writes everything the
  module docstring lists and returns the summary (without the per-view rows).

  With several processes every one must call it: the views and video frames are spread
  over the processes and the chief (process 0) writes everything and returns the
  summary (the others return None once it is written).
  """
  chief = hosts.is_chief()
  verbose = verbose and chief
  variables = {"params": params}
  lpips_fns, sources = prepare_eval(config)
  if chief:
    storage.makedirs(out_dir)
  rows = []
  for name, source in sources.items():
    rows += evaluate_source(family, variables, name, source, config.eval, out_dir,
                            lpips_fns, verbose)
  summary = summarize(rows)
  summary["lpips"] = lpips_lib.describe(lpips_fns)
  if config.eval.video_frames > 0 and sources:
    summary["video"] = _video(config, family, variables, next(iter(sources.values())),
                              storage.join(out_dir, "video.mp4"), verbose)
  if chief:
    storage.write_json(storage.join(out_dir, "metrics.json"), summary, indent=2)
    table = format_table(summary)
    if verbose:
      print(table)
    storage.write_text(storage.join(out_dir, "metrics.txt"), table + "\n")
  hosts.barrier("evaluation written")
  return {k: v for k, v in summary.items() if k != "views"} if chief else None


def _video(config, family: ModelFamily, variables, source, path: str,
           verbose: bool) -> Optional[str]:
  """RGB | depth video along a camera path around the first evaluation scene."""
  cams = source.scenes("train")[0]
  ex = next(pipeline.eval_examples(source, config.eval.num_source_views,
                                   scene_ids=[cams.scene_id],
                                   image_size=config.eval.get("image_size")))
  target, sources = example_cameras(ex)
  depth_range = scene_depth_range(source, cams.scene_id)  # the scale of the scene's PNGs
  path_c2w = camera_paths.auto_path(cams.c2w, float(cams.near.min()), float(cams.far.max()),
                                    config.eval.video_frames)
  return video.render_video(family, variables, sources, np.asarray(ex["tgt_intrinsics"]),
                            path_c2w, target.height, target.width, float(ex["near"]),
                            float(ex["far"]), config.eval.chunk_size, path,
                            fps=config.eval.video_fps, progress=verbose,
                            depth_range=depth_range, map_fn=hosts.map_to_chief)
