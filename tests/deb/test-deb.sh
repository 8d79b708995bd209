#!/bin/bash
# make test-deb: build the package (and a lower version of it), run lintian (errors and
# warnings fail), then in a throwaway Debian root of SUITE ($1: bookworm, Debian 12, the
# default; trixie, Debian 13, what Proxmox VE 9 is built on) made with debootstrap (cached in
# $OP_AGENT_TEST_CACHE, default /var/cache/op-agent-test) install it, check files, modes and
# the snippet, upgrade from the lower version, remove, purge. Needs root. Every check that
# fails prints FAIL and the script exits 1; the closing line is "N passed, N failed".
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "test-deb: must run as root (debootstrap, chroot)" >&2; exit 1; }
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${OP_AGENT_TEST_CACHE:-/var/cache/op-agent-test}
MIRROR=${OP_AGENT_TEST_MIRROR:-http://deb.debian.org/debian}
SUITE=${1:-bookworm}
case "$SUITE" in
bookworm) DEBIAN="Debian 12" ;;
trixie) DEBIAN="Debian 13" ;;
*) echo "test-deb: unknown suite $SUITE (bookworm or trixie)" >&2; exit 1 ;;
esac
BASE=$CACHE/$SUITE-minbase.tar.gz     # debootstrap --variant=minbase $SUITE
ROOTFS=$CACHE/$SUITE-ovs.tar.gz       # + openvswitch-switch and its dependencies
PASS=0 FAILN=0
ok()   { PASS=$((PASS+1)); echo "ok   $*"; }
fail() { FAILN=$((FAILN+1)); echo "FAIL $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

for t in debootstrap lintian dpkg-buildpackage dh python3; do
	command -v $t >/dev/null || { echo "test-deb: $t missing: apt-get install --no-install-recommends debootstrap lintian dpkg-dev debhelper" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/op-agent-test-deb.XXXXXX)
CH=$WORK/root
MOUNTED=
cleanup() {
	if [ -n "$MOUNTED" ]; then umount -l "$CH/proc" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

# --- the packages --------------------------------------------------------------------------
V=$(dpkg-parsechangelog -l "$REPO/debian/changelog" -S Version)
OLDV="${V}~test0"          # sorts lower than $V (dpkg --compare-versions)
dpkg --compare-versions "$OLDV" lt "$V" || { echo "test-deb: $OLDV is not lower than $V" >&2; exit 1; }
# OLD is built first so the final stage (and the build cache) is the real one.
OLD=$("$REPO/tests/deb/build-deb.sh" --version "$OLDV" --out "$WORK/old" | tail -1)
NEW=$("$REPO/tests/deb/build-deb.sh" | tail -1)
check "built $(basename "$NEW")" test -s "$NEW"
check "built $(basename "$OLD")" test -s "$OLD"

LINT=$(lintian --fail-on error,warning "$NEW" 2>&1 | grep -v '^running with root privileges' || true)
if lintian --fail-on error,warning "$NEW" >/dev/null 2>&1; then ok "lintian: no errors, no warnings"; else fail "lintian: $LINT"; fi
[ -z "$LINT" ] || echo "$LINT" | sed 's/^/     lintian: /'

# --- the Debian root of $SUITE --------------------------------------------------------------
mkdir -p "$CACHE"
if [ ! -s "$ROOTFS" ]; then
	if [ ! -s "$BASE" ]; then
		echo "test-deb: debootstrap $SUITE into $BASE (once)"
		debootstrap --variant=minbase "$SUITE" "$WORK/base" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
			|| { tail -20 "$WORK/debootstrap.log"; exit 1; }
		tar -C "$WORK/base" -czf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
		rm -rf "$WORK/base"
	fi
	echo "test-deb: adding openvswitch-switch to the cached root $ROOTFS (once)"
	mkdir -p "$WORK/ovs"; tar -C "$WORK/ovs" -xzf "$BASE"
	printf '#!/bin/sh\nexit 101\n' > "$WORK/ovs/usr/sbin/policy-rc.d"; chmod 0755 "$WORK/ovs/usr/sbin/policy-rc.d"
	chroot "$WORK/ovs" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openvswitch-switch && apt-get clean' \
		>"$WORK/ovs.log" 2>&1 || { tail -20 "$WORK/ovs.log"; exit 1; }
	tar -C "$WORK/ovs" -czf "$ROOTFS.tmp" . && mv "$ROOTFS.tmp" "$ROOTFS"
	rm -rf "$WORK/ovs"
fi
mkdir -p "$CH"; tar -C "$CH" -xzf "$ROOTFS"
mount -t proc proc "$CH/proc"; MOUNTED=1
mkdir -p "$CH/var/lib/vz" "$CH/etc/pve/lxc" "$CH/tmp/debs"   # a PVE host has /var/lib/vz
cp "$OLD" "$NEW" "$CH/tmp/debs/"
IN() { chroot "$CH" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"; }
mode() { stat -c %a "$CH$1"; }
owner() { stat -c %U:%G "$CH$1"; }
snippet_is_new() { cmp -s "$CH/var/lib/vz/snippets/op-hook" "$REPO/hookscript/op-hook"; }

# --- install the lower version, then upgrade -------------------------------------------------
check "install $OLDV" IN dpkg -i "/tmp/debs/$(basename "$OLD")"
check "snippet installed by $OLDV" test -x "$CH/var/lib/vz/snippets/op-hook"
UPGRADE_OUT=$(IN dpkg -i "/tmp/debs/$(basename "$NEW")" 2>&1) && ok "upgrade $OLDV -> $V" || fail "upgrade $OLDV -> $V: $UPGRADE_OUT"
check "no 'not a Proxmox VE node' line on a PVE node" sh -c "! printf '%s' \"\$1\" | grep -q 'not a Proxmox VE node'" _ "$UPGRADE_OUT"
check "installed version is $V" test "$(IN dpkg-query -W -f '${Version}' op-agent)" = "$V"

# --- files and modes -------------------------------------------------------------------------
check "/usr/bin/op-agent 755 root:root" test "$(mode /usr/bin/op-agent) $(owner /usr/bin/op-agent)" = "755 root:root"
check "op-agent --version runs in $DEBIAN ($SUITE)" IN /usr/bin/op-agent --version
check "/usr/share/op-agent/op-hook 755" test "$(mode /usr/share/op-agent/op-hook)" = 755
check "snippet /var/lib/vz/snippets/op-hook 755" test "$(mode /var/lib/vz/snippets/op-hook)" = 755
check "snippet equals hookscript/op-hook" snippet_is_new
check "/var/lib/op-agent 700" test "$(mode /var/lib/op-agent)" = 700
check "/etc/op-agent/agent.toml is a conffile" grep -qx /etc/op-agent/agent.toml "$CH/var/lib/dpkg/info/op-agent.conffiles"
check "agent.toml has every key commented" sh -c "! grep -Eq '^[a-z_]+ *=' '$CH/etc/op-agent/agent.toml'"
check "agent.toml loads (config check)" IN /usr/bin/op-agent config check
check "containers/ example" test -f "$CH/etc/op-agent/containers/vmid.toml.example"
check "op-agent.service installed" test -f "$CH/lib/systemd/system/op-agent.service"
check "op-agent.service enabled" test -L "$CH/etc/systemd/system/multi-user.target.wants/op-agent.service"
check "service After=openvswitch-switch.service" grep -q '^After=openvswitch-switch.service' "$CH/lib/systemd/system/op-agent.service"
check "man page op-agent(8)" test -f "$CH/usr/share/man/man8/op-agent.8.gz"
check "man page op-agent.toml(5)" test -f "$CH/usr/share/man/man5/op-agent.toml.5.gz"
check "no man page for clap's help subcommand" sh -c "! ls '$CH/usr/share/man/man8/' | grep -q -- '-help\.8'"
check "README under /usr/share/doc/op-agent" sh -c "ls '$CH/usr/share/doc/op-agent/' | grep -q '^README'"
check "journal catalog installed" test -f "$CH/usr/lib/systemd/catalog/op-agent.catalog"
check "tmpfiles.d entry for /run/op-agent" grep -q '^d /run/op-agent ' "$CH/usr/lib/tmpfiles.d/op-agent.conf"
check "service ConditionPathIsDirectory=/etc/pve" grep -q '^ConditionPathIsDirectory=/etc/pve' "$CH/lib/systemd/system/op-agent.service"
check "bash completion" test -f "$CH/usr/share/bash-completion/completions/op-agent"
check "zsh completion" test -f "$CH/usr/share/zsh/vendor-completions/_op-agent"
check "Depends has openvswitch-switch" sh -c "dpkg-deb -f '$NEW' Depends | grep -q openvswitch-switch"

# --- an admin's edit of the snippet survives an upgrade and a purge ----------------------------
echo "# local edit" >> "$CH/var/lib/vz/snippets/op-hook"
check "reinstall keeps a locally changed snippet" sh -c "chroot '$CH' dpkg -i /tmp/debs/$(basename "$NEW") >/dev/null 2>&1 && grep -q '# local edit' '$CH/var/lib/vz/snippets/op-hook'"
cp "$REPO/hookscript/op-hook" "$CH/var/lib/vz/snippets/op-hook"

# --- remove, purge ----------------------------------------------------------------------------
echo "secret" > "$CH/var/lib/op-agent/audit.db"
check "audit init-key writes the key beside the log" sh -c "chroot '$CH' /usr/bin/op-agent audit init-key >/dev/null && test -f '$CH/var/lib/op-agent/audit.key' && test ! -e '$CH/etc/op-agent/audit.key'"
echo "old" > "$CH/etc/op-agent/audit.key"   # an earlier version's key, never moved
# A running managed container (its lxc monitor's abstract command socket, bound in the network
# namespace the chroot shares): prerm names it and the one command that releases it.
printf 'hookscript: local:snippets/op-hook\nnet0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01\n' > "$CH/etc/pve/lxc/100.conf"
printf 'network_type = "bridge"\n' > "$CH/etc/op-agent/containers/100.toml"
python3 -c 'import socket,time; s=socket.socket(socket.AF_UNIX); s.bind("\0/var/lib/lxc/100/command"); s.listen(1); time.sleep(60)' &
SOCK=$!
sleep 0.5
REMOVE_OUT=$(IN dpkg -r op-agent 2>&1) && ok "remove" || fail "remove: $REMOVE_OUT"
kill "$SOCK" 2>/dev/null || true
wait "$SOCK" 2>/dev/null || true
check "prerm names the running managed container" sh -c "printf '%s\n' \"\$1\" | grep -qx '  100'" _ "$REMOVE_OUT"
check "prerm prints the command that releases it" sh -c "printf '%s' \"\$1\" | grep -q 'op-agent release --all'" _ "$REMOVE_OUT"
rm -f "$CH/etc/pve/lxc/100.conf" "$CH/etc/op-agent/containers/100.toml"
check "binary gone after remove" test ! -e "$CH/usr/bin/op-agent"
check "conffile kept after remove" test -f "$CH/etc/op-agent/agent.toml"
check "audit log kept after remove" test -f "$CH/var/lib/op-agent/audit.db"
PURGE_OUT=$(IN dpkg -P op-agent 2>&1) && ok "purge" || fail "purge: $PURGE_OUT"
check "purge says the audit log is deleted" sh -c "printf '%s' \"\$1\" | grep -q 'deleting the audit log'" _ "$PURGE_OUT"
check "/var/lib/op-agent gone after purge" test ! -e "$CH/var/lib/op-agent"
check "no audit key left after purge" sh -c "test ! -e '$CH/etc/op-agent/audit.key' && test ! -e '$CH/etc/op-agent/audit.key.lock'"
check "/etc/op-agent gone after purge" test ! -e "$CH/etc/op-agent/agent.toml"
check "unchanged snippet removed by purge" test ! -e "$CH/var/lib/vz/snippets/op-hook"

# A changed snippet is left by purge.
IN dpkg -i "/tmp/debs/$(basename "$NEW")" >/dev/null 2>&1
echo "# local edit" >> "$CH/var/lib/vz/snippets/op-hook"
IN dpkg -P op-agent >/dev/null 2>&1
check "changed snippet kept by purge" grep -q '# local edit' "$CH/var/lib/vz/snippets/op-hook"

# Without /var/lib/vz and /etc/pve (not a PVE host) nothing is created there, and one line
# says so.
rm -rf "$CH/var/lib/vz" "$CH/etc/pve"
NOPVE_OUT=$(IN dpkg -i "/tmp/debs/$(basename "$NEW")" 2>&1) && ok "install without /var/lib/vz" || fail "install without /var/lib/vz: $NOPVE_OUT"
check "one line says it is not a Proxmox VE node" test "$(printf '%s\n' "$NOPVE_OUT" | grep -c 'not a Proxmox VE node')" = 1
check "no /var/lib/vz created" test ! -e "$CH/var/lib/vz"
IN dpkg -P op-agent >/dev/null 2>&1 || true

echo "test-deb ($DEBIAN, $SUITE): $PASS passed, $FAILN failed"
[ "$FAILN" = 0 ]
