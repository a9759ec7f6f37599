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


# -- 2. event types ----------------------------------------------------------------------------------

def test_event_types_keep_their_type_and_properties_and_the_list_filters_them(alice, when):
    _, svc = alice
    ooo = svc.events().insert(calendarId="primary", body={
        "summary": "Out of office", "eventType": "outOfOffice", **when("2024-05-02T09:00", 480),
        "outOfOfficeProperties": {"autoDeclineMode": "declineAllConflictingInvitations"}}).execute()
    assert ooo["eventType"] == "outOfOffice"
    assert ooo["outOfOfficeProperties"] == {"autoDeclineMode": "declineAllConflictingInvitations"}
    home = svc.events().insert(calendarId="primary", body={
        "summary": "Home", "eventType": "workingLocation", "start": {"date": "2024-05-03"},
        "end": {"date": "2024-05-04"}, "visibility": "public", "transparency": "transparent",
        "workingLocationProperties": {"type": "homeOffice", "homeOffice": {}}}).execute()
    plain = svc.events().insert(calendarId="primary", body={"summary": "Plain", **when("2024-05-02T15:00")}).execute()
    everything = {e["id"]: e["eventType"] for e in svc.events().list(calendarId="primary").execute()["items"]}
    assert everything == {ooo["id"]: "outOfOffice", home["id"]: "workingLocation", plain["id"]: "default"}
    only = svc.events().list(calendarId="primary", eventTypes=["default", "outOfOffice"]).execute()["items"]
    assert {e["id"] for e in only} == {ooo["id"], plain["id"]}

    assert refused(svc.events().patch(calendarId="primary", eventId=ooo["id"], body={"eventType": "default"}))[0] == 400
    assert refused(svc.events().insert(calendarId="primary", body={
        "summary": "All-day focus", "eventType": "focusTime", "start": {"date": "2024-05-06"},
        "end": {"date": "2024-05-07"}}))[0] == 400
    assert refused(svc.events().insert(calendarId="primary", body={
        "summary": "Mail", "eventType": "fromGmail", **when("2024-05-06T10:00")}))[0] == 400


def test_birthdays_allow_only_their_own_shape_and_changes(alice):
    _, svc = alice
    birthday = {"summary": "Ana", "eventType": "birthday", "start": {"date": "2024-05-17"},
                "end": {"date": "2024-05-18"}, "recurrence": ["RRULE:FREQ=YEARLY"], "visibility": "private",
                "transparency": "transparent", "birthdayProperties": {"type": "birthday"}}
    assert refused(svc.events().insert(calendarId="primary", body={**birthday, "location": "Home"}))[0] == 400
    assert refused(svc.events().insert(calendarId="primary", body={**birthday,
                                                                   "recurrence": ["RRULE:FREQ=WEEKLY"]}))[0] == 400
    ev = svc.events().insert(calendarId="primary", body=birthday).execute()
    assert svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "Ana B."}).execute()[
        "summary"] == "Ana B."
    status, _, message = refused(svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "description": "cake"}))
    assert status == 400 and "description" in message


def test_gmail_events_are_made_by_google_and_refuse_changes_to_their_content(workspace, emulator):
    email = workspace.user("gina")
    svc = workspace.service(email)
    made = emulator.control("POST", f"/users/{email}/events", {
        "summary": "Flight to Lisbon", "eventType": "fromGmail", "visibility": "private",
        "start": {"dateTime": "2024-10-03T07:10:00+01:00", "timeZone": "Europe/London"},
        "end": {"dateTime": "2024-10-03T10:05:00+01:00", "timeZone": "Europe/Lisbon"}})
    ev = svc.events().get(calendarId="primary", eventId=made["id"]).execute()
    assert ev["eventType"] == "fromGmail"
    assert refused(svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "Trip"}))[0] == 400
    ok = svc.events().patch(calendarId="primary", eventId=ev["id"], body={"colorId": "5"}).execute()
    assert ok["colorId"] == "5" and ok["summary"] == "Flight to Lisbon"


# -- 6. fields a client that does not know them must not lose -----------------------------------------

def test_conference_data_attachments_and_other_fields_survive_writes_that_do_not_name_them(alice, when):
    _, svc = alice
    ev = svc.events().insert(calendarId="primary", conferenceDataVersion=1, supportsAttachments=True, body={
        "summary": "Call", **when("2024-05-02T10:00"), "endTimeUnspecified": True, "privateCopy": True,
        "source": {"url": "https://crm.example.com/1", "title": "CRM"},
        "attachments": [{"fileUrl": "https://drive.google.com/open?id=1", "title": "Agenda"}],
        "conferenceData": {"createRequest": {"requestId": "r1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}},
    }).execute()
    assert ev["hangoutLink"].startswith("https://meet.google.com/")
    assert ev["conferenceData"]["createRequest"]["status"] == {"statusCode": "success"}
    kept = ("conferenceData", "attachments", "endTimeUnspecified", "privateCopy", "source", "hangoutLink")
    patched = svc.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "Call 2"}).execute()
    assert {k: patched[k] for k in kept} == {k: ev[k] for k in kept}
    # Without conferenceDataVersion=1 and supportsAttachments the body's versions are ignored, not applied.
    ignored = svc.events().patch(calendarId="primary", eventId=ev["id"], body={
        "conferenceData": None, "attachments": []}).execute()
    assert ignored["conferenceData"] == ev["conferenceData"] and ignored["attachments"] == ev["attachments"]
    replaced = svc.events().update(calendarId="primary", eventId=ev["id"], body={
        "summary": "Call 3", **when("2024-05-02T10:00")}).execute()
    assert replaced["conferenceData"] == ev["conferenceData"] and replaced["privateCopy"] is True


def test_a_locked_copy_refuses_changes_to_its_main_fields(workspace, emulator):
    email = workspace.user("lou")
    svc = workspace.service(email)
    made = emulator.control("POST", f"/users/{email}/events", {
        "summary": "Imported", "locked": True, "start": {"dateTime": "2024-05-02T10:00:00Z"},
        "end": {"dateTime": "2024-05-02T11:00:00Z"}})
    assert made["locked"] is True
    assert refused(svc.events().patch(calendarId="primary", eventId=made["id"], body={"summary": "x"}))[0] == 403
    assert svc.events().patch(calendarId="primary", eventId=made["id"], body={"colorId": "3"}).execute()["locked"]


# -- 6. what Google does that a kind emulator never does ---------------------------------------------

def test_pages_may_be_short_or_empty_and_still_lead_to_everything(alice, emulator, when):
    _, svc = alice
    ids = {svc.events().insert(calendarId="primary", body={"summary": f"e{n}", **when(f"2024-05-{n + 1:02d}T10:00")})
           .execute()["id"] for n in range(7)}
    emulator.add_fault(kind="short_page", path_regex="/events$", method="GET", count=6)
    seen, token, pages, empty = [], None, 0, 0
    while True:
        page = svc.events().list(calendarId="primary", maxResults=3, pageToken=token).execute()
        pages += 1
        seen += [e["id"] for e in page["items"]]
        empty += not page["items"]
        assert len(page["items"]) <= 3
        token = page.get("nextPageToken")
        if not token:
            assert "nextSyncToken" in page
            break
    assert sorted(seen) == sorted(ids) and pages > 3


def test_the_inner_requests_of_a_batch_run_in_any_order(alice, emulator):
    from googleapiclient.http import BatchHttpRequest

    _, svc = alice
    orders = set()
    for attempt in range(8):
        results = {}
        batch = BatchHttpRequest(callback=lambda rid, resp, exc, into=results: into.__setitem__(rid, resp),
                                 batch_uri=emulator.batch_uri)
        for n in range(4):
            batch.add(svc.events().insert(calendarId="primary", body={
                "summary": f"b{attempt}-{n}", "start": {"dateTime": f"2024-06-0{n + 1}T10:00:00Z"},
                "end": {"dateTime": f"2024-06-0{n + 1}T11:00:00Z"}}), request_id=str(n))
        batch.execute()
        created = sorted(range(4), key=lambda n: results[str(n)]["created"] + results[str(n)]["etag"])
        assert [results[str(n)]["summary"] for n in range(4)] == [f"b{attempt}-{n}" for n in range(4)]
        orders.add(tuple(created))
    assert len(orders) > 1  # answers in the request's order, work done in another


def test_request_budgets_answer_as_google_does(workspace, emulator, when):
    email = workspace.user("quinn")
    svc = workspace.service(email)
    emulator.control("POST", "/quotas", {"per_user_per_minute": 3})
    try:
        for _ in range(3):
            svc.events().list(calendarId="primary").execute()
        with pytest.raises(HttpError) as info:
            svc.events().list(calendarId="primary").execute()
        body = __import__("json").loads(info.value.content)["error"]
        assert info.value.resp.status == 403 and body["errors"][0]["reason"] == "rateLimitExceeded"
        assert body["status"] == "PERMISSION_DENIED" and body["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"
        emulator.advance_clock(61)
        svc.events().list(calendarId="primary").execute()  # a minute later the budget is back
        emulator.control("POST", "/quotas", {"per_user_per_minute": None, "per_project_per_minute": 1})
        emulator.advance_clock(61)
        svc.events().list(calendarId="primary").execute()
        with pytest.raises(HttpError) as info:
            svc.events().list(calendarId="primary").execute()
        assert info.value.resp.status == 429
    finally:
        emulator.control("POST", "/quotas", {"per_user_per_minute": None, "per_project_per_minute": None})


def test_a_delegation_change_can_take_time_to_apply(workspace, emulator):
    from google.auth.exceptions import RefreshError

    email = workspace.user("dora")
    sa = workspace.new_service_account()
    emulator.control("DELETE", "/delegations", {"client_id": sa["client_id"]})
    emulator.control("POST", "/delegations", {"client_id": sa["client_id"], "delay_seconds": 600,
                                              "scopes": ["https://www.googleapis.com/auth/calendar"]})
    with pytest.raises(RefreshError):
        workspace.service(email, sa=sa).events().list(calendarId="primary").execute()
    emulator.advance_clock(601)
    assert "items" in workspace.service(email, sa=sa).events().list(calendarId="primary").execute()


def test_guests_may_change_an_event_that_lets_them(workspace, when):
    owner, guest = workspace.user("olga"), workspace.user("gus")
    svc_owner, svc_guest = workspace.service(owner), workspace.service(guest)
    ev = svc_owner.events().insert(calendarId="primary", body={
        "summary": "Shared", **when("2024-05-02T10:00"), "attendees": [{"email": guest}]}).execute()
    assert refused(svc_guest.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "Mine"}))[0] == 403
    svc_owner.events().patch(calendarId="primary", eventId=ev["id"], body={"guestsCanModify": True}).execute()
    changed = svc_guest.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "Ours"}).execute()
    assert changed["summary"] == "Ours" and changed["organizer"]["email"] == owner
    assert svc_owner.events().get(calendarId="primary", eventId=ev["id"]).execute()["summary"] == "Ours"


def test_a_series_far_ahead_is_listed_for_a_range_without_an_end(alice):
    _, svc = alice
    far = svc.events().insert(calendarId="primary", body={
        "summary": "Far", "start": {"dateTime": "2047-03-04T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2047-03-04T10:00:00", "timeZone": "UTC"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=3"]}).execute()
    listed = svc.events().list(calendarId="primary", timeMin="2026-01-01T00:00:00Z").execute()["items"]
    assert far["id"] in {e["id"] for e in listed}


# -- 4. a series' start moves with its exceptions ------------------------------------------------------

def test_moving_a_series_start_takes_its_changed_and_cancelled_occurrences_along(alice):
    _, svc = alice
    series = svc.events().insert(calendarId="primary", body={
        "summary": "Daily", "start": {"dateTime": "2024-05-06T09:00:00", "timeZone": "Europe/Amsterdam"},
        "end": {"dateTime": "2024-05-06T09:30:00", "timeZone": "Europe/Amsterdam"},
        "recurrence": ["RRULE:FREQ=DAILY;COUNT=4"]}).execute()
    sid = series["id"]
    svc.events().patch(calendarId="primary", eventId=sid + "_20240507T070000Z", body={"summary": "Tuesday"}).execute()
    svc.events().patch(calendarId="primary", eventId=sid + "_20240508T070000Z", body={
        "start": {"dateTime": "2024-05-08T15:00:00", "timeZone": "Europe/Amsterdam"},
        "end": {"dateTime": "2024-05-08T15:30:00", "timeZone": "Europe/Amsterdam"}}).execute()
    svc.events().delete(calendarId="primary", eventId=sid + "_20240509T070000Z").execute()
    token = svc.events().list(calendarId="primary").execute()["nextSyncToken"]

    svc.events().patch(calendarId="primary", eventId=sid, body={
        "start": {"dateTime": "2024-05-06T10:00:00"}, "end": {"dateTime": "2024-05-06T10:30:00"}}).execute()
    days = svc.events().instances(calendarId="primary", eventId=sid).execute()["items"]
    assert [(d["start"]["dateTime"], d.get("summary")) for d in days] == [
        ("2024-05-06T10:00:00+02:00", "Daily"),
        ("2024-05-07T10:00:00+02:00", "Tuesday"),  # retitled only: follows the new time
        ("2024-05-08T15:00:00+02:00", "Daily"),  # moved on its own: keeps its time, no second one that day
    ]  # and the cancelled Thursday stays cancelled
    changes = svc.events().list(calendarId="primary", syncToken=token).execute()["items"]
    gone = {c["id"] for c in changes if c["status"] == "cancelled"}
    assert {sid + "_20240507T070000Z", sid + "_20240508T070000Z"} <= gone
    assert sid + "_20240509T080000Z" in gone
