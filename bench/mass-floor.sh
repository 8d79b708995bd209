#!/bin/bash
# The floor of section 7 (mass repair), without op-agent: what ovs-vswitchd itself needs for
# each step of the two events and of op-agent's rename path when the step is done by hand, N
# devices at once (one `ip -batch`, or one `ovs-vsctl` transaction, which waits until
# ovs-vswitchd applied it: cur_cfg = next_cfg). Per step: ovs-vswitchd's reconfigurations
# (`coverage/show` `bridge_reconfigure`, read until it stops moving: its counters are updated
# about once a second) and the time until cur_cfg caught up. Prints markdown table rows.
#
# Usage (root): bench/mass-floor.sh <dir of pve-sim> <N>. Runs in a network namespace of its
# own with a private ovsdb-server + ovs-vswitchd (pve-sim host-up), removed on exit.
set -euo pipefail
BIN=$1
N=$2
NS=opa-floor-$$
R=$(mktemp -d /tmp/opfloor.XXXXXX)
cleanup() {
    ip netns exec "$NS" "$BIN/pve-sim" --root "$R" host-down >/dev/null 2>&1 || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$R"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" "$BIN/pve-sim" --root "$R" host-up --bridge ovsbr0 >/dev/null
RUN=$R/run/openvswitch
export OVS_RUNDIR=$RUN
vs() { ip netns exec "$NS" ovs-vsctl --db="unix:$RUN/db.sock" "$@"; }
reconf() {
    sleep 1.1
    ip netns exec "$NS" ovs-appctl -t "$RUN/ovs-vswitchd.ctl" coverage/show |
        awk '/^bridge_reconfigure /{print $NF}'
}
settled() {
    local last r
    last=$(reconf)
    while r=$(reconf) && [ "$r" != "$last" ]; do last=$r; done
    echo "$r"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# step <what> <command…>: one row.
step() {
    local what=$1 r0 t0 t1 r1
    shift
    r0=$(settled)
    t0=$(now_ms)
    "$@"
    while [ "$(vs get Open_vSwitch . cur_cfg)" != "$(vs get Open_vSwitch . next_cfg)" ]; do
        sleep 0.01
    done
    t1=$(now_ms)
    r1=$(settled)
    echo "| $N | $what | $((t1 - t0)) | $((r1 - r0)) |"
}
ipb() { ip netns exec "$NS" ip -batch -; }
mk="" ren="" rm=""
plug=() del=() add=() delvi=() deldead=()
for i in $(seq 0 $((N - 1))); do
    v=$((3000 + i))
    mk+="link add veth${v}i0 mtu 1500 type veth peer name vp$v
link set vp$v up
link set dev veth${v}i0 up mtu 1500
"
    plug+=(-- add-port ovsbr0 "veth${v}i0" tag=10 -- set Interface "veth${v}i0" mtu_request=1500)
    del+=(-- del-port "veth${v}i0")
    ren+="link set dev veth${v}i0 down
link set dev veth${v}i0 name vi$v
link set dev vi$v up
"
    add+=(-- add-port ovsbr0 "vi$v" tag=10 -- set Interface "vi$v" mtu_request=1500)
    delvi+=(-- del-port "vi$v")
    deldead+=(-- del-port "veth${v}i0" -- del-port "vi$v")
    rm+="link del vi$v
"
done
step "event: veths created (\`ip -batch\`, not yet plugged)" ipb <<<"$mk"
step "event: plugged as PVE's tap_plug (1 transaction)" vs "${plug[@]}"
step "rename path: PVE's Ports deleted, devices released (1 transaction)" vs "${del[@]}"
step "rename path: devices set down, renamed, up (\`ip -batch\`)" ipb <<<"$ren"
step "rename path: op-agent's Ports added (1 transaction)" vs "${add[@]}"
step "ifreload: every vi Port deleted (1 transaction)" vs "${delvi[@]}"
step "ifreload repaired: every vi Port added again (1 transaction)" vs "${add[@]}"
# The re-creation as section 7 times it: created, plugged, and at once (no settling in
# between, as op-agent reacts within its collection window) the deletes of the rename path.
# "$1": what the delete transaction holds. The delete's own ms goes to $R/del.
burst() {
    local t
    ipb <<<"$mk"
    vs "${plug[@]}"
    t=$(now_ms)
    shift
    vs "$@"
    echo $(($(now_ms) - t)) >"$R/del"
}
step "stop half of a reboot: veth pairs deleted (the vi rows stay, dead)" ipb <<<"$rm"
step "re-created + plugged, at once PVE's Ports AND the dead vi rows deleted: total" \
    burst x "${deldead[@]}"
echo "| $N | … of which the delete of $((2 * N)) Ports (1 transaction) | $(cat "$R/del") | |"
ipb <<<"$ren" # back to the state after a rename path: every vi Port, no PVE Port
vs "${add[@]}"
step "veth pairs deleted again, and their dead vi rows (1 transaction)" \
    eval 'ipb <<<"$rm"; vs "${delvi[@]}"'
step "re-created + plugged, at once PVE's Ports deleted (no dead rows left): total" \
    burst x "${del[@]}"
echo "| $N | … of which the delete of $N Ports (1 transaction) | $(cat "$R/del") | |"
