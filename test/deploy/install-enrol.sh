#!/usr/bin/env bash
# Run inside a fresh network namespace (`unshare --net`): a real control plane on loopback,
# deploy/install-agent.sh into a temp root, then the installed unit's own ExecStart (paths
# under the root, only CAP_NET_ADMIN as the unit grants) until the agent has enrolled.
#   unshare --net -- bash test/deploy/install-enrol.sh TARBALL
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
tarball=$1
t=$(mktemp -d)
pids=()
cleanup() {
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$t"
}
trap cleanup EXIT
fail() {
  echo "install-enrol: FAIL: $*" >&2
  for f in "$t"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}
ip link set lo up
# The agent reports non-loopback addresses: give it one, in this namespace only.
ip link add bh0 type veth peer name bh1 && ip addr add 10.213.0.7/24 dev bh0 && ip link set bh0 up

node "$repo/packages/control-plane/dist/main.js" --data-dir "$t/cp" \
  --api-listen 127.0.0.1:18080 --grpc-listen 127.0.0.1:18443 --log-level warn >"$t/cp.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$t/cp/initial-admin-token" ] && break; sleep 0.2; done
[ -s "$t/cp/initial-admin-token" ] || fail "the control plane wrote no initial admin token"
api() { # METHOD PATH [BODY] -> JSON on stdout
  ADMIN=$(cat "$t/cp/initial-admin-token") node -e '
    const [m, p, b] = process.argv.slice(1);
    fetch("http://127.0.0.1:18080" + p, { method: m, body: b,
      headers: { authorization: "Bearer " + process.env.ADMIN, ...(b ? { "content-type": "application/json" } : {}) } })
      .then(async (r) => { const t = await r.text(); if (!r.ok) { console.error(r.status, t); process.exit(1); } console.log(t); });
  ' "$@"
}
for _ in $(seq 50); do api GET /v1/agents >/dev/null 2>&1 && break; sleep 0.2; done
api POST /v1/enrollment-tokens '{"labels":{"app":"shop"}}' | node -p 'JSON.parse(require("fs").readFileSync(0)).token' >"$t/token"

root=$t/root
mkdir "$root"
bash "$repo/deploy/install-agent.sh" --server 127.0.0.1:18443 --server-name bulkhead-control-plane \
  --ca "$t/cp/ca/ca.crt" --token-file "$t/token" --label app=shop --hostname deploy-test-1 \
  --root "$root" --from "$tarball" >"$t/install.log" 2>&1 || fail "install-agent.sh failed"

# The unit's ExecStart, expanded as systemd would: ${X} is one word, $X splits on spaces.
unit=$root/etc/systemd/system/bulkhead-agent.service
line=$(sed -n '/^ExecStart=/,/[^\\]$/p' "$unit" | sed 's/^ExecStart=//; s/\\$//' | tr '\n' ' ')
set -a
# shellcheck disable=SC1091
. "$root/etc/default/bulkhead-agent"
set +a
line=${line//'${BULKHEAD_CONTROL_PLANE}'/$BULKHEAD_CONTROL_PLANE}
line=${line//'$BULKHEAD_AGENT_ARGS'/$BULKHEAD_AGENT_ARGS}
read -ra words <<<"$line"
cmd=()
for w in "${words[@]}"; do
  case "$w" in /etc/* | /var/* | /opt/*) cmd+=("$root$w") ;; *) cmd+=("$w") ;; esac
done
echo "install-enrol: running ${cmd[*]}"
setpriv --bounding-set=-all,+net_admin --inh-caps=-all,+net_admin --ambient-caps=+net_admin \
  --no-new-privs -- "${cmd[@]}" >"$t/agent.log" 2>&1 &
pids+=($!)
state=$root/var/lib/bulkhead-agent
for _ in $(seq 150); do [ -f "$state/agent-id" ] && break; sleep 0.2; done
[ -f "$state/agent-id" ] || fail "the installed agent did not enrol"
agents=$(api GET /v1/agents)
grep -q '"deploy-test-1"' <<<"$agents" || fail "the control plane does not list deploy-test-1: $agents"
for _ in $(seq 100); do nft list table inet bulkhead >/dev/null 2>&1 && break; sleep 0.2; done
nft list table inet bulkhead >/dev/null 2>&1 || fail "the agent programmed no table inet bulkhead"
echo "install-enrol: enrolled as $(cat "$state/agent-id"), table inet bulkhead present"
