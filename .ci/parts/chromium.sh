#!/usr/bin/env bash
# The browser the HTML report's tests drive (Playwright with executable_path): Debian's
# chromium. A fresh machine lacks it; installing needs root and the Debian mirror.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
apt-get update && apt-get install -y chromium
