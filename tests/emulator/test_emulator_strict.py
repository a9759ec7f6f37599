"""Where Google is stricter than a naive emulator: each test follows the reference (calendar.v3.json's
descriptions and Google's guides) and goes through the real Google client only."""

import pytest
from googleapiclient.errors import HttpError


def refused(call):
    with pytest.raises(HttpError) as info:
        call.execute()
    err = info.value
    return err.resp.status, err.error_details[0]["reason"], err.error_details[0]["message"]


@pytest.fixture
def alice(workspace):
    email = workspace.user("alice", "Europe/Amsterdam")
    return email, workspace.service(email)


# -- 1. events.patch merges nested objects --------------------------------------------------------

def test_patch_merges_start_so_switching_to_all_day_needs_null(alice, when):
    _, svc = alice
    ev = svc.events().insert(calendarId="primary",
                             body={"summary": "Timed", **when("2024-05-01T10:00", tz="Europe/Amsterdam")}).execute()
    status, _, _ = refused(svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "start": {"date": "2024-05-01"}, "end": {"date": "2024-05-02"}}))
    assert status == 400
    assert svc.events().get(calendarId="primary", eventId=ev["id"]).execute()["start"] == ev["start"]

    day = svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "start": {"date": "2024-05-01", "dateTime": None, "timeZone": None},
        "end": {"date": "2024-05-02", "dateTime": None, "timeZone": None}}).execute()
    assert day["start"] == {"date": "2024-05-01"} and day["end"] == {"date": "2024-05-02"}

    status, _, _ = refused(svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "start": {"dateTime": "2024-05-01T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2024-05-01T11:00:00", "timeZone": "UTC"}}))
    assert status == 400
    back = svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "start": {"dateTime": "2024-05-01T10:00:00", "timeZone": "UTC", "date": None},
        "end": {"dateTime": "2024-05-01T11:00:00", "timeZone": "UTC", "date": None}}).execute()
    assert back["start"] == {"dateTime": "2024-05-01T10:00:00Z", "timeZone": "UTC"}


def test_patch_of_date_time_alone_keeps_the_time_zone(alice):
    _, svc = alice
    ev = svc.events().insert(calendarId="primary", body={
        "summary": "Zoned", "start": {"dateTime": "2024-05-01T10:00:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2024-05-01T11:00:00", "timeZone": "America/New_York"}}).execute()
    moved = svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "start": {"dateTime": "2024-05-01T16:00:00Z"}, "end": {"dateTime": "2024-05-01T17:00:00Z"}}).execute()
    assert moved["start"] == {"dateTime": "2024-05-01T12:00:00-04:00", "timeZone": "America/New_York"}


def test_patch_merges_reminders_and_refuses_default_beside_overrides(alice, when):
    _, svc = alice
    ev = svc.events().insert(calendarId="primary", body={
        "summary": "Remind me", **when("2024-05-01T10:00"),
        "reminders": {"useDefault": False, "overrides": [{"method": "popup", "minutes": 15}]}}).execute()
    status, _, message = refused(svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "reminders": {"useDefault": True}}))
    assert status == 400 and "both default reminders and overrides" in message
    ok = svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "reminders": {"useDefault": True, "overrides": None}}).execute()
    assert ok["reminders"] == {"useDefault": True}
    # update replaces the object whole
    replaced = svc.events().update(calendarId="primary", eventId=ev["id"], body={
        "summary": "Remind me", **when("2024-05-01T10:00"),
        "reminders": {"useDefault": False, "overrides": [{"method": "email", "minutes": 60}]}}).execute()
    assert replaced["reminders"] == {"useDefault": False, "overrides": [{"method": "email", "minutes": 60}]}


def test_patch_with_null_removes_a_field(alice, when):
    _, svc = alice
    ev = svc.events().insert(calendarId="primary", body={"summary": "S", "location": "Room",
                                                         **when("2024-05-01T10:00")}).execute()
    patched = svc.events().patch(calendarId="primary", eventId=ev["id"], body={"location": None}).execute()
    assert "location" not in patched and patched["summary"] == "S"


# -- 5. requests Google refuses ---------------------------------------------------------------------

def test_more_than_five_reminder_overrides_are_refused(alice, when):
    _, svc = alice
    six = [{"method": "popup", "minutes": m} for m in range(6)]
    status, _, message = refused(svc.events().insert(calendarId="primary", body={
        "summary": "Too many", **when("2024-05-01T10:00"), "reminders": {"useDefault": False, "overrides": six}}))
    assert status == 400 and "5" in message


# -- 3. what cancelled events carry, and where they are listed ------------------------------------

def test_a_deleted_event_keeps_its_details_for_the_organizer(alice, when):
    _, svc = alice
    first = svc.events().list(calendarId="primary").execute()
    ev = svc.events().insert(calendarId="primary", body={"summary": "Gone", **when("2024-05-01T10:00")}).execute()
    svc.events().delete(calendarId="primary", eventId=ev["id"]).execute()
    changes = svc.events().list(calendarId="primary", syncToken=first["nextSyncToken"]).execute()["items"]
    [gone] = [e for e in changes if e["id"] == ev["id"]]
    assert gone["status"] == "cancelled" and gone["summary"] == "Gone" and "start" in gone


def test_cancelled_instances_are_listed_even_without_show_deleted(alice):
    _, svc = alice
    series = svc.events().insert(calendarId="primary", body={
        "summary": "Weekly", "start": {"dateTime": "2024-05-06T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2024-05-06T10:00:00", "timeZone": "UTC"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"]}).execute()
    svc.events().delete(calendarId="primary", eventId=series["id"] + "_20240513T090000Z").execute()
    items = svc.events().list(calendarId="primary", singleEvents=False, showDeleted=False).execute()["items"]
    cancelled = [e for e in items if e["status"] == "cancelled"]
    assert [e["id"] for e in cancelled] == [series["id"] + "_20240513T090000Z"]
    assert set(cancelled[0]) >= {"id", "recurringEventId", "originalStartTime"}
    # expanded, without deleted ones: the day is simply missing
    single = svc.events().list(calendarId="primary", singleEvents=True, showDeleted=False).execute()["items"]
    assert len(single) == 3 and all(e["status"] == "confirmed" for e in single)


# -- 5. more requests Google refuses -----------------------------------------------------------------

def test_a_sync_token_with_show_deleted_false_is_refused(alice):
    _, svc = alice
    token = svc.events().list(calendarId="primary").execute()["nextSyncToken"]
    status, reason, _ = refused(svc.events().list(calendarId="primary", syncToken=token, showDeleted=False))
    assert (status, reason) == (400, "invalid")
    assert "items" in svc.events().list(calendarId="primary", syncToken=token, showDeleted=True).execute()


def test_plain_http_web_hooks_are_refused_unless_the_emulator_allows_them(workspace):
    from portal.emulator.server import EmulatorServer

    with EmulatorServer() as strict:
        sa = strict.add_service_account()
        strict.delegate(sa["client_id"], ["https://www.googleapis.com/auth/calendar"])
        strict.add_user("bob@example.com")
        token = strict.control("POST", "/tokens", {"user": "bob@example.com"})["access_token"]
        from google.oauth2.credentials import Credentials
        from googleapiclient.discovery import build

        svc = build("calendar", "v3", credentials=Credentials(token), static_discovery=True,
                    cache_discovery=False, client_options={"api_endpoint": strict.base_url})
        status, reason, message = refused(svc.events().watch(calendarId="primary", body={
            "id": "chan-1", "type": "web_hook", "address": "http://portal.example.com/hook"}))
        assert (status, reason) == (400, "push.webhookUrlNotHttps") and "HTTPS" in message
        ok = svc.events().watch(calendarId="primary", body={
            "id": "chan-2", "type": "web_hook", "address": "https://portal.example.com/hook"}).execute()
        assert ok["id"] == "chan-2"
