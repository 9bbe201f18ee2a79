# purge-with-curl.sh: one cache purge through wpe-purged's HTTPS API with curl and sh only.
# Needs: WPE_PURGED_URL, WPE_PURGED_TOKEN (a secret), INSTALL; optional PURGE_TYPE (all),
# PURGE_TIMEOUT (seconds, 600), PURGE_REASON. Exits 0 when the API accepted the purge,
# 1 when it failed, was cancelled or expired, 4 when it did not finish in time (it stays queued),
# 3 when the daemon could not be reached, 2 when the request was refused.
set -eu
: "${WPE_PURGED_URL:?}" "${WPE_PURGED_TOKEN:?}" "${INSTALL:?}"
type=${PURGE_TYPE:-all}
timeout=${PURGE_TIMEOUT:-600}
reason=$(printf '%s' "${PURGE_REASON:-CI purge}" | tr -cd 'A-Za-z0-9 ._:/#@=+-' | cut -c1-200)
url=${WPE_PURGED_URL%/}
deadline=$(($(date +%s) + timeout))
field() { sed -n "s/.*\"$1\" *: *\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n 1; }
# One call, long-polling up to 50 s; the token goes to curl on stdin (-H @-), never on
# its command line. Sets body and code (000: no answer).
request() { # METHOD PATH [BODY]
	m=$1 p=$2
	shift 2
	if [ $# -gt 0 ]; then set -- --data "$1"; fi
	w=$((deadline - $(date +%s)))
	if [ "$w" -gt 50 ]; then w=50; fi
	if [ "$w" -lt 0 ]; then w=0; fi
	out=$(printf 'Authorization: Bearer %s\n' "$WPE_PURGED_TOKEN" |
		curl -sS --max-time $((w + 30)) -H @- -H 'Content-Type: application/json' \
			-X "$m" "$@" -w '\n%{http_code}' "$url$p?wait=$w") || out="
000"
	body=$(printf '%s\n' "$out" | sed '$d')
	code=$(printf '%s\n' "$out" | tail -n 1)
}
request POST /v1/purges "{\"install\":\"$INSTALL\",\"type\":\"$type\",\"reason\":\"$reason\"}"
while [ "$code" = 429 ] && [ "$(date +%s)" -lt "$deadline" ]; do
	sleep 2
	request POST /v1/purges "{\"install\":\"$INSTALL\",\"type\":\"$type\",\"reason\":\"$reason\"}"
done
case $code in
200|202) ;;
000) echo "wpe-purged at $url could not be reached" >&2; exit 3 ;;
*) echo "purge refused (HTTP $code): $body" >&2; exit 2 ;;
esac
id=$(printf '%s' "$body" | field id)
echo "purge request $id queued for $INSTALL ($type)"
# Long-poll until it is finished; reconnect through restarts, 503s and network errors.
while :; do
	state=$(printf '%s' "$body" | field state)
	case $code:$state in
	200:done) echo "request $id: done (the API accepted the purge)"; exit 0 ;;
	200:failed|200:cancelled|200:expired)
		echo "request $id: $state: $(printf '%s' "$body" | field message)" >&2; exit 1 ;;
	esac
	if [ "$(date +%s)" -ge "$deadline" ]; then
		echo "request $id: not finished after ${timeout}s; it stays queued" >&2
		exit 4
	fi
	case $code in 000|429|502|503|504) sleep 2 ;; esac
	request GET "/v1/purges/$id"
done
