"""The first sync's preview: what switching sync on would do, read against the emulator, writing nothing; then
the first sync itself does exactly that. And the first sync's progress, items done of its plan."""

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Activity, ActivityType, ChangeRecord, Project
from portal.sync.models import CalendarSync, Lease, SyncCycle, SyncJournalEntry, SyncLink
from tests.helpers import make_activity

NOW = datetime.now(UTC).replace(microsecond=0, second=0, minute=0)
READS = {"oauth2.token", "calendar.events.list", "calendar.events.get", "calendar.events.instances", "calendar.calendars.get"}


def at(days=0, hours=0):
    return (NOW + timedelta(days=days, hours=hours)).isoformat()


def slot(days, hours=0, length=1, zone="Europe/Amsterdam"):
    start = NOW + timedelta(days=days, hours=hours)
    return ({"dateTime": start.isoformat(), "timeZone": zone},
            {"dateTime": (start + timedelta(hours=length)).isoformat(), "timeZone": zone})


def unsynced_type_and_task(app, world):
    with app.app_context():
        task_id = db.session.scalars(select(Project).where(Project.organization_id == world["acme"])).first() \
            .tasks[0].id
        db.session.scalars(select(ActivityType).where(ActivityType.name == "Customer visit",
                                                      ActivityType.organization_id == world["acme"])).one() \
            .sync_to_google = False
        db.session.commit()
    return task_id


def realistic_mix(app, world, person):
    """Both sides of a user who has used the portal and Google Calendar apart until now."""
    task_id = unsynced_type_and_task(app, world)
    start, end = slot(2)
    person.insert(summary="Quarterly review", start=start, end=end)  # on both sides: linked
    make_activity(app, world["user"], subject="Quarterly review", start=at(2), end=at(2, 1))
    start, end = slot(5, 3)
    person.insert(summary="Budget talk", start=start, end=end, description="Google's words")  # both, differs
    make_activity(app, world["user"], subject="Budget talk", start=at(5, 3), end=at(5, 4), description="Ours")
    start, end = slot(3)
    person.insert(summary="Dentist", start=start, end=end)  # Google only
    start, end = slot(-10)
    person.insert(summary="Standup", start=start, end=end, recurrence=["RRULE:FREQ=WEEKLY;BYDAY=" +
                                                                        (NOW - timedelta(days=10)).strftime("%a")[:2].upper()])
    person.insert(summary="Company day", start={"date": (NOW + timedelta(days=6)).date().isoformat()},
                  end={"date": (NOW + timedelta(days=7)).date().isoformat()})
    home = (NOW + timedelta(days=2)).date()
    person.insert(summary="Working from home", eventType="workingLocation", start={"date": home.isoformat()},
                  end={"date": (home + timedelta(days=1)).isoformat()}, visibility="public",
                  transparency="transparent", workingLocationProperties={"type": "homeOffice", "homeOffice": {}})
    old_home = (NOW - timedelta(days=60)).date()  # a Google type that stays in Google, even older than the window
    person.insert(summary="Old home day", eventType="workingLocation", start={"date": old_home.isoformat()},
                  end={"date": (old_home + timedelta(days=1)).isoformat()}, visibility="public",
                  transparency="transparent",
                  workingLocationProperties={"type": "homeOffice", "homeOffice": {}})
    make_activity(app, world["user"], subject="Kick-off", start=at(4), end=at(4, 1),
                  participants=["colleague@acme.test"])  # portal only
    make_activity(app, world["user"], subject="Portal series", start=at(-50), end=at(-50, 1),
                  recurrence=["RRULE:FREQ=WEEKLY"])  # still running: goes to Google
    start, end = slot(-45)
    person.insert(summary="Old Google item", start=start, end=end)  # older than 30 days: left alone
    make_activity(app, world["user"], subject="Old portal item", start=at(-40), end=at(-40, 1))
    make_activity(app, world["user"], subject="Just too old", start=at(-31), end=at(-31, 1))
    make_activity(app, world["user"], subject="Customer at home", start=at(1), end=at(1, 1),
                  activity_type="Customer visit")  # type not synced
    make_activity(app, world["user"], subject="Design work", start=at(1, 3), end=at(1, 4), project_task=task_id)
    make_activity(app, world["colleague"], subject="Not mine", start=at(1), end=at(1, 1))


def google_snapshot(person):
    return sorted((e["id"], e.get("etag"), e.get("updated"), e.get("status")) for e in person.list(showDeleted=True))


def db_snapshot(app):
    with app.app_context():
        counts = {model.__name__: db.session.scalar(select(func.count()).select_from(model))
                  for model in (Activity, SyncLink, SyncJournalEntry, SyncCycle, ChangeRecord, Lease, CalendarSync)}
        states = [(s.user_id, s.enabled, s.sync_token, s.full_sync_needed, s.first_synced_at, s.first_sync_total,
                   s.error_code) for s in db.session.scalars(select(CalendarSync).order_by(CalendarSync.user_id))]
        versions = sorted(db.session.execute(select(Activity.id, Activity.version, Activity.updated_at)).all())
        return counts, states, versions


def shown(html, section):
    """(count, subjects) of one of the preview's sections as the page shows it."""
    count = int(re.search(rf'id="preview-{section}-count">(\d+)', html).group(1))
    listed = re.search(rf'<ul class="preview-list" id="preview-{section}">(.*?)</ul>', html, re.S)
    subjects = re.findall(r'class="preview-subject">([^<]*)<', listed.group(1)) if listed else []
    return count, sorted(subjects)


def linked_subjects(app, user_id, origin=None):
    with app.app_context():
        query = select(Activity.subject).join(SyncLink, SyncLink.activity_id == Activity.id).where(
            Activity.owner_id == user_id, SyncLink.confirmed.is_(True))
        if origin:
            query = query.where(SyncLink.origin == origin)
        return sorted(db.session.scalars(query))


def test_preview_numbers_are_what_the_first_sync_then_does(app, world, connected, login_as, run_sync,
                                                           google_user):
    person = google_user("user@acme.test")
    realistic_mix(app, world, person)
    client = login_as("user")
    page = client.get("/profile/calendar-sync").get_data(as_text=True)
    assert "Preview first sync" in page

    google_before, db_before = google_snapshot(person), db_snapshot(app)
    connected.control("DELETE", "/stats")
    answer = client.post("/profile/calendar-sync/preview", headers={"HX-Request": "true",
                                                                    "HX-Target": "first-sync-preview"})
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert "<html" not in html  # the partial only

    # Nothing was written, on either side; Google was only read.
    asked = set(connected.control("GET", "/stats")["requests"])
    assert asked and asked <= READS, asked
    assert google_snapshot(person) == google_before
    assert db_snapshot(app) == db_before

    linked, to_google, to_portal, older = (shown(html, s) for s in ("linked", "to-google", "to-portal", "older"))
    assert linked == (2, ["Budget talk", "Quarterly review"])
    assert to_google == (2, ["Kick-off", "Portal series"])
    assert to_portal == (3, ["Company day", "Dentist", "Standup"])
    assert older == (3, ["Just too old", "Old Google item", "Old portal item"])
    assert shown(html, "portal-only") == (2, ["Customer at home", "Design work"])
    assert "Not mine" not in html  # a colleague's item
    assert "home day" not in html and "Working from" not in html  # Google's day markers stay in Google

    # Switch on, let the first sync run: it does what the preview said.
    assert client.post("/profile/calendar-sync", data={"enabled": "on"}).status_code == 302
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    assert (cycle.google_created, cycle.portal_created) == (to_google[0], to_portal[0])
    with app.app_context():
        journal = db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.cycle_id == cycle.id)).all()
        assert sum(e.kind == "linked" for e in journal) == linked[0]
        old_ids = db.session.scalars(select(Activity.id).where(Activity.subject.in_(
            ["Old portal item", "Just too old"]))).all()
        assert db.session.scalar(select(func.count()).select_from(SyncLink).where(
            SyncLink.activity_id.in_(old_ids))) == 0
    assert linked_subjects(app, world["user"], "both") == linked[1]
    assert linked_subjects(app, world["user"], "portal") == to_google[1]
    assert linked_subjects(app, world["user"], "google") == to_portal[1]
    in_google = sorted(e["summary"] for e in person.live())
    assert in_google == sorted(linked[1] + to_google[1] + to_portal[1]
                               + ["Old Google item", "Old home day", "Working from home"])
    with app.app_context():
        state = db.session.get(CalendarSync, world["user"])
        assert state.first_sync_total == state.first_sync_done >= linked[0] + to_google[0] + to_portal[0]


@pytest.mark.parametrize("seed", [3, 17, 42])
def test_random_mixes_preview_what_the_first_sync_does(app, world, connected, login_as, run_sync, google_user,
                                                       seed):
    rng = random.Random(seed)
    person = google_user("user@acme.test")
    for number in range(rng.randint(4, 9)):
        days, hour = rng.randint(-40, 20), rng.randint(0, 8)
        where = rng.choice(["both", "google", "portal"])
        subject = f"Item {number}"
        if where in ("both", "google"):
            start, end = slot(days, hour)
            person.insert(summary=subject, start=start, end=end)
        if where in ("both", "portal"):
            make_activity(app, world["user"], subject=subject, start=at(days, hour), end=at(days, hour + 1))
    client = login_as("user")
    html = client.post("/profile/calendar-sync/preview", headers={"HX-Request": "true",
                                                                  "HX-Target": "first-sync-preview"}).get_data(as_text=True)
    linked, to_google, to_portal = (shown(html, s) for s in ("linked", "to-google", "to-portal"))
    client.post("/profile/calendar-sync", data={"enabled": "on"})
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    assert (cycle.google_created, cycle.portal_created) == (to_google[0], to_portal[0])
    assert linked_subjects(app, world["user"], "both") == linked[1]
    assert linked_subjects(app, world["user"], "portal") == to_google[1]
    assert linked_subjects(app, world["user"], "google") == to_portal[1]


def test_preview_without_the_organizations_integration_says_why(app, world, login_as):
    client = login_as("user")
    answer = client.post("/profile/calendar-sync/preview")
    assert answer.status_code == 200
    assert "integration is not switched on" in answer.get_data(as_text=True)


def test_preview_when_sync_is_on_already_says_so_and_reads_nothing(app, world, connected, login_as, sync_on):
    sync_on("user")
    connected.control("DELETE", "/stats")
    html = login_as("user").post("/profile/calendar-sync/preview").get_data(as_text=True)
    assert "already on" in html
    assert connected.control("GET", "/stats")["requests"] == {}


def test_preview_when_google_refuses_is_a_clear_message_and_pauses_nothing(app, world, connected, login_as):
    from portal.integration import integration_for
    from portal.models import Organization
    from tests.conftest import SERVICE_CLIENT_ID

    connected.control("DELETE", "/delegations", {"client_id": SERVICE_CLIENT_ID})
    answer = login_as("user").post("/profile/calendar-sync/preview")
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert "Google could not be read" in html and 'role="alert"' in html
    with app.app_context():  # a preview notes nothing: no banner, no pause, no cycle
        assert not integration_for(db.session.get(Organization, world["acme"])).is_paused
        assert db.session.get(CalendarSync, world["user"]) is None
        assert db.session.scalar(select(func.count()).select_from(SyncCycle)) == 0


def progress_of(client):
    answer = client.get("/profile/calendar-sync/progress", headers={"HX-Request": "true",
                                                                   "HX-Target": "first-sync-progress"})
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


def test_first_sync_progress_counts_items_done_and_stops_polling_when_done(app, world, connected, login_as,
                                                                           run_sync, google_user):
    from portal.sync import engine

    app.config["SYNC_BATCH_SIZE"] = 2  # a slice of two items per write batch
    for number in range(3):
        make_activity(app, world["user"], subject=f"Mine {number}", start=at(number + 1), end=at(number + 1, 1))
    person = google_user("user@acme.test")
    for number in range(2):
        start, end = slot(number + 1, 4)
        person.insert(summary=f"Theirs {number}", start=start, end=end)
    client = login_as("user")
    assert 'id="first-sync-progress"></div>' in progress_of(client)  # off: nothing to show, no polling
    client.post("/profile/calendar-sync", data={"enabled": "on"})
    waiting = progress_of(client)
    assert "First sync starting" in waiting and 'hx-trigger="every 2s"' in waiting

    seen = []

    def look(name):
        if name == "first-sync-slice":  # the page as the user's browser polls it between two batches
            html = progress_of(client)
            seen.append((re.search(r'id="first-sync-count">([^<]*)<', html).group(1), "hx-trigger" in html))

    engine.CHECKPOINTS.append(look)
    try:
        cycle = run_sync("user")
    finally:
        engine.CHECKPOINTS.remove(look)
    assert cycle.status == "ok", cycle.message
    assert seen == [("2 of 5 items done", True), ("4 of 5 items done", True), ("5 of 5 items done", True)]
    done = progress_of(client)
    assert "First sync done" in done and "5 of 5 items</strong>" in done and "hx-trigger" not in done
    assert sorted(e["summary"] for e in person.live()) == ["Mine 0", "Mine 1", "Mine 2", "Theirs 0", "Theirs 1"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(SyncLink)) == 5


def test_a_first_sync_in_one_batch_counts_too(app, world, connected, login_as, run_sync):
    make_activity(app, world["user"], subject="Only one", start=at(1), end=at(1, 1))
    client = login_as("user")
    client.post("/profile/calendar-sync", data={"enabled": "on"})
    run_sync("user")
    assert "1 of 1 item</strong>" in progress_of(client)
    later = run_sync("user")  # the next cycles are no first sync: the count stays as it was
    assert later.status == "ok"
    assert "1 of 1 item</strong>" in progress_of(client)


def test_progress_does_not_poll_while_the_organizations_sync_is_paused(app, world, connected, login_as):
    from portal.integration import integration_for
    from portal.models import Organization

    client = login_as("user")
    client.post("/profile/calendar-sync", data={"enabled": "on"})
    assert "hx-trigger" in progress_of(client)
    with app.app_context():
        integration_for(db.session.get(Organization, world["acme"])).record_error(
            "delegation_missing", "Delegation was revoked.", "Grant it again.")
        db.session.commit()
    assert "hx-trigger" not in progress_of(client)
