"""Run the emulator on a real socket: `EmulatorServer` for tests and embedding, `serve` for the CLI."""

from __future__ import annotations

import socket
import struct
import threading

import requests
from werkzeug.serving import WSGIRequestHandler, make_server

from portal.emulator.app import ABORT_KEY, AbortConnection, EmulatorApp


class _Handler(WSGIRequestHandler):
    """Quiet request handler that turns AbortConnection into a TCP reset."""

    def log_request(self, code="-", size="-"):
        pass

    def connection_dropped(self, error, environ=None):
        if isinstance(error, AbortConnection) or (environ or {}).get(ABORT_KEY):
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass


def _shutdown_request(server):
    original = server.shutdown_request

    def shutdown_request(request):
        try:
            linger = struct.unpack("ii", request.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
        except OSError:
            linger = (0, 0)
        if linger == (1, 0):
            # No FIN first: close at once so the client sees a connection reset.
            server.close_request(request)
            return
        original(request)

    server.shutdown_request = shutdown_request


def build_server(app, host="127.0.0.1", port=0, quiet=True):
    server = make_server(host, port, app, threaded=True, request_handler=_Handler if quiet else None)
    if not quiet:
        server.RequestHandlerClass = type("_LoudHandler", (_Handler,), {"log_request":
                                                                         WSGIRequestHandler.log_request})
    _shutdown_request(server)
    server.daemon_threads = True
    return server


class EmulatorServer:
    """The emulator listening on 127.0.0.1 in a background thread.

        with EmulatorServer() as emu:
            emu.base_url        # http://127.0.0.1:PORT
            emu.token_uri       # {base_url}/token
            emu.batch_uri       # {base_url}/batch/calendar/v3
            emu.control(...)    # POST/GET the /emulator/v1 control API
    """

    def __init__(self, host="127.0.0.1", port=0, state_path=None, app=None, allow_http_webhooks=False):
        self.host = host
        self.port = port
        self.app = app or EmulatorApp(state_path, allow_http_webhooks=allow_http_webhooks)
        self._server = None
        self._thread = None
        self._session = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self):
        if self._server is not None:
            return self
        self._server = build_server(self.app, self.host, self.port)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="google-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        close = getattr(self.app, "close", None)
        if close is not None:
            close()
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- addresses -------------------------------------------------------------------------------
    @property
    def base_url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def token_uri(self):
        return self.base_url + "/token"

    @property
    def api_endpoint(self):
        return self.base_url

    @property
    def batch_uri(self):
        return self.base_url + "/batch/calendar/v3"

    # -- control API helpers ---------------------------------------------------------------------
    @property
    def state(self):
        return self.app.state

    def control(self, method, path, json=None):
        """Call /emulator/v1{path}; returns the decoded JSON (raises for HTTP errors)."""
        if self._session is None:
            self._session = requests.Session()
        resp = self._session.request(method, f"{self.base_url}/emulator/v1{path}", json=json, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def reset(self):
        self.app.notifier.drain()
        self.app.store.reset()

    def add_user(self, email, time_zone="UTC"):
        return self.control("POST", "/users", {"email": email, "time_zone": time_zone})

    def add_service_account(self, client_id=None, email=None):
        body = {}
        if client_id:
            body["client_id"] = client_id
        if email:
            body["email"] = email
        return self.control("POST", "/service-accounts", body)

    def delegate(self, client_id, scopes):
        return self.control("POST", "/delegations", {"client_id": client_id, "scopes": list(scopes)})

    def add_fault(self, **fault):
        return self.control("POST", "/faults", fault)

    def clear_faults(self):
        return self.control("DELETE", "/faults")

    def stats(self):
        return self.control("GET", "/stats")

    def advance_clock(self, seconds):
        return self.control("POST", "/clock", {"advance_seconds": seconds})


def serve(host="127.0.0.1", port=8765, state_path=None, quiet=False, allow_http_webhooks=False):
    """Serve forever in the foreground (used by `python -m portal.emulator`)."""
    app = EmulatorApp(state_path, allow_http_webhooks=allow_http_webhooks)
    server = build_server(app, host, port, quiet=quiet)
    print(f"Google API emulator on http://{host}:{server.server_port} "
          f"(token URI http://{host}:{server.server_port}/token)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
