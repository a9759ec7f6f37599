"""Batch requests, push notifications (web hooks) and fault injection."""

import http.client
import socket
import time
import uuid

import httplib2
import pytest
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest


@pytest.fixture
def alice(workspace):
    email = workspace.user("alice")
    return email, workspace.service(email)


# -- batch --------------------------------------------------------------------------------------

def test_batch_dispatches_each_part(alice, emulator, when):
    _, svc = alice
    results = {}

    def callback(request_id, response, exception):
        results[request_id] = (response, exception)

    existing = svc.events().insert(calendarId="primary", body={"summary": "x", **when("2024-07-01T10:00")}).execute()
    doomed = svc.events().insert(calendarId="primary", body={"summary": "z", **when("2024-07-01T12:00")}).execute()
    before = emulator.stats()["requests"]
    batch = BatchHttpRequest(callback=callback, batch_uri=emulator.batch_uri)
    for i in range(3):
        batch.add(svc.events().insert(calendarId="primary", body={"id": f"batch{i}aaaa",
                                                                  **when(f"2024-07-0{i + 2}T10:00")}))
    batch.add(svc.events().get(calendarId="primary", eventId="missing0000"))
    batch.add(svc.events().patch(calendarId="primary", eventId=existing["id"], body={"summary": "y"}))
    # Inner requests run in any order (batch guide), so no two of them touch the same event.
    batch.add(svc.events().delete(calendarId="primary", eventId=doomed["id"]))
    batch.execute()
    assert [results[str(i)][0]["id"] for i in (1, 2, 3)] == ["batch0aaaa", "batch1aaaa", "batch2aaaa"]
    response, error = results["4"]
    assert response is None and error.resp.status == 404
    assert error.error_details[0]["reason"] == "notFound"
    assert results["5"][0]["summary"] == "y"
    assert results["6"] == ("", None) or results["6"][1] is None
    after = emulator.stats()["requests"]
    assert after["batch"] == before.get("batch", 0) + 1
    assert after["calendar.events.insert"] == before["calendar.events.insert"] + 3
    ids = {i["id"] for i in svc.events().list(calendarId="primary").execute()["items"]}
    assert ids == {"batch0aaaa", "batch1aaaa", "batch2aaaa", existing["id"]}


def test_batch_parts_get_faults_individually(alice, emulator, when):
    _, svc = alice
    emulator.add_fault(method="POST", path_regex=r"/events$", status=503, count=1)
    results = {}
    batch = BatchHttpRequest(callback=lambda rid, resp, exc: results.__setitem__(rid, exc),
                             batch_uri=emulator.batch_uri)
    for i in range(2):
        batch.add(svc.events().insert(calendarId="primary", body=when(f"2024-07-0{i + 1}T10:00")))
    batch.execute()
    # The fault strikes the first part the server runs, whichever that is.
    failed = [rid for rid, exc in results.items() if exc is not None]
    assert len(failed) == 1 and results[failed[0]].resp.status == 503
    assert results[failed[0]].error_details[0]["reason"] == "backendError"


# -- push ---------------------------------------------------------------------------------------

def test_watch_sends_sync_then_exists(alice, emulator, receiver, when):
    email, svc = alice
    channel_id = str(uuid.uuid4())
    channel = svc.events().watch(calendarId="primary", body={
        "id": channel_id, "type": "web_hook", "address": receiver.url, "token": "secret-token",
        "params": {"ttl": "3600"}}).execute()
    assert channel["kind"] == "api#channel" and channel["id"] == channel_id
    assert channel["resourceId"] and channel["resourceUri"]
    assert int(channel["expiration"]) > time.time() * 1000
    first = receiver.wait_for(1)[0]
    assert first["X-Goog-Resource-State"] == "sync"
    assert first["X-Goog-Message-Number"] == "1"
    assert first["X-Goog-Channel-ID"] == channel_id
    assert first["X-Goog-Channel-Token"] == "secret-token"
    assert first["X-Goog-Resource-ID"] == channel["resourceId"]
    assert first["X-Goog-Resource-URI"] == channel["resourceUri"]
    assert first["X-Goog-Channel-Expiration"].endswith("GMT")

    svc.events().insert(calendarId="primary", body=when("2024-07-01T10:00")).execute()
    second = receiver.wait_for(2)[1]
    assert second["X-Goog-Resource-State"] == "exists"
    assert second["X-Goog-Message-Number"] == "2"

    svc.channels().stop(body={"id": channel_id, "resourceId": channel["resourceId"]}).execute()
    svc.events().insert(calendarId="primary", body=when("2024-07-02T10:00")).execute()
    emulator.app.notifier.drain()
    time.sleep(0.1)
    assert len(receiver.received) == 2
    with pytest.raises(HttpError) as info:
        svc.channels().stop(body={"id": channel_id, "resourceId": channel["resourceId"]}).execute()
    assert info.value.resp.status == 404


def test_attendee_copy_changes_notify_attendee_channel(workspace, receiver, when):
    alice, bob = workspace.user("alice"), workspace.user("bob")
    a_svc, b_svc = workspace.service(alice), workspace.service(bob)
    b_svc.events().watch(calendarId="primary", body={"id": str(uuid.uuid4()), "type": "web_hook",
                                                     "address": receiver.url}).execute()
    receiver.wait_for(1)
    a_svc.events().insert(calendarId="primary", body={**when("2024-07-01T10:00"), "attendees": [{"email": bob}]}).execute()
    assert receiver.wait_for(2)[1]["X-Goog-Resource-State"] == "exists"


def test_channels_expire(alice, emulator, receiver, when):
    _, svc = alice
    svc.events().watch(calendarId="primary", body={"id": str(uuid.uuid4()), "type": "web_hook",
                                                   "address": receiver.url, "params": {"ttl": "60"}}).execute()
    receiver.wait_for(1)
    emulator.advance_clock(61)
    svc.events().insert(calendarId="primary", body=when("2024-07-01T10:00")).execute()
    emulator.app.notifier.drain()
    time.sleep(0.1)
    assert len(receiver.received) == 1


# -- faults -------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, reason, domain", [
    (500, "backendError", "global"),
    (503, "backendError", "global"),
    (403, "rateLimitExceeded", "usageLimits"),
    (429, "rateLimitExceeded", "usageLimits"),
    (403, "quotaExceeded", "usageLimits"),
    (403, "userRateLimitExceeded", "usageLimits"),
])
def test_error_faults_use_googles_body(alice, emulator, status, reason, domain):
    _, svc = alice
    emulator.add_fault(method="GET", path_regex="/events$", status=status, reason=reason, count=1)
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary").execute()
    assert info.value.resp.status == status
    assert info.value.error_details[0]["reason"] == reason
    assert info.value.error_details[0]["domain"] == domain
    svc.events().list(calendarId="primary").execute()  # count=1: the next call succeeds


def test_client_retries_through_transient_errors(alice, emulator):
    _, svc = alice
    emulator.add_fault(method="GET", path_regex="/events$", status=503, count=2)
    request = svc.events().list(calendarId="primary")
    request._sleep = lambda seconds: None  # skip the client's exponential back-off
    request.execute(num_retries=3)
    assert emulator.stats()["responses_by_status"]["503"] >= 2


def test_fraction_fault(alice, emulator):
    _, svc = alice
    emulator.add_fault(method="GET", path_regex="/calendars/[^/]+$", status=500, fraction=0.5)
    outcomes = []
    for _ in range(30):
        try:
            svc.calendars().get(calendarId="primary").execute()
            outcomes.append(True)
        except HttpError:
            outcomes.append(False)
    emulator.clear_faults()
    assert any(outcomes) and not all(outcomes)


def test_fault_for_one_user_only(workspace, emulator):
    alice, bob = workspace.user("alice"), workspace.user("bob")
    a_svc, b_svc = workspace.service(alice), workspace.service(bob)
    a_svc.events().list(calendarId="primary").execute()
    b_svc.events().list(calendarId="primary").execute()
    emulator.add_fault(user=bob, status=503)
    a_svc.events().list(calendarId="primary").execute()
    with pytest.raises(HttpError):
        b_svc.events().list(calendarId="primary").execute()
    emulator.clear_faults()


def test_latency_fault(alice, emulator):
    _, svc = alice
    svc.events().list(calendarId="primary").execute()
    emulator.add_fault(kind="latency", latency_ms=300, count=1)
    started = time.monotonic()
    svc.events().list(calendarId="primary").execute()
    assert time.monotonic() - started >= 0.3


CONNECTION_ERRORS = (ConnectionError, http.client.HTTPException, httplib2.HttpLib2Error, socket.error)


def test_connection_reset(alice, emulator):
    _, svc = alice
    svc.events().list(calendarId="primary").execute()
    emulator.add_fault(kind="reset", method="GET", count=1)
    with pytest.raises(CONNECTION_ERRORS):
        svc.events().list(calendarId="primary").execute()
    svc.events().list(calendarId="primary").execute()


def test_drop_response_applies_the_write(alice, emulator, when):
    email, svc = alice
    svc.events().list(calendarId="primary").execute()
    emulator.add_fault(kind="drop_response", method="POST", path_regex="/events$", count=1)
    body = {"id": "dropped0001", "summary": "written", **when("2024-07-01T10:00")}
    with pytest.raises(CONNECTION_ERRORS):
        svc.events().insert(calendarId="primary", body=body).execute()
    raw = emulator.control("GET", f"/users/{email}/events")
    assert [i["id"] for i in raw["items"]] == ["dropped0001"]
    # The client's retry of the same insert finds the event already there.
    with pytest.raises(HttpError) as info:
        svc.events().insert(calendarId="primary", body=body).execute()
    assert info.value.resp.status == 409


def test_fault_for_one_service_account_spares_the_persons_own_requests(alice, workspace, emulator, when):
    email, svc = alice
    person = workspace.person(email)
    emulator.add_fault(status=503, client_id=workspace.sa["client_id"], path_regex="/events$")
    try:
        body = {"summary": "by hand", **when("2024-07-01T10:00")}
        assert person.events().insert(calendarId="primary", body=body).execute()["summary"] == "by hand"
        with pytest.raises(HttpError) as info:
            svc.events().list(calendarId="primary").execute()
        assert info.value.resp.status == 503
    finally:
        emulator.clear_faults()


def test_faults_listing_and_clearing(emulator):
    emulator.clear_faults()
    fault = emulator.add_fault(status=500, path_regex="/never-matches$")
    assert [f["id"] for f in emulator.control("GET", "/faults")["faults"]] == [fault["id"]]
    emulator.control("DELETE", f"/faults/{fault['id']}")
    assert emulator.control("GET", "/faults")["faults"] == []


def test_token_endpoint_fault_is_retried_by_google_auth(workspace, emulator):
    alice = workspace.user("alice")
    emulator.add_fault(path_regex="^/token$", status=503, count=1)
    before = emulator.stats()["requests"].get("oauth2.token", 0)
    workspace.service(alice).events().list(calendarId="primary").execute()
    assert emulator.stats()["requests"]["oauth2.token"] == before + 2
