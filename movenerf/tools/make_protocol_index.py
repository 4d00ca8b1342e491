r"""Writes the frozen evaluation index of a published protocol.

  python -m movenerf.tools.make_protocol_index --protocol llff --data_root DIR
  python -m movenerf.tools.make_protocol_index --protocol nerf_synthetic \
      --data_root DIR --out /tmp/nerf_synthetic.json

Applies the protocol's official target and source selection rule
(:mod:`movenerf.evaluation.protocols`) to the camera poses under ``DIR`` (the layout of
the official downloads: ``DIR/nerf_llff_data/<scene>``, ``DIR/nerf_synthetic/<scene>``,
``DIR/dtu/<scan>``, ``DIR/shiny/<scene>``) and writes the index JSON, by default to the
committed ``movenerf/evaluation/protocol_index/<protocol>.json``. Scenes whose cameras are
not under ``DIR`` are listed in its ``"missing"``; a scene generated from fewer cameras
than the original dataset has ``"complete": false``. Prints what it wrote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import movenerf
from movenerf.evaluation import protocols
from movenerf.validation import UsageError


def make_index(protocol: str, data_root: str, out: Optional[str] = None) -> Path:
  """Builds the index of ``protocol`` from ``data_root`` and writes it to ``out`` (default:
  the committed file); returns the path written."""
  p = protocols.get(protocol)
  if not Path(data_root).expanduser().is_dir():
    raise UsageError(f"--data_root: folder not found: {data_root}")
  index = protocols.build_index(p, data_root, version=movenerf.__version__)
  path = Path(out) if out else protocols.index_path(p.name)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(protocols.dump_index(index))
  return path


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m movenerf.tools.make_protocol_index",
      description="Write a protocol's frozen evaluation index from the dataset cameras.")
  parser.add_argument("--protocol", required=True, choices=protocols.NAMES)
  parser.add_argument("--data_root", required=True,
                      help="folder holding nerf_llff_data/, nerf_synthetic/, dtu/, shiny/")
  parser.add_argument("--out", default=None, help="index file (default: the committed one)")
  args = parser.parse_args(argv)
  try:
    path = make_index(args.protocol, args.data_root, args.out)
  except (UsageError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  index = protocols.load_index(args.protocol, path)
  print(f"wrote {path}: {len(index['scenes'])} scenes "
        f"({', '.join(s for s, e in index['scenes'].items() if not e['complete']) or 'none'}"
        f" incomplete), missing: {', '.join(index['missing']) or 'none'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
