r"""Tables like the papers': runs side by side with the published figures, per protocol.

  python -m movenerf.tools.results_table --protocol llff --format md \
      GNT-MoVE=runs/move runs/gnt_tiny [--out table.md]

Every RUN_DIR (``NAME=PATH``; the name defaults to the folder's) is a run workdir (its
``eval/protocol_<P>/metrics.json`` is read), an evaluation output folder holding
``protocol_<P>/metrics.json``, or a folder or file holding that metrics.json itself
(what ``python -m movenerf.eval --workdir RUN --protocol P`` writes).

The table has one row per scene and a mean row, and one column group (PSNR, SSIM,
LPIPS) per run, then the *nearest source view* baseline (the first run's
``nearest_view`` scores) and the published figures of the protocol
(:mod:`movenerf.evaluation.published`), each with a numbered source note. Per-scene
means are computed from the per-view scores when metrics.json has them, else taken from
its per-scene entries. A scene a run lacks is a ``missing`` cell; the mean row is over the
scenes every run has and says how many ("mean (5 of 8 scenes)"), with a note that such a
mean is not comparable to a paper's. The protocol's ``differences`` lines of every run
are listed above the table. Runs evaluated on different view indexes (``index_sha256``)
are an error unless ``--allow_different_index``.

LPIPS is that of the network ``--lpips`` names (``published``, the default: the network
the protocol's published figures use). Best value per row is bold (md, latex) among the
runs, the nearest source view and the published figures; published LPIPS of another
network is shown but not compared. Formats: ``md`` (GitHub table), ``csv`` (the table, a blank row, then
``note,<text>`` rows), ``latex`` (booktabs tabular; notes as ``%`` comments).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Optional, Sequence

from absl import flags

from movenerf import cli, storage, validation
from movenerf.evaluation import published as published_lib

PROTOCOLS = published_lib.PROTOCOLS
FORMATS = ("md", "csv", "latex")
LPIPS_CHOICES = ("alex", "vgg", "published")
METRICS = ("psnr", "ssim", "lpips")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False}
DECIMALS = {"psnr": 2, "ssim": 3, "lpips": 3}
BASELINE = "nearest source view"
MISSING = "missing"
NA = "n/a"

_PROTOCOL = _FORMAT = _OUT = _LPIPS = _ALLOW_INDEX = None  # defined by _define_flags()


def _define_flags() -> None:
  """Flags exist only when this module is the program, so that importing it (tests, other
  tools) does not clash with other modules' flags of the same names."""
  global _PROTOCOL, _FORMAT, _OUT, _LPIPS, _ALLOW_INDEX
  _PROTOCOL = flags.DEFINE_string("protocol", None, "evaluation protocol: "
                                  + ", ".join(PROTOCOLS))
  _FORMAT = flags.DEFINE_string("format", "md", "output format: " + ", ".join(FORMATS))
  _OUT = flags.DEFINE_string("out", None, "write the table to this file (default: stdout)")
  _LPIPS = flags.DEFINE_string("lpips", "published", "LPIPS network: alex, vgg, or "
                               "published (the network of the protocol's published "
                               "figures)")
  _ALLOW_INDEX = flags.DEFINE_bool("allow_different_index", False, "compare runs "
                                   "evaluated on different view indexes (index_sha256)")

UsageError = validation.UsageError


# ----------------------------------------------------------------------------- inputs


def parse_run(spec: str) -> tuple[str, str]:
  """``NAME=PATH`` or ``PATH`` -> (name, path); the name defaults to the run's folder
  (above ``metrics.json``, ``protocol_<P>`` and ``eval``)."""
  name, sep, path = spec.partition("=")
  if not sep or not name or "/" in name:
    name, path = "", spec
  if not path:
    raise UsageError(f"{spec!r}: give NAME=PATH or PATH")
  if not name:
    parts = [p for p in path.rstrip("/").split("/") if p]
    while len(parts) > 1 and (parts[-1] == "metrics.json" or parts[-1] == "eval"
                              or parts[-1].startswith("protocol_")):
      parts.pop()
    name = parts[-1] if parts else path
  return name, path


def find_metrics(path: str, protocol: str) -> str:
  """The metrics.json of ``protocol`` under ``path`` (see the module docstring)."""
  if storage.is_file(path):
    return path
  candidates = [storage.join(path, "eval", f"protocol_{protocol}", "metrics.json"),
                storage.join(path, f"protocol_{protocol}", "metrics.json"),
                storage.join(path, "metrics.json")]
  for candidate in candidates:
    if storage.is_file(candidate):
      return candidate
  raise UsageError(f"{path}: no metrics for protocol {protocol!r} (looked for "
                   + ", ".join(candidates) + ")")


def load_metrics(path: str, protocol: str) -> dict:
  """metrics.json at ``path``, checked to be of ``protocol`` when it names one."""
  try:
    metrics = json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    raise UsageError(f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") \
        from None
  except (OSError, UnicodeDecodeError) as e:
    raise UsageError(f"{path}: cannot be read ({e})") from None
  if not isinstance(metrics, dict) or not ("views" in metrics or "scenes" in metrics):
    raise UsageError(f"{path}: not an evaluation's metrics.json (no 'views' or 'scenes')")
  named = (metrics.get("protocol") or {}).get("name")
  if named and named != protocol:
    raise UsageError(f"{path}: metrics of protocol {named!r}, not {protocol!r}")
  return metrics


def _number(value: Any) -> Optional[float]:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return None if math.isnan(value) else float(value)


def _mean(values: list) -> Any:
  """The mean, or "n/a" when any value is not a number (as evaluate.summarize)."""
  numbers = [_number(v) for v in values]
  if not numbers or any(n is None for n in numbers):
    return NA
  return sum(numbers) / len(numbers)


def _lpips_value(entry: dict, net: str) -> Any:
  """The LPIPS of ``net`` in one view / scene / nearest-view entry; a metrics.json of
  the older form has one ``lpips`` of an unrecorded network."""
  key = f"lpips_{net}"
  if key in entry:
    return entry[key]
  return entry.get("lpips", NA)


def scene_scores(metrics: dict, net: str) -> dict[tuple[str, str], dict]:
  """(dataset, scene) -> {"psnr", "ssim", "lpips", "num_views", "nearest": {...} | None}:
  means over the per-view rows when present, else the per-scene entries."""
  out: dict[tuple[str, str], dict] = {}
  views = metrics.get("views") or []
  if views:
    groups: dict[tuple[str, str], list] = {}
    for v in views:
      groups.setdefault((str(v.get("dataset", "")), str(v["scene"])), []).append(v)
    for key, rows in groups.items():
      scores = {"psnr": _mean([r.get("psnr", NA) for r in rows]),
                "ssim": _mean([r.get("ssim", NA) for r in rows]),
                "lpips": _mean([_lpips_value(r, net) for r in rows]),
                "num_views": len(rows), "nearest": None}
      near = [r.get("nearest_view") for r in rows]
      if all(isinstance(n, dict) for n in near):
        scores["nearest"] = {"psnr": _mean([n.get("psnr", NA) for n in near]),
                             "ssim": _mean([n.get("ssim", NA) for n in near]),
                             "lpips": _mean([_lpips_value(n, net) for n in near])}
      out[key] = scores
    return out
  for s in metrics.get("scenes") or []:
    near = s.get("nearest_view")
    out[(str(s.get("dataset", "")), str(s["scene"]))] = {
        "psnr": s.get("psnr", NA), "ssim": s.get("ssim", NA),
        "lpips": _lpips_value(s, net), "num_views": s.get("num_views"),
        "nearest": ({"psnr": near.get("psnr", NA), "ssim": near.get("ssim", NA),
                     "lpips": _lpips_value(near, net)} if isinstance(near, dict) else None)}
  return out


def _has_net_lpips(metrics: dict, net: str) -> bool:
  entries = (metrics.get("views") or []) + (metrics.get("scenes") or [])
  return any(f"lpips_{net}" in e for e in entries)


# ----------------------------------------------------------------------------- table


def resolve_lpips(choice: str, protocol: str, runs: list[dict]) -> tuple[str, str]:
  """(network, how it was chosen) for ``--lpips``."""
  if choice in ("alex", "vgg"):
    return choice, "chosen with --lpips"
  for run in runs:
    net = (run["metrics"].get("protocol") or {}).get("lpips_net_published")
    if net in ("alex", "vgg"):
      return net, f"the network of the published figures, as {run['name']}'s " \
          "metrics.json records"
  nets = {m.get("lpips_net") for m in published_lib.lookup(protocol)["methods"].values()}
  nets.discard(None)
  if len(nets) == 1:
    return nets.pop(), "the network of the published figures, as " \
        "movenerf.evaluation.published records"
  return "alex", "no published network is known for this protocol; alex by default"


def build(runs: Sequence[tuple[str, dict]], protocol: str, lpips: str = "published",
          allow_different_index: bool = False, published: Optional[dict] = None) -> dict:
  """The table of ``runs`` ([(name, metrics.json contents)]), format-free.

  Returns {"protocol", "lpips_net", "groups": [{"name", "kind": run|baseline|published,
  "note": int|None, "lpips_comparable": bool}], "rows": [{"label", "mean": bool,
  "cells": [[psnr, ssim, lpips] per group]}], "notes": [str], "header": [str]}; a cell is
  a float, "missing", "n/a" or None (not reported).
  """
  if protocol not in PROTOCOLS:
    raise UsageError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
  if lpips not in LPIPS_CHOICES:
    raise UsageError(f"--lpips={lpips!r}: choose one of {', '.join(LPIPS_CHOICES)}")
  if not runs:
    raise UsageError("give at least one RUN_DIR")
  published = published_lib.lookup(protocol) if published is None else published
  items = [{"name": n, "metrics": m} for n, m in runs]
  names = [r["name"] for r in items]
  for i, r in enumerate(items):  # unique display names
    if names.count(r["name"]) > 1:
      r["name"] = f"{r['name']} ({names[:i + 1].count(r['name'])})"

  header, notes = [], []
  sha = {r["name"]: (r["metrics"].get("protocol") or {}).get("index_sha256") for r in items}
  distinct = sorted({s for s in sha.values() if s})
  if len(distinct) > 1:
    detail = "; ".join(f"{n}: {str(s)[:12]}" for n, s in sha.items())
    if not allow_different_index:
      raise UsageError("the runs were evaluated on different view indexes (index_sha256 "
                       f"{detail}); pass --allow_different_index to compare them anyway")
    header.append(f"Runs evaluated on different view indexes ({detail}): their numbers "
                  "are not of the same views.")

  net, why = resolve_lpips(lpips, protocol, items)
  header.insert(0, f"Protocol {protocol}; LPIPS: {net.upper() if net == 'vgg' else 'AlexNet'}"
                f" ({why}).")
  for r in items:
    if not _has_net_lpips(r["metrics"], net) and (r["metrics"].get("views")
                                                  or r["metrics"].get("scenes")):
      header.append(f"{r['name']}: metrics.json has no lpips_{net}; its LPIPS column is "
                    "the 'lpips' it records (network not recorded).")
  differences = []
  for r in items:
    for line in (r["metrics"].get("protocol") or {}).get("differences") or []:
      if line not in differences:
        differences.append(line)
  if differences:
    header.append("Differences from the published protocol:")
    header.extend(f"- {d}" for d in differences)

  scores = [scene_scores(r["metrics"], net) for r in items]
  keys: list[tuple[str, str]] = []
  for s in scores:
    keys += [k for k in s if k not in keys]
  datasets = {d for d, _ in keys}
  for r in items:
    for m in (r["metrics"].get("protocol") or {}).get("missing_scenes") or []:
      d, _, s = str(m).rpartition("/")
      if any(k[1] == s and (not d or k[0] == d) for k in keys):
        continue
      keys.append((d or (next(iter(datasets)) if len(datasets) == 1 else ""), s))
  datasets = {d for d, _ in keys}
  label = (lambda k: k[1]) if len(datasets) <= 1 else (lambda k: f"{k[0]}/{k[1]}")
  common = [k for k in keys if all(k in s for s in scores)]

  groups = [{"name": r["name"], "kind": "run", "note": None, "lpips_comparable": True}
            for r in items]
  groups.append({"name": BASELINE, "kind": "baseline", "note": None,
                 "lpips_comparable": True})
  methods = published.get("methods", {})
  for name, entry in methods.items():
    notes.append(f"{name}: {entry['source']}.")
    method_net = entry.get("lpips_net")
    comparable = method_net in (None, net)
    if not comparable:
      notes[-1] += (f" Its LPIPS is {method_net.upper() if method_net == 'vgg' else 'AlexNet'}"
                    f", not the table's: shown, not compared.")
    groups.append({"name": f"{name} (published)", "kind": "published",
                   "note": len(notes), "lpips_comparable": comparable})
  for line in published.get("not_found", []):
    notes.append(f"Published: {line}.")

  def published_cells(values: Optional[dict]) -> list:
    return [None if not values or values.get(m) is None else float(values[m])
            for m in METRICS]

  rows = []
  for key in keys:
    cells = []
    for s in scores:
      cells.append([s[key][m] for m in METRICS] if key in s else [MISSING] * 3)
    near = scores[0].get(key, {}).get("nearest") if key in scores[0] else None
    cells.append([near[m] for m in METRICS] if near else
                 ([MISSING] * 3 if key not in scores[0] else [NA] * 3))
    for entry in methods.values():
      scene_values = {k.lower(): v for k, v in (entry.get("scenes") or {}).items()}
      cells.append(published_cells(scene_values.get(key[1].lower())))
    rows.append({"label": label(key), "mean": False, "cells": cells})

  mean_label = (f"mean ({len(common)} scenes)" if len(common) == len(keys)
                else f"mean ({len(common)} of {len(keys)} scenes)")
  cells = []
  for s in scores:
    cells.append([_mean([s[k][m] for k in common]) if common else NA for m in METRICS])
  near_rows = [scores[0][k].get("nearest") for k in common]
  cells.append([_mean([n[m] for n in near_rows]) if common and all(near_rows) else NA
                for m in METRICS])
  for entry in methods.values():
    cells.append(published_cells(entry.get("mean")))
  rows.append({"label": mean_label, "mean": True, "cells": cells})
  if len(common) < len(keys):
    notes.append(f"The mean is over the {len(common)} of {len(keys)} scenes every run "
                 "has; a mean over a subset is not comparable to a paper's mean over all "
                 "scenes.")
  notes.append(f"'{BASELINE}': the closest source image copied as the prediction "
               f"({items[0]['name']}'s evaluation).")
  return {"protocol": protocol, "lpips_net": net, "groups": groups, "rows": rows,
          "notes": notes, "header": header}


def best_flags(table: dict) -> list[list[list[bool]]]:
  """Per row, per group, per metric: whether the value is the row's best among the runs,
  the nearest-source-view baseline and the published figures (on the printed, rounded
  values; ties are all best)."""
  out = []
  for row in table["rows"]:
    marks = [[False] * 3 for _ in row["cells"]]
    for j, metric in enumerate(METRICS):
      values = []
      for g, (group, cell) in enumerate(zip(table["groups"], row["cells"])):
        if metric == "lpips" and not group["lpips_comparable"]:
          continue
        number = _number(cell[j])
        if number is not None:
          values.append((round(number, DECIMALS[metric]), g))
      if values:
        best = (max if HIGHER_IS_BETTER[metric] else min)(v for v, _ in values)
        for v, g in values:
          marks[g][j] = v == best
    out.append(marks)
  return out


def _text(value: Any, metric: str) -> str:
  number = _number(value)
  if number is not None:
    return f"{number:.{DECIMALS[metric]}f}"
  return "" if value is None else str(value)


_HEAD = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS"}
_ARROW_MD = {"psnr": "↑", "ssim": "↑", "lpips": "↓"}
_ARROW_TEX = {"psnr": r"$\uparrow$", "ssim": r"$\uparrow$", "lpips": r"$\downarrow$"}


def _group_title(group: dict, style: str) -> str:
  if group["note"] is None:
    return group["name"]
  return {"md": f"{group['name']} [{group['note']}]",
          "csv": f"{group['name']} [{group['note']}]",
          "latex": f"{group['name']}$^{{{group['note']}}}$"}[style]


def to_markdown(table: dict) -> str:
  best = best_flags(table)
  lines = [f"**{table['header'][0]}**"] + table["header"][1:] + [""]
  head = ["scene"] + [f"{_group_title(g, 'md')} {_HEAD[m]}{_ARROW_MD[m]}"
                      for g in table["groups"] for m in METRICS]
  lines.append("| " + " | ".join(head) + " |")
  lines.append("|" + "---|" + "---:|" * (len(head) - 1))
  for row, marks in zip(table["rows"], best):
    cells = [f"**{row['label']}**" if row["mean"] else row["label"]]
    for cell, mark in zip(row["cells"], marks):
      for j, metric in enumerate(METRICS):
        text = _text(cell[j], metric) or "–"
        cells.append(f"**{text}**" if mark[j] else text)
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  lines += [f"[{i}] {n}" if any(g["note"] == i for g in table["groups"]) else f"- {n}"
            for i, n in enumerate(table["notes"], 1)]
  return "\n".join(lines) + "\n"


def to_csv(table: dict) -> str:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["scene"] + [f"{_group_title(g, 'csv')} {_HEAD[m]}"
                               for g in table["groups"] for m in METRICS])
  for row in table["rows"]:
    writer.writerow([row["label"]] + [_text(cell[j], m) for cell in row["cells"]
                                      for j, m in enumerate(METRICS)])
  writer.writerow([])
  for line in table["header"]:
    writer.writerow(["note", line])
  for i, n in enumerate(table["notes"], 1):
    writer.writerow(["note", f"[{i}] {n}"])
  return buf.getvalue()


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
  """``text`` with LaTeX's special characters escaped."""
  return "".join(_TEX_ESCAPES.get(c, c) for c in text)


def to_latex(table: dict) -> str:
  best = best_flags(table)
  groups = table["groups"]
  lines = [f"% {line}" for line in table["header"]]
  lines += [f"% [{i}] {n}" for i, n in enumerate(table["notes"], 1)]
  lines.append(r"\begin{tabular}{l" + "ccc" * len(groups) + "}")
  lines.append(r"\toprule")
  titles = []
  for g in groups:
    name = latex_escape(g["name"])
    if g["note"] is not None:
      name += f"$^{{{g['note']}}}$"
    titles.append(rf"\multicolumn{{3}}{{c}}{{{name}}}")
  lines.append(" & ".join(["scene"] + titles) + r" \\")
  lines.append(" ".join(rf"\cmidrule(lr){{{2 + 3 * i}-{4 + 3 * i}}}"
                        for i in range(len(groups))))
  lines.append(" & ".join([""] + [f"{_HEAD[m]}{_ARROW_TEX[m]}" for _ in groups
                                  for m in METRICS]) + r" \\")
  lines.append(r"\midrule")
  for row, marks in zip(table["rows"], best):
    if row["mean"]:
      lines.append(r"\midrule")
    cells = [latex_escape(row["label"])]
    for cell, mark in zip(row["cells"], marks):
      for j, metric in enumerate(METRICS):
        text = latex_escape(_text(cell[j], metric)) or "--"
        cells.append(rf"\textbf{{{text}}}" if mark[j] else text)
    lines.append(" & ".join(cells) + r" \\")
  lines.append(r"\bottomrule")
  lines.append(r"\end{tabular}")
  return "\n".join(lines) + "\n"


RENDER = {"md": to_markdown, "csv": to_csv, "latex": to_latex}


def render(table: dict, fmt: str) -> str:
  """``table`` (from :func:`build`) as ``fmt`` (md, csv or latex)."""
  if fmt not in RENDER:
    raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
  return RENDER[fmt](table)


def results_table(specs: Sequence[str], protocol: str, fmt: str = "md",
                  lpips: str = "published", allow_different_index: bool = False) -> str:
  """The table of the RUN_DIRs ``specs`` as text (see the module docstring)."""
  if protocol not in PROTOCOLS:
    raise UsageError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
  if fmt not in RENDER:
    raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
  if not specs:
    raise UsageError("give at least one RUN_DIR (NAME=PATH or PATH)")
  runs = []
  for spec in specs:
    name, path = parse_run(spec)
    runs.append((name, load_metrics(find_metrics(path, protocol), protocol)))
  table = build(runs, protocol, lpips, allow_different_index)
  return render(table, fmt)


def main(argv):
  if _PROTOCOL.value is None:
    raise UsageError("--protocol is required: " + ", ".join(PROTOCOLS))
  text = results_table(argv[1:], _PROTOCOL.value, _FORMAT.value, _LPIPS.value,
                       _ALLOW_INDEX.value)
  if _OUT.value:
    folder = os.path.dirname(_OUT.value)
    if folder:
      storage.makedirs(folder)
    storage.write_text(_OUT.value, text)
    print(f"wrote {_OUT.value}")
  else:
    print(text, end="")


def run() -> None:
  """The console entry: ``main`` with one-line errors (exit status 2: usage, 1: run;
  ``--verbose``: with the traceback)."""
  cli.run(main, "movenerf.tools.results_table", define=_define_flags)


if __name__ == "__main__":
  run()
