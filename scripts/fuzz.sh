#!/bin/sh
# fuzz.sh [SECONDS]: build the libFuzzer harnesses and run each for SECONDS (default 30).
set -eu
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-30}
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DWPE_FUZZ=ON \
	>/dev/null
cmake --build build-fuzz -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
export ASAN_OPTIONS=detect_leaks=1
for f in proto config retry_after response tokens catalog; do
	work=$(mktemp -d /tmp/wpe-fuzz-$f.XXXXXX)
	# New inputs go to a scratch corpus; the seeds in the tree are only read.
	if ! build-fuzz/tests/fuzz/fuzz_$f -max_total_time="$SECONDS_EACH" -max_len=4096 \
	    -timeout=10 -print_final_stats=1 -artifact_prefix="$work/" "$work" \
	    tests/fuzz/corpus/$f >"$work.log" 2>&1; then
		tail -40 "$work.log"
		echo "fuzz_$f: FAILED (crash input in $work)"
		exit 1
	fi
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work.log")
	cov=$(grep -o 'cov: [0-9]*' "$work.log" | tail -1)
	echo "fuzz_$f: ${runs:-?} inputs in ${SECONDS_EACH}s, $cov, no crash"
	rm -rf "$work" "$work.log"
done
