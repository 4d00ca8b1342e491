"""Checks of config values that name the key, the value and what is allowed.

Each check raises :class:`UsageError` (a ``ValueError``) with a one-line message such as
``model.dtype='float16': choose from 'float32', 'bfloat16'``. The programs turn it into
one line on standard error and exit status 2 (:mod:`movenerf.cli`).
"""

from __future__ import annotations

import numbers
import re
from typing import Any, Iterable


class UsageError(ValueError):
  """A flag, config value or path that cannot work; the message names it."""


def _show(key: str, value: Any) -> str:
  return f"{key}={value!r}"


def integer(key: str, value: Any, minimum: int | None = None,
            maximum: int | None = None) -> int:
  """``value`` as an int in ``[minimum, maximum]`` (None: unbounded)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise UsageError(f"{_show(key, value)}: give an integer")
  return _bounded(key, int(value), minimum, maximum)


def number(key: str, value: Any, minimum: float | None = None,
           maximum: float | None = None, above: float | None = None,
           below: float | None = None) -> float:
  """``value`` as a finite float with ``minimum <= value <= maximum`` and ``above <
  value < below`` (None: no bound)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value \
      or value in (float("inf"), float("-inf")):
    raise UsageError(f"{_show(key, value)}: give a finite number")
  if above is not None and not value > above:
    raise UsageError(f"{_show(key, value)}: must be > {above:g}")
  if below is not None and not value < below:
    raise UsageError(f"{_show(key, value)}: must be < {below:g}")
  return float(_bounded(key, value, minimum, maximum))


def _bounded(key, value, minimum, maximum):
  if minimum is not None and value < minimum:
    raise UsageError(f"{_show(key, value)}: must be >= {minimum:g}")
  if maximum is not None and value > maximum:
    raise UsageError(f"{_show(key, value)}: must be <= {maximum:g}")
  return value


def one_of(key: str, value: Any, allowed: Iterable[Any]) -> Any:
  """``value`` if it is one of ``allowed``."""
  allowed = tuple(allowed)
  if value not in allowed:
    names = ", ".join(repr(a) for a in allowed)
    raise UsageError(f"{_show(key, value)}: choose from {names}")
  return value


def prefixed(prefix: str, error: ValueError) -> UsageError:
  """``error`` as a UsageError, its key put under ``prefix`` when the message starts with
  one (``'dtype=...'`` -> ``'model.dtype=...'``)."""
  text = str(error)
  if prefix and re.match(r"[A-Za-z_][\w.\[\]]*=", text):
    text = f"{prefix}.{text}"
  return UsageError(text)
