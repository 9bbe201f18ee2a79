#!/usr/bin/env python3
"""scale.py: issue 10's scale figures for one build of wpe-purged (run by scripts/bench.sh).

Every figure prints with how it was measured. Databases are created by the daemon under
test (so an old build gets its own schema), then seeded with python3's sqlite3 while the
daemon is stopped: jobs, one queued request per job and `limits` rows, exactly the rows
the daemon itself writes. Everything lives in a private temp dir with private sockets
and loopback ports; every process started here is stopped before it exits.

  scale.py --build DIR --tools DIR [--cpu-seconds S] [--idle-seconds S]

--tools holds latency-bench and enqueue-bench (built from tests/bench/ by bench.sh, so
an old build is measured with the same clients).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SIM_USER, SIM_PASSWORD = "bench", "bench"
DEAD_API = "http://127.0.0.1:9/v1"       # nothing listens: connection refused at once
KNOWN = "294deacc-d8b8-4005-82c4-0727ba8ddde0"
GUARD_MS = 5                              # SCHED_GUARD_MS: a window opens 5 ms late


def now_ms():
    return int(time.time() * 1000)


def install_id(prefix, i):
    return "%s%07x-5eed-4000-8000-%012x" % (prefix, i, i)


class World:
    def __init__(self, build, tools):
        self.build = build
        self.tools = tools
        self.daemon_bin = os.path.join(build, "wpe-purged")
        self.ctl_bin = os.path.join(build, "wpe-purgectl")
        self.sim_bin = os.path.join(build, "tests", "apisim")
        self.dir = tempfile.mkdtemp(prefix="wpe-scale-")
        os.chmod(self.dir, 0o755)          # the fairness test's second user opens the socket
        self.procs = []
        self.cred = os.path.join(self.dir, "credentials")
        with open(self.cred, "w") as f:
            f.write("%s:%s\n" % (SIM_USER, SIM_PASSWORD))
        os.chmod(self.cred, 0o600)

    def path(self, name):
        return os.path.join(self.dir, name)

    def spawn(self, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- API stand-ins -----------------------------------------------------------------
    def start_sim(self, name, args):
        portfile = self.path(name + ".port")
        log = self.path(name + ".jsonl")
        p = self.spawn([self.sim_bin, "--port-file", portfile, "--user", SIM_USER,
                        "--password", SIM_PASSWORD, "--log", log] + args,
                       stderr=subprocess.DEVNULL)
        port = wait_port(portfile, p)
        return p, port, log

    def start_junk_api(self, name, known, delay_ms):
        portfile = self.path(name + ".port")
        log = self.path(name + ".jsonl")
        p = self.spawn([sys.executable, os.path.join(HERE, "junk-api.py"), "--port-file",
                        portfile, "--known", known, "--delay-ms", str(delay_ms), "--log",
                        log], stderr=subprocess.DEVNULL)
        port = wait_port(portfile, p)
        return p, port, log


def wait_port(portfile, p, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(portfile):
            with open(portfile) as f:
                return int(f.read())
        if p.poll() is not None:
            raise SystemExit("API stand-in exited at start")
        time.sleep(0.01)
    raise SystemExit("API stand-in did not start")


class Conn:
    """One client connection: request/answer as JSON lines."""

    def __init__(self, sock_path, timeout=60):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(sock_path)
        self.buf = b""

    def send(self, obj):
        self.s.sendall((json.dumps(obj) + "\n").encode())

    def send_raw(self, data):
        self.s.sendall(data)

    def recv(self):
        while b"\n" not in self.buf:
            d = self.s.recv(1 << 20)
            if not d:
                raise ConnectionError("daemon closed the connection")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, obj):
        self.send(obj)
        return self.recv()

    def close(self):
        self.s.close()


class Daemon:
    def __init__(self, world, name, db, base_url, object_interval=600, daemon_extra="",
                 api_extra=""):
        self.w = world
        self.name = name
        self.sock = world.path(name + ".sock")
        self.conf = world.path(name + ".conf")
        self.db = db
        self.logpath = world.path(name + ".log")
        self.p = None
        with open(self.conf, "w") as f:
            f.write("[daemon]\nsocket = %s\ndatabase = %s\nlog_level = warning\n%s"
                    "[api]\nbase_url = %s\ncredentials_file = %s\n%s"
                    "[limits]\nobject_interval = %d\n" % (
                        self.sock, db, daemon_extra, base_url, world.cred, api_extra,
                        object_interval))

    def start(self, timeout=120, env=None, wrap=()):
        """Start it; returns the seconds from exec to the first successful ping."""
        log = open(self.logpath, "a")
        e = None
        if env:
            e = dict(os.environ)
            e.update(env)
        t0 = time.monotonic()
        self.p = self.w.spawn(list(wrap) + [self.w.daemon_bin, "-c", self.conf], stderr=log,
                              env=e)
        log.close()
        while time.monotonic() - t0 < timeout:
            try:
                c = Conn(self.sock, timeout=timeout)
                a = c.call({"op": "ping"})
                c.close()
                if a.get("ok"):
                    return time.monotonic() - t0
            except (OSError, ConnectionError, ValueError):
                pass
            if self.p.poll() is not None:
                raise SystemExit("%s exited at start:\n%s" % (self.name, self.log()))
            time.sleep(0.001)
        raise SystemExit("%s not ready after %d s" % (self.name, timeout))

    def stop(self, timeout=30):
        if self.p is None or self.p.poll() is not None:
            return
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.p = None

    def log(self):
        with open(self.logpath) as f:
            return f.read()[-4000:]

    def call(self, obj, timeout=60):
        c = Conn(self.sock, timeout)
        try:
            return c.call(obj)
        finally:
            c.close()

    def cpu_ticks(self):
        with open("/proc/%d/stat" % self.p.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])      # utime + stime (fields 14, 15)

    def status_kib(self, key):
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return None

    def ctx_switches(self):
        n = 0
        for t in os.listdir("/proc/%d/task" % self.p.pid):
            with open("/proc/%d/task/%s/status" % (self.p.pid, t)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches",
                                        "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        return n


# -- databases ---------------------------------------------------------------------------
def make_template(w):
    """An empty queue database created by the daemon under test (its own schema)."""
    db = w.path("template.sqlite")
    d = Daemon(w, "template", db, DEAD_API)
    d.start()
    d.stop()
    c = sqlite3.connect(db)
    ver = c.execute("PRAGMA user_version").fetchone()[0]
    c.close()
    return db, ver


def copy_db(w, template, name):
    db = w.path(name + ".sqlite")
    for suffix in ("", "-wal"):
        if os.path.exists(template + suffix):
            shutil.copy(template + suffix, db + suffix)
    return db


def seed(db, prefix, installs, types, limits_fn, not_before=0, uids=4):
    """Queued jobs (one per install and type) with one queued request each; limits_fn(c,
    list of installs) inserts the `limits` rows last, just before the commit."""
    c = sqlite3.connect(db)
    c.execute("PRAGMA synchronous = OFF")
    t = now_ms()
    jobs, reqs, ids = [], [], []
    jid = 0
    for i in range(installs):
        inst = install_id(prefix, i)
        ids.append(inst)
        for ty in types:
            jid += 1
            jobs.append((jid, inst, ty, not_before, t))
            reqs.append((jid, jid, inst, ty, 1000 + jid % uids, t))
    c.executemany("INSERT INTO jobs (id, install, type, state, attempts, not_before,"
                  " created_at) VALUES (?, ?, ?, 'queued', 0, ?, ?)", jobs)
    c.executemany("INSERT INTO requests (id, job, install, type, state, uid, pid, coalesced,"
                  " enqueued_at) VALUES (?, ?, ?, ?, 'queued', ?, 0, 0, ?)", reqs)
    ret = limits_fn(c, ids)
    c.commit()
    c.close()
    return jid, ret


def median_time(fn, n):
    ts = []
    for _ in range(n):
        t0 = time.monotonic()
        fn()
        ts.append(time.monotonic() - t0)
    return statistics.median(ts), min(ts), max(ts)


def tool(w, name):
    return os.path.join(w.tools, name)


def hdr(s):
    print("-- " + s, flush=True)


# -- the figures -------------------------------------------------------------------------
def count_waits(path):
    """Completed event-loop waits in an strace -o file (calls in progress when strace
    attached or detached are not wakeups)."""
    with open(path) as f:
        lines = [l.rstrip() for l in f if l.strip()]
    n = 0
    for l in lines:
        if "<unfinished" in l or "<detached" in l or l.endswith("= ?"):
            continue
        if "= " in l:
            n += 1
    return n, lines


def fig_idle(w, template, seconds):
    hdr("[7] wakeups while idle, nothing queued")
    # An API that answers: the installs catalog is read once at start, then nothing is
    # due for catalog_refresh (1 h). (Against a dead API the daemon retries that read,
    # with backoff up to retry_max: work to do, not idling.)
    _, port, _ = w.start_sim("idle-sim", [])
    api = "http://127.0.0.1:%d/v1" % port
    plain = Daemon(w, "idle", copy_db(w, template, "idle"), api)
    plain.start()
    # the same as the packaged service runs it: sd_notify socket, WatchdogSec=30s
    nsock_path = w.path("notify.sock")
    nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    nsock.bind(nsock_path)
    svc = Daemon(w, "idle-svc", copy_db(w, template, "idle-svc"), api)
    svc.start(env={"NOTIFY_SOCKET": nsock_path, "WATCHDOG_USEC": "30000000"},
              wrap=["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"'])
    time.sleep(2.5)                     # past the first prune (a second after start)
    nsock.setblocking(False)
    try:
        while True:
            nsock.recv(4096)
    except BlockingIOError:
        pass
    have_strace = shutil.which("strace") is not None
    runs = []
    for d in (plain, svc):
        out = w.path(d.name + ".strace")
        st = None
        if have_strace:
            st = subprocess.Popen(["strace", "-f", "-q", "-p", str(d.p.pid), "-e",
                                   "trace=epoll_wait,epoll_pwait,epoll_pwait2,poll,ppoll,"
                                   "select,pselect6,nanosleep,clock_nanosleep", "-o", out],
                                  stderr=subprocess.DEVNULL)
        runs.append((d, out, st, d.ctx_switches(), d.cpu_ticks()))
    time.sleep(seconds)
    notes = []
    try:
        while True:
            notes.append(nsock.recv(4096).decode(errors="replace"))
    except BlockingIOError:
        pass
    nsock.close()
    for d, out, st, cs0, cpu0 in runs:
        if st is not None:
            st.send_signal(signal.SIGINT)
            st.wait(10)
        cs, cpu = d.ctx_switches() - cs0, d.cpu_ticks() - cpu0
        d.stop()
        label = ("plain (no systemd)" if d is plain else
                 "as the service (NOTIFY_SOCKET, WATCHDOG_USEC=30 s from WatchdogSec=30s)")
        if st is not None:
            n, lines = count_waits(out)
            if os.environ.get("SCALE_DEBUG"):
                sys.stdout.write("\n".join(lines[:6]) + "\n")
            print("wakeups while idle, %s: %d in %d s (completed event-loop waits; "
                  "context switches %d incl. strace's attach, CPU ticks %d)" % (
                      label, n, seconds, cs, cpu))
        else:
            print("wakeups while idle, %s: strace missing; context switches %d in %d s" % (
                label, cs, seconds))
    print("   sd_notify messages meanwhile: %d (%s)" % (
        len(notes), ", ".join(sorted({m.split("=")[0] for m in notes})) or "none"))
    print("   measured: strace -f -q -p PID -e trace=epoll_wait,... -o FILE for %d s, from "
          "2.5 s after ready (past the first prune), both daemons at once" % seconds)


def fig_recovery_rss_list_enqueue(w, template, rounds=5, start_cap=150):
    hdr("[4][5][6][3] 100,002 queued jobs over 33,334 installs (object+page+cdn each), "
        "API down")
    db = copy_db(w, template, "big")
    t_seed = time.monotonic()

    def limits(c, ids):
        t = now_ms()           # object windows open in 10 minutes
        c.executemany("INSERT INTO limits (install, class, last_start, blocked_until, strikes)"
                      " VALUES (?, 0, ?, 0, 0)", [(i, t) for i in ids])
    njobs, _ = seed(db, "b", 33334, ("object", "page", "cdn"), limits,
                    not_before=now_ms() + 3600 * 1000)
    print("seeded %d queued jobs + %d requests in %.1f s (every job waits: retry backoff "
          "an hour ahead, object windows 10 minutes ahead)" % (njobs, njobs,
                                                              time.monotonic() - t_seed))
    big = Daemon(w, "big", db, DEAD_API)
    starts = []
    for k in range(3):
        starts.append(big.start(timeout=start_cap))
        if k == 2 or starts[-1] > 5:     # a slow start is measured once (time budget)
            break
        big.stop()
    print("start-up (recovery) with %d queued jobs: median %.3f s (runs: %s); "
          "measured: exec to the first successful ping (a new connection every 1 ms)" % (
              njobs, statistics.median(starts), ", ".join("%.3f" % s for s in starts)))
    big.call({"op": "pause"})
    time.sleep(2)
    st = big.call({"op": "stats"})
    anon = None
    try:
        with open("/proc/%d/smaps_rollup" % big.p.pid) as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    anon = int(line.split()[1])
    except OSError:
        pass
    print("RSS with %s queued jobs over 33,334 installs: %.1f MiB (VmRSS; VmHWM %.1f MiB; "
          "anonymous %s MiB, the rest mapped libraries), 2 s after ready" % (
              st.get("queued_jobs", "?"), big.status_kib("VmRSS") / 1024,
              big.status_kib("VmHWM") / 1024, "%.1f" % (anon / 1024) if anon else "?"))

    # list: the client as a whole process, and the op alone on an open connection
    args = [w.ctl_bin, "-s", big.sock, "list", "--limit", "100"]
    r = subprocess.run(args, capture_output=True, text=True)
    label = "list --limit 100"
    if r.returncode != 0:
        args = args[:-2]
        label = "list (this client has no --limit; the daemon caps it at 1,000 jobs)"
        r = subprocess.run(args, capture_output=True, text=True)
    shown = sum(1 for l in r.stdout.splitlines() if l[:1].isdigit())
    med, lo, hi = median_time(lambda: subprocess.run(args, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL), 9)
    print("wpe-purgectl %s with %d queued: median %.1f ms (min %.1f, max %.1f; 9 runs, "
          "whole process; %d jobs shown)" % (label, njobs, med * 1e3, lo * 1e3, hi * 1e3,
                                              shown))
    c = Conn(big.sock)
    op = {"op": "list", "limit": 100}
    if not c.call(op).get("ok"):
        op = {"op": "list"}
    med, lo, hi = median_time(lambda: c.call(op), 9)
    print("   the op alone %s on an open connection: median %.2f ms (min %.2f, max %.2f)" % (
        json.dumps(op), med * 1e3, lo * 1e3, hi * 1e3))
    med, lo, hi = median_time(lambda: c.call({"op": "stats"}), 9)
    print("   {\"op\":\"stats\"} on an open connection: median %.2f ms (min %.2f, max %.2f)"
          % (med * 1e3, lo * 1e3, hi * 1e3))
    c.close()

    # enqueue throughput: the same benchmark against this daemon and an empty one, both
    # paused, alternating runs; installs of the benchmark are new to both queues
    empty = Daemon(w, "empty", copy_db(w, template, "empty"), DEAD_API)
    empty.start()
    empty.call({"op": "pause"})
    time.sleep(1.5)
    print("   for scale: RSS of an empty daemon (same config, 1.5 s after ready): %.1f MiB" % (
        empty.status_kib("VmRSS") / 1024))
    eb = tool(w, "enqueue-bench")
    for conns, per in ((64, 200), (1, 1000)):
        res = {"empty": [], "full": []}
        lat = {"empty": [], "full": []}
        for _ in range(rounds):
            for key, d in (("empty", empty), ("full", big)):
                out = subprocess.run([eb, d.sock, str(conns), str(per), "500"],
                                     capture_output=True, text=True, check=True).stdout
                res[key].append(float(out.split(": ")[1].split("/s")[0]))
                lat[key].append(out.split("latency ")[1].strip())
        e, f = statistics.median(res["empty"]), statistics.median(res["full"])
        print("enqueue throughput, %d connection(s) x %d, paused: %.0f/s with %d queued vs "
              "%.0f/s empty: ratio %.2f (medians of %d alternating runs: full %s, empty %s)" % (
                  conns, per, f, njobs, e, f / e, rounds,
                  "/".join("%.0f" % x for x in res["full"]),
                  "/".join("%.0f" % x for x in res["empty"])))
        print("   latency, last run: full %s; empty %s" % (lat["full"][-1], lat["empty"][-1]))
    print("   measured: tests/bench/enqueue-bench SOCKET CONNS PER_CONN 500 (installs new to "
          "both queues, alternating object/page)")
    empty.stop()
    big.stop()
    return statistics.median(starts)


def fig_cpu_latency(w, template, seconds, lead_s=4.0, spacing_ms=6, interval_s=600):
    hdr("[1][2] 100,000 queued object jobs, one per install, a window opening every %d ms"
        % spacing_ms)
    sim, port, simlog = w.start_sim("sim", ["--any-install", "--object-interval",
                                            str(interval_s)])
    db = copy_db(w, template, "windows")
    t_seed = time.monotonic()

    def limits(c, ids):
        base = now_ms() + int(lead_s * 1000)    # the first window opens lead_s from now
        c.executemany("INSERT INTO limits (install, class, last_start, blocked_until, strikes)"
                      " VALUES (?, 0, ?, 0, 0)",
                      [(inst, base - interval_s * 1000 - GUARD_MS + i * spacing_ms)
                       for i, inst in enumerate(ids)])
        return base
    njobs, base = seed(db, "c", 100000, ("object",), limits)
    print("seeded %d jobs in %.1f s; windows open from %.0f s after seeding, one every %d ms "
          "(%.0f/s), object_interval %d s, simulator --any-install answering at once" % (
              njobs, time.monotonic() - t_seed, lead_s, spacing_ms, 1000 / spacing_ms,
              interval_s))
    d = Daemon(w, "windows", db, "http://127.0.0.1:%d/v1" % port,
               object_interval=interval_s)
    up = d.start()
    print("   (start-up here: %.3f s from exec to first ping)" % up)
    if up + 1 > lead_s:
        print("   NOTE: the start took longer than the lead: windows that opened meanwhile "
              "are a backlog, so the CPU figure includes catching up")
    # measure once the windows have been opening for a second
    wait = base / 1000.0 + 1.0 - time.time()
    if wait > 0:
        time.sleep(wait)
    t0w, c0, m0 = time.time(), d.cpu_ticks(), time.monotonic()
    time.sleep(seconds)
    t1w, c1, m1 = time.time(), d.cpu_ticks(), time.monotonic()
    hz = os.sysconf("SC_CLK_TCK")
    cpu = (c1 - c0) / hz / (m1 - m0) * 100
    # latency while the windows keep opening
    lb = tool(w, "latency-bench")
    rid = 50000                                   # its window opens ~300 s after the first
    c2, m2 = d.cpu_ticks(), time.monotonic()
    out = subprocess.run([lb, d.sock, "2000", "20", "5", '{"op":"ping"}',
                          '{"op":"status","id":%d}' % rid], capture_output=True, text=True)
    c3, m3 = d.cpu_ticks(), time.monotonic()
    t3w = time.time()
    out2 = subprocess.run([lb, d.sock, "2000", "10", "0", '{"op":"ping"}',
                           '{"op":"status","id":%d}' % rid], capture_output=True, text=True)
    d.stop()
    sim.send_signal(signal.SIGTERM)
    sim.wait(10)
    calls = []
    with open(simlog) as f:
        for line in f:
            if line.strip():
                calls.append(json.loads(line))
    inw = [c for c in calls if t0w <= c["t"] <= t1w]
    ok = sum(1 for c in inw if c.get("status") == 202)
    print("daemon CPU: %.1f %% of one core over %.1f s (utime+stime from /proc/PID/stat); "
          "API purges meanwhile: %d (%.0f/s, %d answered 202)" % (
              cpu, m1 - m0, len(inw), len(inw) / (t1w - t0w), ok))
    inl = [c for c in calls if t1w < c["t"] <= t3w]
    for line in out.stdout.strip().splitlines():
        print("latency %s" % line)
    if out.returncode != 0:
        print("   latency-bench failed: %s" % out.stderr.strip())
    print("   measured: tests/bench/latency-bench SOCK 2000 20 5: one connection, 2,000 "
          "sequential requests alternating ping and status of request %d, one every 5 ms "
          "(capped at 20 s), right after the CPU window; daemon CPU meanwhile %.1f %%, API "
          "purges %d (%.0f/s)" % (
              rid, (c3 - c2) / hz / (m3 - m2) * 100, len(inl),
              len(inl) / max(t3w - t1w, 1e-9)))
    for line in out2.stdout.strip().splitlines():
        print("   back to back (latency-bench SOCK 2000 10 0): %s" % line)
    if out2.returncode != 0:
        print("   latency-bench failed: %s" % out2.stderr.strip())


def fig_fairness(w, template, junk=400, delay_ms=200, cap_s=90):
    hdr("[8] another user's purge behind %d junk jobs (API: 404 after %d ms; 4 in flight)"
        % (junk, delay_ms))
    api, port, apilog = w.start_junk_api("junk", KNOWN, delay_ms)
    db = copy_db(w, template, "fair")
    d = Daemon(w, "fair", db, "http://127.0.0.1:%d/v1" % port,
               object_interval=60, daemon_extra="socket_mode = 0666\n",
               api_extra="max_in_flight = 4\n")
    d.start()
    ctl = w.path("wpe-purgectl")
    shutil.copy(w.ctl_bin, ctl)
    os.chmod(ctl, 0o755)
    c = Conn(d.sock)
    t0 = time.monotonic()
    data = "".join(json.dumps({"op": "enqueue", "install": install_id("d", i),
                               "type": "object"}) + "\n" for i in range(junk)).encode()
    c.send_raw(data)
    for _ in range(junk):
        a = c.recv()
        if not a.get("ok"):
            raise SystemExit("junk enqueue refused: %s" % a)
    ta = time.monotonic() - t0
    c.close()
    cmd = [ctl, "-s", d.sock, "enqueue", KNOWN, "-t", "object", "--wait", "--timeout",
           str(cap_s)]
    who = "uid %d" % os.getuid()
    if os.getuid() == 0 and shutil.which("setpriv"):
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
        who = "nobody (uid 65534)"
    t1 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    tb = time.monotonic() - t1
    d.stop(timeout=15)
    api.send_signal(signal.SIGTERM)
    api.wait(10)
    with open(apilog) as f:
        calls = [json.loads(l) for l in f if l.strip()]
    before = 0
    for cl in calls:
        if cl["install"] == KNOWN:
            break
        before += 1
    print("user B's purge waited %.2f s (wpe-purgectl enqueue --wait as %s, exit %d%s); "
          "API calls before it: %d junk" % (tb, who, r.returncode,
                                             ", timed out" if r.returncode == 4 else "",
                                             before))
    print("   measured: user A (uid %d) pipelined %d enqueues of distinct unknown installs "
          "on one connection (all committed in %.2f s), then B ran at once; the API "
          "stand-in (tests/bench/junk-api.py) answers those 404 after %d ms, B's install "
          "202 at once; socket_mode 0666, max_in_flight 4; B capped at %d s" % (
              os.getuid(), junk, ta, delay_ms, cap_s))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--tools", required=True)
    ap.add_argument("--cpu-seconds", type=float, default=20)
    ap.add_argument("--idle-seconds", type=int, default=20)
    ap.add_argument("--only", default="idle,big,cpu,fair")
    a = ap.parse_args()
    w = World(os.path.abspath(a.build), os.path.abspath(a.tools))
    t0 = time.monotonic()
    try:
        template, ver = make_template(w)
        print("== scale figures (issue 10) for %s: schema %d, %d cores" % (
            w.build, ver, os.cpu_count()), flush=True)
        only = a.only.split(",")
        if "idle" in only:
            fig_idle(w, template, a.idle_seconds)
        start = 1.0
        if "big" in only:
            start = fig_recovery_rss_list_enqueue(w, template)
        if "cpu" in only:
            # the windows start opening once the daemon has surely loaded them
            fig_cpu_latency(w, template, a.cpu_seconds, lead_s=max(4.0, 1.3 * start + 3))
        if "fair" in only:
            fig_fairness(w, template)
    finally:
        w.close()
    print("(scale section: %.0f s)" % (time.monotonic() - t0))


if __name__ == "__main__":
    main()
