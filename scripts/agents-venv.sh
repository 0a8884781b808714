#!/usr/bin/env bash
# Creates the isolated virtual environment for livekit-agents workers (default .venv-agents):
# the agent tests (tests/integration/test_agents.py) and the README example run from it. It is
# separate from .venv because livekit-agents pins its own `livekit` rtc SDK version.
# Idempotent: reinstalls only when tests/agents/requirements.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${AGENTS_VENV:-.venv-agents}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=tests/agents/requirements.txt
STAMP="$VENV/.requirements"

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && cmp -s "$REQUIREMENTS" "$STAMP"; then
  echo "agents venv $VENV is up to date"
  exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# Never committed: the venv ignores itself (as Python 3.13+ venvs do by default).
echo "*" > "$VENV/.gitignore"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS"
cp "$REQUIREMENTS" "$STAMP"
echo "agents venv ready: $VENV ($("$VENV/bin/python" -m pip show livekit-agents | grep ^Version))"
