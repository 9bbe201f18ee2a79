#!/bin/sh
# lint.sh: static analysis of the project's code: cppcheck and clang-tidy (.clang-tidy).
# Both must report nothing.
set -eu
cd "$(dirname "$0")/.."
[ -f build/compile_commands.json ] || cmake -S . -B build >/dev/null
echo "== cppcheck"
cppcheck --enable=warning,performance,portability --std=c11 --inline-suppr \
	--error-exitcode=1 -q -D_GNU_SOURCE -I common -I daemon \
	--include=/usr/include/x86_64-linux-gnu/sys/queue.h \
	--include=/usr/include/json-c/json_object.h \
	--suppress=missingIncludeSystem \
	common daemon client tests/sim tests/fuzz tests/bench
echo "cppcheck: no findings"
echo "== clang-tidy"
files=$(git ls-files 'common/*.c' 'daemon/*.c' 'client/*.c' 'tests/sim/*.c')
out=$(clang-tidy -p build --quiet $files 2>/dev/null || true)
if printf '%s\n' "$out" | grep -E "(warning|error):" >/dev/null; then
	printf '%s\n' "$out"
	echo "clang-tidy: findings above"
	exit 1
fi
echo "clang-tidy: no findings"
