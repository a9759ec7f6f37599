"""Where people meet the sync: the profile switch, statuses in the API and pages, the trash, the CLI."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity
from portal.sync.models import CalendarSync, SyncJournalEntry
from tests.helpers import make_activity

START = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)


def slot(hours=0):
    return {"start": (START + timedelta(hours=hours)).isoformat(),
            "end": (START + timedelta(hours=hours + 1)).isoformat()}


def test_profile_switch_needs_the_organization_on(app, world, login_as, emulator):
    client = login_as("user")
    refused = client.post("/profile/calendar-sync", data={"enabled": "on"})
    assert refused.status_code == 422 and b"ask your admin" in refused.data
    with app.app_context():
        assert db.session.get(CalendarSync, world["user"]) is None


def test_profile_switch_on_and_off(app, world, login_as, connected):
    client = login_as("user")
    page = client.get("/profile/calendar-sync").get_data(as_text=True)
    assert 'aria-checked="false"' in page and "Meeting" in page  # the synced types are listed
    response = client.post("/profile/calendar-sync", data={"enabled": "on"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # While the first sync runs, its progress polls, and only it: the card waits for its "done".
    assert 'aria-checked="true"' in html and html.count('hx-trigger="every') == 1 and 'id="first-sync-progress"' in html
    with app.app_context():
        row = db.session.get(CalendarSync, world["user"])
        assert row.enabled and row.full_sync_needed
    client.post("/profile/calendar-sync", data={"enabled": "off"})
    with app.app_context():
        assert not db.session.get(CalendarSync, world["user"]).enabled


def test_profile_shows_user_banner_and_stops_polling_once_synced(app, world, login_as, connected, sync_on, run_sync):
    sync_on("user")
    run_sync("user")
    client = login_as("user")
    page = client.get("/profile/calendar-sync", headers={"HX-Request": "true", "HX-Target": "calendar-sync"})
    html = page.get_data(as_text=True)
    assert "Healthy" in html and ", every " not in html and "<html" not in html  # the card's hx-trigger polls no more
    with app.app_context():
        db.session.get(CalendarSync, world["user"]).record_error("not_in_workspace", "Not a Workspace user.",
                                                                 "Use the same e-mail in both systems.")
        db.session.commit()
    html = client.get("/profile/calendar-sync").get_data(as_text=True)
    assert "Not a Workspace user." in html and "Use the same e-mail in both systems." in html


def test_api_calendar_sync_switch(api, connected, world):
    client = api("user")
    assert client.get("/api/v1/me/calendar-sync").get_json() == {"enabled": False, "status": "off",
                                                                 "last_synced_at": None}
    assert client.put("/api/v1/me/calendar-sync", json={"enabled": "yes"}).status_code == 400
    assert client.put("/api/v1/me/calendar-sync", json={"enabled": True, "extra": 1}).status_code == 400
    on = client.put("/api/v1/me/calendar-sync", json={"enabled": True})
    assert on.status_code == 200 and on.get_json()["enabled"] is True and on.get_json()["status"] == "pending"
    off = client.put("/api/v1/me/calendar-sync", json={"enabled": False})
    assert off.get_json()["enabled"] is False


def test_api_calendar_sync_refused_while_organization_off(api, world):
    response = api("user").put("/api/v1/me/calendar-sync", json={"enabled": True})
    assert response.status_code == 409 and "admin" in response.get_json()["error"]


def test_activity_json_carries_google_id_and_status(app, api, world, connected, sync_on, run_sync):
    client = api("user")
    created = client.post("/api/v1/activities", json={"subject": "Status check", **slot()}).get_json()
    assert created["sync_status"] == "not_synced" and created["google_event_id"] is None
    sync_on("user")
    assert client.get(f"/api/v1/activities/{created['id']}").get_json()["sync_status"] == "pending"
    run_sync("user")
    synced = client.get(f"/api/v1/activities/{created['id']}").get_json()
    assert synced["sync_status"] == "synced" and synced["google_event_id"].startswith("psa")
    client.patch(f"/api/v1/activities/{created['id']}", json={"subject": "Changed"})
    assert client.get(f"/api/v1/activities/{created['id']}").get_json()["sync_status"] == "pending"
    with app.app_context():
        from portal.models import Project
        task = db.session.scalars(select(Project).where(Project.organization_id == world["acme"])).first().tasks[0]
        task_id = task.id
    task_item = client.post("/api/v1/activities", json={"subject": "Task", "project_task": task_id, **slot(3)})
    assert task_item.get_json()["sync_status"] == "not_synced"


def test_form_shows_why_an_item_is_not_synced(app, world, login_as, connected):
    activity_id = make_activity(app, world["user"], **slot())
    html = login_as("user").get(f"/calendar/activities/{activity_id}").get_data(as_text=True)
    assert "Neither the owner nor a participant has calendar sync switched on" in html


def test_google_delete_goes_to_trash_and_restore_brings_it_back(app, world, login_as, connected, sync_on, run_sync,
                                                                google_user):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Fragile", **slot())
    run_sync("user")
    person = google_user("user@acme.test")
    [event] = person.live()
    person.delete(event["id"])
    run_sync("user")
    client = login_as("user")
    trash = client.get("/calendar/trash").get_data(as_text=True)
    assert "Fragile" in trash and f'id="trash-{activity_id}"' in trash
    assert client.post(f"/calendar/trash/{activity_id}/restore").status_code == 302
    with app.app_context():
        assert not db.session.get(Activity, activity_id).is_deleted
    run_sync("user")
    run_sync("user")  # a deleted event's id is never reused by Google: the restore gets a new one
    assert [e["summary"] for e in person.live()] == ["Fragile"]
    assert f'id="trash-{activity_id}"' not in client.get("/calendar/trash").get_data(as_text=True)


def test_trash_restore_access(app, world, login_as):
    activity_id = make_activity(app, world["user"], **slot())
    with app.app_context():
        db.session.get(Activity, activity_id).mark_deleted()
        db.session.commit()
    assert login_as("other").post(f"/calendar/trash/{activity_id}/restore").status_code == 404


def test_lost_conflict_value_can_be_put_back(app, world, login_as, connected, sync_on, run_sync, google_user):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Original", **slot())
    run_sync("user")
    person = google_user("user@acme.test")
    [event] = person.live()
    with app.app_context():
        db.session.get(Activity, activity_id).subject = "Portal title"
        db.session.commit()
    person.patch(event["id"], summary="Google title")
    run_sync("user")
    client = login_as("user")
    html = client.get(f"/calendar/activities/{activity_id}").get_data(as_text=True)
    assert "Portal title" in html and "Put back" in html
    with app.app_context():
        entry = db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.kind == "conflict")).one()
    client.post(f"/calendar/activities/{activity_id}/restore-value/{entry.id}")
    run_sync("user")
    assert person.get(event["id"])["summary"] == "Portal title"


def test_sync_command(app, world, connected, sync_on):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["sync"]).exit_code != 0
    sync_on("user", "colleague")
    make_activity(app, world["user"], subject="From the CLI", **slot())
    result = runner.invoke(args=["sync", "--all"])
    assert result.exit_code == 0, result.output
    assert "user@acme.test: ok" in result.output and "colleague@acme.test: ok" in result.output
    one = runner.invoke(args=["sync", "--user", "user@acme.test"])
    assert one.exit_code == 0 and one.output.count("\n") == 1
    missing = runner.invoke(args=["sync", "--user", "helpdesk@acme.test"])
    assert missing.exit_code != 0


def test_helpdesk_sees_banners_cycles_and_item_errors_read_only(app, world, login_as, connected, sync_on, run_sync,
                                                                 google_user):
    sync_on("user")
    person = google_user("user@acme.test")
    person.insert(summary="Odd rule", recurrence=["RRULE:FREQ=MINUTELY;COUNT=3"],
                  start={"dateTime": START.isoformat(), "timeZone": "UTC"},
                  end={"dateTime": (START + timedelta(hours=1)).isoformat(), "timeZone": "UTC"})
    run_sync("user")
    with app.app_context():
        db.session.get(CalendarSync, world["user"]).record_error("unknown_user", "Not in the Workspace.",
                                                                 "Use the same e-mail in both systems.")
        db.session.commit()
    page = login_as("helpdesk").get(f"/helpdesk/organizations/{world['acme']}").get_data(as_text=True)
    assert "<dt>Switched</dt><dd>On</dd>" in page
    assert "Not in the Workspace." in page and "Use the same e-mail in both systems." in page
    assert "Google event not synced" in page  # the item-level error, with its reason
    assert "Partly synced" in page  # the cycle that met it
    assert "notasecret" not in page and "PRIVATE KEY" not in page
    # read-only: the only forms are searches, which change nothing
    assert 'method="post"' not in page.split("<main>")[1]
    assert "csrf_token" not in page.split("<main>")[1]
