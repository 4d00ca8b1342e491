r"""Benchmark of GNT and GNT-MoVE: inference and training throughput, memory, FLOP/s.

  python -m movenerf.tools.bench                       # reference config, GNT and MoVE
  python -m movenerf.tools.bench --json out.json       # also JSON (infer_rays_per_s, ...)
  python -m movenerf.tools.bench --suite --json b.json # GNT/MoVE x f32/bf16 x 512/2048 rays
  python -m movenerf.tools.bench --baseline official   # and the official PyTorch GNT

Reference configuration: depth 8, width 64, 10 source views of 64x64, 64 samples per
ray (coarse only), 512 rays per step, float32. For each model it reports

* inference: rays/s rendering one chunk of ``--rays`` rays (median of ``--repeats``
  timed runs after a warm-up run, which is timed apart: ``infer_first_step_s``; first
  runs vary more than later ones), split over the process's devices as evaluation
  splits them (``render_devices``; on CPU the benchmark makes one device per core,
  unless ``JAX_NUM_CPU_DEVICES`` or ``XLA_FLAGS`` sets the count:
  ``sharding.cpu_device_per_core``), compile time, feature-net time;
* training: rays/s and step time (median of ``--train-repeats``, after a warm-up step
  timed apart: ``train_first_step_s``) of the full train step (forward, backward, Adam
  update) on one example of ``--rays`` rays on the first device, and its compile time;
  on CPU the rays go through in slices of 32, each slice's backward pass right after its
  forward pass (``train.sub_chunk``), looped on the host over one compiled program of 16
  slices (``--train-loop``, :mod:`movenerf.training.slice_loop`);
* model FLOPs per ray (XLA's cost analysis of the program as written, before its
  optimisations; the optimised program counts 0.15% more at the reference
  configuration) and the achieved FLOP/s against the device's
  peak, measured in the same run with a large matmul (``peak_gflops_per_s``);
* peak host memory while running (the peak RSS of the process from the end of the
  compilations on, both models' runs: ``peak_host_rss_mb``; with the compilations:
  ``peak_host_rss_with_compile_mb``) and peak device memory where the backend reports it.

The programs (initialisations, renders, train steps) are compiled two at a time in
threads (``--compile-workers``) before anything else is timed, so each compile time is
measured beside another compilation; ``case_compile_wall_s`` is the wall time of them all.

``--baseline official`` also times the official PyTorch GNT on the reference
configuration in the same run (its harness in fresh processes with the benchmark's thread
count, :mod:`movenerf.tools.official_baseline`), interleaved with movenerf's runs in
``--baseline-rounds`` rounds of: movenerf inference, official inference, movenerf
training, official training; it prints and records (``"baseline"``) each side's step
rays/s, medians and extremes and movenerf's ratio over the official rays/s. Where the
harness or PyTorch is missing it prints one line saying so and runs the rest.

``--suite`` runs every (dtype, rays) case in a fresh process, GNT and GNT-MoVE interleaved
in it (so the peak memory of a row is its case's, shared by the two models; 2048-ray
cases time one render and one train step per model, each after its warm-up run), and
prints one table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import dataclasses
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from movenerf import sharding
from movenerf.data import pipeline, procedural
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews
from movenerf.geometry.rays import image_rays
from movenerf.models.gnt.family import GNTFamily
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
from movenerf.models.gnt.render import (default_sub_chunk, encode_sources, place_for_render,
                                        render_chunk)
from movenerf.moe.config import MoEConfig
from movenerf.tools import official_baseline
from movenerf.training import optim
from movenerf.training import slice_loop
from movenerf.training import state as train_state
from movenerf.training import step as train_step


def _scene(num_views: int, size: int):
  scene = procedural.make_scene(0, "object", num_views + 1, size, size)
  cams = lambda idx: Cameras(jnp.asarray(scene.intrinsics[idx]), jnp.asarray(scene.c2w[idx]),
                             size, size)
  src = np.arange(1, num_views + 1)
  sources = SourceViews(jnp.asarray(scene.images[src], jnp.float32) / 255.0, cams(src))
  return cams(0), sources, scene.near, scene.far


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def _max_rss_mb() -> float:
  """The process's largest resident set (``ru_maxrss``), MiB; ``_reset_peak_rss`` can
  clear it."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> float:
  """Restarts the kernel's peak-RSS mark of this process from its current RSS (Linux),
  so that the peak of the runs after it leaves out the memory that compiling took.

  Returns:
    the peak RSS before the reset, MiB (the reset can clear ``ru_maxrss`` as well).
  """
  before = _max_rss_mb()
  try:
    # The memory that compiling freed stays in the C allocator's heap, resident, unless
    # given back to the system first.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass
  return before


def _peak_rss_mb() -> float:
  """Peak RSS since the last ``_reset_peak_rss`` (``VmHWM``), else since the start, MiB."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return float(line.split()[1]) / 1024
  except OSError:
    pass
  return _max_rss_mb()


def _device_peak_bytes() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return float(peak) if peak is not None else None


@dataclasses.dataclass
class Prepared:
  """A compiled chunk ready to time, and the figures measured while preparing it."""

  step: Callable[[], Any]
  figures: dict
  times: list = dataclasses.field(default_factory=list)
  hlo_text: Callable[[], str] | None = None  # the optimised program (for profiles)
  # The timed runs that must not share the CPU with a compilation (warm-up, feature net),
  # run by ``start``; ``prepare(..., start=False)`` leaves them for later.
  first_runs: Callable[["Prepared"], None] | None = None

  def start(self) -> "Prepared":
    if self.first_runs is not None:
      self.first_runs(self)
      self.first_runs = None
    return self

  def time_once(self) -> float:
    start = time.perf_counter()
    jax.block_until_ready(self.step())
    self.times.append(time.perf_counter() - start)
    return self.times[-1]

  def warm_up(self) -> float:
    """Runs the compiled program once, not as a timed run; returns its time."""
    first = self.time_once()
    self.times.pop()
    return first

  def result(self) -> dict:
    median = statistics.median(self.times)
    chunk = self.figures["chunk"]
    return {**self.figures, "repeats": len(self.times), "infer_rays_per_s": chunk / median,
            "infer_step_s_median": median, "infer_step_s_min": min(self.times),
            "achieved_gflops_per_s": self.figures["flops_per_ray"] * chunk / median / 1e9,
            "peak_device_bytes": _device_peak_bytes()}


def prepare(config: GNTConfig, num_views: int = 10, size: int = 64, chunk: int = 512,
            sub_chunk: int | None = None, repeats: int = 5, variables=None,
            start: bool = True) -> Prepared:
  """Builds, compiles and (with ``start``) warms up rendering one chunk of rays and times
  ``repeats`` runs of the feature net (``variables``: the model's, default a fresh
  initialisation). Without ``start``, ``Prepared.start`` does the timed runs later."""
  target, sources, near, far = _scene(num_views, size)
  model = GNTModel(config)
  if variables is None:
    variables = init_variables(model, jax.random.PRNGKey(0))
  rays = image_rays(target)
  rays = rays[np.arange(chunk) % rays.num_rays]

  begin = time.perf_counter()
  featmaps = jax.block_until_ready(encode_sources(model, variables, sources.images))
  encode_compile = time.perf_counter() - begin

  if sub_chunk is None:
    sub_chunk = default_sub_chunk()
  # As render_rays_chunked: the chunk's rays split over this process's devices.
  mesh, (variables, target, sources, featmaps, near, far), rays = place_for_render(
      chunk, (variables, target, sources, featmaps, near, far), rays)
  args = (model, variables, rays, target, sources, featmaps, near, far, sub_chunk, False,
          mesh)
  begin = time.perf_counter()
  compiled = render_chunk.lower(*args).compile()
  compile_s = time.perf_counter() - begin
  # XLA's cost analysis counts a lax.map body once: count FLOPs on the unmapped
  # one-device program, as lowered, without compiling it a second time.
  flops = _flops(render_chunk.lower(*args[:8], 0))

  def first_runs(prepared: Prepared):
    encode_times = []
    for _ in range(repeats):
      begin = time.perf_counter()
      jax.block_until_ready(encode_sources(model, variables, sources.images))
      encode_times.append(time.perf_counter() - begin)
    prepared.figures.update(encode_s_median=statistics.median(encode_times),
                            infer_first_step_s=prepared.warm_up())

  prepared = Prepared(lambda: compiled(*args[1:8]), {}, hlo_text=compiled.as_text,
                      first_runs=first_runs)
  prepared.figures.update({
      "model": "GNT-MoVE" if config.moe else "GNT",
      "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
      "num_devices": jax.device_count(), "render_devices": 1 if mesh is None else mesh.size,
      "platform": platform.processor() or platform.machine(),
      "dtype": config.dtype, "depth": config.depth, "width": config.width,
      "num_views": num_views, "image_size": size, "num_samples": config.num_samples,
      "num_importance": config.num_importance, "chunk": chunk, "sub_chunk": sub_chunk,
      "compile_s": compile_s, "encode_compile_s": encode_compile,
      "flops_per_ray": flops / chunk,
  })
  return prepared.start() if start else prepared


def peak_matmul_flops(dtype: str = "float32", repeats: int = 5) -> float:
  """The device's practical peak FLOP/s: the best time of a large square matmul."""
  n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(f(a))
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


def _train_batch(num_views: int, size: int, rays: int) -> dict:
  """One training example (the ``pipeline`` layout) from a generated scene."""
  scene = procedural.make_scene(0, "object", num_views + 1, size, size)
  rng = np.random.default_rng(0)
  flat = rng.choice(size * size, rays, replace=rays > size * size)
  src = np.arange(1, num_views + 1)
  ex = {
      "src_images": scene.images[src], "src_intrinsics": scene.intrinsics[src],
      "src_c2w": scene.c2w[src], "tgt_intrinsics": scene.intrinsics[0],
      "tgt_c2w": scene.c2w[0],
      "pixels": np.stack([flat % size, flat // size], -1).astype(np.int32),
      "rgb": scene.images[0].reshape(-1, 3)[flat].astype(np.float32) / 255.0,
      "pairs": np.stack([np.arange(0, rays // 4, 2), np.arange(1, rays // 4, 2)], -1),
      "near": np.float32(scene.near), "far": np.float32(scene.far),
  }
  return {k: np.asarray(v)[None] for k, v in ex.items()}


def prepare_train(config: GNTConfig, num_views: int = 10, size: int = 64, rays: int = 512,
                  sub_chunk: int | None = None, params=None, start: bool = True,
                  host_loop: bool | None = None) -> Prepared:
  """Builds, compiles and (with ``start``) warms up the full train step on one example
  of ``rays`` rays (``params``: the starting parameters, default a fresh
  initialisation; ``host_loop``: see ``training.step.make_train_step``)."""
  family = GNTFamily(GNTModel(config))
  if params is None:
    params = family.init_params(jax.random.PRNGKey(0))
  opt_cfg = ml_collections.ConfigDict(dict(
      name="adam", lr_feature=1e-3, lr_transformer=5e-4, decay_steps=0, decay_rate=0.5,
      b1=0.9, b2=0.999, eps=1e-8, clip_norm=0.0, accumulate_steps=1))
  loss_cfg = ml_collections.ConfigDict(dict(
      coarse_weight=1.0, fine_weight=1.0, diversity_weight=0.01 if config.moe else 0.0,
      consistency_weight=0.1 if config.moe else 0.0, symmetric_consistency=True))
  tx = optim.make_optimizer(opt_cfg)
  # One example per step: its data axis has one row, on the first device.
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  if sub_chunk is None:
    sub_chunk = default_train_sub_chunk()
  with jax.set_mesh(mesh):
    state, shardings = train_state.create_state(params, tx, 0, mesh)
    step_fn = train_step.make_train_step(family, tx, loss_cfg, (size, size), mesh, shardings,
                                         sub_chunk=sub_chunk, host_loop=host_loop)
    batch = pipeline.to_device_batch(_train_batch(num_views, size, rays), mesh)
    begin = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - begin
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], batch)
    return metrics

  def first_runs(prepared: Prepared):
    prepared.figures["train_first_step_s"] = prepared.warm_up()

  prepared = Prepared(run, {"train_rays": rays, "train_sub_chunk": sub_chunk,
                            "train_compile_s": compile_s,
                            "train_host_loop": isinstance(step_fn, slice_loop.SliceLoopStep)},
                      hlo_text=compiled.as_text, first_runs=first_runs)
  return prepared.start() if start else prepared


def default_train_sub_chunk() -> int:
  """Rays per training slice: 32 on CPU (cache-sized), 0 (no slicing) elsewhere."""
  return 32 if jax.default_backend() == "cpu" else 0


def benchmark(configs: dict[str, GNTConfig], num_views: int = 10, size: int = 64,
              rays: int = 512, repeats: int = 5, sub_chunk: int | None = None,
              train: bool = True, train_sub_chunk: int | None = None,
              train_repeats: int | None = None,
              compile_workers: int = 2, host_loop: bool | None = None,
              baseline: official_baseline.OfficialHarness | None = None,
              rounds: int = 1) -> dict[str, dict]:
  """Times inference (and training) of each named config; returns name -> figures.

  ``repeats`` timed inference runs and ``train_repeats`` (default ``repeats``) timed
  train steps per model, each after a warm-up run.

  With ``baseline`` (the official code's harness) they are timed in ``rounds`` rounds,
  ``repeats`` and ``train_repeats`` each, and every round runs: movenerf's inference, the
  official inference, movenerf's training, the official training. The figures of the
  first model (dense GNT) against the official ones go to its ``"baseline"`` entry
  (``official_baseline.summarize``).

  The programs are compiled ``compile_workers`` at a time, in threads: one thread's
  Python tracing and XLA's single-threaded passes then run beside another's parallel
  code generation. Nothing is timed while compiling, apart from the compilations. The
  timed runs of the models are interleaved, so that slow drifts of a shared machine hit
  them alike. Every config must have the same dtype (one peak measurement).
  """
  dtypes = {c.dtype for c in configs.values()}
  if len(dtypes) != 1:
    raise ValueError(f"configs of different dtypes {sorted(dtypes)}: benchmark them apart")
  peak = peak_matmul_flops(dtypes.pop())
  begin = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(compile_workers) as pool:
    # One initialisation per model.
    variables = dict(zip(configs, pool.map(
        lambda c: init_variables(GNTModel(c), jax.random.PRNGKey(0)), configs.values())))
    builds = {("infer", n): functools.partial(prepare, c, num_views, size, rays, sub_chunk,
                                              repeats, variables[n], start=False)
              for n, c in configs.items()}
    if train:
      builds.update({("train", n): functools.partial(
          prepare_train, c, num_views, size, rays, train_sub_chunk,
          variables[n]["params"], start=False, host_loop=host_loop)
          for n, c in configs.items()})
    built = dict(zip(builds, pool.map(lambda build: build(), builds.values())))
  compile_wall = time.perf_counter() - begin
  compile_peak_mb = _reset_peak_rss()
  for p in built.values():
    p.start()
    p.figures.update(compile_workers=compile_workers, case_compile_wall_s=compile_wall)
  prepared = {n: built["infer", n] for n in configs}
  trainers = {n: built.get(("train", n)) for n in configs}
  train_repeats = repeats if train_repeats is None else train_repeats
  compared = None
  if baseline is None:
    for _ in range(max(repeats, train_repeats)):
      for n in configs:
        if len(prepared[n].times) < repeats:
          prepared[n].time_once()
        if trainers[n] is not None and len(trainers[n].times) < train_repeats:
          trainers[n].time_once()
  else:
    compared = _rounds_with_baseline(prepared, trainers, repeats, train_repeats, baseline,
                                     rounds, rays)
  results = {n: _combine(prepared[n], trainers[n], peak, compile_peak_mb) for n in configs}
  if compared is not None:
    r = results[next(iter(configs))]
    # Both sides' rates of the same model's FLOPs (movenerf's count, training 3x the
    # forward) against the large-matmul peak of this run.
    for phase, work in (("infer", 1), ("train", 3)):
      if phase in compared:
        for side in ("movenerf", "official"):
          s = compared[phase][side]
          s["fraction_of_peak"] = (work * r["flops_per_ray"] * s["median_rays_per_s"]
                                   / (r["peak_gflops_per_s"] * 1e9))
    r["baseline"] = compared
  return results


def _rounds_with_baseline(prepared: dict, trainers: dict, repeats: int, train_repeats: int,
                          baseline: official_baseline.OfficialHarness, rounds: int,
                          rays: int) -> dict:
  """Times movenerf's runs and the official ones interleaved (see ``benchmark``); returns
  the comparison of the first model with the official code, or ``{"skipped": why}``
  when the official code failed (movenerf's rounds then go on alone)."""
  first = next(iter(prepared))
  order, per_round, failed = [], [], None

  def official(phase: str, record: dict):
    nonlocal failed
    if failed is not None:
      return
    try:
      result = baseline.run(phase, rays)
    except (RuntimeError, OSError, ValueError) as e:
      failed = str(e)
      print(f"baseline official: skipped: {failed}", flush=True)
      return
    order.append(f"official {phase}")
    record["official"][phase] = result["times_s"]
    record["official_results"][phase] = result

  for _ in range(rounds):
    record = {"movenerf": {}, "official": {}, "official_results": {}}
    for phase, runs, count in (("infer", prepared, repeats), ("train", trainers, train_repeats)):
      if runs[first] is None:
        continue
      start = len(runs[first].times)
      for _ in range(count):
        for p in runs.values():
          p.time_once()
      order.append(f"movenerf {phase}")
      record["movenerf"][phase] = runs[first].times[start:]
      official(phase, record)
    per_round.append(record)
  if failed is not None:
    return {"skipped": failed}
  return {**official_baseline.describe(baseline), "rounds": rounds, "order": order,
          "per_round": per_round,
          **official_baseline.summarize(per_round, {"infer": rays, "train": rays})}


def _combine(prepared: Prepared, trainer: Prepared | None, peak: float,
             compile_peak_mb: float) -> dict:
  r = prepared.result()
  r["peak_gflops_per_s"] = peak / 1e9
  r["infer_fraction_of_peak"] = r["achieved_gflops_per_s"] * 1e9 / peak
  if trainer is not None:
    median = statistics.median(trainer.times)
    rays = trainer.figures["train_rays"]
    r.update(trainer.figures, train_rays_per_s=rays / median, train_step_s_median=median,
             train_step_s_min=min(trainer.times), train_repeats=len(trainer.times))
    # Forward + backward ~ 3x the forward FLOPs (the usual estimate; XLA's count of the
    # sliced program would count the loop body once).
    r["train_gflops_per_s"] = 3 * r["flops_per_ray"] * rays / median / 1e9
    r["train_fraction_of_peak"] = r["train_gflops_per_s"] * 1e9 / peak
  r["peak_host_rss_mb"] = _peak_rss_mb()
  r["peak_host_rss_with_compile_mb"] = max(compile_peak_mb, _max_rss_mb())
  r["peak_device_bytes"] = _device_peak_bytes()
  return r


def _slice_mode(r: dict) -> str:
  if not r.get("train_host_loop"):
    return "whole example, one program"
  return f"slices of {r['train_sub_chunk']}, backward per slice, host loop"


def format_table(r: dict) -> str:
  dev_mem = (f"{r['peak_device_bytes'] / 2**20:,.0f} MiB" if r["peak_device_bytes"]
             else "n/a (backend does not report)")
  devices = r.get("render_devices", 1)
  rows = [
      ("device", f"{r['device']} ({r['backend']}, {r['num_devices']} device(s))"),
      ("configuration", f"GNT depth {r['depth']} width {r['width']}, {r['num_views']} views of "
                        f"{r['image_size']}x{r['image_size']}, {r['num_samples']}"
                        f"+{r['num_importance']} samples, {r['dtype']}"),
      ("chunk (rays)", f"{r['chunk']} over {devices} device(s), inner sub-chunks of "
                       f"{r['sub_chunk'] or r['chunk'] // devices}"),
      ("inference", f"{r['infer_rays_per_s']:,.0f} rays/s (median of {r['repeats']}; "
                    f"step {r['infer_step_s_median'] * 1e3:,.1f} ms)"),
      ("compile", f"{r['compile_s']:.1f} s (feature net {r['encode_compile_s']:.1f} s); "
                  f"{r['compile_workers']} at a time, every program of the run "
                  f"{r['case_compile_wall_s']:.0f} s"),
      ("feature net", f"{r['encode_s_median'] * 1e3:,.1f} ms per set of source views"),
  ]
  if "train_rays_per_s" in r:
    rows += [
        ("training", f"{r['train_rays_per_s']:,.0f} rays/s, step "
                     f"{r['train_step_s_median'] * 1e3:,.0f} ms for {r['train_rays']} rays "
                     f"(median of {r['train_repeats']}; {_slice_mode(r)})"),
        ("train compile", f"{r['train_compile_s']:.1f} s"),
    ]
  rows += [
      ("model FLOPs", f"{r['flops_per_ray'] / 1e6:,.1f} MFLOP per ray (forward)"),
      ("achieved", f"{r['achieved_gflops_per_s']:,.1f} GFLOP/s inference"
                   + (f", {r['train_gflops_per_s']:,.1f} training" if "train_rays_per_s" in r
                      else "")),
      ("device peak", f"{r['peak_gflops_per_s']:,.1f} GFLOP/s (large matmul, {r['dtype']}): "
                      f"{100 * r['infer_fraction_of_peak']:.0f}% inference"
                      + (f", {100 * r['train_fraction_of_peak']:.0f}% training"
                         if "train_rays_per_s" in r else "")),
      ("peak host RSS", f"{r['peak_host_rss_mb']:,.0f} MiB running "
                        f"({r['peak_host_rss_with_compile_mb']:,.0f} MiB while compiling)"),
      ("peak device memory", dev_mem),
  ]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def suite_table(cases: list[dict]) -> str:
  """Markdown table of suite cases."""
  lines = ["| model | dtype | rays/step | infer rays/s | train rays/s | train step | "
           "train compile | peak host | peak device | MFLOP/ray | % peak infer / train |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in cases:
    dev = f"{r['peak_device_bytes'] / 2**30:.2f} GiB" if r.get("peak_device_bytes") else "n/a"
    lines.append(
        f"| {r['model']} | {r['dtype']} | {r['chunk']} | {r['infer_rays_per_s']:,.0f} | "
        f"{r['train_rays_per_s']:,.0f} | {r['train_step_s_median']:.2f} s | "
        f"{r['train_compile_s']:.0f} s | {r['peak_host_rss_mb'] / 1024:.2f} GiB | {dev} | "
        f"{r['flops_per_ray'] / 1e6:.0f} | "
        f"{100 * r['infer_fraction_of_peak']:.0f}% / {100 * r['train_fraction_of_peak']:.0f}% |")
  return "\n".join(lines)


def _run_suite(args) -> dict:
  """Every (dtype, rays) case in a fresh process, GNT and GNT-MoVE interleaved in it;
  returns the combined figures."""
  cases = []
  with tempfile.TemporaryDirectory() as tmp:
    # The cases share one persistent compilation cache, for the programs that are the
    # same in every case of a dtype and take long to compile: the models' parameter
    # initialisations and, with the host loop over slice
    # groups (training.slice_loop), the train step's programs but ``prepare``: the
    # 2048-ray cases compile their train steps from the 512-ray cases' programs. The
    # cache lives as long as this suite: no figure comes from an earlier run.
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1")
    for rays in (512, 2048):
      for dtype in ("float32", "bfloat16"):
        out = os.path.join(tmp, f"case_{dtype}_{rays}.json")
        # At 2048 rays the suite times one render and one train step (after the
        # warm-up run): each takes several times the 512-ray one.
        repeats = args.repeats if rays <= 512 else 1
        train_repeats = args.train_repeats or repeats
        cmd = [sys.executable, "-m", "movenerf.tools.bench", "--model", "both",
               "--dtype", dtype, "--rays", str(rays), "--json", out,
               "--repeats", str(repeats), "--train-repeats", str(train_repeats),
               "--compile-workers", str(args.compile_workers),
               "--train-loop", args.train_loop]
        print(f"== GNT and GNT-MoVE, {dtype}, {rays} rays ==", flush=True)
        subprocess.run(cmd, check=True, env=env)
        with open(out) as f:
          case = json.load(f)
        move = case.pop("move")
        case.pop("move_cost_ratio", None)
        cases += [case, move]
  reference = next(c for c in cases if c["model"] == "GNT" and c["dtype"] == "float32"
                   and c["chunk"] == 512)
  result = {k: reference[k] for k in ("infer_rays_per_s", "train_rays_per_s")}
  result["cases"] = cases
  print(suite_table(cases))
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--rays", "--chunk", type=int, default=512, dest="rays",
                      help="rays per compiled call (inference) and per train step")
  parser.add_argument("--sub-chunk", type=int, default=None,
                      help="rays per inner inference slice (default: 16 on CPU, whole chunk "
                           "elsewhere)")
  parser.add_argument("--train-sub-chunk", type=int, default=None,
                      help="rays per training slice (default: 32 on CPU, 0 elsewhere)")
  parser.add_argument("--train-loop", default="auto", choices=["auto", "host", "jit"],
                      help="host: per-slice backward passes looped on the host over compiled "
                           "programs; jit: whole examples in one jitted step (auto: the host "
                           "loop on one CPU device, see movenerf.training.step)")
  parser.add_argument("--no-train", action="store_true", help="inference only")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed inference runs (in --suite, 1 at 2048 rays)")
  parser.add_argument("--train-repeats", type=int, default=None,
                      help="timed train steps (default: --repeats; in --suite, 1 at 2048 "
                           "rays)")
  parser.add_argument("--compile-workers", type=int, default=2,
                      help="programs compiled at a time, in threads (1: one after the other)")
  parser.add_argument("--views", type=int, default=10)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--samples", type=int, default=64)
  parser.add_argument("--importance", type=int, default=0)
  parser.add_argument("--depth", type=int, default=8)
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--feature-width", type=int, default=64,
                      help="ResUNet channel scale (64: the published feature net)")
  parser.add_argument("--model", default="both", choices=["gnt", "move", "both"],
                      help="dense GNT, GNT-MoVE (4 experts, top-2, permanent expert in the "
                           "odd view blocks), or both side by side")
  parser.add_argument("--suite", action="store_true",
                      help="GNT and MoVE x float32 and bfloat16 x 512 and 2048 rays, one "
                           "process per dtype and size")
  parser.add_argument("--json", default=None, help="also write the figures to this file")
  parser.add_argument("--baseline", default="none", choices=["none", "official"],
                      help="official: also time the official PyTorch GNT in the same run, "
                           "interleaved with movenerf's runs, and print the ratios (the "
                           "reference configuration only; skipped, with a line saying why, "
                           "where its harness or PyTorch is missing)")
  parser.add_argument("--baseline-python", default=official_baseline.default_python(),
                      help="Python interpreter with PyTorch for the official code (default: "
                           f"${official_baseline.ENV_PYTHON} or "
                           f"{official_baseline.DEFAULT_PYTHON})")
  parser.add_argument("--baseline-harness", default=official_baseline.default_harness(),
                      help="the official code's benchmark harness (default: "
                           f"${official_baseline.ENV_HARNESS} or "
                           f"{official_baseline.DEFAULT_HARNESS})")
  parser.add_argument("--baseline-rounds", type=int, default=3,
                      help="rounds of movenerf inference, official inference, movenerf "
                           "training, official training; --repeats and --train-repeats then "
                           "count per round")
  parser.add_argument("--baseline-repeats", type=int, default=1,
                      help="timed official steps per phase and round")
  parser.add_argument("--baseline-warmup", type=int, default=1,
                      help="untimed official steps before them (each phase is a fresh "
                           "process)")
  args = parser.parse_args(argv)
  sharding.cpu_device_per_core()
  if args.suite:
    if args.baseline != "none":
      print("baseline official: skipped: not with --suite (run it on the reference "
            "configuration without --suite)", flush=True)
    flat = _run_suite(args)
  else:
    flat = _run_models(args)
  if args.json:
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
      json.dump(flat, f, indent=2)
    os.replace(tmp, args.json)
  return 0


def _baseline_harness(args) -> official_baseline.OfficialHarness | None:
  """The official code's harness for ``--baseline official``, or None (after printing
  one line saying why) where it cannot run here or on this configuration."""
  if args.baseline == "none":
    return None
  options = {k: getattr(args, k) for k in official_baseline.REFERENCE}
  harness = official_baseline.OfficialHarness(
      args.baseline_python, args.baseline_harness, official_baseline.thread_count(),
      args.baseline_repeats, args.baseline_warmup)
  try:
    harness.check()
    if args.model == "move":
      raise official_baseline.Unavailable("it compares dense GNT (--model gnt or both)")
    mismatch = official_baseline.config_mismatch(options)
    if mismatch:
      raise official_baseline.Unavailable(
          "the official harness runs the reference configuration only ("
          + ", ".join(mismatch) + ")")
  except official_baseline.Unavailable as e:
    print(f"baseline official: skipped: {e}", flush=True)
    return None
  return harness


def _run_models(args) -> dict:
  config = GNTConfig(depth=args.depth, width=args.width, feature_width=args.feature_width,
                     num_samples=args.samples, num_importance=args.importance,
                     dtype=args.dtype)
  configs = {}
  if args.model in ("gnt", "both"):
    configs["gnt"] = config
  if args.model in ("move", "both"):
    configs["move"] = dataclasses.replace(
        config, moe=MoEConfig(layers=tuple(range(1, args.depth, 2))))
  harness = _baseline_harness(args)
  results = benchmark(configs, args.views, args.size, args.rays, args.repeats,
                      args.sub_chunk, not args.no_train, args.train_sub_chunk,
                      args.train_repeats, args.compile_workers,
                      {"auto": None, "host": True, "jit": False}[args.train_loop],
                      baseline=harness, rounds=args.baseline_rounds)
  titles = {"gnt": "GNT", "move": "GNT-MoVE (4 experts, top-2, permanent expert)"}
  for name, r in results.items():
    print(f"== {titles[name]} ==\n" + format_table(r))
  compared = results[next(iter(results))].get("baseline", {})
  if "rounds" in compared:
    print(f"== {titles[next(iter(results))]} against the official GNT, same run ==\n"
          + official_baseline.format_table(compared))
  ratio = None
  if len(results) == 2:
    ratio = {k: results["move"][k.replace("rays_per_s", "step_s_median")] /
             results["gnt"][k.replace("rays_per_s", "step_s_median")]
             for k in ("infer_rays_per_s", "train_rays_per_s") if k in results["gnt"]}
    print("GNT-MoVE costs " + ", ".join(f"{v:.2f}x dense GNT per ray ({k.split('_')[0]})"
                                        for k, v in ratio.items()))
  # Top-level keys describe the first model (dense GNT when run); MoVE under "move".
  flat = dict(results[next(iter(results))])
  if "move" in results and "gnt" in results:
    flat["move"] = results["move"]
    flat["move_cost_ratio"] = ratio
  return flat


if __name__ == "__main__":
  sys.exit(main())
