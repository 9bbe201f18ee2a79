#!/bin/sh
# fresh-check.sh: run the README's test command on a fresh Debian 12 (a minimal
# debootstrap root, in a throwaway overlay under systemd-nspawn), from a clean clone of
# the committed tree: proves scripts/test.sh installs everything it needs.
#
#   sh scripts/fresh-check.sh            # the whole test command
#   sh scripts/fresh-check.sh -- CMD...  # another command in the fresh clone instead
#
# The root file system is cached in $WPE_FRESH_ROOT (default /var/cache/wpe-fresh/root)
# and rebuilt when missing; every run starts from it unchanged (--volatile=overlay).
set -eu
cd "$(dirname "$0")/.."
ROOT=${WPE_FRESH_ROOT:-/var/cache/wpe-fresh/root}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

need=""
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v systemd-nspawn >/dev/null || need="$need systemd-container"
if [ -n "$need" ]; then
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
fi
if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
	mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null |
		head -n 1)
	echo "== building a minimal Debian 12 root in $ROOT (${mirror:-default mirror})"
	$SUDO mkdir -p "$(dirname "$ROOT")"
	$SUDO debootstrap --variant=minbase bookworm "$ROOT" ${mirror:+"$mirror"} >/dev/null
fi

work=$(mktemp -d /tmp/wpe-fresh.XXXXXX)
trap '$SUDO rm -rf "$work"' EXIT
git clone -q --no-local . "$work/src"
echo "== fresh clone of $(git rev-parse --short HEAD) in a fresh Debian 12"
if [ "${1:-}" = "--" ]; then
	shift
	cmd="$*"
else
	cmd="sh scripts/test.sh"
fi
# The host's network (for apt), a private /tmp, root as in CI, no standard input.
$SUDO env SYSTEMD_NSPAWN_TMPFS_TMP=1 systemd-nspawn -q -D "$ROOT" --register=no --keep-unit --volatile=overlay \
	--bind="$work/src:/src" --chdir=/src --setenv=CI=true --setenv=WPE_SYSTEM_TEST=0 \
	--rlimit=RLIMIT_NOFILE="$(ulimit -Sn):$(ulimit -Hn)" \
	-- /bin/sh -c "$cmd" </dev/null
