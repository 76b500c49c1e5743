#!/usr/bin/env bash
# The whole test suite: type check, the install-bin path, lint, unit, integration (real
# nftables in a throwaway network namespace) and end-to-end (namespace hosts, control plane,
# agents). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build
# The README's install path: the three commands from a temp prefix, each answering --help.
bash scripts/test-install-bin.sh
npm run lint
npx vitest run --project unit
# A fresh network namespace for the whole integration run: real kernel, nothing shared.
unshare --net -- bash -c 'ip link set lo up && npx vitest run --project integration'
npx vitest run --project e2e
