#!/usr/bin/env bash
# The parts the test suite starts besides the Python packages: Debian's Chromium (the report's
# browser tests) and a Label Studio server in its own virtual environment (the review tests).
# Idempotent: each part is installed only when missing. Run from anywhere; paths are the repo's.
set -euo pipefail
cd "$(dirname "$0")/.."
for part in .ci/parts/*.sh; do
  echo "+ bash $part"
  bash "$part"
done
