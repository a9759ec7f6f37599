"""Recurring events: expansion across DST, instance ids, exceptions, EXDATE/RDATE, incremental lists."""

import pytest
from googleapiclient.errors import HttpError

AMS = "Europe/Amsterdam"


@pytest.fixture
def alice(workspace):
    email = workspace.user("alice", AMS)
    return email, workspace.service(email)


def weekly_series(svc, count=3, extra=()):
    # Mondays 09:00 Amsterdam; DST starts on the last Sunday of March (2024-03-31).
    return svc.events().insert(calendarId="primary", body={
        "summary": "Stand-up",
        "start": {"dateTime": "2024-03-25T09:00:00", "timeZone": AMS},
        "end": {"dateTime": "2024-03-25T09:30:00", "timeZone": AMS},
        "recurrence": [f"RRULE:FREQ=WEEKLY;COUNT={count}", *extra],
    }).execute()


def test_weekly_across_dst_keeps_wall_clock(alice):
    _, svc = alice
    series = weekly_series(svc)
    assert series["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=3"]
    items = svc.events().list(calendarId="primary", singleEvents=True, orderBy="startTime").execute()["items"]
    assert [i["id"] for i in items] == [
        series["id"] + "_20240325T080000Z",  # CET, UTC+1
        series["id"] + "_20240401T070000Z",  # CEST, UTC+2
        series["id"] + "_20240408T070000Z",
    ]
    assert [i["start"]["dateTime"] for i in items] == [
        "2024-03-25T09:00:00+01:00", "2024-04-01T09:00:00+02:00", "2024-04-08T09:00:00+02:00"]
    assert [i["end"]["dateTime"] for i in items] == [
        "2024-03-25T09:30:00+01:00", "2024-04-01T09:30:00+02:00", "2024-04-08T09:30:00+02:00"]
    second = items[1]
    assert second["recurringEventId"] == series["id"]
    assert second["originalStartTime"] == {"dateTime": "2024-04-01T09:00:00+02:00", "timeZone": AMS}
    assert second["iCalUID"] == series["iCalUID"]
    assert "recurrence" not in second
    instances = svc.events().instances(calendarId="primary", eventId=series["id"]).execute()["items"]
    assert [i["id"] for i in instances] == [i["id"] for i in items]
    got = svc.events().get(calendarId="primary", eventId=series["id"] + "_20240401T070000Z").execute()
    assert got["start"]["dateTime"] == "2024-04-01T09:00:00+02:00"
    with pytest.raises(HttpError) as info:
        svc.events().get(calendarId="primary", eventId=series["id"] + "_20240402T070000Z").execute()
    assert info.value.resp.status == 404


def test_exdate_rdate_and_until(alice):
    _, svc = alice
    series = weekly_series(svc, count=4, extra=("EXDATE;TZID=Europe/Amsterdam:20240401T090000",
                                                "RDATE;TZID=Europe/Amsterdam:20240403T090000"))
    ids = [i["id"] for i in svc.events().instances(calendarId="primary", eventId=series["id"]).execute()["items"]]
    assert ids == [series["id"] + s for s in ("_20240325T080000Z", "_20240403T070000Z", "_20240408T070000Z",
                                              "_20240415T070000Z")]
    until = svc.events().insert(calendarId="primary", body={
        "start": {"dateTime": "2024-03-25T09:00:00", "timeZone": AMS},
        "end": {"dateTime": "2024-03-25T10:00:00", "timeZone": AMS},
        "recurrence": ["RRULE:FREQ=DAILY;UNTIL=20240327T235959Z"]}).execute()
    assert len(svc.events().instances(calendarId="primary", eventId=until["id"]).execute()["items"]) == 3


def test_all_day_series_instance_ids(alice):
    _, svc = alice
    series = svc.events().insert(calendarId="primary", body={
        "summary": "Holiday", "start": {"date": "2024-12-30"}, "end": {"date": "2024-12-31"},
        "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"]}).execute()
    items = svc.events().instances(calendarId="primary", eventId=series["id"]).execute()["items"]
    assert [i["id"] for i in items] == [series["id"] + s for s in ("_20241230", "_20241231", "_20250101")]
    assert items[2]["start"] == {"date": "2025-01-01"} and items[2]["end"] == {"date": "2025-01-02"}
    assert items[2]["originalStartTime"] == {"date": "2025-01-01"}


def test_modified_and_cancelled_instances_are_exceptions(alice):
    _, svc = alice
    series = weekly_series(svc)
    listing = svc.events().list(calendarId="primary").execute()
    token = listing["nextSyncToken"]
    moved_id = series["id"] + "_20240401T070000Z"
    moved = svc.events().patch(calendarId="primary", eventId=moved_id, body={
        "summary": "Stand-up (moved)",
        "start": {"dateTime": "2024-04-01T10:00:00", "timeZone": AMS},
        "end": {"dateTime": "2024-04-01T10:30:00", "timeZone": AMS}}).execute()
    assert moved["id"] == moved_id
    assert moved["recurringEventId"] == series["id"]
    assert moved["originalStartTime"]["dateTime"] == "2024-04-01T09:00:00+02:00"
    assert moved["start"]["dateTime"] == "2024-04-01T10:00:00+02:00"
    cancelled_id = series["id"] + "_20240408T070000Z"
    svc.events().delete(calendarId="primary", eventId=cancelled_id).execute()

    singles = svc.events().list(calendarId="primary", singleEvents=True, orderBy="startTime").execute()["items"]
    assert [(i["id"], i.get("summary")) for i in singles] == [
        (series["id"] + "_20240325T080000Z", "Stand-up"), (moved_id, "Stand-up (moved)")]
    # Without singleEvents: the series, its modified instance, and (as calendar.v3.json's showDeleted says)
    # its cancelled instance, even without showDeleted.
    plain = svc.events().list(calendarId="primary").execute()["items"]
    assert {i["id"]: i["status"] for i in plain} == {series["id"]: "confirmed", moved_id: "confirmed",
                                                     cancelled_id: "cancelled"}
    # Cancelled instances are visible with showDeleted.
    instances = svc.events().instances(calendarId="primary", eventId=series["id"], showDeleted=True).execute()
    assert {i["id"]: i["status"] for i in instances["items"]}[cancelled_id] == "cancelled"

    changes = svc.events().list(calendarId="primary", syncToken=token).execute()["items"]
    by_id = {i["id"]: i for i in changes}
    assert set(by_id) == {moved_id, cancelled_id}
    assert by_id[cancelled_id]["status"] == "cancelled"
    assert by_id[cancelled_id]["recurringEventId"] == series["id"]
    assert by_id[cancelled_id]["originalStartTime"] == {"dateTime": "2024-04-08T09:00:00+02:00", "timeZone": AMS}
    # Deleting an already cancelled instance is a 410.
    with pytest.raises(HttpError) as info:
        svc.events().delete(calendarId="primary", eventId=cancelled_id).execute()
    assert info.value.resp.status == 410


def test_deleting_the_series_cancels_everything(alice):
    _, svc = alice
    series = weekly_series(svc)
    token = svc.events().list(calendarId="primary").execute()["nextSyncToken"]
    svc.events().delete(calendarId="primary", eventId=series["id"]).execute()
    assert svc.events().list(calendarId="primary", singleEvents=True).execute()["items"] == []
    changes = svc.events().list(calendarId="primary", syncToken=token).execute()["items"]
    assert [(i["id"], i["status"]) for i in changes] == [(series["id"], "cancelled")]


def test_time_window_on_expanded_series(alice):
    _, svc = alice
    series = svc.events().insert(calendarId="primary", body={
        "start": {"dateTime": "2024-01-01T09:00:00", "timeZone": AMS},
        "end": {"dateTime": "2024-01-01T10:00:00", "timeZone": AMS},
        "recurrence": ["RRULE:FREQ=DAILY"]}).execute()
    items = svc.events().list(calendarId="primary", singleEvents=True, timeMin="2024-03-30T00:00:00Z",
                              timeMax="2024-04-01T00:00:00Z", orderBy="startTime").execute()["items"]
    assert [i["id"] for i in items] == [series["id"] + "_20240330T080000Z", series["id"] + "_20240331T070000Z"]
