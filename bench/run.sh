#!/bin/bash
# `make bench`: op-agent against the bash hookscript an admin would write, on the same
# machine in the same run. Needs root. Everything runs in a network namespace of its own with a
# private ovsdb-server/ovs-vswitchd (pve-sim host-up) under a temp root; all of it is removed on
# exit, also on failure. Writes bench/report.md and prints it.
#
# Knobs (environment): BENCH_RUNS (30) runs per side after BENCH_WARMUP (3) warm-up pairs;
# BENCH_STORM ("10 50 100 200") storm sizes; BENCH_STORM_ROUNDS (3) A/B pairs per size;
# BENCH_APPENDS (3000) single-row appends; BENCH_VERIFY_ROWS (1000000);
# BENCH_CONT_PROCS (16) × BENCH_CONT_APPENDS (200) for DEFERRED vs IMMEDIATE;
# BENCH_WATCH_N (200) containers × BENCH_WATCH_ROUNDS (5) veth re-creations for `watch` RSS;
# BENCH_MASS ("10 50 100 200") × BENCH_MASS_ROUNDS (3) for the mass repair section (with
# OPB_MASS_NAMING=keep its containers use naming = "keep"; OPB_MASS_SIDES=a: batched side only);
# BENCH_PROFILE (release; "debug" only to develop the harness);
# BENCH_SECTIONS ("ab floor unmanaged storm memory audit mass") to run only some sections.
# BENCH_SLOW_SYNC_US (2000; empty: skip): section 1 again with every fsync of op-agent and of the baseline
# delayed by that many µs (bench/slowsync.c, LD_PRELOAD), as on a slow-syncing disk.
# OPB_AGENT_B=<binary> (+ OPB_AGENT_B_CONFIG=<agent.toml>, e.g. with its own audit database)
# makes section 1 compare two op-agent builds instead of op-agent vs bash.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-30}
WARMUP=${BENCH_WARMUP:-3}
STORM=${BENCH_STORM:-10 50 100 200}
ROUNDS=${BENCH_STORM_ROUNDS:-3}
APPENDS=${BENCH_APPENDS:-3000}
VROWS=${BENCH_VERIFY_ROWS:-1000000}
CPROCS=${BENCH_CONT_PROCS:-16}
CAPPENDS=${BENCH_CONT_APPENDS:-200}
WATCH_N=${BENCH_WATCH_N:-200}
WATCH_ROUNDS=${BENCH_WATCH_ROUNDS:-5}
MASS=${BENCH_MASS:-10 50 100 200}
MASS_ROUNDS=${BENCH_MASS_ROUNDS:-3}
PROFILE=${BENCH_PROFILE:-release}
SLOW_SYNC_US=${BENCH_SLOW_SYNC_US-2000}
SECTIONS=" ${BENCH_SECTIONS:-ab floor unmanaged storm memory audit mass} "
want() { [[ $SECTIONS == *" $1 "* ]]; }
REPORT=bench/report.md

[ "$(id -u)" = 0 ] || { echo "bench/run.sh: must run as root (netns, veth, OVS)" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }

pflag=(); [ "$PROFILE" = release ] && pflag=(--release)
echo "== building ($PROFILE)" >&2
cargo build "${pflag[@]}" --workspace --locked >&2
OPBENCH=$(cargo build "${pflag[@]}" --bench opbench --locked --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*opbench[^"]*\)".*/\1/p' | tail -1)
[ -x "$OPBENCH" ] || { echo "bench/run.sh: opbench driver not built" >&2; exit 1; }
BIN=$PWD/target/$PROFILE

NS=opa-bench-$$
R=$(mktemp -d /tmp/opbench.XXXXXX)
cleanup() {
    ip netns exec "$NS" "$BIN/pve-sim" --root "$R" host-down >/dev/null 2>&1 || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$R"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" "$BIN/pve-sim" --root "$R" host-up --bridge ovsbr0 >&2

export OVS_RUNDIR=$R/run/openvswitch OVS_LOGDIR=$R/run/openvswitch OVS_DBDIR=$R/run/openvswitch
export OPB_AGENT=$BIN/op-agent OPB_HOOK=$PWD/hookscript/op-hook OPB_BASELINE=$PWD/bench/baseline-hook.sh
inns() { ip netns exec "$NS" "$@"; }

{
echo "# op-agent benchmarks ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
echo "Machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), kernel $(uname -r),"
echo "$(. /etc/os-release; echo "$PRETTY_NAME"), $(ovs-vswitchd --version | head -1), sqlite3 CLI $(sqlite3 --version | cut -d' ' -f1),"
echo "git $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), profile $PROFILE, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Private ovsdb-server + ovs-vswitchd (datapath netdev) in netns $NS; audit DB on $(df -T /tmp | awk 'NR==2{print $2}')."
echo
} > "$REPORT"

if want ab; then
    echo "== 1+2 hook A/B ($RUNS runs)" >&2
    inns "$OPBENCH" hook-ab "$R" "$RUNS" "$WARMUP" >> "$REPORT"
fi
if [ -n "$SLOW_SYNC_US" ] && want ab; then
    echo "== 1s hook A/B with fsync delayed $SLOW_SYNC_US µs" >&2
    gcc -shared -fPIC -O2 -o "$R/slowsync.so" bench/slowsync.c -ldl
    OPB_TITLE_NOTE=" — every fsync delayed $SLOW_SYNC_US µs (bench/slowsync.c)" \
        LD_PRELOAD="$R/slowsync.so" SLOW_SYNC_US="$SLOW_SYNC_US" \
        ip netns exec "$NS" "$OPBENCH" hook-ab "$R" "$RUNS" "$WARMUP" >> "$REPORT"
fi
if want floor; then
    echo "== 2b floor ($RUNS runs)" >&2
    inns "$OPBENCH" floor "$R" "$RUNS" >> "$REPORT"
fi
if want unmanaged; then
    echo "== 3 unmanaged" >&2
    inns "$OPBENCH" unmanaged "$R" "$RUNS" >> "$REPORT"
fi

if want storm; then
echo "== 4 storm" >&2
{
echo "### 4. Start storm: N post-start hooks at once ($ROUNDS A/B rounds per N)"
echo
echo "Fresh PVE-plugged veths before every round (setup not timed). wall = first spawn to last exit; per-hook = spawn to exit of each hook."
echo
echo "| N | hookscript | total wall median (min – max) ms | wall / N ms | per-hook median ms | per-hook p95 ms | CPU ms per hook (median) | failed hooks | wrong end states | next_cfg bumps / vswitchd reconfigures (median per round) | ovs-vswitchd CPU ms per round | max RSS KiB | audit chain |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} >> "$REPORT"
for n in $STORM; do
    inns "$OPBENCH" storm "$R" "$n" "$ROUNDS" >> "$REPORT"
done
echo >> "$REPORT"
fi

if want memory; then
echo "== 5 memory" >&2
{
echo "### 5. Memory"
echo
inns "$OPBENCH" fresh "$R" 1000 >&2
env OP_AGENT_CONFIG="$R/etc/op-agent/agent.toml" ip netns exec "$NS" \
    /usr/bin/time -v "$BIN/op-agent" hook 1000 post-start 2> "$R/time-v.txt" >/dev/null || true
echo "- \`/usr/bin/time -v op-agent hook 1000 post-start\` (fresh veth, full run; cross-check of the wait4 figures above): $(sed -n 's/^\s*Maximum resident set size (kbytes): /peak RSS /p' "$R/time-v.txt") KiB, exit $(sed -n 's/^\s*Exit status: //p' "$R/time-v.txt")."
echo
} >> "$REPORT"
echo "== 5b watch memory ($WATCH_N containers, $WATCH_ROUNDS rounds)" >&2
inns "$OPBENCH" watch-mem "$R" "$WATCH_N" "$WATCH_ROUNDS" >> "$REPORT"
{
echo
} >> "$REPORT"
fi

if want audit; then
    echo "== 6 audit" >&2
    "$OPBENCH" audit-rate "$R/audit-rate" "$APPENDS" "$VROWS" >> "$REPORT"
    echo "Audit work of one hook run, in-process (\`opbench audit-steps\`, same file system):" >> "$REPORT"
    echo >> "$REPORT"
    "$OPBENCH" audit-steps "$R/audit-steps" 200 >> "$REPORT"
    "$OPBENCH" contention "$R/contention" "$CPROCS" "$CAPPENDS" >> "$REPORT"
fi
if want mass; then
echo "== 7 mass repair" >&2
{
echo "### 7. Mass repair: \`op-agent watch\` repairing N containers at once ($MASS_ROUNDS rounds per event and side)"
echo
echo "N managed running containers (PVE-plugged veth pairs, no LXC), \`watch\` running. *ifreload*: every owned \`vi<vmid>\` Port deleted in one ovs-vsctl transaction; time until the last is back with ofport > 0. *veth re-created*: every veth pair deleted first (untimed, until ovs-vswitchd settled: it reconfigures once per burst of link events about its Ports' vanishing devices; its own row), then new \`veth<vmid>i0\` created and plugged like PVE's tap_plug (one batched ovs-vsctl); time from the first new veth until the last container is converged. Reconfigurations: ovs-vswitchd's \`bridge_reconfigure\` coverage count over the event, the event's own link changes and ovs-vsctl transaction included (ifreload: 1 transaction; re-creation: the veth creation's link events and the plug). Per-container: the same binary's \`watch --no-batch\` (or \`OPB_AGENT_B\`)."
echo
echo "| N | event | path | last back p50 ms | max ms | reconfigurations (median) | next_cfg bumps (median) | ovs-vswitchd CPU ms (median) | wrong end states |"
echo "|---|---|---|---|---|---|---|---|---|"
} >> "$REPORT"
for n in $MASS; do
    inns "$OPBENCH" mass "$R" "$n" "$MASS_ROUNDS" >> "$REPORT"
done
{
echo
echo "The floor, without op-agent (\`bench/mass-floor.sh\`): each step done by hand for N devices at once in a namespace and OVS of its own; ms until ovs-vswitchd applied it (cur_cfg), and its reconfigurations."
echo
echo "| N | step | ms until applied | reconfigurations |"
echo "|---|---|---|---|"
} >> "$REPORT"
for n in $MASS; do
    bash bench/mass-floor.sh "$BIN" "$n" >> "$REPORT"
done
echo >> "$REPORT"
fi
echo "Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)." >> "$REPORT"

cat "$REPORT"
