#!/usr/bin/env bash
# Installs what Bulkhead needs on a fresh Debian machine (as root): nftables and iproute2
# from Debian's packages, then the npm dependencies. Idempotent: does nothing twice.
set -euo pipefail
cd "$(dirname "$0")/.."
# One `apt-get update` at most, before the first install that needs it (each costs seconds).
updated=
apt_install() {
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
# Debian's packages and npm's install share nothing, so they run at the same time (each is
# mostly waiting on downloads; npm's is also compiling better-sqlite3).
debian_packages() {
  if ! command -v nft >/dev/null || ! command -v ip >/dev/null || ! command -v dot >/dev/null || ! ldconfig -p | grep -q libnftables.so.1; then
    apt_install nftables iproute2 graphviz
  fi
  # The deploy/ checks run the operators' tools: systemd-analyze (units) and promtool (alert rules,
  # dashboard queries); openssl makes the installer test's CA. promtool is taken out of Debian's
  # prometheus package into .tools/ rather than installing the package, which would start a
  # Prometheus server on a host booted with systemd.
  if ! command -v systemd-analyze >/dev/null || ! command -v openssl >/dev/null; then
    apt_install --no-install-recommends systemd openssl
  fi
  # The web console's e2e test drives Debian's chromium headless (playwright-core, no downloaded browser).
  if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
  fi
  if ! command -v promtool >/dev/null && [ ! -x .tools/promtool ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; })
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    mkdir -p .tools && cp "$tmp/x/usr/bin/promtool" .tools/promtool
    rm -rf "$tmp"
  fi
}
debian_packages &
apt=$!
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # JOBS: node-gyp compiles better-sqlite3's two sources in parallel.
  JOBS=max npm ci --no-audit --no-fund
fi
wait "$apt"
