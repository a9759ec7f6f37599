"""REST API v1: CRUD round trip, validation errors naming fields, tenant isolation, lost-update protection."""

import pytest

from tests.helpers import make_activity

NEW = {
    "subject": "Kick-off",
    "description": "Agenda:\n1. Scope",
    "location": "Room 2",
    "start": "2026-04-01T10:00:00+02:00",
    "end": "2026-04-01T11:30:00+02:00",
    "time_zone": "Europe/Amsterdam",
    "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=4"],
    "activity_type": "Meeting",
    "participants": ["colleague@acme.test"],
}


def test_crud_round_trip(api, world):
    client = api("user")
    created = client.post("/api/v1/activities", json=NEW)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["subject"] == "Kick-off" and body["owner"] == "user@acme.test"
    assert body["start"] == "2026-04-01T10:00:00+02:00" and body["end"] == "2026-04-01T11:30:00+02:00"
    assert body["participants"] == ["colleague@acme.test"] and body["activity_type"] == "Meeting"
    assert body["all_day"] is False and body["project_task"] is None and body["recurrence"]

    fetched = client.get(f"/api/v1/activities/{body['id']}")
    assert fetched.get_json() == body

    patched = client.patch(f"/api/v1/activities/{body['id']}", json={"subject": "Kick-off (v2)",
                                                                      "participants": []})
    assert patched.status_code == 200
    assert patched.get_json()["subject"] == "Kick-off (v2)" and patched.get_json()["participants"] == []
    assert patched.get_json()["location"] == "Room 2"  # untouched fields stay

    listed = client.get("/api/v1/activities").get_json()["activities"]
    assert [a["id"] for a in listed] == [body["id"]]

    assert client.delete(f"/api/v1/activities/{body['id']}").status_code == 204
    assert client.get(f"/api/v1/activities/{body['id']}").status_code == 404
    assert client.get("/api/v1/activities").get_json()["activities"] == []


def test_all_day_round_trip(api):
    client = api("user")
    created = client.post("/api/v1/activities", json={"subject": "Off", "all_day": True,
                                                       "start": "2026-04-06", "end": "2026-04-08"})
    assert created.status_code == 201
    assert (created.get_json()["start"], created.get_json()["end"]) == ("2026-04-06", "2026-04-08")


def test_read_only_fields_sent_back_are_ignored(api):
    client = api("user")
    body = client.post("/api/v1/activities", json=NEW).get_json()
    again = client.patch(f"/api/v1/activities/{body['id']}", json={**body, "subject": "Changed"})
    assert again.status_code == 200 and again.get_json()["id"] == body["id"]


@pytest.mark.parametrize(("payload", "field"), [
    ({**NEW, "subject": ""}, "subject"),
    ({**NEW, "subject": 42}, "subject"),
    ({**NEW, "end": "2026-04-01T09:00:00+02:00"}, "end"),
    ({**NEW, "start": "2026-04-01T10:00:00"}, "start"),  # no offset
    ({**NEW, "start": "yesterday"}, "start"),
    ({**NEW, "start": None}, "start"),
    ({**NEW, "time_zone": "Europe/Atlantis"}, "time_zone"),
    ({**NEW, "all_day": "yes"}, "all_day"),
    ({**NEW, "all_day": True}, "start"),  # all-day items take dates
    ({**NEW, "recurrence": "RRULE:FREQ=DAILY"}, "recurrence"),
    ({**NEW, "recurrence": ["RRULE:FREQ=DAILY;COUNT=2;UNTIL=20260501T000000Z"]}, "recurrence"),
    ({**NEW, "recurrence": ["DTSTART:20260401T100000Z"]}, "recurrence"),
    ({**NEW, "participants": ["user@globex.test"]}, "participants"),
    ({**NEW, "participants": "colleague@acme.test"}, "participants"),
    ({**NEW, "activity_type": "Party"}, "activity_type"),
    ({**NEW, "owner": "nobody@acme.test"}, "owner"),
    ({**NEW, "project_task": "first"}, "project_task"),
    ({**NEW, "colour": "red"}, "colour"),
])
def test_invalid_activity_gets_400_naming_the_field(api, payload, field):
    response = api("user").post("/api/v1/activities", json=payload)
    assert response.status_code == 400
    body = response.get_json()
    assert field in body["fields"], body
    assert body["error"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b"null"])
def test_malformed_bodies_get_400(api, raw):
    response = api("user").post("/api/v1/activities", data=raw, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["fields"]["body"]


def test_patch_validation_failure_changes_nothing(app, api, world):
    activity_id = make_activity(app, world["user"])
    client = api("user")
    before = client.get(f"/api/v1/activities/{activity_id}").get_json()
    response = client.patch(f"/api/v1/activities/{activity_id}", json={"subject": "Fine", "end": "bad"})
    assert response.status_code == 400
    assert client.get(f"/api/v1/activities/{activity_id}").get_json() == before


def test_if_match_prevents_lost_updates(app, api, world):
    activity_id = make_activity(app, world["user"])
    client = api("user")
    etag = client.get(f"/api/v1/activities/{activity_id}").headers["ETag"]
    assert client.patch(f"/api/v1/activities/{activity_id}", json={"subject": "First"},
                        headers={"If-Match": etag}).status_code == 200
    stale = client.patch(f"/api/v1/activities/{activity_id}", json={"subject": "Second"},
                         headers={"If-Match": etag})
    assert stale.status_code == 412
    assert client.get(f"/api/v1/activities/{activity_id}").get_json()["subject"] == "First"


def test_tenant_isolation(app, api, world):
    ours = make_activity(app, world["user"], subject="Acme only")
    theirs = make_activity(app, world["other"], subject="Globex only")
    acme_admin, globex_admin = api("admin"), api("other_admin")
    assert [a["subject"] for a in acme_admin.get("/api/v1/activities").get_json()["activities"]] == ["Acme only"]
    assert [a["subject"] for a in globex_admin.get("/api/v1/activities").get_json()["activities"]] == ["Globex only"]
    assert acme_admin.get(f"/api/v1/activities/{theirs}").status_code == 404
    assert acme_admin.patch(f"/api/v1/activities/{theirs}", json={"subject": "x"}).status_code == 404
    assert acme_admin.delete(f"/api/v1/activities/{theirs}").status_code == 404
    assert globex_admin.get(f"/api/v1/activities/{ours}").status_code == 404
    assert globex_admin.get("/api/v1/activities?owner=user@acme.test").status_code == 400
    types = {t["name"] for t in globex_admin.get("/api/v1/activity-types").get_json()["activity_types"]}
    assert types == {"Internal", "Meeting", "Customer visit", "Personal"}
    projects = [p["name"] for p in acme_admin.get("/api/v1/projects").get_json()["projects"]]
    assert projects == ["Relaunch"]


def test_filters_owner_and_updated_since_with_deletions(app, api, world):
    first = make_activity(app, world["user"], subject="Old")
    second = make_activity(app, world["colleague"], subject="Colleague's")
    admin = api("admin")
    mine = admin.get("/api/v1/activities?owner=colleague@acme.test").get_json()["activities"]
    assert [a["id"] for a in mine] == [second]
    since = admin.get(f"/api/v1/activities/{second}").get_json()["updated_at"]
    admin.delete(f"/api/v1/activities/{first}")
    changed = admin.get("/api/v1/activities", query_string={"updated_since": since}).get_json()["activities"]
    assert [(a["id"], a.get("deleted")) for a in changed] == [(first, True)]
    assert admin.get("/api/v1/activities?updated_since=last-week").status_code == 400


def test_projects_create_and_validate(api):
    admin = api("admin")
    created = admin.post("/api/v1/projects", json={"name": "Audit", "tasks": [{"name": "Plan"}, {"name": "Do"}]})
    assert created.status_code == 201
    assert [t["name"] for t in created.get_json()["tasks"]] == ["Plan", "Do"]
    task_id = created.get_json()["tasks"][0]["id"]
    linked = api("user").post("/api/v1/activities", json={**NEW, "project_task": task_id})
    assert linked.status_code == 201 and linked.get_json()["project_task"] == task_id
    bad = admin.post("/api/v1/projects", json={"name": "", "tasks": [{"nom": "x"}]})
    assert bad.status_code == 400 and set(bad.get_json()["fields"]) == {"name", "tasks[0].name"}
    duplicate = admin.post("/api/v1/projects", json={"name": "Audit"})
    assert duplicate.status_code == 400 and "name" in duplicate.get_json()["fields"]


def test_unknown_route_and_method_are_json(api):
    client = api("user")
    assert client.get("/api/v1/activities/999").get_json()["error"]
    assert client.put("/api/v1/activities").status_code == 405


def test_exceptions_and_answers_are_shown_and_can_be_sent_back(app, api, world):
    from portal.extensions import db
    from portal.models import Activity, RecurrenceException

    client = api("user")
    body = client.post("/api/v1/activities", json=NEW).get_json()
    assert body["exceptions"] == [] and body["responses"] == {"colleague@acme.test": "needsAction"}
    with app.app_context():
        activity = db.session.get(Activity, body["id"])
        activity.exceptions.append(RecurrenceException(original_start="20260408T080000Z", cancelled=True))
        db.session.commit()
    shown = client.get(f"/api/v1/activities/{body['id']}").get_json()
    assert shown["exceptions"] == [{"original_start": "20260408T080000Z", "cancelled": True}]
    again = client.patch(f"/api/v1/activities/{body['id']}", json={**shown, "subject": "Renamed"})
    assert again.status_code == 200 and again.get_json()["exceptions"] == shown["exceptions"]
