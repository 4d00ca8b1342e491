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

With ``--protocol NAME --protocol_data DIR`` every run is evaluated instead on the
frozen views of a published protocol (``movenerf.evaluation.protocols``): per run
``OUT/protocol_NAME/<run>/metrics.json`` (as ``movenerf.eval --protocol`` writes it,
with the nearest-source-view scores per view), and ``OUT/protocol_NAME/zero_shot.md`` /
``zero_shot.json``: one row per run and one for the nearest source view, below the
lines saying how the local data differs from the protocol.

With ``--probe`` every run (and the nearest source view) is instead probed for what its
renders of the evaluation scenes depend on (:mod:`movenerf.tools.probe_dependence`):
the change of the render when the source images are swapped for another scene's, and
when one random rigid transform (and one similarity, scaling by ``--probe_max_scale``
or its inverse) moves the whole camera rig. Writes ``OUT/probe.md`` (the table, printed
too) and ``OUT/probe.json`` (the means and every view's numbers):

  python -m movenerf.tools.zero_shot --probe --out runs/probe \
      GNT=runs/gnt_tiny Decoupling-NeRF=runs/dc_tiny
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
from movenerf.evaluation import evaluate as evaluation, protocols, visualize
from movenerf.models import registry
from movenerf.training import checkpoint
from movenerf.data import pipeline
from movenerf.data import sources as train_data
from movenerf.tools import probe_dependence

_OUT = flags.DEFINE_string("out", "runs/zero_shot", "output folder")
_SEEN_SCENES = flags.DEFINE_integer("seen_scenes", 2, "training scenes per dataset whose "
                                    "held-out views are evaluated as 'seen'")

_PROTOCOL = flags.DEFINE_string("protocol", None, "evaluate on a published protocol's frozen "
                                f"views instead: {', '.join(protocols.NAMES)}")
_PROTOCOL_DATA = flags.DEFINE_string("protocol_data", None, "with --protocol: the folder "
                                     "holding nerf_llff_data/, nerf_synthetic/, dtu/, shiny/")

_PROBE = flags.DEFINE_boolean("probe", False, "probe what the renders of the evaluation "
                               "scenes depend on (source swap, rigid / similarity "
                               "transform of the rig) instead of scoring them")
_PROBE_SEED = flags.DEFINE_integer("probe_seed", 0, "with --probe: seed of the transforms")
_PROBE_MAX_SCALE = flags.DEFINE_float("probe_max_scale", 2.0, "with --probe: the "
                                      "similarity scales the rig by this or its inverse")

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
  for name, src in _held_out_training_sources(config, warn=True):
    ids = [c.scene_id for c in src.scenes("test")][:seen_scenes]
    seen.append((f"seen_{name}", src, ids))
  return {"unseen": unseen, "seen": seen}


def _held_out_training_sources(config, warn: bool = False):
  """Yields ``(name, source)`` of each training dataset with a test split (held-out
  views), in name order, built as they are reached; ``warn``: log the others."""
  for name in sorted(config.data.train.keys()):
    src = train_data.make_source(name, config.data.train[name])
    if "test" in src.splits():
      yield name, src
    elif warn:
      logging.warning("training dataset %s has no test split; no 'seen' views", name)


def _score(rows: list[dict]) -> dict:
  """Means of psnr, ssim and every lpips_<net> over the rows (None without rows)."""
  out = {"num_views": len(rows)}
  for key in evaluation.metric_keys(rows):
    out[key] = float(np.mean([r[key] for r in rows])) if rows else None
  return out


def compare(runs: Sequence[tuple[str, str]], out_dir: str, seen_scenes: int = 2,
            verbose: bool = True) -> dict:
  """Evaluates every ``(name, workdir)`` and the baseline; writes and returns results."""
  loaded = _loaded_runs(runs)
  config0 = loaded[0][1]
  lpips_fns = evaluation.load_lpips(config0.eval)
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
                                            folder, lpips_fns=lpips_fns, verbose=verbose,
                                            scene_ids=ids, **kwargs)
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


def _loaded_runs(runs: Sequence[tuple[str, str]]) -> list[tuple]:
  """``load_run`` of every ``(name, workdir)``; the runs must share the evaluation data."""
  if not runs:
    raise ValueError("no runs given (NAME=WORKDIR ...)")
  loaded = [(name,) + load_run(workdir) for name, workdir in runs]
  ref = _eval_signature(loaded[0][1])
  for name, config, *_ in loaded[1:]:
    if _eval_signature(config) != ref:
      raise ValueError(f"run {name!r} evaluates on different data or settings than "
                       f"{loaded[0][0]!r}; its numbers would not be comparable")
  return loaded


def _predictor(model, params, chunk_size: int):
  """``example -> outputs``: the run's render, or the nearest source view (``model``
  None)."""
  if model is None:
    return evaluation.nearest_view
  return lambda ex: evaluation.render_example(model, {"params": params}, ex, chunk_size)


def probe(runs: Sequence[tuple[str, str]], out_dir: str, seed: int = 0,
          max_scale: float = 2.0, verbose: bool = True) -> dict:
  """Probes every ``(name, workdir)`` and the baseline on the held-out views of the
  evaluation scenes (``data.eval``; each dataset needs two scenes for the swap); writes
  ``OUT/probe.md`` and ``OUT/probe.json``; returns ``{name: summary and 'views'}``."""
  loaded = _loaded_runs(runs)
  cfg = loaded[0][1].eval
  examples = {}
  for name in sorted(loaded[0][1].data.eval.keys()):
    source = train_data.make_source(name, loaded[0][1].data.eval[name])
    examples[name] = list(pipeline.eval_examples(
        source, cfg.num_source_views, max_views_per_scene=cfg.max_views_per_scene or None,
        image_size=cfg.get("image_size")))
  if not examples:
    raise ValueError("--probe needs evaluation scenes (data.eval is empty)")
  partners = {name: _training_partners(loaded[0][1], exs)
              for name, exs in examples.items()
              if len({ex["scene_id"] for ex in exs}) == 1}
  results = {}
  entries = [(BASELINE, None, None)] + [(n, m, p) for n, c, m, p, _ in loaded]
  for name, model, params in entries:
    predict = _predictor(model, params, cfg.chunk_size)
    views = []
    for dataset, exs in examples.items():
      try:
        rows = probe_dependence.probe_views(predict, exs, seed, max_scale,
                                            partners.get(dataset))
      except ValueError as e:
        raise ValueError(f"data.eval.{dataset}: {e}") from None
      views += [dict(dataset=dataset, **r) for r in rows]
    results[name] = dict(probe_dependence.summarize(views), views=views)
    if verbose:
      print(f"  probed {name}: {len(views)} views", flush=True)
  table = probe_dependence.format_table(results)
  storage.write_text(storage.join(out_dir, "probe.md"), table + "\n")
  storage.write_json(storage.join(out_dir, "probe.json"),
                     dict(seed=seed, max_scale=max_scale, models=results), indent=2)
  if verbose:
    print(table)
  return results


def _training_partners(config, examples: list[dict]) -> list[dict]:
  """Swap partners for a single-scene evaluation dataset: the held-out views of the
  first training scene that has a test split (see ``probe_dependence.partners_from``)."""
  cfg = config.eval
  for _, source in _held_out_training_sources(config):
    first = source.scenes("test")[0].scene_id
    others = list(pipeline.eval_examples(
        source, cfg.num_source_views, scene_ids=[first], max_views_per_scene=len(examples),
        image_size=cfg.get("image_size")))
    return probe_dependence.partners_from(examples, others)
  raise ValueError(f"the source swap needs two scenes, got {examples[0]['scene_id']} "
                   "and no training scene with held-out views")


def compare_protocol(runs: Sequence[tuple[str, str]], out_dir: str, protocol: str,
                     data_root: str, verbose: bool = True) -> dict:
  """Evaluates every ``(name, workdir)`` on a protocol's frozen views; writes per run
  ``OUT/protocol_<protocol>/<name>/metrics.json`` and the comparison
  ``OUT/protocol_<protocol>/zero_shot.{md,json}``; returns the comparison."""
  if not runs:
    raise ValueError("no runs given (NAME=WORKDIR ...)")
  p = protocols.get(protocol)
  protocols.check_data_root(p, data_root)
  loaded = [(name,) + load_run(workdir) for name, workdir in runs]
  sizes = {name: config.eval.get("image_size") for name, config, *_ in loaded}
  if len({str(tuple(v)) if v else None for v in sizes.values()}) > 1:
    raise ValueError(f"the runs evaluate at different eval.image_size {sizes}; their "
                     "numbers would not be comparable")
  summaries = {}
  for name, config, model, params, budget in loaded:
    predict = _predictor(model, params, config.eval.chunk_size)
    summary = protocols.run_protocol_eval(
        protocol, data_root, out_dir, predict,
        protocols.lpips_functions(config.eval),
        image_size=config.eval.get("image_size"), verbose=verbose,
        subdir=name.replace(" ", "_"))
    summary = {k: v for k, v in summary.items() if k != "views"}
    summary["budget"] = budget
    summaries[name] = summary
  first = next(iter(summaries.values()))
  result = {"protocol": first["protocol"], "models": summaries,
            BASELINE: {"overall": first["overall"].get("nearest_view"),
                       "scenes": [dict(scene=s["scene"], status=s["status"],
                                       **(s.get("nearest_view") or {}))
                                  for s in first["scenes"]]}}
  table = format_protocol_table(result)
  folder = storage.join(out_dir, f"protocol_{protocol}")
  storage.write_text(storage.join(folder, "zero_shot.md"), table + "\n")
  storage.write_json(storage.join(folder, "zero_shot.json"), result, indent=2)
  if verbose:
    print(table)
  return result


def format_protocol_table(result: dict) -> str:
  """Markdown: the differences from the protocol, then one row per model and the nearest
  source view (PSNR / SSIM / LPIPS-vgg / LPIPS-alex over the scored views); the scenes
  missing locally are listed."""
  fmt = lambda v, spec: format(v, spec) if isinstance(v, float) else ("" if v is None
                                                                       else str(v))
  p = result["protocol"]
  lines = [f"Protocol {p['name']} (published LPIPS: {p['lpips_net_published']})", ""]
  lines += [f"- differs: {d}" for d in p["differences"]]
  lines += ["", "| model | views | PSNR | SSIM | LPIPS vgg | LPIPS alex |",
            "|---|---:|---:|---:|---:|---:|"]
  entries = [(n, s["overall"]) for n, s in result["models"].items()]
  first = next(iter(result["models"].values()))["overall"]
  entries.append((BASELINE, dict(num_views=first["num_views"],
                                 **(first.get("nearest_view") or {}))))
  for name, o in entries:
    lines.append(f"| {name} | {o['num_views']} | {fmt(o.get('psnr'), '.2f')} | "
                 f"{fmt(o.get('ssim'), '.3f')} | {fmt(o.get('lpips_vgg'), '.3f')} | "
                 f"{fmt(o.get('lpips_alex'), '.3f')} |")
  if p["missing_scenes"]:
    lines += ["", f"missing: {', '.join(p['missing_scenes'])}"]
  return "\n".join(lines)


def format_table(results: dict) -> str:
  """Markdown: model, training budget, then unseen and seen PSNR / SSIM / LPIPS (each
  network evaluated)."""
  fmt = lambda v, spec: "" if v is None else format(v, spec)
  first = next(iter(results.values()))
  keys = [k for k in first["unseen"] if k != "num_views"]
  title = lambda k: k.upper() if k in ("psnr", "ssim") else "LPIPS-" + k[len("lpips_"):]
  spec = lambda k: ".2f" if k == "psnr" else ".3f"
  lines = ["| model | updates | train min | " +
           " | ".join(f"{g} {title(k)}" for g in ("unseen", "seen") for k in keys) + " |",
           "|---|---:|---:|" + "---:|" * (2 * len(keys))]
  for name, r in results.items():
    b = r["budget"]
    lines.append(f"| {name} | {fmt(b.get('updates'), ',d')} | "
                 f"{fmt(b.get('train_minutes'), '.1f')} | " +
                 " | ".join(fmt(r[g].get(k), spec(k)) for g in ("unseen", "seen")
                            for k in keys) + " |")
  return "\n".join(lines)


def _write_sheets(results: dict, out_dir: str) -> None:
  """One sheet per view: ground truth | each entry's prediction (baseline first), each
  labelled with its name."""
  names = list(results)
  first = results[names[0]]
  for group in ("unseen", "seen"):
    for v in first[group + "_views"]:
      rel = f"{v['dataset']}/{v['scene']}/{v['view']:03d}"
      folder = lambda n: storage.join(out_dir, n.replace(" ", "_"), rel)
      panels = [visualize.panel(_read(folder(names[0]) + "_gt.png"), "ground truth")]
      panels += [visualize.panel(_read(folder(n) + "_pred.png"), n) for n in names]
      sheet = visualize.hstack(panels)
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
  if _PROBE.value:
    if _PROTOCOL.value or _PROTOCOL_DATA.value:
      raise validation.UsageError("--probe runs on the runs' evaluation scenes; drop "
                                  "--protocol / --protocol_data")
    if _PROBE_MAX_SCALE.value < 1.0:
      raise validation.UsageError(f"--probe_max_scale={_PROBE_MAX_SCALE.value}: must be "
                                  ">= 1")
    probe(_parse_runs(argv[1:]), _OUT.value, _PROBE_SEED.value, _PROBE_MAX_SCALE.value)
    print(f"wrote {_OUT.value}/probe.md and probe.json")
    return
  if _PROTOCOL.value:
    protocols.check_data_root(protocols.get(_PROTOCOL.value), _PROTOCOL_DATA.value)
    compare_protocol(_parse_runs(argv[1:]), _OUT.value, _PROTOCOL.value, _PROTOCOL_DATA.value)
    print(f"wrote {_OUT.value}/protocol_{_PROTOCOL.value}/zero_shot.md, zero_shot.json and "
          "per-run metrics.json")
    return
  if _PROTOCOL_DATA.value:
    raise validation.UsageError("--protocol_data needs --protocol")
  compare(_parse_runs(argv[1:]), _OUT.value, _SEEN_SCENES.value)
  print(f"wrote {_OUT.value}/zero_shot.md, zero_shot.json and comparison sheets")


def run() -> None:
  """The ``movenerf-zero-shot`` console script: ``main`` with one-line errors (exit status
  2: usage, 1: run; ``--verbose``: with the traceback)."""
  cli.run(main, "movenerf.tools.zero_shot")


if __name__ == "__main__":
  run()
