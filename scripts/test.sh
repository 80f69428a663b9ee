#!/usr/bin/env bash
# The whole test suite: unit, integration, smoke and the browser end-to-end tests
# (installs Debian's Chromium and Playwright for those).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/install_browser.sh
export FIFTYONE_DO_NOT_TRACK=true
exec .venv/bin/python -m pytest "${@:-tests}" -q --durations=25
