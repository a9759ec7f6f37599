"""The emulator WSGI application: Google's OAuth token endpoint, Calendar API v3, the batch endpoint,
push notifications, and the /emulator/v1 control API."""

from __future__ import annotations

import base64
import datetime as dt
import email.parser
import http.client
import json
import logging
import queue
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
import uuid

from werkzeug.datastructures import Headers, MultiDict
from werkzeug.wrappers import Request, Response

from portal.emulator import auth, calendar, ui
from portal.emulator.errors import (
    STATUS_DEFAULT_REASON,
    ApiError,
    OAuthError,
    auth_invalid,
    auth_required,
    invalid,
    not_found,
)
from portal.emulator.result import Result
from portal.emulator.state import Calendar, Store, User
from portal.emulator.timeutil import fmt_updated, http_date, to_ms

log = logging.getLogger("portal.emulator")

API_PREFIXES = ("/calendar/v3/", "/")
STATUS_TEXT = {200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
               403: "Forbidden", 404: "Not Found", 409: "Conflict", 410: "Gone", 412: "Precondition Failed",
               429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
               503: "Service Unavailable"}
ABORT_KEY = "portal.emulator.abort"


class AbortConnection(ConnectionAbortedError):
    """Close the client connection without any response (a TCP reset)."""


def _abort_socket(environ):
    """Arrange for the connection to be reset instead of answered."""
    environ[ABORT_KEY] = True
    sock = environ.get("werkzeug.socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass


def _json_result(status, body):
    return Result(status, body)


# Calendar API routes: (http method, regex over the path after the API prefix, method id)
ROUTES = [
    ("GET", r"calendars/(?P<cal>[^/]+)", "calendar.calendars.get"),
    ("GET", r"calendars/(?P<cal>[^/]+)/events", "calendar.events.list"),
    ("POST", r"calendars/(?P<cal>[^/]+)/events", "calendar.events.insert"),
    ("POST", r"calendars/(?P<cal>[^/]+)/events/watch", "calendar.events.watch"),
    ("GET", r"calendars/(?P<cal>[^/]+)/events/(?P<eid>[^/]+)/instances", "calendar.events.instances"),
    ("GET", r"calendars/(?P<cal>[^/]+)/events/(?P<eid>[^/]+)", "calendar.events.get"),
    ("PUT", r"calendars/(?P<cal>[^/]+)/events/(?P<eid>[^/]+)", "calendar.events.update"),
    ("PATCH", r"calendars/(?P<cal>[^/]+)/events/(?P<eid>[^/]+)", "calendar.events.patch"),
    ("DELETE", r"calendars/(?P<cal>[^/]+)/events/(?P<eid>[^/]+)", "calendar.events.delete"),
    ("POST", r"channels/stop", "calendar.channels.stop"),
]
ROUTES = [(m, re.compile("^" + r + "$"), name) for m, r, name in ROUTES]
WRITE_METHODS = {"calendar.events.insert", "calendar.events.update", "calendar.events.patch",
                 "calendar.events.delete", "calendar.events.watch", "calendar.channels.stop"}


class Notifier:
    """Delivers push notifications in order from one background thread."""

    def __init__(self):
        self.queue = queue.Queue()
        self.thread = None
        self.lock = threading.Lock()
        self.delivered = 0
        self.failed = 0

    def submit(self, address, headers):
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="emulator-push", daemon=True)
                self.thread.start()
        self.queue.put((address, headers))

    def _run(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            address, headers = item
            try:
                self._post(address, headers)
                self.delivered += 1
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failed += 1
                log.info("push notification to %s failed: %s", address, exc)

    @staticmethod
    def _post(address, headers):
        # http.client keeps the header names exactly as Google spells them (X-Goog-Channel-ID).
        url = urllib.parse.urlsplit(address)
        conn_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = conn_class(url.hostname, url.port, timeout=5)
        try:
            target = (url.path or "/") + ("?" + url.query if url.query else "")
            conn.request("POST", target, body=b"", headers=headers)
            conn.getresponse().read()
        finally:
            conn.close()

    def stop(self):
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                self.queue.put(None)
                self.thread.join(timeout=5)
            self.thread = None

    def drain(self, timeout=5.0):
        deadline = time.time() + timeout
        while not self.queue.empty() and time.time() < deadline:
            time.sleep(0.01)


def check_quotas(state, tok):
    """Count a request against the configured per-user and per-project budgets (a minute on the emulator
    clock); past one, answer as Google does (the errors guide: 403 usageLimits/rateLimitExceeded per user,
    429 rateLimitExceeded per project; current bodies carry `status` and an ErrorInfo in `details`)."""
    now = state.now()
    horizon = now - dt.timedelta(minutes=1)
    for key, who, code in (("per_user_per_minute", f"user:{tok.user}", 403),
                           ("per_project_per_minute", "project", 429)):
        limit = state.quotas.get(key)
        if not limit:
            continue
        hits = [t for t in state.quota_hits.get(who, []) if t > horizon]
        if len(hits) >= limit:
            state.quota_hits[who] = hits
            quota = "defaultPerMinutePerUser" if code == 403 else "defaultPerMinutePerProject"
            raise ApiError(code, "rateLimitExceeded",
                           f"Quota exceeded for quota metric 'Queries' and limit '{quota}' of service "
                           "'calendar-json.googleapis.com' for consumer 'project_number:emulated-project'.",
                           domain="usageLimits", status="PERMISSION_DENIED" if code == 403 else "RESOURCE_EXHAUSTED",
                           details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                     "reason": "RATE_LIMIT_EXCEEDED", "domain": "googleapis.com",
                                     "metadata": {"quota_limit": quota, "quota_metric": "calendar-json.googleapis.com/default",
                                                  "service": "calendar-json.googleapis.com",
                                                  "consumer": "projects/emulated-project", "quota_limit_value": str(limit)}}])
    for who in (f"user:{tok.user}", "project"):
        state.quota_hits.setdefault(who, []).append(now)
        state.quota_hits[who] = [t for t in state.quota_hits[who] if t > horizon]


class EmulatorApp:
    """WSGI application. `state_path`: optional SQLite file that keeps the state across restarts."""

    def __init__(self, state_path=None, allow_http_webhooks=False):
        self.store = Store(state_path)
        # Google only delivers to HTTPS web hooks; plain HTTP is for a demo on one machine, asked for.
        self.allow_http_webhooks = allow_http_webhooks
        self.notifier = Notifier()
        self.random = random.Random()

    @property
    def state(self):
        return self.store.state

    # -- WSGI ------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request = Request(environ)
        base_url = request.url_root.rstrip("/")  # keeps a mount prefix (SCRIPT_NAME)
        body = request.get_data()
        try:
            result = self.handle(request.method, request.path, request.args, request.headers, body, base_url)
        except AbortConnection:
            _abort_socket(environ)
            raise
        response = Response(result.data, status=result.status, headers=result.headers)
        return response(environ, start_response)

    # -- dispatch --------------------------------------------------------------------------------
    def handle(self, method, path, args, headers, body, base_url, form=None, in_batch=False):
        if path.startswith("/emulator/"):
            return self.control(method, path, args, body, base_url, form)
        if path == "/" and method == "GET":
            return Result(200, raw=b"Emulated Google APIs (OAuth token endpoint, Calendar API v3).\n",
                           content_type="text/plain; charset=utf-8")
        if path in ("/batch/calendar/v3", "/batch") and method == "POST" and not in_batch:
            self._count("batch")
            return self.batch(headers, body, base_url)
        if path in ("/token", "/oauth2/v4/token", "/o/oauth2/token") and method == "POST":
            return self._with_faults(method, path, headers, "oauth2.token",
                                     lambda: self.token(body, form))
        api_path = None
        for prefix in API_PREFIXES:
            if path.startswith(prefix):
                api_path = path[len(prefix):]
                break
        for route_method, pattern, name in ROUTES:
            m = pattern.match(api_path or "")
            if m and route_method == method:
                return self._with_faults(method, path, headers, name,
                                         lambda m=m, name=name, **kw: self.calendar_call(name, m.groupdict(), args,
                                                                                         headers, body, base_url, **kw))
        self._count("unknown")
        return _json_result(404, not_found().body())

    def _count(self, name, status=None):
        with self.store.lock:
            self.state.stats[name] += 1
            if status is not None:
                self.state.statuses[str(status)] += 1

    def _actor_of(self, headers):
        auth_header = headers.get("Authorization") or ""
        if auth_header.startswith("Bearer "):
            tok = self.state.tokens.get(auth_header[7:].strip())
            return tok.user if tok else None
        return None

    def _client_of(self, headers):
        """The OAuth client (service account) whose delegated token a request carries; None for a person's."""
        auth_header = headers.get("Authorization") or ""
        if auth_header.startswith("Bearer "):
            tok = self.state.tokens.get(auth_header[7:].strip())
            return tok.client_id if tok else None
        return None

    def _match_fault(self, method, path, headers):
        with self.store.lock:
            actor = None
            for fault in list(self.state.faults):
                if fault.get("kind") == "expire_sync_tokens":
                    continue
                if fault.get("method") and fault["method"].upper() != method:
                    continue
                if fault.get("path_regex") and not re.search(fault["path_regex"], path):
                    continue
                if fault.get("user"):
                    actor = actor or self._actor_of(headers)
                    if actor != fault["user"].lower():
                        continue
                if fault.get("client_id") and self._client_of(headers) != str(fault["client_id"]):
                    continue
                if fault.get("fraction") is not None and self.random.random() >= float(fault["fraction"]):
                    continue
                if fault.get("count") is not None:
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self.state.faults.remove(fault)
                self.state.faults_triggered += 1
                return dict(fault)
        return None

    def _with_faults(self, method, path, headers, name, call):
        fault = self._match_fault(method, path, headers)
        if fault is not None:
            kind = fault.get("kind") or "error"
            if fault.get("latency_ms"):
                time.sleep(float(fault["latency_ms"]) / 1000.0)
            if kind == "reset":
                self._count(name, "reset")
                raise AbortConnection("fault: connection reset")
            if kind == "short_page":
                # calendar.v3.json, events.list maxResults: "The number of events in the resulting page may be
                # less than this value, or none at all, even if there are more events matching the query."
                result = call(short_page=self.random.random())
                self._count(name, result.status)
                return result
            if kind == "error":
                status = int(fault.get("status") or 503)
                self._count(name, status)
                if name == "oauth2.token":
                    return _json_result(status, {"error": "internal_failure",
                                                 "error_description": fault.get("message") or "Backend Error"})
                reason = fault.get("reason") or STATUS_DEFAULT_REASON.get(status, "backendError")
                err = ApiError(status, reason, fault.get("message"), domain=fault.get("domain"))
                return _json_result(status, err.body())
        result = call()
        self._count(name, result.status)
        if fault is not None and fault.get("kind") == "drop_response":
            raise AbortConnection("fault: response dropped after the write was applied")
        return result

    # -- OAuth -----------------------------------------------------------------------------------
    def token(self, body, form):
        if form is None:
            form = MultiDict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        with self.store.lock:
            try:
                result = auth.token_grant(self.state, form)
            except OAuthError as err:
                return Result(err.code, err.body(), headers=[("Cache-Control", "no-store")])
            self.store.save()
        return Result(200, result, headers=[("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate"),
                                             ("Pragma", "no-cache")])

    # -- Calendar API ----------------------------------------------------------------------------
    def authenticate(self, headers):
        auth_header = headers.get("Authorization") or ""
        if not auth_header.startswith("Bearer ") or not auth_header[7:].strip():
            raise auth_required()
        tok = self.state.tokens.get(auth_header[7:].strip())
        if tok is None or tok.expiry <= self.state.now():
            raise auth_invalid()
        return tok

    def calendar_call(self, name, groups, args, headers, body, base_url, short_page=None):
        payload = None
        if body:
            try:
                payload = json.loads(body)
            except ValueError:
                return _json_result(400, ApiError(400, "parseError", "Parse Error").body())
        dirty = set()
        with self.store.lock:
            try:
                tok = self.authenticate(headers)
                check_quotas(self.state, tok)
                ctx = calendar.Ctx(self.state, tok.user, base_url, tok.scopes)
                ctx.short_page = short_page
                status, out = self._call(name, ctx, groups, args, headers, payload)
                dirty = ctx.dirty
                if name in WRITE_METHODS:
                    self.store.save()
            except ApiError as err:
                return _json_result(err.code, err.body())
            if status == 200 and isinstance(out, dict) and out.get("etag") and name == "calendar.events.get":
                if headers.get("If-None-Match") == out["etag"]:
                    return Result(304, raw=b"", headers=[("ETag", out["etag"])])
            self._notify(dirty, base_url)
            if name == "calendar.events.watch" and status == 200:
                self._notify_sync(out["id"])
        extra = [("ETag", out["etag"])] if isinstance(out, dict) and out.get("etag") else []
        return Result(status, out, headers=extra)

    def as_user(self, email, fn, write=True):
        """Run `fn(ctx)` as the Workspace user `email` (used by the demo UI), with push and persistence."""
        with self.store.lock:
            ctx = calendar.Ctx(self.state, email, "")
            result = fn(ctx)
            if write:
                self.store.save()
                self._notify(ctx.dirty)
            return result

    def _call(self, name, ctx, g, args, headers, payload):
        if name == "calendar.calendars.get":
            return calendar.calendars_get(ctx, g["cal"])
        if name == "calendar.events.list":
            return calendar.events_list(ctx, g["cal"], args)
        if name == "calendar.events.insert":
            return calendar.events_insert(ctx, g["cal"], args, payload)
        if name == "calendar.events.get":
            return calendar.events_get(ctx, g["cal"], g["eid"], args, headers)
        if name == "calendar.events.update":
            return calendar.events_modify(ctx, g["cal"], g["eid"], args, payload, headers, patch=False)
        if name == "calendar.events.patch":
            return calendar.events_modify(ctx, g["cal"], g["eid"], args, payload or {}, headers, patch=True)
        if name == "calendar.events.delete":
            return calendar.events_delete(ctx, g["cal"], g["eid"], args, headers)
        if name == "calendar.events.instances":
            return calendar.events_instances(ctx, g["cal"], g["eid"], args)
        if name == "calendar.events.watch":
            return calendar.events_watch(ctx, g["cal"], args, payload, allow_http=self.allow_http_webhooks)
        if name == "calendar.channels.stop":
            return calendar.channels_stop(ctx, payload)
        raise not_found()

    # -- push ------------------------------------------------------------------------------------
    def _push(self, channel, resource_state):
        channel.message_number += 1
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Expiration": http_date(channel.expiration),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-URI": channel.resource_uri,
            "X-Goog-Resource-State": resource_state,
            "X-Goog-Message-Number": str(channel.message_number),
            "Content-Length": "0",
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        self.state.notifications_sent += 1
        self.notifier.submit(channel.address, headers)

    def _notify_sync(self, channel_id):
        self._push(self.state.channels[channel_id], "sync")

    def _notify(self, dirty, base_url=None):
        if not dirty:
            return
        now = self.state.now()
        for channel in self.state.channels.values():
            if channel.cal_id in dirty and not channel.stopped and channel.expiration > now:
                self._push(channel, "exists")

    # -- batch -----------------------------------------------------------------------------------
    def batch(self, headers, body, base_url):
        content_type = headers.get("Content-Type") or ""
        if not content_type.startswith("multipart/"):
            return _json_result(400, invalid("Batch request must be multipart/mixed.").body())
        parser = email.parser.BytesFeedParser()
        parser.feed(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        message = parser.close()
        if not message.is_multipart():
            return _json_result(400, invalid("Batch request must be multipart/mixed.").body())
        boundary = "batch_" + uuid.uuid4().hex
        out = []
        parts = [p for p in message.get_payload() if not isinstance(p.get_payload(decode=False), list)]
        # Batch guide: "The server might perform your calls in any order. Don't count on them being executed in
        # the order in which you specified them." The answers come back in the order of the request.
        order = list(range(len(parts)))
        self.random.shuffle(order)
        results = {}
        for index in order:
            results[index] = self._batch_part(parts[index].get_payload(decode=False), base_url)
        for index, part in enumerate(parts):
            content_id = part.get("Content-ID", "")
            result = results[index]
            response_id = "<response-" + content_id.strip()[1:] if content_id.strip().startswith("<") else ""
            lines = [f"--{boundary}", "Content-Type: application/http"]
            if response_id:
                lines.append(f"Content-ID: {response_id}")
            lines.append("")
            lines.append(f"HTTP/1.1 {result.status} {STATUS_TEXT.get(result.status, 'Unknown')}")
            header_lines = [f"{k}: {v}" for k, v in result.headers]
            header_lines.append(f"Content-Length: {len(result.data)}")
            lines.extend(header_lines)
            lines.append("")
            lines.append(result.data.decode("utf-8"))
            out.append("\r\n".join(lines))
        text = "\r\n".join(out) + f"\r\n--{boundary}--\r\n"
        return Result(200, raw=text.encode("utf-8"), content_type=f"multipart/mixed; boundary={boundary}")

    def _batch_part(self, raw, base_url):
        text = raw.replace("\r\n", "\n")
        head, _, inner_body = text.partition("\n\n")
        lines = head.split("\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return _json_result(400, invalid("Invalid batch part.").body())
        inner_headers = Headers()
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                inner_headers.add(k.strip(), v.strip())
        parsed = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(parsed.path)
        args = MultiDict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        data = inner_body.encode("utf-8")
        if inner_headers.get("Content-Length"):
            data = data[: int(inner_headers["Content-Length"])]
        return self.handle(method.upper(), path, args, inner_headers, data, base_url, in_batch=True)

    # -- control API -----------------------------------------------------------------------------
    def control(self, method, path, args, body, base_url, form):
        if path.startswith("/emulator/ui/"):
            return ui.handle(self, method, path, args, body, form)
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return _json_result(400, {"error": "invalid JSON"})
        with self.store.lock:
            try:
                status, out = self._control(method, path[len("/emulator/v1"):], args, payload or {}, base_url)
            except KeyError as exc:
                return _json_result(400, {"error": f"missing field {exc}"})
            except ValueError as exc:
                return _json_result(400, {"error": str(exc)})
            if method != "GET":
                self.store.save()
        return _json_result(status, out)

    def _control(self, method, path, args, payload, base_url):
        handler, ids = self._CONTROL_PATHS.get((method, path)), ()
        if handler is None:
            for route_method, pattern, route_handler in self._CONTROL_PATTERNS:
                m = pattern.match(path)
                if m and route_method == method:
                    handler, ids = route_handler, m.groups()
                    break
        if handler is None:
            return 404, {"error": f"unknown control endpoint {method} {path}"}
        return handler(self, payload, args, base_url, *ids)

    def _ctl_add_user(self, payload, args, base_url):
        state = self.state
        email_addr = payload["email"].strip().lower()
        tz = payload.get("time_zone") or payload.get("timeZone") or "UTC"
        if email_addr not in state.users:
            state.users[email_addr] = User(email_addr, tz, payload.get("name"))
            state.calendars[email_addr] = Calendar(email_addr, tz)
        return 200, self._user_json(state.users[email_addr])

    def _ctl_users(self, payload, args, base_url):
        return 200, {"users": [self._user_json(u) for u in self.state.users.values()]}

    def _ctl_rename_user(self, payload, args, base_url, user):
        return self._rename_user(user.lower(), str(payload.get("email") or "").strip().lower())

    def _ctl_add_event(self, payload, args, base_url, user):
        # What only Google itself makes: events of type fromGmail, locked copies.
        state = self.state
        email_addr = user.lower()
        if email_addr not in state.calendars:
            return 404, {"error": "no such user"}
        ctx = calendar.Ctx(state, email_addr, base_url, calendar.WRITE_SCOPES)
        try:
            status, out = calendar.events_insert(ctx, "primary", args, payload, trusted=True)
        except ApiError as err:
            return err.code, err.body()
        self.store.save()
        self._notify(ctx.dirty, base_url)
        return status, out

    def _ctl_events(self, payload, args, base_url, user):
        state = self.state
        cal = state.calendars.get(user.lower())
        if cal is None:
            return 404, {"error": "no such user"}
        items = []
        for entry in cal.entries.values():
            item = calendar.render(state, entry)
            item["_seq"] = entry.seq
            items.append(item)
        return 200, {"calendar": cal.id, "seq": cal.seq, "sync_epoch": cal.sync_epoch, "items": items}

    def _ctl_add_service_account(self, payload, args, base_url):
        client_id = str(payload.get("client_id") or random.randint(10**20, 10**21 - 1))
        sa_email = (payload.get("email") or f"sa-{client_id[-6:]}@{auth.PROJECT_ID}.iam.gserviceaccount.com")
        account, p12, json_key = auth.mint_service_account(sa_email.lower(), client_id, base_url + "/token")
        self.state.service_accounts[account.email] = account
        return 200, {"email": account.email, "client_id": client_id,
                     "p12_base64": base64.b64encode(p12).decode(), "password": auth.P12_PASSWORD,
                     "json_key": json_key}

    def _ctl_grant_delegation(self, payload, args, base_url):
        return self._change_delegation(True, payload, args)

    def _ctl_revoke_delegation(self, payload, args, base_url):
        return self._change_delegation(False, payload, args)

    def _change_delegation(self, grant, payload, args):
        # Google: "changes ... can take up to 24 hours" (domain-wide delegation help); `delay_seconds` makes
        # a change take effect that much later on the emulator clock.
        state = self.state
        client_id = str(payload.get("client_id") or args.get("client_id"))
        scopes = payload.get("scopes")
        if grant and not isinstance(scopes, list):
            raise ValueError("scopes must be a list")
        change = (grant, client_id, list(scopes) if scopes else None)
        delay = float(payload.get("delay_seconds") or 0)
        if delay > 0:
            state.pending_delegations.append((state.now() + dt.timedelta(seconds=delay), change))
        else:
            auth.apply_delegation(state, change)
        return 200, {"client_id": client_id, "scopes": sorted(state.delegations.get(client_id, ())),
                     "pending": len(state.pending_delegations)}

    def _ctl_delegations(self, payload, args, base_url):
        return 200, {"delegations": {k: sorted(v) for k, v in self.state.delegations.items()}}

    def _ctl_set_quotas(self, payload, args, base_url):
        # Request budgets per minute on the emulator clock, as Google's per-user and per-project quotas.
        quotas = self.state.quotas
        for key in ("per_user_per_minute", "per_project_per_minute"):
            if key in payload:
                value = payload[key]
                quotas[key] = int(value) if value else None
        return 200, dict(quotas)

    def _ctl_quotas(self, payload, args, base_url):
        return 200, dict(self.state.quotas)

    def _ctl_add_token(self, payload, args, base_url):
        state = self.state
        user = payload["user"].strip().lower()
        if user not in state.users:
            return 404, {"error": "no such user"}
        scopes = payload.get("scopes") or [calendar.SCOPE + "calendar"]
        return 200, auth.new_access_token(state, user, scopes)

    def _ctl_add_fault(self, payload, args, base_url):
        return 200, self._add_fault(payload)

    def _ctl_faults(self, payload, args, base_url):
        return 200, {"faults": self.state.faults}

    def _ctl_clear_faults(self, payload, args, base_url):
        self.state.faults = []
        return 200, {"faults": []}

    def _ctl_remove_fault(self, payload, args, base_url, fault_id):
        state = self.state
        state.faults = [f for f in state.faults if f["id"] != fault_id]
        return 200, {"faults": state.faults}

    def _ctl_stats(self, payload, args, base_url):
        return 200, self._stats()

    def _ctl_clear_stats(self, payload, args, base_url):
        state = self.state
        state.stats.clear()
        state.statuses.clear()
        state.emails_sent = state.notifications_sent = state.faults_triggered = 0
        return 200, self._stats()

    def _ctl_set_clock(self, payload, args, base_url):
        state = self.state
        if "advance_seconds" in payload:
            state.clock_offset += float(payload["advance_seconds"])
        if "offset_seconds" in payload:
            state.clock_offset = float(payload["offset_seconds"])
        return 200, self._clock()

    def _ctl_clock(self, payload, args, base_url):
        return 200, self._clock()

    def _ctl_channels(self, payload, args, base_url):
        return 200, {"channels": [self._channel_json(c) for c in self.state.channels.values()]}

    def _ctl_reset(self, payload, args, base_url):
        self.store.state = type(self.state)()
        # A seed makes the faults given as fractions strike the same requests in every run.
        seed = (payload or {}).get("seed") if isinstance(payload, dict) else None
        self.random = random.Random(seed)
        if seed is not None:
            self.store.state.ids = random.Random(f"ids-{seed}")
        return 200, {"reset": True}

    # Control API routes: each handler takes (payload, args, base_url) and what the path names.
    _CONTROL_PATHS = {
        ("POST", "/users"): _ctl_add_user,
        ("GET", "/users"): _ctl_users,
        ("POST", "/service-accounts"): _ctl_add_service_account,
        ("POST", "/delegations"): _ctl_grant_delegation,
        ("DELETE", "/delegations"): _ctl_revoke_delegation,
        ("GET", "/delegations"): _ctl_delegations,
        ("POST", "/quotas"): _ctl_set_quotas,
        ("GET", "/quotas"): _ctl_quotas,
        ("POST", "/tokens"): _ctl_add_token,
        ("POST", "/faults"): _ctl_add_fault,
        ("GET", "/faults"): _ctl_faults,
        ("DELETE", "/faults"): _ctl_clear_faults,
        ("GET", "/stats"): _ctl_stats,
        ("DELETE", "/stats"): _ctl_clear_stats,
        ("POST", "/clock"): _ctl_set_clock,
        ("GET", "/clock"): _ctl_clock,
        ("GET", "/channels"): _ctl_channels,
        ("POST", "/reset"): _ctl_reset,
    }
    _CONTROL_PATTERNS = [
        ("POST", re.compile(r"^/users/([^/]+)/rename$"), _ctl_rename_user),
        ("POST", re.compile(r"^/users/([^/]+)/events$"), _ctl_add_event),
        ("GET", re.compile(r"^/users/([^/]+)/events$"), _ctl_events),
        ("DELETE", re.compile(r"^/faults/([^/]+)$"), _ctl_remove_fault),
    ]

    def _rename_user(self, old, new):
        """A Workspace admin renames a user: their calendar, and every event naming them, take the new
        address; the old one is no longer a user (domain-wide delegation needs the primary address)."""
        state = self.state
        if old not in state.users:
            return 404, {"error": f"no user {old}"}
        if not new or "@" not in new or new in state.users:
            return 400, {"error": f"{new!r} cannot be the new address"}
        user = state.users.pop(old)
        user.email = new
        state.users[new] = user
        cal = state.calendars.pop(old)
        cal.id = new
        state.calendars[new] = cal
        cores = {}
        for calendar_ in state.calendars.values():
            for entry in calendar_.entries.values():
                if entry.cal_id == old:
                    entry.cal_id = new
                cores[id(entry.core)] = entry.core
        now = state.now()
        for core in cores.values():
            named = core.organizer == old or core.creator == old or any(a.get("email") == old
                                                                         for a in core.attendees)
            if not named:
                continue
            core.organizer = new if core.organizer == old else core.organizer
            core.creator = new if core.creator == old else core.creator
            for attendee in core.attendees:
                if attendee.get("email") == old:
                    attendee["email"] = new
            for entry in calendar.entries_of(state, core):
                state.touch(entry, now)
        for token in [t for t, tok in state.tokens.items() if tok.user == old]:
            del state.tokens[token]
        for channel in state.channels.values():
            if channel.cal_id == old:
                channel.cal_id = new
        return 200, self._user_json(user)

    def _add_fault(self, payload):
        kind = payload.get("kind") or "error"
        if kind not in ("error", "latency", "reset", "drop_response", "expire_sync_tokens", "short_page"):
            raise ValueError(f"unknown fault kind {kind}")
        fault = {
            "id": uuid.uuid4().hex[:12],
            "kind": kind,
            "method": payload.get("method"),
            "path_regex": payload.get("path_regex"),
            "status": payload.get("status"),
            "reason": payload.get("reason"),
            "message": payload.get("message"),
            "domain": payload.get("domain"),
            "count": payload.get("count"),
            "fraction": payload.get("fraction"),
            "latency_ms": payload.get("latency_ms"),
            "user": payload.get("user"),
            "client_id": payload.get("client_id"),
        }
        if fault["path_regex"]:
            re.compile(fault["path_regex"])
        if kind == "expire_sync_tokens":
            expired = []
            for cal in self.state.calendars.values():
                if not fault["user"] or cal.id == fault["user"].lower():
                    cal.sync_epoch += 1
                    expired.append(cal.id)
            fault["applied_to"] = expired
            return fault
        self.state.faults.append(fault)
        return fault

    def _stats(self):
        s = self.state
        return {
            "requests": dict(s.stats),
            "requests_total": sum(v for k, v in s.stats.items() if k != "batch"),
            "responses_by_status": dict(s.statuses),
            "emails_sent": s.emails_sent,
            "notifications_sent": s.notifications_sent,
            "notifications_delivered": self.notifier.delivered,
            "faults_triggered": s.faults_triggered,
        }

    def _clock(self):
        now = self.state.now()
        return {"now": fmt_updated(now), "offset_seconds": self.state.clock_offset}

    @staticmethod
    def _user_json(user):
        return {"email": user.email, "calendar_id": user.email, "time_zone": user.time_zone, "name": user.name}

    @staticmethod
    def _channel_json(c):
        return {"id": c.id, "resourceId": c.resource_id, "calendar": c.cal_id, "address": c.address,
                "expiration": str(to_ms(c.expiration)), "stopped": c.stopped,
                "message_number": c.message_number}

    def close(self):
        self.notifier.stop()


