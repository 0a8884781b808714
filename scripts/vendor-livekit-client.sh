#!/usr/bin/env bash
# Vendors the official livekit-client browser bundle (UMD build) into Roomcast's static files,
# at the exact version pinned in tests/node/package.json, so the playground and dashboard need
# no front-end build step and no CDN. Reproducible: the same pinned version gives the same bytes
# (npm verifies the tarball against package-lock.json's integrity hash).
#
#   scripts/vendor-livekit-client.sh          # after bumping "livekit-client" in tests/node
#
# Writes src/roomcast/web/static/vendor/{livekit-client.umd.js,VERSION,LICENSE}; commit them.
# The source map is left out (2 MB) and so is the sourceMappingURL comment pointing at it.
set -euo pipefail
cd "$(dirname "$0")/.."

node_dir=tests/node
dest=src/roomcast/web/static/vendor
pinned=$(node -p "require('./$node_dir/package.json').dependencies['livekit-client']")
case "$pinned" in
  [0-9]*.[0-9]*.[0-9]*) ;;
  *) echo "livekit-client must be pinned to an exact version in $node_dir/package.json (got $pinned)" >&2
     exit 1 ;;
esac

package=$node_dir/node_modules/livekit-client
installed=$(node -p "require('./$package/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$pinned" ]; then
  echo "installing $node_dir (npm ci): livekit-client ${installed:-missing} -> $pinned"
  (cd "$node_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  installed=$(node -p "require('./$package/package.json').version")
  if [ "$installed" != "$pinned" ]; then
    echo "package-lock.json installs livekit-client $installed, not $pinned: run npm install in $node_dir" >&2
    exit 1
  fi
fi

mkdir -p "$dest"
# Drop the trailing "//# sourceMappingURL=..." line: the map is not vendored.
grep -v '^//# sourceMappingURL=' "$package/dist/livekit-client.umd.js" > "$dest/livekit-client.umd.js"
cp "$package/LICENSE" "$dest/LICENSE"
echo "$pinned" > "$dest/VERSION"
echo "vendored livekit-client $pinned into $dest:"
sha256sum "$dest/livekit-client.umd.js"
