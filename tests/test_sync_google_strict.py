"""The sync against an emulator as strict as Google: writes valid under Google's patch semantics, fields the
portal does not own kept intact, and what real calendars hold handled."""

from datetime import UTC, datetime, timedelta

import pytest

FUTURE = (datetime.now(UTC) + timedelta(days=10)).date()


def day(offset=0):
    return (FUTURE + timedelta(days=offset)).isoformat()


def timed(offset=0, hour=10, minutes=60, zone="+01:00"):
    start = datetime.fromisoformat(f"{day(offset)}T{hour:02d}:00:00{zone}")
    return start.isoformat(), (start + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def synced(app, api, world, connected, sync_on, run_sync, google_user):
    """Create an activity through the API, sync it, and return (client, activity id, event id, google)."""
    def make(**body):
        sync_on("user")
        client = api("user")
        created = client.post("/api/v1/activities", json={"subject": "Item", "activity_type": "Meeting", **body})
        assert created.status_code == 201, created.get_json()
        cycle = run_sync("user")
        assert cycle.status == "ok", cycle.message
        google = google_user("user@acme.test")
        [event] = google.live()
        return client, created.get_json()["id"], event["id"], google
    return make


def test_switching_between_timed_and_all_day_reaches_google(synced, run_sync):
    start, end = timed()
    client, activity_id, event_id, google = synced(start=start, end=end, time_zone="Europe/Amsterdam")

    switched = client.patch(f"/api/v1/activities/{activity_id}", json={"all_day": True, "start": day(),
                                                                       "end": day(1)})
    assert switched.status_code == 200, switched.get_json()
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    event = google.get(event_id)
    assert event["start"] == {"date": day()} and event["end"] == {"date": day(1)}

    start, end = timed(hour=14)
    back = client.patch(f"/api/v1/activities/{activity_id}", json={"all_day": False, "start": start, "end": end,
                                                                   "time_zone": "America/New_York"})
    assert back.status_code == 200, back.get_json()
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    event = google.get(event_id)
    assert event["start"]["timeZone"] == "America/New_York" and "date" not in event["start"]
    assert datetime.fromisoformat(event["start"]["dateTime"]) == datetime.fromisoformat(start)


def google_time(offset, hour, minutes=60):
    start, end = timed(offset, hour, minutes, zone="Z")
    return {"start": {"dateTime": start, "timeZone": "UTC"}, "end": {"dateTime": end, "timeZone": "UTC"}}


def test_event_types_follow_the_documented_policy(app, api, world, connected, sync_on, run_sync, google_user):
    from tests.test_sync_engine import activities

    sync_on("user")
    owner = google_user("user@acme.test")
    ooo = owner.insert(summary="Out of office", eventType="outOfOffice", **google_time(0, 9, 480),
                       outOfOfficeProperties={"autoDeclineMode": "declineNone"})
    owner.insert(summary="Focus", eventType="focusTime", **google_time(1, 13, 120),
                 focusTimeProperties={"chatStatus": "doNotDisturb"})
    owner.insert(summary="Home", eventType="workingLocation", start={"date": day(2)}, end={"date": day(3)},
                 visibility="public", transparency="transparent",
                 workingLocationProperties={"type": "homeOffice", "homeOffice": {}})
    owner.insert(summary="Ana's birthday", eventType="birthday", start={"date": day(3)}, end={"date": day(4)},
                 recurrence=["RRULE:FREQ=YEARLY"], visibility="private", transparency="transparent",
                 birthdayProperties={"type": "birthday"})
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    assert sorted(a.subject for a in activities(app)) == ["Focus", "Out of office"]

    [away] = [a for a in activities(app) if a.subject == "Out of office"]
    assert api("user").patch(f"/api/v1/activities/{away.id}", json={"subject": "Away"}).status_code == 200
    assert run_sync("user").status == "ok"
    kept = owner.get(ooo["id"])
    assert kept["summary"] == "Away" and kept["eventType"] == "outOfOffice"
    assert kept["outOfOfficeProperties"] == {"autoDeclineMode": "declineNone"}


def test_gmail_events_come_in_and_what_google_refuses_is_never_sent(app, api, world, connected, sync_on,
                                                                   run_sync, google_user):
    from portal.sync.models import SyncJournalEntry
    from tests.test_sync_engine import activities

    sync_on("user")
    made = connected.control("POST", "/users/user@acme.test/events", {
        "summary": "Flight to Lisbon", "eventType": "fromGmail", **google_time(4, 7, 175)})
    assert run_sync("user").status == "ok"
    [flight] = activities(app)
    assert flight.subject == "Flight to Lisbon"
    patches_before = connected.control("GET", "/stats")["requests"].get("calendar.events.patch", 0)
    assert api("user").patch(f"/api/v1/activities/{flight.id}", json={"subject": "Trip"}).status_code == 200
    cycle = run_sync("user")
    with app.app_context():
        from portal.extensions import db
        errors = [e.message for e in db.session.query(SyncJournalEntry).filter_by(kind="error")]
    assert cycle.status == "ok", errors
    assert connected.control("GET", "/stats")["requests"].get("calendar.events.patch", 0) == patches_before
    assert google_user("user@acme.test").get(made["id"])["summary"] == "Flight to Lisbon"
    [flight] = activities(app)
    assert flight.subject == "Flight to Lisbon"
    with app.app_context():
        [lost] = db_conflicts(SyncJournalEntry, flight.id)
    assert lost.before == "Trip" and "Gmail made this event" in lost.message


def db_conflicts(model, activity_id):
    from portal.extensions import db

    return db.session.query(model).filter_by(activity_id=activity_id, kind="conflict").all()


def test_short_and_empty_pages_lose_nothing(app, world, connected, sync_on, run_sync, google_user):
    from tests.conftest import SERVICE_CLIENT_ID
    from tests.test_sync_engine import activities

    app.config["SYNC_PAGE_SIZE"] = 3
    sync_on("user")
    owner = google_user("user@acme.test")
    for n in range(8):
        owner.insert(summary=f"Item {n}", **google_time(n % 5, 8 + n))
    connected.control("POST", "/faults", {"kind": "short_page", "method": "GET", "path_regex": "/events$",
                                          "client_id": SERVICE_CLIENT_ID, "count": 12})
    assert run_sync("user").status == "ok"
    assert sorted(a.subject for a in activities(app)) == [f"Item {n}" for n in range(8)]
    for n in range(8, 12):
        owner.insert(summary=f"Item {n}", **google_time(n % 5, 8 + n % 8))
    connected.control("POST", "/faults", {"kind": "short_page", "method": "GET", "path_regex": "/events$",
                                          "client_id": SERVICE_CLIENT_ID, "count": 12})
    assert run_sync("user").status == "ok"
    assert sorted(a.subject for a in activities(app)) == sorted(f"Item {n}" for n in range(12))


def test_request_budgets_delay_work_but_lose_none(app, api, world, connected, sync_on, run_sync, google_user):
    from tests.test_sync_engine import activities

    sync_on("user")
    client = api("user")
    for n in range(6):
        start, end = timed(n % 4, 8 + n)
        assert client.post("/api/v1/activities", json={"subject": f"Job {n}", "activity_type": "Meeting",
                                                       "start": start, "end": end}).status_code == 201
    connected.control("POST", "/quotas", {"per_user_per_minute": 4})
    try:
        first = run_sync("user")
        assert first.status in ("partial", "error", "ok")
        for _ in range(6):
            connected.control("POST", "/clock", {"advance_seconds": 61})
            run_sync("user")
    finally:
        connected.control("POST", "/quotas", {"per_user_per_minute": None})
    final = run_sync("user")
    assert final.status == "ok", final.message
    owner = google_user("user@acme.test")
    assert sorted(e["summary"] for e in owner.live()) == [f"Job {n}" for n in range(6)]
    assert len(activities(app)) == 6


def test_a_zero_length_event_comes_in_and_stays_editable(app, api, world, connected, sync_on, run_sync, google_user):
    from tests.test_sync_engine import activities

    sync_on("user")
    owner = google_user("user@acme.test")
    start, _ = timed(2, 9, zone="Z")
    reminder = owner.insert(summary="Call back", start={"dateTime": start, "timeZone": "UTC"},
                            end={"dateTime": start, "timeZone": "UTC"})
    assert run_sync("user").status == "ok"
    [activity] = activities(app)
    edited = api("user").patch(f"/api/v1/activities/{activity.id}", json={"subject": "Call back Ann"})
    assert edited.status_code == 200, edited.get_json()
    assert run_sync("user").status == "ok"
    event = owner.get(reminder["id"])
    assert event["summary"] == "Call back Ann" and event["start"]["dateTime"] == event["end"]["dateTime"]
    backwards = api("user").patch(f"/api/v1/activities/{activity.id}", json={
        "end": (datetime.fromisoformat(start) - timedelta(hours=1)).isoformat()})
    assert backwards.status_code == 400 and "end" in backwards.get_json()["fields"]


def test_changing_participants_keeps_what_each_guest_has_in_google(app, api, world, connected, sync_on, run_sync,
                                                                   google_user):
    from tests.test_sync_engine import activities

    sync_on("user")
    owner = google_user("user@acme.test")
    room = {"email": "room-2@resource.calendar.google.com", "resource": True, "displayName": "Room 2"}
    carl = {"email": "colleague@acme.test", "displayName": "Carl C.", "optional": True, "additionalGuests": 1}
    ev = owner.insert(summary="Review", **google_time(3, 10), attendees=[carl, room],
                      conferenceData=None, colorId="7", reminders={"useDefault": False,
                                                                  "overrides": [{"method": "popup", "minutes": 5}]})
    assert run_sync("user").status == "ok"
    [activity] = activities(app)
    changed = api("user").patch(f"/api/v1/activities/{activity.id}", json={
        "participants": ["colleague@acme.test", "admin@acme.test"], "subject": "Review (all)"})
    assert changed.status_code == 200, changed.get_json()
    assert run_sync("user").status == "ok"
    after = owner.get(ev["id"])
    by_email = {a["email"]: a for a in after["attendees"]}
    assert {"displayName": "Carl C.", "optional": True, "additionalGuests": 1}.items() <= by_email[
        "colleague@acme.test"].items()
    assert by_email[room["email"]].get("resource") is True and by_email[room["email"]]["displayName"] == "Room 2"
    assert "admin@acme.test" in by_email
    assert after["colorId"] == "7" and after["reminders"] == ev["reminders"]


def test_a_series_edit_that_leaves_the_rule_alone_leaves_googles_rule_text_alone(app, api, world, connected,
                                                                                sync_on, run_sync, google_user):
    # The rule as Google holds it (a date-time UNTIL on an all-day series, WKST, parts in Google's order) goes
    # back unchanged when only the title changes: spelled again, it would be a change of the rule.
    from tests.test_sync_engine import activities

    sync_on("user")
    owner = google_user("user@acme.test")
    rule = [f"RRULE:FREQ=WEEKLY;WKST=MO;UNTIL={(FUTURE + timedelta(days=30)).strftime('%Y%m%d')}T220000Z;"
            "BYDAY=MO,TU,WE,TH,FR", f"EXDATE;TZID=Europe/Helsinki:{(FUTURE + timedelta(days=1)).strftime('%Y%m%d')}T000000"]
    ev = owner.insert(summary="Stand-up", start={"date": day()}, end={"date": day(1)}, recurrence=rule)
    assert run_sync("user").status == "ok"
    [series] = activities(app)
    assert api("user").patch(f"/api/v1/activities/{series.id}", json={"subject": "Stand-up (new)"}).status_code == 200
    assert run_sync("user").status == "ok"
    after = owner.get(ev["id"])
    assert after["summary"] == "Stand-up (new)" and after["recurrence"] == rule


def test_a_new_series_and_its_changed_occurrences_never_share_a_batch(app, world, connected, sync_on, run_sync,
                                                                      google_user):
    # Google runs a batch's requests in any order (the emulator too): the occurrences of a series that does not
    # exist yet can only be written once it does, so they never travel in its batch. Several rounds, since an
    # order that happens to work would hide the dependency.
    from zoneinfo import ZoneInfo

    from portal.extensions import db
    from portal.models import Activity
    from tests.helpers import make_activity

    sync_on("user")
    zone = ZoneInfo("Europe/Amsterdam")
    owner = google_user("user@acme.test")
    for n in range(4):
        first = datetime.combine(FUTURE + timedelta(days=n), datetime.min.time(), zone).replace(hour=8 + n)
        activity_id = make_activity(app, world["user"], subject=f"Series {n}", start=first.isoformat(),
                                    end=(first + timedelta(hours=1)).isoformat(), time_zone="Europe/Amsterdam",
                                    recurrence=["RRULE:FREQ=DAILY;COUNT=3"])
        keys = [(first + timedelta(days=d)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") for d in range(3)]
        with app.app_context():
            activity = db.session.get(Activity, activity_id)
            activity.set_exception(keys[1], subject=f"Series {n} (special)", start=first + timedelta(days=1),
                                   end=first + timedelta(days=1, hours=1))
            activity.set_exception(keys[2], cancelled=True)
            activity.touch()
            db.session.commit()
    assert run_sync("user").status == "ok"
    for n in range(4):
        [series] = [e for e in owner.live() if e["summary"] == f"Series {n}"]
        instances = owner.events.instances(calendarId="primary", eventId=series["id"]).execute()["items"]
        assert [i.get("summary") for i in instances if i.get("status") != "cancelled"] == [
            f"Series {n}", f"Series {n} (special)"]
