"""The report of a parity check: compared arrays and a pass/fail verdict."""

from __future__ import annotations

import dataclasses

# The arrays whose differences decide a GNT parity check.
COLOUR_KEYS = ("outputs/rgb", "outputs_fine/rgb")


@dataclasses.dataclass
class Comparison:
  key: str
  max_abs_diff: float
  note: str = ""


@dataclasses.dataclass
class ParityReport:
  """Rows of comparisons; ``final_keys`` decide pass/fail against ``tolerance``."""

  rows: list[Comparison]
  tolerance: float
  final_keys: tuple[str, ...] = COLOUR_KEYS
  what: str = "final colours"

  def diff(self, key: str) -> float:
    return next(r.max_abs_diff for r in self.rows if r.key == key)

  @property
  def colour_keys(self) -> list[str]:
    return [r.key for r in self.rows if r.key in self.final_keys]

  @property
  def passed(self) -> bool:
    return bool(self.colour_keys) and all(self.diff(k) <= self.tolerance for k in self.colour_keys)

  def format(self) -> str:
    width = max(len(r.key) for r in self.rows)
    lines = [f"{'array':<{width}}  max |jax - ref|"]
    for r in self.rows:
      flag = "  <-- FINAL" if r.key in self.final_keys else ""
      lines.append(f"{r.key:<{width}}  {r.max_abs_diff:.3e}{flag}{'  ' + r.note if r.note else ''}")
    verdict = "PASS" if self.passed else "FAIL"
    lines.append(f"{verdict}: {self.what} within {self.tolerance:g}" if self.passed else
                 f"{verdict}: {self.what} differ by more than {self.tolerance:g}")
    return "\n".join(lines)
