#!/bin/sh
# in-container.sh: the user's path, run by a unit inside a container whose PID 1 is a
# real systemd (tests/system/run.sh boots it). Installs the package, follows the
# README's "Run it as a service", and checks what systemd and the package do: socket
# activation, a CI user's --wait, a burst, STATUS=, the journal's priorities, reload and
# restart with a client waiting, kill -9 and the watchdog, an outsider, the sandbox,
# then upgrade, remove and purge with the daemon running. Results go to /out.
set -u
exec >/out/results 2>&1
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
I1=294deacc-d8b8-4005-82c4-0727ba8ddde0
I2=3f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9
SIM=http://127.0.0.1:18080
PASS=0
FAIL=0
T0=$(date +%s)

ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
not_ok() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
# check DESCRIPTION COMMAND...: run it, pass if it exits 0, show its output if not.
check() {
	desc=$1
	shift
	if "$@" >/tmp/check.out 2>&1; then
		ok "$desc"
	else
		not_ok "$desc"
		sed 's/^/    | /' /tmp/check.out | tail -n 25
	fi
}
# until_ok SECONDS COMMAND...: retry every 0.2 s.
until_ok() {
	end=$(( $(date +%s) + $1 ))
	shift
	while ! "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -ge "$end" ] && return 1
		sleep 0.2
	done
}
main_pid() { systemctl show -p MainPID --value wpe-purged.service; }
active() { [ "$(systemctl is-active "$1")" = active ]; }
inactive() { ! active "$1"; }
fault() { curl -fsS -X POST -d "$1" "$SIM/_sim/fault" >/dev/null; }
as_ci() { runuser -u ci -- "$@"; }
json_field() { sed -n "s/.*\"$1\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p"; }
status_of() { as_ci wpe-purgectl --json status "$1" | json_field state; }
new_pid() { p=$(main_pid); [ "$p" != 0 ] && [ "$p" != "$1" ] && active wpe-purged.service; }
ping_ok() { wpe-purgectl ping; }
known() {
	for r in "$@"; do
		case $(status_of "$r") in queued|sending|done) ;; *) return 1 ;; esac
	done
}

finish() {
	journalctl -o short-precise --no-pager >/out/journal 2>&1
	echo "# $(( $(date +%s) - T0 )) s inside the container"
	echo "$PASS passed, $FAIL failed" | tee /out/summary
	exit 0
}
trap finish EXIT

# The API simulator on the container's loopback (the network is private).
/ci/apisim --port 18080 --user api-user --password api-secret --install "$I1" \
	--install "$I2" --object-interval 2 --log /tmp/sim.log &
until_ok 10 curl -fsS -o /dev/null -X POST -d '{}' "$SIM/_sim/reset" || true

# 1. Install: creates the user and group, enables and starts nothing.
check "dpkg -i installs the package" dpkg -i /ci/wpe-purged.deb
check "the user wpe-purged and the group wpe-purge exist" \
	sh -c 'id wpe-purged && getent group wpe-purge'
check "installing enables nothing" \
	sh -c '[ "$(systemctl is-enabled wpe-purged.socket)" = disabled ] &&
	       [ "$(systemctl is-enabled wpe-purged.service)" = disabled ]'
check "installing starts nothing" inactive wpe-purged.service

# 2. Configure as the README says; --check-config reads the service's credential.
sed -i "s|^base_url = .*|base_url = http://127.0.0.1:18080/v1|; \
	s|^object_interval = .*|object_interval = 2|; s|^retry_initial = .*|retry_initial = 1|; \
	s|^retry_max = .*|retry_max = 4|" /etc/wpe-purged/wpe-purged.conf
install -m 600 -o root -g root /dev/null /etc/wpe-purged/credentials
echo "api-user:api-secret" >/etc/wpe-purged/credentials
check "wpe-purged --check-config as root checks the installed service with its credential" \
	sh -c 'wpe-purged --check-config | grep -q "credentials read from /etc/wpe-purged/credentials"'

# 3. Enable the socket: the first client starts the daemon.
check "systemctl enable --now wpe-purged.socket" systemctl enable --now wpe-purged.socket
check "the socket exists, mode 0660, group wpe-purge" \
	sh -c 'stat -c "%a %G" /run/wpe-purged/wpe-purged.sock | grep -qx "660 wpe-purge"'
check "the daemon is not running before the first client" inactive wpe-purged.service
useradd -m ci
usermod -aG wpe-purge ci
check "a member of wpe-purge: enqueue --type all --wait exits 0" \
	as_ci wpe-purgectl enqueue "$I1" --type all --reason "first deploy" --wait --timeout 30
check "socket activation started the daemon" active wpe-purged.service

# 4. A burst of CI jobs for one install coalesces.
pids=""
i=0
while [ $i -lt 20 ]; do
	as_ci wpe-purgectl enqueue "$I2" --type object --wait --timeout 60 >/dev/null 2>&1 &
	pids="$pids $!"
	i=$((i + 1))
done
burst_rc=0
for p in $pids; do wait "$p" || burst_rc=1; done
calls=$(grep -c "$I2" /tmp/sim.log || true)
check "20 concurrent --wait jobs all succeed" [ "$burst_rc" = 0 ]
check "the burst coalesced: $calls API call(s) for 20 requests" [ "$calls" -le 3 ]

# 5. systemctl status shows the summary, current.
check "StatusText follows the queue (queued 0, sending 0)" until_ok 3 sh -c \
	'systemctl show -p StatusText --value wpe-purged.service | grep -qx "queued 0, sending 0"'

# 6. The journal: one event per line with its priority.
fault '{"status":429,"retry_after":"1"}'
check "a purge after a 429 completes" \
	as_ci wpe-purgectl enqueue "$I1" --type page --wait --timeout 30
check "journal: requests at priority info (6)" sh -c \
	'journalctl -u wpe-purged.service -o json | grep "\"PRIORITY\":\"6\"" | grep -q "request 1: all purge"'
check "journal: the 429 at priority warning (4)" sh -c \
	'journalctl -u wpe-purged.service -o json | grep "\"PRIORITY\":\"4\"" | grep -q "rate-limited"'

# 7. reload and restart with a client waiting.
fault '{"delay_ms":2500}'
as_ci wpe-purgectl enqueue "$I2" --type page --wait --timeout 30 >/tmp/w1 2>&1 &
w=$!
sleep 0.5
check "systemctl reload with a client waiting" systemctl reload wpe-purged.service
check "the waiting client's purge completes after the reload" wait $w
check "journal: the reload" sh -c 'journalctl -u wpe-purged.service | grep -q "reloaded \[limits\]"'
pid=$(main_pid)
fault '{"status":503,"for_ms":2000}'
as_ci wpe-purgectl enqueue "$I1" --type cdn --wait --timeout 40 >/tmp/w2 2>&1 &
w=$!
sleep 0.5
check "systemctl restart with a client waiting" systemctl restart wpe-purged.service
check "the waiting client reconnects and its purge completes" wait $w
check "the restart made a new process" new_pid "$pid"

# 8. kill -9: Restart= brings it back, nothing acknowledged is lost.
fault '{"status":503,"for_ms":3000}'
id=$(as_ci wpe-purgectl --json enqueue "$I2" --type cdn | json_field id)
pid=$(main_pid)
kill -9 "$pid"
check "after kill -9 systemd restarts the daemon (Restart=on-failure)" until_ok 15 new_pid "$pid"
check "the request acknowledged before kill -9 completes" \
	as_ci wpe-purgectl wait "$id" --timeout 30

# 9. The watchdog: a stopped daemon is killed and restarted.
mkdir -p /run/systemd/system/wpe-purged.service.d
printf '[Service]\nWatchdogSec=2s\nTimeoutAbortSec=2s\n' \
	>/run/systemd/system/wpe-purged.service.d/wd.conf
systemctl daemon-reload
systemctl restart wpe-purged.service
until_ok 10 ping_ok
pid=$(main_pid)
kill -STOP "$pid"
check "a stopped daemon is restarted by the watchdog (WatchdogSec=2s)" until_ok 20 new_pid "$pid"
check "journal: the watchdog timeout" sh -c \
	'journalctl -u wpe-purged.service | grep -q "Watchdog timeout"'
rm -rf /run/systemd/system/wpe-purged.service.d
systemctl daemon-reload
systemctl restart wpe-purged.service
until_ok 10 ping_ok

# 10. An outsider is refused with a clear message.
useradd -m outsider
runuser -u outsider -- wpe-purgectl ping >/tmp/out.txt 2>&1
orc=$?
check "an outsider gets exit 6" [ "$orc" = 6 ]
check "and is told which group to join" grep -q 'group "wpe-purge"' /tmp/out.txt

# 11. The sandbox as the kernel sees it.
pid=$(main_pid)
grep -E '^(Seccomp|NoNewPrivs|Cap(Eff|Prm|Bnd)):' "/proc/$pid/status" | sed 's/^/# /'
check "seccomp filter active (Seccomp: 2)" grep -Eq '^Seccomp:[[:space:]]+2$' "/proc/$pid/status"
check "NoNewPrivs: 1" grep -Eq '^NoNewPrivs:[[:space:]]+1$' "/proc/$pid/status"
check "no capabilities (CapEff, CapPrm, CapBnd all 0)" sh -c \
	"! grep -E '^Cap(Eff|Prm|Bnd):' /proc/$pid/status | grep -qv '0000000000000000\$'"
score=$(systemd-analyze security wpe-purged.service 2>/dev/null |
	sed -n 's/.*Overall exposure level for wpe-purged.service: \([0-9.]*\).*/\1/p')
echo "# live systemd-analyze security: ${score:-?}"
check "live systemd-analyze security score $score <= 1.5" \
	awk -v s="${score:-99}" 'BEGIN { exit !(s <= 1.5) }'

# 12. Upgrade with requests queued: kept, the daemon restarted on the new files.
fault '{"status":503,"for_ms":6000}'
u1=$(as_ci wpe-purgectl --json enqueue "$I1" --type object | json_field id)
u2=$(as_ci wpe-purgectl --json enqueue "$I2" --type page | json_field id)
pid=$(main_pid)
check "dpkg -i of a newer version with the service running" \
	dpkg -i --force-confold /ci/wpe-purged-newer.deb
check "the newer version is installed" sh -c \
	'dpkg-query -W -f="\${Version}" wpe-purged | grep -q "+upgrade1$"'
check "the upgrade restarted the daemon" until_ok 10 new_pid "$pid"
check "the socket stays enabled across the upgrade" sh -c \
	'[ "$(systemctl is-enabled wpe-purged.socket)" = enabled ]'
check "requests queued before the upgrade are still there" known "$u1" "$u2"
check "and complete after it" sh -c \
	"runuser -u ci -- wpe-purgectl wait $u1 --timeout 40 && runuser -u ci -- wpe-purgectl wait $u2 --timeout 40"

# 13. Remove with the daemon running: stopped, socket gone, the queue kept.
until_ok 10 ping_ok
check "dpkg -r with the daemon running" dpkg -r wpe-purged
check "nothing runs after remove" sh -c '! pgrep -x wpe-purged'
check "no socket unit active after remove" sh -c \
	'! systemctl list-units --all --no-legend "wpe-purged*" | grep -qw active'
check "no socket file after remove" test ! -e /run/wpe-purged/wpe-purged.sock
check "the queue database is kept on remove" test -f /var/lib/wpe-purged/queue.sqlite

# 14. Purge: no state, no links, no configuration.
dpkg -P wpe-purged >/tmp/purge.txt 2>&1
prc=$?
check "dpkg -P succeeds" [ "$prc" = 0 ]
check "purge prints no warning" sh -c '! grep -qi warning /tmp/purge.txt'
check "no database after purge" test ! -e /var/lib/wpe-purged
check "no /etc/wpe-purged after purge" test ! -e /etc/wpe-purged
check "no enable link or mask left" sh -c '[ -z "$(find /etc/systemd -name "wpe-purged*")" ]'
check "no deb-systemd-helper state left" sh -c \
	'[ -z "$(find /var/lib/systemd -name "wpe-purged*" 2>/dev/null)" ]'
check "nothing runs after purge" sh -c '! pgrep -x wpe-purged'

# 15. A reinstall after purge starts from scratch: enabled nothing.
check "reinstall after purge" dpkg -i /ci/wpe-purged.deb
check "a reinstall after purge enables nothing" sh -c \
	'[ "$(systemctl is-enabled wpe-purged.socket)" = disabled ]'
dpkg -P wpe-purged >/dev/null 2>&1
