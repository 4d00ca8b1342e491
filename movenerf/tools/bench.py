r"""Inference benchmark of GNT at the reference configuration.

  python -m movenerf.tools.bench                 # GNT and GNT-MoVE tables
  python -m movenerf.tools.bench --json out.json # also JSON (infer_rays_per_s, ...)

Reference configuration: depth 8, width 64, 10 source views of 64x64, 64 samples per
ray (coarse only), chunks of 512 rays, float32. Reports the median of ``--repeats``
timed runs after a warm-up (compile time separately), peak host memory (max RSS) and
device memory where the backend reports it, model FLOPs per ray (XLA cost analysis of
the compiled chunk) and the achieved FLOP/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from movenerf.data import procedural
from movenerf.cameras import Cameras
from movenerf.epipolar import SourceViews
from movenerf.models.gnt_model import GNTConfig, GNTModel, init_variables
from movenerf.moe.config import MoEConfig
from movenerf.rays import image_rays
from movenerf.render import default_sub_chunk, encode_sources, render_chunk


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

  def time_once(self) -> None:
    start = time.perf_counter()
    jax.block_until_ready(self.step())
    self.times.append(time.perf_counter() - start)

  def result(self) -> dict:
    median = statistics.median(self.times)
    chunk = self.figures["chunk"]
    return {**self.figures, "repeats": len(self.times), "infer_rays_per_s": chunk / median,
            "infer_step_s_median": median, "infer_step_s_min": min(self.times),
            "achieved_gflops_per_s": self.figures["flops_per_ray"] * chunk / median / 1e9,
            "peak_host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_device_bytes": _device_peak_bytes()}


def prepare(config: GNTConfig, num_views: int = 10, size: int = 64, chunk: int = 512,
            sub_chunk: int | None = None, repeats: int = 5) -> Prepared:
  """Builds, compiles and warms up rendering one chunk of rays."""
  target, sources, near, far = _scene(num_views, size)
  model = GNTModel(config)
  variables = init_variables(model, jax.random.PRNGKey(0))
  rays = image_rays(target)
  rays = rays[np.arange(chunk) % rays.num_rays]

  start = time.perf_counter()
  featmaps = jax.block_until_ready(encode_sources(model, variables, sources.images))
  encode_compile = time.perf_counter() - start
  encode_times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(encode_sources(model, variables, sources.images))
    encode_times.append(time.perf_counter() - start)

  if sub_chunk is None:
    sub_chunk = default_sub_chunk()
  args = (model, variables, rays, target, sources, featmaps, near, far, sub_chunk)
  start = time.perf_counter()
  render_chunk.lower(*args).compile()
  compile_s = time.perf_counter() - start
  # XLA's cost analysis counts a lax.map body once: count FLOPs on the unmapped program.
  flops = _flops(render_chunk.lower(*args[:-1], 0).compile())
  jax.block_until_ready(render_chunk(*args))  # warm-up
  figures = {
      "model": "GNT-MoVE" if config.moe else "GNT",
      "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
      "num_devices": jax.device_count(), "platform": platform.processor() or platform.machine(),
      "dtype": config.dtype, "depth": config.depth, "width": config.width,
      "num_views": num_views, "image_size": size, "num_samples": config.num_samples,
      "num_importance": config.num_importance, "chunk": chunk, "sub_chunk": sub_chunk,
      "compile_s": compile_s, "encode_s_median": statistics.median(encode_times),
      "encode_compile_s": encode_compile, "flops_per_ray": flops / chunk,
  }
  return Prepared(lambda: render_chunk(*args), figures)


def benchmark(config: GNTConfig, num_views: int = 10, size: int = 64, chunk: int = 512,
              repeats: int = 5, sub_chunk: int | None = None) -> dict:
  """Times rendering one chunk of rays; returns the figures as a dict."""
  prepared = prepare(config, num_views, size, chunk, sub_chunk, repeats)
  for _ in range(repeats):
    prepared.time_once()
  return prepared.result()


def format_table(r: dict) -> str:
  dev_mem = (f"{r['peak_device_bytes'] / 2**20:,.0f} MiB" if r["peak_device_bytes"]
             else "n/a (backend does not report)")
  rows = [
      ("device", f"{r['device']} ({r['backend']}, {r['num_devices']} device(s))"),
      ("configuration", f"GNT depth {r['depth']} width {r['width']}, {r['num_views']} views of "
                        f"{r['image_size']}x{r['image_size']}, {r['num_samples']}"
                        f"+{r['num_importance']} samples, {r['dtype']}"),
      ("chunk (rays)", f"{r['chunk']} (inner sub-chunks of {r['sub_chunk'] or r['chunk']})"),
      ("inference", f"{r['infer_rays_per_s']:,.0f} rays/s (median of {r['repeats']}; "
                    f"step {r['infer_step_s_median'] * 1e3:,.1f} ms)"),
      ("compile", f"{r['compile_s']:.1f} s (feature net {r['encode_compile_s']:.1f} s)"),
      ("feature net", f"{r['encode_s_median'] * 1e3:,.1f} ms per set of source views"),
      ("model FLOPs", f"{r['flops_per_ray'] / 1e6:,.1f} MFLOP per ray"),
      ("achieved", f"{r['achieved_gflops_per_s']:,.1f} GFLOP/s"),
      ("peak host RSS", f"{r['peak_host_rss_mb']:,.0f} MiB"),
      ("peak device memory", dev_mem),
  ]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--chunk", type=int, default=512, help="rays per compiled call")
  parser.add_argument("--sub-chunk", type=int, default=None,
                      help="rays per inner step (default: 64 on CPU, whole chunk elsewhere)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--views", type=int, default=10)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--samples", type=int, default=64)
  parser.add_argument("--importance", type=int, default=0)
  parser.add_argument("--depth", type=int, default=8)
  parser.add_argument("--model", default="both", choices=["gnt", "move", "both"],
                      help="dense GNT, GNT-MoVE (4 experts, top-2, permanent expert in the "
                           "odd view blocks), or both side by side")
  parser.add_argument("--json", default=None, help="also write the figures to this file")
  args = parser.parse_args(argv)
  config = GNTConfig(depth=args.depth, num_samples=args.samples,
                     num_importance=args.importance, dtype=args.dtype)
  configs = {}
  if args.model in ("gnt", "both"):
    configs["gnt"] = config
  if args.model in ("move", "both"):
    configs["move"] = dataclasses.replace(
        config, moe=MoEConfig(layers=tuple(range(1, args.depth, 2))))
  prepared = {name: prepare(c, args.views, args.size, args.chunk, args.sub_chunk, args.repeats)
              for name, c in configs.items()}
  # Interleave the timed runs so that slow drifts of a shared machine hit both alike.
  for _ in range(args.repeats):
    for p in prepared.values():
      p.time_once()
  results = {name: p.result() for name, p in prepared.items()}
  titles = {"gnt": "GNT", "move": "GNT-MoVE (4 experts, top-2, permanent expert)"}
  for name, r in results.items():
    print(f"== {titles[name]} ==\n" + format_table(r))
  if len(results) == 2:
    ratio = results["gnt"]["infer_rays_per_s"] / results["move"]["infer_rays_per_s"]
    print(f"GNT-MoVE costs {ratio:.2f}x dense GNT per ray (inference)")
  if args.json:
    # Top-level keys describe dense GNT (when run); MoVE figures under "move".
    flat = dict(results.get("gnt", {}))
    if "move" in results:
      flat["move"] = results["move"]
      if "gnt" in results:
        flat["move_cost_ratio"] = ratio
    with open(args.json, "w") as f:
      json.dump(flat, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
