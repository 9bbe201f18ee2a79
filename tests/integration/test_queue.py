"""test_queue.py: the queue daemon through its socket: protocol, coalescing, durability."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import (CTL, DAEMON, I1, I2, I3, PASSWORD, Client, Env, EnvTest, FreshEnvTest,
                     wait_for)


class Protocol(EnvTest):
    def test_ping_and_version(self):
        r = self.env.request({"op": "ping"})
        self.assertEqual(r, {"ok": True, "version": "0.1.0", "protocol": 4})

    def test_errors_keep_connection_usable(self):
        bad = [
            ("not json", "bad_json"),
            ('{"op":"enqueue"}', "missing_field"),
            ('{"op":"enqueue","install":"Torquemag"}', "bad_install"),
            ('{"op":"enqueue","install":"tq"}', "bad_install"),
            ('{"op":"enqueue","install":"a23456789012345"}', "bad_install"),
            ('{"op":"enqueue","install":"%s","type":"everything"}' % I1, "bad_type"),
            ('{"op":"enqueue","install":%s}' % json.dumps(I1 + "/../x"), "bad_install"),
            ('{"op":"status","id":"1"}', "bad_type"),
            ('{"op":"frobnicate"}', "unknown_op"),
            ('{"op":"ping","x":1}', "unknown_field"),
            ('[]', "bad_json"),
            ('{"op":"status","id":424242}', "not_found"),
        ]
        with self.env.connect() as c:
            for line, code in bad:
                r = c.call(line + "\n")
                self.assertFalse(r["ok"], line)
                self.assertEqual(r["error"], code, line)
                self.assertTrue(len(r["message"]) > 10, r)
            self.assertTrue(c.call({"op": "ping"})["ok"])
        # and nothing reached the API
        time.sleep(0.3)
        self.assertEqual(self.env.calls(), [])

    def test_pipelined_answers_in_order(self):
        with self.env.connect() as c:
            c.send("".join(json.dumps(o) + "\n" for o in [
                {"op": "pause"},
                {"op": "enqueue", "install": I1, "type": "page"},
                {"op": "ping"},
                {"op": "enqueue", "install": I1, "type": "page"},
                {"op": "bogus"},
                {"op": "status", "id": 1},
            ]))
            answers = [c.recv() for _ in range(6)]
        self.assertEqual(answers[0]["paused"], True)
        self.assertEqual((answers[1]["id"], answers[1]["coalesced"]), (1, False))
        self.assertEqual(answers[2]["version"], "0.1.0")
        self.assertEqual((answers[3]["id"], answers[3]["coalesced"]), (2, True))
        self.assertEqual(answers[3]["job"], answers[1]["job"])
        self.assertEqual(answers[4]["error"], "unknown_op")
        self.assertEqual((answers[5]["id"], answers[5]["state"]), (1, "queued"))

    def test_request_split_across_writes(self):
        line = json.dumps({"op": "ping"}) + "\n"
        with self.env.connect() as c:
            for ch in line:
                c.send(ch)
                time.sleep(0.001)
            self.assertTrue(c.recv()["ok"])
            # CRLF and blank lines are tolerated
            c.send('\r\n\n{"op":"ping"}\r\n')
            self.assertTrue(c.recv()["ok"])

    def test_overlong_line_is_refused_and_closed(self):
        with self.env.connect() as c:
            c.send('{"op":"ping","pad":"' + "x" * (70 * 1024))
            r = c.recv()
            self.assertEqual(r["error"], "line_too_long")
            with self.assertRaises((EOFError, ConnectionResetError)):
                c.recv()
        # the daemon is fine
        self.assertTrue(self.env.request({"op": "ping"})["ok"])

    def test_last_line_without_newline_at_eof(self):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.env.sock)
        s.sendall(b'{"op":"ping"}')
        s.shutdown(socket.SHUT_WR)
        data = s.recv(4096)
        s.close()
        self.assertTrue(json.loads(data)["ok"])


class Coalescing(EnvTest):
    def setUp(self):
        super().setUp()
        self.assertTrue(self.env.request({"op": "pause"})["ok"])

    def jobs(self):
        return self.env.request({"op": "list"})["jobs"]

    def test_same_install_and_type_join(self):
        a = self.enqueue(I1, "object")
        b = self.enqueue(I1, "object")
        c = self.enqueue(I2, "object")
        d = self.enqueue(I1, "page")
        self.assertFalse(a["coalesced"])
        self.assertTrue(b["coalesced"])
        self.assertEqual(a["job"], b["job"])
        self.assertNotEqual(c["job"], a["job"])
        self.assertNotEqual(d["job"], a["job"])
        jobs = {j["job"]: j for j in self.jobs()}
        self.assertEqual(jobs[a["job"]]["requests"], 2)
        self.assertEqual(jobs[a["job"]]["waiting_for"], "resume (sending is paused)")
        st = self.env.request({"op": "stats"})
        self.assertEqual((st["requests"], st["coalesced"], st["jobs"]), (4, 1, 3))

    def test_all_absorbs_narrower_and_covers_later_ones(self):
        o = self.enqueue(I1, "object")
        p = self.enqueue(I1, "page")
        other = self.enqueue(I2, "page")
        a = self.enqueue(I1, "all")
        self.assertFalse(a["coalesced"])
        for r in (o, p):
            s = self.status(r["id"])
            self.assertEqual(s["job"], a["job"])
            self.assertEqual(s["job_type"], "all")
            self.assertEqual(s["type"], r is o and "object" or "page")
        self.assertEqual(self.status(other["id"])["job"], other["job"])
        c = self.enqueue(I1, "cdn")
        self.assertTrue(c["coalesced"])
        self.assertEqual(c["job"], a["job"])
        jobs = [j for j in self.jobs() if j["install"] == I1]
        self.assertEqual(len(jobs), 1)
        self.assertEqual(jobs[0]["requests"], 4)
        # one purge covers all four
        self.env.request({"op": "resume"})
        for r in (o, p, a, c):
            self.wait_state(r["id"])
        self.assertEqual([x["type"] for x in self.env.purges(I1)], ["all"])

    def test_cancel(self):
        a = self.enqueue(I1, "page")
        b = self.enqueue(I1, "page")
        only = self.enqueue(I2, "page")
        r = self.env.request({"op": "cancel", "id": only["id"]})
        self.assertEqual(r["state"], "cancelled")
        r = self.env.request({"op": "cancel", "id": only["id"]})
        self.assertEqual(r["error"], "finished")
        self.env.request({"op": "cancel", "id": a["id"]})
        self.assertEqual([j["install"] for j in self.jobs()], [I1])
        self.env.request({"op": "resume"})
        self.assertEqual(self.wait_state(b["id"])["state"], "done")
        self.assertEqual(self.status(a["id"])["state"], "cancelled")
        time.sleep(0.3)
        self.assertEqual(self.env.purges(I2, status=None), [])  # nobody needed it

    def test_pause_stops_sending(self):
        r = self.enqueue(I1, "cdn")
        time.sleep(0.5)
        self.assertEqual(self.env.calls(), [])
        self.assertEqual(self.status(r["id"])["state"], "queued")
        self.env.request({"op": "resume"})
        self.wait_state(r["id"])
        self.assertEqual(len(self.env.purges(I1)), 1)


class Wait(EnvTest):
    def test_wait_answers_when_done_without_polling(self):
        self.env.request({"op": "pause"})
        r = self.enqueue(I1, "page")
        got = {}

        def waiter():
            with self.env.connect() as c:
                got["a"] = c.call({"op": "wait", "id": r["id"], "timeout": 20})
                got["t"] = time.monotonic()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        self.assertNotIn("a", got)
        self.assertEqual(self.env.request({"op": "stats"})["waiters"], 1)
        t0 = time.monotonic()
        self.env.request({"op": "resume"})
        t.join(10)
        self.assertEqual(got["a"]["state"], "done")
        self.assertEqual(got["a"]["http_status"], 202)
        self.assertLess(got["t"] - t0, 1.0)

    def test_wait_timeout(self):
        self.env.request({"op": "pause"})
        r = self.enqueue(I1, "page")
        t0 = time.monotonic()
        a = self.env.request({"op": "wait", "id": r["id"], "timeout": 0.3})
        self.assertEqual(a["error"], "timeout")
        self.assertGreaterEqual(time.monotonic() - t0, 0.28)
        rc, out, err = self.env.ctl("wait", str(r["id"]), "--timeout", "0.2")
        self.assertEqual(rc, 4, err)
        self.assertIn("stays queued", err)
        self.assertEqual(self.status(r["id"])["state"], "queued")

    def test_wait_for_unknown_and_finished(self):
        a = self.env.request({"op": "wait", "id": 999})
        self.assertEqual(a["error"], "not_found")
        r = self.enqueue(I1, "page")
        self.wait_state(r["id"])
        t0 = time.monotonic()
        self.assertEqual(self.env.request({"op": "wait", "id": r["id"]})["state"], "done")
        self.assertLess(time.monotonic() - t0, 0.5)


class Client_(EnvTest):
    def test_enqueue_wait_success(self):
        rc, out, err = self.env.ctl("enqueue", I1, "--type", "page", "--wait",
                                    "--reason", "deploy 7")
        self.assertEqual(rc, 0, err)
        self.assertIn("queued", out)
        self.assertIn("done", out)
        rc, lines, err = self.env.ctl_json("status", "1")
        self.assertEqual(lines[0]["reason"], "deploy 7")
        self.assertEqual(lines[0]["state"], "done")

    def test_json_output_is_the_daemon_answers(self):
        rc, lines, err = self.env.ctl_json("enqueue", I2, "-t", "cdn", "--wait")
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(lines), 2)
        self.assertEqual(set(lines[0]), {"ok", "id", "job", "coalesced", "state", "replayed",
                                         "install", "name"})
        self.assertEqual(lines[1]["state"], "done")
        for key in ("install", "type", "state", "job", "attempts", "http_status", "message",
                    "enqueued_at", "finished_at"):
            self.assertIn(key, lines[1])
        self.assertRegex(lines[1]["enqueued_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_failed_purge_exit_1(self):
        from harness import UNKNOWN
        rc, out, err = self.env.ctl("enqueue", UNKNOWN, "--wait")
        self.assertEqual(rc, 1)
        self.assertIn("HTTP 404", err)
        self.assertIn("Not Found", err)

    def test_usage_and_rejections_exit_2(self):
        for args in (["enqueue"], ["enqueue", "not-a-uuid"], ["enqueue", I1, "-t", "x"],
                     ["frob"], ["status", "abc"], ["wait", "1", "--timeout", "-3"], []):
            rc, out, err = self.env.ctl(*args)
            self.assertEqual(rc, 2, args)
            self.assertTrue(err.strip(), args)
        rc, out, err = self.env.ctl("status", "12345")
        self.assertEqual(rc, 2)
        self.assertIn("no request 12345", err)

    def test_unreachable_exit_3(self):
        p = subprocess.run([CTL, "-s", "/nonexistent/sock", "ping"], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, 3)
        self.assertIn("cannot reach", p.stderr)

    def test_socket_from_environment(self):
        p = subprocess.run([CTL, "ping"], capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, WPE_PURGED_SOCKET=self.env.sock))
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_help_everywhere(self):
        for args in (["--help"], ["enqueue", "--help"], ["wait", "--help"],
                     ["status", "--help"], ["list", "--help"], ["cancel", "--help"]):
            rc, out, err = self.env.ctl(*args)
            self.assertEqual(rc, 0, args)
            self.assertIn("usage", out)

    def test_list_and_stats_tables(self):
        self.env.ctl("pause")
        self.env.ctl("enqueue", I3, "-t", "object")
        rc, out, err = self.env.ctl("list")
        self.assertEqual(rc, 0)
        self.assertIn("WAITING FOR", out)
        self.assertIn(I3, out)
        rc, out, err = self.env.ctl("stats")
        self.assertIn("requests", out)
        self.assertIn("api.429", out)


class Durability(FreshEnvTest):
    def test_acknowledged_requests_survive_kill9(self):
        env = self.env
        env.start()
        env.request({"op": "pause"})
        acked = []
        lock = threading.Lock()

        def client(n):
            with env.connect() as c:
                for i in range(n):
                    inst = (I1, I2, I3)[i % 3]
                    r = c.call({"op": "enqueue", "install": inst,
                                "type": ("object", "page", "cdn", "all")[i % 4]})
                    if r.get("ok"):
                        with lock:
                            acked.append(r["id"])

        threads = [threading.Thread(target=client, args=(50,)) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.15)
        env.kill9()          # in the middle of the burst
        for t in threads:
            t.join(10)
        self.assertGreater(len(acked), 0)
        env.start()
        for rid in acked:
            s = env.request({"op": "status", "id": rid})
            self.assertTrue(s["ok"], (rid, s))
            self.assertIn(s["state"], ("queued", "sending", "done"))
        # the pause is persisted (test_lifecycle): it holds until resumed
        self.assertTrue(env.request({"op": "resume"})["ok"])
        for rid in acked:
            env.wait_state(rid, timeout=20)
        out = subprocess.run(["sqlite3", env.db, "PRAGMA integrity_check"],
                             capture_output=True, text=True).stdout.strip()
        self.assertEqual(out, "ok")

    def test_job_being_sent_is_sent_again_after_kill9(self):
        env = self.env
        env.start()
        env.fault(delay_ms=3000)
        r = env.request({"op": "enqueue", "install": I1, "type": "page"})
        env.wait_state(r["id"], "sending")
        env.kill9()
        env.start()
        s = env.wait_state(r["id"], timeout=15)
        self.assertEqual(s["attempts"], 2)
        self.assertIn("queued again", env.log())

    def test_sigterm_finishes_in_flight_and_exits_0(self):
        env = self.env
        env.start()
        env.fault(delay_ms=800)
        r = env.request({"op": "enqueue", "install": I1, "type": "page"})
        env.wait_state(r["id"], "sending")
        self.assertEqual(env.stop(signal.SIGTERM), 0)
        self.assertFalse(os.path.exists(env.sock))
        env.start()
        self.assertEqual(env.request({"op": "status", "id": r["id"]})["state"], "done")
        self.assertEqual(len(env.purges(I1)), 1)

    def test_wait_survives_daemon_restart(self):
        env = self.env
        env.start()
        env.request({"op": "pause"})
        r = env.request({"op": "enqueue", "install": I2, "type": "page"})
        p = subprocess.Popen([CTL, "-s", env.sock, "wait", str(r["id"]), "--timeout", "20"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.4)
        env.kill9()
        time.sleep(0.5)
        env.start()
        env.request({"op": "resume"})   # the pause held across the restart: now it goes
        out, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("done", out)


class Startup(FreshEnvTest):
    def run_daemon(self, *args):
        return subprocess.run([DAEMON, "-c", self.env.conf] + list(args), capture_output=True,
                              text=True, timeout=20)

    def test_check_config_redacts(self):
        p = self.run_daemon("--check-config")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("object_interval = 2s", p.stdout)
        self.assertIn("redacted", p.stdout)
        self.assertNotIn(PASSWORD, p.stdout + p.stderr)

    def test_bad_config_exit_2_with_line(self):
        with open(self.env.conf, "a") as f:
            f.write("bogus_key = 1\n")
        n = sum(1 for _ in open(self.env.conf))
        p = self.run_daemon("--check-config")
        self.assertEqual(p.returncode, 2)
        self.assertIn("%s:%d: unknown key" % (self.env.conf, n), p.stderr)
        p = self.run_daemon()
        self.assertEqual(p.returncode, 2)

    def test_credentials_readable_by_others_refused(self):
        os.chmod(self.env.cred, 0o644)
        p = self.run_daemon()
        self.assertEqual(p.returncode, 2)
        self.assertIn("readable by group or others", p.stderr)
        self.assertNotIn(PASSWORD, p.stderr)

    def test_plain_http_to_remote_host_refused(self):
        with open(self.env.conf) as f:
            text = f.read().replace("http://127.0.0.1", "http://api.wpengineapi.com")
        with open(self.env.conf, "w") as f:
            f.write(text)
        p = self.run_daemon("--check-config")
        self.assertEqual(p.returncode, 2)
        self.assertIn("not loopback", p.stderr)

    def test_second_instance_refused(self):
        self.env.start()
        # same database, another socket: the database lock refuses it
        p = self.run_daemon()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("in use by another wpe-purged", p.stderr)
        # same socket, another database: the live socket refuses it
        with open(self.env.conf) as f:
            text = f.read().replace(self.env.db, self.env.db + "2")
        other = self.env.conf + "2"
        with open(other, "w") as f:
            f.write(text)
        p = subprocess.run([DAEMON, "-c", other], capture_output=True, text=True, timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("already listening", p.stderr)
        self.assertTrue(self.env.request({"op": "ping"})["ok"])

    def test_foreign_database_refused(self):
        subprocess.run(["sqlite3", self.env.db, "CREATE TABLE mine(x)"], check=True)
        p = self.run_daemon()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("did not create", p.stderr)

    def test_socket_mode(self):
        self.env.start()
        self.assertEqual(os.stat(self.env.sock).st_mode & 0o777, 0o660)

    def test_sighup_reloads_limits(self):
        env = self.env
        env.write_conf({"object_interval": 30, "retry_initial": 1, "retry_max": 4},
                       {"base_url": "http://127.0.0.1:%d/v1" % env.port,
                        "credentials_file": env.cred})
        env.start()
        a = env.request({"op": "enqueue", "install": I1, "type": "object"})
        env.wait_state(a["id"])
        b = env.request({"op": "enqueue", "install": I1, "type": "object"})
        time.sleep(0.3)
        self.assertEqual(env.request({"op": "status", "id": b["id"]})["state"], "queued")
        env.write_conf({"object_interval": 1, "retry_initial": 1, "retry_max": 4},
                       {"base_url": "http://127.0.0.1:%d/v1" % env.port,
                        "credentials_file": env.cred})
        env.daemon.send_signal(signal.SIGHUP)
        env.wait_state(b["id"], timeout=5)
        self.assertIn("reloaded", env.log())


if __name__ == "__main__":
    unittest.main()


class ListPaging(EnvTest):
    """list: filters and cursor paging, nothing cut off silently."""

    def test_pages_cover_everything_once_in_order(self):
        self.env.request({"op": "pause"})
        installs = ["%08x-0000-4000-8000-000000000000" % i for i in range(240)]
        with self.env.connect() as c:
            for i, inst in enumerate(installs):
                c.send({"op": "enqueue", "install": inst, "type": ("page", "cdn")[i % 2]})
            for _ in installs:
                self.assertTrue(c.recv()["ok"])
        first = self.env.request({"op": "list"})
        self.assertEqual(len(first["jobs"]), 100)       # the default page
        self.assertEqual(first["total"], 240)
        seen, after = [], 0
        while True:
            page = self.env.request({"op": "list", "after": after, "limit": 70})
            seen += [j["job"] for j in page["jobs"]]
            if page["next"] is None:
                break
            after = page["next"]
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(len(set(seen)), 240)
        # filters
        one = self.env.request({"op": "list", "install": installs[7].upper()})
        self.assertEqual([j["install"] for j in one["jobs"]], [installs[7]])
        pages = self.env.request({"op": "list", "type": "page", "limit": 1000})
        self.assertEqual(pages["total"], 120)
        self.assertTrue(all(j["type"] == "page" for j in pages["jobs"]))
        self.assertEqual(self.env.request({"op": "list", "state": "sending"})["total"], 0)
        for bad, code in (({"limit": 0}, "bad_value"), ({"limit": 1001}, "bad_value"),
                          ({"state": "done"}, "bad_value"), ({"install": "x"}, "bad_install"),
                          ({"after": "1"}, "bad_type"), ({"type": "css"}, "bad_type")):
            r = self.env.request(dict({"op": "list"}, **bad))
            self.assertEqual(r.get("error"), code, (bad, r))
        # the client says what is left and how to get it
        rc, out, err = self.env.ctl("list", "--limit", "2", "--type", "cdn")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"\.\.\. 118 more: wpe-purgectl list --after \d+")
        rc, out, err = self.env.ctl("list", "--state", "done")
        self.assertEqual(rc, 2)


def junk_install(i):
    """An install the simulator does not know: it answers 404."""
    return "%08x-0000-4000-8000-00000000beef" % i


class Fairness(EnvTest):
    """Ready jobs go out in turns across requesters, not in id order."""
    daemon = "socket_mode = 0666\n"
    sim_args = ["--unknown-delay", "200"]

    def test_other_users_purge_is_not_behind_a_backlog(self):
        # The API answers junk installs 404 after 200 ms; one user has 60 of them ready.
        with self.env.connect() as c:
            for i in range(60):
                c.send({"op": "enqueue", "install": junk_install(i), "type": "page"})
            for _ in range(60):
                self.assertTrue(c.recv()["ok"])
        # Another user (uid 4200) asks for one purge while the backlog is being sent.
        wait_for(lambda: len(self.env.calls()) >= 1, what="the backlog started")
        rc, answers, err = self.env.as_user(4200, 4200, args=["enqueue", I1, "--type",
                                                               "page", "--wait"])
        self.assertEqual(rc, 0, err)
        import datetime
        at = datetime.datetime.strptime(answers[-1]["enqueued_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        at = at.replace(tzinfo=datetime.timezone.utc).timestamp()
        calls = sorted(self.env.calls(), key=lambda c: (c["arrived"], c["seq"]))
        mine = [c for c in calls if c["install"] == I1]
        self.assertEqual(len(mine), 1, calls)
        # In id order it would wait for every junk job left (about 50). In turns, the
        # backlog's user gets at most one slot before it (the ring's head) once it is
        # queued. Up to max_in_flight (4) calls started just before its commit may reach
        # the simulator after it (connection set-up): at most 4 + 1 + 1 for a clock tick.
        before = [c for c in calls if at <= c["arrived"] < mine[0]["arrived"]]
        self.assertLessEqual(len(before), 6, (at, [(c["install"][:8], c["arrived"])
                                                   for c in calls[:14]]))
        # ...and it did go out ahead of most of the backlog.
        self.assertGreater(self.env.request({"op": "stats"})["queued_jobs"], 20)


class FairTurns(EnvTest):
    """A requester keeps its turn while its ready job stays ready (review finding)."""
    daemon = "socket_mode = 0666\n"
    limits = {"object_interval": 0}
    api = {"max_in_flight": 1}
    sim_args = ["--object-interval", "0"]

    def test_ready_job_is_not_sent_to_the_back_by_its_installs_activity(self):
        self.env.fault(delay_ms=150, for_ms=60000)
        a, b = self.env.connect_as(1001), self.env.connect_as(1002)
        self.env.request({"op": "pause"})
        for inst in (I1, I2, I3):
            for t in ("object", "cdn"):
                self.assertTrue(b.call({"op": "enqueue", "install": inst, "type": t})["ok"])
        self.assertTrue(a.call({"op": "enqueue", "install": I1, "type": "page"})["ok"])
        self.env.request({"op": "resume"})
        wait_for(lambda: len(self.env.calls()) >= 7, timeout=20, what="7 calls")
        order = [c["type"] for c in sorted(self.env.calls(), key=lambda c: c["seq"])]
        # B's first job, then A's (every start and answer on I1 used to push A back).
        self.assertEqual(order[1], "page", order)


class Quotas(EnvTest):
    """max_queued and max_queued_per_user: queue_full naming the limit, nothing lost."""
    daemon = "socket_mode = 0666\n"
    limits = {"max_queued": 5, "max_queued_per_user": 3}

    def enqueue_as(self, uid, install, type="object"):
        rc, answers, err = self.env.as_user(uid, uid, args=["enqueue", install, "--type",
                                                            type])
        return rc, (answers[0] if answers else {}), err

    def test_limits(self):
        self.env.request({"op": "pause"})
        for inst in (I1, I2, I3):
            self.enqueue(inst)                      # root: 3 jobs, its quota
        r = self.env.request({"op": "enqueue", "install": junk_install(1), "type": "object"})
        self.assertEqual(r.get("error"), "queue_full", r)
        self.assertIn("max_queued_per_user", r["message"])
        dup = self.enqueue(I1)                      # joining its own job: free
        self.assertTrue(dup["coalesced"])
        # Another user: two new jobs fill the daemon (5)...
        self.assertEqual(self.enqueue_as(4200, I1, "page")[0], 0)
        self.assertEqual(self.enqueue_as(4200, I2, "page")[0], 0)
        rc, a, err = self.enqueue_as(4200, I3, "page")
        self.assertEqual(rc, 7, (a, err))           # exit 7: try again later
        self.assertEqual(a.get("error"), "queue_full")
        self.assertIn("max_queued ", a["message"] + " ")
        self.assertNotIn("per_user", a["message"])
        # ...but joining an existing job needs no new one: still taken.
        rc, a, err = self.enqueue_as(4200, I3, "object")
        self.assertEqual(rc, 0, err)
        self.assertTrue(a["coalesced"])
        st = self.env.request({"op": "stats"})
        self.assertEqual(st["rejected_full"], 2)
        self.assertEqual(st["queued_jobs"], 5)
        # The counts come back from the database after a restart.
        self.env.stop()
        self.env.stop_sim()     # what it sends after the restart stays unfinished
        self.env.start()
        rc, a, err = self.enqueue_as(4200, junk_install(2))
        self.assertEqual(a.get("error"), "queue_full", a)
        dup = self.env.request({"op": "enqueue", "install": I2, "type": "object"})
        self.assertTrue(dup["ok"] and dup["coalesced"], dup)   # its own job, after restart
        # Finished work frees room: everything goes out, then there is room again.
        self.env.request({"op": "resume"})   # the pause held across the restart
        self.env.start_sim()
        wait_for(lambda: self.env.request({"op": "stats"})["queued_jobs"] == 0 and
                 self.env.request({"op": "stats"})["sending_jobs"] == 0, timeout=20,
                 what="the queue drained")
        self.enqueue(junk_install(3))

    def test_absorbed_jobs_do_not_count(self):
        """An "all" taking over the requester's jobs frees their places at once, in the
        same group commit too (review findings)."""
        self.env.request({"op": "pause"})
        c = self.env.connect_as(1001)
        self.assertTrue(c.call({"op": "enqueue", "install": I1, "type": "page"})["ok"])
        p2 = c.call({"op": "enqueue", "install": I2, "type": "page"})["id"]
        self.assertTrue(c.call({"op": "enqueue", "install": I3, "type": "page"})["ok"])
        # Full (3). "all" on I1 absorbs its page job: it leaves it at 3, so it is taken;
        # pipelined behind it in the same commit, a cdn of I1 joins the "all".
        c.send('{"op":"enqueue","install":"%s","type":"all"}\n'
               '{"op":"enqueue","install":"%s","type":"cdn"}\n' % (I1, I1))
        a1, a2 = c.recv(), c.recv()
        self.assertTrue(a1["ok"], a1)
        self.assertTrue(a2["ok"] and a2["coalesced"], a2)
        st = self.env.request({"op": "stats"})
        self.assertEqual(st["queued_jobs"], 3)
        self.assertEqual(st["rejected_full"], 0)
        # A page job on I2 and one on I3 absorbed in one commit by two "all"s, and a new
        # job pipelined behind them: it fits, as it would sent alone.
        c.send('{"op":"enqueue","install":"%s","type":"all"}\n'
               '{"op":"enqueue","install":"%s","type":"object"}\n' % (I2, junk_install(7)))
        b1, b2 = c.recv(), c.recv()
        self.assertTrue(b1["ok"], b1)
        self.assertFalse(b2["ok"], b2)      # 3 held: I1 all, I2 all, I3 page
        self.assertEqual(b2["error"], "queue_full")
        # "all" on I3 takes over its page job; cancelling both requests of the I2 job
        # (its own and the absorbed page's) ends it: two held, room for one more.
        c.send('{"op":"enqueue","install":"%s","type":"all"}\n'
               '{"op":"cancel","id":%d}\n{"op":"cancel","id":%d}\n' % (I3, b1["id"], p2))
        for _ in range(3):
            a = c.recv()
            self.assertTrue(a["ok"], a)
        r = c.call({"op": "enqueue", "install": junk_install(7), "type": "object"})
        self.assertTrue(r["ok"], r)         # I1 all, I3 all, this one

