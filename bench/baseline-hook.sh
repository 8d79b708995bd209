#!/bin/bash
# baseline-hook.sh: the bash hookscript an admin would write instead of op-agent.
#   baseline-hook.sh <vmid> <phase>
# post-start, for every netN of /etc/pve/lxc/<vmid>.conf on an OVS bridge: take PVE's
# veth<vmid>i<N> off OVS, rename it to vi<vmid> (netN, N>=1: vi<vmid>i<N>) with three `ip link`
# calls, plug it back with tag/trunks/mtu_request/external_ids (ovs-vsctl waits for
# ovs-vswitchd, like op-agent's ovs.wait), and append a hash-chained audit row per NIC with the
# sqlite3 CLI (WAL, synchronous=FULL, BEGIN IMMEDIATE, sha3-256 chain: the CLI's built-in
# sha3(); Debian's sqlite3 has no sha256()). Same work as `op-agent hook <vmid> post-start`.
# Environment (bench only): PVE_ROOT (default /), BASELINE_DB (default
# /var/lib/op-agent/baseline.db), OVS_RUNDIR for a private ovsdb-server.
set -eu
vmid=$1 phase=$2
[ "$phase" = post-start ] || exit 0
root=${PVE_ROOT:-/}
conf=$root/etc/pve/lxc/$vmid.conf
db=${BASELINE_DB:-/var/lib/op-agent/baseline.db}
[ -f "$conf" ] || exit 0

# Only the current config section (snapshots start with [name]).
sed '/^\[/,$d' "$conf" | grep -E '^net[0-9]+:' | while IFS= read -r line; do
    n=${line%%:*}; n=${n#net}
    opts=${line#*: }
    bridge= tag= trunks= hwaddr= mtu=
    IFS=, read -ra kv <<<"$opts"
    for p in "${kv[@]}"; do
        case $p in
            bridge=*) bridge=${p#bridge=} ;;
            tag=*) tag=${p#tag=} ;;
            trunks=*) trunks=${p#trunks=} ;;
            hwaddr=*) hwaddr=${p#hwaddr=} ;;
            mtu=*) mtu=${p#mtu=} ;;
        esac
    done
    [ -n "$bridge" ] || continue
    old=veth${vmid}i$n
    if [ "$n" = 0 ]; then new=vi$vmid; else new=vi${vmid}i$n; fi
    [ -n "$mtu" ] || mtu=$(cat "/sys/class/net/$bridge/mtu")
    ovs-vsctl --timeout=5 -- --if-exists del-port "$old"
    ip link set dev "$old" down
    ip link set dev "$old" name "$new"
    ip link set dev "$new" up
    extra=()
    [ -n "$tag" ] && extra+=(tag="$tag")
    [ -n "$trunks" ] && extra+=(trunks="${trunks//;/,}")
    ovs-vsctl --timeout=5 -- --may-exist add-port "$bridge" "$new" "${extra[@]}" \
        -- set Interface "$new" mtu_request="$mtu" \
        -- set Port "$new" external_ids:owner=op-agent external_ids:vm-id="$vmid" \
           external_ids:pve-net="net$n" external_ids:attached-mac="$hwaddr"
    detail="{\"net\":$n,\"link\":\"$new\",\"bridge\":\"$bridge\",\"tag\":\"$tag\",\"mtu\":$mtu}"
    sqlite3 "$db" >/dev/null <<SQL
PRAGMA busy_timeout=5000;
PRAGMA journal_mode=WAL;
PRAGMA synchronous=FULL;
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL,
  vmid INTEGER NOT NULL, phase TEXT NOT NULL, step TEXT NOT NULL, detail TEXT NOT NULL,
  prev_hash BLOB NOT NULL UNIQUE, hash BLOB NOT NULL);
BEGIN IMMEDIATE;
INSERT INTO audit (ts, vmid, phase, step, detail, prev_hash, hash)
SELECT t, $vmid, '$phase', 'ovs.add-port', '$detail', p,
       sha3(p || t || '$vmid' || '$phase' || 'ovs.add-port' || '$detail', 256)
FROM (SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS t,
             coalesce((SELECT hash FROM audit ORDER BY seq DESC LIMIT 1), zeroblob(32)) AS p);
COMMIT;
SQL
done
