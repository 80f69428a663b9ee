#!/usr/bin/env bash
# The whole test suite (unit, integration, smoke; browser tests when Chromium exists).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export FIFTYONE_DO_NOT_TRACK=true
exec .venv/bin/python -m pytest "${@:-tests}" -q
