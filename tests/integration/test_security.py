"""test_security.py: who may talk to the daemon, hostile input, faults, and their proofs."""
import glob
import json
import mmap
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (CTL, DAEMON, I1, I2, I3, PASSWORD, WRAP, Client, Env, EnvTest,
                     wait_for)

NOBODY = 65534
ROOT = os.geteuid() == 0


@unittest.skipUnless(ROOT, "needs root to act as other users")
class Access(EnvTest):
    daemon = "socket_mode = 0666\nallow_users = 0, 4200\nallow_groups = 4242\nadmin_group = 4343\n"

    def test_outsider_gets_forbidden_and_is_disconnected(self):
        rc, answers, err = self.env.as_user(NOBODY, NOBODY, args=["ping"])
        self.assertEqual(rc, 6, err)          # exit 6: not allowed
        self.assertIn("may not use wpe-purged", err)
        self.assertIn("refused client uid 65534", self.env.log())
        # and nothing it sends is read: enqueue never reaches the store
        rc, answers, err = self.env.as_user(NOBODY, NOBODY, args=["enqueue", I1])
        self.assertEqual(rc, 6)
        self.assertEqual(self.env.request({"op": "stats"})["requests"], 0)

    def test_socket_permission_denied_names_the_group(self):
        # a socket only its group may open: an outsider gets exit 6 and the group name
        os.chmod(self.env.sock, 0o660)
        os.chown(self.env.sock, 0, 4242)
        try:
            rc, answers, err = self.env.as_user(4200, 4200, args=["ping"])
        finally:
            os.chmod(self.env.sock, 0o666)
        self.assertEqual(rc, 6, err)
        self.assertIn("permission denied", err)
        self.assertIn("usermod -aG", err)
        self.assertRegex(err, r'group "(4242|[a-z][-a-z0-9_]*)"')

    def test_allowed_by_user_and_by_group(self):
        rc, answers, err = self.env.as_user(4200, 4200, args=["ping"])
        self.assertEqual(rc, 0, err)
        rc, answers, err = self.env.as_user(NOBODY, 4242, args=["ping"])  # primary group
        self.assertEqual(rc, 0, err)
        rc, answers, err = self.env.as_user(NOBODY, NOBODY, groups=[4242], args=["ping"])
        self.assertEqual(rc, 0, err)                                      # supplementary

    def test_pause_and_foreign_cancel_need_admin(self):
        rc, answers, err = self.env.as_user(4200, 4200, args=["pause"])
        self.assertEqual(rc, 6)
        self.assertIn("admin_group", err)
        self.assertFalse(self.env.request({"op": "stats"})["paused"])
        rc, answers, err = self.env.as_user(4200, 4200, groups=[4343], args=["pause"])
        self.assertEqual(rc, 0, err)
        self.assertTrue(self.env.request({"op": "stats"})["paused"])
        mine = self.env.as_user(4200, 4200, args=["enqueue", I1, "-t", "page"])[1][0]["id"]
        theirs = self.enqueue(I2, "page")["id"]  # root's
        rc, answers, err = self.env.as_user(4200, 4200, args=["cancel", str(theirs)])
        self.assertEqual(rc, 6)
        self.assertIn("another user", err)
        self.assertEqual(self.status(theirs)["state"], "queued")
        rc, answers, err = self.env.as_user(4200, 4200, args=["cancel", str(mine)])
        self.assertEqual(rc, 0, err)
        rc, answers, err = self.env.as_user(NOBODY, 4242, groups=[4343],
                                            args=["cancel", str(theirs)])
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.status(theirs)["state"], "cancelled")

    def test_requests_are_logged_with_peer_credentials(self):
        self.env.as_user(4200, 4200, args=["enqueue", I3, "-t", "cdn"])
        self.assertRegex(self.env.log(), r"request 1: cdn purge of %s \(install3\) from uid 4200"
                         r" pid \d+" % I3)


class Connections(EnvTest):
    daemon = "max_connections_per_user = 5\nidle_timeout = 1\n"

    def dropped(self):
        log = self.env.log()
        return "does not read" in log or "closing stalled" in log

    def flood(self, conn, chunk):
        """Send requests and never read, until the daemon drops us (or time runs out)."""
        end = time.monotonic() + (60 if WRAP else 10)
        while time.monotonic() < end and not self.dropped():
            try:
                conn.s.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break   # dropped

    # The per-user cap (evict the longest-idle, never a waiting connection) is tested in
    # test_correctness.ConnectionRules.

    def test_idle_connections_time_out_but_waiters_do_not(self):
        self.env.request({"op": "pause"})
        r = self.enqueue(I1, "page")
        with self.env.connect() as idle, self.env.connect() as waiter:
            waiter.send({"op": "wait", "id": r["id"], "timeout": 2.5})
            time.sleep(1.6)
            with self.assertRaises((EOFError, OSError)):
                idle.call({"op": "ping"})
            self.assertEqual(waiter.recv()["error"], "timeout")

    def test_slow_reader_is_dropped_others_served(self):
        flood = self.env.connect()
        flood.s.setblocking(False)
        chunk = (json.dumps({"op": "stats"}) + "\n").encode() * 4000   # ~70 KB a write
        self.flood(flood, chunk)
        # the flooder never read an answer: its requests wait behind its unread answers
        # (256 KiB), and it is dropped once they make no progress for idle_timeout;
        # others were served meanwhile
        self.assertTrue(self.dropped(), "not dropped")
        self.assertTrue(self.env.request({"op": "ping"})["ok"])
        flood.s.close()


    def test_reader_of_nothing_flooding_waits(self):
        # waits for a finished request are answered at once, inside the request handler:
        # dropping the connection there must not pull it from under the handler
        r = self.enqueue(I1, "page", reason="r" * 1000)   # ~1.3 KB per answer
        self.wait_state(r["id"])
        flood = self.env.connect()
        flood.s.setblocking(False)
        chunk = (json.dumps({"op": "wait", "id": r["id"]}) + "\n").encode() * 2000
        self.flood(flood, chunk)
        self.assertTrue(self.dropped(), "not dropped")
        flood.s.close()
        self.assertTrue(self.env.request({"op": "ping"})["ok"])


class ManyConnections(EnvTest):
    daemon = "max_connections_per_user = 10000\n"

    def setUp(self):
        # Raised before the daemon starts: under valgrind it cannot raise its own limit
        # past the one it inherits (a fresh nspawn container starts at 1024).
        self.saved_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        soft, hard = self.saved_limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        super().setUp()

    def tearDown(self):
        super().tearDown()
        resource.setrlimit(resource.RLIMIT_NOFILE, self.saved_limit)

    def test_two_thousand_connections_held(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 4096)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        n = min(2000, want - 100)
        held = []
        try:
            while len(held) < n:
                try:
                    held.append(self.env.connect())
                except BlockingIOError:   # listen backlog full: let it accept
                    time.sleep(0.01)
            for c in held[::97]:
                self.assertTrue(c.call({"op": "ping"})["ok"])
            st = self.env.request({"op": "stats"})
            self.assertGreaterEqual(st["connections"], n)
            print("\nheld %d connections at once" % st["connections"])
        finally:
            for c in held:
                c.s.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class DescriptorExhaustion(unittest.TestCase):
    def test_emfile_then_recovers(self):
        env = Env()
        try:
            # start the daemon with only 40 descriptors
            env.log_f = open(env.daemon_log, "a")
            env.daemon = subprocess.Popen(["prlimit", "--nofile=40:40", DAEMON, "-c",
                                           env.conf, "-v"], stderr=env.log_f)
            wait_for(lambda: env.ctl("ping")[0] == 0, what="daemon ready")
            held = []
            for _ in range(60):
                try:
                    held.append(env.connect())
                except OSError:
                    break
            wait_for(lambda: "pausing new connections" in env.log(), what="EMFILE seen")
            for c in held:
                c.s.close()
            # it serves new clients once descriptors free up (accept retried after 1 s)
            wait_for(lambda: env.ctl("ping", timeout=5)[0] == 0, timeout=10,
                     what="served after EMFILE")
            self.assertEqual(env.ctl("enqueue", I1, "-t", "page", "--wait")[0], 0)
        finally:
            env.close()


class HostileInput(EnvTest):
    def test_random_garbage_never_hurts(self):
        rnd = random.Random(1234)
        pieces = ['{', '}', '[', ']', '"', ':', ',', 'op', 'enqueue', 'install', I1, 'null',
                  '1e999', '-0', '\\u0000', '\\ud800', '\xff', '\x00', '\t', ' ', 'type',
                  'all', 'id', '99999999999999999999999', '{"op":', '"wait"']
        with self.env.connect() as c:
            for i in range(2000):
                line = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 30)))
                c.send(line.encode("utf-8", "surrogateescape").replace(b"\n", b"") + b"\n")
                if line.strip("\r\t ") == "":
                    continue
                r = c.recv()
                self.assertIn("ok", r)
        self.assertTrue(self.env.request({"op": "ping"})["ok"])
        time.sleep(0.3)
        self.assertEqual(self.env.calls(), [])  # nothing reached the API

    def test_deep_nesting_and_huge_numbers(self):
        with self.env.connect() as c:
            self.assertEqual(c.call("[" * 10000 + "\n")["error"], "bad_json")
            self.assertEqual(c.call('{"op":"status","id":%s}\n' % ("9" * 400))["ok"], False)
            self.assertEqual(c.call('{"op":"wait","id":1,"timeout":1e308}\n')["error"],
                             "bad_value")
            self.assertEqual(c.call('{"op":"ping","op":"ping"}\n')["error"],
                             "duplicate_field")
            self.assertTrue(c.call({"op": "ping"})["ok"])

    def test_binary_and_nul_bytes(self):
        with self.env.connect() as c:
            c.send(b'{"op":"ping"}\x00\n')
            self.assertEqual(c.recv()["error"], "bad_json")
            c.send(b'{"op":"enqueue","install":"' + I1.encode() + b'","reason":"\xc3\x28"}\n')
            self.assertEqual(c.recv()["error"], "bad_json")
            self.assertTrue(c.call({"op": "ping"})["ok"])


class HostileApi(EnvTest):
    limits = {"retry_initial": 1, "retry_max": 3}

    def test_huge_body_is_capped(self):
        self.env.fault(status=503, body_size=8 * 1024 * 1024)
        r = self.enqueue(I1, "page")
        s = wait_for(lambda: (lambda s: s if s["attempts"] == 1 and s["state"] == "queued"
                              else None)(self.status(r["id"])), timeout=10, what="503")
        self.assertLessEqual(len(s["message"]), 600)
        self.wait_state(r["id"], timeout=10)

    def test_redirect_not_followed(self):
        self.env.fault(status=302, location="http://127.0.0.1:%d/v1/elsewhere" % self.env.port)
        r = self.enqueue(I1, "page")
        self.wait_state(r["id"], timeout=10)
        notes = [c["note"] for c in self.env.calls()]
        self.assertEqual(notes, ["redirect", ""])  # no call to the Location
        self.assertEqual(self.status(r["id"])["attempts"], 2)

    def test_absurd_retry_after_is_capped(self):
        self.env.fault(status=429, retry_after="999999999999999999999")
        r = self.enqueue(I1, "page")
        t0 = time.time()
        self.wait_state(r["id"], timeout=10)
        self.assertLess(time.time() - t0, 6)   # capped at retry_max (3 s)

    def test_password_never_leaks(self):
        self.enqueue(I1, "page")
        r = self.enqueue("deadbeef-dead-4eef-8ead-beefdeadbeef", "page")
        self.wait_state(r["id"], ("failed",))
        with open("/proc/%d/cmdline" % self.env.daemon.pid, "rb") as f:
            self.assertNotIn(PASSWORD.encode(), f.read())
        with open("/proc/%d/environ" % self.env.daemon.pid, "rb") as f:
            self.assertNotIn(PASSWORD.encode(), f.read())
        everything = json.dumps([self.status(r["id"]), self.env.request({"op": "list"}),
                                 self.env.request({"op": "stats"})])
        self.assertNotIn(PASSWORD, everything)
        self.assertNotIn(PASSWORD, self.env.log())
        p = subprocess.run([DAEMON, "-c", self.env.conf, "--check-config", "-v"],
                           capture_output=True, text=True)
        self.assertNotIn(PASSWORD, p.stdout + p.stderr)


class SocketDirectory(unittest.TestCase):
    def test_world_writable_directory_refused(self):
        env = Env()
        try:
            d = os.path.join(env.dir, "open")
            os.mkdir(d)
            os.chmod(d, 0o777)
            with open(env.conf) as f:
                text = f.read().replace(env.sock, os.path.join(d, "s.sock"))
            with open(env.conf, "w") as f:
                f.write(text)
            p = subprocess.run([DAEMON, "-c", env.conf], capture_output=True, text=True,
                               timeout=10)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("writable by anyone", p.stderr)
        finally:
            env.close()


@unittest.skipUnless(ROOT, "needs root to mount a small tmpfs")
class DiskFull(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.mnt = tempfile.mkdtemp(prefix="wpe-tmpfs-")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", self.mnt],
                           capture_output=True, text=True)
        if p.returncode != 0:
            self.skipTest("cannot mount tmpfs here: " + p.stderr.strip())
        with open(self.env.conf) as f:
            text = f.read().replace(self.env.db, os.path.join(self.mnt, "queue.sqlite"))
        with open(self.env.conf, "w") as f:
            f.write(text)
        self.env.db = os.path.join(self.mnt, "queue.sqlite")

    def tearDown(self):
        self.env.close()
        subprocess.run(["umount", "-l", self.mnt])
        os.rmdir(self.mnt)

    def fill(self):
        with open(os.path.join(self.mnt, "filler"), "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass

    def test_disk_full_then_recovers(self):
        env = self.env
        env.start()
        env.request({"op": "pause"})
        acked = [env.request({"op": "enqueue", "install": I1, "type": "page",
                              "reason": "before"})["id"]]
        self.fill()
        errors = 0
        for i in range(200):   # the WAL has some room left: go until it is used up
            r = env.request({"op": "enqueue", "install": (I1, I2, I3)[i % 3],
                             "type": "page", "reason": "x" * 1000})
            if r["ok"]:
                acked.append(r["id"])
            else:
                self.assertEqual(r["error"], "storage")
                self.assertIn("not queued", r["message"])
                errors += 1
        self.assertGreater(errors, 0, "the disk never filled")
        self.assertTrue(env.request({"op": "ping"})["ok"])
        os.unlink(os.path.join(self.mnt, "filler"))
        r = env.request({"op": "enqueue", "install": I2, "type": "cdn"})
        self.assertTrue(r["ok"], r)
        acked.append(r["id"])
        env.request({"op": "resume"})
        for rid in acked:
            env.wait_state(rid, timeout=20)
        # and after a restart everything acknowledged is still there
        env.stop()
        env.start()
        for rid in acked:
            self.assertEqual(env.request({"op": "status", "id": rid})["state"], "done")

    def test_read_only_database_refused_at_start(self):
        # A live database cannot be made read-only under the daemon here (remounting a
        # file system with files open for writing fails with EBUSY), so: at start.
        env = self.env
        env.start()
        env.request({"op": "pause"})
        first = env.request({"op": "enqueue", "install": I1, "type": "page"})["id"]
        env.stop()
        subprocess.run(["mount", "-o", "remount,ro", self.mnt], check=True)
        try:
            p = subprocess.run([DAEMON, "-c", env.conf], capture_output=True, text=True,
                               timeout=10)
            self.assertNotEqual(p.returncode, 0)
            self.assertRegex(p.stderr, "read-only|Read-only")
        finally:
            subprocess.run(["mount", "-o", "remount,rw", self.mnt], check=True)
        env.start()
        env.request({"op": "resume"})   # the pause held across the restart
        env.wait_state(first, timeout=10)


class ReadOnlyWhileRunning(unittest.TestCase):
    """The database turns read-only under the running daemon (EROFS on every write)."""

    def test_enqueue_refused_then_recovers(self):
        from harness import erofs_env
        env = erofs_env()
        try:
            env.request({"op": "pause"})
            first = env.request({"op": "enqueue", "install": I1, "type": "page"})["id"]
            env.readonly(True)
            r = env.request({"op": "enqueue", "install": I2, "type": "page"})
            self.assertEqual(r["error"], "storage", r)
            self.assertIn("not queued", r["message"])
            self.assertEqual(env.request({"op": "status", "id": first})["state"], "queued")
            self.assertTrue(env.request({"op": "ping"})["ok"])
            env.readonly(False)
            r = env.request({"op": "enqueue", "install": I2, "type": "page"})
            self.assertTrue(r["ok"], r)
            env.request({"op": "resume"})
            for rid in (first, r["id"]):
                env.wait_state(rid, timeout=10)
            env.stop()
            env.start()
            for rid in (first, r["id"]):
                self.assertEqual(env.request({"op": "status", "id": rid})["state"], "done")
        finally:
            env.close()


FAKETIME_LIB = (glob.glob("/usr/lib/*/faketime/libfaketime.so.1") or [None])[0]


def links_asan(path):
    """Is the AddressSanitizer runtime linked into this binary (clang -fsanitize=address
    links it statically, so look for its entry point among the binary's symbols)?"""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(b"__asan_init") != -1
    except (OSError, ValueError):
        return False


@unittest.skipIf(FAKETIME_LIB is None, "libfaketime not installed (scripts/deps.sh installs "
                 "the faketime package)")
@unittest.skipIf(links_asan(DAEMON), "libfaketime cannot be preloaded into an ASan binary "
                 "(it can hang at start: 'Unexpected recursive calls to clock_gettime()'); "
                 "the clock-jump tests run against the non-sanitizer build only")
class ClockJumps(unittest.TestCase):
    """The wall clock jumps; windows are kept on the monotonic clock."""

    def setUp(self):
        self.env = Env(limits={"object_interval": 2})
        self.tsfile = os.path.join(self.env.dir, "faketime")
        self.set_offset("+0")

    def tearDown(self):
        self.env.close()

    def set_offset(self, off):
        with open(self.tsfile, "w") as f:
            f.write(off + "\n")

    def start(self):
        env = self.env
        os.environ.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME_TIMESTAMP_FILE=self.tsfile,
                          FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        try:
            env.start()
        finally:
            for k in ("LD_PRELOAD", "FAKETIME_TIMESTAMP_FILE", "FAKETIME_NO_CACHE",
                      "FAKETIME_DONT_FAKE_MONOTONIC"):
                os.environ.pop(k, None)

    def purge_object(self):
        r = self.env.request({"op": "enqueue", "install": I1, "type": "object"})
        t0 = time.monotonic()
        self.env.wait_state(r["id"], timeout=8)
        return time.monotonic() - t0

    def test_clock_set_back_while_running(self):
        self.start()
        self.purge_object()
        self.set_offset("-1h")
        took = self.purge_object()   # waits the 2 s window, not an hour
        self.assertLess(took, 4)
        ts = [c["t"] for c in self.env.purges(I1)]
        self.assertGreaterEqual(ts[1] - ts[0], 2.0)

    def test_retention_prunes_finished_requests_only(self):
        self.env.lim["max_age"] = "0"   # 8 days would expire the queued one (test_lifecycle)
        self.env.write_conf(self.env.lim, self.env.api)
        self.start()
        done = self.env.request({"op": "enqueue", "install": I2, "type": "page"})["id"]
        self.env.wait_state(done)
        self.env.request({"op": "pause"})
        queued = self.env.request({"op": "enqueue", "install": I3, "type": "page"})["id"]
        self.env.stop()
        self.set_offset("+8d")      # past the default 7-day retention
        self.start()                # the first prune runs 1 s after start
        wait_for(lambda: self.env.request({"op": "status", "id": done}).get("error") ==
                 "not_found", timeout=5, what="finished request pruned")
        s = self.env.request({"op": "status", "id": queued})
        self.assertTrue(s["ok"], s)  # unfinished: never pruned, and it still goes out
        self.env.request({"op": "resume"})   # (once resumed: the pause is persisted)
        self.env.wait_state(queued)

    def test_clock_set_back_across_restart(self):
        self.start()
        self.purge_object()
        self.env.stop()
        self.set_offset("-1d")
        self.start()
        # The persisted window is clamped, not a day long: to at most one API timeout
        # ahead (5 s here; an interrupted attempt may be acted on that late), plus the
        # 2 s interval.
        took = self.purge_object()
        self.assertLess(took, 5 + 2 + 2)
        s = self.env.request({"op": "status", "id": 1})
        self.assertEqual(s["state"], "done")


def raw_call(env, line):
    """Send one raw request line; return the answer line as bytes, undecoded."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(env.sock)
        s.sendall(line if isinstance(line, bytes) else line.encode())
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf.split(b"\n", 1)[0]


class RogueApi:
    """A hostile API on loopback for answers apisim cannot give: a body that never ends
    (chunked, or with an absurd Content-Length), or a message of the test's choosing.
    Records when each connection began and ended, and how much it sent."""

    def __init__(self):
        self.endless = None     # None, "chunked" or "length"
        self.status = 404
        self.message = ""
        self.ascii = False      # JSON-escape non-ASCII characters in the message
        self.conns = []         # [start, end or None, bytes sent], monotonic seconds
        self.stop = threading.Event()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.base_url = "http://127.0.0.1:%d/v1" % self.lsock.getsockname()[1]
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def close(self):
        self.stop.set()
        self.lsock.close()

    def accept_loop(self):
        while not self.stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        rec = [time.monotonic(), None, 0]
        try:
            c.settimeout(10)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            head, body = buf.split(b"\r\n\r\n", 1)
            if head.startswith(b"GET "):
                # the installs catalog read at start: an empty account, not recorded
                payload = b'{"previous":null,"next":null,"count":0,"results":[]}'
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                              len(payload), payload))
                return
            self.conns.append(rec)   # purges only
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            while m and len(body) < int(m.group(1)):
                body += c.recv(4096)
            if self.endless:
                self.stream(c, rec)
                return
            payload = json.dumps({"message": self.message}, ensure_ascii=self.ascii).encode()
            c.sendall(b"HTTP/1.1 %d Rogue\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                          self.status, len(payload), payload))
        except OSError:
            pass
        finally:
            rec[1] = time.monotonic()
            c.close()

    def stream(self, c, rec):
        start = b'{"message":"'
        block = b"A" * 65536
        if self.endless == "chunked":
            c.sendall(b"HTTP/1.1 503 Endless\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(start), start))
            block = b"%x\r\n%s\r\n" % (len(block), block)
        else:
            c.sendall(b"HTTP/1.1 503 Endless\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (1 << 40, start))
        end = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < end:
            c.sendall(block)
            rec[2] += len(block)


class RogueApiTest(EnvTest):
    """The daemon talks to a RogueApi instead of the simulator."""

    def setUp(self):
        self.rogue = RogueApi()
        self.api = dict(self.api or {}, base_url=self.rogue.base_url)
        super().setUp()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.rogue.close()


class EndlessAnswer(RogueApiTest):
    """An answer that never ends is cut off at the 64 KiB kept, not read until timeout."""
    TIMEOUT = 20
    api = {"timeout": TIMEOUT}

    def check_aborted(self, mode):
        self.rogue.endless = mode
        r = self.enqueue(I1, "page")
        first = wait_for(lambda: self.rogue.conns and self.rogue.conns[0][1] is not None and
                         self.rogue.conns[0], timeout=self.TIMEOUT / 2,
                         what="the daemon to abort the endless answer")
        self.assertLess(first[1] - first[0], self.TIMEOUT / 2)
        # a broken answer the API may have acted on: an attempt, retried like a timeout
        s = wait_for(lambda: (lambda s: s if s.get("attempts", 0) >= 1 else None)(
            self.status(r["id"])), timeout=self.TIMEOUT / 2, what="attempt recorded")
        self.assertIn(s["state"], ("queued", "sending"))
        self.assertIn("longer than", s.get("message", "") + self.env.log())

    def test_chunked_answer_without_end(self):
        self.check_aborted("chunked")

    def test_absurd_content_length(self):
        self.check_aborted("length")


class HostileMessage(RogueApiTest):
    """C1 controls, line separators, bidi overrides and BOMs never reach status or the log."""
    BAD = ("\u0085\u009b\u0080\u009f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067"
           "\u2068\u2069\u200e\u200f\ufeff\u061c\x1b\x7f")

    def check(self, message):
        self.rogue.message = message
        r = self.enqueue(I1, "page")
        self.wait_state(r["id"], ("failed",))
        raw = raw_call(self.env, json.dumps({"op": "status", "id": r["id"]}) + "\n")
        text = raw.decode("utf-8")                     # strict: no invalid UTF-8
        msg = json.loads(text)["message"]
        self.assertEqual([c for c in msg if c in self.BAD or 0xd800 <= ord(c) <= 0xdfff],
                         [], ascii(msg))
        with open(self.env.daemon_log, "rb") as f:
            log = f.read().decode("utf-8")
        self.assertEqual([c for c in log if c in self.BAD], [])
        return msg

    def test_controls_and_bidi_removed(self):
        msg = self.check("Not\u0085Found \u009b31m red\u2028x\u2029y \u202eevil\u202c "
                         "\u2066iso\u2069 \u200e\u200f\ufeffend\x1b[2J \u061cz")
        for word in ("Not", "Found", "31m red", "evil", "iso", "end"):
            self.assertIn(word, msg)

    def test_escaped_controls_and_lone_surrogates(self):
        self.rogue.ascii = True    # the same code points as \\u escapes, and a lone surrogate
        msg = self.check("Bad\u0085Credentials \u202eok \ud800 \udfff done")
        self.assertIn("Credentials", msg)
        self.assertIn("done", msg)


class Utf8Answers(EnvTest):
    """Error answers echo a bounded prefix of what was sent, cut on a character boundary."""

    def test_error_answers_are_valid_utf8(self):
        for ch in ("\u00e9", "\u20ac", "\U0001f600"):
            for n in range(56, 66):
                pad = "a" * n
                for line in ('{"op":"%s%s"}' % (pad, ch),
                             '{"op":"ping","%s%s":1}' % (pad, ch),
                             '{"op":"enqueue","install":"%s%s"}' % (pad, ch),
                             '{"op":"enqueue","install":"%s","type":"%s%s"}' % (
                                 I1, pad[:n - 32], ch)):
                    raw = raw_call(self.env, (line + "\n").encode())
                    try:
                        answer = json.loads(raw.decode("utf-8"))
                    except UnicodeDecodeError as e:
                        self.fail("%r: answer is not UTF-8 (%s): %r" % (line, e, raw))
                    self.assertFalse(answer["ok"])

    def test_config_errors_are_valid_utf8(self):
        for n in range(60, 66):
            conf = os.path.join(self.env.dir, "utf8.conf")
            with open(conf, "wb") as f:
                f.write(("[api]\n%s\u20ac = 1\n" % ("k" * n)).encode())
            p = subprocess.run([DAEMON, "-c", conf, "--check-config"], capture_output=True,
                               timeout=10)
            self.assertEqual(p.returncode, 2)
            try:
                p.stderr.decode("utf-8")
            except UnicodeDecodeError as e:
                self.fail("n=%d: error is not UTF-8 (%s): %r" % (n, e, p.stderr))


class BadConfigFiles(unittest.TestCase):
    """Configuration and credential paths that are not small regular files are refused at
    once, with the file's name; they never block the daemon."""

    def setUp(self):
        self.env = Env()

    def tearDown(self):
        self.env.close()

    def check_config(self, conf, timeout=10):
        try:
            return subprocess.run([DAEMON, "-c", conf, "--check-config"],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("wpe-purged --check-config -c %s blocked" % conf)

    def set_api(self, **kw):
        with open(self.env.conf) as f:
            text = f.read()
        for k, v in kw.items():
            text = re.sub(r"(?m)^%s = .*$" % k, "", text)
            text = text.replace("[api]\n", "[api]\n%s = %s\n" % (k, v))
        with open(self.env.conf, "w") as f:
            f.write(text)

    def test_config_fifo_device_directory(self):
        fifo = os.path.join(self.env.dir, "fifo.conf")
        os.mkfifo(fifo)
        for path, what in ((fifo, "FIFO"), ("/dev/zero", "device"),
                           (self.env.dir, "directory")):
            p = self.check_config(path)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(path, p.stderr)
            self.assertIn("not a regular file", p.stderr)
            self.assertIn(what, p.stderr)
        # and the daemon itself does not start on one either
        try:
            p = subprocess.run([DAEMON, "-c", fifo], capture_output=True, text=True,
                               timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("wpe-purged -c FIFO blocked")
        self.assertEqual(p.returncode, 2)
        self.assertIn("not a regular file", p.stderr)

    def test_config_too_large(self):
        big = os.path.join(self.env.dir, "big.conf")
        with open(big, "w") as f:
            f.write("# padding\n" * 110000)    # over 1 MiB of comments
        p = self.check_config(big)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(big, p.stderr)
        self.assertIn("larger than", p.stderr)

    def test_credentials_fifo(self):
        fifo = os.path.join(self.env.dir, "cred.fifo")
        os.mkfifo(fifo, 0o600)
        self.set_api(credentials_file=fifo)
        p = self.check_config(self.env.conf)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(fifo, p.stderr)
        self.assertIn("not a regular file", p.stderr)

    def test_missing_or_unreadable_ca_file(self):
        missing = os.path.join(self.env.dir, "no-such-ca.pem")
        self.set_api(ca_file=missing)
        p = self.check_config(self.env.conf)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn(missing, p.stderr)
        self.assertIn("ca_file", p.stderr)
        self.set_api(ca_file=self.env.dir)
        p = self.check_config(self.env.conf)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("not a regular file", p.stderr)
        ca = os.path.join(self.env.dir, "ca.pem")
        with open(ca, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\n")
        self.set_api(ca_file=ca)
        p = self.check_config(self.env.conf)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_sighup_with_config_turned_fifo_keeps_serving(self):
        env = self.env
        env.start()
        os.unlink(env.conf)
        os.mkfifo(env.conf)
        try:
            env.daemon.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload failed" in env.log(), timeout=10, what="reload refused")
            self.assertIn("not a regular file", env.log())
            with env.connect() as c:
                c.s.settimeout(5)
                self.assertTrue(c.call({"op": "ping"})["ok"])
        finally:
            # a daemon blocked opening the FIFO gets an end of file and moves on
            try:
                os.close(os.open(env.conf, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


class ClientOutput(EnvTest):
    """wpe-purgectl: what it prints must reach stdout, and its numbers are decimal."""

    def run_ctl(self, *args, stdout=None):
        with open("/dev/full", "w") as full:
            p = subprocess.run([CTL, "-s", self.env.sock] + list(args), stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=30)
        return p.returncode, p.stderr

    def test_write_error_on_stdout_is_an_error(self):
        self.env.request({"op": "pause"})
        for args in (["--json", "enqueue", I1, "-t", "page"], ["enqueue", I2, "-t", "page"],
                     ["ping"], ["--json", "status", "1"], ["list"]):
            rc, err = self.run_ctl(*args)
            self.assertEqual(rc, 5, "%s: %r" % (args, err))
            self.assertIn("standard output", err)
            self.assertIn("No space left on device", err)
        # the requests themselves were queued: only the answers were lost
        self.assertEqual(self.env.request({"op": "stats"})["requests"], 2)

    def test_timeout_is_decimal_seconds(self):
        self.env.request({"op": "pause"})
        for bad in ("0x10", "0X1p4", "1e1", "inf", "nan", " 5", "5 ", "+5", "-1", "5s", "",
                    "1.2.3", ".", "604801"):
            rc, out, err = self.env.ctl("enqueue", I1, "--wait", "--timeout", bad)
            self.assertEqual(rc, 2, "%r accepted: %s" % (bad, out + err))
            self.assertIn("--timeout", err)
            rc, out, err = self.env.ctl("wait", "1", "--timeout", bad)
            self.assertEqual(rc, 2, "%r accepted: %s" % (bad, out + err))
            self.assertIn("--timeout takes", err)
        self.assertEqual(self.env.request({"op": "stats"})["requests"], 0)
        for good in ("0", "0.3", "1.", ".5", "000.2"):
            rc, out, err = self.env.ctl("enqueue", I1, "-t", "page", "--wait",
                                        "--timeout", good)
            self.assertEqual(rc, 4, "%r: %s" % (good, out + err))   # paused: times out


class KillUnderMixedLoad(unittest.TestCase):
    def test_rounds_of_kill9_under_mixed_load(self):
        env = Env()
        acked, lock = [], threading.Lock()
        stop = threading.Event()
        try:
            env.start()

            def client(seed):
                rnd = random.Random(seed)
                while not stop.is_set():
                    inst = rnd.choice((I1, I2, I3))
                    op = rnd.random()
                    t = time.time()
                    try:
                        if op < 0.8:
                            r = env.request({"op": "enqueue", "install": inst, "type":
                                             rnd.choice(("object", "page", "cdn", "all"))})
                            if r.get("ok"):
                                with lock:
                                    acked.append((r["id"], inst, t))
                        elif op < 0.9 and acked:
                            env.request({"op": "status", "id": rnd.choice(acked)[0]})
                        else:
                            env.request({"op": "list"})
                    except (OSError, EOFError):
                        time.sleep(0.05)
                    time.sleep(rnd.uniform(0, 0.05))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
            for t in threads:
                t.start()
            rnd = random.Random(99)
            rounds = 6
            for _ in range(rounds):
                time.sleep(rnd.uniform(0.3, 1.5))
                env.kill9()
                env.start()
            stop.set()
            for t in threads:
                t.join(10)
            for rid, inst, t in acked:
                s = env.wait_state(rid, timeout=30)
                covering = [c for c in env.purges(inst) if c["t"] >= t]
                self.assertTrue(covering, "request %d: no purge after it was sent" % rid)
            self.assertEqual([c for c in env.calls() if c["status"] == 429], [])
            for inst in (I1, I2, I3):
                ts = [c["t"] for c in env.purges(inst) if c["type"] in ("object", "all")]
                self.assertTrue(all(b - a >= 2.0 for a, b in zip(ts, ts[1:])), ts)
            env.stop()
            out = subprocess.run(["sqlite3", env.db, "PRAGMA integrity_check"],
                                 capture_output=True, text=True).stdout.strip()
            self.assertEqual(out, "ok")
            print("\nkill -9 x%d under mixed load: %d acknowledged requests checked" % (
                rounds, len(acked)))
        finally:
            stop.set()
            env.close()


if __name__ == "__main__":
    unittest.main()
