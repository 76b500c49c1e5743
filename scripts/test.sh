#!/usr/bin/env bash
# The whole test suite: type check, the install-bin path, lint, unit, the benches' short runs,
# integration (real nftables in a throwaway network namespace) and end-to-end (namespace hosts,
# control plane, agents). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build
# The README's install path: the three commands from a temp prefix, each answering --help.
bash scripts/test-install-bin.sh
npm run lint
npx vitest run --project unit
# The benches' short runs (a small fleet, a few seconds of flows), so they keep working.
npx tsc -p bench
node bench/dist/control-plane.js --short >/dev/null
node bench/dist/impact.js --short >/dev/null
node --expose-gc bench/dist/calc.js --short >/dev/null
node bench/dist/fleet.js --short >/dev/null
unshare --net -- node bench/dist/agent-apply.js --short >/dev/null
# A fresh network namespace for the whole integration run: real kernel, nothing shared.
unshare --net -- bash -c 'ip link set lo up && npx vitest run --project integration'
npx vitest run --project e2e

# deploy/: units (systemd-analyze), alert rules and dashboard (promtool), Kubernetes manifests
# (schema) and deploy/install-agent.sh (into a temp root, enrolling in a throwaway namespace).
npx vitest run --project deploy
