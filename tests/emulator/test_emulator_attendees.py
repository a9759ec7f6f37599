"""Attendees: copies in each Workspace attendee's calendar, propagation, organizer-only changes, e-mails."""

import pytest
from googleapiclient.errors import HttpError


@pytest.fixture
def people(workspace):
    alice, bob = workspace.user("alice"), workspace.user("bob")
    return alice, bob, workspace.service(alice), workspace.service(bob)


def sync_token(svc):
    return svc.events().list(calendarId="primary").execute()["nextSyncToken"]


def test_copy_in_attendee_calendar_with_same_id(people, when):
    alice, bob, a_svc, b_svc = people
    ev = a_svc.events().insert(calendarId="primary", body={
        "summary": "Review", **when("2024-06-10T10:00"),
        "attendees": [{"email": bob}, {"email": "guest@outside.example"}],
        "extendedProperties": {"private": {"portal_id": "42"}, "shared": {"project": "p"}}}).execute()
    copy = b_svc.events().get(calendarId="primary", eventId=ev["id"]).execute()
    assert copy["id"] == ev["id"] and copy["iCalUID"] == ev["iCalUID"]
    assert copy["organizer"] == {"email": alice}
    assert ev["organizer"] == {"email": alice, "self": True}
    assert {a["email"]: a.get("self", False) for a in copy["attendees"]} == {bob: True, "guest@outside.example": False}
    assert {a["email"]: a.get("self", False) for a in ev["attendees"]} == {bob: False, "guest@outside.example": False}
    assert copy["extendedProperties"] == {"shared": {"project": "p"}}  # private properties are per copy
    assert copy["etag"] != ev["etag"]  # each copy has its own etag
    listing = b_svc.events().list(calendarId="primary").execute()["items"]
    assert [i["id"] for i in listing] == [ev["id"]]


def test_organizer_changes_propagate_to_copies(people, when):
    alice, bob, a_svc, b_svc = people
    ev = a_svc.events().insert(calendarId="primary", body={
        "summary": "Review", **when("2024-06-10T10:00"), "attendees": [{"email": bob}]}).execute()
    token = sync_token(b_svc)
    a_svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "Review v2"}).execute()
    changes = b_svc.events().list(calendarId="primary", syncToken=token).execute()
    assert [(i["id"], i["summary"]) for i in changes["items"]] == [(ev["id"], "Review v2")]
    token = changes["nextSyncToken"]

    # Removing the attendee cancels their copy.
    a_svc.events().patch(calendarId="primary", eventId=ev["id"], body={"attendees": []}).execute()
    changes = b_svc.events().list(calendarId="primary", syncToken=token).execute()
    assert [(i["id"], i["status"]) for i in changes["items"]] == [(ev["id"], "cancelled")]
    assert b_svc.events().list(calendarId="primary").execute()["items"] == []


def test_organizer_delete_cancels_copies(people, when):
    alice, bob, a_svc, b_svc = people
    ev = a_svc.events().insert(calendarId="primary", body={**when("2024-06-10T10:00"), "attendees": [{"email": bob}]}).execute()
    token = sync_token(b_svc)
    a_svc.events().delete(calendarId="primary", eventId=ev["id"]).execute()
    changes = b_svc.events().list(calendarId="primary", syncToken=token).execute()["items"]
    assert [(i["id"], i["status"]) for i in changes] == [(ev["id"], "cancelled")]


def test_attendee_cannot_change_shared_properties(people, when):
    alice, bob, a_svc, b_svc = people
    ev = a_svc.events().insert(calendarId="primary", body={
        "summary": "Review", **when("2024-06-10T10:00"), "attendees": [{"email": bob}]}).execute()
    for body in ({"summary": "Hijacked"}, when("2024-06-10T12:00"),
                 {"extendedProperties": {"shared": {"x": "y"}}}):
        with pytest.raises(HttpError) as info:
            b_svc.events().patch(calendarId="primary", eventId=ev["id"], body=body).execute()
        assert info.value.resp.status == 403
        assert info.value.error_details[0]["reason"] == "forbiddenForNonOrganizer"

    token = sync_token(a_svc)
    mine = b_svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "attendees": [{"email": bob, "responseStatus": "accepted"}],
        "extendedProperties": {"private": {"bob_note": "1"}}}).execute()
    assert mine["extendedProperties"]["private"] == {"bob_note": "1"}
    organizer_view = a_svc.events().get(calendarId="primary", eventId=ev["id"]).execute()
    assert organizer_view["attendees"] == [{"email": bob, "responseStatus": "accepted"}]
    assert "extendedProperties" not in organizer_view
    # The organizer's incremental list shows the response.
    changes = a_svc.events().list(calendarId="primary", syncToken=token).execute()["items"]
    assert [i["id"] for i in changes] == [ev["id"]]


def test_attendee_deleting_declines(people, when):
    alice, bob, a_svc, b_svc = people
    ev = a_svc.events().insert(calendarId="primary", body={**when("2024-06-10T10:00"), "attendees": [{"email": bob}]}).execute()
    b_svc.events().delete(calendarId="primary", eventId=ev["id"]).execute()
    assert b_svc.events().list(calendarId="primary").execute()["items"] == []
    organizer_view = a_svc.events().get(calendarId="primary", eventId=ev["id"]).execute()
    assert organizer_view["status"] == "confirmed"
    assert organizer_view["attendees"][0]["responseStatus"] == "declined"


def test_recurring_exception_propagates(people):
    alice, bob, a_svc, b_svc = people
    series = a_svc.events().insert(calendarId="primary", body={
        "start": {"dateTime": "2024-06-03T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2024-06-03T09:30:00", "timeZone": "UTC"},
        "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"], "attendees": [{"email": bob}]}).execute()
    token = sync_token(b_svc)
    inst = series["id"] + "_20240604T090000Z"
    a_svc.events().patch(calendarId="primary", eventId=inst, body={"summary": "special"}).execute()
    changes = b_svc.events().list(calendarId="primary", syncToken=token).execute()["items"]
    assert [(i["id"], i.get("summary")) for i in changes] == [(inst, "special")]
    with pytest.raises(HttpError) as info:
        b_svc.events().patch(calendarId="primary", eventId=series["id"] + "_20240605T090000Z",
                             body={"summary": "no"}).execute()
    assert info.value.resp.status == 403


def test_notification_emails_are_counted(people, emulator, when):
    alice, bob, a_svc, _ = people
    before = emulator.stats()["emails_sent"]
    body = {**when("2024-06-10T10:00"), "attendees": [{"email": bob}, {"email": "ext@outside.example"}]}
    ev = a_svc.events().insert(calendarId="primary", body=body).execute()
    a_svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "x"}, sendUpdates="none").execute()
    assert emulator.stats()["emails_sent"] == before
    a_svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "y"}, sendUpdates="all").execute()
    assert emulator.stats()["emails_sent"] == before + 2
    a_svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "z"},
                         sendUpdates="externalOnly").execute()
    assert emulator.stats()["emails_sent"] == before + 3


def test_organizer_rewriting_attendees_keeps_answers(people, when):
    alice, bob, a_svc, b_svc = people
    ev = a_svc.events().insert(calendarId="primary", body={**when("2024-06-10T10:00"), "attendees": [{"email": bob}]}).execute()
    b_svc.events().patch(calendarId="primary", eventId=ev["id"],
                         body={"attendees": [{"email": bob, "responseStatus": "tentative"}]}).execute()
    again = a_svc.events().update(calendarId="primary", eventId=ev["id"], body={
        **when("2024-06-10T10:00"), "attendees": [{"email": bob}, {"email": "new@outside.example"}]}).execute()
    assert {a["email"]: a["responseStatus"] for a in again["attendees"]} == {
        bob: "tentative", "new@outside.example": "needsAction"}


def test_renamed_user_takes_their_calendar_and_events_along(people, workspace, emulator, when):
    alice, bob, a_svc, b_svc = people
    token = sync_token(b_svc)
    ev = a_svc.events().insert(calendarId="primary", body={
        "summary": "Review", **when("2024-06-10T10:00"), "attendees": [{"email": bob}]}).execute()
    token = b_svc.events().list(calendarId="primary", syncToken=token).execute()["nextSyncToken"]
    renamed = alice.replace("alice@", "alicia@")
    emulator.control("POST", f"/users/{alice}/rename", {"email": renamed})

    changed = b_svc.events().list(calendarId="primary", syncToken=token).execute()["items"]
    assert [(e["id"], e["organizer"]["email"]) for e in changed] == [(ev["id"], renamed)]
    mine = workspace.service(renamed).events().get(calendarId="primary", eventId=ev["id"]).execute()
    assert mine["organizer"] == {"email": renamed, "self": True}
    from google.auth.exceptions import RefreshError

    with pytest.raises(RefreshError, match="invalid_grant"):  # the old address is no longer a user
        workspace.service(alice).events().list(calendarId="primary").execute()


def test_a_guest_added_to_a_series_gets_its_changed_occurrences_too(people):
    # Found by the chaos run (seed 230): a guest added later never saw an occurrence changed before.
    alice, bob, a_svc, b_svc = people
    series = a_svc.events().insert(calendarId="primary", body={
        "summary": "Weekly", "start": {"dateTime": "2024-06-03T10:00:00Z", "timeZone": "UTC"},
        "end": {"dateTime": "2024-06-03T11:00:00Z", "timeZone": "UTC"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=3"]}).execute()
    second = a_svc.events().instances(calendarId="primary", eventId=series["id"]).execute()["items"][1]
    a_svc.events().patch(calendarId="primary", eventId=second["id"], body={"summary": "Weekly (moved room)"}).execute()
    a_svc.events().patch(calendarId="primary", eventId=series["id"], body={"attendees": [{"email": bob}]}).execute()

    seen = b_svc.events().instances(calendarId="primary", eventId=series["id"]).execute()["items"]
    assert [i["summary"] for i in seen] == ["Weekly", "Weekly (moved room)", "Weekly"]
    listed = b_svc.events().list(calendarId="primary").execute()["items"]
    assert {e["id"] for e in listed} == {series["id"], second["id"]}
