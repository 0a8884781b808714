#!/usr/bin/env bash
# Installs what the test suite drives besides Python packages: Debian's chromium (browser
# tests, driven by playwright with executable_path, never a downloaded browser) and Node.js
# with npm (the official Node SDKs and the livekit-client bundle). Idempotent; needs root (or
# sudo) only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    "${missing[@]}" fonts-liberation
fi

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -f tests/node/package.json ]; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi
