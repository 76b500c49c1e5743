#!/usr/bin/env bash
# The live demo on real nftables (as root): installs what is missing, builds, then runs a lab of
# four network-namespace hosts with a control plane and three agents, and removes it all again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build --silent
exec node packages/lab/dist/demo.js
