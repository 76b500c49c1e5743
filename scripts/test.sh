#!/usr/bin/env bash
# The whole test suite: type check, the install-bin path, lint, unit, the benches' short runs,
# integration (real nftables in a throwaway network namespace), end-to-end (namespace hosts,
# control plane, agents) and the deploy/ checks. Run as root.
#
# After the build, two lanes run at once, because each alone leaves a core idle on a 2-core
# machine: the e2e lane (two e2e files at a time, mostly waiting on agents and timeouts, then
# deploy) and the checks lane (single-process steps, mostly CPU). Nothing is shared between
# them: every e2e lab, the integration run and the benches that touch nftables live in network
# namespaces of their own, with names carrying their pid. Every step prints its wall time and
# the CPU time (user + sys) of the processes it ran; the checks lane's log is printed when it
# ends.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { # NAME COMMAND...: runs it, then prints its wall time and CPU time (user + sys)
  local name=$1 t0=$EPOCHREALTIME before after
  shift
  before=$(mktemp)
  after=$(mktemp)
  # `times` (its second line: this shell's finished children) in this shell, not in a $(...)
  # subshell, which has children of its own.
  times >"$before"
  "$@" || { echo "== $name FAILED" | tee -a "$summary" >&2; return 1; }
  times >"$after"
  awk -v n="$name" -v wall="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" '
    FNR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); c[NR == FNR] = u[1] * 60 + u[2] + s[1] * 60 + s[2] }
    END { printf "== %-12s %6.1f s wall %6.1f s CPU\n", n, wall, c[0] - c[1] }' "$before" "$after" |
    tee -a "$summary" >&2
  rm -f "$before" "$after"
}

summary=$(mktemp)
checks_log=$(mktemp)
e2e_log=$(mktemp)
trap 'rm -f "$summary" "$checks_log" "$e2e_log"' EXIT
# Background lanes ignore SIGINT in a script: take them down with us.
trap 'trap - INT TERM; kill 0' INT TERM
t_start=$EPOCHREALTIME

step setup bash scripts/setup.sh
step build npm run build

e2e_lane() {
  step e2e npx vitest run --project e2e
  # deploy/: units (systemd-analyze), alert rules and dashboard (promtool), Kubernetes manifests
  # (schema) and deploy/install-agent.sh (into a temp root, enrolling in a throwaway namespace).
  step deploy npx vitest run --project deploy
}

checks_lane() {
  # The README's install path: the three commands from a temp prefix, each answering --help.
  step install-bin bash scripts/test-install-bin.sh
  step lint npm run lint
  step unit npx vitest run --project unit
  # The benches' short runs (a small fleet, a few seconds of flows), so they keep working.
  step bench-build npx tsc -p bench
  step bench-cp node bench/dist/control-plane.js --short >/dev/null
  step bench-impact node bench/dist/impact.js --short >/dev/null
  step bench-provision node bench/dist/provision.js --short >/dev/null
  step bench-fanout node bench/dist/fanout.js --short >/dev/null
  step bench-calc node --expose-gc bench/dist/calc.js --short >/dev/null
  step bench-fleet node bench/dist/fleet.js --short >/dev/null
  step bench-tls node bench/dist/tls-handshake.js --short >/dev/null
  step bench-apply unshare --net -- node bench/dist/agent-apply.js --short >/dev/null
  # A fresh network namespace for the whole integration run: real kernel, nothing shared.
  step integration unshare --net -- bash -c 'ip link set lo up && npx vitest run --project integration'
}

# Both in the background: a lane must stop at its first failing step (set -e), which bash
# would not do in a subshell whose status is tested (`(lane) || ...`).
failed=()
(checks_lane) >"$checks_log" 2>&1 &
checks=$!
# The e2e lane prints as it goes, and into a log for the failure digest at the end.
(e2e_lane) > >(tee "$e2e_log") 2>&1 &
e2e=$!
wait "$e2e" || failed+=(e2e-lane)
wait "$checks" || failed+=(checks-lane)
echo "---- checks lane (install-bin, lint, unit, benches, integration)"
cat "$checks_log"
echo "---- times"
cat "$summary"
awk -v t0="$t_start" -v t1="$EPOCHREALTIME" 'BEGIN { printf "== total        %6.1f s wall\n", t1 - t0 }'
if [ ${#failed[@]} -gt 0 ]; then
  # Last, where a reader of only the tail sees it: the failing tests, their errors and where
  # they were thrown (vitest's lines, colours stripped).
  echo "---- failures (the whole output is above)"
  sed 's/\x1b\[[0-9;]*m//g' "$e2e_log" "$checks_log" |
    grep -E '^ *(FAIL |×|❯ [^ ]+:[0-9]+|[A-Za-z]*Error:)|== .* FAILED' | awk '!seen[$0]++' | head -30
  echo "FAILED: ${failed[*]} (see above)" >&2
  exit 1
fi
