"""Who may change an activity: the owner and the organization's admins; participants see it and answer it
(unless the organization lets participants edit, as Google's "guests can modify")."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ActivityParticipant, ChangeRecord, Organization
from tests.conftest import EMAILS
from tests.helpers import make_activity


@pytest.fixture
def meeting(app, world):
    """The user's activity with the colleague taking part."""
    return make_activity(app, world["user"], subject="Planning", participants=[EMAILS["colleague"]])


def reload(app, activity_id) -> Activity:
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        db.session.expunge(activity)
        return activity


def answers(app, activity_id) -> dict:
    with app.app_context():
        rows = db.session.scalars(select(ActivityParticipant).where(ActivityParticipant.activity_id == activity_id))
        return {row.user.email: row.response_status for row in rows}


def participants_may_edit(app, world, value=True):
    with app.app_context():
        db.session.get(Organization, world["acme"]).participants_can_edit = value
        db.session.commit()


# --- the API ---------------------------------------------------------------------------------------------


def test_a_participant_cannot_change_or_delete_the_owners_activity_through_the_api(app, api, meeting):
    colleague = api("colleague")
    assert colleague.get(f"/api/v1/activities/{meeting}").status_code == 200
    response = colleague.patch(f"/api/v1/activities/{meeting}", json={"subject": "Hijacked"})
    assert response.status_code == 403
    assert "owner" in response.json["error"] and "/response" in response.json["error"]
    response = colleague.delete(f"/api/v1/activities/{meeting}")
    assert response.status_code == 403 and "owner" in response.json["error"]
    activity = reload(app, meeting)
    assert activity.subject == "Planning" and activity.deleted_at is None


@pytest.mark.parametrize("who", ["user", "admin"])
def test_the_owner_and_admins_change_and_delete(app, api, meeting, who):
    assert api(who).patch(f"/api/v1/activities/{meeting}", json={"subject": "Moved"}).status_code == 200
    assert api(who).delete(f"/api/v1/activities/{meeting}").status_code == 204


def test_a_participant_answers_through_the_api(app, api, meeting):
    response = api("colleague").post(f"/api/v1/activities/{meeting}/response", json={"response": "accepted"})
    assert response.status_code == 200, response.json
    assert response.json["responses"] == {EMAILS["colleague"]: "accepted"}
    assert answers(app, meeting) == {EMAILS["colleague"]: "accepted"}
    # An answer changes no synced field: it never competes with a change of the guest list in Google.
    with app.app_context():
        record = db.session.scalars(select(ChangeRecord).where(ChangeRecord.activity_id == meeting)
                                    .order_by(ChangeRecord.id.desc())).first()
        assert "participants" not in (record.fields or [])


@pytest.mark.parametrize(("body", "field"), [
    ({"response": "maybe"}, "response"),
    ({"response": "needsAction"}, "response"),
    ({"response": 1}, "response"),
    ({}, "response"),
    ({"response": "accepted", "subject": "x"}, "subject"),
])
def test_a_bad_answer_is_a_400_that_says_what_is_wrong(app, api, meeting, body, field):
    response = api("colleague").post(f"/api/v1/activities/{meeting}/response", json=body)
    assert response.status_code == 400 and field in response.json["fields"]
    assert answers(app, meeting) == {EMAILS["colleague"]: "needsAction"}


@pytest.mark.parametrize(("who", "status"), [("user", 403), ("admin", 403), ("helpdesk", 404), ("other", 404)])
def test_only_participants_answer(app, api, meeting, who, status):
    response = api(who).post(f"/api/v1/activities/{meeting}/response", json={"response": "declined"})
    assert response.status_code == status
    assert answers(app, meeting) == {EMAILS["colleague"]: "needsAction"}


def test_an_organization_may_let_participants_edit_but_not_delete(app, api, world, meeting):
    participants_may_edit(app, world)
    colleague = api("colleague")
    assert colleague.patch(f"/api/v1/activities/{meeting}", json={"subject": "Agreed"}).status_code == 200
    assert colleague.delete(f"/api/v1/activities/{meeting}").status_code == 403
    # Never the owner: giving an activity away stays an admin's.
    response = colleague.patch(f"/api/v1/activities/{meeting}", json={"owner": EMAILS["colleague"]})
    assert response.status_code == 400
    assert reload(app, meeting).subject == "Agreed"


# --- the pages -------------------------------------------------------------------------------------------


FORM = {"subject": "Hijacked", "start_date": "2026-03-02", "start_time": "09:00", "end_date": "2026-03-02",
        "end_time": "10:00", "time_zone": "Europe/Amsterdam"}


def test_a_participant_sees_the_activity_read_only_with_answer_buttons(app, login_as, meeting):
    client = login_as("colleague")
    page = client.get(f"/calendar/activities/{meeting}").get_data(as_text=True)
    assert "View activity" in page and 'id="answer-buttons"' in page
    assert f'action="/calendar/activities/{meeting}/delete"' not in page
    assert client.post(f"/calendar/activities/{meeting}", data=FORM).status_code == 403
    assert client.post(f"/calendar/activities/{meeting}/delete").status_code == 403
    assert reload(app, meeting).subject == "Planning" and reload(app, meeting).deleted_at is None


def test_the_owner_gets_no_answer_buttons(app, login_as, meeting):
    page = login_as("user").get(f"/calendar/activities/{meeting}").get_data(as_text=True)
    assert "Edit activity" in page and 'id="answer-buttons"' not in page


def test_a_participant_answers_on_the_page(app, login_as, meeting):
    client = login_as("colleague")
    response = client.post(f"/calendar/activities/{meeting}/response", data={"response": "tentative"})
    assert response.status_code == 302
    assert answers(app, meeting) == {EMAILS["colleague"]: "tentative"}
    assert client.post(f"/calendar/activities/{meeting}/response", data={"response": "x"}).status_code == 400
    client.post("/logout")
    assert login_as("user").post(f"/calendar/activities/{meeting}/response",
                                 data={"response": "accepted"}).status_code == 403
    assert answers(app, meeting) == {EMAILS["colleague"]: "tentative"}


def test_a_participant_cannot_restore_the_owners_deleted_activity(app, api, login_as, meeting):
    assert api("user").delete(f"/api/v1/activities/{meeting}").status_code == 204
    assert login_as("colleague").post(f"/calendar/trash/{meeting}/restore").status_code == 403
    assert reload(app, meeting).deleted_at is not None


def test_with_the_setting_a_participant_edits_on_the_page(app, world, login_as, meeting):
    participants_may_edit(app, world)
    client = login_as("colleague")
    assert "Edit activity" in client.get(f"/calendar/activities/{meeting}").get_data(as_text=True)
    assert client.post(f"/calendar/activities/{meeting}", data={**FORM, "subject": "Agreed",
                                                                "participants": [EMAILS["colleague"]]}
                       ).status_code == 302
    assert reload(app, meeting).subject == "Agreed"
    assert client.post(f"/calendar/activities/{meeting}/delete").status_code == 403


def test_admins_switch_the_setting_on_the_google_calendar_page(app, world, login_as):
    admin = login_as("admin")
    page = admin.get("/settings/integrations/google-calendar").get_data(as_text=True)
    assert 'id="participants"' in page
    response = admin.post("/settings/integrations/google-calendar/participants", data={"participants_can_edit": "on"})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Organization, world["acme"]).participants_can_edit is True
    admin.post("/settings/integrations/google-calendar/participants", data={})
    with app.app_context():
        assert db.session.get(Organization, world["acme"]).participants_can_edit is False


def test_only_admins_switch_the_setting(app, world, login_as):
    response = login_as("user").post("/settings/integrations/google-calendar/participants",
                                     data={"participants_can_edit": "on"})
    assert response.status_code == 403
    with app.app_context():
        assert db.session.get(Organization, world["acme"]).participants_can_edit is False
