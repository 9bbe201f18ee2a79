#!/usr/bin/env python3
"""junk-api.py: a purge API stand-in for the fairness benchmark (scripts/bench.sh).

POST /v1/installs/ID/purge_cache answers 202 at once for the installs named with
--known, and 404 "Not Found" after --delay-ms for every other install (a junk install
the API looks up slowly). Each connection gets its own thread, so answers held back
overlap like a real API's. --port-file receives the port; --log gets one JSON line per
call: "t" (wall seconds when answered), "install", "status".
"""
import argparse
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = re.compile(r"^/v1/installs/([0-9a-f-]{36})/purge_cache$")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--known", action="append", default=[])
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--log")
    a = ap.parse_args()
    known = set(a.known)
    lock = threading.Lock()
    log = open(a.log, "a", buffering=1) if a.log else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            m = PATH.match(self.path)
            install = m.group(1) if m else None
            if install in known:
                status, body = 202, {}
            else:
                time.sleep(a.delay_ms / 1000.0)
                status, body = 404, {"message": "Not Found"}
            self.answer(status, body)
            if log:
                with lock:
                    log.write(json.dumps({"t": time.time(), "install": install,
                                          "status": status}) + "\n")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, a.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
