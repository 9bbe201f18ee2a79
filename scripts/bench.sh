#!/bin/sh
# bench.sh: measure durable enqueue throughput beside Redis (AOF, appendfsync always) in
# the same run, client process time, and issue 10's scale figures (README figures).
#
#   sh scripts/bench.sh [all|redis|scale]        (default: all)
#
# BUILD=DIR measures the build in DIR as it is (e.g. an older commit's build, for a
# before/after table); without BUILD, ./build is configured and built here. The client
# programs (tests/bench/*.c) are always compiled from this tree into a temp dir, so two
# builds are measured with the same clients. Everything runs on private temp paths,
# sockets and loopback ports, and is stopped before the script exits.
set -eu
cd "$(dirname "$0")/.."
MODE=${1:-all}
case $MODE in
all | redis | scale) ;;
*)
	echo "usage: [BUILD=DIR] sh scripts/bench.sh [all|redis|scale]" >&2
	exit 2
	;;
esac
sh scripts/deps.sh
need=""
if [ "$MODE" != scale ]; then
	command -v redis-server >/dev/null || need="$need redis-server"
	command -v redis-benchmark >/dev/null || need="$need redis-tools"
fi
if [ "$MODE" != redis ]; then
	command -v strace >/dev/null || need="$need strace"       # idle wakeups
	command -v setpriv >/dev/null || need="$need util-linux"  # the second user
fi
# shellcheck disable=SC2086
[ -z "$need" ] || sh scripts/deps.sh $need
if [ -z "${BUILD:-}" ]; then
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
	BUILD=build
fi
B=$(cd "$BUILD" && pwd)
for f in wpe-purged wpe-purgectl tests/apisim; do
	[ -x "$B/$f" ] || { echo "bench.sh: $B/$f missing: not a build directory?" >&2; exit 2; }
done
D=$(mktemp -d /tmp/wpe-bench.XXXXXX)
DPID=""
RPID=""
# (set -e holds in the trap too: an empty kill must not turn a good run into exit 2)
trap 'kill $DPID $RPID 2>/dev/null || true; wait $DPID $RPID 2>/dev/null || true; rm -rf "$D"' \
	EXIT INT TERM
mkdir "$D/tools"
${CC:-cc} -O2 -pthread -o "$D/tools/enqueue-bench" tests/bench/enqueue-bench.c
${CC:-cc} -O2 -o "$D/tools/latency-bench" tests/bench/latency-bench.c
echo "== measuring $B ($(nproc) cores)"

if [ "$MODE" != scale ]; then
	printf 'bench:bench\n' >"$D/credentials"
	chmod 600 "$D/credentials"
	cat >"$D/c.conf" <<CONF
[daemon]
socket = $D/s.sock
database = $D/queue.sqlite
log_level = warning
[api]
base_url = http://127.0.0.1:9/v1
credentials_file = $D/credentials
CONF
	"$B/wpe-purged" -c "$D/c.conf" 2>"$D/log" &
	DPID=$!
	export WPE_PURGED_SOCKET="$D/s.sock"
	while ! "$B/wpe-purgectl" ping >/dev/null 2>&1; do sleep 0.05; done
	"$B/wpe-purgectl" pause >/dev/null   # measure the queue, not the (absent) API

	# Redis with every write fsynced before it answers: the same durability promise.
	redis-server --port 0 --unixsocket "$D/r.sock" --dir "$D" --save "" --appendonly yes \
		--appendfsync always --logfile "$D/redis.log" &
	RPID=$!
	while ! redis-cli -s "$D/r.sock" ping >/dev/null 2>&1; do sleep 0.05; done

	echo "== durable enqueues (SQLite WAL, synchronous=FULL, group commit) beside Redis SET"
	echo "   (appendonly yes, appendfsync always), same machine, same run, $(nproc) cores"
	# Three rounds, ours and Redis's alternating, so that a noisy moment on a shared
	# machine shows as a spread rather than as the figure; the median ratio is printed.
	ROUNDS=${ROUNDS:-3}
	for c in 1 8 64; do
		case $c in 1) n=25600 ;; 8) n=51200 ;; *) n=128000 ;; esac
		ratios=""
		r=1
		while [ $r -le "$ROUNDS" ]; do
			ours=$("$D/tools/enqueue-bench" "$D/s.sock" "$c" $((n / c)) 500)
			echo "wpe-purged: $ours"
			ops=$(echo "$ours" | sed -n 's/.*: \([0-9]*\)\/s;.*/\1/p')
			theirs=$(redis-benchmark -s "$D/r.sock" -c "$c" -n "$n" -t set -q \
				2>/dev/null | tr '\r' '\n' |
				sed -n 's/^SET: \([0-9.]*\) requests per second.*/\1/p' | tail -n 1)
			echo "redis SET:  $theirs/s"
			ratios="$ratios $(awk -v a="$ops" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')"
			r=$((r + 1))
		done
		echo "$ratios" | tr ' ' '\n' | sed '/^$/d' | sort -n | awk -v c="$c" '
			{ v[NR] = $1; s = s (NR > 1 ? " " : "") $1 }
			END { printf "%d connection(s): wpe-purged / redis = %s (median of %s)\n",
			    c, v[int((NR + 1) / 2)], s }'
	done
	"$B/wpe-purgectl" stats | grep -E '^(requests|commits) '

	echo "== wpe-purgectl enqueue as a whole process (fork+exec, connect, commit, answer)"
	N=200
	t0=$(date +%s%N)
	i=0
	while [ $i -lt $N ]; do
		"$B/wpe-purgectl" enqueue 294deacc-d8b8-4005-82c4-0727ba8ddde0 -t page >/dev/null
		i=$((i + 1))
	done
	t1=$(date +%s%N)
	echo "$N sequential runs: mean $(((t1 - t0) / N / 1000)) us per run"
	# the scale figures want a quiet machine
	kill $DPID $RPID
	wait $DPID $RPID 2>/dev/null || true
	DPID=""
	RPID=""
	unset WPE_PURGED_SOCKET
fi

if [ "$MODE" != redis ]; then
	# Each figure of issue 10's "Figures to reach", printed with how it was measured;
	# see tests/bench/scale.py. About 1.5 minutes on the current code, longer on code that
	# does not scale (each measurement is capped).
	python3 tests/bench/scale.py --build "$B" --tools "$D/tools"
fi
