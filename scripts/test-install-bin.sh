#!/usr/bin/env bash
# Checks the README's install path on the built tree: `npm run install-bin -- --prefix TMP`
# makes the three commands, each answers --help from another directory with only TMP/bin and
# the system directories on PATH (no npx, no node_modules/.bin), a second run is a no-op
# success, and a foreign file of the same name is never replaced. Run after `npm run build`.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test-install-bin: FAIL: $*" >&2; exit 1; }

npm run --silent install-bin -- --prefix "$tmp" >/dev/null
npm run --silent install-bin -- --prefix "$tmp" >/dev/null || fail "a second run failed"
for cmd in bulkhead bulkhead-agent bulkhead-control-plane; do
  [ -x "$tmp/bin/$cmd" ] || fail "$tmp/bin/$cmd was not made"
  out=$(cd / && env -i PATH="$tmp/bin:/usr/bin:/bin" "$cmd" --help) || fail "$cmd --help failed"
  grep -q "Usage: $cmd" <<<"$out" || fail "$cmd --help printed no usage: $out"
done
version=$(cd / && env -i PATH="$tmp/bin:/usr/bin:/bin" bulkhead --version)
[ "$version" = "$(node -p 'require("./packages/cli/package.json").version')" ] ||
  fail "bulkhead --version printed '$version'"

echo 'not ours' >"$tmp/bin/bulkhead"
if npm run --silent install-bin -- --prefix "$tmp" >/dev/null 2>&1; then
  fail "a foreign $tmp/bin/bulkhead was replaced"
fi
[ "$(cat "$tmp/bin/bulkhead")" = 'not ours' ] || fail "a foreign $tmp/bin/bulkhead was changed"
echo "test-install-bin: ok"
