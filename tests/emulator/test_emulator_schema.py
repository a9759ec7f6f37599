"""Every emulator response body validates against the schemas of the calendar.v3.json discovery
document that google-api-python-client ships. The recording app in conftest.py walks each response of
every test (an autouse fixture fails the test on a mismatch); this module makes sure every method and
schema was actually exercised, and that the walker itself catches what it should."""

import uuid

import pytest
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from portal.emulator.discovery_schema import schema_errors
from portal.emulator.server import EmulatorServer


def test_every_method_validates(workspace, recorder, emulator, receiver, when):
    alice, bob = workspace.user("alice", "Europe/Amsterdam"), workspace.user("bob")
    svc, b_svc = workspace.service(alice), workspace.service(bob)
    start = len(recorder.records)
    svc.calendars().get(calendarId="primary").execute()
    ev = svc.events().insert(calendarId="primary", body={
        "summary": "s", "description": "d", "location": "l", "colorId": "3", "visibility": "confidential",
        "transparency": "transparent", "guestsCanModify": False, "source": {"url": "https://x.example", "title": "x"},
        "reminders": {"useDefault": False, "overrides": [{"method": "popup", "minutes": 5}]},
        "attendees": [{"email": bob, "displayName": "Bob", "optional": True}, {"email": alice}],
        "extendedProperties": {"private": {"a": "1"}, "shared": {"b": "2"}},
        **when("2024-08-01T10:00", tz="Europe/Amsterdam")}).execute()
    svc.events().get(calendarId="primary", eventId=ev["id"]).execute()
    b_svc.events().get(calendarId="primary", eventId=ev["id"]).execute()
    svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "t"}).execute()
    svc.events().update(calendarId="primary", eventId=ev["id"], body={"summary": "u", **when("2024-08-01T10:00")}).execute()
    series = svc.events().insert(calendarId="primary", body={
        "start": {"date": "2024-08-01"}, "end": {"date": "2024-08-02"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=2"]}).execute()
    svc.events().instances(calendarId="primary", eventId=series["id"]).execute()
    svc.events().delete(calendarId="primary", eventId=series["id"] + "_20240808").execute()
    listing = svc.events().list(calendarId="primary", singleEvents=True, showDeleted=True).execute()
    svc.events().list(calendarId="primary", syncToken=listing["nextSyncToken"]).execute()
    svc.events().list(calendarId="primary", maxResults=1).execute()
    channel = svc.events().watch(calendarId="primary", body={"id": str(uuid.uuid4()), "type": "web_hook",
                                                             "address": receiver.url}).execute()
    svc.channels().stop(body={"id": channel["id"], "resourceId": channel["resourceId"]}).execute()
    svc.events().delete(calendarId="primary", eventId=ev["id"]).execute()
    with pytest.raises(HttpError):
        svc.events().get(calendarId="primary", eventId="nope00000").execute()
    batch = BatchHttpRequest(batch_uri=emulator.batch_uri)
    batch.add(svc.events().get(calendarId="primary", eventId=series["id"]))
    batch.add(svc.events().get(calendarId="primary", eventId="missing000"))
    batch.execute()

    seen = recorder.records[start:]
    methods = {m for m, _, _ in seen}
    assert methods >= {"calendar.calendars.get", "calendar.events.insert", "calendar.events.get",
                       "calendar.events.patch", "calendar.events.update", "calendar.events.instances",
                       "calendar.events.delete", "calendar.events.list", "calendar.events.watch",
                       "calendar.channels.stop"}
    schemas = {s for _, _, s in seen}
    assert schemas >= {"Calendar", "Event", "Events", "Channel", "error"}
    assert not recorder.violations


def test_walker_catches_mismatches():
    event = {"$ref": "Event"}
    assert schema_errors(event, {"kind": "calendar#event", "id": "x"}) == []
    assert schema_errors(event, {"bogus": 1})
    assert schema_errors(event, {"sequence": "1"})
    assert schema_errors(event, {"updated": "yesterday"})
    assert schema_errors(event, {"extendedProperties": {"private": {"a": 1}}})
    assert schema_errors({"$ref": "Channel"}, {"expiration": 123})


def test_standalone_server_smoke():
    with EmulatorServer() as emu:
        assert emu.control("POST", "/users", {"email": "x@y.example"})["calendar_id"] == "x@y.example"
        emu.reset()
        assert emu.control("GET", "/users")["users"] == []
