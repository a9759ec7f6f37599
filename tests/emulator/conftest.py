"""Fixtures for the Google emulator tests: one emulator per session on a real socket, reached only
through google-auth and google-api-python-client (the control API through requests). Every Calendar
API response body is validated against the discovery document google-api-python-client ships."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import threading
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from google.auth import crypt
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build

from portal.emulator.app import EmulatorApp
from portal.emulator.discovery_schema import ERROR_ENVELOPE, response_method, schema_errors
from portal.emulator.server import EmulatorServer

CALENDAR = "https://www.googleapis.com/auth/calendar"
CALENDAR_READONLY = "https://www.googleapis.com/auth/calendar.readonly"
class Recorder:
    """Every Calendar API response the emulator produced, with its schema-walk result."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []
        self.violations = []

    def check(self, http_method, path, status, data):
        api_path = path[len("/calendar/v3/"):] if path.startswith("/calendar/v3/") else path.lstrip("/")
        desc = response_method(http_method, api_path)
        if desc is None:
            return
        body = json.loads(data) if data else None
        if status >= 400:
            schema = ERROR_ENVELOPE
            problems = schema_errors(schema, body) if body is not None else ["error without body"]
        elif status == 204 or body is None:
            problems = [] if not data else ["unexpected body"]
            schema = None
        else:
            schema = desc.get("response")
            problems = schema_errors(schema, body) if schema else ["response body where none is defined"]
        with self.lock:
            self.records.append((desc["id"], status, schema and schema.get("$ref", "error")))
            for p in problems:
                self.violations.append(f"{http_method} {path} -> {status}: {p}")


class RecordingApp(EmulatorApp):
    def __init__(self, recorder):
        super().__init__(allow_http_webhooks=True)  # the tests' receivers listen on http://
        self.recorder = recorder

    def handle(self, method, path, args, headers, body, base_url, form=None, in_batch=False):
        result = super().handle(method, path, args, headers, body, base_url, form, in_batch)
        if not path.startswith(("/emulator/", "/batch", "/token")):
            self.recorder.check(method, path, result.status, result.data)
        return result


@pytest.fixture(scope="session")
def recorder():
    return Recorder()


@pytest.fixture(scope="session")
def emulator(recorder):
    server = EmulatorServer(app=RecordingApp(recorder))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _responses_match_discovery(request, recorder):
    before = len(recorder.violations)
    yield
    new = recorder.violations[before:]
    assert not new, "responses not matching calendar.v3.json:\n" + "\n".join(new)


# --------------------------------------------------------------------------------------------
# A workspace: users, a service account with domain-wide delegation, and clients
# --------------------------------------------------------------------------------------------

class Workspace:
    def __init__(self, emulator, domain, sa):
        self.emu = emulator
        self.domain = domain
        self.sa = sa
        emulator.delegate(self.sa["client_id"], [CALENDAR])
        self._signers = {}

    def new_service_account(self):
        """A service account of its own (for tests that change its delegation)."""
        self.sa = self.emu.add_service_account(client_id=str(10**20 + uuid.uuid4().int % 10**19))
        self.emu.delegate(self.sa["client_id"], [CALENDAR])
        return self.sa

    def user(self, name, time_zone="UTC"):
        email = f"{name}@{self.domain}"
        self.emu.add_user(email, time_zone)
        return email

    def json_credentials(self, subject, scopes=(CALENDAR,), **kwargs):
        info = dict(self.sa["json_key"], token_uri=self.emu.token_uri)
        creds = service_account.Credentials.from_service_account_info(info, scopes=list(scopes), **kwargs)
        return creds.with_subject(subject) if subject else creds

    def p12_credentials(self, subject, scopes=(CALENDAR,), sa=None, **kwargs):
        sa = sa or self.sa
        if sa["p12_base64"] not in self._signers:
            key, _cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(sa["p12_base64"]),
                                                             sa["password"].encode())
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            self._signers[sa["p12_base64"]] = crypt.RSASigner.from_string(pem)
        signer = self._signers[sa["p12_base64"]]
        return service_account.Credentials(signer, sa["email"], self.emu.token_uri, scopes=list(scopes),
                                           subject=subject, **kwargs)

    def service(self, subject=None, credentials=None, **kwargs):
        creds = credentials or self.p12_credentials(subject, **kwargs)
        return build("calendar", "v3", credentials=creds, static_discovery=True,
                     client_options={"api_endpoint": self.emu.base_url}, cache_discovery=False)

    def person(self, email):
        """A Calendar client acting as the person (their own OAuth token), not via the sync's service account."""
        token = self.emu.control("POST", "/tokens", {"user": email})["access_token"]
        creds = user_credentials.Credentials(token)
        return build("calendar", "v3", credentials=creds, static_discovery=True,
                     client_options={"api_endpoint": self.emu.base_url}, cache_discovery=False)


@pytest.fixture(scope="session")
def shared_service_account(emulator):
    return emulator.add_service_account(client_id=str(10**20 + uuid.uuid4().int % 10**19))


@pytest.fixture
def workspace(emulator, shared_service_account):
    """A fresh Workspace domain; users are impersonated through one service account (P12 key)."""
    emulator.clear_faults()
    return Workspace(emulator, f"ws{uuid.uuid4().hex[:8]}.example.com", shared_service_account)


def timed(start, minutes=60, tz=None):
    """start/end bodies for a timed event beginning at the naive ISO string `start`."""
    begin = dt.datetime.fromisoformat(start)
    end = begin + dt.timedelta(minutes=minutes)
    if tz:
        return {"start": {"dateTime": begin.isoformat(), "timeZone": tz},
                "end": {"dateTime": end.isoformat(), "timeZone": tz}}
    return {"start": {"dateTime": begin.isoformat() + "Z"}, "end": {"dateTime": end.isoformat() + "Z"}}


@pytest.fixture
def when():
    return timed


# --------------------------------------------------------------------------------------------
# A web-hook receiver for push notifications
# --------------------------------------------------------------------------------------------

class Receiver:
    def __init__(self):
        self.received = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with receiver.cond:
                    receiver.received.append({k: v for k, v in self.headers.items()})
                    receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def wait_for(self, count, timeout=5.0):
        with self.cond:
            self.cond.wait_for(lambda: len(self.received) >= count, timeout=timeout)
            return list(self.received)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
