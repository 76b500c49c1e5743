#!/usr/bin/env bash
# The whole test suite: type check, lint, unit, the fleet bench's short run, integration (real
# nftables in a throwaway network namespace) and end-to-end (namespace hosts, control plane,
# agents). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build
npm run lint
npx vitest run --project unit
# The fleet bench's short run (50 agents, a few seconds of flows), so the bench keeps working.
npx tsc -p bench
node bench/dist/fleet.js --short >/dev/null
# A fresh network namespace for the whole integration run: real kernel, nothing shared.
unshare --net -- bash -c 'ip link set lo up && npx vitest run --project integration'
npx vitest run --project e2e
