"""test_sending.py: purges reach the API simulator within its limits, through its faults."""
import random
import signal
import threading
import time
import unittest

from harness import I1, I2, I3, UNKNOWN, Env, EnvTest, wait_for

INTERVAL = 2.0   # object_interval in these tests (daemon and simulator alike)


def object_calls(env, install, status=202):
    return [c for c in env.calls() if c["install"] == install and c["status"] == status
            and c["type"] in ("object", "all")]


class Burst:
    """Clients that enqueue object purges for a while and remember what was acknowledged."""

    def __init__(self, env, clients=40, seconds=5.0, installs=(I1, I2, I3)):
        self.env, self.clients, self.seconds, self.installs = env, clients, seconds, installs
        self.acked = []      # (id, install, wall time just before sending)
        self.restarts = 3    # kill -9 rounds a test may do during the burst
        self.lock = threading.Lock()

    def client(self, seed):
        rnd = random.Random(seed)
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            inst = rnd.choice(self.installs)
            t = time.time()
            try:
                r = self.env.request({"op": "enqueue", "install": inst, "type": "object"})
            except (OSError, EOFError):
                time.sleep(0.05)   # daemon restarting: not acknowledged, try again
                continue
            if r.get("ok"):
                with self.lock:
                    self.acked.append((r["id"], inst, t))
            time.sleep(rnd.uniform(0.05, 0.4))

    def run(self, during=None):
        threads = [threading.Thread(target=self.client, args=(i,))
                   for i in range(self.clients)]
        for t in threads:
            t.start()
        if during:
            during()
        for t in threads:
            t.join(self.seconds + 30)

    def check(self, test, allow_restarts=False):
        env = self.env
        test.assertGreater(len(self.acked), 100)
        for rid, inst, t in self.acked:
            s = env.wait_state(rid, timeout=30)
            fin = s["finished_at"]
            # covered by an accepted purge of its install that reached the API after
            # the request was sent, and before the request was reported done
            calls = object_calls(env, inst)
            test.assertTrue(any(c["t"] >= t for c in calls),
                            "request %d (sent %.3f) has no purge after it" % (rid, t))
        test.assertEqual([c for c in env.calls() if c["status"] == 429], [],
                         "the simulator had to answer 429")
        for inst in self.installs:
            ts = [c["t"] for c in object_calls(env, inst)]
            gaps = [b - a for a, b in zip(ts, ts[1:])]
            if gaps:
                test.assertGreaterEqual(min(gaps), INTERVAL, (inst, gaps))
            sent = sorted(t for _, i, t in self.acked if i == inst)
            # minimum calls: the leading one, then one per window while requests came in
            span = sent[-1] - sent[0]
            bound = 1 + int(span / INTERVAL) + 1 + (3 if allow_restarts else 0)
            test.assertLessEqual(len(ts), bound, (inst, len(ts), span))
            # every call after the first was needed: some request came after the one
            # before; a kill -9 mid-request may add one re-send (at least once)
            unneeded = [cur for prev, cur in zip(ts, ts[1:])
                        if not any(prev - 0.05 <= t <= cur for t in sent)]
            test.assertLessEqual(len(unneeded), self.restarts if allow_restarts else 0,
                                 "calls not needed: %s" % unneeded)
        return min((b - a for inst in self.installs for a, b in
                    zip(*(lambda ts: (ts, ts[1:]))([c["t"] for c in object_calls(env, inst)]))),
                   default=None)


class Sending(EnvTest):
    def test_burst_40_clients_3_installs(self):
        b = Burst(self.env)
        b.run()
        smallest = b.check(self)
        st = self.env.request({"op": "stats"})
        print("\nburst: %d requests, %d API calls, smallest object gap %.3f s" % (
            len(b.acked), st["api_calls"], smallest))

    def test_user_agent_and_body(self):
        r = self.enqueue(I1, "cdn")
        self.wait_state(r["id"])
        c = self.env.calls()[0]
        self.assertEqual(c["user_agent"], "wpe-purged/0.1.0")
        self.assertEqual(c["type"], "cdn")

    def test_all_respects_object_window(self):
        a = self.enqueue(I1, "object")
        self.wait_state(a["id"])
        b = self.enqueue(I1, "all")
        p = self.enqueue(I2, "page")   # another install is not held up
        self.wait_state(p["id"], timeout=1.0)
        s = self.status(b["id"])
        self.assertEqual(s["state"], "queued")
        self.assertIn("next_attempt_at", s)
        jobs = self.env.request({"op": "list"})["jobs"]
        self.assertEqual(jobs[0]["waiting_for"], "object window")
        self.wait_state(b["id"])
        ts = [c["t"] for c in object_calls(self.env, I1)]
        self.assertGreaterEqual(ts[1] - ts[0], INTERVAL)

    def test_trailing_edge_request_during_send_gets_new_job(self):
        self.env.fault(delay_ms=1000)
        a = self.enqueue(I1, "page")
        wait_for(lambda: self.status(a["id"])["state"] == "sending")
        t = time.time()
        b = self.enqueue(I1, "page")
        self.assertFalse(b["coalesced"])
        self.assertNotEqual(b["job"], a["job"])
        self.wait_state(a["id"])
        self.wait_state(b["id"])
        calls = self.env.purges(I1)
        self.assertEqual(len(calls), 2)
        self.assertGreaterEqual(calls[1]["t"], t)

    def test_404_fails_permanently(self):   # 401: BadCredentials
        r = self.enqueue(UNKNOWN, "page")
        s = self.wait_state(r["id"], ("failed",))
        self.assertEqual((s["http_status"], s["message"]), (404, "Not Found"))
        rc, out, err = self.env.ctl("wait", str(r["id"]))
        self.assertEqual(rc, 1)
        self.assertIn("Not Found", err)


class BadCredentials(EnvTest):
    def setUp(self):
        super().setUp()
        self.env.stop()
        with open(self.env.cred, "w") as f:
            f.write("api-user-1:wrong-password\n")
        self.env.start()

    def test_401_fails_and_logs_loudly_once(self):
        a = self.enqueue(I1, "page")
        b = self.enqueue(I2, "page")
        for r in (a, b):
            s = self.wait_state(r["id"], ("failed",))
            self.assertEqual((s["http_status"], s["message"]), (401, "Bad Credentials"))
        log = self.env.log()
        self.assertEqual(log.count("REJECTS OUR CREDENTIALS"), 1)
        self.assertNotIn("wrong-password", log)


class RateLimited(EnvTest):
    def test_429_with_retry_after_seconds(self):
        self.env.fault(status=429, retry_after="3")
        r = self.enqueue(I1, "page")
        s = wait_for(lambda: (lambda s: s if s["attempts"] >= 1 and s["state"] == "queued"
                              else None)(self.status(r["id"])), what="429 seen")
        self.assertIn("rate-limited", s["message"])
        self.assertEqual(s["http_status"], 429)
        self.wait_state(r["id"], timeout=10)
        calls = [c for c in self.env.calls() if c["install"] == I1]
        self.assertEqual([c["status"] for c in calls], [429, 202])
        self.assertGreaterEqual(calls[1]["t"] - calls[0]["t"], 3.0)
        self.assertEqual(self.env.request({"op": "stats"})["rate_limited"], 1)

    def test_429_with_retry_after_date(self):
        when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 4))
        self.env.fault(status=429, retry_after=when)
        r = self.enqueue(I1, "cdn")
        self.wait_state(r["id"], timeout=12)
        calls = [c for c in self.env.calls() if c["install"] == I1]
        self.assertEqual([c["status"] for c in calls], [429, 202])
        self.assertGreaterEqual(calls[1]["t"] - calls[0]["t"], 2.5)

    def test_429_without_retry_after_waits_the_interval_and_backs_off(self):
        self.env.fault(status=429, count=2)
        r = self.enqueue(I1, "object")
        self.wait_state(r["id"], timeout=20)
        calls = [c for c in self.env.calls() if c["install"] == I1]
        self.assertEqual([c["status"] for c in calls], [429, 429, 202])
        # at least the interval, then twice it (retry_max 4 caps it)
        self.assertGreaterEqual(calls[1]["t"] - calls[0]["t"], INTERVAL)
        self.assertGreaterEqual(calls[2]["t"] - calls[1]["t"], 4.0)

    def test_429_blocks_only_that_install(self):
        self.env.fault(status=429, retry_after="5")
        a = self.enqueue(I1, "page")
        wait_for(lambda: self.status(a["id"])["attempts"] == 1)
        b = self.enqueue(I2, "page")
        self.wait_state(b["id"], timeout=2)
        self.assertEqual(self.status(a["id"])["state"], "queued")


class RetryAfterFromSimulator(EnvTest):
    """The simulator's own 60-second rule with Retry-After, against a daemon set too fast."""
    limits = {"object_interval": 0}
    sim_args = ("--retry-after", "seconds")

    def test_daemon_too_fast_is_corrected_by_retry_after(self):
        a = self.enqueue(I1, "object")
        self.wait_state(a["id"])
        b = self.enqueue(I1, "object")
        self.wait_state(b["id"], timeout=10)
        calls = [c for c in self.env.calls() if c["install"] == I1]
        self.assertEqual([c["status"] for c in calls], [202, 429, 202])
        self.assertGreaterEqual(calls[2]["t"] - calls[0]["t"], INTERVAL)


class Outage(EnvTest):
    limits = {"retry_initial": 1, "retry_max": 2}

    def test_503_outage_bounded_calls_then_everything_done(self):
        self.env.fault(status=503, for_ms=4000)
        t0 = time.time()
        reqs = [self.enqueue(inst, t) for inst in (I1, I2, I3) for t in ("page", "cdn")]
        for r in reqs:
            self.wait_state(r["id"], timeout=20)
        during = [c for c in self.env.calls() if c["status"] == 503]
        # 6 jobs would make ~24+ calls in 4 s at 1-2 s each without the outage mode
        self.assertLessEqual(len(during), 12, len(during))
        self.assertGreaterEqual(len(during), 2)
        s = self.status(reqs[0]["id"])
        self.assertEqual(s["state"], "done")
        print("\noutage: %d calls during a 4 s 503 window for 6 jobs" % len(during))
        self.assertGreater(time.time() - t0, 3.5)

    def test_dropped_connection_is_retried(self):
        self.env.fault(drop=True)
        r = self.enqueue(I1, "page")
        s = self.wait_state(r["id"], timeout=10)
        self.assertEqual(s["attempts"], 2)
        self.assertEqual([c["note"] for c in self.env.calls()], ["dropped", ""])

    def test_dropped_reused_connection_is_not_resent_behind_our_back(self):
        # A first purge leaves a keep-alive connection; the next attempt's connection is
        # dropped after the request arrived. libcurl used to send the POST again on a
        # fresh connection at once: two calls for one attempt, inside the window.
        self.wait_state(self.enqueue(I1, "object")["id"])
        time.sleep(INTERVAL + 0.2)
        self.env.fault(drop=True, count=1)
        r = self.enqueue(I1, "object")
        self.wait_state(r["id"], timeout=15)
        ts = [c["arrived"] for c in self.env.calls() if c["install"] == I1]
        self.assertEqual(len(ts), 3, self.env.calls())
        # The dropped attempt may have been acted on: the retry waits the window.
        self.assertGreaterEqual(ts[2] - ts[1], INTERVAL - 0.05)

    def test_malformed_500_is_retried(self):
        self.env.fault(malformed=True, status=500)
        r = self.enqueue(I1, "page")
        s = wait_for(lambda: (lambda s: s if s["attempts"] == 1 and s["state"] == "queued"
                              else None)(self.status(r["id"])), what="500 seen")
        self.assertEqual(s["message"], "HTTP 500")
        self.wait_state(r["id"], timeout=10)


class Timeouts(EnvTest):
    api = {"timeout": 1}

    def test_slow_answer_times_out_and_is_retried(self):
        self.env.fault(delay_ms=3000)
        r = self.enqueue(I1, "page")
        s = wait_for(lambda: (lambda s: s if s["attempts"] == 1 and s["state"] == "queued"
                              else None)(self.status(r["id"])), timeout=5, what="timeout")
        self.assertIn("no answer from the API", s["message"])
        self.assertIn("timed out", s["message"])
        self.wait_state(r["id"], timeout=10)


class KillDuringBurst(unittest.TestCase):
    def test_kill9_three_times_during_burst(self):
        env = Env()
        try:
            env.start()
            b = Burst(env, clients=20, seconds=8)

            def killer():
                rnd = random.Random(7)
                for _ in range(3):
                    time.sleep(rnd.uniform(1.0, 2.0))
                    env.kill9()
                    env.start()

            b.run(during=killer)
            b.check(self, allow_restarts=True)
            print("\nkill -9 x3 during burst: %d acknowledged requests all purged" %
                  len(b.acked))
        finally:
            env.close()


if __name__ == "__main__":
    unittest.main()
