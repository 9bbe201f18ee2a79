"""harness.py: start the real wpe-purged, wpe-purgectl and API simulator on private paths."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

BUILD = os.environ.get("WPE_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
DAEMON = os.path.join(BUILD, "wpe-purged")
CTL = os.path.join(BUILD, "wpe-purgectl")
SIM = os.path.join(BUILD, "tests", "apisim")
# e.g. "valgrind --error-exitcode=99 --leak-check=full" to run the daemon under memcheck
WRAP = os.environ.get("WPE_DAEMON_WRAPPER", "").split()

I1 = "294deacc-d8b8-4005-82c4-0727ba8ddde0"
I2 = "3f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
I3 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
UNKNOWN = "deadbeef-dead-4eef-8ead-beefdeadbeef"
USER, PASSWORD = "api-user-1", "pa55-w0rd-secret"


def wait_for(pred, timeout=10.0, step=0.02, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


class Env:
    """One private world: a temp dir with socket, database, config, simulator."""

    def __init__(self, limits=None, api=None, sim_args=(), daemon_extra="", http=None):
        self.dir = tempfile.mkdtemp(prefix="wpe-it-")
        self.sock = os.path.join(self.dir, "d.sock")
        self.db = os.path.join(self.dir, "queue.sqlite")
        self.conf = os.path.join(self.dir, "wpe-purged.conf")
        self.cred = os.path.join(self.dir, "credentials")
        self.simlog = os.path.join(self.dir, "sim.log")
        self.daemon_log = os.path.join(self.dir, "daemon.log")
        self.sim = None
        self.daemon = None
        self.sim_args = list(sim_args)
        self.start_sim()
        with open(self.cred, "w") as f:
            f.write("%s:%s\n" % (USER, PASSWORD))
        os.chmod(self.cred, 0o600)
        lim = {"object_interval": 2, "retry_initial": 1, "retry_max": 4}
        lim.update(limits or {})
        a = {"base_url": "http://127.0.0.1:%d/v1" % self.port, "credentials_file": self.cred,
             "timeout": 5, "max_in_flight": 4}
        a.update(api or {})
        self.http = dict(http) if http else None
        self.write_conf(lim, a, daemon_extra)

    def write_conf(self, lim, api, daemon_extra=""):
        """The config file; an [http] section when self.http (a dict of its keys) is set."""
        self.lim, self.api, self.daemon_extra = lim, api, daemon_extra
        with open(self.conf, "w") as f:
            f.write("[daemon]\nsocket = %s\ndatabase = %s\n%s\n" % (self.sock, self.db,
                                                                   daemon_extra))
            f.write("[api]\n" + "".join("%s = %s\n" % kv for kv in api.items()))
            f.write("[limits]\n" + "".join("%s = %s\n" % kv for kv in lim.items()))
            if getattr(self, "http", None):
                f.write("[http]\n" + "".join("%s = %s\n" % kv for kv in self.http.items()))

    def set_http(self, **kw):
        """Change [http] keys (None removes one) and rewrite the config file."""
        self.http = dict(self.http or {})
        for k, v in kw.items():
            if v is None:
                self.http.pop(k, None)
            else:
                self.http[k] = v
        self.write_conf(self.lim, self.api, self.daemon_extra)

    # -- simulator --------------------------------------------------------------
    def start_sim(self):
        portfile = os.path.join(self.dir, "port")
        if os.path.exists(portfile):
            os.unlink(portfile)
        args = [SIM, "--port-file", portfile, "--user", USER, "--password", PASSWORD,
                "--install", I1, "--install", I2, "--install", I3, "--object-interval",
                "2", "--log", self.simlog] + self.sim_args
        if hasattr(self, "port"):
            args += ["--port", str(self.port)]
        self.sim = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(portfile), what="simulator port")
        with open(portfile) as f:
            self.port = int(f.read())

    def stop_sim(self):
        if self.sim:
            self.sim.terminate()
            self.sim.wait(5)
            self.sim = None

    def fault(self, **kw):
        req = urllib.request.Request("http://127.0.0.1:%d/_sim/fault" % self.port,
                                     data=json.dumps(kw).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

    def calls(self):
        if not os.path.exists(self.simlog):
            return []
        with open(self.simlog) as f:
            return [json.loads(l) for l in f if l.strip()]

    def purges(self, install=None, status=202):
        return [c for c in self.calls() if (install is None or c["install"] == install)
                and (status is None or c["status"] == status)]

    # -- daemon -------------------------------------------------------------------
    def start(self, expect_ready=True, args=(), extra_env=None):
        """Start the daemon; extra_env: variables added to its environment only."""
        if getattr(self, "log_f", None):
            self.log_f.close()
        self.log_f = open(self.daemon_log, "a")
        # Every daemon a test starts verifies the queue's invariants after each change.
        penv = dict(os.environ)
        penv.setdefault("WPE_PURGED_CHECK", "1")
        if extra_env:
            penv.update(extra_env)
        self.daemon = subprocess.Popen(WRAP + [DAEMON, "-c", self.conf, "-v"] + list(args),
                                       stderr=self.log_f, env=penv)
        if expect_ready:
            wait_for(lambda: self.ctl("ping")[0] == 0 or self.daemon.poll() is not None,
                     timeout=30 if WRAP else 10, what="daemon ready")
            if self.daemon.poll() is not None:
                raise AssertionError("daemon exited at start:\n" + self.log())
        return self.daemon

    def kill9(self):
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(10)
        self.daemon = None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.daemon is None:
            return None
        self.daemon.send_signal(sig)
        rc = self.daemon.wait(timeout)
        self.daemon = None
        return rc

    def log(self):
        with open(self.daemon_log) as f:
            return f.read()

    def close(self):
        rc = self.stop() if self.daemon is not None else 0
        if rc != 0:
            # a sanitizer or valgrind report, a leak, or a shutdown that went wrong
            self.stop_sim()
            raise AssertionError("daemon exited %s on SIGTERM:\n%s" % (rc, self.log()[-6000:]))
        self.stop_sim()
        if getattr(self, "log_f", None):
            self.log_f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients ------------------------------------------------------------------
    def ctl(self, *args, timeout=30, env=None):
        e = dict(os.environ)
        e.pop("WPE_PURGED_SOCKET", None)
        e.update(env or {})
        p = subprocess.run([CTL, "-s", self.sock] + list(args), capture_output=True,
                           text=True, timeout=timeout, env=e)
        return p.returncode, p.stdout, p.stderr

    def ctl_json(self, *args, timeout=30):
        rc, out, err = self.ctl("--json", *args, timeout=timeout)
        lines = [json.loads(l) for l in out.splitlines() if l.strip()]
        return rc, lines, err

    def connect(self):
        return Client(self.sock)

    def as_user(self, uid, gid, groups=(), args=(), timeout=30):
        """Run wpe-purgectl as another user (needs root): a copy the user can execute."""
        ctl = os.path.join(self.dir, "wpe-purgectl")
        if not os.path.exists(ctl):
            shutil.copy(CTL, ctl)
            os.chmod(ctl, 0o755)
            os.chmod(self.dir, 0o755)
        p = subprocess.run([ctl, "-s", self.sock, "--json"] + list(args), capture_output=True,
                           text=True, timeout=timeout, user=uid, group=gid,
                           extra_groups=list(groups))
        answers = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
        return p.returncode, answers, p.stderr

    def request(self, obj):
        with self.connect() as c:
            return c.call(obj)

    def connect_as(self, uid):
        """A Client connected as another uid (needs root): the daemon reads SO_PEERCRED,
        fixed at connect, so only the connect runs with that effective uid."""
        os.chmod(self.dir, 0o755)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        os.seteuid(uid)
        try:
            s.connect(self.sock)
        finally:
            os.seteuid(0)
        c = Client.__new__(Client)
        c.s, c.buf = s, b""
        s.settimeout(30)
        return c

    def wait_state(self, rid, states=("done",), timeout=15):
        """Poll request rid until its state is one of states; return its status."""
        if isinstance(states, str):
            states = (states,)
        return wait_for(lambda: (lambda s: s if s.get("state") in states else None)(
            self.request({"op": "status", "id": rid})), timeout=timeout,
            what="request %s in %s" % (rid, states))


def erofs_env(**kw):
    """An Env whose daemon runs with the EROFS injector (tests/fault/erofs.c) preloaded:
    env.readonly(True) makes every write to its database fail, env.readonly(False) heals.
    Only this first start is preloaded; a later env.start() is a normal daemon."""
    env = Env(**kw)
    flag = os.path.join(env.dir, "readonly")
    shim = os.path.abspath(os.path.join(BUILD, "tests", "erofs.so"))
    saved = dict(os.environ)
    eio = os.path.join(env.dir, "eio")
    kill = os.path.join(env.dir, "kill")
    os.environ.update(LD_PRELOAD=shim, WPE_EROFS_FLAG=flag, WPE_EROFS_MATCH=env.db,
                      WPE_EIO_FLAG=eio, WPE_KILL_FLAG=kill,
                      ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") +
                      ":verify_asan_link_order=0")
    try:
        env.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)

    def readonly(on):
        if on:
            open(flag, "w").close()
        elif os.path.exists(flag):
            os.unlink(flag)
    def losing_writes(on):
        if on:
            open(eio, "w").close()
        elif os.path.exists(eio):
            os.unlink(eio)
    def killed_at_sync(on):
        """The daemon kills itself (SIGKILL) at its next sync of the database."""
        if on:
            open(kill, "w").close()
        elif os.path.exists(kill):
            os.unlink(kill)
    env.readonly = readonly
    env.losing_writes = losing_writes
    env.killed_at_sync = killed_at_sync
    return env


class Client:
    """A raw socket client speaking the line protocol."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(30)
        try:
            self.s.connect(path)
        except OSError:
            self.s.close()
            raise
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.s.close()

    def send(self, data):
        if isinstance(data, dict):
            data = json.dumps(data) + "\n"
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def recv(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, obj):
        self.send(obj)
        return self.recv()


class FreshEnvTest(unittest.TestCase):
    """A test case with a private Env whose daemon the test starts itself."""

    def setUp(self):
        self.env = Env()

    def tearDown(self):
        self.env.close()


class EnvTest(unittest.TestCase):
    """A test case with one Env per test."""
    limits = None
    api = None
    sim_args = ()
    daemon = ""   # extra [daemon] lines

    def setUp(self):
        self.env = Env(limits=self.limits, api=self.api, sim_args=self.sim_args,
                       daemon_extra=self.daemon)
        self.env.start()

    def tearDown(self):
        env, self.env = self.env, None
        if self._outcome_failed():
            print("\n--- daemon log ---\n" + env.log()[-6000:])
        env.close()

    def _outcome_failed(self):
        res = getattr(self, "_outcome", None)
        errs = getattr(res, "errors", None) or getattr(getattr(res, "result", None),
                                                         "failures", [])
        return any(e[1] for e in errs) if errs else False

    def enqueue(self, install=I1, type="object", **kw):
        r = self.env.request(dict(op="enqueue", install=install, type=type, **kw))
        self.assertTrue(r["ok"], r)
        return r

    def status(self, rid):
        return self.env.request({"op": "status", "id": rid})

    def wait_state(self, rid, states=("done",), timeout=15):
        return self.env.wait_state(rid, states, timeout)
