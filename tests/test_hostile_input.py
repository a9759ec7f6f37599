"""Malformed and hostile input: every answer is a clear 400/404/422 or an item-level sync error, never a 500,
never a half-written or unreadable activity."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Activity, Project
from portal.sync.models import SyncJournalEntry
from portal.sync.occurrences import occurrences
from portal.sync.recurrence import validate_recurrence
from tests.helpers import make_activity

TIMED = {"subject": "Review", "start": "2026-03-02T09:00:00+01:00", "end": "2026-03-02T10:00:00+01:00",
         "time_zone": "Europe/Amsterdam"}
HUGE_ID = 2**64  # beyond any database integer


def activity_count(app):
    with app.app_context():
        return db.session.scalar(select(func.count(Activity.id)))


def assert_calendar_pages_work(client, *weeks):
    for week in weeks:
        assert client.get(f"/calendar/?week={week}").status_code == 200
    assert client.get("/calendar/list").status_code == 200


# --- REST API: fields -----------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["subject", "description", "location"])
def test_api_refuses_text_that_is_not_unicode(app, api, field):
    # JSON can spell a lone UTF-16 surrogate ("\ud800"); no database can store it.
    response = api("user").post("/api/v1/activities", json={**TIMED, field: "ok \ud800"})
    assert response.status_code == 400
    assert field in response.json["fields"]
    assert activity_count(app) == 0


@pytest.mark.parametrize("field, value", [("owner", "user\ud800@acme.test"), ("participants", ["\udfff@acme.test"])])
def test_api_refuses_addresses_that_are_not_unicode(app, api, field, value):
    response = api("user").post("/api/v1/activities", json={**TIMED, field: value})
    assert response.status_code == 400
    assert field in response.json["fields"]


@pytest.mark.parametrize("value", [HUGE_ID, str(HUGE_ID), -(2**70)])
def test_api_refuses_project_task_ids_beyond_any_database_integer(app, api, value):
    response = api("user").post("/api/v1/activities", json={**TIMED, "project_task": value})
    assert response.status_code == 400
    assert "project_task" in response.json["fields"]


def test_api_does_not_take_true_for_the_activity_type_with_id_1(api):
    response = api("user").post("/api/v1/activities", json={**TIMED, "activity_type": True})
    assert response.status_code == 400
    assert "activity_type" in response.json["fields"]


@pytest.mark.parametrize("lines, all_day", [
    (["RRULE:FREQ=DAILY;BYSECOND=60"], False),  # RFC 5545 allows a leap second; no calendar can expand it
    (["RRULE:FREQ=DAILY;COUNT=3", "RDATE:00010101T000000Z"], False),  # year 1 was stored as "10101T000000Z"
    (["RRULE:FREQ=DAILY;UNTIL=00010101"], False),
    (["RRULE:FREQ=DAILY;COUNT=3", "EXDATE;VALUE=DATE:09991231"], True),
    (["RRULE:FREQ=WEEKLY;UNTIL=99991231T235959Z"], False),  # in Amsterdam that is past the year 9999
])
def test_api_refuses_rules_that_cannot_be_expanded(app, world, api, login_as, lines, all_day):
    body = ({**TIMED, "recurrence": lines} if not all_day else
            {"subject": "Off", "all_day": True, "start": "2026-03-02", "end": "2026-03-03", "recurrence": lines})
    response = api("user").post("/api/v1/activities", json=body)
    assert response.status_code == 400, response.json
    assert "recurrence" in response.json["fields"]
    assert activity_count(app) == 0
    assert_calendar_pages_work(login_as("user"), "2026-03-02")


def test_api_start_with_fractions_of_a_second_keeps_its_occurrences_reachable(app, world, api, login_as):
    # JavaScript's toISOString() always sends milliseconds; Google keeps whole seconds, and so do occurrence keys.
    body = {**TIMED, "start": "2026-03-02T09:00:00.250+01:00", "end": "2026-03-02T10:00:00.250+01:00",
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"]}
    created = api("user").post("/api/v1/activities", json=body)
    assert created.status_code == 201
    assert created.json["start"] == "2026-03-02T09:00:00+01:00"
    client = login_as("user")
    page = client.get("/calendar/?week=2026-03-02").get_data(as_text=True)
    key = "20260303T080000Z"
    assert f"/calendar/activities/{created.json['id']}?occurrence={key}" in page
    assert client.get(f"/calendar/activities/{created.json['id']}?occurrence={key}").status_code == 200


@pytest.mark.parametrize("zone", ["localtime", "Factory"])
def test_api_refuses_zone_names_that_are_not_iana_zones(api, zone):
    # They name whatever zone the server happens to be set to; Google does not know them.
    response = api("user").post("/api/v1/activities", json={**TIMED, "time_zone": zone})
    assert response.status_code == 400
    assert "time_zone" in response.json["fields"]


# --- REST API: requests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_api_updated_since_at_the_edge_of_time_is_a_bad_filter(api, since):
    response = api("user").get("/api/v1/activities", query_string={"updated_since": since})
    assert response.status_code == 400
    assert "updated_since" in response.json["fields"]


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_api_ids_beyond_any_database_integer_are_not_found(api, method):
    response = getattr(api("user"), method)(f"/api/v1/activities/{HUGE_ID}", json={"subject": "x"})
    assert response.status_code == 404
    assert response.is_json


def test_api_deeply_nested_json_is_refused(app, world, api):
    activity_id = make_activity(app, world["user"])
    body = "[" * 50_000 + "]" * 50_000
    response = api("user").patch(f"/api/v1/activities/{activity_id}", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "body" in response.json["fields"]


@pytest.mark.parametrize("body, field", [
    ({"name": "Launch \ud800"}, "name"),
    ({"name": "Launch", "tasks": [{"name": "Plan \udc00"}]}, "tasks[0].name"),
    ({"name": "Launch\x00"}, "name"),
    ({"name": "Launch", "tasks": [{"name": "Plan\x1b"}]}, "tasks[0].name"),
])
def test_api_refuses_project_names_that_cannot_be_stored_or_shown(app, api, body, field):
    response = api("admin").post("/api/v1/projects", json=body)
    assert response.status_code == 400
    assert field in response.json["fields"]
    with app.app_context():
        assert db.session.scalar(select(func.count(Project.id)).where(Project.name.like("Launch%"))) == 0


# --- calendar pages -------------------------------------------------------------------------------------

@pytest.mark.parametrize("week", ["0001-01-01", "9999-12-31"])
def test_week_view_far_outside_the_calendar_shows_this_week(app, world, login_as, week):
    make_activity(app, world["user"])
    response = login_as("user").get(f"/calendar/?week={week}")
    assert response.status_code == 200


@pytest.mark.parametrize("path", [
    "/calendar/activities/{id}", "/calendar/trash/{id}/restore", "/calendar/activities/{id}/delete",
    "/calendar/activities/1/restore-value/{id}",
])
def test_pages_with_ids_beyond_any_database_integer_are_not_found(app, world, login_as, path):
    make_activity(app, world["user"])
    client = login_as("user")
    url = path.format(id=HUGE_ID)
    response = client.get(url) if path == "/calendar/activities/{id}" else client.post(url)
    assert response.status_code == 404


def test_form_all_day_item_on_the_last_day_of_time_is_refused_by_name(app, world, login_as):
    response = login_as("user").post("/calendar/activities", data={
        "subject": "Forever", "all_day": "on", "start_date": "9999-12-31", "end_date": "9999-12-31",
        "time_zone": "Europe/Amsterdam"})
    assert response.status_code == 422
    assert activity_count(app) == 0


def test_form_series_until_the_end_of_time_is_refused_and_the_calendar_still_opens(app, world, login_as):
    client = login_as("user")
    response = client.post("/calendar/activities", data={
        # No zone posted: the last day is read in UTC, the series lives in the user's Amsterdam.
        "subject": "Stand-up", "start_date": "2026-03-02", "start_time": "09:00", "end_time": "09:15",
        "freq": "WEEKLY", "ends": "until", "until": "9999-12-31"})
    assert response.status_code == 422
    assert activity_count(app) == 0
    assert_calendar_pages_work(client, "2026-03-02")


def test_delete_with_an_unknown_scope_does_not_delete_the_whole_series(app, world, login_as):
    activity_id = make_activity(app, world["user"], recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    response = login_as("user").post(f"/calendar/activities/{activity_id}/delete",
                                     data={"occurrence": "20260309T080000Z", "scope": "everything"})
    assert response.status_code == 422
    with app.app_context():
        assert db.session.get(Activity, activity_id).deleted_at is None


# --- Google-side events ---------------------------------------------------------------------------------

FUTURE = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=3)


def google_time(hours=0):
    return {"dateTime": (FUTURE + timedelta(hours=hours)).isoformat(), "timeZone": "Europe/Amsterdam"}


def test_google_event_with_a_rule_the_portal_cannot_expand_is_an_item_error(app, world, connected, sync_on,
                                                                           run_sync, google_user, login_as):
    sync_on("user")
    run_sync("user")
    person = google_user("user@acme.test")
    person.insert(summary="Ancient", start=google_time(), end=google_time(1),
                  recurrence=["RRULE:FREQ=DAILY;COUNT=2", "RDATE:00010101T000000Z"])
    person.insert(summary="Fine", start=google_time(2), end=google_time(3))
    cycle = run_sync("user")
    assert cycle.status in ("ok", "partial")
    with app.app_context():
        assert db.session.scalars(select(Activity.subject)).all() == ["Fine"]
        errors = db.session.scalars(select(SyncJournalEntry.message).where(SyncJournalEntry.kind == "error")).all()
    assert any("not synced" in message for message in errors)
    assert_calendar_pages_work(login_as("user"), FUTURE.date().isoformat())


# --- the recurrence module (portal/sync/recurrence.py) -------------------------------------------------

def test_recurrence_dates_keep_four_digit_years_and_stay_within_the_product_years():
    from portal.sync.recurrence import RecurrenceError, normalize_recurrence

    assert normalize_recurrence(["RDATE:19991231T000000Z"]) == ("RDATE:19991231T000000Z",)
    with pytest.raises(RecurrenceError, match="outside the years"):
        normalize_recurrence(["RDATE:09991231T000000Z"])


def test_recurrence_refuses_a_leap_second():
    from portal.sync.recurrence import RecurrenceError, validate_recurrence

    with pytest.raises(RecurrenceError):
        validate_recurrence(["RRULE:FREQ=DAILY;BYSECOND=60"], all_day=False)


@pytest.mark.parametrize("rule", [
    "RRULE:FREQ=DAILY;BYWEEKNO=53;BYMONTH=6",  # ISO week 53 never falls in June
    "RRULE:FREQ=DAILY;BYHOUR=9;BYSETPOS=2",  # one candidate a day, the second asked for
    "RRULE:FREQ=YEARLY;BYYEARDAY=366;BYMONTH=2",  # day 366 is never in February
    "RRULE:FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6",  # no month has six Mondays
])
def test_recurrence_that_never_occurs_is_refused_at_once(api, rule):
    from portal.sync.recurrence import RecurrenceError

    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    begun = time.monotonic()
    with pytest.raises(RecurrenceError, match="never occurs"):
        list(occurrences(start, start + timedelta(hours=1), "Europe/Amsterdam", [rule],
                         after=datetime(2026, 3, 9, tzinfo=UTC), before=datetime(2026, 3, 16, tzinfo=UTC),
                         all_day=False))
    assert time.monotonic() - begun < 0.5  # dateutil would search up to the year 9999
    response = api("user").post("/api/v1/activities", json={**TIMED, "recurrence": [rule]})
    assert response.status_code == 400 and "never occurs" in response.json["fields"]["recurrence"]


@pytest.mark.parametrize(("rule", "message"), [
    ("RRULE:FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12;BYMINUTE=0,30", "occurrences a day"),
    ("RRULE:FREQ=DAILY;COUNT=999999999", "COUNT"),
])
def test_recurrence_that_floods_a_calendar_is_refused(api, rule, message):
    response = api("user").post("/api/v1/activities", json={**TIMED, "recurrence": [rule]})
    assert response.status_code == 400 and message in response.json["fields"]["recurrence"]


def test_sensible_rules_with_setpos_and_week_numbers_still_pass():
    for rule in ("RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "RRULE:FREQ=YEARLY;BYWEEKNO=1;BYDAY=MO",
                 "RRULE:FREQ=MONTHLY;BYDAY=MO;BYSETPOS=-1", "RRULE:FREQ=YEARLY;BYWEEKNO=-1;BYMONTH=12",
                 "RRULE:FREQ=YEARLY;BYYEARDAY=60;BYMONTH=2,3"):
        validate_recurrence([rule], all_day=False)


def test_google_texts_the_portal_cannot_keep_are_tidied_once_and_stay_editable(app, world, connected, sync_on,
                                                                               run_sync, google_user, api):
    sync_on("user")
    person = google_user("user@acme.test")
    event = person.insert(summary="Bell\x07 and " + "x" * 5000, location="Room\x00 7",
                          start=google_time(), end=google_time(1))
    first = run_sync("user")
    assert first.portal_created == 1
    with app.app_context():
        activity = db.session.scalars(select(Activity)).one()
        assert activity.subject.startswith("Bell and x") and len(activity.subject) == 255
        assert activity.location == "Room 7"
        activity_id = activity.id
    again = run_sync("user")
    assert (again.portal_updated, again.google_updated) == (0, 0)  # tidied the same way every time
    response = api("user").patch(f"/api/v1/activities/{activity_id}", json={"description": "Agenda"})
    assert response.status_code == 200, response.json
    run_sync("user")
    in_google = person.get(event["id"])
    assert in_google["description"] == "Agenda" and len(in_google["summary"]) > 255  # Google keeps its own


def test_google_event_outside_the_product_years_is_an_item_error(app, world, connected, sync_on, run_sync,
                                                                 google_user):
    sync_on("user")
    person = google_user("user@acme.test")
    person.insert(summary="Far future", start={"date": "2399-01-01"}, end={"date": "2399-01-02"})
    person.insert(summary="Fine", start=google_time(), end=google_time(1))
    cycle = run_sync("user")
    assert cycle.errors == 1
    with app.app_context():
        assert db.session.scalars(select(Activity.subject)).all() == ["Fine"]
