#!/bin/sh
# demo.sh: install what is missing, build, and run wpe-purged against the bundled API
# simulator: purges from many "CI jobs" are queued, coalesced and sent within the limits.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
echo "== building"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

B=$PWD/build
D=$(mktemp -d /tmp/wpe-demo.XXXXXX)
INTERVAL=${DEMO_INTERVAL:-10}
SITE_A=294deacc-d8b8-4005-82c4-0727ba8ddde0
SITE_B=3f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9
cleanup() {
	[ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
	[ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null
	rm -rf "$D"
}
trap cleanup EXIT INT TERM

echo "== starting the API simulator (object purges: one per ${INTERVAL}s per install)"
"$B/tests/apisim" --port-file "$D/port" --user demo --password demo-secret \
	--install $SITE_A --install $SITE_B --object-interval "$INTERVAL" \
	--log "$D/api.log" 2>/dev/null &
SPID=$!
while [ ! -s "$D/port" ]; do sleep 0.05; done
PORT=$(cat "$D/port")
printf 'demo:demo-secret\n' >"$D/credentials"
chmod 600 "$D/credentials"
cat >"$D/wpe-purged.conf" <<CONF
[daemon]
socket = $D/wpe-purged.sock
database = $D/queue.sqlite
[api]
base_url = http://127.0.0.1:$PORT/v1
credentials_file = $D/credentials
[limits]
object_interval = $INTERVAL
CONF

echo "== starting wpe-purged (log: $D/daemon.log)"
"$B/wpe-purged" -c "$D/wpe-purged.conf" 2>"$D/daemon.log" &
DPID=$!
export WPE_PURGED_SOCKET="$D/wpe-purged.sock"
CTL="$B/wpe-purgectl"
while ! "$CTL" ping >/dev/null 2>&1; do sleep 0.05; done
"$CTL" ping

echo
echo "== 12 CI jobs deploy at once and each asks for a purge (--wait)"
i=0
for spec in "$SITE_A object" "$SITE_A object" "$SITE_A all" "$SITE_A page" \
    "$SITE_B object" "$SITE_B object" "$SITE_B object" "$SITE_B cdn" \
    "$SITE_A object" "$SITE_B object" "$SITE_A page" "$SITE_B all"; do
	set -- $spec
	i=$((i + 1))
	"$CTL" enqueue "$1" --type "$2" --reason "ci job $i" --wait >"$D/job$i.out" 2>&1 &
	PIDS="${PIDS:-} $!"
done
sleep 0.5
echo "-- what the daemon holds now (wpe-purgectl list):"
"$CTL" list
echo "-- (requests that arrived after a purge of their install had started wait for the"
echo "--  next window: a purge must start after the request to cover it)"
for p in $PIDS; do wait "$p" || true; done
echo "-- the CI jobs' results (all 12 exit 0):"
cat "$D"/job*.out | grep -v queued | sed 's/request [0-9]*: //' | sort | uniq -c

echo
echo "== a second deploy, inside the ${INTERVAL}s object window of $SITE_A"
"$CTL" enqueue $SITE_A --type object --reason "hotfix" --wait >"$D/hotfix.out" 2>&1 &
HOT=$!
"$CTL" enqueue $SITE_A --type object --reason "hotfix 2" >/dev/null
sleep 0.3
echo "-- it waits for the window instead of getting HTTP 429:"
"$CTL" list
wait $HOT || true
cat "$D/hotfix.out"

echo
NREQ=$("$CTL" stats | awk '$1 == "requests" { print $2 }')
echo "== what the API received (simulator log): $(wc -l <"$D/api.log") calls for $NREQ requests"
python3 - "$D/api.log" <<'PY' 2>/dev/null || cat "$D/api.log"
import json, sys
calls = [json.loads(l) for l in open(sys.argv[1])]
t0 = calls[0]["t"]
for c in calls:
    print("  +%6.2fs  %s  %-6s HTTP %d" % (c["t"] - t0, c["install"], c["type"], c["status"]))
PY
echo
echo "== counters (wpe-purgectl stats):"
"$CTL" stats | grep -E '^(requests|coalesced|jobs|done|api_calls|rate_limited) '
