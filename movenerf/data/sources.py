"""View sources from experiment configs.

A dataset entry of a config (``config.data.train.<name>``, ``config.data.eval.<name>``)::

  format   "generated" (procedural scenes made in memory), "tfds" (a dataset built by
           ``python -m movenerf.data.tfds.build``; ``path`` is the printed folder), or a
           reader format ("nerf_synthetic", "llff", "dtu", ...) read from ``path`` into
           memory (small datasets, e.g. ``../shared/data/real``)
  path     folder (not for "generated"); for "tfds" also a URL (``s3://``, ``gs://``),
           mirrored to a local cache when its images are first read
  scenes   comma-separated scene folder names ("" = all)
  options  reader / generator options (as for the build command)
  weight   mixture weight in training

Generated scenes and reader formats import no TensorFlow Datasets: formats come from
:mod:`movenerf.data.formats.registry`, and a "tfds" entry's
:class:`~movenerf.data.views.TfdsSource` imports it only when it first reads images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from movenerf import storage
from movenerf.data import procedural, views
from movenerf.data.formats import registry

_ENTRY_KEYS = {"format", "path", "scenes", "options", "weight"}


def _check_entry(name: str, entry: Mapping) -> None:
  unknown = sorted(set(entry) - _ENTRY_KEYS)
  if unknown:
    raise ValueError(f"dataset {name!r}: unknown key(s) {unknown}; allowed {sorted(_ENTRY_KEYS)}")


def make_source(name: str, entry: Mapping) -> views.ViewSource:
  """The :class:`~movenerf.data.views.ViewSource` of one config entry."""
  entry = dict(entry)
  _check_entry(name, entry)
  fmt = entry.get("format", "generated")
  options = dict(entry.get("options") or {})
  scenes = [s for s in str(entry.get("scenes") or "").split(",") if s]
  if fmt == "tfds":
    if not entry.get("path"):
      raise ValueError(f"dataset {name!r}: format 'tfds' needs a path")
    path = str(entry["path"])
    return views.TfdsSource(path if storage.is_remote(path) else Path(path).expanduser())
  opts = registry.parse_options(fmt, options)
  if fmt == registry.GENERATED:
    if opts["num_scenes"] < 1:
      raise ValueError(f"dataset {name!r}: empty scene list (num_scenes={opts['num_scenes']})")
    seeds = range(opts["first_seed"], opts["first_seed"] + opts["num_scenes"])
    return views.RecordSource([procedural.generated_record(s, opts) for s in seeds], name)
  if not entry.get("path"):
    raise ValueError(f"dataset {name!r}: format {fmt!r} needs a path")
  if storage.is_remote(str(entry["path"])):
    raise ValueError(
        f"dataset {name!r}: format {fmt!r} reads a local folder, not {entry['path']}; build "
        "it with `python -m movenerf.data.tfds.build --out URL` and use format 'tfds'")
  dirs = registry.find_scenes(registry.FORMATS[fmt], Path(entry["path"]).expanduser(),
                              scenes or None)
  return views.RecordSource([registry.read_scene(fmt, d, **opts) for d in dirs], name)


def make_sources(group: Mapping) -> tuple[dict, dict]:
  """``config.data.train`` -> (name -> source, name -> weight)."""
  if not group:
    raise ValueError("empty dataset list in the config")
  sources, weights = {}, {}
  for name, entry in group.items():
    sources[name] = make_source(name, entry)
    weights[name] = float(dict(entry).get("weight", 1.0))
  return sources, weights
