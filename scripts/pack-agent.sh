#!/usr/bin/env bash
# Packs the built agent into one self-contained tarball for deploy/install-agent.sh:
# bulkhead-agent-<version>.tar.gz holding bulkhead-agent/ with the agent's workspace packages
# (package.json + dist), exactly the production node_modules they need (`npm ls --omit=dev`),
# deploy/ (the installer, the unit) and BULKHEAD-PACK (version and a content hash, which the
# installer compares to tell "nothing to change"). The archive is deterministic: same build,
# same bytes. It needs nothing from a registry on the host; koffi's native binary is inside.
#   bash scripts/pack-agent.sh [--out DIR]    (default DIR: the current directory)
# Run `npm ci && npm run build` first. Prints the tarball's path.
set -euo pipefail
out=.
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "pack-agent: --out needs a directory" >&2; exit 2; }
      out=$2; shift 2 ;;
    -h|--help) echo "usage: bash scripts/pack-agent.sh [--out DIR]"; exit 0 ;;
    *) echo "pack-agent: unknown argument $1 (usage: bash scripts/pack-agent.sh [--out DIR])" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
cd "$(dirname "$0")/.."
[ -f packages/agent/dist/main.js ] || { echo "pack-agent: packages/agent/dist is missing: run npm ci && npm run build first" >&2; exit 1; }
version=$(node -p 'require("./packages/agent/package.json").version')

# The agent's production closure: node_modules entries, and the workspace packages they link to.
mapfile -t modules < <(npm ls --omit=dev --all --parseable -w @bulkhead/agent 2>/dev/null |
  sed -n "s#^$(pwd -P)/##p" | grep '^node_modules/' | LC_ALL=C sort -u)
[ "${#modules[@]}" -gt 0 ] || { echo "pack-agent: npm ls found no dependencies of @bulkhead/agent" >&2; exit 1; }
files=("${modules[@]}" deploy)
for m in "${modules[@]}"; do
  case "$m" in node_modules/@bulkhead/*)
    pkg=packages/$(basename "$(readlink "$m")")
    files+=("$pkg/package.json" "$pkg/dist") ;;
  esac
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tarflags=(--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --mode=go-w
  --exclude='*.tsbuildinfo' --exclude='*.test.*' --exclude='*.itest.*' --exclude='*.test-util.*')
mkdir "$stage/bulkhead-agent"
tar -cf - "${tarflags[@]}" "${files[@]}" | tar -xf - -C "$stage/bulkhead-agent"
hash=$(tar -cf - "${tarflags[@]}" -C "$stage" bulkhead-agent | sha256sum | cut -d' ' -f1)
printf 'version=%s\ncontent=%s\n' "$version" "$hash" >"$stage/bulkhead-agent/BULKHEAD-PACK"
tarball="$out/bulkhead-agent-$version.tar.gz"
tar -cf - "${tarflags[@]}" -C "$stage" bulkhead-agent | gzip -n >"$tarball.tmp.$$"
mv -f "$tarball.tmp.$$" "$tarball"
echo "$tarball"
