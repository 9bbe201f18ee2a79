#!/bin/sh
# test.sh: install what is missing, build with gcc and clang (-Werror) and the Debian
# package, run static analysis, every test with the gcc build, every test again under
# ASan + UBSan (clang), the integration tests with the daemon under Valgrind memcheck,
# the package under a real systemd (systemd-nspawn), and bounded fuzzing.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
JOBS=$(nproc 2>/dev/null || echo 2)
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
VALGRIND_TESTS=${VALGRIND_TESTS:-integration_}

echo "== build (gcc, -Wall -Wextra -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc >/dev/null
cmake --build build -j"$JOBS"

echo "== build (clang, -Wall -Wextra -Werror, ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	-DWPE_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$JOBS"

echo "== Debian package (cpack -G DEB, prefix /usr)"
WPE_DEB=$(sh scripts/package.sh)
export WPE_DEB
echo "$WPE_DEB"

echo "== static analysis"
sh scripts/lint.sh

# Two at a time: each suite uses its own socket, database, port and simulator.
echo "== tests (gcc build)"
(cd build && ctest --output-on-failure -j"$JOBS")

echo "== tests (clang ASan + UBSan build)"
echo "(test_security.ClockJumps is skipped here: libfaketime cannot be preloaded into an"
echo " ASan binary; it runs in the gcc pass above and under Valgrind below)"
(
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	cd build-asan && ctest --output-on-failure -j"$JOBS"
)

echo "== integration tests with the daemon under Valgrind memcheck"
(
	export WPE_DAEMON_WRAPPER="valgrind -q --error-exitcode=99 --leak-check=full \
--errors-for-leak-kinds=definite --show-leak-kinds=definite"
	cd build && ctest --output-on-failure -j"$JOBS" -R "$VALGRIND_TESTS"
)

echo "== the package under a real systemd (systemd-nspawn boots Debian 12)"
if [ "${WPE_SYSTEM_TEST:-1}" = 0 ]; then
	echo "skipped: WPE_SYSTEM_TEST=0 (scripts/fresh-check.sh sets it: no nspawn in nspawn)"
else
	sh tests/system/run.sh "$WPE_DEB" build/tests/apisim
fi

echo "== fuzzing, ${FUZZ_SECONDS}s per harness"
sh scripts/fuzz.sh "$FUZZ_SECONDS"
