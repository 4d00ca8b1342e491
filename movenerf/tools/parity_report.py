"""The report of a parity check: compared arrays and a pass/fail verdict."""

from __future__ import annotations

import dataclasses
import math

# The arrays whose differences decide a GNT parity check.
COLOUR_KEYS = ("outputs/rgb", "outputs_fine/rgb")


@dataclasses.dataclass
class Comparison:
  """One compared quantity.

  Attributes:
    key: what was compared.
    max_abs_diff: its difference: the largest absolute difference, unless ``note`` says
      what else (a relative or a relative-L2 difference, a fraction).
    note: how to read the row.
    tolerance: the row's own limit; a row with one decides the verdict as the report's
      ``final_keys`` do (None: the report's ``tolerance`` if the key is final, else the
      row is for information).
  """

  key: str
  max_abs_diff: float
  note: str = ""
  tolerance: float | None = None


@dataclasses.dataclass
class ParityReport:
  """Rows of comparisons; ``final_keys`` (against ``tolerance``) and the rows with their
  own tolerance decide pass/fail."""

  rows: list[Comparison]
  tolerance: float
  final_keys: tuple[str, ...] = COLOUR_KEYS
  what: str = "final colours"
  header: str = "max |jax - ref|"

  def diff(self, key: str) -> float:
    return next(r.max_abs_diff for r in self.rows if r.key == key)

  @property
  def colour_keys(self) -> list[str]:
    return [r.key for r in self.rows if r.key in self.final_keys]

  def limit(self, row: Comparison) -> float | None:
    """The tolerance that decides ``row`` (None: the row is for information)."""
    if row.tolerance is not None:
      return row.tolerance
    return self.tolerance if row.key in self.final_keys else None

  @property
  def failures(self) -> list[str]:
    """The keys of the deciding rows past their limit (NaN fails)."""
    return [r.key for r in self.rows if self.limit(r) is not None
            and not (math.isfinite(r.max_abs_diff) and r.max_abs_diff <= self.limit(r))]

  @property
  def passed(self) -> bool:
    deciding = [r for r in self.rows if self.limit(r) is not None]
    return bool(deciding) and not self.failures

  def format(self) -> str:
    width = max(len(r.key) for r in self.rows)
    lines = [f"{'array':<{width}}  {self.header}"]
    own = any(r.tolerance is not None for r in self.rows)
    for r in self.rows:
      if r.tolerance is not None:
        over = r.key in self.failures
        flag = f"  (tolerance {r.tolerance:g}{': FAIL' if over else ''})"
      else:
        flag = "  <-- FINAL" if r.key in self.final_keys else ""
      lines.append(f"{r.key:<{width}}  {r.max_abs_diff:.3e}{flag}{'  ' + r.note if r.note else ''}")
    if own:
      lines.append(f"PASS: {self.what} within their tolerances" if self.passed else
                   f"FAIL: {self.what} past their tolerances: {', '.join(self.failures)}")
    else:
      lines.append(f"PASS: {self.what} within {self.tolerance:g}" if self.passed else
                   f"FAIL: {self.what} differ by more than {self.tolerance:g}")
    return "\n".join(lines)
