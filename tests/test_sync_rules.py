"""The sync's harder rules: first-sync matching and its window, 410, faults, conflicts, series, deletes."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ChangeRecord
from portal.sync.models import CalendarSync, SyncJournalEntry, SyncLink
from tests.helpers import make_activity
from tests.test_sync_engine import activities

NOW = datetime.now(UTC).replace(microsecond=0, second=0, minute=0)


def at(days=0, hours=0):
    return (NOW + timedelta(days=days, hours=hours)).isoformat()


def slot(days, hours=0, length=1, zone="Europe/Amsterdam"):
    start = NOW + timedelta(days=days, hours=hours)
    return ({"dateTime": start.isoformat(), "timeZone": zone},
            {"dateTime": (start + timedelta(hours=length)).isoformat(), "timeZone": zone})


def test_first_sync_links_matches_and_skips_old_items(app, world, connected, sync_on, run_sync, google_user):
    person = google_user("user@acme.test")
    start, end = slot(2)
    person.insert(summary="Quarterly review", start=start, end=end)
    old_start, old_end = slot(-45)
    person.insert(summary="Old google item", start=old_start, end=old_end)
    series_start, series_end = slot(-60)
    person.insert(summary="Old series, still running", start=series_start, end=series_end,
                  recurrence=["RRULE:FREQ=WEEKLY"])
    make_activity(app, world["user"], subject="Quarterly review", start=at(2), end=at(2, 1),
                  time_zone="Europe/Amsterdam")
    make_activity(app, world["user"], subject="Old portal item", start=at(-40), end=at(-40, 1))
    make_activity(app, world["user"], subject="Portal series, still running", start=at(-50), end=at(-50, 1),
                  recurrence=["RRULE:FREQ=WEEKLY"])
    make_activity(app, world["user"], subject="Portal series, ended", start=at(-90), end=at(-90, 1),
                  recurrence=["RRULE:FREQ=DAILY;COUNT=3"])
    sync_on("user")
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message

    subjects = sorted(a.subject for a in activities(app))
    assert subjects == sorted(["Quarterly review", "Old portal item", "Portal series, still running",
                               "Portal series, ended", "Old series, still running"])
    assert subjects.count("Quarterly review") == 1  # linked, not copied
    in_google = sorted(e["summary"] for e in person.live())
    assert in_google == sorted(["Quarterly review", "Old google item", "Old series, still running",
                                "Portal series, still running"])
    with app.app_context():
        assert db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.kind == "linked")).all()


def test_equivalent_rule_spellings_match_on_first_sync(app, world, connected, sync_on, run_sync, google_user):
    start, end = slot(1)
    google_user("user@acme.test").insert(summary="Standup", start=start, end=end,
                                         recurrence=["RRULE:BYDAY=WE,MO;FREQ=WEEKLY;INTERVAL=1"])
    make_activity(app, world["user"], subject="Standup", start=at(1), end=at(1, 1),
                  recurrence=["RRULE:FREQ=WEEKLY;BYDAY=MO,WE;WKST=MO"])
    sync_on("user")
    run_sync("user")
    assert len(activities(app)) == 1
    assert len(google_user("user@acme.test").live()) == 1


def test_410_resyncs_without_duplicates(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    make_activity(app, world["user"], subject="Mine", start=at(1), end=at(1, 1))
    start, end = slot(2)
    google_user("user@acme.test").insert(summary="Theirs", start=start, end=end)
    run_sync("user")
    connected.control("POST", "/faults", {"kind": "expire_sync_tokens", "user": "user@acme.test"})
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    assert sorted(a.subject for a in activities(app)) == ["Mine", "Theirs"]
    assert sorted(e["summary"] for e in google_user("user@acme.test").live()) == ["Mine", "Theirs"]
    with app.app_context():
        assert db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.kind == "resync")).one()


def test_lost_insert_answer_creates_no_duplicate(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    make_activity(app, world["user"], subject="Once only", start=at(1), end=at(1, 1))
    connected.control("POST", "/faults", {"kind": "drop_response", "method": "POST",
                                          "path_regex": "/calendar/v3/calendars/.*/events$", "count": 1})
    run_sync("user")
    assert connected.control("GET", "/stats")["faults_triggered"] == 1
    run_sync("user")
    run_sync("user")
    assert [e["summary"] for e in google_user("user@acme.test").live()] == ["Once only"]
    assert len(activities(app)) == 1
    with app.app_context():
        link = db.session.scalars(select(SyncLink)).one()
        assert link.confirmed and link.base_state["subject"] == "Once only"


def test_lost_batch_answer_creates_no_duplicate(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    for n in range(3):
        make_activity(app, world["user"], subject=f"Item {n}", start=at(1, n), end=at(1, n + 1))
    # The first insert inside the batch is applied, then the connection drops: no answer for any of them.
    connected.control("POST", "/faults", {"kind": "drop_response", "method": "POST",
                                          "path_regex": "/calendar/v3/calendars/.*/events$", "count": 1})
    run_sync("user")
    assert connected.control("GET", "/stats")["faults_triggered"] == 1
    run_sync("user")
    assert sorted(e["summary"] for e in google_user("user@acme.test").live()) == ["Item 0", "Item 1", "Item 2"]


def test_server_errors_and_rate_limits_are_retried(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    for n in range(2):
        make_activity(app, world["user"], subject=f"Item {n}", start=at(1, n), end=at(1, n + 1))
    connected.control("POST", "/faults", {"kind": "reset", "method": "POST",
                                          "path_regex": "/calendar/v3/calendars/.*/events$", "count": 1})
    connected.control("POST", "/faults", {"kind": "error", "status": 503, "reason": "backendError",
                                          "method": "POST", "path_regex": "/events$", "count": 1})
    connected.control("POST", "/faults", {"kind": "error", "status": 429, "reason": "rateLimitExceeded",
                                          "path_regex": "/events$", "method": "POST", "count": 2})
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    assert connected.control("GET", "/stats")["faults_triggered"] == 4
    assert sorted(e["summary"] for e in google_user("user@acme.test").live()) == ["Item 0", "Item 1"]


def test_persistent_failure_waits_for_the_next_cycle_and_loses_nothing(app, world, connected, sync_on, run_sync,
                                                                        google_user):
    sync_on("user")
    make_activity(app, world["user"], subject="Patient", start=at(1), end=at(1, 1))
    connected.control("POST", "/faults", {"kind": "error", "status": 500, "reason": "backendError",
                                          "method": "POST", "count": 50})
    failed = run_sync("user")
    assert failed.status in ("partial", "failed")
    with app.app_context():
        assert db.session.scalars(select(ChangeRecord).where(ChangeRecord.processed_at.is_(None))).all()
    connected.control("DELETE", "/faults")
    assert run_sync("user").status == "ok"
    assert [e["summary"] for e in google_user("user@acme.test").live()] == ["Patient"]


def test_conflicting_edits_keep_the_later_and_journal_the_loser(app, world, connected, sync_on, run_sync,
                                                                 google_user):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Budget", location="Room 1", start=at(1), end=at(1, 1))
    run_sync("user")
    person = google_user("user@acme.test")
    [event] = person.live()
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        activity.subject = "Budget (portal)"
        activity.description = "Portal notes"
        db.session.commit()
    person.patch(event["id"], summary="Budget (google)", location="Room 9")  # later than the portal edit
    cycle = run_sync("user")
    assert cycle.conflicts == 1
    [activity] = activities(app)
    # Different fields merge; the same field goes to the later change.
    assert (activity.subject, activity.location, activity.description) == ("Budget (google)", "Room 9",
                                                                             "Portal notes")
    google = person.get(event["id"])
    assert (google["summary"], google["location"], google["description"]) == ("Budget (google)", "Room 9",
                                                                               "Portal notes")
    with app.app_context():
        conflict = db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.kind == "conflict")).one()
        assert conflict.field == "subject" and conflict.before == "Budget (portal)" and conflict.side == "portal"


def test_edit_beats_delete(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Keep me", start=at(1), end=at(1, 1))
    run_sync("user")
    person = google_user("user@acme.test")
    [event] = person.live()
    person.delete(event["id"])
    with app.app_context():
        db.session.get(Activity, activity_id).subject = "Keep me (edited)"
        db.session.commit()
    run_sync("user")
    [activity] = activities(app)
    assert activity.subject == "Keep me (edited)"
    assert [e["summary"] for e in person.live()] == ["Keep me (edited)"]


def test_recurring_series_created_and_deleted_whole(app, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Weekly", start=at(1), end=at(1, 1),
                                recurrence=["RRULE:FREQ=WEEKLY;COUNT=5"])
    run_sync("user")
    person = google_user("user@acme.test")
    [series] = person.live()
    assert series["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=5"]
    assert len(person.live(singleEvents=True)) == 5
    with app.app_context():
        db.session.get(Activity, activity_id).mark_deleted()
        db.session.commit()
    run_sync("user")
    assert person.live(singleEvents=True) == []


def test_participant_with_sync_on_brings_owners_item_to_google(app, world, connected, sync_on, run_sync,
                                                               google_user):
    sync_on("colleague")  # the owner ("user") has sync off
    make_activity(app, world["user"], subject="Shared", start=at(1), end=at(1, 1), participants=["colleague@acme.test"])
    run_sync("colleague")
    owners_copy = google_user("user@acme.test").live()
    assert [e["summary"] for e in owners_copy] == ["Shared"]
    assert owners_copy[0]["organizer"]["email"] == "user@acme.test"
    assert [e["summary"] for e in google_user("colleague@acme.test").live()] == ["Shared"]


def test_integration_error_pauses_the_organization(app, world, connected, sync_on, run_sync):
    sync_on("user")
    make_activity(app, world["user"], start=at(1), end=at(1, 1))
    connected.control("DELETE", "/delegations", {"client_id": "104857600000000000099"})
    failed = run_sync("user")
    assert failed.status == "failed"
    paused = run_sync("user")
    assert paused.status == "skipped" and paused.requests == 0
    with app.app_context():
        from portal.models import GoogleIntegration
        row = db.session.scalars(select(GoogleIntegration)).one()
        assert row.error_code and row.is_paused


def test_user_outside_the_workspace_gets_their_own_banner(app, world, connected, sync_on, run_sync):
    with app.app_context():
        from portal.accounts import add_user
        from portal.models import Organization
        stranger = add_user(db.session.get(Organization, world["acme"]), "stranger@acme.test", "Stranger", "user",
                            "long-enough")
        db.session.commit()
        CalendarSync.for_user(stranger).switch(True)
        db.session.commit()
        world["stranger"] = stranger.id
    sync_on("user")
    assert run_sync("stranger").status == "failed"
    assert run_sync("user").status == "ok"  # the others go on
    with app.app_context():
        row = db.session.get(CalendarSync, world["stranger"])
        assert row.error_code and "Workspace" in (row.error_cause + row.error_fix)
