#!/bin/sh
# bench.sh: measure durable enqueue throughput and client process time (README figures).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
B=$PWD/build
D=$(mktemp -d /tmp/wpe-bench.XXXXXX)
trap 'kill $DPID 2>/dev/null; wait $DPID 2>/dev/null; rm -rf "$D"' EXIT INT TERM
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

echo "== durable enqueues (SQLite WAL, synchronous=FULL, group commit), $(nproc) cores"
for c in 1 8 64; do
	"$B/tests/enqueue-bench" "$D/s.sock" "$c" $((25600 / c)) 500
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
