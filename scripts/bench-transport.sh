#!/bin/sh
# bench-transport.sh: what the HTTP+TLS layer alone costs per kept-alive HTTPS request,
# outside the daemon: three minimal single-threaded servers (tests/bench/transport/) that
# answer POST /v1/purges with a fixed 202, driven by h2load --h1 -c 64 in alternating
# rounds. Server CPU per request from /proc (utime + stime), the client's from time(1).
#   evhttp   libevent's evhttp over bufferevent_openssl (what the daemon used before http-tls.c)
#   evpair   evhttp over its own thin TLS transport (memory BIOs, one read and one write a
#            request); the measuring prototype of daemon/http-tls.c, without its guards
#   h2o      libh2o 2.2 (Debian libh2o-evloop-dev) on its own event loop
# Each also in "deferred" mode: the answer one loop pass later, as the daemon answers
# after a group commit. ROUNDS=n (default 3).
set -eu
cd "$(dirname "$0")/.."
SRC=$PWD/tests/bench/transport
need=""
command -v h2load >/dev/null || need="$need nghttp2-client"
[ -x /usr/bin/time ] || need="$need time"
[ -f /usr/include/h2o.h ] || need="$need libh2o-evloop-dev"
pkg-config --exists libevent_openssl 2>/dev/null || need="$need libevent-dev"
# shellcheck disable=SC2086
[ -z "$need" ] || sh scripts/deps.sh $need
D=$(mktemp -d /tmp/wpe-bench-transport.XXXXXX)
PIDS=""
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$D"' EXIT INT TERM
cc -O2 -I"$SRC" -o "$D/evhttp_srv" "$SRC/evhttp_srv.c" \
	$(pkg-config --cflags --libs libevent libevent_openssl openssl)
cc -O2 -I"$SRC" -o "$D/evpair_srv" "$SRC/evpair_srv.c" -levent -lssl -lcrypto
cc -O2 -I"$SRC" -o "$D/h2o_srv" "$SRC/h2o_srv.c" \
	$(pkg-config --cflags --libs libh2o-evloop openssl)
cd "$D"
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 \
	-subj /CN=127.0.0.1 2>/dev/null
printf '{"install":"294deacc-d8b8-4005-82c4-0727ba8ddde0","type":"page","reason":"b"}' \
	>body.json
port=18400
for s in evhttp evpair h2o; do
	for mode in now deferred; do
		port=$((port + 1))
		name=$s
		[ $mode = deferred ] && name=${s}_deferred
		# shellcheck disable=SC2046
		"./${s}_srv" $port $([ $mode = deferred ] && echo deferred) 2>/dev/null &
		PIDS="$PIDS $!"
		echo "$name $port $!" >>servers
	done
done
sleep 1
TCK=$(getconf CLK_TCK)
N=100000
for r in $(seq 1 "${ROUNDS:-3}"); do
	while read -r name port pid; do
		s0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
		/usr/bin/time -f '%U %S' -o ctime h2load --h1 -n $N -c 64 -t 1 -d body.json \
			-H 'Content-Type: application/json' "https://127.0.0.1:$port/v1/purges" \
			>out 2>&1 || true
		s1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
		awk -v n="$name" -v d=$((s1 - s0)) -v t="$TCK" -v N=$N '
			/finished in/ { rps = $4 } /status codes/ { ok = $3 }
			END { printf "%s %s %d %.1f\n", n, rps, ok, d / t * 1e6 / N }' out |
			paste -d' ' - ctime >>results
	done <servers
done
# results: NAME REQ/S OK SERVER-US CLIENT-USER CLIENT-SYS
med() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "server            req/s   server CPU us/request (each round)   client us/request"
while read -r name port pid; do
	rps=$(awk -v k="$name" '$1 == k { print $2 }' results | med)
	cpu=$(awk -v k="$name" '$1 == k { print $4 }' results | med)
	all=$(awk -v k="$name" '$1 == k { printf "%s%s", sep, $4; sep = " " }' results)
	cl=$(awk -v k="$name" -v N=$N '$1 == k { print ($5 + $6) * 1e6 / N }' results | med)
	bad=$(awk -v k="$name" -v N=$N '$1 == k && $3 != N' results)
	printf '%-16s %7.0f/s  %5.1f (%s)  %5.1f%s\n' "$name" "$rps" "$cpu" "$all" "$cl" \
		"${bad:+  (not every answer was 2xx)}"
done <servers
