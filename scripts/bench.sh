#!/usr/bin/env bash
# Benchmarks (as root): compiler scaling, the calculation graph (cold load and one change at
# 1k/10k workloads), the control plane's store paths, a provision's own cost and the
# publisher's fan-out, impact analysis (plan) at 10k workloads and 1M flows, nftables apply
# latency per backend, data-plane connections/s through enforced RuleSets of growing size
# between two namespace hosts, the agent's apply at 100k elements (cold, 100-element delta,
# drift checks, RSS), the fleet at scale (enrolment, fan-out, reconnect storm, telemetry
# ingest), and one agent TLS handshake, full and resumed. See bench/README.md. Writes
# bench/results.json. Machines are noisy: compare runs on the same machine only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build --silent
npx tsc -p bench
npx tsc -p packages/nftables/bench
out=bench/results.json
compile=$(node bench/dist/compile.js)
calc=$(node --expose-gc bench/dist/calc.js)
controlplane=$(node bench/dist/control-plane.js)
impact=$(node --expose-gc bench/dist/impact.js)
provision=$(node bench/dist/provision.js)
fanout=$(node bench/dist/fanout.js)
nft=$(unshare --net -- node packages/nftables/bench/dist/apply.bench.js)
dataplane=$(node bench/dist/dataplane.js)
agentApply=$(unshare --net -- node bench/dist/agent-apply.js)
fleet=$(unshare --net -- bash -c 'ip link set lo up && node bench/dist/fleet.js')
tls=$(node bench/dist/tls-handshake.js)
node -e '
const [compile, calc, controlplane, impact, provision, fanout, nft, dataplane, agentApply, fleet, tls] = process.argv.slice(1).map((s) => JSON.parse(s));
const os = require("node:os");
const result = {
  date: new Date().toISOString(),
  machine: { cpus: os.cpus().length, model: os.cpus()[0].model, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, loadavg: os.loadavg().map((x) => +x.toFixed(2)) },
  ...compile, ...calc, ...controlplane, ...impact, ...provision, ...fanout, nftables: nft, ...dataplane, ...agentApply, ...fleet, ...tls,
};
require("node:fs").writeFileSync(process.argv[0] === "" ? "" : "'"$out"'", JSON.stringify(result, null, 2) + "\n");
console.log(JSON.stringify(result, null, 2));
' "$compile" "$calc" "$controlplane" "$impact" "$provision" "$fanout" "$nft" "$dataplane" "$agentApply" "$fleet" "$tls"
