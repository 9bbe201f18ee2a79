#!/bin/sh
# run.sh: the package under a real systemd. Boots Debian 12 in systemd-nspawn (PID 1 is
# systemd), installs the .deb built from this tree and walks the user's path end to end
# (tests/system/in-container.sh), then prints its results. Exit 0 only if all passed.
#
#   sh tests/system/run.sh PACKAGE.deb APISIM-BINARY
#
# The root file system (debootstrap minbase + systemd + what the package depends on) is
# cached in $WPE_SYSTEM_CACHE (default /var/cache/wpe-purged-system), keyed by the
# package's dependencies, and rebuilt when missing. Every boot starts from it unchanged
# (--volatile=overlay). Recipe: ../shared/reference/systemd-nspawn.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
deb=$(readlink -f "$1")
sim=$(readlink -f "$2")
cache=${WPE_SYSTEM_CACHE:-/var/cache/wpe-purged-system}
t0=$(date +%s)

need=""
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v systemd-nspawn >/dev/null || need="$need systemd-container"
if [ -n "$need" ]; then
	apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need \
		>/dev/null
fi

# What the package needs from Debian, plus what the test itself uses.
deps=$(dpkg-deb -f "$deb" Depends | sed 's/([^)]*)//g; s/,/ /g; s/|[^,]*//g')
extra="systemd dbus curl procps passwd util-linux"
key=$(printf '%s %s\n' "$deps" "$extra" | tr ' ' '\n' | sort -u | tr '\n' ' ' |
	md5sum | cut -c1-12)
root="$cache/root-$key"
if [ ! -x "$root/usr/bin/systemctl" ] || [ ! -e "$root/.complete" ]; then
	echo "== building the container root $root (cached for later runs)"
	rm -rf "$root"
	mkdir -p "$cache"
	mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null |
		head -n 1)
	debootstrap --variant=minbase --include=systemd,dbus bookworm "$root" \
		${mirror:+"$mirror"} >/dev/null
	chroot "$root" apt-get update -qq
	# shellcheck disable=SC2086
	chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $deps $extra >/dev/null
	chroot "$root" apt-get clean
	touch "$root/.complete"
	echo "== root built in $(( $(date +%s) - t0 )) s"
fi

work=$(mktemp -d /tmp/wpe-system.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ci" "$work/out" "$work/units"
cp "$deb" "$work/ci/wpe-purged.deb"
cp "$sim" "$work/ci/apisim"
cp "$here/in-container.sh" "$work/ci/run-tests.sh"
chmod 755 "$work/ci/run-tests.sh" "$work/ci/apisim"
# "Upgrade": the same package again as a newer version.
dpkg-deb -R "$deb" "$work/pkg"
sed -i 's/^Version: \(.*\)$/Version: \1+upgrade1/' "$work/pkg/DEBIAN/control"
dpkg-deb -b --root-owner-group "$work/pkg" "$work/ci/wpe-purged-newer.deb" >/dev/null
cat >"$work/units/ci-test.service" <<'EOF'
[Unit]
DefaultDependencies=no
After=multi-user.target
Conflicts=shutdown.target
Before=shutdown.target
[Service]
Type=simple
ExecStart=/ci/run-tests.sh
StandardOutput=journal+console
ExecStopPost=/bin/systemctl poweroff --no-block
EOF

echo "== booting Debian 12 with systemd in a container"
t1=$(date +%s)
rc=0
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 timeout 300 systemd-nspawn -q -D "$root" --boot \
	--register=no --keep-unit --private-network --volatile=overlay \
	--system-call-filter=bpf --capability=CAP_BPF,CAP_PERFMON \
	--bind-ro="$work/ci:/ci" --bind="$work/out:/out" \
	--bind-ro="$work/units:/usr/local/lib/systemd/system" \
	-- systemd.wants=ci-test.service </dev/null >"$work/console.log" 2>&1 || rc=$?
if [ ! -s "$work/out/results" ]; then
	echo "the container produced no results (systemd-nspawn exit $rc); its console:"
	tail -n 60 "$work/console.log"
	exit 1
fi
cat "$work/out/results"
echo "== boot, tests and power-off: $(( $(date +%s) - t1 )) s; whole run $(( $(date +%s) - t0 )) s"
grep -q ' 0 failed$' "$work/out/summary" 2>/dev/null || {
	[ -s "$work/out/journal" ] && { echo "--- journal (tail)"; tail -n 80 "$work/out/journal"; }
	exit 1
}
cat "$work/out/summary"
