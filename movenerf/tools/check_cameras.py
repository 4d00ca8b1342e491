r"""Check a dataset's cameras before training: a verdict and a sheet per scene.

  python -m movenerf.tools.check_cameras --format llff --src ../shared/data/real/nerf_llff_data \
      --out runs/cameras
  python -m movenerf.tools.check_cameras --format nerf_synthetic --src DIR --scenes lego,mic \
      --out runs/cameras --corrupt flip_yz

Reads each scene with the format's reader (``--option KEY=VALUE``: the reader's options,
as for ``movenerf.data.tfds.build``) and tests its cameras against what the scene holds
(:mod:`movenerf.data.camera_check`): its sparse points (a ``process_images`` scene), its
depth maps (generated scenes) or, for the rest, keypoints matched between its images.
Writes, per scene, ``OUT/<scene>.png``, a sheet: pixels picked in a reference view, their
epipolar segments from near to far drawn on its nearest source views (with where the
matches or observations put them), and the points checked in each view; and
``OUT/check_cameras.json``: the verdicts with every figure and threshold. Prints a table
of the verdicts; progress lines give the scenes done, the rate and an ETA.

``--corrupt NAME`` applies a wrong convention to every scene first (``flip_yz``,
``inverse``, ``intrinsics_x2``), to see what the check makes of it.

Exit status 0 when every scene passes, 1 when one fails (named), 2 for bad input (an
unknown format, scene or option, a missing ``--src``): one line, before anything is
written.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from absl import flags
import numpy as np
from PIL import Image, ImageDraw

from movenerf import cli
from movenerf.data import camera_check, matching, procedural, sfm
from movenerf.data.formats import record, registry
from movenerf.evaluation import visualize
from movenerf.validation import UsageError

PROG = "movenerf.tools.check_cameras"
JSON_NAME = "check_cameras.json"
# Colours of the picked pixels (and their segments), and of checked matches.
_GOOD, _BAD = (0.1, 0.65, 0.2), (0.85, 0.1, 0.1)

_FLAGS: dict = {}


def _define_flags() -> None:
  _FLAGS["format"] = flags.DEFINE_string(
      "format", None, f"dataset format: {', '.join(registry.format_names())}")
  _FLAGS["src"] = flags.DEFINE_string("src", None, "folder of scenes, or one scene (not for "
                                      "generated scenes)")
  _FLAGS["scenes"] = flags.DEFINE_list("scenes", None, "scene folder names to check "
                                       "(generated: seeds); default every scene")
  _FLAGS["out"] = flags.DEFINE_string("out", None, "folder for the sheets and "
                                      f"{JSON_NAME}")
  _FLAGS["option"] = flags.DEFINE_multi_string("option", [], "reader option KEY=VALUE")
  _FLAGS["views"] = flags.DEFINE_integer("views", 4, "reference views per scene")
  _FLAGS["sources"] = flags.DEFINE_integer("sources", 2, "nearest source views per "
                                           "reference view")
  _FLAGS["size"] = flags.DEFINE_integer("size", matching.SIZE, "images are resized to this "
                                        "longer side for keypoint matching")
  _FLAGS["corrupt"] = flags.DEFINE_enum("corrupt", None, list(camera_check.CORRUPTIONS),
                                        "apply this wrong convention to every scene first")


def log(line: str) -> None:
  print(line, flush=True)


# --- input -----------------------------------------------------------------------------

def plan_scenes(fmt: str, src: str | None, scenes: Sequence[str] | None,
                options: dict) -> tuple[dict, list[tuple[str, Callable[[], tuple]]]]:
  """Checks the input and lists the scenes without reading them.

  Returns:
    The reader options (defaults filled in) and, per scene, its name and a function
    that reads it: ``() -> (SceneRecord, SparsePoints | None)``.
  Raises:
    UsageError: an unknown format, option or scene, or a missing ``--src`` (named).
  """
  if not fmt:
    raise UsageError(f"--format: give one of {', '.join(registry.format_names())}")
  try:
    registry.check_format(fmt)
    opts = registry.parse_options(fmt, options)
  except ValueError as e:
    raise UsageError(str(e)) from None
  if fmt == registry.GENERATED:
    if src:
      raise UsageError("--src: generated scenes have no folder; leave --src out")
    if scenes:
      try:
        seeds = [int(s) for s in scenes]
      except ValueError:
        raise UsageError(f"--scenes={','.join(scenes)}: generated scenes are named by "
                         "their seeds (integers)") from None
      if any(s < 0 for s in seeds):
        raise UsageError(f"--scenes={','.join(scenes)}: seeds are >= 0")
    else:
      seeds = list(range(opts["first_seed"], opts["first_seed"] + opts["num_scenes"]))
    kinds = procedural.KINDS
    plan = [(f"procedural_{kinds[seed % len(kinds)] if opts['kind'] == 'mixed' else opts['kind']}"
             f"_{seed:06d}", _generated_reader(seed, opts)) for seed in seeds]
    return opts, plan
  if not src:
    raise UsageError(f"--src: give the folder of the {fmt} scenes")
  if not Path(src).is_dir():
    raise UsageError(f"--src={src}: no such folder")
  try:
    dirs = registry.find_scenes(registry.FORMATS[fmt], Path(src), scenes)
  except FileNotFoundError as e:
    missing = str(e).rsplit(": ", 1)[-1]
    raise UsageError(f"--scenes: no scene {Path(missing).name!r} in {src}") from None
  except ValueError as e:
    raise UsageError(f"--src={src}: {e}") from None
  return opts, [(d.name, _disk_reader(fmt, d, opts)) for d in dirs]


def _generated_reader(seed: int, opts: dict):
  return lambda: (procedural.generated_record(seed, opts), None)


def _disk_reader(fmt: str, scene_dir: Path, opts: dict):
  def read():
    rec = registry.read_scene(fmt, scene_dir, **opts)
    return rec, sfm.read_sparse(scene_dir, (rec.width, rec.height))
  return read


# --- the sheet -------------------------------------------------------------------------

def _canvas(image: np.ndarray) -> tuple[Image.Image, int]:
  """The image magnified (whole factor, nearest neighbour) to at least
  ``visualize.MIN_HEIGHT`` pixels tall, as a PIL image to draw on, and the factor."""
  factor = max(1, -(-visualize.MIN_HEIGHT // image.shape[0]))
  return Image.fromarray(visualize.to_uint8(visualize.magnify(
      np.asarray(image, np.uint8), factor))), factor


def _at(xy, factor: int) -> np.ndarray:
  """Pixel coordinates of the image -> of its magnified canvas (pixel centres)."""
  return (np.asarray(xy, np.float64) + 0.5) * factor - 0.5


def _rgb255(colour) -> tuple[int, int, int]:
  return tuple(int(round(255 * float(c))) for c in colour)


def _cross(draw: ImageDraw.ImageDraw, xy, colour, size: int = 5) -> None:
  x, y = xy
  draw.line([(x - size, y), (x + size, y)], fill=colour, width=2)
  draw.line([(x, y - size), (x, y + size)], fill=colour, width=2)


def _circle(draw: ImageDraw.ImageDraw, xy, colour, radius: int = 5) -> None:
  x, y = xy
  draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=colour, width=2)


def _dot(draw: ImageDraw.ImageDraw, xy, colour, radius: float = 2.0) -> None:
  x, y = xy
  draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)


def _finite(xy) -> bool:
  return bool(np.all(np.isfinite(xy)) and np.all(np.abs(xy) < 1e7))


def epipolar_row(rec: record.SceneRecord, ill: camera_check.Illustration) -> np.ndarray:
  """The reference view with the picked pixels (crosses) and each source view with
  their epipolar segments, near end dotted, and where the source view shows them
  (circles), in one colour per pixel."""
  colours = [_rgb255(c) for c in visualize.expert_colours(len(ill.picked))]
  canvas, factor = _canvas(rec.images[ill.reference])
  draw = ImageDraw.Draw(canvas)
  for xy, colour in zip(_at(ill.picked, factor), colours):
    _cross(draw, xy, colour)
  panels = [visualize.labelled(visualize.framed(np.asarray(canvas)),
                               f"view {ill.reference}: picked pixels")]
  for s, b in enumerate(ill.sources):
    canvas, factor = _canvas(rec.images[b])
    draw = ImageDraw.Draw(canvas)
    for j, colour in enumerate(colours):
      pts = _at(ill.segments[s, j], factor)
      front = ill.segment_front[s, j] & np.all(np.isfinite(pts), axis=-1)
      line = [tuple(p) for p in pts[front] if _finite(p)]
      if len(line) >= 2:
        draw.line(line, fill=colour, width=2)
      if front[0] and _finite(pts[0]):
        _dot(draw, pts[0], colour, 3.0)
      if _finite(ill.found[s, j]):
        _circle(draw, _at(ill.found[s, j], factor), colour)
    panels.append(visualize.labelled(visualize.framed(np.asarray(canvas)),
                                     f"view {b}: epipolar segments"))
  row = visualize.hstack(panels, gap=2 * visualize.GAP)
  return visualize.vstack([row, visualize.text(
      "segment: the pixel's ray from near (dot) to far; circle: where the view shows it",
      colour=(0.35, 0.35, 0.35))])


def marks_row(rec: record.SceneRecord, ill: camera_check.Illustration) -> np.ndarray:
  """The points checked in each drawn view: coloured by depth on the scene's near/far
  scale, or green / red by whether their epipolar distance is within the threshold."""
  lo, hi = visualize.depth_range(rec.near, rec.far)
  panels = []
  for view, xy, value in ill.marks[:4]:
    canvas, factor = _canvas(rec.images[view])
    draw = ImageDraw.Draw(canvas)
    if ill.mark_kind == "depth":
      colours = visualize.colorize(np.asarray(value, np.float32)[None], lo, hi)[0]
      label = f"view {view}: {len(xy)} points by depth"
    else:
      good = np.asarray(value) <= camera_check.EPIPOLAR_MAX_PX
      colours = np.where(good[:, None], _GOOD, _BAD)
      label = f"view {view}: {len(xy)} matches, {int(good.sum())} on their lines"
    for p, c in zip(_at(xy, factor), colours):
      if _finite(p):
        _dot(draw, p, _rgb255(c), 2.5)
    panels.append(visualize.labelled(visualize.framed(np.asarray(canvas)), label))
  row = visualize.hstack(panels, gap=2 * visualize.GAP)
  if ill.mark_kind == "depth":
    footer = visualize.colorbar(lo, hi, min(row.shape[1], 600), no_surface=False)
  else:
    footer = visualize.legend(
        [(f"epipolar distance <= {camera_check.EPIPOLAR_MAX_PX} px", _GOOD),
         (f"> {camera_check.EPIPOLAR_MAX_PX} px", _BAD)], row.shape[1])
  return visualize.vstack([row, footer])


def sheet(rec: record.SceneRecord, check: camera_check.SceneCheck,
          title: str) -> np.ndarray:
  """The scene's sheet: the epipolar row, the points row and the verdict."""
  parts = [visualize.text(title)]
  ill = check.illustration
  if ill is not None:
    parts += [epipolar_row(rec, ill), marks_row(rec, ill)]
  else:
    parts.append(visualize.text("nothing to draw: " + (check.note or "no evidence")))
  verdict = "PASS" if check.passed else "FAIL"
  parts.append(visualize.text(f"{verdict} ({check.method} check)",
                              colour=_GOOD if check.passed else _BAD))
  for c in check.criteria:
    colour = {True: (0, 0, 0), False: _BAD, None: (0.45, 0.45, 0.45)}[c.passed]
    parts.append(visualize.text(c.describe(), colour=colour))
  if check.note:
    parts.append(visualize.text(check.note, colour=(0.45, 0.45, 0.45)))
  return visualize.border(visualize.vstack(parts, gap=visualize.GAP))


# --- the run ---------------------------------------------------------------------------

def table(results: Sequence[dict]) -> str:
  """The verdicts, one row per scene: its check, verdict and every criterion."""
  rows = [("scene", "check", "verdict", "figures (threshold)")]
  for r in results:
    figures = "; ".join(f"{c['label']} {c['shown']} ({c['rule']})"
                        + ("" if c["passed"] is not False else " FAIL")
                        for c in r["criteria"]) or r["note"]
    rows.append((r["scene"], r["method"], "pass" if r["passed"] else "FAIL", figures))
  widths = [max(len(row[k]) for row in rows) for k in range(3)]
  return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(row[:3], widths))
                   + " | " + row[3] for row in rows)


def check(fmt: str, out: str, src: str | None = None, scenes: Sequence[str] | None = None,
          options: dict | None = None, views: int = 4, sources: int = 2,
          size: int = matching.SIZE, corrupt: str | None = None,
          log: Callable[[str], None] = log) -> dict:
  """Checks every scene and writes the sheets and ``check_cameras.json`` to ``out``.

  Returns:
    What ``check_cameras.json`` holds (``passed``: every scene passed).
  Raises:
    UsageError: bad input (nothing written).
  """
  for name, value, least in (("views", views, 1), ("sources", sources, 1), ("size", size, 32)):
    if isinstance(value, bool) or value < least:
      raise UsageError(f"--{name}={value}: must be >= {least}")
  if corrupt is not None and corrupt not in camera_check.CORRUPTIONS:
    raise UsageError(f"--corrupt={corrupt}: choose from {', '.join(camera_check.CORRUPTIONS)}")
  if not out:
    raise UsageError("--out: give the folder to write to")
  opts, plan = plan_scenes(fmt, src, scenes, options or {})
  out_dir = Path(out)
  if out_dir.exists() and not out_dir.is_dir():
    raise UsageError(f"--out={out}: not a folder")
  out_dir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  cache = matching.Cache(matching.Extractor(size=size))
  progress = sfm.Progress(log, "scenes", len(plan), "scenes")
  results = []
  for done, (name, read) in enumerate(plan):
    t0 = time.perf_counter()
    try:
      rec, sparse = read()
      if corrupt is not None:
        rec = camera_check.corrupt(rec, corrupt)
      result = camera_check.check_scene(rec, sparse, views, sources, cache)
    except (ValueError, FileNotFoundError, OSError) as e:
      result, rec = camera_check.SceneCheck(name, "none", (), {}, None,
                                            f"cannot be checked: {e}"), None
    sheet_name = f"{name}.png"
    title = f"{fmt} scene {name}" + (f", cameras corrupted: {corrupt}" if corrupt else "")
    if rec is not None:
      visualize.save_png(os.fspath(out_dir / sheet_name), sheet(rec, result, title))
    entry = result.to_json()
    entry.update(scene=name, sheet=sheet_name if rec is not None else None,
                 seconds=round(time.perf_counter() - t0, 2))
    for c, crit in zip(entry["criteria"], result.criteria):
      c.update(label=crit.label, shown=crit.shown())
    results.append(entry)
    progress.update(done + 1)
  summary = dict(format=fmt, src=os.path.abspath(src) if src else None,
                 options={k: v for k, v in opts.items()}, corrupt=corrupt, views=views,
                 sources=sources, match_size=size, thresholds=camera_check.THRESHOLDS,
                 scenes=results, passed=all(r["passed"] for r in results),
                 seconds=round(time.perf_counter() - start, 2))
  (out_dir / JSON_NAME).write_text(json.dumps(_plain(summary), indent=2) + "\n")
  log(table(results))
  passed = sum(r["passed"] for r in results)
  sheets = sum(r["sheet"] is not None for r in results)
  log(f"{passed} of {len(results)} scenes pass; wrote {out_dir}/{JSON_NAME} and "
      f"{sheets} sheet{'s' if sheets != 1 else ''} in {summary['seconds']:.0f} s")
  return summary


def _plain(value):
  """``value`` with NumPy scalars as Python numbers and non-finite floats as strings
  ("inf", "nan"), so that the JSON is strict."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, (np.integer, np.floating, np.bool_)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def main(argv):
  if len(argv) > 1:
    raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  f = {k: v.value for k, v in _FLAGS.items()}
  summary = check(f["format"], f["out"], src=f["src"], scenes=f["scenes"],
                  options=cli.key_values(f["option"]), views=f["views"],
                  sources=f["sources"], size=f["size"], corrupt=f["corrupt"])
  failed = [r["scene"] for r in summary["scenes"] if not r["passed"]]
  if failed:
    raise cli.RunError(f"{len(failed)} of {len(summary['scenes'])} scenes fail the camera "
                       f"check: {', '.join(failed)} (see {Path(f['out']) / JSON_NAME})")


def program() -> None:
  """The ``movenerf-check-cameras`` console script: ``main`` with one-line errors (exit
  status 2: bad input, 1: a scene fails; ``--verbose``: the traceback)."""
  cli.run(main, PROG, define=_define_flags)


if __name__ == "__main__":
  program()
