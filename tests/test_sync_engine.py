"""The two-way sync against the Google emulator, through the real Google client libraries."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ActivityType
from portal.sync.models import SyncCycle, SyncJournalEntry, SyncLink
from tests.helpers import make_activity

FUTURE = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=3)


def at(hours=0, days=0):
    return (FUTURE + timedelta(hours=hours, days=days)).isoformat()


def activities(app, **filters):
    with app.app_context():
        query = select(Activity).where(Activity.deleted_at.is_(None)).filter_by(**filters).order_by(Activity.id)
        rows = db.session.scalars(query).all()
        for row in rows:
            _ = (row.participants, row.activity_type, row.owner, row.exceptions)
            db.session.expunge(row)
        return rows


def test_portal_activity_reaches_the_owners_google_calendar(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Kick-off", start=at(), end=at(1),
                                activity_type="Meeting", participants=["colleague@acme.test"])
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    assert cycle.google_created == 1
    events = google_user("user@acme.test").live()
    assert [e["summary"] for e in events] == ["Kick-off"]
    event = events[0]
    assert event["organizer"]["email"] == "user@acme.test"
    assert {a["email"] for a in event["attendees"]} >= {"colleague@acme.test"}
    assert event["extendedProperties"]["private"]["psaActivityId"] == str(activity_id)
    # The participant sees the same event in their own calendar (Google's attendee copy).
    assert [e["id"] for e in google_user("colleague@acme.test").live()] == [event["id"]]
    assert connected.control("GET", "/stats")["emails_sent"] == 0  # sendUpdates=none: no invitation flood


def test_idle_cycle_costs_one_request(app, world, connected, sync_on, run_sync):
    sync_on("user")
    make_activity(app, world["user"], start=at(), end=at(1))
    run_sync("user")
    run_sync("user")
    idle = run_sync("user")
    assert idle.status == "ok" and idle.requests == 1
    assert (idle.google_created, idle.google_updated, idle.portal_created, idle.portal_updated) == (0, 0, 0, 0)


def test_google_event_becomes_an_activity_and_edits_flow_both_ways(app, world, connected, sync_on, run_sync,
                                                                   google_user):
    sync_on("user")
    run_sync("user")
    person = google_user("user@acme.test")
    event = person.insert(summary="Dentist", start={"dateTime": at(), "timeZone": "Europe/Amsterdam"},
                          end={"dateTime": at(1), "timeZone": "Europe/Amsterdam"})
    assert run_sync("user").portal_created == 1
    [activity] = activities(app)
    assert activity.subject == "Dentist" and activity.owner.email == "user@acme.test"
    assert activity.activity_type.is_default

    person.patch(event["id"], summary="Dentist (moved)", location="Main street 1")
    assert run_sync("user").portal_updated == 1
    [activity] = activities(app)
    assert (activity.subject, activity.location) == ("Dentist (moved)", "Main street 1")

    client = app.test_client()
    from tests.conftest import EMAILS, PASSWORD
    client.post("/login", data={"email": EMAILS["user"], "password": PASSWORD})
    client.post(f"/calendar/activities/{activity.id}", data={
        "subject": "Dentist (portal)", "start_date": activity.local_start().date().isoformat(),
        "start_time": activity.local_start().strftime("%H:%M"), "end_date": activity.local_end().date().isoformat(),
        "end_time": activity.local_end().strftime("%H:%M"), "time_zone": activity.time_zone,
        "location": "Main street 1", "activity_type": str(activity.activity_type_id)})
    assert run_sync("user").google_updated == 1
    assert person.get(event["id"])["summary"] == "Dentist (portal)"

    person.delete(event["id"])
    assert run_sync("user").portal_deleted == 1
    assert activities(app) == []
    with app.app_context():
        trashed = db.session.get(Activity, activity.id)
        assert trashed.is_deleted  # in the trash, restorable


def test_portal_delete_deletes_the_event(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    activity_id = make_activity(app, world["user"], start=at(), end=at(1))
    run_sync("user")
    api = app.test_client()
    with app.app_context():
        from portal.activities import delete_activity
        delete_activity(db.session.get(Activity, activity_id))
        db.session.commit()
    assert run_sync("user").google_deleted == 1
    assert google_user("user@acme.test").live() == []
    with app.app_context():
        assert db.session.scalars(select(SyncLink)).all() == []
    del api


def test_private_google_event_becomes_personal(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    google_user("user@acme.test").insert(summary="Private", visibility="private",
                                         start={"dateTime": at(), "timeZone": "UTC"},
                                         end={"dateTime": at(1), "timeZone": "UTC"})
    run_sync("user")
    [activity] = activities(app)
    assert activity.activity_type.name == "Personal"


def test_invited_event_in_two_calendars_is_one_activity(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user", "colleague")
    google_user("user@acme.test").insert(
        summary="Design review", attendees=[{"email": "colleague@acme.test"}, {"email": "guest@example.com"}],
        start={"dateTime": at(), "timeZone": "UTC"}, end={"dateTime": at(1), "timeZone": "UTC"})
    run_sync("colleague")  # the attendee's copy is read first
    run_sync("user")
    run_sync("colleague")
    [activity] = activities(app)
    assert activity.owner.email == "user@acme.test"
    assert [u.email for u in activity.participants] == ["colleague@acme.test"]


@pytest.mark.parametrize("kind", ["project_task", "unselected_type"])
def test_items_that_must_not_sync_never_reach_google(app, world, connected, sync_on, run_sync, google_user, kind):
    sync_on("user")
    with app.app_context():
        from portal.models import Project
        task_id = db.session.scalars(select(Project).where(Project.organization_id == world["acme"])).first().tasks[0].id
        db.session.scalars(select(ActivityType).where(ActivityType.name == "Customer visit",
                                                      ActivityType.organization_id == world["acme"])).one() \
            .sync_to_google = False
        db.session.commit()
    extra = {"project_task": task_id} if kind == "project_task" else {"activity_type": "Customer visit"}
    make_activity(app, world["user"], start=at(), end=at(1), **extra)
    run_sync("user")
    assert google_user("user@acme.test").live() == []


def test_a_bad_google_event_does_not_stop_the_cycle(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    person = google_user("user@acme.test")
    person.insert(summary="Fine", start={"dateTime": at(), "timeZone": "UTC"}, end={"dateTime": at(1), "timeZone": "UTC"})
    person.insert(summary="Odd rule", recurrence=["RRULE:FREQ=MINUTELY;COUNT=3"],
                  start={"dateTime": at(2), "timeZone": "UTC"}, end={"dateTime": at(3), "timeZone": "UTC"})
    cycle = run_sync("user")
    assert cycle.status == "partial" and cycle.errors == 1
    assert [a.subject for a in activities(app)] == ["Fine"]
    with app.app_context():
        errors = db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.kind == "error")).all()
        assert len(errors) == 1 and "not synced" in errors[0].message


def test_cycle_rows_record_the_journal(app, world, connected, sync_on, run_sync):
    sync_on("user")
    make_activity(app, world["user"], start=at(), end=at(1))
    run_sync("user")
    with app.app_context():
        cycle = db.session.scalars(select(SyncCycle).where(SyncCycle.user_id == world["user"])).first()
        assert cycle.status == "ok" and cycle.duration_ms >= 0 and cycle.requests >= 2
        created = db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.kind == "created")).one()
        assert created.after["subject"] == "Planning" and created.side == "google"


def test_pulled_change_is_not_pushed_back(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    make_activity(app, world["user"], subject="Echo", start=at(), end=at(1))
    run_sync("user")
    person = google_user("user@acme.test")
    [event] = person.live()
    person.patch(event["id"], summary="Echo (from Google)")
    etag = person.get(event["id"])["etag"]
    pulled = run_sync("user")
    assert pulled.portal_updated == 1 and pulled.google_updated == 0
    quiet = run_sync("user")
    assert (quiet.google_updated, quiet.portal_updated, quiet.requests) == (0, 0, 1)
    assert person.get(event["id"])["etag"] == etag  # Google's copy was never written again


def test_portal_change_is_not_pulled_back(app, world, connected, sync_on, run_sync):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Outbound", start=at(), end=at(1))
    run_sync("user")
    with app.app_context():
        db.session.get(Activity, activity_id).subject = "Outbound (edited)"
        db.session.commit()
        version = db.session.get(Activity, activity_id).version
    pushed = run_sync("user")
    assert pushed.google_updated == 1
    # The next pull sees our own write come back from Google: the activity is not touched again.
    echo = run_sync("user")
    assert echo.portal_updated == 0
    with app.app_context():
        assert db.session.get(Activity, activity_id).version == version


def test_cycle_cut_short_by_a_killed_worker_is_closed_by_the_next(app, world, connected, sync_on, run_sync):
    sync_on("user")
    with app.app_context():
        db.session.add(SyncCycle(organization_id=world["acme"], user_id=world["user"], status="running"))
        db.session.commit()
    run_sync("user")
    with app.app_context():
        statuses = [c.status for c in db.session.scalars(select(SyncCycle).order_by(SyncCycle.id))]
    assert statuses == ["failed", "ok"]


def test_activity_linked_by_another_worker_meanwhile_is_left_to_that_link(app, world, connected):
    from portal.models import GoogleIntegration, Organization
    from portal.sync.engine import Cycle
    from portal.sync.engine.write_google import _new_portal_link, _store_links

    activity_id = make_activity(app, world["user"], start=at(), end=at(1))
    other_id = make_activity(app, world["user"], start=at(2), end=at(3))
    with app.app_context():
        organization = db.session.get(Organization, world["acme"])
        integration = db.session.scalars(select(GoogleIntegration)).one()
        cycle = Cycle(organization=organization, integration=integration,
                      row=SyncCycle(organization_id=organization.id))
        activity, other = db.session.get(Activity, activity_id), db.session.get(Activity, other_id)
        db.session.add(SyncLink(organization_id=organization.id, activity_id=activity_id, calendar_email="x",
                                origin="portal", generation=0, confirmed=False))
        db.session.commit()
        fresh = []
        _new_portal_link(cycle, activity, fresh)
        _new_portal_link(cycle, other, fresh)
        _store_links(cycle, fresh)  # stored together, one of them taken already
        db.session.commit()
        assert activity_id in cycle.failed_portal and other_id not in cycle.failed_portal
        assert [link.activity_id for link in cycle.links.values()] == [other_id]  # the other one is stored
        links = db.session.scalars(select(SyncLink).order_by(SyncLink.id)).all()
        assert [(link.activity_id, link.calendar_email) for link in links] == [
            (activity_id, "x"), (other_id, "user@acme.test")]  # the other worker's link is untouched
