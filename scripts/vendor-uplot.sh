#!/usr/bin/env bash
# Vendors uPlot (a small, fast time-series chart library, MIT) into Roomcast's static files for
# the dashboard's charts, at the exact version pinned in tests/node/package.json ("uplot"), so the
# dashboard needs no front-end build step and no CDN. The tarball comes from the npm registry
# with `npm pack` (nothing is installed); when tests/node/package-lock.json lists uplot, the
# tarball must match its integrity hash.
#
#   scripts/vendor-uplot.sh          # after bumping "uplot" in tests/node/package.json
#
# Writes src/roomcast/web/static/vendor/uplot/{uPlot.iife.min.js,uPlot.min.css,LICENSE,VERSION};
# commit them. Without a pin in package.json it re-vendors the version in that VERSION file.
set -euo pipefail
cd "$(dirname "$0")/.."

node_dir=tests/node
dest=src/roomcast/web/static/vendor/uplot
pinned=$(node -p "(require('./$node_dir/package.json').dependencies || {}).uplot || ''")
if [ -z "$pinned" ] && [ -f "$dest/VERSION" ]; then
  pinned=$(cat "$dest/VERSION")
  echo "no \"uplot\" in $node_dir/package.json: re-vendoring $pinned (from $dest/VERSION)"
fi
case "$pinned" in
  [0-9]*.[0-9]*.[0-9]*) ;;
  *) echo "uplot must be pinned to an exact version in $node_dir/package.json (got '$pinned')" >&2
     exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
integrity=$(npm pack "uplot@$pinned" --pack-destination "$work" --json --loglevel=error \
  | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s)[0].integrity))")
locked=$(node -p "((require('./$node_dir/package-lock.json').packages || {})['node_modules/uplot'] || {}).integrity || ''")
if [ -n "$locked" ] && [ "$locked" != "$integrity" ]; then
  echo "uplot@$pinned from the registry ($integrity) does not match package-lock.json ($locked)" >&2
  exit 1
fi
tar xzf "$work/uplot-$pinned.tgz" -C "$work"

mkdir -p "$dest"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$dest/"
cp "$work/package/LICENSE" "$dest/LICENSE"
echo "$pinned" > "$dest/VERSION"
echo "vendored uplot $pinned ($integrity) into $dest:"
sha256sum "$dest/uPlot.iife.min.js" "$dest/uPlot.min.css"
