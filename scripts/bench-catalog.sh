#!/bin/sh
# bench-catalog.sh: time to read an N-install catalog (default 5,000) from the simulator,
# and the daemon's RSS with an empty account vs with it. BUILD=dir for another build.
set -eu
cd "$(dirname "$0")/.."
B=${BUILD:-build}
N=${1:-5000}
run() {
	d=$(mktemp -d); n=$1
	printf 'u:p\n' >"$d/cred"; chmod 600 "$d/cred"
	"$B/tests/apisim" --port-file "$d/port" --user u --password p --installs "$n" 2>/dev/null &
	sp=$!
	while [ ! -s "$d/port" ]; do sleep 0.05; done
	printf '[daemon]\nsocket = %s/s\ndatabase = %s/q.sqlite\n[api]\nbase_url = http://127.0.0.1:%s/v1\ncredentials_file = %s/cred\n' \
	    "$d" "$d" "$(cat "$d/port")" "$d" >"$d/conf"
	"$B/wpe-purged" -c "$d/conf" 2>"$d/log" &
	dp=$!
	until grep -q "installs catalog: [0-9]* installs" "$d/log"; do sleep 0.05; done
	sleep 0.2
	rss=$(awk '/VmRSS/ {print $2}' /proc/$dp/status)
	line=$(grep -o "installs catalog: [0-9]* installs.*" "$d/log")
	kill $dp; wait $dp || true; kill $sp; wait $sp || true
	rm -rf "$d"
	echo "$rss|$line"
}
e=$(run 0); f=$(run "$N")
echo "empty account: RSS ${e%%|*} KiB (${e#*|})"
echo "$N installs:  RSS ${f%%|*} KiB (${f#*|})"
echo "catalog memory: $(( ${f%%|*} - ${e%%|*} )) KiB"
