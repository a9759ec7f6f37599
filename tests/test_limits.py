"""Caps on what one person can store and on what one page works out: a recurrence with thousands of lines, a
project with thousands of tasks, a week with more occurrences than a page can hold. Too much input is a clear
400/422 naming the field; too much stored (from before the caps, or written behind the portal's back) still
gives a small page that says more exists; too much from Google is an error on that item alone."""

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from portal import models
from portal.extensions import db
from portal.models import Activity, Project
from portal.sync.models import SyncJournalEntry
from portal.sync.occurrences import occurrences
from portal.sync.recurrence import MAX_DATES, MAX_RULES, ExpansionLimit, RecurrenceError, validate_recurrence
from tests.helpers import make_activity

TIMED = {"subject": "Review", "start": "2026-03-02T09:00:00+01:00", "end": "2026-03-02T10:00:00+01:00",
         "time_zone": "Europe/Amsterdam"}


def bomb(lines=2000):
    """The issue's attack: each line on its own is a modest daily rule (one occurrence a day), all different."""
    return [f"RRULE:FREQ=DAILY;BYHOUR={i % 24};BYMINUTE={(i // 24) % 60};BYSECOND={i // 1440}"
            for i in range(lines)]


def activity_count(app):
    with app.app_context():
        return db.session.scalar(select(func.count(Activity.id)))


def store_behind_the_portals_back(app, activity_id, lines):
    """Rows written before the caps existed, or straight into the database: no validation ran on them."""
    with app.app_context():
        db.session.execute(update(Activity).where(Activity.id == activity_id)
                           .values(recurrence_text="\n".join(lines)))
        db.session.commit()


# --- recurrence lines and dates ---------------------------------------------------------------------------

def test_api_refuses_the_recurrence_bomb_from_a_plain_user(app, world, api):
    for line in bomb()[:3]:
        validate_recurrence([line], all_day=False)  # each line alone is acceptable
    response = api("user").post("/api/v1/activities", json={**TIMED, "recurrence": bomb()})
    assert response.status_code == 400, response.json
    assert f"at most {MAX_RULES}" in response.json["fields"]["recurrence"]
    assert activity_count(app) == 0


def test_api_refuses_a_patch_that_adds_the_bomb(app, world, api):
    activity_id = make_activity(app, world["user"], recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    response = api("user").patch(f"/api/v1/activities/{activity_id}", json={"recurrence": bomb()})
    assert response.status_code == 400 and "recurrence" in response.json["fields"]
    with app.app_context():
        assert db.session.get(Activity, activity_id).recurrence == ["RRULE:FREQ=WEEKLY;COUNT=4"]


def test_form_refuses_the_recurrence_bomb(app, world, login_as):
    response = login_as("user").post("/calendar/activities", data={
        "subject": "Bomb", "start_date": "2026-03-02", "start_time": "09:00", "end_time": "09:15",
        "time_zone": "Europe/Amsterdam", "freq": "CUSTOM", "recurrence_lines": "\n".join(bomb(MAX_RULES + 1))})
    assert response.status_code == 422
    assert f"at most {MAX_RULES}" in response.get_data(as_text=True)
    assert activity_count(app) == 0


@pytest.mark.parametrize("kind", ["RDATE", "EXDATE"])
def test_api_refuses_more_dates_than_a_series_can_have(app, world, api, kind):
    days = [(date(2026, 3, 3) + timedelta(days=n)).strftime("%Y%m%dT080000Z") for n in range(MAX_DATES + 1)]
    for lines in (["RRULE:FREQ=DAILY", f"{kind}:" + ",".join(days)],  # one line, many values
                  ["RRULE:FREQ=DAILY", *(f"{kind}:{d}" for d in days)]):  # many lines
        response = api("user").post("/api/v1/activities", json={**TIMED, "recurrence": lines})
        assert response.status_code == 400, response.json
        assert f"at most {MAX_DATES}" in response.json["fields"]["recurrence"]
    assert activity_count(app) == 0


def test_the_most_lines_and_dates_allowed_still_pass(app, world, api):
    days = [(date(2026, 3, 3) + timedelta(days=n)).strftime("%Y%m%dT080000Z") for n in range(MAX_DATES)]
    rules = [f"RRULE:FREQ=WEEKLY;BYDAY=MO;INTERVAL={n + 1}" for n in range(MAX_RULES)]
    response = api("user").post("/api/v1/activities", json={
        **TIMED, "recurrence": [*rules, "EXDATE:" + ",".join(days[: MAX_DATES // 2]),
                                "RDATE:" + ",".join(days[MAX_DATES // 2:])]})
    assert response.status_code == 201, response.json


def test_the_caps_hold_wherever_lines_are_read():
    with pytest.raises(RecurrenceError, match=f"at most {MAX_RULES}"):
        validate_recurrence(bomb(MAX_RULES + 1), all_day=False)
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    with pytest.raises(RecurrenceError, match=f"at most {MAX_RULES}"):
        next(occurrences(start, start + timedelta(hours=1), "UTC", bomb(), after=start, before=None, all_day=False))


def test_expansion_stops_at_its_budget_instead_of_walking_a_century():
    # Allowed on its own (24 a day), but from 1900 the scan to this week passes a million occurrences.
    start = datetime(1900, 1, 1, tzinfo=UTC)
    hourly = ["RRULE:FREQ=DAILY;BYHOUR=" + ",".join(str(h) for h in range(24))]
    window = datetime(2026, 3, 2, tzinfo=UTC)
    found = []
    with pytest.raises(ExpansionLimit):
        for pair in occurrences(start, start + timedelta(minutes=30), "UTC", hourly, after=window,
                                before=window + timedelta(days=7), all_day=False, budget=1000):
            found.append(pair)
    assert found == []
    # A recent start fits the same budget; without one (the sync, which must be exact) an old one runs on.
    for begin, budget in ((datetime(2026, 2, 25, tzinfo=UTC), 1000), (datetime(2020, 1, 1, tzinfo=UTC), None)):
        week = list(occurrences(begin, begin + timedelta(minutes=30), "UTC", hourly, after=window,
                                before=window + timedelta(days=7), all_day=False, budget=budget))
        assert len(week) == 7 * 24


# --- views stay small whatever is stored ------------------------------------------------------------------

def item_count(html: str) -> int:
    return html.count('<li class="item"')


def test_a_stored_bomb_leaves_the_week_view_small_and_says_more_exists(app, world, api, login_as):
    owner = make_activity(app, world["user"], subject="Bomb", participants=["colleague@acme.test"],
                          recurrence=["RRULE:FREQ=DAILY"])
    make_activity(app, world["colleague"], subject="Ordinary", start="2026-03-04T14:00:00+01:00",
                  end="2026-03-04T15:00:00+01:00")
    store_behind_the_portals_back(app, owner, bomb())
    for who in ("admin", "colleague", "user"):
        response = login_as(who).get("/calendar/?week=2026-03-02")
        html = response.get_data(as_text=True)
        assert response.status_code == 200
        assert len(html) < 200_000, len(html)
        assert item_count(html) <= models.OCCURRENCES_PER_ITEM_LIMIT + 1
        assert ("Ordinary" in html) == (who != "user")  # the colleague's own item still shows
        assert "Bomb" in html and "more than can be shown" in html
        login_as(who).post("/logout")
    assert login_as("admin").get("/calendar/list").status_code == 200
    assert api("user").get(f"/api/v1/activities/{owner}").status_code == 200


def test_a_dense_series_shows_its_first_occurrences_and_says_more_exist(app, world, login_as, monkeypatch):
    monkeypatch.setattr(models, "OCCURRENCES_PER_ITEM_LIMIT", 5)
    make_activity(app, world["user"], subject="Hourly", recurrence=["RRULE:FREQ=DAILY;BYHOUR=9,10,11,12"])
    html = login_as("user").get("/calendar/?week=2026-03-02").get_data(as_text=True)
    assert item_count(html) == 5
    assert "Hourly" in html and "more than can be shown" in html


def test_the_whole_week_has_a_cap_and_says_so(app, world, login_as, monkeypatch):
    monkeypatch.setattr(models, "OCCURRENCES_PER_VIEW_LIMIT", 10)
    for n in range(3):
        make_activity(app, world["user"], subject=f"Daily {n}", recurrence=["RRULE:FREQ=DAILY"])
    html = login_as("user").get("/calendar/?week=2026-03-02").get_data(as_text=True)
    assert item_count(html) == 10
    assert "only the first 10" in html


def test_an_ordinary_week_has_no_notice(app, world, login_as):
    make_activity(app, world["user"], subject="Daily", recurrence=["RRULE:FREQ=DAILY"])
    html = login_as("user").get("/calendar/?week=2026-03-02").get_data(as_text=True)
    assert item_count(html) == 7 and "more than can be shown" not in html


def test_a_stored_bomb_cannot_be_edited_without_fixing_its_rule(app, world, api):
    activity_id = make_activity(app, world["user"], recurrence=["RRULE:FREQ=DAILY"])
    store_behind_the_portals_back(app, activity_id, bomb())
    response = api("user").patch(f"/api/v1/activities/{activity_id}", json={"subject": "Renamed"})
    assert response.status_code == 400 and "recurrence" in response.json["fields"]
    fixed = api("user").patch(f"/api/v1/activities/{activity_id}",
                              json={"subject": "Renamed", "recurrence": ["RRULE:FREQ=DAILY"]})
    assert fixed.status_code == 200, fixed.json


# --- from Google: an item error, not a hung cycle ------------------------------------------------------------

FUTURE = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=3)


def google_time(hours=0):
    return {"dateTime": (FUTURE + timedelta(hours=hours)).isoformat(), "timeZone": "Europe/Amsterdam"}


def test_google_event_with_too_many_recurrence_lines_is_an_item_error(app, world, connected, sync_on, run_sync,
                                                                     google_user, login_as):
    sync_on("user")
    run_sync("user")
    person = google_user("user@acme.test")
    person.insert(summary="Bomb", start=google_time(), end=google_time(1),
                  recurrence=[f"RRULE:FREQ=DAILY;COUNT=3;INTERVAL={n + 1}" for n in range(MAX_RULES + 1)])
    person.insert(summary="Fine", start=google_time(2), end=google_time(3))
    cycle = run_sync("user")
    assert cycle.status in ("ok", "partial") and cycle.errors == 1
    with app.app_context():
        assert db.session.scalars(select(Activity.subject)).all() == ["Fine"]
        errors = db.session.scalars(select(SyncJournalEntry.message).where(SyncJournalEntry.kind == "error")).all()
    assert any(f"at most {MAX_RULES}" in message for message in errors), errors
    assert login_as("user").get(f"/calendar/?week={FUTURE.date().isoformat()}").status_code == 200


# --- collections and texts --------------------------------------------------------------------------------

def test_project_tasks_have_a_cap(app, world, api):
    limit = models.TASKS_PER_PROJECT_LIMIT
    response = api("admin").post("/api/v1/projects", json={
        "name": "Huge", "tasks": [{"name": f"Task {n}"} for n in range(limit + 1)]})
    assert response.status_code == 400
    assert f"At most {limit} tasks" in response.json["fields"]["tasks"]
    ok = api("admin").post("/api/v1/projects", json={
        "name": "Big", "tasks": [{"name": f"Task {n}"} for n in range(limit)]})
    assert ok.status_code == 201
    with app.app_context():
        assert db.session.scalar(select(func.count(Project.id)).where(Project.name == "Huge")) == 0


def test_projects_per_organization_have_a_cap(app, world, api):
    limit = models.PROJECTS_PER_ORGANIZATION_LIMIT
    with app.app_context():
        present = db.session.scalar(select(func.count(Project.id)).where(Project.organization_id == world["acme"]))
        db.session.add_all(Project(organization_id=world["acme"], name=f"P{n}") for n in range(limit - present))
        db.session.commit()
    response = api("admin").post("/api/v1/projects", json={"name": "One more"})
    assert response.status_code == 400
    assert f"at most {limit} projects" in response.json["fields"]["name"]
    # Another organization's count is its own.
    assert api("other_admin").post("/api/v1/projects", json={"name": "One more"}).status_code == 201


@pytest.mark.parametrize(("body", "field", "limit"), [
    ({"name": "x" * (models.PROJECT_NAME_LIMIT + 1)}, "name", models.PROJECT_NAME_LIMIT),
    ({"name": "Ok", "tasks": [{"name": "t" * (models.TASK_NAME_LIMIT + 1)}]}, "tasks[0].name", models.TASK_NAME_LIMIT),
])
def test_project_and_task_names_have_a_length_cap(api, body, field, limit):
    response = api("admin").post("/api/v1/projects", json=body)
    assert response.status_code == 400 and str(limit) in response.json["fields"][field]


def test_participants_have_a_cap(app, world, api):
    limit = models.PARTICIPANTS_LIMIT
    response = api("user").post("/api/v1/activities", json={
        **TIMED, "participants": [f"person{n}@acme.test" for n in range(limit + 1)]})
    assert response.status_code == 400
    assert f"At most {limit} participants" in response.json["fields"]["participants"]


@pytest.mark.parametrize(("field", "limit"), [("subject", "SUBJECT_LIMIT"), ("location", "LOCATION_LIMIT"),
                                              ("description", "DESCRIPTION_LIMIT")])
def test_activity_texts_have_a_length_cap_in_api_and_form(app, world, api, login_as, field, limit):
    limit = getattr(models, limit)
    response = api("user").post("/api/v1/activities", json={**TIMED, field: "y" * (limit + 1)})
    assert response.status_code == 400 and f"At most {limit} characters" in response.json["fields"][field]
    form = {"subject": "Form", "start_date": "2026-03-02", "start_time": "09:00", "end_time": "09:15",
            "time_zone": "Europe/Amsterdam", field: "y" * (limit + 1)}
    page = login_as("user").post("/calendar/activities", data=form)
    assert page.status_code == 422 and f"At most {limit} characters" in page.get_data(as_text=True)
    assert activity_count(app) == 0


def test_changed_occurrences_of_one_series_have_a_cap(app, world, login_as, monkeypatch):
    monkeypatch.setattr(models, "EXCEPTIONS_PER_SERIES_LIMIT", 2)
    activity_id = make_activity(app, world["user"], recurrence=["RRULE:FREQ=DAILY;COUNT=10"])
    client = login_as("user")
    for day in (2, 3, 4):
        key = f"202603{day:02d}T080000Z"
        response = client.post(f"/calendar/activities/{activity_id}/delete",
                               data={"occurrence": key, "scope": "this"})
        if day < 4:
            assert response.status_code == 302
    assert response.status_code == 422
    assert "At most 2 changed or cancelled occurrences" in response.get_data(as_text=True)
    with app.app_context():
        assert len(db.session.get(Activity, activity_id).exceptions) == 2
