r"""Builds a multi-view dataset into ``array_record`` files and prints a summary.

Usage::

  python -m movenerf.data.tfds.build --format llff --src ~/data/nerf_llff_data --out ~/tfds
  python -m movenerf.data.tfds.build --format nerf_synthetic --src PATH --out DIR \
      --option white_background=false --option downsample=2 --scenes lego,mic
  python -m movenerf.data.tfds.build --format generated --out DIR --option num_scenes=16

``--src`` is a folder of scenes or a single scene. The result goes to
``OUT/<format>/<config>/1.0.0`` (the printed path; give it to the training config or to
:class:`movenerf.data.views.TfdsSource`). The build happens in a temporary folder under
``OUT`` and is moved into place only when it succeeded: bad input (a missing or truncated
image, a pose array of the wrong shape, NaN poses, mixed image sizes, near >= far, no
scenes) exits with status 1 and a message naming the file, and leaves nothing behind.
Exit status 2 is a usage error (unknown format or option, ``llffhold`` < 0).

A build that was killed leaves its temporary folder (``OUT/.build-*``, or ``OUT/.old-*``
while an ``--overwrite`` swaps versions); the next build in ``OUT`` removes it, with one
line each. A temporary folder holds an ``owner`` file (host, process id): it is removed
when that process no longer runs on this host, or, written on another host (a shared
filesystem), when nothing in it changed for :data:`STALE_AFTER_S` seconds; a folder
without the file when it is older than :data:`NO_OWNER_STALE_AFTER_S` seconds. A live
build's folder is never removed.

``--out`` may be an object-store URL (``s3://bucket/tfds``, ``gs://bucket/tfds``): it is
checked for writing before anything is built (a missing bucket or denied credentials exit
with status 1 and a message naming it), the dataset is built in a local temporary folder,
and its files are uploaded with ``dataset_info.json`` last, so that a reader (which looks
for that file) never sees a half-uploaded dataset.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from movenerf import storage
from movenerf.data import views
from movenerf.data.formats import registry
from movenerf.data.tfds import builders


# A partial build written on another host is stale when nothing in it changed for a day.
STALE_AFTER_S = 24 * 3600
# A partial build without an owner file (its process died right after creating it).
NO_OWNER_STALE_AFTER_S = 3600
OWNER_FILE = "owner"
_PARTIAL_PREFIXES = (".build-", ".old-")


def summarize(path) -> str:
  """Human-readable summary of a built dataset (scenes, views per split, sizes, depths)."""
  source = views.TfdsSource(path)
  meta = source.metadata
  ids = sorted({s.scene_id for split in source.splits() for s in source.scenes(split)})
  lines = [f"dataset: {meta['format']} {meta['options']}", f"path: {path}",
           f"scenes: {len(ids)} ({', '.join(ids[:8])}{', ...' if len(ids) > 8 else ''})",
           f"{'split':<6} {'views':>6} {'scenes':>6}"]
  sizes, nears, fars = {}, [], []
  for split in source.splits():
    scenes = source.scenes(split)
    lines.append(f"{split:<6} {sum(s.num_views for s in scenes):>6} {len(scenes):>6}")
    for s in scenes:
      sizes.setdefault(f"{s.width}x{s.height}", set()).add(s.scene_id)
      nears.append(s.near.min())
      fars.append(s.far.max())
  for size, names in sorted(sizes.items()):
    lines.append(f"image size (WxH): {size} in {len(names)} scene(s)")
  lines.append(f"near/far: {float(np.min(nears)):.4g} .. {float(np.max(fars)):.4g}")
  return "\n".join(lines)


def build(fmt: str, out, src=None, scenes: Optional[Sequence[str]] = None,
          options: Optional[dict] = None, overwrite: bool = False) -> Union[Path, str]:
  """Builds ``fmt`` from ``src`` into ``out`` atomically; returns the dataset folder.

  ``out`` may be a local folder (the result is a ``Path``) or an object-store URL (the
  result is the dataset's URL, a ``str``; see the module docstring).

  Raises:
    ValueError / FileNotFoundError: bad input; nothing is left under ``out``.
    FileExistsError: the dataset exists and ``overwrite`` is False.
    movenerf.storage.StorageError: a remote ``out`` cannot be written (named).
  """
  registry.check_format(fmt)
  opts = registry.parse_options(fmt, options or {})
  if fmt != registry.GENERATED:
    if src is None:
      raise ValueError(f"--src is required for format {fmt!r}")
    if storage.is_remote(src):
      raise ValueError(f"--src {src}: the source scenes must be a local folder (only --out "
                       "may be a URL)")
    registry.find_scenes(registry.FORMATS[fmt], Path(src), scenes)  # fail before any write
  if storage.is_remote(out):
    return _build_remote(fmt, os.fspath(out).rstrip("/"), src, scenes, opts, overwrite)
  return _build_local(fmt, Path(out), src, scenes, opts, overwrite)


def _build_local(fmt: str, out: Path, src, scenes, opts: dict, overwrite: bool) -> Path:
  final = out / fmt / registry.config_name(opts) / builders.VERSION
  if final.exists() and not overwrite:
    raise FileExistsError(f"{final} already exists; pass --overwrite to rebuild it")
  created_out = not out.exists()
  out.mkdir(parents=True, exist_ok=True)
  remove_stale_partial_builds(out)
  tmp = _partial_dir(".build-", out)
  try:
    builder = builders.MultiViewBuilder(fmt, src=src, scenes=scenes, options=opts,
                                        data_dir=str(tmp))
    builder.download_and_prepare()
    built = Path(str(builder.data_dir))
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
      old = _partial_dir(".old-", out)
      os.replace(final, old / "d")
      os.replace(built, final)
      shutil.rmtree(old)
    else:
      os.replace(built, final)
  except BaseException:
    _remove_empty_parents(final.parent, out)
    if created_out:
      shutil.rmtree(out, ignore_errors=True)
    raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return final


def _partial_dir(prefix: str, out: Path) -> Path:
  """A new temporary folder ``out/<prefix>*`` that names this process as its owner."""
  tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out))
  (tmp / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
  return tmp


def _newest_mtime(folder: Path) -> float:
  newest = folder.stat().st_mtime
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      try:
        newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
      except OSError:
        pass
  return newest


def _stale_reason(folder: Path, now: float) -> Optional[str]:
  """Why ``folder`` (a partial build) is left over from a build that no longer runs;
  None while its build may still be running."""
  try:
    host, pid = (folder / OWNER_FILE).read_text().split()
    pid = int(pid)
  except FileNotFoundError:
    age = now - _newest_mtime(folder)
    return (f"no owner file, unchanged for {age / 60:.0f} min"
            if age > NO_OWNER_STALE_AFTER_S else None)
  except (OSError, ValueError):
    host, pid = "", -1  # an unreadable owner file: judged by age below
  if host == socket.gethostname() and pid > 0:
    return None if storage.process_alive(pid) else f"process {pid} that wrote it is gone"
  age = now - _newest_mtime(folder)
  return (f"written by process {pid} on {host or 'an unknown host'}, unchanged for "
          f"{age / 3600:.0f} h" if age > STALE_AFTER_S else None)


def remove_stale_partial_builds(out: Path) -> list[Path]:
  """Removes the temporary folders (``.build-*``, ``.old-*``) that killed builds left in
  ``out``, logging one line each; keeps those of builds that may still run (see the
  module docstring). Returns the removed folders."""
  removed, now = [], time.time()
  for folder in sorted(Path(out).iterdir()):
    if not folder.name.startswith(_PARTIAL_PREFIXES) or not folder.is_dir():
      continue
    try:
      reason = _stale_reason(folder, now)
    except OSError:  # removed meanwhile by its own build
      continue
    if reason is None:
      continue
    logging.warning("removing %s, left by a build that did not finish (%s)", folder, reason)
    shutil.rmtree(folder, ignore_errors=True)
    removed.append(folder)
  return removed


def _build_remote(fmt: str, out: str, src, scenes, opts: dict, overwrite: bool) -> str:
  """Checks ``out`` for writing, builds locally, uploads with ``dataset_info.json`` last."""
  final = storage.join(out, fmt, registry.config_name(opts), builders.VERSION)
  storage.check_writable(out)  # a missing bucket / denied write fails before the build
  marker = storage.join(final, "dataset_info.json")
  if storage.exists(marker) and not overwrite:
    raise FileExistsError(f"{final} already exists; pass --overwrite to rebuild it")
  with tempfile.TemporaryDirectory(prefix="movenerf-build-") as tmp:
    local = _build_local(fmt, Path(tmp), src, scenes, opts, overwrite=False)
    if storage.exists(final):  # the old version (--overwrite), or an interrupted upload
      # The marker goes first, so that readers stop taking the old version for complete.
      if storage.exists(marker):
        storage.path(marker).unlink()
      storage.remove_tree(final)
    storage.upload_tree(local, final, last=["dataset_info.json"])
  return final


def _remove_empty_parents(path: Path, stop: Path) -> None:
  """Removes ``path`` and its parents up to (not including) ``stop`` while they are empty."""
  while path != stop and path.is_dir() and not any(path.iterdir()):
    path.rmdir()
    path = path.parent


def _parse_option(text: str) -> tuple[str, str]:
  if "=" not in text:
    raise argparse.ArgumentTypeError(f"--option takes KEY=VALUE, got {text!r}")
  k, v = text.split("=", 1)
  return k.strip(), v.strip()


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m movenerf.data.tfds.build",
      description="Build a multi-view dataset into array_record files (no TensorFlow).")
  parser.add_argument("--format", required=True,
                      help=f"one of: {', '.join(registry.format_names())}")
  parser.add_argument("--src", help="folder of scenes, or one scene (not for 'generated')")
  parser.add_argument("--out", required=True,
                      help="output data_dir: a folder or a URL (s3://bucket/tfds, gs://...)")
  parser.add_argument("--scenes", default="", help="comma-separated scene folder names")
  parser.add_argument("--option", action="append", type=_parse_option, default=[],
                      metavar="KEY=VALUE", help="reader option, e.g. factor=4 (repeatable)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing build")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
  try:
    registry.check_format(args.format)
    registry.parse_options(args.format, dict(args.option))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  scenes = [s for s in args.scenes.split(",") if s] or None
  try:
    path = build(args.format, args.out, args.src, scenes, dict(args.option), args.overwrite)
  except (ValueError, FileNotFoundError, FileExistsError, KeyError,
          storage.StorageError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(summarize(path))
  return 0


if __name__ == "__main__":
  sys.exit(main())
