#!/usr/bin/env bash
# Installs Debian's Chromium for the trace-viewer browser test (tests/test_serve_browser.py).
# Idempotent: does nothing when chromium is already on PATH. Playwright drives this binary
# through executable_path; never run `playwright install` (it downloads its own browser build).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium
