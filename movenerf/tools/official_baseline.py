"""Same-run baseline of ``tools.bench`` against the official PyTorch GNT.

The official code runs in a harness of its own, outside the project: a Python program
(``--baseline-harness``, default ``/tmp/official_gnt/bench_ref.py``, built by
``../shared/tools/official_gnt/setup.sh``) run by an interpreter that has PyTorch
(``--baseline-python``, default ``/tmp/official_gnt/venv/bin/python``; the environment
variables ``MOVENERF_BASELINE_HARNESS`` and ``MOVENERF_BASELINE_PYTHON`` change the
defaults). Each call is a fresh process,

  PYTHON HARNESS --phase infer|train --n-rays RAYS --reps REPS --warmup WARMUP

with ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to the benchmark's own thread count,
and prints a line ``RESULT {json}`` whose ``times_s`` are its timed steps (after
``WARMUP`` untimed ones) of ``RAYS`` rays each. The harness runs the reference
configuration only (``REFERENCE``). Nothing here imports PyTorch.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
from typing import Sequence

DEFAULT_PYTHON = "/tmp/official_gnt/venv/bin/python"
DEFAULT_HARNESS = "/tmp/official_gnt/bench_ref.py"
ENV_PYTHON = "MOVENERF_BASELINE_PYTHON"
ENV_HARNESS = "MOVENERF_BASELINE_HARNESS"
SETUP_HINT = "../shared/tools/official_gnt/setup.sh builds it"

# The configuration the official harness runs (bench's option names and values).
REFERENCE = {"depth": 8, "width": 64, "feature_width": 64, "views": 10, "size": 64,
             "samples": 64, "importance": 0, "dtype": "float32"}

PHASES = ("infer", "train")


class Unavailable(Exception):
  """The baseline cannot run here; the message says why."""


def default_python() -> str:
  return os.environ.get(ENV_PYTHON) or DEFAULT_PYTHON


def default_harness() -> str:
  return os.environ.get(ENV_HARNESS) or DEFAULT_HARNESS


def thread_count() -> int:
  """The CPUs this process may run on (the threads XLA's CPU backend uses)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_model() -> str:
  """The processor's ``model name`` from /proc/cpuinfo, else ``platform.processor()``."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def config_mismatch(options: dict) -> list[str]:
  """The options (bench's names) whose values differ from the harness's configuration,
  as ``"name value != reference"``."""
  return [f"{k} {options[k]} != {v}" for k, v in REFERENCE.items()
          if k in options and options[k] != v]


@dataclasses.dataclass
class OfficialHarness:
  """Runs the official code's harness, one process per call."""

  python: str
  harness: str
  threads: int
  repeats: int = 1  # timed steps per call
  warmup: int = 1  # untimed steps before them, per call
  torch_version: str | None = None  # set by ``check``

  def check(self) -> str:
    """Raises ``Unavailable`` unless the harness exists and the interpreter imports
    PyTorch; returns (and keeps) PyTorch's version."""
    if not os.path.isfile(self.harness):
      raise Unavailable(f"no harness at {self.harness} ({SETUP_HINT})")
    if not (os.path.isfile(self.python) and os.access(self.python, os.X_OK)):
      raise Unavailable(f"no Python interpreter at {self.python} ({SETUP_HINT})")
    probe = subprocess.run([self.python, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True, env=self._env())
    if probe.returncode != 0 or not probe.stdout.strip():
      raise Unavailable(f"{self.python} cannot import torch ({SETUP_HINT})")
    self.torch_version = probe.stdout.strip().splitlines()[-1]
    return self.torch_version

  def _env(self) -> dict:
    threads = str(self.threads)
    return dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)

  def command(self, phase: str, rays: int) -> list[str]:
    return [self.python, self.harness, "--phase", phase, "--n-rays", str(rays),
            "--reps", str(self.repeats), "--warmup", str(self.warmup)]

  def run(self, phase: str, rays: int) -> dict:
    """Runs one phase in a fresh process; returns its ``RESULT`` figures, whose
    ``times_s`` are the step times. Raises ``RuntimeError`` when it prints none."""
    proc = subprocess.run(self.command(phase, rays), capture_output=True, text=True,
                          env=self._env(), cwd=os.path.dirname(os.path.abspath(self.harness)))
    results = [line[len("RESULT "):] for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
      tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
      raise RuntimeError(f"{phase} phase exited {proc.returncode} without a RESULT line: "
                         f"{tail[0][:300]}")
    result = json.loads(results[-1])
    if not result.get("times_s"):
      raise RuntimeError(f"{phase} phase printed no times_s")
    return result


def spread(rays: int, times: Sequence[float]) -> dict:
  """Rays/s of each step, the median (``rays`` over the median step time) and the
  extremes."""
  return {"rays_per_s": [rays / t for t in times],
          "median_rays_per_s": rays / statistics.median(times),
          "min_rays_per_s": rays / max(times), "max_rays_per_s": rays / min(times),
          "steps": len(times)}


def summarize(rounds: list[dict], rays: dict[str, int]) -> dict:
  """The figures of the interleaved rounds: for each phase, each side's step times over
  every round, their rays/s (each step's, median, min, max) and movenerf's over the
  official code's (``ratio``: of the medians; ``ratio_min``/``ratio_max``: slowest
  movenerf step over fastest official one and the reverse).

  Args:
    rounds: per round, ``{"movenerf": {phase: [step s]}, "official": {phase: [step s]}}``.
    rays: rays per step of each phase.
  """
  out = {}
  for phase in PHASES:
    if not all(phase in r["official"] for r in rounds) or not rounds:
      continue
    mine = spread(rays[phase], [t for r in rounds for t in r["movenerf"][phase]])
    theirs = spread(rays[phase], [t for r in rounds for t in r["official"][phase]])
    out[phase] = {
        "rays": rays[phase], "movenerf": mine, "official": theirs,
        "ratio": mine["median_rays_per_s"] / theirs["median_rays_per_s"],
        "ratio_min": mine["min_rays_per_s"] / theirs["max_rays_per_s"],
        "ratio_max": mine["max_rays_per_s"] / theirs["min_rays_per_s"],
    }
  return out


def describe(harness: OfficialHarness) -> dict:
  """What the figures were measured with: the harness, PyTorch, threads, CPU, date."""
  return {"name": "official", "harness": harness.harness, "python": harness.python,
          "torch_version": harness.torch_version, "threads": harness.threads,
          "repeats_per_call": harness.repeats, "warmup_per_call": harness.warmup,
          "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def format_table(b: dict) -> str:
  """The baseline block of bench's printout."""
  rows = [("official code", f"PyTorch {b['torch_version']}, {b['threads']} threads, "
                            f"{b['rounds']} rounds interleaved with movenerf's runs"),
          ("machine", f"{b['cpu_model']} ({b['cpu_count']} CPUs), {b['date']}")]
  for phase, name in (("infer", "inference"), ("train", "training")):
    if phase not in b:
      continue
    p = b[phase]
    for side in ("movenerf", "official"):
      s = p[side]
      peak = (f"; {100 * s['fraction_of_peak']:.1f}% of the matmul peak"
              if "fraction_of_peak" in s else "")
      rows.append((f"{name} {side}", f"{s['median_rays_per_s']:,.1f} rays/s (median of "
                                     f"{s['steps']}; {s['min_rays_per_s']:,.1f}-"
                                     f"{s['max_rays_per_s']:,.1f}{peak})"))
    rows.append((f"{name} ratio", f"{p['ratio']:.2f}x the official rays/s "
                                  f"({p['ratio_min']:.2f}-{p['ratio_max']:.2f}x)"))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
