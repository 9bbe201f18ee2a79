#!/bin/sh
# soak.sh: run the chaos test (tests/integration/test_chaos.py) again and again with new
# seeds for MINUTES (default 30); stop at the first failure and print its seed and how to
# replay it. One run at a time (the machine's cores are shared).
#
#   sh scripts/soak.sh [MINUTES]
#
# Environment: WPE_BUILD (default: build/; e.g. build-asan for the ASan + UBSan build),
# CHAOS_SECONDS per run (default 120), CHAOS_EXCLUDE (see test_chaos.py). A failing
# run's output is kept in the directory printed at the start; the failed run's daemon
# log, simulator log and database stay in the /tmp/wpe-it-* directory it names.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
MINUTES=${1:-30}
BUILD=${WPE_BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PER=${CHAOS_SECONDS:-120}
if [ ! -x "$BUILD/wpe-purged" ] || [ ! -x "$BUILD/tests/apisim" ]; then
	echo "soak: $BUILD has no wpe-purged or tests/apisim: build first" \
		"(cmake -S . -B build && cmake --build build) or set WPE_BUILD" >&2
	exit 2
fi
OUT=$(mktemp -d /tmp/wpe-soak-XXXXXX)
echo "soak: $MINUTES min of chaos runs of up to $PER s against $BUILD (output: $OUT)"

end=$(($(date +%s) + MINUTES * 60))
runs=0
ops=0
reqs=0
seeds=""
while :; do
	left=$((end - $(date +%s)))
	[ "$left" -gt 15 ] || break
	secs=$PER
	[ "$secs" -le "$left" ] || secs=$left
	seed=$(($(od -An -N4 -tu4 /dev/urandom | tr -d ' \n') % 2147483646 + 1))
	runs=$((runs + 1))
	log=$OUT/run-$runs-seed-$seed.log
	if ! (cd tests/integration && CHAOS_SEED=$seed CHAOS_SECONDS=$secs WPE_BUILD=$BUILD \
		PYTHONDONTWRITEBYTECODE=1 python3 -m unittest -v test_chaos) >"$log" 2>&1; then
		grep -v ' debug: ' "$log" | tail -n 200
		echo
		echo "soak: run $runs FAILED, seed $seed ($log)"
		excl=""
		[ -z "${CHAOS_EXCLUDE:-}" ] || excl="CHAOS_EXCLUDE=\"$CHAOS_EXCLUDE\" "
		echo "soak: replay: (cd tests/integration && CHAOS_SEED=$seed CHAOS_SECONDS=$secs" \
			"${excl}WPE_BUILD=$BUILD python3 -m unittest -v test_chaos)"
		echo "soak: $((runs - 1)) clean run(s) before it"
		exit 1
	fi
	line=$(grep '^chaos: seed .* | ops: ' "$log" | tail -n 1)
	echo "$line"
	# ops: the operations clients sent; requests: acknowledged requests checked
	n=$(printf '%s\n' "$line" | sed -n 's/.*| ops: \([^|]*\)|.*/\1/p' | tr ',' '\n' |
		awk '$1 != "connect" && $1 != "skipped" { s += $NF } END { print s + 0 }')
	r=$(printf '%s\n' "$line" | sed -n 's/.*requests checked: \([0-9]*\).*/\1/p')
	ops=$((ops + n))
	reqs=$((reqs + ${r:-0}))
	seeds="$seeds $seed"
	rm -f "$log"
done
echo "soak: $runs run(s) clean in $MINUTES min: $ops client operations, $reqs acknowledged" \
	"requests checked; seeds:$seeds"
rmdir "$OUT" 2>/dev/null || true
