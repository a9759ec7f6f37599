"""The Google emulator as the benchmark sees it: in a process of its own, with a latency per round trip.

    python -m bench.emulator --latency-ms 100      # prints "port N" once it listens

Its own process, so its CPU never counts against the process measured and it never shares that process's
GIL. Every Google round trip (the token endpoint, a Calendar call, a batch as a whole) waits `latency_ms`
before it is answered, in the server's thread for that connection (werkzeug's threaded server: one thread
per connection, so requests in flight wait side by side, not one after the other). The control API
(/emulator/v1) answers at once: it is the harness acting as Google's people and admins, not the portal.

Two paths of the harness's own, beside the control API:
- `GET /bench/requests?since=N`: the round trips from the N-th on, as [seconds since the epoch, the user the
  access token belongs to (None for a token request), method, path]. Which user a request served is what
  idle and push measurements count by.
- `POST /bench/latency {"ms": 100}`: change the latency (the set-up runs at 0 ms).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from portal.emulator.app import EmulatorApp
from portal.emulator.server import build_server

BENCH_PREFIX = "/bench/"


class LatencyAndLog:
    """WSGI middleware around the emulator: a latency per round trip, and a log of every round trip."""

    def __init__(self, app: EmulatorApp, latency_ms: float):
        self.app = app
        self.latency = latency_ms / 1000.0
        self.log: list[tuple[float, str | None, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(BENCH_PREFIX):
            return self.bench(environ, start_response, path)
        if not path.startswith("/emulator/"):
            if self.latency:
                time.sleep(self.latency)
            with self.lock:
                self.log.append((time.time(), self.user_of(environ), environ.get("REQUEST_METHOD", ""), path))
        return self.app(environ, start_response)

    def user_of(self, environ) -> str | None:
        header = environ.get("HTTP_AUTHORIZATION") or ""
        if not header.startswith("Bearer "):
            return None
        token = self.app.state.tokens.get(header[7:].strip())
        return token.user if token is not None else None

    def bench(self, environ, start_response, path):
        if path == "/bench/requests":
            query = dict(pair.split("=", 1) for pair in (environ.get("QUERY_STRING") or "").split("&") if "=" in pair)
            since = int(query.get("since", 0))
            with self.lock:
                body = {"next": len(self.log), "requests": self.log[since:]}
        elif path == "/bench/latency":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            payload = json.loads(environ["wsgi.input"].read(length) or b"{}")
            self.latency = float(payload.get("ms", 0)) / 1000.0
            body = {"ms": self.latency * 1000.0}
        else:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": "unknown bench path"}']
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


def serve(latency_ms: float, port: int = 0) -> None:
    app = EmulatorApp(allow_http_webhooks=True)  # the portal's web hook listens on plain http on loopback
    server = build_server(LatencyAndLog(app, latency_ms), "127.0.0.1", port)
    print(f"port {server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.close()


class RemoteEmulator:
    """The emulator process, driven as `portal.emulator.server.EmulatorServer` is (same helpers)."""

    def __init__(self, latency_ms: float = 0.0):
        self.latency_ms = latency_ms
        self.process = subprocess.Popen([sys.executable, "-m", "bench.emulator", "--latency-ms", str(latency_ms)],
                                        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("port "):
            self.process.kill()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.port = int(line.split()[1])
        self.session = requests.Session()
        self.seen = 0  # requests() returns the log from here on

    # -- addresses, as EmulatorServer has them -------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return self.base_url + "/token"

    @property
    def api_endpoint(self) -> str:
        return self.base_url

    @property
    def batch_uri(self) -> str:
        return self.base_url + "/batch/calendar/v3"

    # -- the control API -----------------------------------------------------------------------------
    def control(self, method: str, path: str, json=None):
        answer = self.session.request(method, f"{self.base_url}/emulator/v1{path}", json=json, timeout=60)
        answer.raise_for_status()
        return answer.json()

    def add_user(self, email: str, time_zone: str = "UTC"):
        return self.control("POST", "/users", {"email": email, "time_zone": time_zone})

    def add_service_account(self, client_id=None, email=None):
        return self.control("POST", "/service-accounts", {"client_id": client_id, "email": email})

    def delegate(self, client_id, scopes):
        return self.control("POST", "/delegations", {"client_id": client_id, "scopes": list(scopes)})

    def stats(self) -> dict:
        return self.control("GET", "/stats")

    def open_channels(self) -> list[dict]:
        return [c for c in self.control("GET", "/channels")["channels"] if not c["stopped"]]

    # -- the harness's own paths ---------------------------------------------------------------------
    def set_latency(self, ms: float) -> None:
        self.session.post(f"{self.base_url}/bench/latency", json={"ms": ms}, timeout=10).raise_for_status()

    def mark(self) -> int:
        """A position in the request log; `requests(since=mark)` returns what came after it."""
        return self.session.get(f"{self.base_url}/bench/requests", params={"since": 1 << 62},
                                timeout=10).json()["next"]

    def requests(self, since: int = 0) -> list[tuple[float, str | None, str, str]]:
        answer = self.session.get(f"{self.base_url}/bench/requests", params={"since": since}, timeout=60).json()
        return [tuple(r) for r in answer["requests"]]

    def first_request_after(self, mark: int, timeout: float = 120.0) -> float:
        """When the first round trip after `mark` came (waits for it): a process has started working."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests(mark)
            if found:
                return found[0][0]
            time.sleep(0.05)
        raise TimeoutError(f"no Google request in {timeout:.0f} s")

    def stop(self) -> None:
        self.session.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    serve(args.latency_ms, args.port)


if __name__ == "__main__":
    main()
