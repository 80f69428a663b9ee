#!/usr/bin/env bash
# Creates (or reuses) the virtual environment at .venv and installs the project into it.
# Offline-friendly: every dependency comes from the package registries (see pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=.venv/.fiftyone-prune-installed
extra=${1:-}
want="$(cat pyproject.toml)${extra}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if [ -n "$extra" ]; then
    .venv/bin/python -m pip install -q -e ".[${extra}]"
  else
    .venv/bin/python -m pip install -q -e .
  fi
  printf '%s' "$want" > "$stamp"
fi
