"""The calendar pages: create, edit and delete in place, and validation next to the field."""

import re

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ChangeRecord
from tests.helpers import make_activity

HX = {"HX-Request": "true"}
FORM = {
    "subject": "Sprint review", "start_date": "2026-03-02", "start_time": "09:00", "end_date": "2026-03-02",
    "end_time": "10:00", "time_zone": "Europe/Amsterdam",
}


def only_activity(app):
    with app.app_context():
        return db.session.scalars(select(Activity)).one()


def field_errors(response) -> dict:
    html = response.get_data(as_text=True)
    return dict(re.findall(r'id="error-([a-z_]+)" role="alert">([^<]*)<', html))


def test_create_weekly_series_with_participant(app, login_as):
    client = login_as("user")
    response = client.post("/calendar/activities", data={
        **FORM, "freq": "WEEKLY", "interval": "2", "byday": ["MO", "TH"], "ends": "count", "count": "6",
        "participants": ["colleague@acme.test"],
    })
    assert response.status_code == 302 and response.headers["Location"] == "/calendar/"
    with app.app_context():
        activity = db.session.scalars(select(Activity)).one()
        assert len(activity.recurrence) == 1 and "COUNT=6" in activity.recurrence[0]
        assert "INTERVAL=2" in activity.recurrence[0] and "BYDAY=MO,TH" in activity.recurrence[0]
        assert [u.email for u in activity.participants] == ["colleague@acme.test"]
        assert activity.start_at.isoformat() == "2026-03-02T08:00:00+00:00"  # 09:00 in Amsterdam (CET)


def test_series_shows_on_each_week_at_local_time_across_dst(app, login_as):
    client = login_as("user")
    client.post("/calendar/activities", data={**FORM, "freq": "WEEKLY"})
    before = client.get("/calendar/?week=2026-03-23").get_data(as_text=True)
    after = client.get("/calendar/?week=2026-03-30").get_data(as_text=True)
    assert "09:00–10:00" in before and "09:00–10:00" in after  # DST began on 29 March


def test_colleague_sees_item_they_take_part_in(app, login_as, world):
    make_activity(app, world["user"], subject="Shared lunch", participants=["colleague@acme.test"])
    make_activity(app, world["user"], subject="Private thing")
    page = login_as("colleague").get("/calendar/?week=2026-03-02").get_data(as_text=True)
    assert "Shared lunch" in page and "Private thing" not in page


def test_htmx_create_returns_refreshed_view_in_place(app, login_as):
    client = login_as("user")
    response = client.post("/calendar/activities", data={**FORM, "return_to": "/calendar/?week=2026-03-02"},
                           headers=HX)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'hx-swap-oob="true"' in html and "Sprint review" in html and "<html" not in html


def test_htmx_requests_get_partials_and_plain_requests_full_pages(login_as):
    client = login_as("user")
    full = client.get("/calendar/activities/new").get_data(as_text=True)
    partial = client.get("/calendar/activities/new", headers=HX).get_data(as_text=True)
    assert "<html" in full and "<html" not in partial and 'name="subject"' in partial
    week = client.get("/calendar/?week=2026-03-02", headers={**HX, "HX-Target": "calendar-view"})
    assert "<html" not in week.get_data(as_text=True) and "Week of 02 Mar 2026" in week.get_data(as_text=True)


def test_page_and_partial_of_one_address_tell_caches_they_differ(login_as):
    client = login_as("user")
    page = client.get("/calendar/?week=2026-03-02")
    partial = client.get("/calendar/?week=2026-03-02", headers={**HX, "HX-Target": "calendar-view"})
    restored = client.get("/calendar/?week=2026-03-02", headers={**HX, "HX-History-Restore-Request": "true"})
    assert "<html" in page.get_data(as_text=True) and "<html" not in partial.get_data(as_text=True)
    assert "<html" in restored.get_data(as_text=True)  # a history restore needs the whole page
    assert all("HX-Request" in r.headers.get("Vary", "") for r in (page, partial, restored))


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"subject": "  "}, "subject", "required"),
    ({"end_time": "08:00"}, "end", "before the start"),
    ({"time_zone": "Mars/Olympus"}, "time_zone", "Unknown time zone"),
    ({"start_date": "not-a-date"}, "start", "date and time"),
    ({"start_time": ""}, "start", "date and time"),
    ({"freq": "CUSTOM", "recurrence_lines": "RRULE:FREQ=SOMETIMES"}, "recurrence", ""),
    ({"freq": "WEEKLY", "ends": "count", "count": "0"}, "recurrence", "1 to 999"),
    ({"freq": "WEEKLY", "ends": "until", "until": "soon"}, "recurrence", "date"),
    ({"participants": ["user@globex.test"]}, "participants", "Not a user of your organization"),
    ({"activity_type": "999"}, "activity_type", "Unknown activity type"),
    ({"project_task": "999"}, "project_task", "No project task"),
    ({"subject": "x" * 300}, "subject", "At most 255"),
])
def test_validation_errors_are_shown_next_to_the_field(app, login_as, change, field, message):
    client = login_as("user")
    for headers in ({}, HX):
        response = client.post("/calendar/activities", data={**FORM, **change}, headers=headers)
        assert response.status_code == 422
        errors = field_errors(response)
        assert field in errors, errors
        assert message in errors[field]
    with app.app_context():
        assert db.session.scalars(select(Activity)).first() is None
        assert db.session.scalars(select(ChangeRecord)).first() is None


def test_project_task_of_another_organization_is_refused(app, login_as, world):
    from portal.models import Project

    with app.app_context():
        foreign_task = db.session.scalars(select(Project).where(Project.name == "Secret")).one().tasks[0].id
    response = login_as("user").post("/calendar/activities", data={**FORM, "project_task": str(foreign_task)})
    assert response.status_code == 422
    assert "No project task" in field_errors(response)["project_task"]


def test_posted_values_survive_a_validation_error(login_as):
    response = login_as("user").post("/calendar/activities", data={**FORM, "time_zone": "Nowhere",
                                                                  "location": "Room 7"})
    assert 'value="Room 7"' in response.get_data(as_text=True)


def test_edit_and_delete(app, login_as, world):
    activity_id = make_activity(app, world["user"], recurrence=["RRULE:FREQ=WEEKLY;BYDAY=MO"])
    client = login_as("user")
    form = client.get(f"/calendar/activities/{activity_id}").get_data(as_text=True)
    assert 'value="Planning"' in form
    assert re.search(r'<option value="WEEKLY"\s+selected', form)
    response = client.post(f"/calendar/activities/{activity_id}", data={
        **FORM, "subject": "Planning (moved)", "start_time": "11:00", "end_time": "12:30", "freq": "WEEKLY",
        "byday": ["TU"],
    })
    assert response.status_code == 302
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        assert activity.subject == "Planning (moved)"
        assert activity.local_start().strftime("%H:%M") == "11:00"
        assert "BYDAY=TU" in activity.recurrence[0]
        assert activity.version == 2
    response = client.post(f"/calendar/activities/{activity_id}/delete", headers=HX,
                           data={"return_to": "/calendar/list"})
    assert response.status_code == 200 and "Deleted" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Activity, activity_id).is_deleted  # a tombstone, not a removed row
    assert client.get(f"/calendar/activities/{activity_id}").status_code == 404


def test_all_day_end_date_is_shown_inclusive_and_stored_exclusive(app, login_as):
    client = login_as("user")
    client.post("/calendar/activities", data={**FORM, "all_day": "on", "start_date": "2026-03-02",
                                              "end_date": "2026-03-03"})
    activity = only_activity(app)
    assert (activity.start_date.isoformat(), activity.end_date.isoformat()) == ("2026-03-02", "2026-03-04")
    form = client.get(f"/calendar/activities/{activity.id}").get_data(as_text=True)
    assert 'name="end_date" value="2026-03-03"' in form


def test_all_day_item_stays_on_its_day_for_a_viewer_far_from_utc(app, login_as, world):
    from portal.models import User

    with app.app_context():
        db.session.get(User, world["user"]).time_zone = "Pacific/Kiritimati"  # UTC+14
        db.session.commit()
    make_activity(app, world["user"], subject="Holiday", all_day=True, start="2026-03-04", end="2026-03-05")
    page = login_as("user").get("/calendar/?week=2026-03-02").get_data(as_text=True)
    day = re.search(r'data-day="2026-03-04">(.*?)</section>', page, re.S).group(1)
    assert "Holiday" in day
    for other in ("2026-03-03", "2026-03-05"):
        assert "Holiday" not in re.search(rf'data-day="{other}">(.*?)</section>', page, re.S).group(1)


def test_monthly_on_nth_weekday(app, login_as):
    login_as("user").post("/calendar/activities", data={**FORM, "start_date": "2026-03-10", "end_date": "2026-03-10",
                                                         "freq": "MONTHLY", "monthly_mode": "weekday"})
    assert "BYDAY=2TU" in only_activity(app).recurrence[0]


def test_list_view_shows_series_once_with_description(app, login_as, world):
    make_activity(app, world["user"], subject="Standup", recurrence=["RRULE:FREQ=DAILY;COUNT=5"])
    # The series ended in March: the list shows it with the past items (from now on, a series shows at its next date)
    page = login_as("user").get("/calendar/list?past=1").get_data(as_text=True)
    assert page.count("Standup") == 1


def test_helpdesk_sees_no_create_controls(login_as):
    page = login_as("helpdesk").get("/calendar/").get_data(as_text=True)
    assert "New activity" not in page


def test_admin_may_assign_owner_but_user_may_not(app, login_as, world):
    response = login_as("user").post("/calendar/activities", data={**FORM, "owner": "colleague@acme.test"})
    assert response.status_code == 422 and "Only an admin" in field_errors(response)["owner"]
    login_as("user").post("/logout")
    login_as("admin").post("/calendar/activities", data={**FORM, "owner": "colleague@acme.test"})
    assert only_activity(app).owner_id == world["colleague"]
