#!/bin/sh
# bench-https-ab.sh A B [RUNS]: two builds' HTTPS enqueues against the Unix socket, taking
# turns (RUNS runs of scripts/bench-https.sh each, 3 h2load rounds a run; default 3), so a
# noisy moment on a shared machine hits both. Prints each round (socket, HTTPS, the
# daemon's CPU per HTTPS enqueue), then per build the medians of the HTTPS rate and of
# the HTTPS / socket ratio.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 BUILD_A BUILD_B [RUNS]" >&2; exit 2; }
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT INT TERM
for r in $(seq 1 "${3:-3}"); do
	for b in "$1" "$2"; do
		HTTPS_ONLY_ENQUEUE=1 BUILD=$b sh scripts/bench-https.sh 2>&1 | awk -v b="$b" '
			/^unix socket:/ { u = $3; sub("/s", "", u) }
			/h2load --h1/ {
				for (i = 1; i <= NF; i++) {
					if ($i ~ /^[0-9]+\/s$/) { h = $i; sub("/s", "", h) }
					if ($i == "daemon") c = $(i + 1)
				}
				printf "%s socket %d/s https %d/s ratio %.3f cpu %s us\n", b, u, h,
				    h / u, c
			}' | tee -a "$out"
	done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for b in "$1" "$2"; do
	n=$(grep -c "^$b " "$out")
	h=$(grep "^$b " "$out" | awk '{ print $5 + 0 }' | median)
	r=$(grep "^$b " "$out" | awk '{ print $7 }' | median)
	echo "$b: $n rounds, HTTPS median $h/s, HTTPS / socket median $r"
done
