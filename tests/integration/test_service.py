"""test_service.py: systemd units, hardening, notify protocol, socket activation, package."""
import glob
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import BUILD, CTL, DAEMON, I1, Env, wait_for

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BUILD_DIR = os.path.abspath(BUILD)
UNIT = os.path.join(BUILD_DIR, "wpe-purged.service")
SOCKET_UNIT = os.path.join(SRC, "systemd", "wpe-purged.socket")
HAVE_ANALYZE = shutil.which("systemd-analyze") is not None
MAX_EXPOSURE = 1.5


@unittest.skipUnless(HAVE_ANALYZE, "systemd-analyze is not installed")
class Units(unittest.TestCase):
    def test_hardening_exposure_at_most_1_5(self):
        p = subprocess.run(["systemd-analyze", "security", "--offline=true", UNIT],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
        self.assertIsNotNone(m, p.stdout + p.stderr)
        score = float(m.group(1))
        print("\nsystemd-analyze security: exposure %.1f" % score)
        self.assertLessEqual(score, MAX_EXPOSURE, p.stdout)

    def test_units_verify(self):
        d = tempfile.mkdtemp(prefix="wpe-units-")
        try:
            # verify checks that ExecStart= exists: point it at the build
            with open(UNIT) as f:
                text = re.sub(r"ExecStart=\S+/wpe-purged", "ExecStart=" + os.path.abspath(DAEMON),
                              f.read())
            with open(os.path.join(d, "wpe-purged.service"), "w") as f:
                f.write(text)
            shutil.copy(SOCKET_UNIT, d)
            env = dict(os.environ, MANPATH=os.path.join(BUILD_DIR, "man") + ":")
            p = subprocess.run(["systemd-analyze", "verify", "--recursive-errors=no",
                                os.path.join(d, "wpe-purged.service"),
                                os.path.join(d, "wpe-purged.socket")],
                               capture_output=True, text=True, timeout=60, env=env, cwd=d)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertEqual(p.stderr.strip(), "")
        finally:
            shutil.rmtree(d)


class Notify(unittest.TestCase):
    """The sd_notify protocol, read from a NOTIFY_SOCKET of our own (no systemd needed)."""

    def test_ready_status_reloading_stopping_watchdog(self):
        env = Env()
        path = os.path.join(env.dir, "notify")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(path)
        ns.settimeout(10)
        try:
            os.environ.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
            env.start(expect_ready=False)
            os.environ.pop("NOTIFY_SOCKET")
            os.environ.pop("WATCHDOG_USEC")
            msgs = []

            def until(pred):
                while not any(pred(m) for m in msgs):
                    msgs.append(ns.recv(4096).decode())

            until(lambda m: "READY=1" in m)
            # ready means listening: a client is served at once
            self.assertEqual(env.ctl("ping")[0], 0)
            until(lambda m: m.startswith("STATUS="))
            until(lambda m: "WATCHDOG=1" in m)
            env.request({"op": "pause"})
            env.request({"op": "enqueue", "install": I1, "type": "page"})
            env.daemon.send_signal(signal.SIGHUP)
            until(lambda m: "RELOADING=1" in m)
            until(lambda m: m.startswith("STATUS=paused since") and "; queued 1" in m)
            env.daemon.send_signal(signal.SIGTERM)
            until(lambda m: "STOPPING=1" in m)
            self.assertEqual(env.daemon.wait(10), 0)
            env.daemon = None
            print("\nnotify messages: %s" % sorted(set(m.split("=")[0] for m in msgs)))
        finally:
            ns.close()
            env.close()

    def test_status_follows_the_queue(self):
        # STATUS= is sent when the summary changes (it used to be every 5 s, so right
        # after a burst systemctl status showed a queue that list said was empty)
        env = Env()
        path = os.path.join(env.dir, "notify")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(path)
        try:
            os.environ.update(NOTIFY_SOCKET=path)
            env.start(expect_ready=False)
            os.environ.pop("NOTIFY_SOCKET")

            def status_within(pred, seconds):
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    ns.settimeout(max(0.01, end - time.monotonic()))
                    try:
                        m = ns.recv(4096).decode()
                    except socket.timeout:
                        break
                    if m.startswith("STATUS=") and pred(m[7:]):
                        return m[7:]
                self.fail("no matching STATUS= within %s s" % seconds)

            wait_for(lambda: env.ctl("ping")[0] == 0, what="ready")
            env.request({"op": "pause"})
            for _ in range(5):
                env.request({"op": "enqueue", "install": I1, "type": "object"})
            status_within(lambda m: m.startswith("paused since ") and "; queued 1" in m, 1.5)
            env.request({"op": "resume"})
            wait_for(lambda: env.request({"op": "list"})["jobs"] == [], what="sent")
            self.assertEqual(status_within(lambda m: m.startswith("queued 0"), 1.5),
                             "queued 0, sending 0")
            env.request({"op": "enqueue", "install": I1, "type": "object"})
            m = status_within(lambda m: "next purge at" in m, 1.5)
            self.assertRegex(m, r"^queued 1, sending 0, next purge at \d\d:\d\d:\d\d UTC$")
        finally:
            ns.close()
            env.close()


@unittest.skipUnless(shutil.which("systemd-socket-activate"), "systemd-socket-activate missing")
class SocketActivation(unittest.TestCase):
    def test_client_before_daemon_is_served(self):
        env = Env()
        try:
            env.log_f = open(env.daemon_log, "a")
            # systemd-socket-activate holds the socket and starts the daemon on the first
            # connection, passing it the listening socket (LISTEN_FDS), as systemd does.
            env.daemon = subprocess.Popen(["systemd-socket-activate", "-l", env.sock,
                                           DAEMON, "-c", env.conf], stderr=env.log_f)
            wait_for(lambda: os.path.exists(env.sock), what="socket")
            t0 = time.monotonic()
            rc, out, err = env.ctl("enqueue", I1, "-t", "page", "--wait", "--timeout", "20")
            self.assertEqual(rc, 0, err + env.log())
            self.assertIn("using the socket passed by systemd", env.log())
            print("\nfirst client through socket activation served in %.2f s" %
                  (time.monotonic() - t0))
            env.stop()
            # the daemon does not remove a socket it did not create
            self.assertTrue(os.path.exists(env.sock))
        finally:
            env.close()


def package_path():
    deb = os.environ.get("WPE_DEB")
    if not deb:
        deb = subprocess.run(["sh", os.path.join(SRC, "scripts", "package.sh")],
                             capture_output=True, text=True, check=True).stdout.strip()
    return deb


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("dpkg"), "needs root and dpkg")
class DebianPackage(unittest.TestCase):
    FILES = ["/usr/sbin/wpe-purged", "/usr/bin/wpe-purgectl",
             "/lib/systemd/system/wpe-purged.service", "/lib/systemd/system/wpe-purged.socket",
             "/usr/lib/sysusers.d/wpe-purged.conf", "/etc/wpe-purged/wpe-purged.conf",
             "/usr/share/man/man8/wpe-purged.8", "/usr/share/man/man1/wpe-purgectl.1",
             "/usr/share/man/man5/wpe-purged.conf.5",
             "/usr/share/bash-completion/completions/wpe-purgectl"]

    def dpkg(self, *args):
        p = subprocess.run(["dpkg"] + list(args), capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_install_check_remove(self):
        if subprocess.run(["dpkg", "-s", "wpe-purged"], capture_output=True).returncode == 0:
            self.skipTest("wpe-purged is already installed on this machine")
        deb = package_path()
        tmp = tempfile.mkdtemp(prefix="wpe-deb-")
        try:
            self.dpkg("-i", deb)
            for f in self.FILES:
                self.assertTrue(os.path.exists(f), f)
            pw = pwd.getpwnam("wpe-purged")
            self.assertEqual(grp.getgrgid(pw.pw_gid).gr_name, "wpe-purge")
            # enables nothing by surprise
            self.assertEqual(glob.glob("/etc/systemd/system/*.wants/wpe-purged*"), [])
            # the installed daemon validates the installed config with a credential
            with open(os.path.join(tmp, "wpengine-api"), "w") as f:
                f.write("user:secret\n")
            p = subprocess.run(["/usr/sbin/wpe-purged", "--check-config"], capture_output=True,
                               text=True, env=dict(os.environ, CREDENTIALS_DIRECTORY=tmp))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("base_url = https://api.wpengineapi.com/v1", p.stdout)
            self.assertNotIn("secret", p.stdout)
            # a queue in the state directory, made by the installed daemon
            os.makedirs("/var/lib/wpe-purged", exist_ok=True)
            conf = os.path.join(tmp, "c.conf")
            with open(conf, "w") as f:
                f.write("[daemon]\nsocket = %s/s.sock\n[api]\ncredentials_file = %s\n" % (
                    tmp, os.path.join(tmp, "wpengine-api")))
            os.chmod(os.path.join(tmp, "wpengine-api"), 0o600)
            d = subprocess.Popen(["/usr/sbin/wpe-purged", "-c", conf], stderr=subprocess.DEVNULL)
            wait_for(lambda: subprocess.run(["/usr/bin/wpe-purgectl", "-s", tmp + "/s.sock",
                                             "pause"], capture_output=True).returncode == 0)
            subprocess.run(["/usr/bin/wpe-purgectl", "-s", tmp + "/s.sock", "enqueue", I1],
                           check=True, capture_output=True)
            d.terminate()
            self.assertEqual(d.wait(10), 0)
            db = "/var/lib/wpe-purged/queue.sqlite"
            self.assertTrue(os.path.exists(db))
            # remove: binaries go, the queue database and the conffile stay
            self.dpkg("-r", "wpe-purged")
            self.assertFalse(os.path.exists("/usr/sbin/wpe-purged"))
            self.assertTrue(os.path.exists(db))
            self.assertTrue(os.path.exists("/etc/wpe-purged/wpe-purged.conf"))
            # purge: everything goes
            self.dpkg("-P", "wpe-purged")
            self.assertFalse(os.path.exists(db))
            self.assertFalse(os.path.exists("/etc/wpe-purged/wpe-purged.conf"))
        finally:
            subprocess.run(["dpkg", "-P", "wpe-purged"], capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
