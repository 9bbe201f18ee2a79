"""test_lifecycle.py: requests that expire (max_age), requeue, the persisted pause, and
pruning the limits table, on the real daemon."""
import os
import signal
import socket
import sqlite3
import time
import unittest
import urllib.request

from harness import Env, EnvTest, I1, I2, I3, erofs_env, wait_for


def sim_reset(env):
    req = urllib.request.Request("http://127.0.0.1:%d/_sim/reset" % env.port, data=b"{}",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def db_rows(env, sql, *args):
    con = sqlite3.connect(env.db, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


class Expiry(EnvTest):
    """max_age 2s: a request that cannot be sent in time becomes "expired"."""
    limits = {"max_age": "2s"}

    def test_api_down_wait_exits_1_job_dropped_new_job_after(self):
        self.env.fault(status=503, for_ms=60000)
        t0 = time.monotonic()
        rc, out, err = self.env.ctl("enqueue", I1, "--type", "object", "--wait",
                                    "--timeout", "30")
        took = time.monotonic() - t0
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("expired", err)
        self.assertIn("not sent within max_age (2s)", err)
        # Why: the API's answer (503), or the outage it makes.
        self.assertTrue("HTTP 503" in err or "API unavailable since" in err, err)
        self.assertLess(took, 10)
        rid = int(out.split()[1])
        st = self.status(rid)
        self.assertEqual(st["state"], "expired", st)
        self.assertIsNotNone(st["finished_at"])
        job = st["job"]
        # The job is dropped: nothing is queued, nothing more is sent for it.
        lst = self.env.request({"op": "list"})
        self.assertEqual(lst["jobs"], [], lst)
        self.assertEqual(db_rows(self.env, "SELECT state FROM jobs WHERE id = ?", job),
                         [("expired",)])
        stats = self.env.request({"op": "stats"})
        self.assertEqual(stats["expired"], 1)
        self.assertEqual(stats["max_age"], 2)
        # wait on it again: at once, exit 1 with the reason
        rc, out, err = self.env.ctl("wait", str(rid))
        self.assertEqual(rc, 1)
        self.assertIn("not sent within max_age", err)
        # A later request for the same install makes a new job, and is sent.
        sim_reset(self.env)
        r = self.enqueue(I1, "object")
        self.assertFalse(r["coalesced"])
        self.assertNotEqual(r["job"], job)
        self.wait_state(r["id"], "done")
        self.assertIn("expired", self.env.log())

    def test_one_of_two_requests_sharing_a_job(self):
        self.env.request({"op": "pause"})
        a = self.enqueue(I1, "object")
        time.sleep(1.2)
        b = self.enqueue(I1, "object")
        self.assertEqual(a["job"], b["job"])
        st = self.wait_state(a["id"], "expired", timeout=10)
        self.assertIn("sending paused since", st["message"])
        # The job stays for b, with one request now.
        self.assertEqual(self.status(b["id"])["state"], "queued")
        jobs = self.env.request({"op": "list"})["jobs"]
        self.assertEqual([(j["job"], j["requests"]) for j in jobs], [(a["job"], 1)])
        self.env.request({"op": "resume"})
        self.assertEqual(self.wait_state(b["id"], ("done", "expired"))["state"], "done")
        self.assertEqual(self.status(a["id"])["state"], "expired")

    def test_purge_in_flight_at_max_age_is_settled_by_its_answer(self):
        # The API holds its 202 past max_age: the purge was made, so the request is done
        # (it was expired, "never attempted", while its job went on to be done).
        self.env.fault(status=202, delay_ms=3000)
        rc, out, err = self.env.ctl("enqueue", I1, "--type", "object", "--wait",
                                    "--timeout", "30")
        self.assertEqual(rc, 0, (out, err))
        rid = int(out.split()[1])
        st = self.status(rid)
        self.assertEqual((st["state"], st["http_status"]), ("done", 202), st)
        self.assertEqual(db_rows(self.env, "SELECT state FROM requests WHERE id = ?", rid),
                         [("done",)])
        self.assertEqual(self.env.request({"op": "stats"})["expired"], 0)
        # Any other answer past max_age expires it then, with that answer as the reason,
        # and nothing more is sent for it.
        self.env.fault(status=503, delay_ms=3000)
        r = self.enqueue(I2, "page")
        st = self.wait_state(r["id"], "expired", timeout=10)
        self.assertIn("HTTP 503", st["message"])
        self.assertEqual(self.env.request({"op": "list"})["jobs"], [])
        time.sleep(1.5)
        self.assertEqual(len(self.env.purges(I2, status=None)), 1)

    def test_max_age_shortened_on_sighup(self):
        # Keyed by acceptance time: a shorter max_age expires what is older at once.
        self.env.lim["max_age"] = "0"
        self.env.write_conf(self.env.lim, self.env.api)
        self.env.daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in self.env.log(), what="reload")
        self.env.request({"op": "pause"})
        r = self.enqueue(I2, "page")
        time.sleep(2.5)
        self.assertEqual(self.status(r["id"])["state"], "queued")
        self.env.lim["max_age"] = "2s"
        self.env.write_conf(self.env.lim, self.env.api)
        self.env.daemon.send_signal(signal.SIGHUP)
        self.wait_state(r["id"], "expired", timeout=3)
        self.assertEqual(self.env.request({"op": "list"})["jobs"], [])


class ExpiryStorageFailure(unittest.TestCase):
    """An expiry that cannot be written changes nothing, and is tried again."""

    def test_expiry_waits_for_the_database(self):
        env = erofs_env(limits={"max_age": "2s"})
        try:
            env.request({"op": "pause"})
            r = env.request({"op": "enqueue", "install": I1, "type": "object"})
            self.assertTrue(r["ok"], r)
            env.readonly(True)
            wait_for(lambda: env.request({"op": "stats"})["storage_errors"] > 0, timeout=6,
                     what="a failed expiry")
            self.assertEqual(env.request({"op": "status", "id": r["id"]})["state"], "queued")
            self.assertEqual(len(env.request({"op": "list"})["jobs"]), 1)
            env.readonly(False)
            st = env.wait_state(r["id"], "expired", timeout=10)
            self.assertIn("sending paused since", st["message"])
            self.assertEqual(env.request({"op": "list"})["jobs"], [])
        finally:
            env.close()


def anon_kib(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    raise AssertionError("no Anonymous line")


@unittest.skipIf(os.environ.get("WPE_DAEMON_WRAPPER") or "asan" in
                 os.environ.get("WPE_BUILD", ""), "memory is measured on a plain build")
class ExpiryMemory(unittest.TestCase):
    """Expiry keeps nothing per request: 100,002 queued requests cost what they did
    before max_age (issue 10: <= 48 MiB RSS). A node per request (by id, by age and on
    its job's list: 139 bytes) took the daemon from 45.9 to 59.1 MiB."""

    def test_memory_per_queued_request(self):
        env = Env(api={"base_url": "http://127.0.0.1:1/v1"})
        try:
            env.start(extra_env={"WPE_PURGED_CHECK": "0"})
            time.sleep(1)
            empty = anon_kib(env.daemon.pid)
            env.stop()
            con = sqlite3.connect(env.db)
            t = int(time.time() * 1000)
            n = 100002
            jobs, reqs = [], []
            for k in range(n):
                inst = "%08x-0000-4000-8000-%012x" % (k // 3, k // 3)
                ty = ("object", "page", "cdn")[k % 3]
                jobs.append((k + 1, inst, ty, t + 3600 * 1000, t))
                reqs.append((k + 1, k + 1, inst, ty, 1000 + k % 4, t))
            con.executemany("INSERT INTO jobs (id, install, type, state, attempts,"
                            " not_before, created_at) VALUES (?, ?, ?, 'queued', 0, ?, ?)",
                            jobs)
            con.executemany("INSERT INTO requests (id, job, install, type, state, uid, pid,"
                            " coalesced, enqueued_at) VALUES (?, ?, ?, ?, 'queued', ?, 0, 0,"
                            " ?)", reqs)
            con.commit()
            con.close()
            env.start(extra_env={"WPE_PURGED_CHECK": "0"})
            self.assertEqual(env.request({"op": "stats"})["queued_jobs"], n)
            time.sleep(1)
            per = (anon_kib(env.daemon.pid) - empty) * 1024 / n
            # a queued job with its request, a third of an install, heaps and tables:
            # about 350 bytes (336 before max_age); a node per request made it 477
            self.assertLess(per, 400, "%.0f bytes per queued request" % per)
        finally:
            env.close()


class HeldExpiry(unittest.TestCase):
    """A request by name held for a catalog that is never read expires too."""

    def test_held_request_expires(self):
        env = Env(limits={"max_age": "2s"}, api={"base_url": "http://127.0.0.1:1/v1"})
        try:
            env.start()
            r = env.request({"op": "enqueue", "install": "mysite", "type": "all"})
            self.assertTrue(r["ok"], r)
            self.assertIsNone(r["job"])
            rc, out, err = env.ctl("wait", str(r["id"]), "--timeout", "20")
            self.assertEqual(rc, 1, (out, err))
            self.assertIn("installs catalog was never read", err)
            st = env.request({"op": "status", "id": r["id"]})
            self.assertEqual(st["state"], "expired")
            self.assertEqual(env.request({"op": "stats"})["held_requests"], 0)
        finally:
            env.close()


class RequeueExpired(EnvTest):
    limits = {"max_age": "2s"}

    def test_requeue_failed_expired_cancelled(self):
        # failed: the API says 404 once
        self.env.fault(status=404, count=1)
        f = self.enqueue(I1, "object", reason="deploy 7")
        self.wait_state(f["id"], "failed")
        rc, out, err = self.env.ctl("requeue", str(f["id"]))
        self.assertEqual(rc, 0, err)
        self.assertIn("requeued as request", out)
        nid = int(out.split()[5].rstrip(":"))
        st = self.wait_state(nid, "done")
        self.assertEqual(st["requeued_from"], f["id"])
        self.assertEqual((st["install"], st["type"], st["reason"]), (I1, "object", "deploy 7"))
        self.assertIsNone(self.status(f["id"])["requeued_from"])
        # expired: the API down for longer than max_age
        self.env.fault(status=503, for_ms=4000)
        e = self.enqueue(I2, "page")
        self.wait_state(e["id"], "expired", timeout=10)
        sim_reset(self.env)
        r = self.env.request({"op": "requeue", "id": e["id"]})
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["requeued_from"], e["id"])
        self.assertEqual(r["state"], "queued")
        self.wait_state(r["id"], "done")
        # cancelled, requeued while paused: it joins the normal path (coalescing too)
        self.env.request({"op": "pause"})
        c = self.enqueue(I3, "cdn")
        self.assertTrue(self.env.request({"op": "cancel", "id": c["id"]})["ok"])
        other = self.enqueue(I3, "cdn")
        r = self.env.request({"op": "requeue", "id": c["id"]})
        self.assertTrue(r["ok"], r)
        self.assertTrue(r["coalesced"])
        self.assertEqual(r["job"], other["job"])
        self.env.request({"op": "resume"})
        self.wait_state(r["id"], "done")
        self.assertEqual(self.env.request({"op": "stats"})["requeued"], 3)


class Requeue(EnvTest):

    def test_refusals(self):
        self.env.request({"op": "pause"})
        q = self.enqueue(I1, "object")
        r = self.env.request({"op": "requeue", "id": q["id"]})
        self.assertEqual((r["ok"], r["error"], r["state"]), (False, "not_requeueable", "queued"))
        rc, out, err = self.env.ctl("requeue", str(q["id"]))
        self.assertEqual(rc, 2)
        self.assertIn("not_requeueable", err)
        self.env.request({"op": "resume"})
        self.wait_state(q["id"], "done")
        r = self.env.request({"op": "requeue", "id": q["id"]})
        self.assertEqual((r["error"], r["state"]), ("not_requeueable", "done"))
        r = self.env.request({"op": "requeue", "id": 999999})
        self.assertEqual(r["error"], "not_found")
        r = self.env.request({"op": "requeue"})
        self.assertEqual(r["error"], "missing_field")

    def test_requeue_keeps_the_provenance(self):
        # "the same fields and provenance": who asked and from which CI job (the requeued
        # request had no source: "uid 0" in status, list, the log and stats).
        src = {"ci": "github", "job_url": "https://github.com/org/repo/actions/runs/77",
               "commit": "0123abc", "ref": "refs/heads/main", "actor": "alice"}
        self.env.request({"op": "pause"})
        q = self.enqueue(I1, "object", reason="deploy 9", source=src)
        self.assertTrue(self.env.request({"op": "cancel", "id": q["id"]})["ok"])
        old = self.status(q["id"])
        r = self.env.request({"op": "requeue", "id": q["id"]})
        self.assertTrue(r["ok"], r)
        st = self.status(r["id"])
        self.assertEqual(st["source"], src)
        self.assertEqual(st["requested_by"], old["requested_by"])
        self.assertTrue(st["requested_by"].startswith("github:org/repo"), st)
        self.assertEqual(st["reason"], "deploy 9")
        # without a source, none is made up
        q = self.enqueue(I2, "page")
        self.assertTrue(self.env.request({"op": "cancel", "id": q["id"]})["ok"])
        r = self.env.request({"op": "requeue", "id": q["id"]})
        self.assertIsNone(self.status(r["id"])["source"])
        self.env.request({"op": "resume"})
        self.wait_state(r["id"], "done")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to connect as another uid")
    def test_not_yours(self):
        self.env.request({"op": "pause"})
        q = self.enqueue(I1, "object")
        self.assertTrue(self.env.request({"op": "cancel", "id": q["id"]})["ok"])
        with self.env.connect_as(65534) as c:
            r = c.call({"op": "requeue", "id": q["id"]})
        self.assertEqual(r["error"], "forbidden", r)
        # its owner (here root, also an administrator) may
        self.assertTrue(self.env.request({"op": "requeue", "id": q["id"]})["ok"])

    def test_requeue_over_a_restart(self):
        self.env.fault(status=404, count=1)
        f = self.enqueue(I2, "all")
        self.wait_state(f["id"], "failed")
        self.env.stop()
        self.env.start()
        self.env.request({"op": "pause"})
        r = self.env.request({"op": "requeue", "id": f["id"]})
        self.assertTrue(r["ok"], r)
        self.env.kill9()
        self.env.start()
        st = self.status(r["id"])
        self.assertEqual((st["state"], st["requeued_from"]), ("queued", f["id"]))
        self.env.request({"op": "resume"})
        self.wait_state(r["id"], "done")


class Pause(EnvTest):
    def test_pause_survives_kill9_until_resume(self):
        r = self.env.request({"op": "pause"})
        self.assertTrue(r["paused"])
        since = r["paused_since"]
        self.assertIsNotNone(since)
        q = self.enqueue(I1, "page")
        self.env.kill9()
        # Restarted with a notify socket: the status line says paused from the start.
        path = os.path.join(self.env.dir, "notify")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(path)
        ns.settimeout(10)
        try:
            self.env.start(extra_env={"NOTIFY_SOCKET": path})
            msgs = []
            while not any(m.startswith("STATUS=") for m in msgs):
                msgs.append(ns.recv(4096).decode())
        finally:
            ns.close()
        status = [m for m in msgs if m.startswith("STATUS=")][0]
        self.assertTrue(status.startswith("STATUS=paused since " + since[:10]), status)
        self.assertIn("sending is paused since " + since, self.env.log())
        stats = self.env.request({"op": "stats"})
        self.assertTrue(stats["paused"])
        self.assertEqual(stats["paused_since"], since)
        time.sleep(1)
        self.assertEqual(self.env.purges(), [])
        self.assertEqual(self.status(q["id"])["state"], "queued")
        # resume: sent; and a restart after it sends too
        self.assertFalse(self.env.request({"op": "resume"})["paused"])
        self.wait_state(q["id"], "done")
        self.env.kill9()
        self.env.start()
        self.assertFalse(self.env.request({"op": "stats"})["paused"])
        q2 = self.enqueue(I2, "page")
        self.wait_state(q2["id"], "done")


class LimitsPruning(EnvTest):
    limits = {"object_interval": 2}

    def test_rows_go_when_the_window_lapses_and_no_job(self):
        r = self.enqueue(I1, "object")
        self.wait_state(r["id"], "done")
        self.assertEqual(len(db_rows(self.env, "SELECT * FROM limits WHERE install = ?", I1)), 1)
        # The window (2 s from the answer) lapses: the row goes, exactly then.
        wait_for(lambda: not db_rows(self.env, "SELECT * FROM limits WHERE install = ?", I1),
                 timeout=6, what="the limits row pruned")
        self.assertEqual(self.env.request({"op": "stats"})["limits_forgotten"], 1)
        # A job keeps its install's row, window over or not.
        r = self.enqueue(I2, "object")
        self.wait_state(r["id"], "done")
        self.env.request({"op": "pause"})
        q = self.enqueue(I2, "object")
        time.sleep(3)
        self.assertEqual(len(db_rows(self.env, "SELECT * FROM limits WHERE install = ?", I2)), 1)
        self.env.request({"op": "resume"})
        self.wait_state(q["id"], "done")
        wait_for(lambda: not db_rows(self.env, "SELECT * FROM limits"), timeout=6,
                 what="every limits row pruned")

    def test_stale_rows_go_at_start(self):
        self.env.stop()
        con = sqlite3.connect(self.env.db)
        con.executemany("INSERT OR REPLACE INTO limits VALUES (?, 0, ?, 0, 0)",
                        [(I2, 1000), (I3, int(time.time() * 1000) + 3600 * 1000)])
        con.commit()
        con.close()
        self.env.start()
        wait_for(lambda: db_rows(self.env, "SELECT install FROM limits") == [(I3,)],
                 timeout=5, what="the stale row pruned, the one in force kept")


if __name__ == "__main__":
    unittest.main()
