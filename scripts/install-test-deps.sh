#!/usr/bin/env bash
# Installs what the test suite drives besides Python packages:
#   - Debian's chromium (+ fonts) for tests/browser: playwright (the Python package, from the
#     `test` extra) drives /usr/bin/chromium through executable_path; it never downloads a
#     browser, and `playwright install` is never run;
#   - Node.js with npm, then `npm ci` in tests/node: the official Node SDKs and the npm
#     livekit-client whose dist/ bundle the browser test page loads;
#   - gcc and libsrtp2's headers: bench/compare.py (and its smoke test) builds the C baseline
#     relay, bench/baselines/c_relay.c;
#   - iproute2 (ip, tc) and iptables: the network lab of tests/lab (docs/network-lab.md), which
#     runs as root and is skipped elsewhere;
#   - coturn (turnserver): the lab's external-TURN tests start their own coturn on free ports
#     (the package's own service is not used).
# Idempotent: apt runs only when something is missing (as root, or through sudo), and npm ci
# only when tests/node/package-lock.json changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

# No tool may fetch its own browser (playwright, puppeteer): the network is closed to them.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
installed fonts-liberation || missing+=(fonts-liberation) # text in headless pages
command -v node >/dev/null 2>&1 || missing+=(nodejs)
# npm ships inside NodeSource's nodejs; Debian's nodejs needs Debian's npm.
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
installed libsrtp2-dev || missing+=(libsrtp2-dev) # the C relay in bench/baselines
# A real Redis for the multi-node tests (tests/integration/test_multinode.py starts its own).
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
# The network lab (tests/lab): namespaces and veth (ip), bandwidth caps (tc), firewalls and
# random loss (iptables).
installed iproute2 || missing+=(iproute2)
installed iptables || missing+=(iptables)
# External TURN in the lab (tests/lab/test_turn_paths.py): a real coturn.
[ -x /usr/bin/turnserver ] || missing+=(coturn)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  # Always refresh the lists first: a fresh machine has none, an old one may have stale ones.
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    "${missing[@]}"
fi
if ! version=$(/usr/bin/chromium --version 2>/dev/null); then
  echo "/usr/bin/chromium is installed but does not run" >&2
  exit 1
fi
echo "browser: $version (driven by playwright with executable_path; no browser downloads)"

if [ -f tests/node/package.json ]; then
  lock=tests/node/package-lock.json
  stamp=tests/node/node_modules/.roomcast-installed
  want="$(sha256sum "$lock" | cut -d' ' -f1) node $(node --version)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "tests/node: node_modules matches package-lock.json"
  else
    echo "tests/node: npm ci"
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
fi

# livekit-agents workers (tests/integration/test_agents.py) run from their own venv,
# .venv-agents: the framework pins its own `livekit` rtc SDK version.
bash scripts/agents-venv.sh
