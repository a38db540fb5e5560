#!/usr/bin/env bash
# Label Studio for the review tests, in its own virtual environment (never in .venv: it pins
# its own Django, numpy and friends). Idempotent: a venv whose label-studio already reports the
# pinned version is left as it is. The path comes from $LABEL_STUDIO_VENV (default:
# .venv-label-studio in the repository root, gitignored); tests/label_studio_server.py reads the
# same variable. About 3 minutes and 1 GB on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=1.23.2
venv=${LABEL_STUDIO_VENV:-.venv-label-studio}
if [ -x "$venv/bin/label-studio" ] && "$venv/bin/python" -c "
import importlib.metadata, sys
sys.exit(importlib.metadata.version('label-studio') != '$version')" 2>/dev/null; then
  echo "label-studio $version already in $venv"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "label-studio==$version"
"$venv/bin/python" -c "import label_studio" # a check that, unlike --version, writes no data folder
echo "label-studio $version installed in $venv"
