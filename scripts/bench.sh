#!/bin/sh
# bench.sh: measure durable enqueue throughput beside Redis (AOF, appendfsync always) in
# the same run, and client process time (README figures).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		redis-server redis-tools >/dev/null
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
B=$PWD/build
D=$(mktemp -d /tmp/wpe-bench.XXXXXX)
RPID=""
trap 'kill $DPID $RPID 2>/dev/null; wait $DPID $RPID 2>/dev/null; rm -rf "$D"' EXIT INT TERM
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
for c in 1 8 64; do
	n=$((25600 / c * c))
	ours=$("$B/tests/enqueue-bench" "$D/s.sock" "$c" $((n / c)) 500)
	echo "wpe-purged: $ours"
	ops=$(echo "$ours" | sed -n 's/.*: \([0-9]*\)\/s;.*/\1/p')
	theirs=$(redis-benchmark -s "$D/r.sock" -c "$c" -n "$n" -t set -q 2>/dev/null |
		tr '\r' '\n' | sed -n 's/^SET: \([0-9.]*\) requests per second.*/\1/p' | tail -n 1)
	echo "redis SET:  $theirs/s"
	awk -v a="$ops" -v b="$theirs" -v c="$c" \
		'BEGIN { printf "%d connection(s): wpe-purged / redis = %.2f\n", c, a / b }'
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
echo "$N sequential runs: mean $(( (t1 - t0) / N / 1000 )) us per run"
