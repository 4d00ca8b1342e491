"""Dataset lists from one command-line string (``--train_data`` / ``--eval_data``).

A spec is one or more entries joined by ``+``; each entry is::

  [NAME=]FORMAT[:PATH][[KEY=VALUE,KEY=VALUE,...]]

- ``FORMAT``: ``generated``, ``tfds`` (a built dataset; ``PATH`` is its folder or URL)
  or a reader format (``nerf_synthetic``, ``llff``, ``dtu``, ...; ``PATH`` is the folder
  of scene folders);
- ``KEY=VALUE`` in brackets: ``scenes`` (scene folder names joined by ``|``), ``weight``
  (mixture weight in training) or the format's reader / generator options
  (``downsample=8``, ``llffhold=8``, ``num_scenes=4``, ...);
- ``NAME``: the dataset's name in logs and metrics (default: the format, then the last
  part of the path when a format repeats).

For example::

  llff:../shared/data/real/nerf_llff_data[scenes=fern]+dtu:/data/dtu[weight=2]
  lego=nerf_synthetic:/data/nerf_synthetic[scenes=lego,downsample=8]
  tfds:gs://bucket/tfds/ibrnet_collected/1.0.0

:func:`parse` gives the ``config.data.train`` / ``config.data.eval`` section of a spec.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from movenerf import validation
from movenerf.data.formats import registry

_ENTRY = re.compile(r"^(?:(?P<name>[A-Za-z_][\w-]*)=)?(?P<format>[a-z_]+)"
                    r"(?::(?P<path>[^\[]+))?(?:\[(?P<options>[^\]]*)\])?$")


def _value(text: str) -> Any:
  """A Python literal where the text is one (``8``, ``0.5``, ``true``), else the text."""
  lowered = text.lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def formats() -> tuple[str, ...]:
  """The formats a spec may name."""
  return ("tfds", *sorted(registry.FORMATS), registry.GENERATED)


def parse(spec: str, flag: str = "--train_data") -> dict[str, dict]:
  """``{name: {"format", "path", "scenes", "weight", "options"}}`` of a spec.

  Raises:
    UsageError: an entry that does not parse, an unknown format or a missing path,
      naming the flag and the entry.
  """
  out: dict[str, dict] = {}
  for text in (t.strip() for t in spec.split("+")):
    found = _ENTRY.match(text)
    if not text or not found:
      raise validation.UsageError(f"{flag}: cannot read {text!r}; write "
                                  "[NAME=]FORMAT[:PATH][[KEY=VALUE,...]]")
    fmt, path = found["format"], (found["path"] or "").strip()
    validation.one_of(f"{flag} {text!r}: format", fmt, formats())
    if fmt != registry.GENERATED and not path:
      raise validation.UsageError(f"{flag} {text!r}: format {fmt!r} needs a path "
                                  f"({fmt}:PATH)")
    entry = {"format": fmt, "path": path, "scenes": "", "weight": 1.0, "options": {}}
    for item in filter(None, (o.strip() for o in (found["options"] or "").split(","))):
      key, eq, value = item.partition("=")
      if not eq:
        raise validation.UsageError(f"{flag} {text!r}: option {item!r} is not KEY=VALUE")
      key = key.strip()
      if key == "scenes":
        entry["scenes"] = ",".join(s for s in value.split("|") if s)
      elif key == "weight":
        entry["weight"] = validation.number(f"{flag} {text!r}: weight", _value(value),
                                            above=0.0)
      else:
        entry["options"][key] = _value(value.strip())
    name = found["name"] or fmt
    if name in out:
      name = found["name"] or f"{fmt}_{path.rstrip('/').split('/')[-1] or len(out)}"
    if name in out:
      raise validation.UsageError(f"{flag}: two datasets named {name!r}; name them "
                                  "(NAME=FORMAT:PATH)")
    out[name] = entry
  return out


def apply(config: Any, train: str | None = None, evaluate: str | None = None) -> Any:
  """``config`` (a locked ConfigDict) with ``data.train`` / ``data.eval`` replaced by the
  datasets of the given specs (None or "": kept), locked again."""
  import ml_collections  # pylint: disable=g-import-not-at-top  (configs only)
  if not train and not evaluate:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  for key, text, flag in (("train", train, "--train_data"), ("eval", evaluate, "--eval_data")):
    if text:
      config.data[key] = ml_collections.ConfigDict(parse(text, flag))
  config.lock()
  return config
