#!/usr/bin/env bash
# Installs what the browser end-to-end tests (tests/e2e, marker "browser") need:
#   - Debian's Chromium at /usr/bin/chromium (apt-get; sudo only when not root)
#   - the Python "playwright" package in .venv (it drives /usr/bin/chromium).
# Never runs "playwright install": that downloads a browser build and fails offline.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q chromium
fi
/usr/bin/chromium --version

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "install_browser: $PY missing; run scripts/setup.sh first" >&2
  exit 1
fi
if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
  "$PY" -m pip install -q playwright
fi
"$PY" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
