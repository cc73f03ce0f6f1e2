#!/bin/sh
# Copy the bmsbus sources into the add-on build context (./src), for a local `docker build` or a local add-on.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
rm -rf "$here/src"
mkdir -p "$here/src/services"
cp -r "$repo/shared" "$here/src/shared"
for s in "$repo"/services/*/; do cp -r "$s" "$here/src/services/$(basename "$s")"; done
find "$here/src" -name '*.egg-info' -prune -exec rm -rf {} + -o -name '__pycache__' -prune -exec rm -rf {} +
echo "sources copied to $here/src"
