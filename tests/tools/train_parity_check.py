"""Replays a training-vector file with ``check_train_parity`` twice in one process (the
same compiled step): the schedule as stored, then one step ahead; prints each report as
a JSON line. Run by ``test_check_train_parity.py`` in a subprocess, beside the check with
a wrong epsilon."""

import json
import sys

import jax

from movenerf.tools import check_train_parity


def main(path: str) -> None:
  jax.config.update("jax_default_matmul_precision", "highest")
  for offset in (0, 1):
    report = check_train_parity.run_train_parity(path, schedule_offset=offset)
    print(json.dumps({"offset": offset, "passed": report.passed, "failures": report.failures,
                      "diffs": {r.key: r.max_abs_diff for r in report.rows},
                      "text": report.format()}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
