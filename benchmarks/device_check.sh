#!/usr/bin/env bash
# Device check: parity, bench suite and 200 reference train steps on whatever accelerator
# jax.devices() shows, in under 10 minutes; one JSON in benchmarks/. Run it from anywhere:
#
#   bash benchmarks/device_check.sh
#
# The stages, their timeouts, the JSON and the DEVICE_CHECK_* settings are described in
# benchmarks/device_check.py. Exit status 1 when any stage failed (each still recorded).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# The repository's virtual environment, unless one is active already. The activate script
# is not written for `set -u`.
if [[ -z "${VIRTUAL_ENV:-}" && -f .venv/bin/activate ]]; then
  set +u
  # shellcheck disable=SC1091
  . .venv/bin/activate
  set -u
fi

command -v timeout >/dev/null || { echo "device_check: needs coreutils timeout" >&2; exit 2; }
exec python benchmarks/device_check.py "$@"
