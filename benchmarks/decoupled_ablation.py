"""The Decoupling-NeRF ablation: every variant, GNT and GNT-MoVE, over seeds, one table.

For each setup, seed and model it trains a run (``python -m movenerf.train``), then per
setup and seed it scores all of that seed's runs with ``zero_shot`` (unseen / seen PSNR,
SSIM, LPIPS-vgg, the nearest source view beside them, comparison sheets) and probes them
with ``zero_shot --probe`` (source swap; rigid and similarity transforms of the rig).
It writes per setup ``OUT/SETUP/ablation.md`` (mean +- sample standard deviation over
the seeds, printed too) and ``OUT/SETUP/ablation.json`` (every seed's numbers); the
comparison sheets (ground truth | nearest source view | each model) of each seed are
under ``OUT/SETUP/seedS/zs/sheets/``. Finished runs and evaluations
are kept and skipped (an evaluation is redone when a model was added), so an
interrupted or extended ablation continues where it stopped.

  python benchmarks/decoupled_ablation.py --out runs/ablation --seeds 0,1,2 --fraction 1

``--fraction`` scales every model's training budget (its config's ``train.num_steps``)
by the same factor. Setups:

* ``tiny``: the configs' tiny variants: 16 generated training scenes of 32x32, unseen:
  2 held-out generated scenes. Full budgets: 8,000 updates for Decoupling-NeRF, 1,500
  for GNT and GNT-MoVE, about the same CPU minutes in ``benchmarks/zero_shot.md``.
* ``real``: train on Blender lego, test on mic (``decoupled_nerf:real``: 64x64 whole
  views, 10 source views, 1,600 steps of 8 accumulated = 200 updates; GNT and GNT-MoVE
  are their tiny models on the same data and evaluation settings, 1,500 updates). mic
  is the only unseen scene, so the probe's source swap takes held-out lego views as
  partners (``zero_shot --probe``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time

# name -> (config family, overrides); the Decoupling-NeRF variants differ from DC-base by
# one key (DC-relative-scaled from DC-relative, DC-VQ-cosine and DC-VQ-linear from DC-VQ,
# DC-VQ-entropy and DC-VQ-renderer from DC-VQ-cosine by one).
MODELS = {
    "DC-base": ("decoupled_nerf", []),
    "DC-relative": ("decoupled_nerf", ["model.relative_encoding=true"]),
    "DC-relative-scaled": ("decoupled_nerf", ["model.relative_encoding=true",
                                              "model.normalise_scale=true"]),
    "DC-pose-aug": ("decoupled_nerf", ["model.pose_augmentation=rigid"]),
    "DC-contrastive": ("decoupled_nerf", ["loss.contrastive_weight=0.1"]),
    "DC-VQ": ("decoupled_nerf", ["model.vq_codebook_size=64"]),
    "DC-VQ-cosine": ("decoupled_nerf", ["model.vq_codebook_size=64",
                                        "model.vq_normalise=true"]),
    "DC-VQ-linear": ("decoupled_nerf", ["model.vq_codebook_size=64",
                                        "model.vq_linear=true"]),
    "DC-VQ-entropy": ("decoupled_nerf", ["model.vq_codebook_size=64",
                                         "model.vq_normalise=true",
                                         "loss.vq_entropy_weight=0.1"]),
    "DC-VQ-renderer": ("decoupled_nerf", ["model.vq_codebook_size=64",
                                          "model.vq_normalise=true",
                                          "model.vq_renderer_input=true"]),
    "GNT": ("gnt", []),
    "GNT-MoVE": ("gnt_move", []),
}
_REAL = "../shared/data/real/nerf_synthetic"
_BLENDER = "nerf_synthetic:" + _REAL + "[scenes={},downsample=1,white_background=true]"
# The tiny GNT models on Decoupling-NeRF's real data and evaluation settings.
_GNT_REAL = ("tiny", ["--train_data", "lego=" + _BLENDER.format("lego"),
                      "--eval_data", "mic=" + _BLENDER.format("mic"),
                      "--config.data.example.num_source_views=10",
                      "--config.data.example.source_size=(64, 64)",
                      "--config.eval.num_source_views=10",
                      "--config.eval.max_views_per_scene=4",
                      "--config.eval.image_size=(64, 64)"])
# setup -> family -> (config variant, extra command-line arguments).
SETUPS = {
    "tiny": {"decoupled_nerf": ("tiny", []), "gnt": ("tiny", []), "gnt_move": ("tiny", [])},
    "real": {"decoupled_nerf": ("real", []), "gnt": _GNT_REAL, "gnt_move": _GNT_REAL},
}
NEAREST = "nearest source view"
# (column, source, key): the table's columns, from zero_shot.json or probe.json.
COLUMNS = (("unseen PSNR", "zs", ("unseen", "psnr")), ("unseen SSIM", "zs", ("unseen", "ssim")),
           ("unseen LPIPS-vgg", "zs", ("unseen", "lpips_vgg")),
           ("seen PSNR", "zs", ("seen", "psnr")), ("seen SSIM", "zs", ("seen", "ssim")),
           ("seen LPIPS-vgg", "zs", ("seen", "lpips_vgg")),
           ("swap ratio", "probe", ("swap_ratio",)), ("rigid ratio", "probe", ("rigid_ratio",)),
           ("similarity ratio", "probe", ("similarity_ratio",)))


def steps_for(setup: str, model: str, fraction: float) -> int:
  """The model's config's ``train.num_steps`` in the setup, scaled by ``fraction``."""
  family = MODELS[model][0]
  variant = SETUPS[setup][family][0]
  config = importlib.import_module(f"movenerf.configs.{family}").get_config(variant)
  return max(1, round(config.train.num_steps * fraction))


def _run(cmd: list[str], log: str) -> None:
  with open(log, "w") as f:
    code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
  if code:
    sys.exit(f"failed (exit {code}): {' '.join(cmd)}; see {log}")


def workdir_of(out: str, setup: str, seed: int, model: str) -> str:
  return os.path.join(out, setup, f"seed{seed}", model)


def finished(workdir: str) -> bool:
  """Whether the run trained to its end (``movenerf.train`` writes result.json last)."""
  return os.path.exists(os.path.join(workdir, "result.json"))


def train(out: str, setup: str, model: str, seed: int, fraction: float) -> str:
  family, overrides = MODELS[model]
  variant, extra = SETUPS[setup][family]
  steps = steps_for(setup, model, fraction)
  workdir = workdir_of(out, setup, seed, model)
  if finished(workdir):
    return workdir
  cmd = [sys.executable, "-m", "movenerf.train", "--config", f"{family}:{variant}",
         "--workdir", workdir, *extra, f"--config.seed={seed}",
         f"--config.train.num_steps={steps}", f"--config.train.checkpoint_every={steps}",
         "--config.eval.at_end=false"]
  cmd += [f"--config.{o}" for o in overrides]
  os.makedirs(os.path.dirname(workdir), exist_ok=True)
  _run(cmd, workdir + ".log")
  return workdir


def evaluate(out: str, setup: str, seed: int, runs: dict[str, str]) -> dict:
  """zero_shot and zero_shot --probe of one seed's runs; returns {'zs': ..., 'probe': ...}."""
  folder = os.path.join(out, setup, f"seed{seed}")
  pairs = [f"{name}={path}" for name, path in runs.items()]
  result = {}
  for kind, extra, name in (("zs", [], "zero_shot.json"), ("probe", ["--probe"], "probe.json")):
    target = os.path.join(folder, kind)
    if not set(runs) <= set(_models(os.path.join(target, name), kind)):
      _run([sys.executable, "-m", "movenerf.tools.zero_shot", *extra, "--out", target, *pairs],
           target + ".log")
    result[kind] = _models(os.path.join(target, name), kind)
  return result


def _models(path: str, kind: str) -> dict:
  """{model: results} of a zero_shot.json or probe.json; {} where there is none."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    stored = json.load(f)
  return stored["models"] if kind == "probe" else stored


def _pick(tree: dict, key: tuple[str, ...]):
  for k in key:
    tree = tree[k]
  return tree


def aggregate(per_seed: dict[int, dict], models: list[str]) -> dict:
  """{model: {column: [value per seed]}} from each seed's zero_shot and probe results."""
  table = {}
  for model in [NEAREST, *models]:
    table[model] = {}
    for column, source, key in COLUMNS:
      table[model][column] = [float(_pick(r[source][model], key)) for r in per_seed.values()]
  return table


def _cell(values: list[float]) -> str:
  mean = statistics.fmean(values)
  digits = 2 if abs(mean) >= 1 else 3
  if len(values) < 2:
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(table: dict, updates: dict[str, int], seeds: list[int]) -> str:
  """The table: one row per model (the nearest source view first), its optimiser
  updates, and each column's mean +- sample standard deviation over the seeds."""
  head = ["model", "updates", *[c for c, _, _ in COLUMNS]]
  lines = [f"Mean ± sample standard deviation over seeds {', '.join(map(str, seeds))}.", "",
           "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
  for model, columns in table.items():
    cells = [_cell(columns[c]) for c, _, _ in COLUMNS]
    lines.append(f"| {model} | {updates.get(model) or ''} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="runs/ablation")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--setups", default="tiny")
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--fraction", type=float, default=1.0,
                      help="scales every config's train.num_steps")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  models = args.models.split(",")
  setups = args.setups.split(",")
  for name, known in (("--models", MODELS), ("--setups", SETUPS)):
    unknown = [v for v in (models if name == "--models" else setups) if v not in known]
    if unknown:
      sys.exit(f"{name}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
  if not 0 < args.fraction <= 1:
    sys.exit(f"--fraction: {args.fraction} is not in (0, 1]")
  todo = [(setup, seed, model) for setup in setups for seed in seeds for model in models]
  pending = sum(not finished(workdir_of(args.out, *run)) for run in todo)
  start, trained = time.time(), 0
  for setup in setups:
    per_seed = {}
    for seed in seeds:
      runs = {}
      for model in models:
        kept = finished(workdir_of(args.out, setup, seed, model))
        runs[model] = train(args.out, setup, model, seed, args.fraction)
        trained += not kept
        minutes = (time.time() - start) / 60
        eta = minutes / trained * (pending - trained) if trained else 0.0
        print(f"[{trained}/{pending} trained] {setup} seed {seed} {model}: {runs[model]}"
              f"{' (kept)' if kept else ''} ({minutes:.1f} min, ETA {eta:.1f} min)",
              flush=True)
      per_seed[seed] = evaluate(args.out, setup, seed, runs)
    steps = {m: steps_for(setup, m, args.fraction) for m in models}
    updates = {m: per_seed[seeds[0]]["zs"][m]["budget"].get("updates") for m in models}
    table = aggregate(per_seed, models)
    text = f"## {setup}\n\n" + markdown(table, updates, seeds)
    print(text, flush=True)
    with open(os.path.join(args.out, setup, "ablation.json"), "w") as f:
      json.dump({"steps": steps, "updates": updates, "seeds": seeds, "table": table}, f,
                indent=2)
    with open(os.path.join(args.out, setup, "ablation.md"), "w") as f:
      f.write(text + "\n")
    print(f"wrote {args.out}/{setup}/ablation.md and ablation.json", flush=True)


if __name__ == "__main__":
  main()
