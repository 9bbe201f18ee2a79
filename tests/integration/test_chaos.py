"""test_chaos.py: a seeded, model-based chaos test of the real daemon and simulator.

One run drives wpe-purged with a random mix (random.Random(seed)) of everything a client
and the world can do: pipelined enqueue / wait (with timeouts) / cancel / status / list /
stats / ping on many connections, some of them HTTP (the same operations as pipelined
HTTP/1.1 requests on kept-alive connections to the [http] listener, with an admin token:
POST /v1/purges, GET /v1/purges/ID?wait=, DELETE, GET /v1/jobs, /v1/stats, /v1/pause;
their answers are held to the same invariants), pause and resume, clients that hang up with requests
in flight, SIGHUP with changed [limits], API answers drawn per call by the simulator's
random mode (202, 429 without Retry-After, with delta-seconds or an HTTP-date, absurd
Retry-After, 5xx, non-JSON 500, answers held back past the daemon's timeout, late
answers, dropped connections, 404), kill -9 and restart, SIGTERM and restart, and
storage failures (tests/fault/erofs.c: the flag file created and removed).

While it runs it checks online: the daemon never exits unless we killed it; every
request on a connection gets exactly one answer, in order, of the right shape (an extra
or a missing answer shows up as a mismatch, or at the end as a count that differs);
nothing stays unanswered longer than STALL seconds past its own timeout while the daemon
runs, and the daemon keeps reading what clients write (a stall: commits stopped; the
`stats` answers polled every second go with the failure); no acknowledged id is ever
`not_found`; a `wait` never times out early; two answers never give a request different
final states; SIGTERM exits 0 (within 20 s).

Then it heals the world (faults off, storage writable, daemon running, resumed) and
checks, against the simulator's call log and the final states:
- every acknowledged request ends done / failed / cancelled within CONVERGE seconds;
- done: a 2xx purge of the install, of a covering type (`all`, or the request's own
  type), answered in time (before the daemon's API timeout), ARRIVED at the simulator
  after the client sent the request; no cancel of it was answered ok;
- failed: its http_status is permanent (400/401/403/404) and the simulator answered that
  status to a covering purge of the install that arrived after the request was sent;
- cancelled: a cancel for it was answered ok (or its answer was lost to a kill or a
  hang-up); a request whose every cancel was refused must not end cancelled;
- a terminal state seen by a client never changes, and survives a clean restart (the
  store kept what clients were told);
- storage: once the flag file is gone, an enqueue succeeds again;
- spacing: the simulator does not enforce the interval (--object-interval 0), so a
  violation shows up as a 2xx in its log instead of being hidden behind its own 429.
  For two accepted object/all purges of an install, the later one must ARRIVE at least
  the object interval after the daemon could know the earlier one was acted on: the
  earlier one's answer time if the daemon got that answer (answered within the API
  timeout, no kill or stop in between), else its arrival (the daemon gave up on it, and
  a timeout or an interrupted purge starts a window no earlier than that). The interval
  is the smallest one in force between the two (a SIGHUP's new value gets 1 s of lag);
  page/cdn spacing is not checked;
- one purge per install and cache class in flight (`all` is every class);
- no API call storm: at most STORM calls per install in any second (a retry floor);
- no sanitizer or glibc abort report in the daemon log; PRAGMA integrity_check ok.

CHAOS_SEED=N replays a seed (timing differs; choices do not), CHAOS_SECONDS sets the
duration (default 60; 20 under WPE_DAEMON_WRAPPER, i.e. valgrind, with 4x the bounds),
CHAOS_EXCLUDE leaves actions or API answer kinds out. It prints its seed first and a
one-line summary last; a failure names the invariant, the request, its simulator calls
and daemon log lines, and keeps the run's directory. scripts/soak.sh runs it over and
over with new seeds.
"""
import bisect
import collections
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

from harness import BUILD, DAEMON, Env, I1, I2, I3, UNKNOWN, WRAP

I4 = "5d6e7f80-9a1b-4c2d-8e3f-405162738495"
I5 = "c0ffee00-1234-4abc-9def-0123456789ab"
INSTALLS = (I1, I2, I3, I4, I5)
TYPES = ("object", "page", "cdn", "all")
TERMINAL = ("done", "failed", "cancelled", "expired")
PERMANENT = (400, 401, 403, 404)

SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 2 ** 31))
SECONDS = float(os.environ.get("CHAOS_SECONDS") or (20 if WRAP else 60))
SLOW = 4.0 if WRAP else 1.0           # everything is slower under valgrind
STALL = 15.0 * SLOW                   # an answer owed this long (past its timeout): stall
CONVERGE = 90.0 * SLOW                # healed world: every request terminal within this
API_TIMEOUT = 1                       # [api] timeout, seconds
SLACK = 0.05                          # seconds of clock slack in the spacing check
HUP_LAG = 1.0                         # a SIGHUP's new interval may apply this late
STORM = 25                            # API calls per install in any one second
CONNS = 12                            # client connections in the pool (the socket)
HTTP_CONNS = 4                        # and HTTP connections after them
# CHAOS_EXCLUDE="kill -9,wait+cancel,429_far": leave actions or API answer kinds out
# (to look past a known defect)
EXCLUDE = {a.strip() for a in os.environ.get("CHAOS_EXCLUDE", "").split(",") if a.strip()}

PROFILES = {
    "calm": {"202": 90, "late": 8, "429_seconds": 2},
    "mixed": {"202": 50, "late": 6, "429": 6, "429_seconds": 8, "429_date": 8,
              "429_far": 0.5, "500": 4, "502": 2, "503": 4, "malformed": 2, "slow": 4,
              "drop": 4, "404": 0.5},
    "stormy": {"202": 20, "429": 15, "429_seconds": 15, "429_date": 15, "503": 15,
               "slow": 8, "drop": 8, "500": 4},
    "outage": {"503": 60, "drop": 20, "slow": 20},
    # Retry-After of 0-1 s or an HTTP-date up to 2 s in the past: a retry without a floor
    # turns this into a storm of calls
    "throttle": {"429_seconds": 45, "429_date": 45, "202": 10},
}


def replay():
    return "CHAOS_SEED=%d CHAOS_SECONDS=%g%s" % (
        SEED, SECONDS, " CHAOS_EXCLUDE='%s'" % ",".join(sorted(EXCLUDE)) if EXCLUDE else "")


FRAME = re.compile(r"\((/[^()+ ]+)\+(0x[0-9a-f]+)\)")


def symbolize(lines):
    """Add function and file:line to unsymbolized sanitizer frames of the daemon."""
    want = collections.defaultdict(set)
    for l in lines:
        for binary, off in FRAME.findall(l):
            if os.path.basename(binary) == "wpe-purged":
                want[binary].add(off)
    names = {}
    for binary, offs in want.items():
        offs = sorted(offs)
        try:
            out = subprocess.run(["addr2line", "-f", "-C", "-e", binary] + offs,
                                 capture_output=True, text=True, timeout=30).stdout.split("\n")
        except (OSError, subprocess.SubprocessError):
            continue
        for k, off in enumerate(offs):
            if 2 * k + 1 < len(out):
                names[(binary, off)] = "%s %s" % (out[2 * k], out[2 * k + 1])
    res = []
    for l in lines:
        m = FRAME.search(l)
        if m and (m.group(1), m.group(2)) in names:
            l = l[:m.start()] + names[(m.group(1), m.group(2))]
        res.append(l)
    return res


class Violation(Exception):
    pass


class Pending:
    __slots__ = ("op", "meta", "sent")

    def __init__(self, op, meta, sent):
        self.op, self.meta, self.sent = op, meta, sent


class Req:
    """An acknowledged request and what clients saw of it."""

    def __init__(self, rid, install, type_, sent, acked, job, conn):
        self.id, self.install, self.type = rid, install, type_
        self.sent, self.acked, self.job, self.conn = sent, acked, job, conn
        self.seen = []            # (wall time, state, op) of answers naming this request
        self.cancels = []         # outcome of each cancel: ok, finished, storage, lost
        self.final = None


class Conn:
    """One client connection: pipelined sends, a reader thread matching answers in order."""

    def __init__(self, chaos, name, path):
        self.chaos, self.name, self.path = chaos, name, path
        self.s = self.connect()
        self.lock = threading.Lock()
        self.pending = collections.deque()
        self.last_answer = time.time()
        self.doomed = False       # the daemon is being killed or stopped: EOF expected
        self.hung_up = False      # we closed it
        self.dead = False
        self.sent_n = self.answered_n = 0
        self.t = threading.Thread(target=self.reader, daemon=True)
        self.t.start()

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(STALL)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            raise
        return s

    def encode(self, op):
        return op if isinstance(op, bytes) else \
            json.dumps(op, separators=(",", ":")).encode() + b"\n"

    def send(self, items):
        """items: [(op dict or raw bytes, meta)] written in one go."""
        data = []
        now = time.time()
        with self.lock:
            for op, meta in items:
                data.append(self.encode(op))
                self.pending.append(Pending(op, meta, now))
                self.sent_n += 1
        buf = b"".join(data)
        try:
            self.s.sendall(buf)
        except socket.timeout:
            if not self.doomed:
                self.chaos.violate("stall", "connection %s: could not write %d bytes in "
                                   "%.0f s (the daemon does not read)" % (
                                       self.name, len(buf), STALL))
            raise OSError("send timed out")

    def hang_up(self):
        self.hung_up = True
        try:
            self.s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def reader(self):
        buf = b""
        while True:
            try:
                chunk = self.s.recv(262144)
            except socket.timeout:
                if self.hung_up:
                    break
                continue
            except OSError as e:
                self.dead = True
                self.chaos.on_eof(self, str(e))
                break
            if not chunk:
                self.dead = True
                self.chaos.on_eof(self, "EOF")
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                now = time.time()
                with self.lock:
                    p = self.pending.popleft() if self.pending else None
                    self.last_answer = now
                    self.answered_n += 1
                self.chaos.on_answer(self, p, line, now)
        self.dead = True
        try:
            self.s.close()
        except OSError:
            pass

    def head_deadline(self):
        """When the oldest unanswered request becomes a stall (None: nothing owed)."""
        with self.lock:
            if not self.pending:
                return None, None
            p = self.pending[0]
            since = max(p.sent, self.last_answer)
        extra = p.meta.get("timeout") or 0
        return since + extra + STALL, p


class HttpConn(Conn):
    """A kept-alive HTTP/1.1 connection: the same operations as pipelined requests, the
    answers read in order and turned into the socket's (a wait that ends first, 202, is
    the socket's timeout error), so every invariant holds for them unchanged."""

    def __init__(self, chaos, name, port, token):
        self.port, self.token = port, token
        super().__init__(chaos, name, None)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=STALL)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def encode(self, op):
        """One operation (a dict, or garbage bytes sent as an enqueue body) as a request."""
        body = b""
        if isinstance(op, bytes):
            method, path, body = "POST", "/v1/purges", op.strip()
        elif op["op"] == "enqueue":
            method, path = "POST", "/v1/purges"
            body = json.dumps({k: v for k, v in op.items() if k != "op"}).encode()
        elif op["op"] == "wait":
            method, path = "GET", "/v1/purges/%d?wait=%s" % (op["id"], op["timeout"])
        elif op["op"] == "status":
            method, path = "GET", "/v1/purges/%d" % op["id"]
        elif op["op"] == "cancel":
            method, path = "DELETE", "/v1/purges/%d" % op["id"]
        elif op["op"] == "list":
            method, path = "GET", "/v1/jobs"
        elif op["op"] in ("stats", "ping"):        # the stats answer has "protocol" too
            method, path = "GET", "/v1/stats"
        else:                                       # pause, resume
            method, path = "POST", "/v1/" + op["op"]
        head = "%s %s HTTP/1.1\r\nHost: chaos\r\nAuthorization: Bearer %s\r\n" % (
            method, path, self.token)
        if method in ("POST", "DELETE"):
            head += "Content-Length: %d\r\n" % len(body)
        return head.encode() + b"\r\n" + body

    def reader(self):
        f = self.s.makefile("rb")
        while True:
            try:
                status_line = f.readline()
                if not status_line:
                    raise EOFError("EOF")
                status = int(status_line.split()[1])
                length = 0
                while True:
                    h = f.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v.strip())
                body = f.read(length)
            except socket.timeout:
                if self.hung_up:
                    break
                continue
            except (OSError, ValueError, IndexError, EOFError) as e:
                self.dead = True
                with self.lock:
                    owed = bool(self.pending)
                # a kept-alive connection closed with nothing owed is no failure
                if owed or not isinstance(e, EOFError):
                    self.chaos.on_eof(self, str(e))
                break
            now = time.time()
            with self.lock:
                p = self.pending.popleft() if self.pending else None
                self.last_answer = now
                self.answered_n += 1
            line = body.rstrip(b"\n")
            if p is not None and not isinstance(p.op, bytes) and p.op["op"] == "wait" and \
                    status == 202:
                line = b'{"ok":false,"error":"timeout"}'
            self.chaos.on_answer(self, p, line, now)
        self.dead = True
        try:
            self.s.close()
        except OSError:
            pass


class Chaos:
    def __init__(self, test):
        self.test = test
        self.rnd = random.Random(SEED)
        self.lock = threading.RLock()
        self.violations = []
        self.fatal = threading.Event()
        self.reqs = {}                  # id -> Req
        self.order = []                 # acknowledged ids in order
        self.conns = [None] * (CONNS + HTTP_CONNS)
        self.ctl = None                 # the stats poller's connection
        self.events = []                # (time, seq, what): scheduled world actions
        self.ev_seq = 0
        self.ops = collections.Counter()
        self.answers = collections.Counter()
        self.world = collections.Counter()
        self.stats_seen = collections.deque(maxlen=6)
        self.killed = False             # the daemon is down on purpose
        self.stops = []                 # when we killed or stopped the daemon
        self.storage_bad = False
        self.limits = {"object_interval": self.rnd.choice((1, 2)), "page_interval": 0,
                       "cdn_interval": 0, "retry_initial": 1, "retry_max": 3}
        self.intervals = [(float("-inf"), self.limits["object_interval"])]
        self.api = {"timeout": API_TIMEOUT, "max_in_flight": self.rnd.choice((2, 4))}
        self.env = Env(limits=self.limits, api=self.api,
                       sim_args=["--object-interval", "0", "--install", I4, "--install", I5])
        self.api = {"base_url": "http://127.0.0.1:%d/v1" % self.env.port,
                    "credentials_file": self.env.cred, "timeout": API_TIMEOUT,
                    "max_in_flight": self.api["max_in_flight"]}
        # the HTTP listener: plain HTTP on loopback, one admin token without a rate cap
        # worth the name (pause, resume and cancelling socket users' requests as root may)
        tok = subprocess.run([DAEMON, "--new-token", "chaos"], capture_output=True,
                             text=True, check=True)
        self.token = tok.stdout.strip()
        line = [l for l in tok.stderr.splitlines() if not l.startswith("#")][0]
        tokens = os.path.join(self.env.dir, "tokens")
        with open(tokens, "w") as f:
            f.write(line + " admin rate=10000/s\n")
        os.chmod(tokens, 0o600)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.http_port = s.getsockname()[1]
        s.close()
        # idle_timeout past the run: a kept-alive connection closed under a request
        # just sent would be a lost answer the model cannot tell from a bug
        self.env.set_http(listen="127.0.0.1:%d" % self.http_port, tokens_file=tokens,
                          idle_timeout="1h")
        self.flag = os.path.join(self.env.dir, "readonly")
        self.shim_env = {
            "LD_PRELOAD": os.path.abspath(os.path.join(BUILD, "tests", "erofs.so")),
            "WPE_EROFS_FLAG": self.flag, "WPE_EROFS_MATCH": self.env.db,
            # symbolize=0: ASan's symbolizer would inherit LD_PRELOAD (an ASan-built shim
            # it cannot load); log_excerpt() symbolizes the frames with addr2line instead.
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
            ":verify_asan_link_order=0:symbolize=0"}
        self.t0 = time.time()
        self.profile = None

    # -- bookkeeping ------------------------------------------------------------------
    def rel(self, t):
        return t - self.t0

    def crashed(self, rc, how):
        with self.lock:
            if getattr(self, "crash_seen", False):
                return
            self.crash_seen = True
        sig = ""
        if rc is not None and rc < 0:
            try:
                sig = " (%s)" % signal.Signals(-rc).name
            except ValueError:
                pass
        self.violate("crash", "the daemon exited with status %s%s (%s)" % (rc, sig, how),
                     fatal=True)

    def violate(self, kind, msg, fatal=False):
        with self.lock:
            self.violations.append((kind, msg))
        if fatal:
            self.fatal.set()

    def on_eof(self, conn, why):
        if conn.doomed or conn.hung_up:
            return
        with conn.lock:
            n = len(conn.pending)
        d = self.env.daemon
        try:
            if d is not None:
                d.wait(1.0)    # an EOF nobody asked for: did it die?
        except Exception:
            pass
        if conn.doomed:
            return
        if d is not None and d.poll() is not None:
            self.crashed(d.returncode, "connection %s: %s" % (conn.name, why))
        else:
            self.violate("connection", "the daemon closed connection %s (%s) with %d "
                         "request(s) unanswered" % (conn.name, why, n))

    def on_answer(self, conn, p, line, now):
        try:
            a = json.loads(line)
        except ValueError:
            self.violate("answer", "connection %s: an answer that is not JSON: %r" % (
                conn.name, line[:200]))
            return
        if p is None:
            self.violate("answers", "connection %s: an answer with no request owed "
                         "(two answers to one request?): %s" % (conn.name, line[:300]))
            return
        if isinstance(p.op, bytes):
            kind = "garbage"
        else:
            kind = p.op["op"]
        ok = a.get("ok") is True
        self.answers["%s:%s" % (kind, "ok" if ok else a.get("error"))] += 1
        if isinstance(conn, HttpConn):
            self.ops["http answers"] += 1
        rid = None if isinstance(p.op, bytes) else p.op.get("id")
        bogus = p.meta.get("bogus")

        def bad(why):
            self.violate("answer", "connection %s: %s answered %s after %.3f s: %s\n"
                         "    request: %s" % (conn.name, kind, why, now - p.sent,
                                              line[:400].decode("utf-8", "replace"),
                                              p.op if not isinstance(p.op, bytes) else
                                              p.op[:100]))

        if kind == "garbage":
            if ok or "error" not in a:
                bad("not with an error")
            return
        if rid is not None and "id" in a and a["id"] != rid:
            bad("with another request's id (answers out of order or duplicated)")
            return
        with self.lock:
            r = self.reqs.get(rid) if rid is not None else None
        if kind == "enqueue":
            if ok:
                if not {"id", "job", "coalesced"} <= a.keys() or a.get("state") != "queued":
                    bad("with the wrong shape")
                    return
                with self.lock:
                    if a["id"] in self.reqs:
                        bad("with an id given out twice")
                        return
                    self.reqs[a["id"]] = Req(a["id"], p.op["install"].lower(),
                                             p.op.get("type", "all"), p.sent, now,
                                             a["job"], conn.name)
                    self.order.append(a["id"])
            elif a.get("error") != "storage":
                bad("with an unexpected error")
            return
        if not ok and a.get("error") == "not_found" and r is not None:
            self.violate("lost", "request %d is not_found (%s on connection %s)" % (
                rid, kind, conn.name))
            self.note(r, now, "not_found", kind)
            return
        if kind in ("status", "wait", "cancel"):
            if not ok:
                allowed = {"status": (), "wait": ("timeout",),
                           "cancel": ("finished", "storage")}[kind]
                if a.get("error") == "not_found" and bogus:
                    return
                if a.get("error") not in allowed:
                    bad("with an unexpected error")
                    return
                if kind == "wait" and p.meta.get("timeout") is not None and \
                        now - p.sent < p.meta["timeout"] - 0.02:
                    bad("timeout before its %.2f s timeout" % p.meta["timeout"])
                if kind == "cancel" and r is not None:
                    r.cancels.append(a["error"])
                    if a["error"] == "finished":
                        r.seen.append((now, "finished", kind))
                return
            if bogus:
                bad("ok for an id that was never given out")
                return
            if "state" not in a or "install" not in a:
                bad("with the wrong shape")
                return
            if r is None:
                return
            if a["install"] != r.install:
                bad("with another install")
            if kind == "wait" and a["state"] not in TERMINAL:
                bad("ok with a state that is not final")
            if kind == "cancel":
                if a["state"] != "cancelled":
                    bad("ok but not cancelled")
                r.cancels.append("ok")
            self.note(r, now, a["state"], kind)
            return
        shape = {"list": "jobs", "stats": "commits", "ping": "protocol", "pause": "paused",
                 "resume": "paused"}[kind]
        # A pause is persisted before it is answered: a database refusing writes refuses
        # it too (and nothing changed), like any other write.
        if kind in ("pause", "resume") and not ok and a.get("error") == "storage":
            return
        if not ok or shape not in a:
            bad("with the wrong shape or an error")
            return
        if kind == "stats":
            self.stats_seen.append((now, a.get("commits"), a.get("requests"),
                                    a.get("queued_jobs"), a.get("sending_jobs"),
                                    a.get("waiters")))

    def note(self, r, now, state, how):
        with self.lock:
            for t, s, h in r.seen:
                if s in TERMINAL and state in TERMINAL and s != state:
                    self.violate("final", "request %d was %s (%s, %+.3f s), now %s (%s, "
                                 "%+.3f s)" % (r.id, s, h, self.rel(t), state, how,
                                               self.rel(now)))
                    break
            r.seen.append((now, state, how))

    # -- the daemon -------------------------------------------------------------------
    def start_daemon(self):
        if os.path.exists(self.flag):
            os.unlink(self.flag)
            self.storage_bad = False
        try:
            self.env.start(extra_env=self.shim_env)
        except AssertionError as e:
            self.violate("crash", "the daemon did not start: %s" % str(e)[:3000], fatal=True)
            raise Violation("daemon did not start")
        self.killed = False

    def doom_all(self):
        for c in self.conns + [self.ctl]:
            if c is not None:
                c.doomed = True
                with c.lock:
                    for p in c.pending:
                        self.lost(p)

    def lost(self, p):
        """A request whose answer will never come (kill, stop, hang-up)."""
        if not isinstance(p.op, bytes) and p.op["op"] == "cancel":
            with self.lock:
                r = self.reqs.get(p.op["id"])
                if r is not None:
                    r.cancels.append("lost")

    def check_alive(self):
        d = self.env.daemon
        if not self.killed and d is not None and d.poll() is not None:
            self.crashed(d.returncode, "seen by the driver")

    def kill9(self):
        self.world["kill -9"] += 1
        self.doom_all()
        self.stops.append(time.time())
        self.env.kill9()
        self.killed = True
        self.conns = [None] * (CONNS + HTTP_CONNS)
        self.ctl = None
        self.schedule(self.rnd.uniform(0, 1.5), "restart")

    def stop(self):
        """SIGTERM; a daemon that does not exit within 20 s is a failure (and killed)."""
        try:
            return self.env.stop(timeout=20 * SLOW)
        except subprocess.TimeoutExpired:
            self.violate("stall", "the daemon did not exit within %.0f s of SIGTERM" % (
                20 * SLOW))
            self.env.kill9()
            return "killed"

    def term_restart(self):
        self.world["SIGTERM restart"] += 1
        if self.storage_bad:
            self.storage(False)
        self.doom_all()
        self.stops.append(time.time())
        rc = self.stop()
        self.stops.append(time.time())
        self.killed = True
        if rc != 0:
            self.violate("crash", "SIGTERM: the daemon exited with status %s" % rc,
                         fatal=True)
            return
        self.conns = [None] * (CONNS + HTTP_CONNS)
        self.ctl = None
        self.start_daemon()

    def sighup(self):
        self.world["SIGHUP"] += 1
        lim = dict(self.limits)
        lim["object_interval"] = self.rnd.choice((1, 2, 3))
        lim["page_interval"] = self.rnd.choice((0, 0, 1))
        lim["cdn_interval"] = self.rnd.choice((0, 1))
        lim["retry_max"] = self.rnd.choice((2, 3, 4))
        self.limits = lim
        self.intervals.append((time.time(), lim["object_interval"]))
        self.env.write_conf(lim, self.api)
        if self.env.daemon is not None:
            self.env.daemon.send_signal(signal.SIGHUP)

    def storage(self, bad):
        if bad:
            self.world["storage fault"] += 1
            open(self.flag, "w").close()
        elif os.path.exists(self.flag):
            os.unlink(self.flag)
        self.storage_bad = bad

    def set_profile(self, name):
        self.world["API mix " + name] += 1
        self.profile = name
        mix = {k: w for k, w in PROFILES[name].items() if k not in EXCLUDE}
        self.env.fault(random=mix or {"202": 1}, seed=self.rnd.randrange(1, 2 ** 31),
                       slow_ms=int(API_TIMEOUT * 1000 * 2), late_ms=300,
                       retry_after_max=1 if name == "throttle" else 3)

    def schedule(self, delay, what):
        self.ev_seq += 1
        self.events.append((time.time() + delay, self.ev_seq, what))
        self.events.sort()

    def run_events(self):
        now = time.time()
        while self.events and self.events[0][0] <= now:
            _, _, what = self.events.pop(0)
            if what == "restart" and self.env.daemon is None:
                self.start_daemon()
                if self.rnd.random() < 0.3:   # again, before the recovery's window ends
                    self.schedule(self.rnd.uniform(0.1, 1.5), "kill")
            elif what == "kill" and self.env.daemon is not None:
                self.kill9()
            elif what == "storage ok":
                self.storage(False)

    # -- clients ----------------------------------------------------------------------
    def conn(self, i=None):
        if self.env.daemon is None:
            return None
        if i is None:
            i = self.rnd.randrange(CONNS + HTTP_CONNS)
        c = self.conns[i]
        if c is None or c.dead or c.hung_up:
            try:
                if i >= CONNS:
                    c = HttpConn(self, "h%d.%d" % (i, self.ops["connect"]), self.http_port,
                                 self.token)
                    self.ops["http connect"] += 1
                else:
                    c = Conn(self, "c%d.%d" % (i, self.ops["connect"]), self.env.sock)
            except OSError as e:
                self.ops["connect failed"] += 1
                if not self.killed and self.env.daemon.poll() is None:
                    self.connect_failures = getattr(self, "connect_failures", 0) + 1
                    if self.connect_failures > 50:
                        self.violate("stall", "cannot connect to the running daemon: %s" % e)
                return None
            self.connect_failures = 0
            self.ops["connect"] += 1
            self.conns[i] = c
        return c

    def pick_id(self, fresh=0.7):
        with self.lock:
            n = len(self.order)
            if n == 0 or self.rnd.random() < 0.03:
                return 10 ** 9 + self.rnd.randrange(1000), True
            if self.rnd.random() < fresh:
                return self.order[max(0, n - 1 - self.rnd.randrange(min(n, 30)))], False
            return self.order[self.rnd.randrange(n)], False

    def op_enqueue(self):
        rnd = self.rnd
        inst = UNKNOWN if rnd.random() < 0.03 else rnd.choice(INSTALLS)
        if rnd.random() < 0.05:
            inst = inst.upper()
        op = {"op": "enqueue", "install": inst}
        t = rnd.choice(TYPES + ("default",))
        if t != "default":
            op["type"] = t
        if rnd.random() < 0.3:
            op["reason"] = "chaos %d" % rnd.randrange(10 ** 6)
        return op, {}

    def op_wait(self, rid=None, bogus=False):
        if rid is None:
            rid, bogus = self.pick_id()
        timeout = self.rnd.choice((0, 0.05, 0.3, 0.3, 1, 2, 3))
        return {"op": "wait", "id": rid, "timeout": timeout}, {"timeout": timeout,
                                                             "bogus": bogus}

    def op_simple(self, name):
        if name in ("status", "cancel"):
            rid, bogus = self.pick_id()
            return {"op": name, "id": rid}, {"bogus": bogus}
        return {"op": name}, {}

    def op_random(self):
        kinds = [(k, w) for k, w in (("enqueue", 5), ("wait", 3), ("status", 3),
                                     ("cancel", 1), ("list", 1), ("ping", 1),
                                     ("garbage", 0.3)) if k not in EXCLUDE]
        k = self.rnd.choices(*zip(*kinds))[0]
        if k == "enqueue":
            return self.op_enqueue()
        if k == "wait":
            return self.op_wait()
        if k == "garbage":
            return self.rnd.choice((b"{nope\n", b'{"op":"enqueue","install":"x"}\n',
                                    b'{"op":"warp"}\n', b'[1,2]\n')), {}
        return self.op_simple(k)

    ACTIONS = (
        ("enqueue", 30), ("burst", 1), ("wait", 10), ("wait+cancel", 4),
        ("wait+cancel other", 3), ("cancel", 5), ("status", 8), ("list", 3), ("ping", 2),
        ("mix", 8), ("wait+pings", 0.4), ("hang up", 1), ("pause", 1), ("resume", 2),
        ("sighup", 1.2), ("api mix", 2), ("kill -9", 0.3), ("sigterm restart", 0.1),
        ("storage fault", 1.5),
    )

    def step(self):
        names, weights = zip(*[(n, w) for n, w in self.ACTIONS if n not in EXCLUDE])
        a = self.rnd.choices(names, weights)[0]
        rnd = self.rnd
        if a == "sighup":
            return self.sighup()
        if a == "api mix":
            return self.set_profile(rnd.choice(("calm", "mixed", "mixed", "stormy",
                                                "outage", "throttle")))
        if a == "kill -9":
            if self.env.daemon is not None:
                self.kill9()
            return
        if a == "sigterm restart":
            if self.env.daemon is not None:
                self.term_restart()
            return
        if a == "storage fault":
            if self.env.daemon is not None and not self.storage_bad:
                self.storage(True)
                self.schedule(rnd.uniform(0.05, 1.0), "storage ok")
            return
        c = self.conn()
        if c is None:
            self.ops["skipped (daemon down)"] += 1
            return
        items = []
        if a == "enqueue":
            items = [self.op_enqueue() for _ in range(rnd.randint(1, 6))]
        elif a == "burst":
            # an HTTP connection reads its next request once the last one is answered
            # (after its commit): a smaller burst keeps it within the stall bound
            n = rnd.randint(20, 200) if isinstance(c, HttpConn) else rnd.randint(100, 1200)
            items = [self.op_enqueue() for _ in range(n)]
        elif a == "wait":
            items = [self.op_wait()]
        elif a == "wait+cancel":
            w = self.op_wait()
            items = [w, ({"op": "cancel", "id": w[0]["id"]}, {"bogus": w[1]["bogus"]})]
        elif a == "wait+cancel other":
            w = self.op_wait()
            items = [w, self.op_simple("cancel")]
            c2 = self.conn()
            if c2 is not None and c2 is not c:
                self.ops["wait"] += 1
                self.send(c2, [self.op_wait(items[1][0]["id"], items[1][1]["bogus"])])
        elif a in ("cancel", "status", "list", "ping", "pause", "resume"):
            items = [self.op_simple(a)]
        elif a == "mix":
            items = [self.op_random() for _ in range(rnd.randint(2, 8))]
        elif a == "wait+pings":
            items = [self.op_wait()] + [({"op": "ping"}, {})] * rnd.randint(500, 6000)
        elif a == "hang up":
            with c.lock:
                for p in c.pending:
                    self.lost(p)
            self.ops["hang up"] += 1
            c.hang_up()
            return
        for op, _ in items:
            self.ops["garbage" if isinstance(op, bytes) else op["op"]] += 1
        self.send(c, items)

    def send(self, c, items):
        if isinstance(c, HttpConn):
            self.ops["http requests"] += len(items)
        try:
            c.send(items)
        except OSError:
            if not c.doomed and not c.hung_up:
                self.check_alive()

    def poll_stats(self):
        if self.env.daemon is None:
            return
        if self.ctl is None or self.ctl.dead:
            try:
                self.ctl = Conn(self, "stats", self.env.sock)
            except OSError:
                return
        with self.ctl.lock:
            busy = bool(self.ctl.pending)
        if not busy:
            self.ops["stats"] += 1
            self.send(self.ctl, [({"op": "stats"}, {})])

    def check_stalls(self):
        now = time.time()
        if self.killed:
            return
        for c in self.conns + [self.ctl]:
            if c is None or c.doomed or c.hung_up or c.dead:
                continue
            deadline, p = c.head_deadline()
            if deadline is not None and now > deadline:
                self.violate("stall", "connection %s: %s sent %.1f s ago is unanswered "
                             "(%d request(s) owed) while the daemon runs; recent stats "
                             "(t, commits, requests, queued, sending, waiters): %s" % (
                                 c.name, p.op if not isinstance(p.op, bytes) else p.op,
                                 now - p.sent, len(c.pending),
                                 [(round(self.rel(s[0]), 1),) + s[1:]
                                  for s in self.stats_seen]), fatal=True)
                return

    # -- the run ----------------------------------------------------------------------
    def drive(self):
        self.start_daemon()
        self.set_profile("mixed")
        end = time.time() + SECONDS
        next_stats = 0
        while time.time() < end and not self.fatal.is_set():
            self.run_events()
            self.step()
            if time.time() >= next_stats:
                self.poll_stats()
                next_stats = time.time() + 1.0
            self.check_alive()
            self.check_stalls()
            if self.violations:
                break
            time.sleep(self.rnd.uniform(0.005, 0.06) * SLOW)

    def heal(self):
        self.events = []
        urllib.request.urlopen(urllib.request.Request(
            "http://127.0.0.1:%d/_sim/reset" % self.env.port, data=b"{}", method="POST"),
            timeout=5).close()
        self.storage(False)
        if self.env.daemon is None:
            self.start_daemon()
        self.heal_t = time.time()

    def resume(self):
        """After the drain: a pause still queued behind a wait has been handled now."""
        r = self.request({"op": "resume"})
        if not r or r.get("paused") is not False:
            self.violate("answer", "resume answered %s" % r)

    def request(self, op, timeout=None):
        """One request on a fresh connection; None if the daemon does not answer."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout or STALL)
        try:
            s.connect(self.env.sock)
            s.sendall(json.dumps(op).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            return json.loads(buf.split(b"\n", 1)[0])
        except (OSError, ValueError):
            return None
        finally:
            s.close()

    def statuses(self, ids):
        """The status of each id, over one connection, 50 pipelined at a time."""
        out = {}
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(STALL)
        try:
            s.connect(self.env.sock)
            f = s.makefile("rb")
            for i in range(0, len(ids), 50):
                chunk = ids[i:i + 50]
                s.sendall(b"".join(json.dumps({"op": "status", "id": rid}).encode() + b"\n"
                                   for rid in chunk))
                for rid in chunk:
                    line = f.readline()
                    if not line:
                        return out
                    out[rid] = json.loads(line)
        except (OSError, ValueError):
            pass
        finally:
            s.close()
        return out

    def drain(self):
        """Every request still owed on a live connection gets its answer."""
        for c in self.conns + [self.ctl]:
            if c is None or c.doomed or c.hung_up:
                continue
            while not c.dead:
                deadline, p = c.head_deadline()
                if deadline is None:
                    break
                if time.time() > deadline:
                    self.violate("stall", "connection %s: %d request(s) never answered "
                                 "after the world healed (first: %s, sent %+.3f)" % (
                                     c.name, len(c.pending), p.op, self.rel(p.sent)))
                    break
                time.sleep(0.05)
        time.sleep(0.5)   # a duplicate answer would arrive now
        for c in self.conns + [self.ctl]:
            if c is not None and not c.doomed and not c.hung_up and not c.dead:
                if c.answered_n != c.sent_n:
                    self.violate("answers", "connection %s: %d requests, %d answers" % (
                        c.name, c.sent_n, c.answered_n))
                c.hang_up()

    def probe_storage(self):
        """After the storage heals, an enqueue must succeed again."""
        end = time.time() + 30 * SLOW
        last = None
        while time.time() < end:
            t = time.time()
            last = self.request({"op": "enqueue", "install": I1, "type": "page",
                                 "reason": "probe"})
            if last and last.get("ok"):
                with self.lock:
                    self.reqs[last["id"]] = Req(last["id"], I1, "page", t, time.time(),
                                                last["job"], "probe")
                    self.order.append(last["id"])
                return
            time.sleep(0.5)
        self.violate("storage", "storage is writable again but enqueue still answers %s"
                     % last)

    def converge(self, what):
        """Poll every acknowledged request until all are final; return their statuses."""
        end = time.time() + CONVERGE
        final = {}
        todo = list(self.order)
        while True:
            rest = []
            got = self.statuses(todo)
            for rid in todo:
                s = got.get(rid)
                if s is None:
                    rest.append(rid)
                    continue
                final[rid] = s
                if s.get("state") not in TERMINAL and s.get("error") != "not_found":
                    rest.append(rid)
            self.check_alive()
            if self.fatal.is_set():
                return final
            todo = rest
            if not todo or time.time() > end:
                break
            time.sleep(0.5)
        by_job = collections.OrderedDict()
        for rid in todo:
            by_job.setdefault((final.get(rid) or {}).get("job"), []).append(rid)
        for job, rids in by_job.items():
            r = self.reqs[rids[0]]
            r.final = final.get(rids[0])
            self.req_violation("stuck", r, "is not final %.0f s after the world healed (%s)%s"
                               % (CONVERGE, what, "; %d more request(s) of job %s too: %s" % (
                                   len(rids) - 1, job, rids[1:20]) if len(rids) > 1 else ""))
        return final

    # -- final checks -----------------------------------------------------------------
    def calls(self):
        cs = self.env.calls()
        for c in cs:
            c.setdefault("arrived", c["t"])
        cs.sort(key=lambda c: c["arrived"])
        return cs

    def interval_between(self, a, b):
        """The smallest object interval in force at some instant of [a, b]."""
        ivs = self.intervals
        v = None
        for i, (start, val) in enumerate(ivs):
            stop = ivs[i + 1][0] + HUP_LAG if i + 1 < len(ivs) else float("inf")
            if start <= b and stop >= a:
                v = val if v is None else min(v, val)
        return v

    def check_requests(self, final, calls):
        by_inst = collections.defaultdict(list)
        for c in calls:
            by_inst[c["install"]].append(c)
        for rid in self.order:
            r = self.reqs[rid]
            s = final.get(rid)
            r.final = s
            if s is None:
                continue
            if not s.get("ok"):
                self.req_violation("lost", r, "final status is %s" % s)
                continue
            st = s.get("state")
            if st not in TERMINAL:
                continue   # reported as stuck
            for t, seen, how in r.seen:
                if seen in TERMINAL and seen != st:
                    self.req_violation("final", r, "a %s answer said %s at %+.3f s; final "
                                       "state %s" % (how, seen, self.rel(t), st))
                    break
            covers = ("all", r.type) if r.type != "all" else ("all",)
            if st == "done":
                if "ok" in r.cancels:
                    self.req_violation("done", r, "done although a cancel was answered ok")
                hit = [c for c in by_inst[r.install] if 200 <= c["status"] < 300 and
                       c["type"] in covers and c["arrived"] >= r.sent and
                       c["t"] - c["arrived"] < API_TIMEOUT]
                if not hit:
                    self.req_violation("trailing edge", r, "done, but no 2xx purge of a "
                                       "covering type (%s) arrived at the API after the "
                                       "request was sent" % "/".join(covers))
            elif st == "failed":
                hs = s.get("http_status")
                hit = [c for c in by_inst[r.install] if c["status"] == hs and
                       c["type"] in covers and c["arrived"] >= r.sent]
                if hs not in PERMANENT or not hit:
                    self.req_violation("failed", r, "failed with http_status %s: not a "
                                       "permanent error the API gave a covering purge "
                                       "sent after the request" % hs)
            elif st == "cancelled":
                if not any(x in ("ok", "lost") for x in r.cancels):
                    self.req_violation("cancelled", r, "cancelled, but no cancel of it was "
                                       "answered ok (cancels: %s)" % (r.cancels or "none"))

    def check_spacing(self, calls):
        acted = collections.defaultdict(list)
        for c in calls:
            if 200 <= c["status"] < 300 and c["type"] in ("object", "all"):
                acted[c["install"]].append(c)
        for inst, cs in acted.items():
            for i in range(1, len(cs)):
                b = cs[i]
                for a in cs[max(0, i - 4):i]:
                    done_at = self.acted_at(a)
                    need = self.interval_between(a["arrived"], b["arrived"])
                    if b["arrived"] - done_at < need - SLACK:
                        self.violate("spacing", "install %s: accepted %s purge (call %s) "
                                     "arrived %.3f s after the accepted %s purge (call %s) "
                                     "was acted on; the object interval in force was %s s"
                                     "\n%s" % (inst, b["type"], b.get("seq"),
                                               b["arrived"] - done_at, a["type"],
                                               a.get("seq"), need,
                                               self.fmt_calls([c for c in calls if
                                                               c["install"] == inst and
                                                               a["arrived"] - 3 <=
                                                               c["arrived"] <=
                                                               b["arrived"] + 1])))

    def acted_at(self, c):
        """When the daemon knew the API had acted on call c: its answer, if the daemon
        got it (answered before the API timeout, no kill or stop in between), else its
        arrival (the API acted on it; the daemon's timeout or restart came later)."""
        i = bisect.bisect_left(self.stops, c["arrived"] - 0.01)
        stopped = i < len(self.stops) and self.stops[i] <= c["t"] + 0.01
        if c["t"] - c["arrived"] < API_TIMEOUT and not stopped:
            return c["t"]
        return c["arrived"]

    CLASSES = {"object": {"object"}, "page": {"page"}, "cdn": {"cdn"},
               "all": {"object", "page", "cdn"}}

    def check_overlap(self, calls):
        """One purge per install and cache class in flight: a call is in flight from its
        arrival until its answer or the daemon's API timeout, whichever comes first;
        calls that a kill or stop cut off are left out (a restart may resend them)."""
        by_inst = collections.defaultdict(list)
        for c in calls:
            if c["type"] not in self.CLASSES:
                continue
            end = min(c["t"], c["arrived"] + API_TIMEOUT)
            i = bisect.bisect_left(self.stops, c["arrived"] - 0.01)
            if i < len(self.stops) and self.stops[i] <= end + 0.01:
                continue
            by_inst[c["install"]].append((c, end))
        for inst, cs in by_inst.items():
            for k, (b, _) in enumerate(cs):
                for a, a_end in cs[max(0, k - 8):k]:
                    if b["arrived"] < a_end - SLACK and \
                            self.CLASSES[a["type"]] & self.CLASSES[b["type"]]:
                        self.violate("overlap", "install %s: %s purge (call %s) arrived "
                                     "while the %s purge (call %s) was in flight\n%s" % (
                                         inst, b["type"], b.get("seq"), a["type"],
                                         a.get("seq"), self.fmt_calls([a, b])))
                        return

    def check_storms(self, calls):
        by_inst = collections.defaultdict(list)
        for c in calls:
            by_inst[c["install"]].append(c["arrived"])
        for inst, ts in by_inst.items():
            for i, t in enumerate(ts):
                j = bisect.bisect_right(ts, t + 1.0)
                if j - i > STORM:
                    self.violate("storm", "install %s: %d API calls within 1 s from %+.3f s"
                                 " (a retry without a floor?)\n%s" % (
                                     inst, j - i, self.rel(t),
                                     self.fmt_calls([c for c in calls if c["install"] ==
                                                     inst and t <= c["arrived"] <=
                                                     t + 1][:12])))
                    break

    def fmt_calls(self, cs):
        return "\n".join("      call %s: arrived %+.3f answered %+.3f %s %s -> %s %s%s" % (
            c.get("seq"), self.rel(c["arrived"]), self.rel(c["t"]), c["install"][:8],
            c["type"], c["status"], c.get("kind") or "", (" " + c["note"]) if c.get("note")
            else "") for c in cs) or "      (no calls)"

    def cached(self, name, path, load):
        """load() again only when the file at path has grown."""
        size = os.path.getsize(path) if os.path.exists(path) else 0
        c = self.__dict__.setdefault("_cache", {})
        if name not in c or c[name][0] != size:
            c[name] = (size, load())
        return c[name][1]

    def req_violation(self, kind, r, msg):
        n = self.__dict__.setdefault("_detailed", collections.Counter())
        n[kind] += 1
        if n[kind] > 10:   # enough detail; the rest in one line each
            self.violate(kind, "request %d (%s %s): %s; final %s" % (
                r.id, r.install[:8], r.type, msg, json.dumps(r.final)))
            return
        calls = [c for c in self.cached("calls", self.env.simlog, self.calls)
                 if c["install"] == r.install and r.sent - 5 <= c["arrived"] <= r.sent + 60]
        job = (r.final or {}).get("job", r.job)
        log = self.cached("log", self.env.daemon_log, lambda: [
            l for l in self.env.log().splitlines() if " debug: " not in l])
        logl = [l for l in log if
                ("request %d " % r.id) in l or ("request %d:" % r.id) in l or
                ("job %s:" % job) in l or ("job %s " % job) in l][-12:]
        self.violate(kind, "request %d (%s %s, connection %s) %s\n"
                     "    sent %+.3f, acknowledged %+.3f (job %s), cancels: %s\n"
                     "    seen: %s\n    final: %s\n    simulator calls for the install "
                     "from 5 s before:\n%s\n    daemon log:\n%s" % (
                         r.id, r.install[:8], r.type, r.conn, msg, self.rel(r.sent),
                         self.rel(r.acked), r.job, r.cancels or "none",
                         ", ".join("%s@%+.3f(%s)" % (s, self.rel(t), h)
                                   for t, s, h in r.seen[-8:]) or "nothing",
                         json.dumps(r.final), self.fmt_calls(calls[:25]),
                         "\n".join("      " + l for l in logl) or "      (nothing)"))

    CRASH_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                   "double free", "corrupted", "Assertion", "free(): ", "malloc(): ")

    def log_excerpt(self):
        """The sanitizer or abort report with what led to it, else the log's tail."""
        log = [l for l in self.env.log().splitlines() if " debug: " not in l]
        for i, l in enumerate(log):
            if any(k in l for k in self.CRASH_MARKS):
                rep = log[i:i + 60]
                rep = [l for k, l in enumerate(rep) if not any(
                    m.startswith("Shadow bytes") for m in rep[:k + 1])]
                return (["--- daemon log around the report, debug lines left out (%s) ---"
                         % self.env.daemon_log] + log[max(0, i - 15):i] + symbolize(rep))
        return ["--- daemon log tail, debug lines left out (%s) ---" %
                self.env.daemon_log] + log[-40:]

    def check_log(self):
        for l in self.env.log().splitlines():
            if any(k in l for k in self.CRASH_MARKS):
                self.violate("crash", "sanitizer/abort report in the daemon log: " + l)
                return

    def finish(self):
        """Heal, check the final states, stop cleanly, restart, check again."""
        final = {}
        for phase in (self.heal, self.drain, self.resume, self.probe_storage):
            if self.fatal.is_set():
                break
            phase()
            self.check_alive()
        if not self.fatal.is_set():
            final = self.converge("first pass")
        calls = self.calls()
        if not self.fatal.is_set():
            self.check_requests(final, calls)
            self.check_spacing(calls)
            self.check_storms(calls)
            self.check_overlap(calls)
            # A clean restart: what clients were told must be what the store kept.
            self.doom_all()
            rc = self.stop()
            if rc != 0:
                self.violate("crash", "SIGTERM: the daemon exited with status %s" % rc)
            else:
                self.env.start()
                after = self.converge("after a clean restart")
                for rid in self.order:
                    b, a = final.get(rid) or {}, after.get(rid) or {}
                    if b.get("state") in TERMINAL and a.get("state") != b.get("state"):
                        self.req_violation("persisted", self.reqs[rid], "was %s before a "
                                           "clean restart, %s after" % (
                                               b.get("state"), a.get("state") or a))
                rc = self.stop()
                if rc != 0:
                    self.violate("crash", "SIGTERM: the daemon exited with status %s" % rc)
        elif self.env.daemon is not None and self.env.daemon.poll() is None:
            self.doom_all()
            self.stop()
        else:
            self.env.daemon = None
        self.check_log()
        if os.path.exists(self.env.db):
            try:
                con = sqlite3.connect(self.env.db)
                res = con.execute("PRAGMA integrity_check").fetchall()
                con.close()
                if res != [("ok",)]:
                    self.violate("integrity", "PRAGMA integrity_check: %s" % res[:10])
            except sqlite3.Error as e:
                self.violate("integrity", "PRAGMA integrity_check: %s" % e)
        api = collections.Counter()
        for c in calls:
            api[c.get("kind") or str(c["status"])] += 1
        states = collections.Counter((r.final or {}).get("state", "?")
                                     for r in self.reqs.values())
        return api, states


class ChaosTest(unittest.TestCase):
    def test_chaos(self):
        print("\nchaos: seed %d, %.0f s (replay: %s)%s" % (
            SEED, SECONDS, replay(), " under " + WRAP[0] if WRAP else ""), flush=True)
        ch = Chaos(self)
        ok = False
        try:
            try:
                ch.drive()
            except Violation:
                pass
            api, states = ch.finish()
            ops = ", ".join("%s %d" % kv for kv in sorted(ch.ops.items()))
            world = ", ".join("%s %d" % kv for kv in sorted(ch.world.items()))
            print("chaos: seed %d | %.0f s | ops: %s | world: %s | API answers: %s | "
                  "requests checked: %s" % (
                      SEED, time.time() - ch.t0, ops, world,
                      ", ".join("%s %d" % kv for kv in sorted(api.items())),
                      "%d (%s; %d enqueued over HTTP)" % (len(ch.reqs), ", ".join(
                          "%s %d" % kv for kv in sorted(states.items())),
                          sum(r.conn.startswith("h") for r in ch.reqs.values()))
                      if not ch.fatal.is_set() else
                      "none (stopped at a crash or stall; %d acknowledged)" % len(ch.reqs)),
                  flush=True)
            if not ch.fatal.is_set() and SECONDS >= 10 and not ch.ops["http answers"]:
                ch.violate("http", "no HTTP client got an answer in the whole run")
            if ch.violations:
                kinds = collections.Counter(k for k, _ in ch.violations)
                msg = ["CHAOS FAILURE, seed %d (replay: %s): %d violation(s): %s" % (
                    SEED, replay(), len(ch.violations), dict(kinds))]
                for k, m in ch.violations[:12]:
                    msg.append("[%s] %s" % (k, m))
                msg.extend(ch.log_excerpt())
                self.fail("\n".join(msg))
            ok = True
        finally:
            for c in ch.conns + [ch.ctl]:
                if c is not None:
                    c.doomed = True
                    c.hang_up()
            if ch.env.daemon is not None and ch.env.daemon.poll() is not None:
                ch.env.daemon = None
            if ok:
                ch.env.close()
            else:
                if ch.env.daemon is not None:
                    ch.env.kill9()
                ch.env.stop_sim()
                print("chaos: kept %s (daemon.log, sim.log, queue.sqlite)" % ch.env.dir,
                      file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
