#!/usr/bin/env bash
# The main job on bundled real images: no internet, no data of yours.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FIFTYONE_DO_NOT_TRACK=true
exec .venv/bin/fiftyone-prune demo "$@"
