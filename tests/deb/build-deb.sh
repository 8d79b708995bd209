#!/bin/sh
# Builds op-agent_<version>_amd64.deb with `dpkg-buildpackage -us -uc -b` from a staged copy of
# the work tree (tracked and untracked-but-not-ignored files), so that the build never writes
# into the repository's parent folder. The release build reuses the repository's target/.
#
#   tests/deb/build-deb.sh [--version V] [--out DIR]
#     --version V  build with this Debian version instead of debian/changelog's (adds an entry
#                  on top, in the staged copy only): used to make a lower version to upgrade from
#     --out DIR    where the .deb goes (default target/deb)
# Prints the path of the .deb on the last line.
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=
OUT=$REPO/target/deb
while [ $# -gt 0 ]; do
	case "$1" in
	--version) VERSION=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	*) echo "usage: $0 [--version V] [--out DIR]" >&2; exit 64 ;;
	esac
done
for tool in dpkg-buildpackage dh cargo; do
	command -v "$tool" >/dev/null || {
		echo "build-deb: $tool not found (apt-get install --no-install-recommends dpkg-dev debhelper; cargo from rustup)" >&2
		exit 69
	}
done

STAGE=$REPO/target/deb/stage
SRC=$STAGE/op-agent
rm -rf "$STAGE"
mkdir -p "$SRC" "$OUT"
cd "$REPO"
# Copy with tar (keeps modes); only files that exist (a deleted but tracked file is skipped).
git ls-files -z --cached --others --exclude-standard \
	| xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh \
	| tar --null -T - -cf - | tar -C "$SRC" -xf -

if [ -n "$VERSION" ]; then
	{
		printf 'op-agent (%s) unstable; urgency=medium\n\n  * Test build.\n\n' "$VERSION"
		# Same date as the real top entry: dpkg-buildpackage exports SOURCE_DATE_EPOCH from it,
		# and a different value makes cargo rebuild C dependencies (cc reruns on env changes).
		printf ' -- op-agent developers <op-agent@example.org>  %s\n\n' \
			"$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Date)"
		cat "$SRC/debian/changelog"
	} > "$SRC/debian/changelog.new"
	mv "$SRC/debian/changelog.new" "$SRC/debian/changelog"
fi
V=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version)
ARCH=$(dpkg --print-architecture)

cd "$SRC"
CARGO_TARGET_DIR=$REPO/target dpkg-buildpackage -us -uc -b >"$STAGE/build.log" 2>&1 || {
	tail -40 "$STAGE/build.log" >&2
	echo "build-deb: dpkg-buildpackage failed, full log: $STAGE/build.log" >&2
	exit 1
}
DEB=op-agent_${V}_${ARCH}.deb
mv -f "$STAGE/$DEB" "$OUT/$DEB"
mv -f "$STAGE/op-agent_${V}_${ARCH}.buildinfo" "$STAGE/op-agent_${V}_${ARCH}.changes" "$OUT/" 2>/dev/null || true
echo "$OUT/$DEB"
