#!/bin/sh
# test.sh: install what is missing, build with gcc and clang (-Werror), run every test,
# then run the whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
JOBS=$(nproc 2>/dev/null || echo 2)

echo "== build (gcc, -Wall -Wextra -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc >/dev/null
cmake --build build -j"$JOBS"

echo "== build (clang, -Wall -Wextra -Werror, ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	-DWPE_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$JOBS"

echo "== tests (gcc build)"
(cd build && ctest --output-on-failure)

echo "== tests (clang ASan + UBSan build)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure)
