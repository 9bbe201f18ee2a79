#!/bin/sh
# package.sh: build the Debian package into build-pkg/ (prefix /usr) and print its path.
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build-pkg -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
	-DWPE_TESTS=OFF >/dev/null
cmake --build build-pkg -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
(cd build-pkg && cpack -G DEB >/dev/null)
ls "$PWD"/build-pkg/wpe-purged_*.deb
