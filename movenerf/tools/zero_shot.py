r"""Zero-shot comparison of trained runs: unseen scenes vs. held-out views of seen scenes.

  python -m movenerf.tools.zero_shot --out runs/zero_shot \
      GNT=runs/gnt_tiny GNT-MoVE=runs/demo Decoupling-NeRF=runs/dc_tiny

For every run (``NAME=WORKDIR`` of ``python -m movenerf.train``) the latest checkpoint
and the config saved with it are loaded, and the model renders

* **unseen**: the held-out views of the run's evaluation scenes (``data.eval``), which
  it never saw in training: zero-shot generalisation;
* **seen**: held-out views (split "test") of the first ``--seen_scenes`` training scenes
  of every ``data.train`` dataset: views it never trained on, of scenes it did.

A model that degenerates into a per-object NeRF (what the Decoupling-NeRF paper
observed: unseen objects "distorted into objects seen in training") does well on
*seen* and not on *unseen*. The *nearest source view* row copies the closest source
image as the prediction, the bar any view-synthesis model must clear.

Every run must share the evaluation data (scenes, source-view count, image size); the
baseline uses the first run's. Writes ``OUT/zero_shot.md`` (the table, printed too),
``OUT/zero_shot.json``, per-model renders under ``OUT/<name>/`` and one comparison
sheet per evaluated view under ``OUT/sheets/`` (ground truth | nearest source view |
each model).
"""

from __future__ import annotations

import io
import json
from typing import Sequence

from absl import flags, logging
import jax
import ml_collections
import numpy as np
from PIL import Image

from movenerf import cli, storage, validation
from movenerf.evaluation import evaluate as evaluation, visualize
from movenerf.models import registry
from movenerf.training import checkpoint
from movenerf.data import sources as train_data

_OUT = flags.DEFINE_string("out", "runs/zero_shot", "output folder")
_SEEN_SCENES = flags.DEFINE_integer("seen_scenes", 2, "training scenes per dataset whose "
                                    "held-out views are evaluated as 'seen'")

BASELINE = "nearest source view"
_EVAL_KEYS = ("num_source_views", "max_views_per_scene", "image_size")


def load_run(workdir: str):
  """(config, model, params, budget) of a run's latest checkpoint."""
  params, config = checkpoint.restore_params(workdir)
  if not config:
    raise ValueError(f"{workdir}: the checkpoint holds no config")
  config = ml_collections.ConfigDict(config)
  model = registry.build(config.model)
  budget = {"steps": None, "train_minutes": None}
  log = storage.join(workdir, "train_metrics.jsonl")
  if storage.exists(log):
    lines = [json.loads(l) for l in storage.read_text(log).splitlines() if l.strip()]
    if lines:
      budget["steps"] = int(lines[-1]["step"])
      if "elapsed_s" in lines[-1]:
        budget["train_minutes"] = lines[-1]["elapsed_s"] / 60.0
  if budget["steps"] is not None:
    budget["updates"] = budget["steps"] // max(1, config.optim.accumulate_steps)
    budget["target_pixels"] = (budget["steps"] * config.data.global_batch *
                               config.data.example.rays_per_example)
  return config, model, jax.tree.map(np.asarray, params), budget


def _eval_signature(config) -> dict:
  """What must agree between runs for their numbers to be comparable."""
  ev = {k: config.eval.get(k) for k in _EVAL_KEYS}
  ev["image_size"] = list(ev["image_size"]) if ev["image_size"] else None
  return {"eval": ev, "data.eval": config.data.eval.to_dict(),
          "data.train": {k: {kk: v[kk] for kk in ("format", "path", "scenes", "options")}
                         for k, v in config.data.train.to_dict().items()}}


def _groups(config, seen_scenes: int) -> dict[str, list]:
  """'unseen' / 'seen' -> [(dataset label, source, scene ids or None)]."""
  unseen = [(name, train_data.make_source(name, config.data.eval[name]), None)
            for name in sorted(config.data.eval.keys())]
  seen = []
  for name in sorted(config.data.train.keys()):
    src = train_data.make_source(name, config.data.train[name])
    if "test" not in src.splits():
      logging.warning("training dataset %s has no test split; no 'seen' views", name)
      continue
    ids = [c.scene_id for c in src.scenes("test")][:seen_scenes]
    seen.append((f"seen_{name}", src, ids))
  return {"unseen": unseen, "seen": seen}


def _score(rows: list[dict]) -> dict:
  return {"num_views": len(rows),
          "psnr": float(np.mean([r["psnr"] for r in rows])) if rows else None,
          "ssim": float(np.mean([r["ssim"] for r in rows])) if rows else None}


def compare(runs: Sequence[tuple[str, str]], out_dir: str, seen_scenes: int = 2,
            verbose: bool = True) -> dict:
  """Evaluates every ``(name, workdir)`` and the baseline; writes and returns results."""
  if not runs:
    raise ValueError("no runs given (NAME=WORKDIR ...)")
  loaded = [(name,) + load_run(workdir) for name, workdir in runs]
  ref = _eval_signature(loaded[0][1])
  for name, config, *_ in loaded[1:]:
    if _eval_signature(config) != ref:
      raise ValueError(f"run {name!r} evaluates on different data or settings than "
                       f"{loaded[0][0]!r}; its numbers would not be comparable")
  config0 = loaded[0][1]
  groups = _groups(config0, seen_scenes)
  results = {}
  entries = [(BASELINE, None, None, None, {})] + loaded
  for name, config, model, params, budget in entries:
    cfg = (config or config0).eval
    folder = storage.join(out_dir, name.replace(" ", "_"))
    row = {"budget": budget}
    for group, datasets in groups.items():
      views = []
      for label, source, ids in datasets:
        kwargs = dict(predict=evaluation.nearest_view) if model is None else {}
        views += evaluation.evaluate_source(model, {"params": params}, label, source, cfg,
                                            folder, verbose=verbose, scene_ids=ids,
                                            **kwargs)
      row[group] = _score(views)
      row[group + "_views"] = views
    results[name] = row
  _write_sheets(results, out_dir)
  table = format_table(results)
  storage.write_text(storage.join(out_dir, "zero_shot.md"), table + "\n")
  storage.write_json(storage.join(out_dir, "zero_shot.json"), results, indent=2)
  if verbose:
    print(table)
  return results


def format_table(results: dict) -> str:
  """Markdown: model, training budget, unseen and seen PSNR / SSIM."""
  fmt = lambda v, spec: "" if v is None else format(v, spec)
  lines = ["| model | updates | train min | unseen PSNR | unseen SSIM | seen PSNR | seen SSIM |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for name, r in results.items():
    b = r["budget"]
    lines.append(f"| {name} | {fmt(b.get('updates'), ',d')} | "
                 f"{fmt(b.get('train_minutes'), '.1f')} | {fmt(r['unseen']['psnr'], '.2f')} | "
                 f"{fmt(r['unseen']['ssim'], '.3f')} | {fmt(r['seen']['psnr'], '.2f')} | "
                 f"{fmt(r['seen']['ssim'], '.3f')} |")
  return "\n".join(lines)


def _write_sheets(results: dict, out_dir: str) -> None:
  """One sheet per view: ground truth | each entry's prediction (baseline first)."""
  names = list(results)
  first = results[names[0]]
  for group in ("unseen", "seen"):
    for v in first[group + "_views"]:
      rel = f"{v['dataset']}/{v['scene']}/{v['view']:03d}"
      folder = lambda n: storage.join(out_dir, n.replace(" ", "_"), rel)
      images = [_read(folder(names[0]) + "_gt.png")]
      images += [_read(folder(n) + "_pred.png") for n in names]
      sheet = visualize.contact_sheet(images, columns=len(images))
      visualize.save_png(storage.join(out_dir, "sheets", rel.replace("/", "_") + ".png"),
                         sheet)


def _read(path: str) -> np.ndarray:
  with Image.open(io.BytesIO(storage.read_bytes(path))) as image:
    return np.asarray(image.convert("RGB"), np.float32) / 255.0


def _parse_runs(args: Sequence[str]) -> list[tuple[str, str]]:
  runs = []
  for arg in args:
    name, sep, workdir = arg.partition("=")
    if not sep or not name or not workdir:
      raise validation.UsageError(f"expected NAME=WORKDIR, got {arg!r}")
    runs.append((name, workdir))
  return runs


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) < 2:
    raise validation.UsageError("give at least one NAME=WORKDIR")
  for _, workdir in _parse_runs(argv[1:]):
    try:
      storage.check_readable(storage.join(workdir, "checkpoints"), "checkpoints folder")
    except FileNotFoundError as e:
      raise validation.UsageError(f"{workdir}: {e}") from None
  compare(_parse_runs(argv[1:]), _OUT.value, _SEEN_SCENES.value)
  print(f"wrote {_OUT.value}/zero_shot.md, zero_shot.json and comparison sheets")


def run() -> None:
  """The ``movenerf-zero-shot`` console script: ``main`` with one-line errors (exit status
  2: usage, 1: run; ``--verbose``: with the traceback)."""
  cli.run(main, "movenerf.tools.zero_shot")


if __name__ == "__main__":
  run()
