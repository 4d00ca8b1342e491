"""Config sections built from the library's dataclasses, so that defaults live in one place.

The model settings (``GNTConfig``, ``MoEConfig``, ``DecoupledConfig``) and the example
settings (``ExampleSpec``) have their defaults in the library's dataclasses; a config
file builds those sections with :func:`from_dataclass` and sets only what its variant
changes. Sections without a dataclass in the library (train, optim, loss, eval, data
sources) are written out in ``movenerf/configs/gnt.py``, which is their one source.

A field whose default is None becomes a typed ``placeholder``, so that it can still be
set from the command line (``--config.data.example.num_candidates=15``); a nested
dataclass whose default is None (``GNTConfig.moe``) stays None, and the config that
wants it fills in a whole section (``movenerf/configs/gnt_move.py``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder


def _optional_type(hint: Any) -> type | None:
  """The non-None type of ``Optional[X]`` / ``X | None`` as a plain class (None if not one)."""
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if len(args) != 1:
    return None
  inner = typing.get_origin(args[0]) or args[0]
  return inner if isinstance(inner, type) else None


def _is_dataclass_type(hint: Any) -> bool:
  return any(dataclasses.is_dataclass(a) for a in (hint, *typing.get_args(hint))
             if isinstance(a, type))


def _field_value(name: str, hint: Any, value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return from_dataclass(value)
  if value is None:
    if _is_dataclass_type(hint):
      return None  # a whole section, filled in by the config that wants it
    kind = _optional_type(hint)
    if kind is None:
      raise TypeError(f"field {name!r}: no type for a placeholder from hint {hint!r}")
    return placeholder(kind)
  is_int = isinstance(value, int) and not isinstance(value, bool)
  if is_int and float in (hint, _optional_type(hint)):
    return float(value)  # a float field written with an int default stays a float field
  if isinstance(value, list):
    return tuple(value)
  return value


def defaults(cls: type) -> dict[str, Any]:
  """``{field: default}`` of a dataclass whose fields all have defaults.

  Raises:
    TypeError: a field has no default.
  """
  out = {}
  for f in dataclasses.fields(cls):
    if f.default is not dataclasses.MISSING:
      out[f.name] = f.default
    elif f.default_factory is not dataclasses.MISSING:
      out[f.name] = f.default_factory()
    else:
      raise TypeError(f"{cls.__name__}.{f.name} has no default")
  return out


def from_dataclass(cls_or_instance: Any, **overrides: Any) -> ml_collections.ConfigDict:
  """A ConfigDict of a dataclass's fields: its defaults (or an instance's values), then
  ``overrides``.

  Tuples stay tuples, nested dataclass values become nested ConfigDicts, None defaults
  become typed placeholders (settable from the command line), and float fields stay
  float fields even where the default is written as an int.

  Args:
    cls_or_instance: a dataclass type (its defaults) or instance (its values).
    **overrides: field values that differ from those.

  Returns:
    An unlocked ConfigDict with exactly the dataclass's fields.

  Raises:
    ValueError: an override names no field of the dataclass.
  """
  cls = cls_or_instance if isinstance(cls_or_instance, type) else type(cls_or_instance)
  if not dataclasses.is_dataclass(cls):
    raise TypeError(f"{cls!r} is not a dataclass")
  if isinstance(cls_or_instance, type):
    values = defaults(cls)
  else:
    values = {f.name: getattr(cls_or_instance, f.name) for f in dataclasses.fields(cls)}
  unknown = sorted(set(overrides) - set(values))
  if unknown:
    raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; allowed: {sorted(values)}")
  hints = typing.get_type_hints(cls)
  c = ml_collections.ConfigDict(
      {name: _field_value(name, hints[name], v) for name, v in values.items()})
  c.update(overrides)
  return c


def changed_fields(section: ml_collections.ConfigDict | dict, cls: type) -> dict[str, Any]:
  """The keys of a config section whose values differ from ``cls``'s defaults.

  Nested dataclass fields are compared as plain dicts; keys of ``section`` that are no
  field of ``cls`` are returned as well (with their values).
  """
  values = section.to_dict() if hasattr(section, "to_dict") else dict(section)
  base = from_dataclass(cls).to_dict()
  return {k: v for k, v in values.items() if k not in base or base[k] != v}

