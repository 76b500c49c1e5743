#!/usr/bin/env bash
# Makes `bulkhead`, `bulkhead-agent` and `bulkhead-control-plane` commands of this checkout:
# one small wrapper per built entry point in PREFIX/bin (default /usr/local/bin), each running
# `<node> <checkout>/packages/<pkg>/dist/main.js` by absolute path, so nothing is resolved from
# a registry or from the caller's directory (unlike `npx`). Idempotent: it rewrites its own
# wrappers and refuses to replace a file it did not write. Run `npm ci && npm run build` first;
# run it again after moving the checkout or node. It owns these three files and nothing else.
#   npm run install-bin [-- --prefix DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)
prefix=/usr/local
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || { echo "install-bin: --prefix needs a directory" >&2; exit 2; }
      prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    -h|--help) echo "usage: npm run install-bin [-- --prefix DIR]   (commands go to DIR/bin; default /usr/local)"; exit 0 ;;
    *) echo "install-bin: unknown argument $1 (usage: npm run install-bin [-- --prefix DIR])" >&2; exit 2 ;;
  esac
done
node=$(command -v node) || { echo "install-bin: node is not on PATH" >&2; exit 1; }
node=$(readlink -f "$node")
marker='# bulkhead install-bin wrapper'
# Single-quoted for sh, whatever the path holds.
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
bin="$prefix/bin"
mkdir -p "$bin"
for pair in bulkhead:cli bulkhead-agent:agent bulkhead-control-plane:control-plane; do
  name=${pair%%:*}
  main="$root/packages/${pair#*:}/dist/main.js"
  [ -f "$main" ] || { echo "install-bin: $main is missing: run npm ci && npm run build first" >&2; exit 1; }
  target="$bin/$name"
  if [ -e "$target" ] || [ -L "$target" ]; then
    if [ -L "$target" ] || ! grep -qxF "$marker" "$target"; then
      echo "install-bin: $target exists and is not a Bulkhead wrapper; remove it first" >&2
      exit 1
    fi
  fi
  # Written beside the target, then renamed: a running command never sees half a file.
  printf '#!/bin/sh\n%s\nexec %s %s "$@"\n' "$marker" "$(quote "$node")" "$(quote "$main")" >"$target.tmp.$$"
  chmod 0755 "$target.tmp.$$"
  mv -f "$target.tmp.$$" "$target"
  echo "$target -> $main"
done
