r"""Where the time of a GNT train step (or inference chunk) goes, from a profiler trace.

  python -m movenerf.tools.profile_step                      # train step, 512 rays
  python -m movenerf.tools.profile_step --infer --top 20     # one inference chunk
  python -m movenerf.tools.profile_step --model move --json prof.json --trace-dir /tmp/t

Builds the same program as :mod:`movenerf.tools.bench` (reference configuration; on CPU
with one device per core, the inference chunk's rays split over them), runs
it once under ``jax.profiler.trace`` and attributes every executed XLA op (on CPU each
thunk is a trace event naming its HLO module and instruction) to the model code that
produced it, through the ``op_name`` metadata of the optimised HLO
(``compiled.as_text()``): forward or backward pass (``transpose(jvp(...))`` in the
name), then the module path with layer indices folded (``view_trans_*``). Printed: for a
step of several programs (the host loop's), milliseconds per program; milliseconds per
step by module; the slowest single ops with their HLO shapes. The trace directory can
be opened in Perfetto / TensorBoard.

Times are summed over ops; ops that run concurrently on different cores both count, so
the total can exceed the step's wall time.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import sys
import tempfile

import jax

from movenerf import sharding
from movenerf.models.gnt.model import GNTConfig
from movenerf.moe.config import MoEConfig
from movenerf.tools import bench

# A while op's event spans the ops of its body, which are counted themselves.
_LOOPS = re.compile(r"^while")
_OP_LINE = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (.*)$", re.M)
_OP_NAME = re.compile(r"op_name=\"([^\"]*)\"")
# Transformations in op names that say nothing about which model code ran.
_WRAPPERS = re.compile(r"(jit\([^)]*\)|jvp\([\w.]*\)|transpose\(jvp\([\w.]*\)\)|while|body|"
                       r"closed_call|"
                       r"checkpoint|rematted_computation|cond|branch_\d+_fun)/")


_MODULE_LINE = re.compile(r"^HloModule ([\w.\-]+)", re.M)


def op_sources(hlo_text: str) -> dict[tuple[str, str], tuple[str, str]]:
  """(HLO module, instruction name) -> (result shape, op_name metadata or "").

  ``hlo_text`` may hold several modules (the host loop's programs): instruction names
  repeat across them (``fusion.12`` in each), so they are told apart by module.
  """
  sources = {}
  starts = [(m.start(), m.group(1)) for m in _MODULE_LINE.finditer(hlo_text)] or [(0, "")]
  for (begin, module), (end, _) in zip(starts, starts[1:] + [(len(hlo_text), "")]):
    for m in _OP_LINE.finditer(hlo_text, begin, end):
      op_name = _OP_NAME.search(m.group(3))
      sources[(module, m.group(1))] = (m.group(2), op_name.group(1) if op_name else "")
  return sources


def source_key(op_name: str, depth: int) -> str:
  """'bwd net_coarse/view_trans_*/attn' style key of an op_name (depth: path parts)."""
  direction = "bwd" if "transpose(" in op_name else "fwd"
  path = _WRAPPERS.sub("", op_name)
  path = re.sub(r"^jit\([^)]*\)/?", "", path)
  path = re.sub(r"(GNTModel\.\w+/)+", "", path)
  path = re.sub(r"_\d+(?=/|$)", "_*", path)
  return f"{direction} {'/'.join(path.split('/')[:depth]) or '(unattributed)'}"


def read_trace(trace_dir: str) -> list[dict]:
  """The complete ('X') events of the newest Perfetto trace under ``trace_dir``."""
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True),
                 key=os.path.getmtime)
  if not files:
    raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}: the profiler wrote no "
                            "Perfetto trace")
  with gzip.open(files[-1]) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  return [e for e in events if e.get("ph") == "X" and "dur" in e]


@dataclasses.dataclass
class Breakdown:
  """Op time of one profiled run, in milliseconds."""

  total_ms: float
  matmul_ms: float  # ops whose root is a dot (matmuls, with any fused elementwise work)
  by_source: list[tuple[str, float, int]]  # (key, ms, op count), slowest first
  top_ops: list[tuple[str, str, str, float, int]]  # (op, shape, op_name, ms, count)
  by_program: list[tuple[str, float, int]] = dataclasses.field(default_factory=list)
  # (HLO module, ms, op count), slowest first


def _event_op(event: dict, sources: dict, modules_of: dict) -> tuple[str, str] | None:
  """The (module, instruction) an event ran, or None for events that are not ops of
  the programs: by the event's ``hlo_module`` and ``hlo_op``, else by its name when
  one module has an instruction of that name."""
  args = event.get("args") or {}
  if "hlo_module" in args:
    key = (args["hlo_module"], args.get("hlo_op", event["name"]))
    return key if key in sources else None
  modules = modules_of.get(event["name"], ())
  return (modules[0], event["name"]) if len(modules) == 1 else None


def attribute(events: list[dict], sources: dict[tuple[str, str], tuple[str, str]],
              depth: int = 3, top: int = 15) -> Breakdown:
  """Sums op durations by model source (see the module docstring), and by program.

  Events that are not instructions of the programs (Python frames, runtime bookkeeping)
  are left out.
  """
  modules_of = collections.defaultdict(list)
  for module, name in sources:
    modules_of[name].append(module)
  by_key, count = collections.Counter(), collections.Counter()
  by_op, op_count = collections.Counter(), collections.Counter()
  by_program, program_count = collections.Counter(), collections.Counter()
  matmul = 0.0
  for e in events:
    op = _event_op(e, sources, modules_of)
    if op is None or _LOOPS.search(op[1]):
      continue
    op_name = sources[op][1]
    key = source_key(op_name, depth) if op_name else "fwd (no op_name: copies, loop state)"
    by_key[key] += e["dur"]
    count[key] += 1
    by_op[op] += e["dur"]
    op_count[op] += 1
    by_program[op[0]] += e["dur"]
    program_count[op[0]] += 1
    if "dot_general" in op_name.rsplit("/", 1)[-1]:
      matmul += e["dur"]
  total = sum(by_key.values())
  op_label = lambda op: f"{op[0]}:{op[1]}" if len(by_program) > 1 else op[1]
  return Breakdown(
      total_ms=total / 1e3, matmul_ms=matmul / 1e3,
      by_source=[(k, t / 1e3, count[k]) for k, t in by_key.most_common()],
      top_ops=[(op_label(op), *sources[op], t / 1e3, op_count[op])
               for op, t in by_op.most_common(top)],
      by_program=[(m, t / 1e3, program_count[m]) for m, t in by_program.most_common()])


def format_breakdown(b: Breakdown, wall_s: float, rows: int = 25) -> str:
  lines = [f"step wall time {wall_s * 1e3:,.0f} ms; op time {b.total_ms:,.0f} ms "
           f"(concurrent ops both count), of which matmuls {b.matmul_ms:,.0f} ms "
           f"({100 * b.matmul_ms / b.total_ms:.0f}%)", ""]
  if len(b.by_program) > 1:
    lines += ["| program | ms | % of op time | ops |", "|---|---:|---:|---:|"]
    lines += [f"| {m} | {ms:,.1f} | {100 * ms / b.total_ms:.1f}% | {n} |"
              for m, ms, n in b.by_program]
    lines.append("")
  lines += ["| pass and source | ms | % of op time | ops |", "|---|---:|---:|---:|"]
  for key, ms, n in b.by_source[:rows]:
    lines.append(f"| {key} | {ms:,.1f} | {100 * ms / b.total_ms:.1f}% | {n} |")
  lines += ["", "| slowest op | result shape | ms | calls | source |", "|---|---|---:|---:|---|"]
  for name, shape, op_name, ms, n in b.top_ops:
    lines.append(f"| {name} | {shape} | {ms:,.1f} | {n} | {source_key(op_name, 9)} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="gnt", choices=["gnt", "move"])
  parser.add_argument("--infer", action="store_true", help="profile inference, not training")
  parser.add_argument("--rays", type=int, default=512)
  parser.add_argument("--train-sub-chunk", type=int, default=None)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--depth", type=int, default=3, help="module path parts per row")
  parser.add_argument("--top", type=int, default=15, help="slowest single ops to list")
  parser.add_argument("--trace-dir", default=None, help="keep the trace here (Perfetto)")
  parser.add_argument("--json", default=None, help="also write the breakdown as JSON")
  args = parser.parse_args(argv)
  sharding.cpu_device_per_core()

  config = GNTConfig(dtype=args.dtype)
  if args.model == "move":
    config = dataclasses.replace(config, moe=MoEConfig(layers=tuple(range(1, 8, 2))))
  if args.infer:
    prepared = bench.prepare(config, chunk=args.rays)
  else:
    prepared = bench.prepare_train(config, rays=args.rays, sub_chunk=args.train_sub_chunk)
  prepared.time_once()  # one more warm run outside the trace
  sources = op_sources(prepared.hlo_text())
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="movenerf_trace_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    prepared.time_once()
  wall = prepared.times[-1]
  breakdown = attribute(read_trace(trace_dir), sources, args.depth, args.top)
  what = "inference chunk" if args.infer else "train step"
  print(f"== {args.model} {what}, {args.rays} rays, {args.dtype} "
        f"({jax.devices()[0].device_kind}); trace in {trace_dir} ==")
  print(format_breakdown(breakdown, wall))
  if args.json:
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"wall_s": wall, **dataclasses.asdict(breakdown)}, f, indent=2)
    os.replace(tmp, args.json)
  return 0


if __name__ == "__main__":
  sys.exit(main())
