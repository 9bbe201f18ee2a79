"""test_provenance.py: who asked for a purge (source) and idempotency keys, real daemon."""
import glob
import json
import os
import socket
import sqlite3
import subprocess
import tempfile
import threading
import unittest
import urllib.request

from harness import CTL, I1, I2, Env, EnvTest, erofs_env, wait_for

GITHUB = {"ci": "github", "job_url": "https://github.com/org/repo/actions/runs/123",
          "commit": "0123456789abcdef0123456789abcdef01234567", "ref": "refs/heads/main",
          "actor": "alice", "pipeline": "123"}
GITHUB_ENV = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
              "GITHUB_REPOSITORY": "org/repo", "GITHUB_RUN_ID": "123",
              "GITHUB_SHA": GITHUB["commit"], "GITHUB_REF": "refs/heads/main",
              "GITHUB_ACTOR": "alice"}
FAKETIME_LIB = (glob.glob("/usr/lib/*/faketime/libfaketime.so.1") or [None])[0]


def rows(env, sql):
    db = sqlite3.connect(env.db)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def ci_clean_env(extra=None):
    """The test's environment without any CI's variables (the tests may run in CI)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(
        ("GITHUB_", "GITLAB_", "CI_", "BITBUCKET_", "CIRCLE", "JENKINS_", "BUILD_", "GIT_"))}
    e.update(extra or {})
    return e


class Source(EnvTest):
    limits = {"object_interval": 60}

    def test_status_list_log_stats(self):
        self.env.request({"op": "pause"})    # jobs stay listed
        r = self.enqueue(I1, "object", source=GITHUB)
        self.assertFalse(r["replayed"])
        s = self.status(r["id"])
        self.assertEqual(s["source"], GITHUB)
        self.assertEqual(s["requested_by"], "github:org/repo#123")
        self.enqueue(I2, "page")          # no source: the uid stands for who
        lst = self.env.request({"op": "list"})
        who = {j["install"]: j["requested_by"] for j in lst["jobs"]}
        self.assertEqual(who, {I1: "github:org/repo#123", I2: "uid %d" % os.geteuid()})
        rc, out, _ = self.env.ctl("list")
        self.assertIn("REQUESTED BY", out)
        self.assertIn("github:org/repo#123", out)
        self.assertIn("via github:org/repo#123 (https://github.com/org/repo/actions/runs/"
                      "123)", self.env.log())
        for _ in range(2):
            self.enqueue(I1, "object", source=dict(GITHUB, pipeline="124"))
        top = self.env.request({"op": "stats"})["top_requesters"]
        self.assertEqual(top[0], {"requester": "github:org/repo", "requests": 3})
        self.assertEqual(top[1], {"requester": "uid %d" % os.geteuid(), "requests": 1})

    def test_refused_sources(self):
        bad = [
            ({"ci": "travis"}, "bad_value"),
            ({"job_url": "ftp://example.com/x"}, "bad_value"),
            ({"job_url": "https://user:secret@example.com/x"}, "bad_value"),
            ({"job_url": "https://example.com/\u00e9"}, "bad_value"),
            ({"actor": "a\u0001b"}, "bad_value"),
            ({"ref": "r" * 257}, "bad_value"),
            ({"commit": "a b"}, "bad_value"),
            ({"pipeline": 12}, "bad_type"),
            ({"where": "x"}, "unknown_field"),
            ("github", "bad_type"),
            # What a terminal or a log viewer acts on (review): they reached "list", the
            # status and the log line. U+009B is the 8-bit CSI, U+0085 NEL; U+2028 split
            # the log line for readers that take it as a line end; bidi overrides and
            # isolates reorder what is shown; U+FEFF is invisible.
            ({"actor": "a\u009b31mred"}, "bad_value"),
            ({"pipeline": "1\u0085x"}, "bad_value"),
            ({"ref": "main\u2028forged line"}, "bad_value"),
            ({"actor": "x\u202eevil"}, "bad_value"),
            ({"actor": "x\u2066y\u2069"}, "bad_value"),
            ({"ref": "\u200fmain"}, "bad_value"),
            ({"actor": "\ufeffz"}, "bad_value"),
        ]
        for src, code in bad:
            r = self.env.request({"op": "enqueue", "install": I1, "source": src})
            self.assertEqual(r.get("error"), code, (src, r))
        with self.env.connect() as c:
            r = c.call('{"op":"enqueue","install":"%s","source":{"ci":"github",'
                       '"ci":"gitlab"}}\n' % I1)
            self.assertEqual(r.get("error"), "duplicate_field", r)
        self.assertEqual(rows(self.env, "SELECT count(*) FROM requests"), [(0,)])
        # The limits themselves are accepted, and text of any script.
        self.enqueue(I1, source={"ref": "r" * 256, "job_url": "https://e.com/" + "x" * 498})
        self.enqueue(I1, source={"actor": "J\u00fcrgen \u05d3\u05d5\u05d3 \U0001f680",
                                 "ref": "\u00a0main"})

    def test_client_fills_source_from_ci_environment(self):
        rc, out, err = self.env.ctl("--json", "enqueue", I1, "-t", "page",
                                    env=ci_clean_env(GITHUB_ENV))
        self.assertEqual(rc, 0, err)
        rid = int(out.split('"id":')[1].split(",")[0])
        self.assertEqual(self.status(rid)["source"], GITHUB)
        # --source overrides, an empty value removes; an odd CI variable is dropped.
        env = ci_clean_env(dict(GITHUB_ENV, GITHUB_ACTOR="bad\tactor"))
        rc, out, err = self.env.ctl("--json", "enqueue", I1, "-t", "page", "--source",
                                    "pipeline=999", "--source", "ref=", env=env)
        self.assertEqual(rc, 0, err)
        self.assertIn("actor was left out", err)
        rid = int(out.split('"id":')[1].split(",")[0])
        want = dict(GITHUB, pipeline="999")
        del want["actor"], want["ref"]
        self.assertEqual(self.status(rid)["source"], want)
        rc, out, err = self.env.ctl("--json", "enqueue", I1, "--no-source", env=env)
        rid = int(out.split('"id":')[1].split(",")[0])
        self.assertIsNone(self.status(rid)["source"])
        rc, _, err = self.env.ctl("enqueue", I1, "--source", "ci=travis", env=env)
        self.assertEqual(rc, 2, err)
        # A CI variable a terminal would act on is dropped, never fails the enqueue.
        env = ci_clean_env(dict(GITHUB_ENV, GITHUB_ACTOR="x\u202eevil",
                                GITHUB_REF="a\u009b31m"))
        rc, out, err = self.env.ctl("--json", "enqueue", I1, "-t", "page", env=env)
        self.assertEqual(rc, 0, err)
        self.assertIn("actor was left out", err)
        self.assertIn("ref was left out", err)
        rid = int(out.split('"id":')[1].split(",")[0])
        self.assertNotIn("actor", self.status(rid)["source"])


class Idempotency(EnvTest):
    limits = {"object_interval": 60}

    def test_replay_and_conflict(self):
        a = self.enqueue(I1, "object", idempotency_key="deploy-42")
        b = self.enqueue(I1, "object", idempotency_key="deploy-42")
        self.assertTrue(b["replayed"])
        for k in ("id", "job", "coalesced", "install", "name"):
            self.assertEqual(a[k], b[k], k)
        for other in ({"install": I2, "type": "object"}, {"install": I1, "type": "page"}):
            r = self.env.request(dict(op="enqueue", idempotency_key="deploy-42", **other))
            self.assertEqual(r.get("error"), "idempotency_conflict", r)
        self.assertEqual(rows(self.env, "SELECT count(*) FROM requests"), [(1,)])
        st = self.env.request({"op": "stats"})
        self.assertEqual((st["requests"], st["replayed"], st["idempotency_conflicts"]),
                         (1, 1, 2))
        for bad in ("", "x" * 129, "with space", "caf\u00e9"):
            r = self.env.request({"op": "enqueue", "install": I1, "idempotency_key": bad})
            self.assertEqual(r.get("error"), "bad_value", (bad, r))
        self.enqueue(I1, "object", idempotency_key="~" * 128)

    def test_finished_request_is_replayed(self):
        a = self.enqueue(I1, "page", idempotency_key="k")
        self.wait_state(a["id"])
        b = self.enqueue(I1, "page", idempotency_key="k")
        self.assertEqual((b["replayed"], b["id"], b["state"]), (True, a["id"], "done"))

    def test_same_key_in_one_batch(self):
        line = ('{"op":"enqueue","install":"%s","type":"page","idempotency_key":"b"}\n'
                % I1)
        with self.env.connect() as c:
            c.send(line * 5)      # pipelined: handed to one group commit
            answers = [c.recv() for _ in range(5)]
        self.assertEqual(len({a["id"] for a in answers}), 1, answers)
        self.assertEqual([a["replayed"] for a in answers], [False] + [True] * 4)
        self.assertEqual(rows(self.env, "SELECT count(*) FROM requests"), [(1,)])

    def test_key_survives_restart_and_kill9(self):
        a = self.enqueue(I1, "object", idempotency_key="r")
        self.env.stop()
        self.env.start()
        self.assertEqual(self.enqueue(I1, "object", idempotency_key="r")["id"], a["id"])
        self.env.kill9()
        self.env.start()
        b = self.enqueue(I1, "object", idempotency_key="r")
        self.assertEqual((b["id"], b["replayed"]), (a["id"], True))
        self.assertEqual(rows(self.env, "SELECT count(*) FROM requests"), [(1,)])

    def test_key_is_scoped_to_the_uid(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to act as another uid")
        os.chmod(self.env.sock, 0o777)
        mine = self.enqueue(I1, "object", idempotency_key="shared")
        with self.env.connect_as(4200) as c:
            theirs = c.call({"op": "enqueue", "install": I1, "type": "object",
                             "idempotency_key": "shared"})
            self.assertTrue(theirs["ok"], theirs)
            self.assertFalse(theirs["replayed"])
            self.assertNotEqual(theirs["id"], mine["id"])
            # And another install under the same key is theirs to use, not a conflict.
            again = c.call({"op": "enqueue", "install": I1, "type": "object",
                            "idempotency_key": "shared"})
            self.assertEqual((again["id"], again["replayed"]), (theirs["id"], True))
        self.assertEqual(rows(self.env, "SELECT count(*) FROM requests"), [(2,)])

    def test_ctl_key_and_wait(self):
        rc, out, err = self.env.ctl("--json", "enqueue", I1, "-t", "page",
                                    "--idempotency-key", "ci-7", env=ci_clean_env())
        self.assertEqual(rc, 0, err)
        rc, out2, err = self.env.ctl("enqueue", I1, "-t", "page", "--idempotency-key",
                                     "ci-7", env=ci_clean_env())
        self.assertEqual(rc, 0, err)
        self.assertIn("was queued before", out2)
        rc, _, err = self.env.ctl("enqueue", I1, "--idempotency-key", "two words")
        self.assertEqual(rc, 2, err)
        # --wait without a key gets one: its request carries it.
        rc, out, err = self.env.ctl("enqueue", I2, "-t", "page", "--wait", "--timeout",
                                    "10", env=ci_clean_env())
        self.assertEqual(rc, 0, err)
        keys = rows(self.env, "SELECT idem_key FROM requests WHERE install = '%s'" % I2)
        self.assertRegex(keys[0][0], r"^wpe-[0-9a-f]{32}$")


class FailedCommit(unittest.TestCase):
    """A key whose request's commit failed is not remembered: the retry makes it."""

    def test_failed_commit_forgets_the_key(self):
        env = erofs_env()
        try:
            env.readonly(True)
            r = env.request({"op": "enqueue", "install": I1, "type": "page",
                             "idempotency_key": "f"})
            self.assertEqual(r.get("error"), "storage", r)
            env.readonly(False)
            r = wait_for(lambda: (lambda a: a if a.get("ok") else None)(env.request(
                {"op": "enqueue", "install": I1, "type": "page", "idempotency_key": "f"})),
                what="the store healed")
            self.assertEqual(r["replayed"], False)
            self.assertEqual(rows(env, "SELECT count(*) FROM requests"), [(1,)])
        finally:
            env.close()


class TopRequesters(EnvTest):
    def test_bounded(self):
        self.env.request({"op": "pause"})
        with self.env.connect() as c:
            for i in range(70):
                for _ in range(2 if i == 69 else 1):
                    src = {"ci": "gitlab", "job_url": "https://gitlab.com/g/p%d/-/jobs/1" % i}
                    self.assertTrue(c.call({"op": "enqueue", "install": I1, "type": "page",
                                            "source": src})["ok"])
        top = self.env.request({"op": "stats"})["top_requesters"]
        self.assertEqual(len(top), 10)
        self.assertTrue(all(e.get("approximate") for e in top), top)
        # The newest requester took the smallest counter and counts on from it.
        self.assertEqual(top[0], {"requester": "gitlab:g/p69", "requests": 3,
                                  "approximate": True})


class Held(unittest.TestCase):
    """A request by a name before any catalog was read: held, and its key replays."""

    def test_held_request_replayed(self):
        env = Env()
        try:
            req = urllib.request.Request(
                "http://127.0.0.1:%d/_sim/installs" % env.port, method="POST",
                data=json.dumps({"fault": {"status": 503, "count": 100000}}).encode())
            urllib.request.urlopen(req, timeout=5).close()
            env.start()
            a = env.request({"op": "enqueue", "install": "install1", "type": "page",
                             "idempotency_key": "h", "source": GITHUB})
            self.assertEqual((a["ok"], a["job"]), (True, None), a)
            b = env.request({"op": "enqueue", "install": "install1", "type": "page",
                             "idempotency_key": "h"})
            self.assertEqual((b["id"], b["replayed"], b["job"]), (a["id"], True, None))
            self.assertIn("waiting_for", b)
            c = env.request({"op": "enqueue", "install": I1, "type": "page",
                             "idempotency_key": "h"})
            self.assertEqual(c.get("error"), "idempotency_conflict", c)
            self.assertEqual(env.request({"op": "status", "id": a["id"]})["requested_by"],
                             "github:org/repo#123")
        finally:
            env.close()

    def test_job_of_a_held_request_is_who_asked(self):
        """The job a held request makes once the catalog comes says who asked, as the
        request does; it said "uid N" (the resolving pass had no source), for a request
        held across a restart too (review)."""
        env = Env()
        try:
            self.catalog_fault(env, 100000)
            env.start()
            env.request({"op": "pause"})
            a = env.request({"op": "enqueue", "install": "install1", "type": "page",
                             "source": GITHUB})
            env.kill9()                           # a is loaded from the store again
            env.start()
            env.request({"op": "pause"})
            b = env.request({"op": "enqueue", "install": "install2", "type": "page",
                             "source": dict(GITHUB, job_url="https://github.com/o/r2/"
                                            "actions/runs/5", pipeline="5")})
            self.assertEqual((a["job"], b["job"]), (None, None), (a, b))
            self.catalog_fault(env, 0)
            wait_for(lambda: env.request({"op": "status", "id": b["id"]}).get("job"),
                     timeout=60, what="held requests resolved")
            who = {j["name"]: j["requested_by"] for j in env.request({"op": "list"})["jobs"]}
            self.assertEqual(who, {"install1": "github:org/repo#123",
                                   "install2": "github:o/r2#5"})
        finally:
            env.close()

    @staticmethod
    def catalog_fault(env, count):
        req = urllib.request.Request(
            "http://127.0.0.1:%d/_sim/installs" % env.port, method="POST",
            data=json.dumps({"fault": {"status": 503, "count": count}}).encode())
        urllib.request.urlopen(req, timeout=5).close()


class LostAnswer(unittest.TestCase):
    """--wait after the daemon died between its commit and its answer: sent again with
    the same key, it is the same request, and it is purged once."""

    def test_kill9_between_commit_and_answer(self):
        env = erofs_env(limits={"object_interval": 0})
        try:
            # the catalog's first read commits too: past it, the next sync is the enqueue's
            # (under Valgrind the daemon is slow enough for the read to come later)
            wait_for(lambda: env.request({"op": "stats"})["catalog"]["fetched_at"],
                     timeout=60, what="the installs catalog")
            env.killed_at_sync(True)
            p = subprocess.Popen([CTL, "-s", env.sock, "--json", "enqueue", I1, "-t", "page",
                                  "--wait", "--timeout", "25"], env=ci_clean_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # killed itself at the sync after the commit, before the answer
            self.assertEqual(env.daemon.wait(10), -9)
            env.daemon = None
            env.killed_at_sync(False)
            self.assertEqual(rows(env, "SELECT count(*) FROM requests"), [(1,)])
            env.start()                  # a plain daemon: the client finds it again
            out, err = p.communicate(timeout=40)
            self.assertEqual(p.returncode, 0, err)
            self.assertIn("sending it again with the same idempotency key", err)
            self.assertIn('"replayed":true', out)
            self.assertEqual(rows(env, "SELECT count(*) FROM requests"), [(1,)])
            self.assertEqual(len(env.purges(I1)), 1)
        finally:
            env.close()


class Protocol3Daemon:
    """A stand-in for a wpe-purged older than protocol 4 on a Unix socket: it refuses
    "source" and "idempotency_key" as unknown fields (as version 3 did), queues the
    rest, and answers a wait with the request done. Every request is kept in seen."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="wpe-p3-")
        self.sock = os.path.join(self.dir, "d.sock")
        self.seen = []
        self.ids = 0
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.sock)
        self.srv.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def answer(self, r):
        self.seen.append(r)
        for k in r:
            if k not in ("op", "install", "type", "reason", "id", "timeout"):
                return {"ok": False, "error": "unknown_field",
                        "message": 'unknown field "%s"' % k}
        if r["op"] == "enqueue":
            self.ids += 1
            return {"ok": True, "id": self.ids, "job": self.ids, "coalesced": False,
                    "state": "queued", "install": r["install"], "name": None}
        return {"ok": True, "id": r.get("id"), "install": I1, "type": "page",
                "state": "done", "job": r.get("id"), "job_type": "page", "attempts": 1,
                "http_status": 202, "message": None}

    def serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with c, c.makefile("rwb") as f:
                for line in f:
                    f.write(json.dumps(self.answer(json.loads(line))).encode() + b"\n")
                    f.flush()

    def close(self):
        self.srv.close()
        os.unlink(self.sock)
        os.rmdir(self.dir)


class OlderDaemon(unittest.TestCase):
    """wpe-purgectl against a daemon older than protocol 4 (a CI runner's newer client, a
    package upgrade before the restart): what it adds on its own (the CI's source,
    --wait's key) must never fail the enqueue; every enqueue from a CI job and every
    --wait failed with unknown_field, exit 2 (review)."""

    def setUp(self):
        self.d = Protocol3Daemon()

    def tearDown(self):
        self.d.close()

    def ctl(self, *args, env=None):
        p = subprocess.run([CTL, "-s", self.d.sock] + list(args), capture_output=True,
                           text=True, timeout=30, env=ci_clean_env(env))
        return p.returncode, p.stdout, p.stderr

    def test_own_fields_dropped_given_ones_kept(self):
        rc, out, err = self.ctl("enqueue", I1, "-t", "page", env=GITHUB_ENV)
        self.assertEqual(rc, 0, err)
        self.assertIn('does not take "source"; sent without it', err)
        self.assertEqual(["source" in r for r in self.d.seen], [True, False])
        rc, out, err = self.ctl("enqueue", I1, "-t", "page", "--wait", "--timeout", "5",
                                env=GITHUB_ENV)
        self.assertEqual(rc, 0, err)
        self.assertIn("done", out)
        self.assertEqual(self.d.seen[-1]["op"], "wait")
        enq = [r for r in self.d.seen[2:] if r["op"] == "enqueue"]
        self.assertEqual(sorted(enq[-1]), ["install", "op", "type"])
        # What the user asked for is not dropped: the daemon's refusal stands.
        rc, _, err = self.ctl("enqueue", I1, "--idempotency-key", "k")
        self.assertEqual(rc, 2, err)
        self.assertIn('unknown field "idempotency_key"', err)
        rc, _, err = self.ctl("enqueue", I1, "--source", "actor=me")
        self.assertEqual(rc, 2, err)


@unittest.skipUnless(FAKETIME_LIB, "needs libfaketime")
class Pruned(unittest.TestCase):
    """A key lives as long as its request: pruned with it, it makes a new request."""

    def test_key_pruned_with_its_request(self):
        env = Env()
        ts = os.path.join(env.dir, "faketime")
        saved = dict(os.environ)

        def start(off):
            with open(ts, "w") as f:
                f.write(off + "\n")
            os.environ.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME_TIMESTAMP_FILE=ts,
                              FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
            try:
                env.start()
            finally:
                os.environ.clear()
                os.environ.update(saved)
        try:
            start("+0")
            a = env.request({"op": "enqueue", "install": I1, "type": "page",
                             "idempotency_key": "old"})
            env.wait_state(a["id"])
            env.stop()
            start("+8d")             # past the 7-day retention; pruned 1 s after start
            wait_for(lambda: env.request({"op": "status", "id": a["id"]}).get("error") ==
                     "not_found", timeout=5, what="request pruned")
            self.assertEqual(rows(env, "SELECT count(*) FROM requests"), [(0,)])
            b = env.request({"op": "enqueue", "install": I1, "type": "page",
                             "idempotency_key": "old"})
            self.assertEqual(b["replayed"], False)
            self.assertNotEqual(b["id"], a["id"])
        finally:
            env.close()


if __name__ == "__main__":
    unittest.main()
