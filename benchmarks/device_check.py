r"""One pass of the checks worth running whenever an accelerator is at hand.

  bash benchmarks/device_check.sh        # on the GPU / TPU machine, from the repository

On whatever ``jax.devices()`` shows, each stage in a process of its own under its own
``timeout`` (the whole run under ``DEVICE_CHECK_BUDGET_S``, 570 s: it ends within 10
minutes):

1. ``device``: platform, device kind and count, JAX version;
2. ``parity``: ``python -m movenerf.tools.check_parity`` on each reference-vector file
   (``../shared/reference/``): pass/fail and the max difference of every compared array;
3. ``bench``: ``python -m movenerf.tools.bench --suite --repeats 3`` (the figures of its
   ``--json``; the cases finished before a timeout when it runs out of time);
4. ``train``: 200 steps of ``experiments/gnt.py:reference`` without the evaluation at the
   end; step time, rays/s and the final loss from its ``train_metrics.jsonl``.

Everything goes into one JSON file, ``benchmarks/device_check_<platform>_<device kind>_
<UTC date>.json`` (rewritten after each stage), and a short table is printed. A stage that
fails or times out is recorded with its last error line and the run goes on; the exit
status is 1 when any stage failed.

Settings (environment variables; the defaults are the device run's):

  DEVICE_CHECK_STEPS          train steps (200)
  DEVICE_CHECK_TRAIN_CONFIG   config:variant to train (experiments/gnt.py:reference)
  DEVICE_CHECK_TRAIN_ARGS     more train flags (--config.train.sub_chunk=32 is added on CPU)
  DEVICE_CHECK_BENCH_ARGS     bench flags ("--suite --repeats 3")
  DEVICE_CHECK_PARITY_FILES   reference files (gnt_ref_vectors.npz gnt_ref_vectors_c.npz
                              move_gate_vectors.npz)
  DEVICE_CHECK_REFERENCE_DIR  where they are ($MOVENERF_SHARED/reference, else
                              ../shared/reference beside the repository)
  DEVICE_CHECK_SKIP           stages not to run, comma-separated (parity,bench,train)
  DEVICE_CHECK_TIMEOUT_<STAGE>  seconds per stage (DEVICE: 60, PARITY: 120, BENCH: 240,
                              TRAIN: 150)
  DEVICE_CHECK_BUDGET_S       the whole run (570); a stage gets at most what is left
  DEVICE_CHECK_OUT_DIR        where the JSON goes (benchmarks/)
  DEVICE_CHECK_KEEP_TMP       1: keep the stages' logs and the train workdir (they are
                              kept anyway when a stage failed)
"""

from __future__ import annotations

import datetime
import glob
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from movenerf import storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("device", "parity", "bench", "train")
DEFAULT_TIMEOUTS = {"device": 60, "parity": 120, "bench": 240, "train": 150}
DEFAULT_BUDGET_S = 570
DEFAULT_PARITY_FILES = "gnt_ref_vectors.npz gnt_ref_vectors_c.npz move_gate_vectors.npz"
DEFAULT_BENCH_ARGS = "--suite --repeats 3"
DEFAULT_TRAIN_CONFIG = "experiments/gnt.py:reference"
# Seconds a stage's processes get between SIGTERM and SIGKILL (train saves a checkpoint).
KILL_AFTER_S = 15
# A line that names the failure (else the last line of the output is taken).
_ERROR_LINE = re.compile(r"error|exception|fail|killed|out of memory|resource_exhausted",
                         re.IGNORECASE)
# A row of check_parity's report: key, max |jax - ref|, optional FINAL marker, note.
_PARITY_ROW = re.compile(r"^(\S+)\s+([-+]?(?:\d[\d.]*(?:e[-+]?\d+)?|nan|inf))"
                         r"(\s+<-- FINAL)?(?:\s+(.*))?$", re.IGNORECASE)


def _env(name: str, default: str) -> str:
  return os.environ.get(f"DEVICE_CHECK_{name}", default)


class Clock:
  """The run's overall budget: each stage's timeout is cut to what is left of it."""

  def __init__(self, budget_s: float):
    self.start = time.monotonic()
    self.budget_s = budget_s

  def elapsed(self) -> float:
    return time.monotonic() - self.start

  def timeout(self, stage: str) -> float:
    wanted = float(_env(f"TIMEOUT_{stage.upper()}", str(DEFAULT_TIMEOUTS[stage])))
    return max(0.0, min(wanted, self.budget_s - self.elapsed()))


def run(cmd: list[str], timeout_s: float, log_path: str, env: dict | None = None) -> dict:
  """Runs ``cmd`` from the repository root under ``timeout`` (its whole process group),
  output to ``log_path``; returns returncode, timed_out, wall_s, the output and an error
  line when it failed."""
  begin = time.monotonic()
  if timeout_s < 1:
    return {"returncode": None, "timed_out": True, "wall_s": 0.0, "output": "",
            "error": "no time left in DEVICE_CHECK_BUDGET_S"}
  full = ["timeout", f"--kill-after={KILL_AFTER_S}", f"{timeout_s:.0f}", *cmd]
  # Unbuffered, so that the log of a process killed at its timeout has its last lines.
  env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
  with open(log_path, "w") as log:
    proc = subprocess.run(full, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                          env=env, check=False)
  with open(log_path, errors="replace") as f:
    output = f.read()
  result = {"returncode": proc.returncode, "timed_out": proc.returncode in (124, 137),
            "wall_s": round(time.monotonic() - begin, 2), "output": output}
  if result["timed_out"]:
    result["error"] = f"timed out after {timeout_s:.0f} s; last output: {last_line(output)}"
  elif proc.returncode != 0:
    result["error"] = error_line(output) or f"exit status {proc.returncode}"
  return result


def last_line(text: str) -> str:
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return lines[-1] if lines else "(none)"


def error_line(text: str) -> str:
  """The last line that names an error, else the last line."""
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return next((l for l in reversed(lines) if _ERROR_LINE.search(l)), lines[-1] if lines else "")


def slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


# ----------------------------------------------------------------------------- device

def device_info() -> dict:
  """What ``jax.devices()`` shows (run in a process of its own: ``--device-info``)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  first = devices[0]
  info = {
      "platform": first.platform, "device_kind": first.device_kind,
      "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
      "process_count": jax.process_count(), "backend": jax.default_backend(),
      "devices": [str(d) for d in devices], "jax_version": jax.__version__,
      "jaxlib_version": jaxlib.__version__, "python": platform.python_version(),
      "host_cpus": os.cpu_count(), "host_processor": platform.processor() or platform.machine(),
  }
  try:
    stats = first.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  # not every backend has it
    stats = {}
  if "bytes_limit" in stats:
    info["device_memory_bytes"] = int(stats["bytes_limit"])
  return info


def stage_device(clock: Clock, tmp: str) -> dict:
  r = run([sys.executable, os.path.abspath(__file__), "--device-info"],
          clock.timeout("device"), os.path.join(tmp, "device.log"))
  out = {k: r[k] for k in ("returncode", "wall_s") if k in r}
  if r["returncode"] == 0:
    line = next((l for l in reversed(r["output"].splitlines()) if l.startswith("{")), "")
    try:
      out["info"] = json.loads(line)
    except json.JSONDecodeError:
      r["error"] = f"no device info in the output: {last_line(r['output'])}"
  if shutil.which("nvidia-smi"):
    try:
      smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=30, check=False)
      out["nvidia_smi"] = smi.stdout.strip().splitlines()
    except subprocess.TimeoutExpired:
      pass
  return _status(out, r)


def _status(out: dict, r: dict, failed: bool | None = None) -> dict:
  if failed is None:
    failed = "error" in r
  out["status"] = ("timeout" if r.get("timed_out") else "failed") if failed else "ok"
  if failed:
    out["error"] = r.get("error") or "failed"
  return out


# ----------------------------------------------------------------------------- parity

def parse_parity(text: str) -> dict:
  """check_parity's printed report: every row's max difference, the final rows, verdict."""
  rows, final = {}, []
  verdict = None
  for line in text.splitlines():
    if line.startswith(("PASS:", "FAIL:")):
      verdict = line.strip()
      continue
    m = _PARITY_ROW.match(line.rstrip())
    if m is None or line.startswith(("array ", "reference:")):
      continue
    value = float(m.group(2))
    rows[m.group(1)] = value if math.isfinite(value) else None  # "not produced by the port"
    if m.group(3):
      final.append(m.group(1))
  finite = [rows[k] for k in final if rows[k] is not None]
  return {"verdict": verdict, "final_keys": final,
          "max_final_abs_diff": max(finite) if finite else None, "max_abs_diff": rows}


def stage_parity(clock: Clock, tmp: str) -> dict:
  ref_dir = _env("REFERENCE_DIR", os.path.join(
      os.environ.get("MOVENERF_SHARED", os.path.join(os.path.dirname(REPO), "shared")),
      "reference"))
  names = _env("PARITY_FILES", DEFAULT_PARITY_FILES).split()
  stage_end = clock.elapsed() + clock.timeout("parity")
  files = {}
  for name in names:
    path = name if os.path.isabs(name) else os.path.join(ref_dir, name)
    cmd = [sys.executable, "-m", "movenerf.tools.check_parity", "--vectors", path]
    budget = min(stage_end - clock.elapsed(), clock.timeout("parity"))
    r = run(cmd, budget, os.path.join(tmp, f"parity_{slug(name)}.log"))
    entry = {"command": "python " + shlex.join(cmd[1:]),
             "returncode": r["returncode"], "wall_s": r["wall_s"]}
    if r["returncode"] in (0, 1):  # 1: the report printed, a final array out of tolerance
      entry.update(parse_parity(r["output"]))
      entry["passed"] = r["returncode"] == 0
    files[name] = _status(entry, r)
  out = {"reference_dir": ref_dir, "files": files,
         "wall_s": round(sum(f["wall_s"] for f in files.values()), 2)}
  bad = [n for n, f in files.items() if f["status"] != "ok"]
  errors = "; ".join(f"{n}: {files[n]['error']}" for n in bad)
  return _status(out, {"error": errors} if bad else {})


# ----------------------------------------------------------------------------- bench

def bench_cases(figures: dict) -> list[dict]:
  """The cases of a bench JSON: ``--suite``'s list, else the flat models."""
  if "cases" in figures:
    return figures["cases"]
  first = {k: v for k, v in figures.items() if k not in ("move", "move_cost_ratio")}
  return [first] + ([figures["move"]] if "move" in figures else [])


def stage_bench(clock: Clock, tmp: str) -> dict:
  args = shlex.split(_env("BENCH_ARGS", DEFAULT_BENCH_ARGS))
  out_json = os.path.join(tmp, "bench.json")
  cmd = [sys.executable, "-m", "movenerf.tools.bench", *args, "--json", out_json]
  # The suite keeps each finished case's JSON in a temporary directory: under this TMPDIR
  # they are still there when the stage times out.
  bench_tmp = os.path.join(tmp, "bench_tmp")
  os.makedirs(bench_tmp, exist_ok=True)
  r = run(cmd, clock.timeout("bench"), os.path.join(tmp, "bench.log"),
          env=dict(os.environ, TMPDIR=bench_tmp))
  out = {"command": "python -m movenerf.tools.bench " + shlex.join(args) + " --json FILE",
         "returncode": r["returncode"], "wall_s": r["wall_s"]}
  if r["returncode"] == 0 and os.path.exists(out_json):
    with open(out_json) as f:
      out["figures"] = json.load(f)
    out["cases"] = bench_cases(out["figures"])
  else:
    partial = []
    for path in sorted(glob.glob(os.path.join(bench_tmp, "*", "case_*.json"))):
      with open(path) as f:
        partial += bench_cases(json.load(f))
    if partial:
      out["cases"] = partial
      out["partial"] = True
  return _status(out, r)


# ----------------------------------------------------------------------------- train

def train_figures(records: list[dict], rays_per_step: int) -> dict:
  """Figures of ``train_metrics.jsonl`` records. The first record's window holds the
  compilation, so rays/s and step time are the median over the windows after it (or
  the first one, when it is all there is)."""
  steady = records[1:] or records
  rate = statistics.median(r["rays_per_s"] for r in steady)
  last = records[-1]
  return {
      "steps_done": int(last["step"]), "rays_per_step": rays_per_step,
      "rays_per_s_median": rate, "step_s_median": rays_per_step / rate,
      "windows_in_median": len(steady), "first_window_s": records[0]["elapsed_s"],
      "elapsed_s": last["elapsed_s"], "final_loss": last["loss"],
      "final_psnr": last.get("psnr"), "skipped_updates": last.get("skipped_updates"),
  }


def stage_train(clock: Clock, tmp: str, device: dict) -> dict:
  steps = int(_env("STEPS", "200"))
  config = _env("TRAIN_CONFIG", DEFAULT_TRAIN_CONFIG)
  workdir = os.path.join(tmp, "train")
  log_every = max(1, steps // 10)
  flags = [f"--config.train.num_steps={steps}", f"--config.train.log_every={log_every}",
           "--config.eval.at_end=false"]
  if device.get("platform") == "cpu":
    # On CPU the rays go through in 32-ray slices, as in bench (training.slice_loop).
    flags.append("--config.train.sub_chunk=32")
  flags += shlex.split(_env("TRAIN_ARGS", ""))
  cmd = [sys.executable, "-m", "movenerf.train", "--config", config, "--workdir", workdir,
         *flags]
  r = run(cmd, clock.timeout("train"), os.path.join(tmp, "train.log"))
  out = {"command": f"python -m movenerf.train --config {config} --workdir TMP "
                    + shlex.join(flags),
         "config": config, "num_steps": steps, "log_every": log_every,
         "returncode": r["returncode"], "wall_s": r["wall_s"]}
  metrics_path = os.path.join(workdir, "train_metrics.jsonl")
  records = []
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:  # a record cut short by the timeout's kill
          pass
  if records:
    with open(os.path.join(workdir, "config.json")) as f:
      cfg = json.load(f)
    rays_per_step = cfg["data"]["global_batch"] * cfg["data"]["example"]["rays_per_example"]
    out.update(train_figures(records, rays_per_step))
    out["records"] = records
  if "error" not in r and (not records or records[-1]["step"] != steps):
    r["error"] = f"train_metrics.jsonl ends before step {steps}"
  return _status(out, r)


# ----------------------------------------------------------------------------- report

def _git() -> dict:
  def git(*args):
    p = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return p.stdout.strip() if p.returncode == 0 else None
  status = git("status", "--porcelain", "--untracked-files=no")
  return {"commit": git("rev-parse", "HEAD"),
          "dirty": None if status is None else bool(status)}


def _fmt(x, spec: str = ",.0f") -> str:
  return "n/a" if x is None else format(x, spec)


def summary_rows(report: dict) -> list[tuple[str, str, str]]:
  """(stage or item, status, figures) lines of the printed table."""
  st = report["stages"]
  rows = []
  d = st["device"]
  info = d.get("info", {})
  rows.append(("device", d["status"],
               f"{info.get('platform', '?')} / {info.get('device_kind', '?')} x "
               f"{info.get('device_count', '?')}, jax {info.get('jax_version', '?')}"
               if info else d.get("error", "")))
  p = st["parity"]
  if p["status"] == "skipped":
    rows.append(("parity", "skipped", ""))
  for name, f in p.get("files", {}).items():
    figure = (f"{'PASS' if f.get('passed') else 'FAIL'}, max final |diff| "
              f"{_fmt(f.get('max_final_abs_diff'), '.1e')} ({len(f.get('final_keys', []))} "
              "final arrays)" if "passed" in f else f.get("error", ""))
    rows.append((f"parity {name}", f["status"], figure))
  b = st["bench"]
  if b["status"] != "ok" or not b.get("cases"):
    rows.append(("bench", b["status"], b.get("error", "")))
  for c in b.get("cases", []):
    rows.append((f"bench {c['model']} {c['dtype']} {c['chunk']}",
                 "partial" if b.get("partial") else b["status"],
                 f"infer {_fmt(c.get('infer_rays_per_s'))} rays/s, train "
                 f"{_fmt(c.get('train_rays_per_s'))} rays/s (step "
                 f"{_fmt(c.get('train_step_s_median'), '.3f')} s, compile "
                 f"{_fmt(c.get('train_compile_s'), '.0f')} s)"))
  t = st["train"]
  figure = t.get("error", "")
  if "final_loss" in t:
    figure = (f"{t['steps_done']} steps of {t['rays_per_step']} rays: step "
              f"{t['step_s_median']:.3f} s, {t['rays_per_s_median']:,.0f} rays/s, "
              f"final loss {t['final_loss']:.5f}" + (f"; {figure}" if figure else ""))
  rows.append((f"train {t.get('config', '')}".strip(), t["status"], figure))
  return rows


def format_table(report: dict) -> str:
  rows = [("stage", "status", "figures")] + summary_rows(report)
  w0 = max(len(r[0]) for r in rows)
  w1 = max(len(r[1]) for r in rows)
  lines = [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
  lines.insert(1, "-" * min(100, max(len(l) for l in lines)))
  return "\n".join(lines)


def write_json(report: dict, path: str) -> None:
  storage.write_json(path, report, indent=2, default=str)


def main() -> int:
  if sys.argv[1:] == ["--device-info"]:
    print(json.dumps(device_info()))
    return 0
  if len(sys.argv) > 1:
    print(__doc__)
    return 0 if sys.argv[1] in ("-h", "--help") else 2
  skip = {s.strip() for s in _env("SKIP", "").split(",") if s.strip()}
  unknown = skip - set(STAGES[1:])
  if unknown:
    print(f"DEVICE_CHECK_SKIP: unknown stage(s) {sorted(unknown)}; choose from "
          f"{', '.join(STAGES[1:])}", file=sys.stderr)
    return 2
  clock = Clock(float(_env("BUDGET_S", str(DEFAULT_BUDGET_S))))
  started = datetime.datetime.now(datetime.timezone.utc)
  tmp = tempfile.mkdtemp(prefix="device_check_")
  report = {
      "what": "benchmarks/device_check.sh: device, parity, bench, train",
      "started_utc": started.isoformat(timespec="seconds"),
      "git": _git(),
      "settings": {k: v for k, v in sorted(os.environ.items())
                   if k.startswith(("DEVICE_CHECK_", "JAX_", "XLA_"))
                   or k in ("CUDA_VISIBLE_DEVICES", "MOVENERF_SHARED")},
      "budget_s": clock.budget_s,
      "stages": {s: {"status": "skipped"} for s in STAGES},
  }
  print(f"device check: logs in {tmp}", flush=True)
  print("== device", flush=True)
  report["stages"]["device"] = stage_device(clock, tmp)
  info = report["stages"]["device"].get("info", {})
  name = (f"device_check_{slug(info.get('platform', 'unknown'))}_"
          f"{slug(info.get('device_kind', 'unknown'))}_{started.date().isoformat()}.json")
  out_dir = _env("OUT_DIR", os.path.join(REPO, "benchmarks"))
  path = os.path.join(out_dir, name)
  report["device"] = info
  write_json(report, path)
  for stage, fn in (("parity", stage_parity), ("bench", stage_bench),
                    ("train", lambda c, t: stage_train(c, t, info))):
    if stage in skip:
      continue
    print(f"== {stage} ({clock.elapsed():.0f} s in)", flush=True)
    report["stages"][stage] = fn(clock, tmp)
    report["total_wall_s"] = round(clock.elapsed(), 1)
    write_json(report, path)
  failed = [s for s, r in report["stages"].items() if r["status"] not in ("ok", "skipped")]
  report["failed_stages"] = failed
  report["total_wall_s"] = round(clock.elapsed(), 1)
  write_json(report, path)
  print(format_table(report))
  print(f"total {report['total_wall_s']:.0f} s; figures in {path}")
  if failed or _env("KEEP_TMP", "0") == "1":
    print(f"logs and the train workdir kept in {tmp}")
  else:
    shutil.rmtree(tmp, ignore_errors=True)
  if failed:
    print(f"failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
