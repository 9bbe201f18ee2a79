#!/bin/sh
# deps.sh [PKG...]: install the Debian packages wpe-purged needs to build, test and run
# (or, given names, those packages: the benchmarks' extra tools), the missing ones only.
set -eu
# Besides the obvious: file (cpack's shlibdeps runs it), git (lint.sh lists the sources
# with git ls-files), man-db (systemd-analyze verify runs man for Documentation=),
# debootstrap and systemd-container (tests/system boots a real systemd in a container),
# prometheus (its promtool checks GET /metrics in tests/integration/test_http.py).
[ $# -gt 0 ] && PKGS="$*" || PKGS="build-essential cmake pkg-config clang libevent-dev libcurl4-openssl-dev
libjson-c-dev libsqlite3-dev libssl-dev openssl curl prometheus libsystemd-dev libinih-dev libcmocka-dev python3 sqlite3
faketime util-linux valgrind cppcheck clang-tidy libclang-rt-14-dev debootstrap
systemd-container
scdoc dpkg-dev file git man-db bash-completion systemd"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "== installing:$missing"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		$missing >/dev/null
fi
