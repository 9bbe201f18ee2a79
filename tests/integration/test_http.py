"""test_http.py: the HTTPS API with real TLS: tokens, scopes, rate caps, long-polls, reloads."""
import email.utils
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import unittest

from harness import BUILD, CTL, DAEMON, I1, I2, I3, WRAP, Env, wait_for

ROOT = os.geteuid() == 0
HTTP_TIMEOUT = 10          # [http] header_timeout's default


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_ca(d):
    """A private CA (ca.pem) in d."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=wpe-purged test CA", cwd=d)


def make_cert(d, name, cn="127.0.0.1"):
    """A server certificate name.pem / name.key for IP 127.0.0.1, signed by the CA."""
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
            name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile",
            name + ".ext", cwd=d)
    os.chmod(os.path.join(d, name + ".key"), 0o600)


def new_token(name):
    """wpe-purged --new-token: (secret, tokens-file line)."""
    p = subprocess.run([DAEMON, "--new-token", name], capture_output=True, text=True,
                       check=True)
    line = [l for l in p.stderr.splitlines() if not l.startswith("#")][0]
    return p.stdout.strip(), line


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (listen = unix:PATH)."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class HttpEnv:
    """An Env with an HTTPS listener on a private port and a set of tokens."""

    def __init__(self, tokens, extra_http=None, tls=True, listen=None, limits=None):
        self.env = Env(daemon_extra="socket_mode = 0666\n", limits=limits)
        self.tls = tls
        try:
            self._setup(tokens, extra_http, tls, listen)
        except BaseException:
            self.env.close()
            raise

    def _setup(self, tokens, extra_http, tls, listen):
        d = self.env.dir
        make_ca(d)
        make_cert(d, "srv")
        self.cacert = os.path.join(d, "ca.pem")
        self.port = free_port()
        self.tokens_file = os.path.join(d, "tokens")
        self.secrets = {}
        self.write_tokens(tokens)
        self.unix = os.path.join(d, "http.sock") if listen == "unix" else None
        if self.unix:
            listen = "unix:" + self.unix
        h = {"listen": listen or "127.0.0.1:%d" % self.port,
             "tokens_file": self.tokens_file}
        if tls:
            h.update(tls_cert=os.path.join(d, "srv.pem"), tls_key=os.path.join(d, "srv.key"))
        h.update(extra_http or {})
        self.env.set_http(**h)

    def write_tokens(self, tokens):
        """tokens: {name: "options"}; secrets are made once per name and kept."""
        lines = []
        for name, opts in tokens.items():
            if name not in self.secrets:
                self.secrets[name] = new_token(name)
            lines.append((self.secrets[name][1] + " " + opts).strip())
        tmp = self.tokens_file + ".new"
        with open(tmp, "w") as f:
            f.write("# test tokens\n" + "\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.tokens_file)

    def ctx(self):
        c = ssl.create_default_context(cafile=self.cacert)
        return c

    def conn(self, timeout=30):
        if self.unix:
            return UnixHTTPConnection(self.unix, timeout=timeout)
        if not self.tls:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx(),
                                           timeout=timeout)

    def call(self, method, path, token=None, body=None, conn=None, headers=None):
        """One request: (status, headers dict (lower-case), decoded JSON body)."""
        own = conn is None
        c = conn or self.conn()
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + (self.secrets[token][0] if token in
                                              self.secrets else token)
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            if own:
                c.close()
        try:
            j = json.loads(data) if data else None
        except ValueError:
            j = data
        return r.status, hdrs, j

    def close(self):
        log = self.env.log() if os.path.exists(self.env.daemon_log) else ""
        for name, (secret, _) in self.secrets.items():
            assert secret not in log, "token of %s in the daemon log" % name
        self.env.close()


class HttpTest(unittest.TestCase):
    tokens = {"ci": "", "other": "", "boss": "admin"}
    extra_http = None
    tls = True
    listen = None          # "unix": a Unix socket in the test's directory
    limits = None          # [limits] keys

    def setUp(self):
        self.h = HttpEnv(self.tokens, self.extra_http, tls=self.tls, listen=self.listen,
                         limits=self.limits)
        self.env = self.h.env
        self.env.start()
        wait_for(lambda: self._up(), what="HTTPS listener")

    def _up(self):
        try:
            return self.h.call("GET", "/healthz")[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def tearDown(self):
        h, self.h = self.h, None
        try:
            h.close()
        except AssertionError:
            print("\n--- daemon log ---\n" + h.env.log()[-6000:])
            raise

    def post(self, token, install=I1, type="page", query="", **kw):
        body = dict(install=install, type=type, **kw)
        return self.h.call("POST", "/v1/purges" + query, token, body)


class Auth(HttpTest):
    def test_no_token_and_bad_token_are_401_with_www_authenticate(self):
        st, hd, j = self.h.call("GET", "/v1/stats")
        self.assertEqual(st, 401)
        self.assertTrue(hd["www-authenticate"].startswith("Bearer"))
        self.assertEqual(j["error"], "unauthorized")
        st, hd, j = self.h.call("GET", "/v1/stats", token="wpq_" + "A" * 43)
        self.assertEqual(st, 401)
        self.assertIn("www-authenticate", hd)
        st, hd, j = self.h.call("GET", "/v1/stats", headers={"Authorization": "Basic eDp5"})
        self.assertEqual(st, 401)
        self.assertIn("a bad token from 127.0.0.1", self.env.log())

    def test_healthz_needs_no_token_and_answers_json(self):
        st, hd, j = self.h.call("GET", "/healthz")
        self.assertEqual((st, j), (200, {"ok": True}))
        self.assertEqual(hd["content-type"], "application/json")

    def test_errors_are_json_never_html(self):
        for method, path, code in (("GET", "/nope", 404), ("GET", "/v1/nope", 404),
                                   ("PUT", "/v1/purges", 405), ("GET", "/v1/purges/abc", 404),
                                   ("POST", "/v1/stats", 405)):
            st, hd, j = self.h.call(method, path, "ci", body="" if method != "GET" else None)
            self.assertEqual(st, code, (method, path))
            self.assertEqual(hd["content-type"], "application/json")
            self.assertFalse(j["ok"])
        st, hd, j = self.h.call("POST", "/v1/purges", "ci", body='{"install":"x"}')
        self.assertEqual((st, j["error"]), (400, "bad_install"))
        st, hd, j = self.h.call("POST", "/v1/purges", "ci", body='{"install":1,"op":"x"}')
        self.assertEqual(st, 400)
        st, hd, j = self.h.call("POST", "/v1/purges", "ci", body='not json')
        self.assertEqual((st, j["error"]), (400, "bad_json"))

    def test_curl_enqueue(self):
        p = subprocess.run(["curl", "-sS", "--cacert", self.h.cacert, "-H",
                            "Authorization: Bearer " + self.h.secrets["ci"][0],
                            "-w", "\n%{http_code}", "--data",
                            json.dumps({"install": I1, "type": "page"}),
                            "https://127.0.0.1:%d/v1/purges" % self.h.port],
                           capture_output=True, text=True, timeout=30)
        body, code = p.stdout.rsplit("\n", 1)
        self.assertEqual(code, "202", p.stderr)
        self.assertTrue(json.loads(body)["ok"])


class Purges(HttpTest):
    def test_enqueue_then_long_poll_to_done(self):
        st, hd, j = self.post("ci", reason="deploy 42")
        self.assertEqual(st, 202, j)
        rid = j["id"]
        self.assertEqual(hd["location"], "/v1/purges/%d" % rid)
        st, hd, j = self.h.call("GET", "/v1/purges/%d?wait=20" % rid, "ci")
        self.assertEqual((st, j["state"]), (200, "done"), j)
        self.assertEqual(j["reason"], "deploy 42")     # its owner sees the reason

    def test_post_wait_returns_200_when_done_and_202_when_the_wait_ends(self):
        st, hd, j = self.post("ci", install=I2, query="?wait=20")
        self.assertEqual((st, j["state"]), (200, "done"), j)
        self.assertIn("location", hd)
        # the object cache of I2 was just purged: the next waits its window (2 s)
        self.post("ci", install=I3, type="object")
        st, hd, j = self.post("ci", install=I3, type="object", query="?wait=0.2")
        self.assertEqual(st, 202, j)
        self.assertEqual(j["state"], "queued")
        self.assertEqual(hd["location"], "/v1/purges/%d" % j["id"])
        # GET ?wait= the same way: 202 while unfinished, 200 once done
        st, hd, j2 = self.h.call("GET", "/v1/purges/%d?wait=0.2" % j["id"], "ci")
        self.assertEqual((st, j2["state"]), (202, "queued"))
        st, hd, j2 = self.h.call("GET", "/v1/purges/%d?wait=20" % j["id"], "ci")
        self.assertEqual((st, j2["state"]), (200, "done"))

    def test_long_poll_dropped_when_the_client_goes(self):
        self.env.request({"op": "pause"})
        rid = self.post("ci")[2]["id"]
        c = self.h.conn()
        c.request("GET", "/v1/purges/%d?wait=60" % rid,
                  headers={"Authorization": "Bearer " + self.h.secrets["ci"][0]})
        wait_for(lambda: self.env.request({"op": "stats"})["waiters"] == 1,
                 what="the long-poll waiting")
        c.sock.close()
        c.close()
        wait_for(lambda: self.env.request({"op": "stats"})["waiters"] == 0,
                 what="the wait dropped with its connection")
        self.env.request({"op": "resume"})
        self.env.wait_state(rid)

    def test_cancel_ownership_across_tokens(self):
        self.env.request({"op": "pause"})
        rid = self.post("ci", reason="mine")[2]["id"]
        st, hd, j = self.h.call("GET", "/v1/purges/%d" % rid, "other")
        self.assertEqual(st, 200)
        self.assertIsNone(j["reason"])                  # not its request
        st, hd, j = self.h.call("DELETE", "/v1/purges/%d" % rid, "other")
        self.assertEqual((st, j["error"]), (403, "forbidden"))
        st, hd, j = self.h.call("DELETE", "/v1/purges/%d" % rid, "ci")
        self.assertEqual((st, j["state"]), (200, "cancelled"))
        st, hd, j = self.h.call("DELETE", "/v1/purges/%d" % rid, "ci")
        self.assertEqual((st, j["error"]), (409, "finished"))
        rid2 = self.post("ci", install=I2)[2]["id"]
        st, hd, j = self.h.call("DELETE", "/v1/purges/%d" % rid2, "boss")   # admin
        self.assertEqual((st, j["state"]), (200, "cancelled"))
        st, hd, j = self.h.call("GET", "/v1/purges/999999", "ci")
        self.assertEqual((st, j["error"]), (404, "not_found"))

    def test_token_and_unix_socket_requests_are_separate_owners(self):
        self.env.request({"op": "pause"})
        sock_rid = self.env.request({"op": "enqueue", "install": I1, "type": "cdn",
                                     "reason": "from the socket"})["id"]
        tok_rid = self.post("ci", install=I2, reason="from a token")[2]["id"]
        st, hd, j = self.h.call("DELETE", "/v1/purges/%d" % sock_rid, "ci")
        self.assertEqual((st, j["error"]), (403, "forbidden"))
        st, hd, j = self.h.call("GET", "/v1/purges/%d" % sock_rid, "ci")
        self.assertIsNone(j["reason"])
        if ROOT:
            rc, answers, err = self.env.as_user(4200, 4200, args=["cancel", str(tok_rid)])
            self.assertEqual(rc, 6, err)
            self.assertIn("another user", err)
            rc, answers, err = self.env.as_user(4200, 4200, args=["status", str(tok_rid)])
            self.assertIsNone(answers[0]["reason"])
        # the token's requests count as their own requester
        st = self.env.request({"op": "stats"})
        self.assertEqual(st["requesters"], 2)
        self.assertIn("from token ci (127.0.0.1:", self.env.log())

    def test_jobs_and_stats(self):
        self.env.request({"op": "pause"})
        self.post("ci", install=I1)
        self.post("ci", install=I2)
        st, hd, j = self.h.call("GET", "/v1/jobs?limit=1", "ci")
        self.assertEqual((st, j["total"], len(j["jobs"])), (200, 2, 1))
        self.assertIsNotNone(j["next"])
        st, hd, j = self.h.call("GET", "/v1/jobs?install=%s&state=queued" % I2, "ci")
        self.assertEqual([x["install"] for x in j["jobs"]], [I2])
        st, hd, j = self.h.call("GET", "/v1/jobs?limit=0", "ci")
        self.assertEqual((st, j["error"]), (400, "bad_value"))
        st, hd, j = self.h.call("GET", "/v1/jobs?limit=1&limit=2", "ci")
        self.assertEqual((st, j["error"]), (400, "duplicate_field"))
        st, hd, j = self.h.call("GET", "/v1/jobs?bogus=1", "ci")
        self.assertEqual((st, j["error"]), (400, "unknown_field"))
        st, hd, j = self.h.call("GET", "/v1/stats", "ci")
        self.assertEqual((st, j["requests"]), (200, 2))

    def test_oversized_body_413_and_no_length_411(self):
        def raw(head, until):
            s = self.h.ctx().wrap_socket(socket.create_connection(("127.0.0.1",
                                                                   self.h.port)),
                                         server_hostname="127.0.0.1")
            s.settimeout(15)
            s.sendall(head.encode())
            data = b""
            while until not in data:
                try:
                    chunk = s.recv(65536)
                except (ssl.SSLError, ConnectionError):
                    break
                if not chunk:
                    break
                data += chunk
            s.close()
            return data.decode(errors="replace")
        auth = "Authorization: Bearer %s\r\n" % self.h.secrets["ci"][0]
        # the length is refused before any of the body is read: evhttp's own answer, JSON
        data = raw("POST /v1/purges HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n"
                   % (auth, 70 * 1024), b'"}')
        self.assertTrue(data.startswith("HTTP/1.1 413"), data)
        self.assertIn('"too_large"', data)
        data = raw("POST /v1/purges HTTP/1.1\r\nHost: x\r\n%s\r\n" % auth, b'"}')
        self.assertTrue(data.startswith("HTTP/1.1 411"), data)
        self.assertIn('"length_required"', data)

    def test_slow_client_is_dropped(self):
        s = self.h.ctx().wrap_socket(socket.create_connection(("127.0.0.1", self.h.port)),
                                     server_hostname="127.0.0.1")
        s.sendall(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n")   # headers never finished
        s.settimeout(HTTP_TIMEOUT + 10)
        t0 = time.monotonic()
        try:
            data = s.recv(65536)
        except (ssl.SSLError, ConnectionError):
            data = b""
        self.assertLess(time.monotonic() - t0, HTTP_TIMEOUT + 8)
        self.assertNotIn(b"200 OK", data)
        s.close()


class Answers(HttpTest):
    """What every answer carries, on connections kept alive for several requests."""

    DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|"
                      r"Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$")

    def check_date(self, r):
        dates = r.msg.get_all("Date") or []
        self.assertEqual(len(dates), 1, r.getheaders())
        self.assertRegex(dates[0], self.DATE)
        t = email.utils.parsedate_to_datetime(dates[0]).timestamp()
        self.assertLess(abs(t - time.time()), 5, dates[0])

    def test_one_current_date_and_each_connection_logged_with_its_own_address(self):
        self.env.request({"op": "pause"})
        secret = self.h.secrets["ci"][0]
        conns = [self.h.conn(), self.h.conn()]
        try:
            for i in range(3):
                for n, c in enumerate(conns):
                    body = json.dumps({"install": (I1, I2)[n], "type": "page",
                                       "reason": "round %d" % i})
                    c.request("POST", "/v1/purges", body=body, headers={
                        "Authorization": "Bearer " + secret,
                        "Content-Type": "application/json"})
                    r = c.getresponse()
                    r.read()
                    self.assertEqual(r.status, 202)
                    self.check_date(r)
                    if i == 1:
                        time.sleep(1.1)     # the next answers are a second later
                c = conns[0]
                c.request("GET", "/v1/stats", headers={"Authorization": "Bearer bad"})
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 401)
                self.check_date(r)
            ports = [c.sock.getsockname()[1] for c in conns]
        finally:
            for c in conns:
                c.close()
        # what a GET reads changes: no cache in front may keep it
        for path, token in (("/v1/stats", "ci"), ("/v1/jobs", "ci"), ("/healthz", None),
                            ("/v1/purges/1", "ci"), ("/v1/purges/999", "ci")):
            st, hd, j = self.h.call("GET", path, token)
            self.assertEqual(hd.get("cache-control"), "no-store", (path, st))
        log = self.env.log()
        for n, port in enumerate(ports):
            # each request logged with its own connection's address, not the other's
            lines = re.findall(r"purge of %s \(\w+\) from token ci \(127\.0\.0\.1:(\d+)\)" %
                               (I1, I2)[n], log)
            self.assertEqual(lines, [str(port)] * 3, log[-3000:])


class HeadAnswers(HttpTest):
    """HEAD: the headers GET would have, no body (libevent 2.1 would send it)."""

    def test_head_has_no_body_and_the_connection_stays_in_step(self):
        self.env.request({"op": "pause"})
        rid = self.post("ci")[2]["id"]
        secret, boss = self.h.secrets["ci"][0], self.h.secrets["boss"][0]
        c = self.h.conn()
        try:
            for path, secret_ in (("/healthz", None), ("/v1/purges/%d" % rid, secret),
                                  ("/v1/jobs", secret), ("/v1/stats", secret),
                                  ("/metrics", boss), ("/v1/purges/999", secret),
                                  ("/v1/stats", "bad"), ("/v1/nothing", secret)):
                h = {"Authorization": "Bearer " + secret_} if secret_ else {}
                c.request("HEAD", path, headers=h)
                r = c.getresponse()
                self.assertEqual(r.read(), b"")
                head_status, head_len = r.status, r.getheader("Content-Length")
                # the next answer on the connection is read from its own start
                c.request("GET", path, headers=h)
                r = c.getresponse()
                body = r.read()
                self.assertEqual(r.status, head_status, path)
                if path not in ("/metrics", "/v1/stats"):   # these change in between
                    self.assertEqual(head_len, str(len(body)), path)
                self.assertTrue(body, path)
        finally:
            c.close()


class Scopes(HttpTest):
    tokens = {"site1": "installs=%s types=page,cdn" % I1,
              "glob": "installs=3f1e*,0A1B2C3D-*",
              "boss": "admin", "slow": "rate=1/s"}

    def test_install_and_type_scope(self):
        st, hd, j = self.post("site1", install=I2)
        self.assertEqual((st, j["error"]), (403, "forbidden"))
        st, hd, j = self.post("site1", install=I1, type="object")
        self.assertEqual(st, 403)
        st, hd, j = self.post("site1", install=I1, type="all")
        self.assertEqual(st, 403)
        self.assertEqual(self.post("site1", install=I1, type="page")[0], 202)
        self.assertEqual(self.post("glob", install=I2)[0], 202)
        self.assertEqual(self.post("glob", install=I3.upper())[0], 202)
        self.assertEqual(self.post("glob", install=I1)[0], 403)

    def test_foreign_install_ids_are_404(self):
        self.env.request({"op": "pause"})
        rid = self.post("boss", install=I2)[2]["id"]
        for method in ("GET", "DELETE"):
            st, hd, j = self.h.call(method, "/v1/purges/%d" % rid, "site1")
            self.assertEqual((st, j["error"]), (404, "not_found"), method)
        st, hd, j = self.h.call("GET", "/v1/purges/%d?wait=5" % rid, "site1")
        self.assertEqual(st, 404)
        st, hd, j = self.h.call("GET", "/v1/jobs", "site1")
        self.assertEqual((j["jobs"], j["total"]), ([], 0))
        st, hd, j = self.h.call("GET", "/v1/jobs?install=" + I2, "site1")
        self.assertEqual(st, 403)
        st, hd, j = self.h.call("GET", "/v1/purges/%d" % rid, "glob")
        self.assertEqual(st, 200)

    def test_pause_and_resume_are_admin_only(self):
        st, hd, j = self.h.call("POST", "/v1/pause", "site1")
        self.assertEqual((st, j["error"]), (403, "forbidden"))
        self.assertFalse(self.env.request({"op": "stats"})["paused"])
        st, hd, j = self.h.call("POST", "/v1/pause", "boss")
        self.assertEqual((st, j["paused"]), (200, True))
        st, hd, j = self.h.call("POST", "/v1/resume", "boss")
        self.assertEqual((st, j["paused"]), (200, False))

    def test_rate_cap_429_with_retry_after(self):
        c = self.h.conn()
        codes = [self.h.call("GET", "/v1/stats", "slow", conn=c)[0] for _ in range(5)]
        self.assertEqual(codes, [200] * 5)        # burst: 5 seconds' worth
        st, hd, j = self.h.call("GET", "/v1/stats", "slow", conn=c)
        self.assertEqual((st, j["error"]), (429, "rate_limited"))
        self.assertGreaterEqual(int(hd["retry-after"]), 1)
        # other tokens are not affected
        self.assertEqual(self.h.call("GET", "/v1/stats", "boss", conn=c)[0], 200)
        time.sleep(1.1)
        self.assertEqual(self.h.call("GET", "/v1/stats", "slow", conn=c)[0], 200)
        c.close()


class Reload(HttpTest):
    def test_sighup_reloads_tokens_and_certificate_keeping_connections(self):
        c = self.h.conn()
        self.assertEqual(self.h.call("GET", "/v1/stats", "ci", conn=c)[0], 200)
        sock = c.sock
        old_cert = sock.getpeercert(binary_form=True)
        make_cert(self.env.dir, "srv", cn="renewed")
        self.h.write_tokens({"other": "", "newbie": ""})
        self.env.daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: certificate" in self.env.log(), what="reload")
        # the open keep-alive connection still works, with its old certificate
        st, hd, j = self.h.call("GET", "/v1/stats", "newbie", conn=c)
        self.assertEqual(st, 200)
        self.assertIs(c.sock, sock)
        self.assertEqual(self.h.call("GET", "/v1/stats", "ci", conn=c)[0], 401)
        self.assertIs(c.sock, sock)
        c.close()
        # a new connection gets the new certificate
        c2 = self.h.conn()
        self.assertEqual(self.h.call("GET", "/v1/stats", "other", conn=c2)[0], 200)
        self.assertNotEqual(c2.sock.getpeercert(binary_form=True), old_cert)
        self.assertEqual(c2.sock.getpeercert()["subject"][0][0][1], "renewed")
        c2.close()

    def test_bad_tokens_file_on_reload_keeps_the_old_ones(self):
        with open(self.h.tokens_file, "a") as f:
            f.write("broken line\n")
        self.env.daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "keeping the 3 token(s)" in self.env.log(), what="refusal")
        self.assertEqual(self.h.call("GET", "/v1/stats", "ci")[0], 200)
        os.chmod(self.h.tokens_file, 0o622)
        self.env.daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "writable by group or others" in self.env.log(), what="refusal")
        self.assertEqual(self.h.call("GET", "/v1/stats", "ci")[0], 200)


class MaxConnections(HttpTest):
    extra_http = {"max_connections": 2}

    def test_beyond_max_connections_is_refused_until_a_slot_frees(self):
        a, b = self.h.conn(), self.h.conn()
        for c in (a, b):
            self.assertEqual(self.h.call("GET", "/v1/stats", "ci", conn=c)[0], 200)
        late = self.h.conn(timeout=5)
        t0 = time.monotonic()
        with self.assertRaises((ssl.SSLError, OSError)):
            self.h.call("GET", "/v1/stats", "ci", conn=late)
        # refused, not left waiting
        self.assertLess(time.monotonic() - t0, 2 * (3 if WRAP else 1))
        late.close()
        a.close()
        wait_for(self._up, what="a slot after one closed")   # refusals until then
        b.close()


class Metrics(HttpTest):
    def metrics(self, token="boss", accept=None):
        c = self.h.conn()
        h = {"Authorization": "Bearer " + self.h.secrets[token][0]} if token else {}
        if accept:
            h["Accept"] = accept
        c.request("GET", "/metrics", headers=h)
        r = c.getresponse()
        body = r.read().decode()
        ctype = r.getheader("Content-Type")
        c.close()
        return r.status, ctype, body

    def test_metrics_for_admins_checked_by_promtool(self):
        st, hd, j = self.post("ci", install=I1, type="page", query="?wait=20")
        self.assertEqual((st, j["state"]), (200, "done"), j)
        self.assertEqual(self.metrics(token=None)[0], 401)
        self.assertEqual(self.metrics(token="ci")[0], 403)
        st, ctype, text = self.metrics()
        self.assertEqual(st, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        self.assertIn('wpe_purged_requests_total{type="page"} 1\n', text)
        self.assertIn('wpe_purged_api_calls_total{class="2xx"} 1\n', text)
        self.assertIn('wpe_purged_jobs_finished_total{outcome="done"} 1\n', text)
        self.assertIn('wpe_purged_api_call_duration_seconds_count 1\n', text)
        self.assertIn('wpe_purged_job_latency_seconds_bucket{le="+Inf"} 1\n', text)
        self.assertIn("wpe_purged_queued_jobs 0\n", text)
        # the installs catalog the simulator holds, read once at start
        self.assertRegex(text, r"wpe_purged_catalog_installs [1-9]\d*\n")
        self.assertIn("wpe_purged_catalog_fetches_total 1\n", text)
        self.assertRegex(text, r"wpe_purged_catalog_age_seconds \d")
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=text,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        st, ctype, text = self.metrics(accept="application/openmetrics-text; version=1.0.0")
        self.assertTrue(ctype.startswith("application/openmetrics-text"), ctype)
        self.assertTrue(text.endswith("# EOF\n"))
        self.assertIn("# TYPE wpe_purged_requests counter\n", text)

    def test_gauges_while_paused(self):
        self.env.request({"op": "pause"})
        self.post("ci", install=I2)
        st, ctype, text = self.metrics()
        self.assertIn("wpe_purged_paused 1\n", text)
        self.assertIn("wpe_purged_queued_jobs 1\n", text)
        self.assertIn("wpe_purged_next_purge_seconds 0\n", text)


class OpenMetrics(HttpTest):
    extra_http = {"metrics_auth": "no"}

    def test_metrics_without_a_token(self):
        c = self.h.conn()
        c.request("GET", "/metrics")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertIn(b"wpe_purged_requests_total", r.read())
        c.close()


class Names(HttpTest):
    """Install names over HTTP: in purges and job filters, in token scopes (patterns on
    names), GET /v1/installs as the token's scope shows it; Idempotency-Key."""
    tokens = {"named": "installs=install1,shop*", "byid": "installs=%s" % I2,
              "boss": "admin", "ci": ""}

    def setUp(self):
        super().setUp()
        wait_for(lambda: self.env.request({"op": "stats"})["catalog"]["fetched_at"],
                 what="the installs catalog")

    def test_names_in_purges_and_scopes(self):
        self.env.request({"op": "pause"})
        st, hd, j = self.post("named", install="install1")
        self.assertEqual((st, j["install"], j["name"]), (202, I1, "install1"), j)
        # a UUID whose catalog name matches the name pattern
        self.assertEqual(self.post("named", install=I1)[0], 202)
        self.assertEqual(self.post("named", install="install2")[0], 403)
        self.assertEqual(self.post("named", install=I2)[0], 403)
        # an id pattern lets the name of that install through
        st, hd, j = self.post("byid", install="install2")
        self.assertEqual((st, j["install"]), (202, I2), j)
        st, hd, j = self.post("ci", install="nosuch")
        self.assertEqual((st, j["error"]), (400, "unknown_install"), j)
        # status of another install's request: not found for a scoped token
        rid = self.post("boss", install="install3")[2]["id"]
        self.assertEqual(self.h.call("GET", "/v1/purges/%d" % rid, "named")[0], 404)
        st, hd, j = self.h.call("GET", "/v1/purges/%d" % rid, "boss")
        self.assertEqual((st, j["name"]), (200, "install3"))
        # job filters by name, within the scope
        st, hd, j = self.h.call("GET", "/v1/jobs?install=install1", "named")
        self.assertEqual((st, [x["name"] for x in j["jobs"]]), (200, ["install1"]), j)
        self.assertEqual(self.h.call("GET", "/v1/jobs?install=install3", "named")[0], 403)
        st, hd, j = self.h.call("GET", "/v1/jobs", "named")
        self.assertEqual(sorted(x["name"] for x in j["jobs"]), ["install1"])

    def test_installs_as_the_token_sees_them(self):
        st, hd, j = self.h.call("GET", "/v1/installs", "boss")
        self.assertEqual(st, 200, j)
        names = [x["name"] for x in j["installs"]]
        self.assertEqual(names, sorted(names))
        self.assertIn("install1", names)
        self.assertEqual(j["count"], len(names))
        self.assertIsNone(j["next"])
        st, hd, j = self.h.call("GET", "/v1/installs", "named")
        self.assertEqual(([x["name"] for x in j["installs"]], j["count"]), (["install1"], 1))
        st, hd, j = self.h.call("GET", "/v1/installs", "byid")
        self.assertEqual([x["id"] for x in j["installs"]], [I2])
        # paging: one at a time, through "next"
        seen, after = [], ""
        while True:
            st, hd, j = self.h.call("GET", "/v1/installs?limit=1" + after, "boss")
            self.assertEqual(st, 200, j)
            seen += [x["name"] for x in j["installs"]]
            if j["next"] is None:
                break
            after = "&after=" + j["next"]
        self.assertEqual(seen, names)
        # a refresh answers once the catalog was read again
        before = self.env.request({"op": "stats"})["catalog"]["fetches"]
        st, hd, j = self.h.call("GET", "/v1/installs?refresh=1", "boss")
        self.assertEqual((st, j["refreshing"]), (200, False), j)
        self.assertEqual(self.env.request({"op": "stats"})["catalog"]["fetches"], before + 1)
        st, hd, j = self.h.call("GET", "/v1/installs?refresh=maybe", "boss")
        self.assertEqual(st, 400)
        self.assertEqual(self.h.call("POST", "/v1/installs", "boss", body="{}")[0], 405)

    def test_idempotency_key_header(self):
        self.env.request({"op": "pause"})
        key = {"Idempotency-Key": "deploy-42-attempt"}
        st, hd, j = self.h.call("POST", "/v1/purges", "ci", {"install": I1, "type": "page"},
                                headers=key)
        self.assertEqual(st, 202, j)
        self.assertFalse(j["replayed"])
        st, hd, j2 = self.h.call("POST", "/v1/purges", "ci", {"install": I1, "type": "page"},
                                 headers=key)
        self.assertEqual((st, j2["id"], j2["replayed"]), (202, j["id"], True), j2)
        self.assertEqual(hd["location"], "/v1/purges/%d" % j["id"])
        st, hd, j3 = self.h.call("POST", "/v1/purges", "ci", {"install": I1, "type": "cdn"},
                                 headers=key)
        self.assertEqual((st, j3["error"]), (409, "idempotency_conflict"), j3)
        # scoped to the token: another token's same key is its own request
        st, hd, j4 = self.h.call("POST", "/v1/purges", "boss",
                                 {"install": I1, "type": "page"}, headers=key)
        self.assertEqual(st, 202)
        self.assertNotEqual(j4["id"], j["id"])
        st, hd, j5 = self.h.call("POST", "/v1/purges", "ci", {"install": I1},
                                 headers={"Idempotency-Key": "has a blank"})
        self.assertEqual((st, j5["error"]), (400, "bad_value"))
        self.assertEqual(self.env.request({"op": "stats"})["requests"], 2)

    def test_cli_installs_over_https(self):
        tf = os.path.join(self.env.dir, "token-named")
        with open(tf, "w") as f:
            f.write(self.h.secrets["named"][0] + "\n")
        os.chmod(tf, 0o600)
        p = subprocess.run([CTL, "--url", "https://127.0.0.1:%d" % self.h.port,
                            "--token-file", tf, "--cacert", self.h.cacert, "installs"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("install1", p.stdout)
        self.assertNotIn("install2", p.stdout)


class Lifecycle(HttpTest):
    """Requeue over HTTP, and a long-poll that ends with an expired request."""
    tokens = {"ci": "", "other": "", "pageonly": "types=page", "boss": "admin"}
    limits = {"max_age": "2s"}

    def counter(self, name):
        st, hd, body = self.h.call("GET", "/metrics", "boss")
        self.assertEqual(st, 200, body)
        text = body.decode()
        m = re.search(r"^wpe_purged_%s_total (\d+)$" % name, text, re.M)
        self.assertIsNotNone(m, "no %s counter in /metrics" % name)
        return int(m.group(1))

    def test_requeue(self):
        self.env.request({"op": "pause"})
        st, hd, j = self.post("ci", install=I1, type="page", reason="deploy 7")
        rid = j["id"]
        # not final yet: 409; GET is not the way: 405; another's: 403
        st, hd, j = self.h.call("POST", "/v1/purges/%d/requeue" % rid, "ci", body="{}")
        self.assertEqual((st, j["error"]), (409, "not_requeueable"), j)
        self.assertEqual(self.h.call("GET", "/v1/purges/%d/requeue" % rid, "ci")[0], 405)
        self.assertEqual(self.h.call("DELETE", "/v1/purges/%d" % rid, "ci")[0], 200)
        st, hd, j = self.h.call("POST", "/v1/purges/%d/requeue" % rid, "other", body="{}")
        self.assertEqual((st, j["error"]), (403, "forbidden"), j)
        st, hd, j = self.h.call("POST", "/v1/purges/%d/requeue" % rid, "ci", body="{}")
        self.assertEqual((st, j["requeued_from"]), (202, rid), j)
        self.assertEqual(hd["location"], "/v1/purges/%d" % j["id"])
        st, hd, s = self.h.call("GET", "/v1/purges/%d" % j["id"], "ci")
        self.assertEqual((s["state"], s["reason"], s["requeued_from"]),
                         ("queued", "deploy 7", rid), s)
        # an admin may requeue anyone's; a token limited to page may not requeue an all
        self.assertEqual(self.h.call("DELETE", "/v1/purges/%d" % j["id"], "ci")[0], 200)
        st, hd, j2 = self.h.call("POST", "/v1/purges/%d/requeue" % j["id"], "boss", body="")
        self.assertEqual(st, 202, j2)
        rid3 = self.post("boss", install=I2, type="all")[2]["id"]
        self.h.call("DELETE", "/v1/purges/%d" % rid3, "boss")
        st, hd, j = self.h.call("POST", "/v1/purges/%d/requeue" % rid3, "pageonly", body="")
        self.assertEqual(st, 403, j)
        self.assertEqual(self.h.call("POST", "/v1/purges/999/requeue", "ci", body="")[0], 404)
        self.assertEqual(self.counter("requests_requeued"), 2)   # ci once, boss once

    def test_requeue_by_an_admin_keeps_the_token_as_requester(self):
        # The new request is its owner's: labelled "token ci" as the old one (it was
        # "uid -<the token's internal requester id>" in status, list and stats).
        self.env.request({"op": "pause"})
        rid = self.post("ci", install=I1, type="page")[2]["id"]
        self.assertEqual(self.h.call("DELETE", "/v1/purges/%d" % rid, "ci")[0], 200)
        st, hd, j = self.h.call("POST", "/v1/purges/%d/requeue" % rid, "boss", body="")
        self.assertEqual(st, 202, j)
        st, hd, s = self.h.call("GET", "/v1/purges/%d" % j["id"], "ci")
        self.assertEqual((st, s["requested_by"]), (200, "token ci"), s)
        jobs = self.env.request({"op": "list"})["jobs"]
        self.assertEqual([x["requested_by"] for x in jobs], ["token ci"])
        top = self.env.request({"op": "stats"})["top_requesters"]
        self.assertEqual(top, [{"requester": "token ci", "requests": 2}])

    def test_long_poll_ends_when_the_request_expires(self):
        self.env.request({"op": "pause"})
        t0 = time.monotonic()
        st, hd, j = self.post("ci", install=I1, type="page", query="?wait=20")
        self.assertEqual((st, j["state"]), (200, "expired"), j)
        self.assertLess(time.monotonic() - t0, 15)
        self.assertIn("max_age", j["message"])
        self.assertEqual(self.counter("requests_expired"), 1)
        self.assertEqual(self.counter("requests_requeued"), 0)


class Client(HttpTest):
    """The real wpe-purgectl --url against the daemon: the same exit codes as the socket."""

    def ctl(self, token, *args, timeout=60):
        tf = os.path.join(self.env.dir, "token-" + token)
        with open(tf, "w") as f:
            f.write(self.h.secrets[token][0] + "\n")
        os.chmod(tf, 0o600)
        e = dict(os.environ)
        e.pop("WPE_PURGED_TOKEN", None)
        p = subprocess.run([CTL, "--url", "https://127.0.0.1:%d" % self.h.port,
                            "--token-file", tf, "--cacert", self.h.cacert, "--json"] +
                           list(args), capture_output=True, text=True, timeout=timeout,
                           env=e)
        return p.returncode, [json.loads(l) for l in p.stdout.splitlines() if l.strip()], \
            p.stderr

    def test_wpe_purgectl_over_https(self):
        rc, out, err = self.ctl("ci", "enqueue", I1, "-t", "page", "--wait", "--timeout",
                                "30")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out[-1]["state"], "done")
        rc, out, err = self.ctl("ci", "ping")
        self.assertEqual(rc, 0, err)
        self.env.request({"op": "pause"})
        rc, out, err = self.ctl("ci", "enqueue", I2, "-t", "cdn")
        self.assertEqual(rc, 0, err)
        rid = out[0]["id"]
        rc, out, err = self.ctl("ci", "wait", str(rid), "--timeout", "1")
        self.assertEqual(rc, 4, err)                  # wait timed out
        rc, out, err = self.ctl("ci", "list")
        self.assertEqual((rc, out[0]["total"]), (0, 1), err)
        rc, out, err = self.ctl("other", "cancel", str(rid))
        self.assertEqual(rc, 6, err)                  # not its request
        rc, out, err = self.ctl("other", "pause")
        self.assertEqual(rc, 6, err)
        rc, out, err = self.ctl("ci", "cancel", str(rid))
        self.assertEqual(rc, 0, err)
        rc, out, err = self.ctl("boss", "resume")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.ctl("ci", "enqueue", "not-a-uuid")
        self.assertEqual(rc, 2, err)


    @unittest.skipIf(os.environ.get("WPE_DAEMON_WRAPPER"), "a timing bound: not under Valgrind")
    def test_keep_alive_answers_are_not_held_by_nagle(self):
        # An answer's headers and body leave in two writes; with Nagle the second waited
        # for the client's delayed ACK: 40 ms per request on a keep-alive connection,
        # 0.8 s at least for these 20. Without it they take a few milliseconds.
        c = self.h.conn()
        self.h.call("GET", "/v1/stats", token="ci", conn=c)
        t = time.monotonic()
        for _ in range(20):
            self.assertEqual(self.h.call("GET", "/v1/stats", token="ci", conn=c)[0], 200)
        c.close()
        self.assertLess(time.monotonic() - t, 0.6)

    def test_wait_over_https_survives_a_daemon_restart(self):
        self.env.request({"op": "pause"})
        rc, out, err = self.ctl("ci", "enqueue", I3, "-t", "page")
        self.assertEqual(rc, 0, err)
        rid = out[0]["id"]
        tf = os.path.join(self.env.dir, "token-ci")
        waiter = subprocess.Popen([CTL, "--url", "https://127.0.0.1:%d" % self.h.port,
                                   "--token-file", tf, "--cacert", self.h.cacert, "wait",
                                   str(rid), "--timeout", "60"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        self.env.stop()                   # the long-poll's connection goes with it
        time.sleep(1)
        self.env.start()
        wait_for(lambda: self._up(), what="HTTPS listener again")
        self.env.request({"op": "resume"})   # the pause held across the restart
        out, err = waiter.communicate(timeout=60)
        self.assertEqual(waiter.returncode, 0, err)
        self.assertIn("done", out)


class ReviewFindings(unittest.TestCase):
    """Defects found by the review of the HTTP API, each with the test that showed it."""

    def test_scoped_job_list_reveals_nothing_outside_its_scope(self):
        import uuid
        h = HttpEnv({"adm": "admin", "s1": "installs=%s" % I1})
        try:
            h.env.start()
            wait_for(lambda: h.call("GET", "/healthz")[0] == 200, what="listener")
            h.call("POST", "/v1/pause", token="adm", body="")
            for _ in range(5):
                h.call("POST", "/v1/purges", token="adm",
                       body={"install": str(uuid.uuid4()), "type": "object"})
            mine = h.call("POST", "/v1/purges", token="s1",
                          body={"install": I1, "type": "object"})[2]["job"]
            for q in ("/v1/jobs?limit=2", "/v1/jobs?limit=1&after=0",
                      "/v1/jobs?type=object&limit=2"):
                st, _, j = h.call("GET", q, token="s1")
                self.assertEqual(st, 200)
                # Its own job on the first page, counted right, no cursor into others.
                self.assertEqual([x["job"] for x in j["jobs"]], [mine], (q, j))
                self.assertEqual((j["total"], j["next"]), (1, None), (q, j))
        finally:
            h.close()

    def test_healthz_follows_the_store(self):
        h = HttpEnv({"adm": "admin"})
        flag = os.path.join(h.env.dir, "readonly")
        try:
            h.env.start(extra_env=dict(
                LD_PRELOAD=os.path.abspath(os.path.join(BUILD, "tests", "erofs.so")),
                WPE_EROFS_FLAG=flag, WPE_EROFS_MATCH=h.env.db,
                ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") +
                ":verify_asan_link_order=0"))
            wait_for(lambda: h.call("GET", "/healthz")[0] == 200, what="listener")
            open(flag, "w").close()
            st = h.call("POST", "/v1/purges", token="adm", body={"install": I1,
                                                                 "type": "page"})
            self.assertEqual((st[0], st[2]["error"]), (503, "storage"))
            # It used to say 200 while every write failed.
            self.assertEqual(h.call("GET", "/healthz")[0], 503)
            os.unlink(flag)
            time.sleep(1.1)          # probed at most once a second
            # Healed: healthy again without waiting for a write to show it.
            self.assertEqual(h.call("GET", "/healthz")[0], 200)
        finally:
            if os.path.exists(flag):
                os.unlink(flag)
            h.close()


class IdempotencyOverHttp(HttpTest):
    """Idempotency keys over HTTPS (issue 12, part 3; provenance review)."""
    ctl = Client.ctl

    def test_header_key_replays_and_conflict_is_409(self):
        # The Idempotency-Key header was ignored: each POST made a new request.
        self.env.request({"op": "pause"})
        a = self.post("ci", I1, headers_key="deploy-1")
        b = self.post("ci", I1, headers_key="deploy-1")
        self.assertEqual((a[0], b[0]), (202, 202), (a, b))
        self.assertEqual((b[2]["id"], b[2]["replayed"]), (a[2]["id"], True), b)
        st, _, j = self.post("ci", I1, type="cdn", headers_key="deploy-1")
        self.assertEqual((st, j["error"]), (409, "idempotency_conflict"), j)
        # Another token's key of the same text is its own.
        st, _, j = self.post("other", I1, headers_key="deploy-1")
        self.assertEqual((st, j["replayed"]), (202, False), j)
        self.assertNotEqual(j["id"], a[2]["id"])
        # The header and the body's field must agree; a bad header is refused.
        st, _, j = self.post("ci", I1, headers_key="x", idempotency_key="y")
        self.assertEqual((st, j["error"]), (400, "bad_value"), j)
        st, _, j = self.post("ci", I1, headers_key="two words")
        self.assertEqual((st, j["error"]), (400, "bad_value"), j)
        # wpe-purgectl --url sends its key in the header: the second run is a replay.
        rc, out, err = self.ctl("ci", "enqueue", I2, "-t", "page", "--idempotency-key",
                                "ci-7")
        self.assertEqual((rc, out[0]["replayed"]), (0, False), err)
        rc, out2, err = self.ctl("ci", "enqueue", I2, "-t", "page", "--idempotency-key",
                                 "ci-7")
        self.assertEqual((rc, out2[0]["id"], out2[0]["replayed"]), (0, out[0]["id"], True),
                         err)
        total = self.env.request({"op": "stats"})["requests"]
        self.assertEqual(total, 3)

    def post(self, token, install=I1, type="page", headers_key=None, **kw):
        body = dict(install=install, type=type, **kw)
        return self.h.call("POST", "/v1/purges", token, body,
                           headers={"Idempotency-Key": headers_key} if headers_key else None)


class KeyedEnqueueRefusedOverHttp(HttpTest):
    """A keyed enqueue (--idempotency-key, or --wait's own key) that wpe-purged answers
    503 queue_full exits 7 at once, as without a key; it was sent again for 30 s, then
    exit 3 "no answer ... it may have been queued" (provenance review)."""
    ctl = Client.ctl

    def setUp(self):
        self.h = HttpEnv(self.tokens)
        self.env = self.h.env
        self.env.write_conf(dict(self.env.lim, max_queued=1), self.env.api,
                            self.env.daemon_extra)
        self.env.start()
        wait_for(lambda: self._up(), what="HTTPS listener")

    def test_queue_full_exits_7_at_once(self):
        self.env.request({"op": "pause"})
        self.assertTrue(self.env.request({"op": "enqueue", "install": I1})["ok"])
        for extra in (["--idempotency-key", "q"], ["--wait"]):
            t = time.monotonic()
            rc, _, err = self.ctl("ci", "enqueue", I2, "-t", "page", *extra)
            self.assertEqual(rc, 7, err)
            self.assertIn("queue_full", err)
            self.assertLess(time.monotonic() - t, 10, err)


def extract_embedded(path):
    """The script between the BEGIN/END purge-with-curl.sh markers of a CI recipe."""
    lines, inside, indent = [], False, None
    with open(path) as f:
        for line in f:
            if "BEGIN purge-with-curl.sh" in line:
                inside = True
                continue
            if "END purge-with-curl.sh" in line:
                break
            if not inside or line.strip() in ("run: |", "script:", "- |"):
                continue
            if indent is None:
                indent = len(line) - len(line.lstrip())
            lines.append(line[indent:] if line.strip() else "\n")
    return "".join(lines)


class CiRecipes(HttpTest):
    """contrib/ci: the curl-only step as GitHub and GitLab run it, against the real API."""
    ci = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../contrib/ci")

    def run_script(self, install, timeout="60", token="ci"):
        e = dict(os.environ, WPE_PURGED_URL="https://127.0.0.1:%d" % self.h.port,
                 WPE_PURGED_TOKEN=self.h.secrets[token][0], INSTALL=install,
                 PURGE_TYPE="page", PURGE_TIMEOUT=timeout, PURGE_REASON="ci test \"x\"",
                 CURL_CA_BUNDLE=self.h.cacert)
        p = subprocess.run(["sh", os.path.join(self.ci, "purge-with-curl.sh")], env=e,
                           capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    def test_recipes_embed_the_tested_script(self):
        with open(os.path.join(self.ci, "purge-with-curl.sh")) as f:
            script = "".join(l for l in f if not l.startswith("# purge-with-curl.sh"))
        for recipe in ("github-actions.yml", "gitlab-ci.yml"):
            self.assertEqual(extract_embedded(os.path.join(self.ci, recipe)), script,
                             recipe)

    def test_purge_done_exits_0(self):
        rc, out, err = self.run_script(I1)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("done", out)
        self.assertEqual(len(self.env.purges(I1)), 1)

    def test_failed_purge_fails_the_job(self):
        rc, out, err = self.run_script("00000000-0000-4000-8000-00000000beef")   # 404
        self.assertEqual(rc, 1, out + err)
        self.assertIn("failed", err)

    def test_unfinished_purge_times_out(self):
        self.env.request({"op": "pause"})
        rc, out, err = self.run_script(I2, timeout="3")
        self.assertEqual(rc, 4, out + err)
        self.assertIn("stays queued", err)

    def test_token_never_on_a_command_line(self):
        with open(os.path.join(self.ci, "purge-with-curl.sh")) as f:
            text = f.read()
        # The token reaches curl only through a printf (a builtin) into -H @-.
        uses = [l for l in text.splitlines() if "WPE_PURGED_TOKEN" in l and
                not l.lstrip().startswith("#")]
        self.assertTrue(uses)
        for l in uses:
            self.assertTrue("printf" in l or l.startswith(":"), l)


class Config(unittest.TestCase):
    def test_plain_http_off_loopback_is_refused_at_start(self):
        env = Env()
        try:
            tok = os.path.join(env.dir, "tokens")
            with open(tok, "w") as f:
                f.write(new_token("x")[1] + "\n")
            os.chmod(tok, 0o600)
            env.set_http(listen="0.0.0.0:%d" % free_port(), tokens_file=tok)
            p = subprocess.run([DAEMON, "-c", env.conf], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(p.returncode, 2)
            self.assertRegex(p.stderr, r"wpe-purged.conf:\d+: an HTTP listener on an "
                             r"address that is not loopback needs tls_cert")
            p = subprocess.run([DAEMON, "-c", env.conf, "--check-config"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2)
            # plain HTTP on loopback is fine; --check-config names tokens, never secrets
            env.set_http(listen="127.0.0.1:%d" % free_port())
            p = subprocess.run([DAEMON, "-c", env.conf, "--check-config"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("1 token(s)", p.stdout)
            self.assertNotIn("wpq_", p.stdout)
            os.chmod(tok, 0o666)
            p = subprocess.run([DAEMON, "-c", env.conf, "--check-config"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2)
            self.assertIn("writable by group or others", p.stderr)
        finally:
            env.close()

    def test_new_token_format(self):
        secret, line = new_token("ci-main")
        self.assertRegex(secret, r"^wpq_[A-Za-z0-9_-]{43}$")
        name, digest = line.split()
        self.assertEqual(name, "ci-main")
        self.assertEqual(digest, hashlib.sha256(secret.encode()).hexdigest())
        self.assertNotEqual(new_token("ci-main")[0], secret)

    def test_plain_http_on_a_unix_socket(self):
        env = Env()
        try:
            tok = os.path.join(env.dir, "tokens")
            secret, line = new_token("proxy")
            with open(tok, "w") as f:
                f.write(line + "\n")
            os.chmod(tok, 0o600)
            path = os.path.join(env.dir, "http.sock")
            env.set_http(listen="unix:" + path, tokens_file=tok)
            env.start()
            p = subprocess.run(["curl", "-sS", "--unix-socket", path, "-H",
                                "Authorization: Bearer " + secret,
                                "http://localhost/v1/stats"], capture_output=True,
                               text=True, timeout=30)
            self.assertTrue(json.loads(p.stdout)["ok"], p.stderr)
            self.assertNotIn(secret, env.log())
        finally:
            env.close()


if __name__ == "__main__":
    unittest.main()
