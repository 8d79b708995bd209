#!/bin/bash
# The body of `make demo` (run after the build, as root): the main job on real input.
#
# In a network namespace of its own, with a private Open vSwitch and real LXC containers under a
# temp root R, pve-sim plays Proxmox: containers 100 and 101 on VLAN 10 and 102 on VLAN 20 of the
# OVS bridge ovsbr0, each with `hookscript: local:snippets/op-hook`. It shows the links and the
# OVS ports, pings 100→101 (must answer) and 100→102 (must not), stops the containers, shows the
# ports are gone, and removes everything it made, also on failure. It never touches a
# system-wide OVS or LXC.
#
# Environment (all optional):
#   CARGO_TARGET_DIR  where the debug binaries are (default: <repo>/target)
#   OP_AGENT_BIN      the op-agent binary the hookscript runs (default: <target>/debug/op-agent)
#   OP_HOOK_SRC       the hookscript to install (default: <repo>/hookscript/op-hook)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/debug
SIM=$TARGET/pve-sim
export OP_AGENT_BIN=${OP_AGENT_BIN:-$TARGET/op-agent}
OP_HOOK_SRC=${OP_HOOK_SRC:-$REPO/hookscript/op-hook}

die() { echo "demo: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

[ "$(id -u)" = 0 ] || die "must run as root (network namespace, Open vSwitch, LXC)"
[ -x "$SIM" ] || die "$SIM missing: build first (cargo build -p pve-integration)"
[ -f "$OP_HOOK_SRC" ] || die "hookscript $OP_HOOK_SRC missing"
[ -x "$OP_AGENT_BIN" ] || echo "demo: warning: $OP_AGENT_BIN is not executable" >&2
for tool in ip ovsdb-server ovs-vswitchd ovs-vsctl lxc-create lxc-start busybox; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install openvswitch-switch lxc busybox-static)"
done

NS=opa-demo-$$
R=$(mktemp -d /tmp/opa-demo.XXXXXX)
VMIDS=(100 101 102)

in_ns() {
    ip netns exec "$NS" env OVS_RUNDIR="$R/run/openvswitch" OVS_LOGDIR="$R/run/openvswitch" \
        OVS_DBDIR="$R/run/openvswitch" "$@"
}
sim() { in_ns "$SIM" --root "$R" "$@"; }
vsctl() { in_ns ovs-vsctl --timeout=10 "$@"; }

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if ip netns list | grep -qw "$NS"; then
        for v in "${VMIDS[@]}"; do
            [ -d "$R/var/lib/lxc/$v" ] && sim destroy "$v" >/dev/null
        done
        sim host-down
        for pid in $(ip netns pids "$NS"); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$NS"
    fi
    rm -rf "$R"
    if [ "$rc" = 0 ]; then echo "demo: OK (cleaned up)"; else echo "demo: FAILED (cleaned up)" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "network namespace $NS, root $R, private OVS with bridge ovsbr0"
ip netns add "$NS"
sim host-up --bridge ovsbr0

step "op-agent config, PVE container configs, hookscript"
mkdir -p "$R/etc/op-agent/containers" "$R/var/lib/op-agent"
cat >"$R/etc/op-agent/agent.toml" <<EOF
[ovsdb]
socket = "$R/run/openvswitch/db.sock"
[pve]
root = "$R"
[audit]
database = "$R/var/lib/op-agent/audit.db"
EOF
export OP_AGENT_CONFIG=$R/etc/op-agent/agent.toml
declare -A TAG=([100]=10 [101]=10 [102]=20)
for v in "${VMIDS[@]}"; do
    printf 'network_type = "bridge"\n' >"$R/etc/op-agent/containers/$v.toml"
    mac=$(printf 'BC:24:11:00:00:%02X' $((v - 99)))
    cat >"$R/etc/pve/lxc/$v.conf" <<EOF
arch: amd64
hookscript: local:snippets/op-hook
hostname: demo$v
memory: 128
net0: name=eth0,bridge=ovsbr0,hwaddr=$mac,ip=10.10.0.$v/24,tag=${TAG[$v]},type=veth
ostype: unmanaged
EOF
    echo "$R/etc/pve/lxc/$v.conf: $(grep ^net0 "$R/etc/pve/lxc/$v.conf")"
done
install -m 0755 "$OP_HOOK_SRC" "$R/var/lib/vz/snippets/op-hook"

step "start 100, 101 (VLAN 10) and 102 (VLAN 20)"
for v in "${VMIDS[@]}"; do
    sim start "$v"
done
sim list

step "links in $NS"
in_ns ip -br link
step "ovs-vsctl show"
vsctl show
step "ports"
vsctl --columns=name,tag,trunks,vlan_mode,external_ids list Port
vsctl --columns=name,ofport,mtu_request,error list Interface

step "ping 100 -> 101 (same VLAN: must answer)"
in_ns lxc-attach -P "$R/var/lib/lxc" -n 100 -- ping -c3 -W1 10.10.0.101 ||
    die "100 -> 101 got no answer"
step "ping 100 -> 102 (other VLAN: must not answer)"
if in_ns lxc-attach -P "$R/var/lib/lxc" -n 100 -- ping -c2 -W1 10.10.0.102; then
    die "100 -> 102 answered across VLANs"
fi
echo "no answer, as it should be"

step "stop the containers"
for v in "${VMIDS[@]}"; do
    sim stop "$v"
done
sim list

step "ports on ovsbr0 after stop (must be none)"
left=$(vsctl list-ports ovsbr0)
[ -z "$left" ] || die "ports left on ovsbr0 after stop: $left"
echo "none"

step "audit log of container 100 (hash-chained, in $R/var/lib/op-agent/audit.db)"
in_ns "$OP_AGENT_BIN" audit log --vmid 100
step "audit verify"
in_ns "$OP_AGENT_BIN" audit verify
