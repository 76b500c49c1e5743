#!/usr/bin/env bash
# Installs the Bulkhead agent on a Debian/Ubuntu host, as root: nftables (apt) if missing, a
# check for Node >= 20 at /usr/bin/node (the unit runs it), the packed agent under
# /opt/bulkhead-agent, the CA, the bootstrap token, /etc/default/bulkhead-agent, the systemd
# units (the agent and its boot loader); then it enables both and starts the agent and waits until it has enrolled. Idempotent: a
# second run with the same inputs changes nothing and says so. It owns those paths and nothing
# else; it never touches nftables itself (the agent does) and never removes the state dir.
# Exit status: 0 done, 2 bad input (one line saying which), 1 a step failed.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: install-agent.sh --server HOST:PORT --server-name NAME --ca FILE --token-file FILE
                        [--label k=v]... [--hostname NAME] [--admin-cidr CIDR]...
                        [--from TARBALL|DIR] [--root DIR] [--no-start] [--no-packages]
  --server HOST:PORT   the control plane's agent gRPC endpoint (e.g. cp.example.internal:8443)
  --server-name NAME   name in the control plane's certificate (one of its --tls-san values)
  --ca FILE            the control plane's CA certificate (PEM, /var/lib/bulkhead/ca/ca.crt there)
  --token-file FILE    file holding the bootstrap token (`bulkhead enrollment-token create`)
  --label k=v          label requested at enrolment (repeatable)
  --hostname NAME      workload name to report (default: this host's name)
  --admin-cidr CIDR    failsafe admin SSH source that policy can never cut (repeatable)
  --from TARBALL|DIR   bulkhead-agent-*.tar.gz from scripts/pack-agent.sh, its unpacked
                       directory, or a built checkout (packed on the fly); default: the tree
                       this script is in
  --root DIR           write every file under DIR instead of /; installs no package and
                       starts nothing (for tests and image builds)
  --no-start           write everything, but neither enable nor start the agent
  --no-packages        do not apt-get install nftables
example:
  install-agent.sh --server cp.example.internal:8443 --server-name cp.example.internal \
    --ca ca.crt --token-file token --label app=shop --label role=db --admin-cidr 192.0.2.0/24
USAGE
}

say() { echo "install-agent: $*"; }
bad() {
  echo "install-agent: $*" >&2
  echo "install-agent: see --help" >&2
  exit 2
}
die() {
  echo "install-agent: $*" >&2
  exit 1
}

here=$(cd "$(dirname "$0")" && pwd -P)
server='' server_name='' ca='' token_file='' host='' from='' root='' start=1 packages=1
labels=() admin=()
need() { [ $# -ge 2 ] && [ -n "$2" ] || bad "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --server) need "$@"; server=$2; shift 2 ;;
    --server-name) need "$@"; server_name=$2; shift 2 ;;
    --ca) need "$@"; ca=$2; shift 2 ;;
    --token-file) need "$@"; token_file=$2; shift 2 ;;
    --label) need "$@"; labels+=("$2"); shift 2 ;;
    --hostname) need "$@"; host=$2; shift 2 ;;
    --admin-cidr) need "$@"; admin+=("$2"); shift 2 ;;
    --from) need "$@"; from=$2; shift 2 ;;
    --root) need "$@"; root=$2; shift 2 ;;
    --no-start) start=0; shift ;;
    --no-packages) packages=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) bad "unknown argument: $1" ;;
  esac
done

# --- input: checked before anything is written. Values land in an EnvironmentFile and are
# split on spaces by systemd, so each is held to a charset with no space, quote or '$'.
[ -n "$server" ] || bad "--server HOST:PORT is required"
[ -n "$server_name" ] || bad "--server-name is required"
[ -n "$ca" ] || bad "--ca FILE is required"
[ -n "$token_file" ] || bad "--token-file FILE is required"
dns='[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*'
port='([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])'
[[ "$server" =~ ^($dns|\[[0-9A-Fa-f:.]+\]):$port$ ]] ||
  bad "--server: expected HOST:PORT ([IPv6]:PORT), got '$server'"
[[ "$server_name" =~ ^$dns$ ]] || bad "--server-name: not a DNS name or address: '$server_name'"
[ -z "$host" ] || [[ "$host" =~ ^$dns$ ]] || bad "--hostname: not a host name: '$host'"
for l in ${labels[@]+"${labels[@]}"}; do
  [[ "$l" =~ ^[A-Za-z0-9]([A-Za-z0-9._/-]{0,252})=[A-Za-z0-9._-]{0,63}$ ]] ||
    bad "--label: expected key=value (letters, digits, . _ - and / in the key), got '$l'"
done
for c in ${admin[@]+"${admin[@]}"}; do
  [[ "$c" =~ ^[0-9A-Fa-f:.]+/[0-9]{1,3}$ ]] || bad "--admin-cidr: not a CIDR: '$c'"
done
[ -r "$ca" ] || bad "--ca: cannot read $ca"
[ -r "$token_file" ] || bad "--token-file: cannot read $token_file"
token=$(tr -d '\r\n' <"$token_file")
[[ "$token" =~ ^[A-Za-z0-9_.~+/=-]{8,512}$ ]] ||
  bad "--token-file: $token_file must hold one token (bhe_...), and nothing else"
[ -z "$root" ] || { [ -d "$root" ] || bad "--root: $root is not a directory"; }
[ -n "$root" ] && root=$(cd "$root" && pwd -P) && start=0 && packages=0

# --- prerequisites
[ "$(id -u)" = 0 ] || [ -n "$root" ] || die "run as root (it installs packages and a systemd unit)"
node=/usr/bin/node
[ -x "$node" ] || die "Node >= 20 is needed at $node (the unit runs it): apt-get install nodejs (20+)"
major=$("$node" -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || die "Node >= 20 is needed at $node, found $("$node" --version)"
"$node" -e 'new (require("node:crypto").X509Certificate)(require("node:fs").readFileSync(process.argv[1]))' \
  "$ca" 2>/dev/null || bad "--ca: $ca is not a PEM certificate"
if [ "$packages" = 1 ] && { ! command -v nft >/dev/null || ! ldconfig -p | grep -q libnftables.so.1; }; then
  command -v apt-get >/dev/null || die "nftables is missing and there is no apt-get: install nftables"
  say "installing nftables"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
fi

changes=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Writes stdin to $root$1 with mode $2 unless it already holds exactly that (content and mode).
put() {
  local dest=$root$1 mode=$2
  cat >"$tmp/put"
  if [ -f "$dest" ] && cmp -s "$tmp/put" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    say "unchanged $1"
    return
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$tmp/put" "$dest.new" && mv -f "$dest.new" "$dest"
  say "wrote $1"
  changes=$((changes + 1))
}

# --- the agent's files: an unpacked pack (BULKHEAD-PACK), a tarball, or a built checkout.
from=${from:-$(dirname "$here")}
if [ -f "$from" ]; then
  tar -xzf "$from" -C "$tmp" || bad "--from: $from is not a bulkhead-agent tarball"
  pack=$tmp/bulkhead-agent
elif [ -f "$from/BULKHEAD-PACK" ]; then
  pack=$from
elif [ -x "$from/scripts/pack-agent.sh" ]; then
  tarball=$(bash "$from/scripts/pack-agent.sh" --out "$tmp") || die "packing $from failed"
  tar -xzf "$tarball" -C "$tmp"
  pack=$tmp/bulkhead-agent
else
  bad "--from: $from is neither a tarball, an unpacked pack nor a checkout"
fi
[ -f "$pack/BULKHEAD-PACK" ] && [ -f "$pack/packages/agent/dist/main.js" ] ||
  bad "--from: $from holds no packed agent (no BULKHEAD-PACK)"
opt=/opt/bulkhead-agent
if [ -f "$root$opt/BULKHEAD-PACK" ] && cmp -s "$pack/BULKHEAD-PACK" "$root$opt/BULKHEAD-PACK"; then
  say "unchanged $opt ($(grep '^version=' "$pack/BULKHEAD-PACK"))"
else
  [ ! -e "$root$opt" ] || [ -f "$root$opt/BULKHEAD-PACK" ] ||
    die "$root$opt exists and was not installed by this script; move it away first"
  mkdir -p "$root/opt"
  rm -rf "$root$opt.new" "$root$opt.old"
  cp -a "$pack" "$root$opt.new"
  # Swapped by rename: the unit never runs a half-copied tree.
  [ ! -e "$root$opt" ] || mv "$root$opt" "$root$opt.old"
  mv "$root$opt.new" "$root$opt"
  rm -rf "$root$opt.old"
  say "installed $opt ($(grep '^version=' "$pack/BULKHEAD-PACK"))"
  changes=$((changes + 1))
fi

# --- configuration
state=/var/lib/bulkhead-agent
put /etc/bulkhead/ca.crt 0644 <"$ca"
if [ -f "$root$state/agent-id" ]; then
  say "already enrolled ($root$state/agent-id): the bootstrap token is not needed, left as it is"
else
  put /etc/bulkhead/bootstrap-token 0600 <<<"$token"
fi
args="--server-name $server_name"
[ -z "$host" ] || args+=" --hostname $host"
for l in ${labels[@]+"${labels[@]}"}; do args+=" --label $l"; done
for c in ${admin[@]+"${admin[@]}"}; do args+=" --admin-cidr $c"; done
put /etc/default/bulkhead-agent 0644 <<EOF
# Written by deploy/install-agent.sh; run it again rather than editing this file.
BULKHEAD_CONTROL_PLANE=$server
BULKHEAD_AGENT_ARGS="$args"
EOF
before=$changes
put /etc/systemd/system/bulkhead-agent.service 0644 <"$root$opt/deploy/systemd/bulkhead-agent.service"
put /etc/systemd/system/bulkhead-agent-restore.service 0644 <"$root$opt/deploy/systemd/bulkhead-agent-restore.service"
unit_changed=$((changes - before))

if [ "$start" = 0 ]; then
  [ "$changes" = 0 ] && say "nothing to change" || say "$changes change(s); not started (--no-start/--root)"
  exit 0
fi

# --- start and enrol
[ -d /run/systemd/system ] || die "systemd is not running here: use --no-start and start the agent yourself"
[ "$unit_changed" = 0 ] || systemctl daemon-reload
systemctl is-enabled --quiet bulkhead-agent || { systemctl enable --quiet bulkhead-agent; changes=$((changes + 1)); }
# The boot loader runs at the next boot (the agent already holds the table now).
systemctl is-enabled --quiet bulkhead-agent-restore || { systemctl enable --quiet bulkhead-agent-restore; changes=$((changes + 1)); }
if [ "$changes" -gt 0 ] && systemctl is-active --quiet bulkhead-agent; then
  systemctl restart bulkhead-agent
  say "restarted bulkhead-agent"
elif ! systemctl is-active --quiet bulkhead-agent; then
  systemctl start bulkhead-agent
  say "started bulkhead-agent"
  changes=$((changes + 1))
fi
for _ in $(seq 60); do
  [ -f "$state/agent-id" ] && break
  systemctl is-failed --quiet bulkhead-agent && break
  sleep 1
done
if [ ! -f "$state/agent-id" ]; then
  journalctl -u bulkhead-agent -n 20 --no-pager >&2 || true
  die "the agent has not enrolled after 60 s (log above; systemctl status bulkhead-agent)"
fi
[ "$changes" = 0 ] && say "nothing to change" || say "$changes change(s)"
say "enrolled as agent $(cat "$state/agent-id")"
