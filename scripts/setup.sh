#!/usr/bin/env bash
# Creates (or reuses) the virtual environment at .venv and installs the project into it.
# Offline-friendly: every dependency comes from the package registries (see pyproject.toml).
# Usage: scripts/setup.sh [EXTRA]   (EXTRA: "test" adds the test dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
extra=${1:-}
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
stamp=".venv/.fiftyone-prune-installed${extra:+-$extra}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! .venv/bin/python -m pip install -q -e ".${extra:+[$extra]}" > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log
    echo "setup: pip install failed (log above, kept in .venv/pip-install.log)" >&2
    exit 1
  fi
  printf '%s' "$want" > "$stamp"
  # the test extras include everything the plain install has
  [ -n "$extra" ] && printf '%s' "$want" > .venv/.fiftyone-prune-installed
fi
exit 0
