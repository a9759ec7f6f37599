"""Calendar API events: CRUD, client ids, etags, validation, list filters and paging."""

import re

import pytest
from googleapiclient.errors import HttpError

UPDATED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def http_error(call):
    with pytest.raises(HttpError) as info:
        call.execute()
    err = info.value
    return err.resp.status, err.error_details[0]["reason"] if isinstance(err.error_details, list) else None


@pytest.fixture
def alice(workspace):
    email = workspace.user("alice", "Europe/Amsterdam")
    return email, workspace.service(email)


def test_insert_get_patch_update_delete(alice, when):
    email, svc = alice
    body = {"summary": "Kick-off", "description": "d", "location": "Room 1", "visibility": "private",
            **when("2024-05-01T10:00", tz="Europe/Amsterdam"),
            "extendedProperties": {"private": {"portal_id": "7"}, "shared": {"project": "p1"}}}
    ev = svc.events().insert(calendarId="primary", body=body).execute()
    assert ev["kind"] == "calendar#event"
    assert ev["status"] == "confirmed"
    assert re.match(r"^[a-v0-9]{5,1024}$", ev["id"])
    assert ev["iCalUID"] == ev["id"] + "@google.com"
    assert ev["etag"].startswith('"') and ev["etag"].endswith('"')
    assert UPDATED.match(ev["created"]) and UPDATED.match(ev["updated"])
    assert ev["organizer"] == {"email": email, "self": True}
    assert ev["creator"] == {"email": email, "self": True}
    assert ev["start"] == {"dateTime": "2024-05-01T10:00:00+02:00", "timeZone": "Europe/Amsterdam"}
    assert ev["visibility"] == "private"
    assert ev["extendedProperties"] == {"private": {"portal_id": "7"}, "shared": {"project": "p1"}}
    assert ev["reminders"] == {"useDefault": True}
    assert ev["sequence"] == 0

    got = svc.events().get(calendarId=email, eventId=ev["id"]).execute()
    assert got == ev

    patched = svc.events().patch(calendarId="primary", eventId=ev["id"],
                                 body={"summary": "Kick-off 2",
                                       "extendedProperties": {"private": {"extra": "x"}}}).execute()
    assert patched["summary"] == "Kick-off 2"
    assert patched["location"] == "Room 1"
    assert patched["extendedProperties"]["private"] == {"portal_id": "7", "extra": "x"}
    assert patched["etag"] != ev["etag"]
    assert patched["updated"] >= ev["updated"]
    assert patched["sequence"] == 0

    moved = svc.events().patch(calendarId="primary", eventId=ev["id"],
                               body=when("2024-05-01T11:00", tz="Europe/Amsterdam")).execute()
    assert moved["sequence"] == 1

    updated = svc.events().update(calendarId="primary", eventId=ev["id"],
                                  body={"summary": "Replaced", **when("2024-05-02T10:00")}).execute()
    assert updated["summary"] == "Replaced"
    assert "location" not in updated and "extendedProperties" not in updated
    assert updated["start"] == {"dateTime": "2024-05-02T12:00:00+02:00"}

    svc.events().delete(calendarId="primary", eventId=ev["id"]).execute()
    gone = svc.events().get(calendarId="primary", eventId=ev["id"]).execute()
    assert gone["status"] == "cancelled"
    assert http_error(svc.events().delete(calendarId="primary", eventId=ev["id"])) == (410, "deleted")
    assert http_error(svc.events().get(calendarId="primary", eventId="doesnotexist")) == (404, "notFound")


def test_client_supplied_ids(alice, when):
    _, svc = alice
    ev = svc.events().insert(calendarId="primary", body={"id": "portal0001abc", **when("2024-05-01T10:00")}).execute()
    assert ev["id"] == "portal0001abc"
    assert http_error(svc.events().insert(
        calendarId="primary", body={"id": "portal0001abc", **when("2024-05-01T10:00")})) == (409, "duplicate")
    for bad in ("UPPER00001", "abc", "has-dash-0001", "wxyz00001"):
        assert http_error(svc.events().insert(
            calendarId="primary", body={"id": bad, **when("2024-05-01T10:00")})) == (400, "invalid")
    svc.events().delete(calendarId="primary", eventId="portal0001abc").execute()
    # A deleted event's id stays taken.
    assert http_error(svc.events().insert(
        calendarId="primary", body={"id": "portal0001abc", **when("2024-05-01T10:00")})) == (409, "duplicate")


def test_if_match_etag(alice, when):
    _, svc = alice
    ev = svc.events().insert(calendarId="primary", body={"summary": "a", **when("2024-05-01T10:00")}).execute()
    fresh = svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "b"}).execute()
    stale = svc.events().update(calendarId="primary", eventId=ev["id"], body={"summary": "c", **when("2024-05-01T10:00")})
    stale.headers["If-Match"] = ev["etag"]
    assert http_error(stale) == (412, "conditionNotMet")
    stale_patch = svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "c"})
    stale_patch.headers["If-Match"] = ev["etag"]
    assert http_error(stale_patch) == (412, "conditionNotMet")
    stale_delete = svc.events().delete(calendarId="primary", eventId=ev["id"])
    stale_delete.headers["If-Match"] = ev["etag"]
    assert http_error(stale_delete) == (412, "conditionNotMet")
    ok = svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "c"})
    ok.headers["If-Match"] = fresh["etag"]
    assert ok.execute()["summary"] == "c"


def test_all_day_event(alice):
    _, svc = alice
    ev = svc.events().insert(calendarId="primary", body={
        "summary": "Holiday", "start": {"date": "2024-05-01"}, "end": {"date": "2024-05-03"},
        "visibility": "public", "transparency": "transparent"}).execute()
    assert ev["start"] == {"date": "2024-05-01"} and ev["end"] == {"date": "2024-05-03"}
    assert ev["visibility"] == "public"
    items = svc.events().list(calendarId="primary", timeMin="2024-05-02T12:00:00Z",
                              timeMax="2024-05-02T13:00:00Z").execute()["items"]
    assert [i["id"] for i in items] == [ev["id"]]
    # The end date is exclusive.
    assert svc.events().list(calendarId="primary", timeMin="2024-05-03T00:00:00Z",
                             timeMax="2024-05-04T00:00:00Z").execute()["items"] == []


@pytest.mark.parametrize("body, expected", [
    ({"start": {"dateTime": "2024-05-01T10:00:00Z"}}, (400, "required")),
    ({"end": {"dateTime": "2024-05-01T10:00:00Z"}}, (400, "required")),
    ({"start": {"dateTime": "2024-05-01T10:00:00Z"}, "end": {"dateTime": "2024-05-01T09:00:00Z"}},
     (400, "timeRangeEmpty")),
    ({"start": {"dateTime": "2024-05-01T10:00:00"}, "end": {"dateTime": "2024-05-01T11:00:00"}}, (400, "required")),
    ({"start": {"dateTime": "2024-05-01T10:00:00Z"}, "end": {"dateTime": "2024-05-01T11:00:00Z"},
      "recurrence": ["RRULE:FREQ=DAILY"]}, (400, "required")),
    ({"start": {"dateTime": "2024-05-01T10:00:00", "timeZone": "UTC"},
      "end": {"dateTime": "2024-05-01T11:00:00", "timeZone": "UTC"},
      "recurrence": ["DTSTART:20240501T100000Z", "RRULE:FREQ=DAILY"]}, (400, "invalid")),
    ({"start": {"dateTime": "2024-05-01T10:00:00Z"}, "end": {"dateTime": "2024-05-01T11:00:00Z"},
      "visibility": "secret"}, (400, "invalid")),
    ({"start": {"date": "2024-05-01"}, "end": {"dateTime": "2024-05-01T11:00:00Z"}}, (400, "invalid")),
])
def test_validation(alice, body, expected):
    _, svc = alice
    assert http_error(svc.events().insert(calendarId="primary", body=body)) == expected


def test_paging(alice, when):
    _, svc = alice
    ids = {svc.events().insert(calendarId="primary", body={"summary": f"e{i}", **when(f"2024-06-{i + 1:02d}T10:00")})
           .execute()["id"] for i in range(7)}
    seen, pages, token = [], 0, None
    while True:
        page = svc.events().list(calendarId="primary", maxResults=3, pageToken=token).execute()
        pages += 1
        seen += [i["id"] for i in page["items"]]
        token = page.get("nextPageToken")
        if not token:
            assert page["nextSyncToken"]
            break
        assert "nextSyncToken" not in page
        assert len(page["items"]) == 3
    assert pages == 3 and sorted(seen) == sorted(ids)
    assert http_error(svc.events().list(calendarId="primary", maxResults=0)) == (400, "invalid")


def test_time_range_bounds_end_and_start(alice, when):
    _, svc = alice
    spanning = svc.events().insert(calendarId="primary", body={"summary": "span", **when("2024-06-01T09:00", 120)}).execute()
    starts_at_max = svc.events().insert(calendarId="primary", body={"summary": "late", **when("2024-06-01T12:00")}).execute()
    ends_at_min = svc.events().insert(calendarId="primary", body={"summary": "early", **when("2024-06-01T09:00", 60)}).execute()
    items = svc.events().list(calendarId="primary", timeMin="2024-06-01T10:00:00Z",
                              timeMax="2024-06-01T12:00:00Z").execute()["items"]
    ids = {i["id"] for i in items}
    assert spanning["id"] in ids
    assert starts_at_max["id"] not in ids and ends_at_min["id"] not in ids
    assert http_error(svc.events().list(calendarId="primary", timeMin="2024-06-02T00:00:00Z",
                                        timeMax="2024-06-01T00:00:00Z")) == (400, "timeRangeEmpty")


def test_extended_property_filters_q_and_order(alice, when):
    _, svc = alice
    a = svc.events().insert(calendarId="primary", body={
        "summary": "Alpha review", **when("2024-06-03T10:00"),
        "extendedProperties": {"private": {"portal": "1"}, "shared": {"kind": "meeting"}}}).execute()
    b = svc.events().insert(calendarId="primary", body={
        "summary": "Beta", **when("2024-06-02T10:00"),
        "extendedProperties": {"private": {"portal": "2"}, "shared": {"kind": "meeting"}}}).execute()
    listing = svc.events().list(calendarId="primary", privateExtendedProperty="portal=1").execute()
    assert [i["id"] for i in listing["items"]] == [a["id"]]
    listing = svc.events().list(calendarId="primary", sharedExtendedProperty="kind=meeting",
                                singleEvents=True, orderBy="startTime").execute()
    assert [i["id"] for i in listing["items"]] == [b["id"], a["id"]]
    assert [i["id"] for i in svc.events().list(calendarId="primary", q="alpha").execute()["items"]] == [a["id"]]
    assert http_error(svc.events().list(calendarId="primary", orderBy="startTime")) == (400, "invalid")
    assert [i["id"] for i in svc.events().list(calendarId="primary", iCalUID=b["iCalUID"]).execute()["items"]] \
        == [b["id"]]


def test_show_deleted_and_updated_min(alice, when):
    _, svc = alice
    keep = svc.events().insert(calendarId="primary", body={"summary": "keep", **when("2024-06-03T10:00")}).execute()
    drop = svc.events().insert(calendarId="primary", body={"summary": "drop", **when("2024-06-03T12:00")}).execute()
    svc.events().delete(calendarId="primary", eventId=drop["id"]).execute()
    plain = svc.events().list(calendarId="primary").execute()["items"]
    assert [i["id"] for i in plain] == [keep["id"]]
    with_deleted = svc.events().list(calendarId="primary", showDeleted=True).execute()["items"]
    assert {i["id"]: i["status"] for i in with_deleted} == {keep["id"]: "confirmed", drop["id"]: "cancelled"}
    since = svc.events().list(calendarId="primary", updatedMin=keep["updated"]).execute()["items"]
    assert drop["id"] in {i["id"] for i in since}


def test_calendar_get(alice):
    email, svc = alice
    cal = svc.calendars().get(calendarId="primary").execute()
    assert cal["kind"] == "calendar#calendar"
    assert cal["id"] == email and cal["timeZone"] == "Europe/Amsterdam"
