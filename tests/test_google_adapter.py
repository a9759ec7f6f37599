"""The Google adapter against the emulator: service-account credentials with delegation, the per-user
token cache, batches on the configured URI, and the classification of Google's answers."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from googleapiclient.errors import HttpError

from portal.emulator.server import EmulatorServer
from portal.integration import parse_key_file
from portal.sync.google import (
    ERRORS,
    GOOGLE_SCOPES,
    CalendarClient,
    Endpoints,
    GoogleError,
    IntegrationError,
    ItemError,
    SigningKey,
    SyncTokenExpired,
    TokenCache,
    TransientError,
    UserError,
    classify,
    error_for,
)

SA_EMAIL = "portal-sync@acme-project.iam.gserviceaccount.com"
CLIENT_ID = "104857600000000000001"
USERS = ("anna@acme.test", "bram@acme.test")


@pytest.fixture(scope="module")
def emulator():
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def google(emulator):
    emulator.control("POST", "/reset")
    for email in USERS:
        emulator.add_user(email)
    account = emulator.add_service_account(client_id=CLIENT_ID, email=SA_EMAIL)
    emulator.delegate(CLIENT_ID, GOOGLE_SCOPES)
    emulator.account = account
    return emulator


@pytest.fixture
def endpoints(google):
    return Endpoints(token_uri=google.token_uri, api_endpoint=google.api_endpoint, batch_uri=google.batch_uri,
                     timeout=5)


def key_from(account, kind="p12") -> SigningKey:
    if kind == "p12":
        parsed = parse_key_file(base64.b64decode(account["p12_base64"]), account["password"])
    else:
        import json

        parsed = parse_key_file(json.dumps(account["json_key"]).encode())
    return SigningKey(service_account_email=account["email"], private_key_pem=parsed.private_key_pem,
                      key_id=parsed.key_id, jwt_key_id=parsed.jwt_key_id, fingerprint=parsed.fingerprint,
                      client_id=CLIENT_ID, project_id=parsed.project_id)


def token_requests(google) -> int:
    return google.stats()["requests"].get("oauth2.token", 0)


@pytest.mark.parametrize("kind", ["p12", "json"])
def test_reads_and_writes_a_users_calendar_through_delegation(google, endpoints, kind):
    client = CalendarClient(key_from(google.account, kind), "Anna@acme.test", endpoints, TokenCache())
    created = client.execute(client.service.events().insert(
        calendarId="primary", sendUpdates="none",
        body={"summary": "Planning", "start": {"dateTime": "2026-03-02T09:00:00+01:00"},
              "end": {"dateTime": "2026-03-02T10:00:00+01:00"}}), item=True)
    listed = client.execute(client.service.events().list(calendarId="primary"))
    assert [e["id"] for e in listed["items"]] == [created["id"]]
    info = client.read_primary_calendar()
    assert info.email == "anna@acme.test" and info.summary
    assert client.requests_made == 3


def test_one_token_per_user_until_shortly_before_expiry(google, endpoints):
    tokens = TokenCache()
    key = key_from(google.account)
    for _ in range(3):  # three cycles
        for email in USERS:
            CalendarClient(key, email, endpoints, tokens).read_primary_calendar()
    assert token_requests(google) == 2 and len(tokens) == 2
    # google-auth treats a token as stale 3m45s before it expires: then, and only then, a new one.
    credentials = tokens.credentials(key, USERS[0], endpoints)
    credentials.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=3)
    CalendarClient(key, USERS[0], endpoints, tokens).read_primary_calendar()
    assert token_requests(google) == 3


def test_a_new_key_never_reuses_the_old_keys_tokens(google, endpoints):
    tokens = TokenCache()
    old = key_from(google.account)
    CalendarClient(old, USERS[0], endpoints, tokens).read_primary_calendar()
    rotated = google.add_service_account(client_id=CLIENT_ID, email=SA_EMAIL)
    CalendarClient(key_from(rotated), USERS[0], endpoints, tokens).read_primary_calendar()
    assert token_requests(google) == 2
    tokens.forget(fingerprint=old.fingerprint)
    assert len(tokens) == 1
    tokens.forget()
    assert len(tokens) == 0


def test_batches_go_to_the_configured_batch_uri(google, endpoints):
    client = CalendarClient(key_from(google.account), USERS[0], endpoints, TokenCache())
    answers, failures = [], []

    def collect(request_id, response, exception):
        if exception is not None:
            failures.append(client.classify_item_error(exception))
        else:
            answers.append(response)

    batch = client.new_batch(collect)
    for n in range(3):
        batch.add(client.service.events().insert(calendarId="primary", body={
            "summary": f"Item {n}", "start": {"date": f"2026-03-0{n + 2}"},
            "end": {"date": f"2026-03-0{n + 3}"}}))
    batch.add(client.service.events().delete(calendarId="primary", eventId="doesnotexist00"))
    client.execute_batch(batch)
    assert len(answers) == 3
    assert [f.code for f in failures] == ["event_not_found"] and isinstance(failures[0], ItemError)
    assert google.stats()["requests"].get("batch") == 1


def test_batches_follow_an_api_endpoint_moved_without_a_batch_uri(google):
    # A set-up that points only GOOGLE_API_ENDPOINT at an emulator or a proxy sent single writes there and
    # every batch of two or more writes to www.googleapis.com.
    endpoints = Endpoints.from_config({"GOOGLE_TOKEN_URI": google.token_uri, "GOOGLE_API_ENDPOINT": google.api_endpoint,
                                       "GOOGLE_TIMEOUT": 5})
    assert endpoints.batch_uri == google.batch_uri
    client = CalendarClient(key_from(google.account), USERS[0], endpoints, TokenCache())
    batch = client.new_batch(lambda *args: None)
    for n in range(2):
        batch.add(client.service.events().insert(calendarId="primary", body={
            "summary": f"Item {n}", "start": {"date": f"2026-03-0{n + 2}"}, "end": {"date": f"2026-03-0{n + 3}"}}))
    client.execute_batch(batch)
    assert google.stats()["requests"].get("batch") == 1
    with_path = Endpoints.from_config({"GOOGLE_API_ENDPOINT": "https://proxy.example.com/google/calendar/v3/"})
    assert with_path.batch_uri == "https://proxy.example.com/google/batch/calendar/v3"
    explicit = Endpoints.from_config({"GOOGLE_API_ENDPOINT": "https://p.example.com", "GOOGLE_BATCH_URI": "https://b/x"})
    assert explicit.batch_uri == "https://b/x"
    assert Endpoints.from_config({}).batch_uri == "https://www.googleapis.com/batch/calendar/v3"


def test_endpoint_base_url():
    assert Endpoints().calendar_base_url == "https://www.googleapis.com/calendar/v3/"
    assert Endpoints(api_endpoint="http://127.0.0.1:9/").calendar_base_url == "http://127.0.0.1:9/calendar/v3/"
    assert Endpoints(api_endpoint="http://h/custom/v3").calendar_base_url == "http://h/custom/v3/"
    config = {"GOOGLE_TOKEN_URI": "http://t/token", "GOOGLE_SCOPES": ["s"], "GOOGLE_TIMEOUT": "3"}
    assert Endpoints.from_config(config) == Endpoints(token_uri="http://t/token", scopes=("s",), timeout=3.0)
    assert Endpoints.from_config({"GOOGLE_SCOPES": "a, b"}).scopes == ("a", "b")
    assert Endpoints.from_config({}).scopes == tuple(GOOGLE_SCOPES)


# --- classification ---------------------------------------------------------------------------------


def _fails(google, endpoints, key=None, subject=USERS[0], request=None, item=False) -> GoogleError:
    client = CalendarClient(key or key_from(google.account), subject, endpoints, TokenCache())
    with pytest.raises(GoogleError) as caught:
        client.execute((request or (lambda c: c.service.events().list(calendarId="primary")))(client), item=item)
    assert caught.value.cause and caught.value.fix and caught.value.code in ERRORS
    return caught.value


def test_token_errors(google, endpoints):
    stranger = _fails(google, endpoints, subject="stranger@acme.test")
    assert (type(stranger), stranger.code, stranger.reason) == (UserError, "unknown_user", "invalid_grant")
    assert "stranger@acme.test is not a user" in stranger.cause

    other = google.add_service_account(client_id="104857600000000000002", email="x@p.iam.gserviceaccount.com")
    wrong_key = key_from(other)
    wrong_key = SigningKey(SA_EMAIL, wrong_key.private_key_pem, key_id="k1", fingerprint="f1", client_id=CLIENT_ID)
    signature = _fails(google, endpoints, key=wrong_key)
    assert (type(signature), signature.code) == (IntegrationError, "invalid_jwt_signature")
    assert "Invalid JWT Signature." in signature.detail and "k1" in signature.fix

    unknown_account = SigningKey("ghost@p.iam.gserviceaccount.com", wrong_key.private_key_pem, fingerprint="f2")
    assert _fails(google, endpoints, key=unknown_account).code == "service_account_not_found"

    google.control("DELETE", "/delegations", {"client_id": CLIENT_ID})
    delegation = _fails(google, endpoints)
    assert (type(delegation), delegation.code, delegation.reason) == (
        IntegrationError, "delegation_missing", "unauthorized_client")
    assert CLIENT_ID in delegation.cause and ",".join(GOOGLE_SCOPES) in delegation.fix


@pytest.mark.parametrize(("fault", "cls", "code"), [
    ({"status": 403, "reason": "accessNotConfigured", "domain": "usageLimits"}, IntegrationError, "api_not_enabled"),
    ({"status": 403, "reason": "rateLimitExceeded"}, TransientError, "rate_limited"),
    ({"status": 429, "reason": "rateLimitExceeded"}, TransientError, "rate_limited"),
    ({"status": 503}, TransientError, "google_unavailable"),
    ({"status": 410, "reason": "fullSyncRequired"}, SyncTokenExpired, "sync_token_expired"),
    ({"status": 404}, UserError, "calendar_not_found"),
    ({"status": 403, "reason": "forbidden"}, UserError, "calendar_forbidden"),
    ({"status": 403, "reason": "insufficientPermissions"}, IntegrationError, "scopes_insufficient"),
    ({"status": 401, "reason": "authError"}, IntegrationError, "token_rejected"),
])
def test_calendar_errors_are_read_from_error_details(google, endpoints, fault, cls, code):
    google.add_fault(kind="error", path_regex="/events", **fault)
    error = _fails(google, endpoints)
    assert type(error) is cls and error.code == code and error.status == fault["status"]
    assert error.retryable == (cls is TransientError)
    assert error.as_dict()["level"] == cls.level


def test_token_endpoint_outage_is_transient():
    # google-auth itself retries these with backoff (seconds); its final answer is what is classified here.
    from google.auth.exceptions import RefreshError

    outage = RefreshError("internal_failure: Backend Error",
                          {"error": "internal_failure", "error_description": "Backend Error"}, retryable=True)
    error = classify(outage)
    assert isinstance(error, TransientError) and error.code == "google_unavailable"


def test_item_errors(google, endpoints):
    client = CalendarClient(key_from(google.account), USERS[0], endpoints, TokenCache())
    body = {"id": "portalitem000001", "summary": "Once", "start": {"date": "2026-03-02"},
            "end": {"date": "2026-03-03"}}
    client.execute(client.service.events().insert(calendarId="primary", body=body), item=True)
    duplicate = _fails(google, endpoints, item=True,
                       request=lambda c: c.service.events().insert(calendarId="primary", body=body))
    assert (type(duplicate), duplicate.code, duplicate.reason) == (ItemError, "duplicate", "duplicate")
    missing = _fails(google, endpoints, item=True,
                     request=lambda c: c.service.events().get(calendarId="primary", eventId="nothinghere0"))
    assert (type(missing), missing.code) == (ItemError, "event_not_found")
    invalid = _fails(google, endpoints, item=True, request=lambda c: c.service.events().insert(
        calendarId="primary", body={"summary": "no times"}))
    assert type(invalid) is ItemError and invalid.status == 400


def test_network_errors_are_transient(google, endpoints):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    refused = _fails(google, Endpoints(token_uri=closed + "/token", api_endpoint=closed, timeout=2))
    assert (type(refused), refused.code) == (TransientError, "unreachable")
    assert refused.cause.startswith("Google could not be reached")

    google.add_fault(kind="reset", path_regex="/events", count=1)
    reset = _fails(google, endpoints)
    assert type(reset) is TransientError and reset.code == "unreachable"

    google.add_fault(kind="latency", latency_ms=1500, path_regex="/events")
    slow = _fails(google, Endpoints(token_uri=google.token_uri, api_endpoint=google.api_endpoint, timeout=0.5))
    assert (type(slow), slow.code) == (TransientError, "timeout")


def test_every_catalogue_entry_renders():
    for code in ERRORS:
        error = error_for(code, subject="anna@acme.test", sa=SA_EMAIL, client_id=CLIENT_ID, detail="d")
        assert "{" not in error.cause + error.fix and error.code == code


def test_unknown_failures_are_still_classified():
    assert classify(ValueError("bad key")).code == "key_unreadable"
    assert classify(RuntimeError("?")).code == "google_error"

    class Resp(dict):
        status, reason = 418, "I'm a teapot"

    teapot = classify(HttpError(Resp(), b'{"error": {"message": "short and stout"}}'))
    assert teapot.code == "google_error" and "short and stout" in teapot.detail


def test_the_private_key_is_not_in_reprs(google):
    key = key_from(google.account)
    assert "PRIVATE" not in repr(key) and "PRIVATE" not in repr(parse_key_file(
        base64.b64decode(google.account["p12_base64"])))
