"""When the sync runs: presence, claims, backoff, the lease, and the triggers after a portal change.

Time is a fake clock handed to the scheduling code (`scheduling(app).clock` and the `now=` arguments); the
Google side is the emulator, reached through the real client libraries.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from portal.extensions import db
from portal.models import ChangeRecord, GoogleIntegration, User
from portal.sync.engine import run_user_cycle
from portal.sync.models import CalendarSync, SyncCycle
from portal.sync.runtime import scheduling
from portal.sync.scheduler import (
    Claim,
    SyncScheduler,
    claim_due_users,
    finish_claim,
    next_due,
    run_claim,
)
from tests.conftest import EMAILS, PASSWORD
from tests.helpers import make_activity

SOON = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)


def at(hours=0):
    return (SOON + timedelta(hours=hours)).isoformat()


class Clock:
    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(app):
    clock = Clock()
    scheduling(app).clock = clock
    return clock


def login(app, who):
    client = app.test_client()
    response = client.post("/login", data={"email": EMAILS[who], "password": PASSWORD})
    assert response.status_code == 302
    return client


def sync_row(app, user_id) -> CalendarSync:
    with app.app_context():
        row = db.session.get(CalendarSync, user_id)
        db.session.expunge(row)
        return row


def claim(app, clock, limit=50):
    with app.app_context():
        return claim_due_users(limit, now=clock())


def claimed_ids(app, clock, limit=50):
    return sorted(c.user_id for c in claim(app, clock, limit))


def finished_cycles(app, user_id):
    with app.app_context():
        return db.session.scalar(select(func.count(SyncCycle.id)).where(SyncCycle.user_id == user_id,
                                                                     SyncCycle.status != "running"))


def cycles_of(app, user_id):
    with app.app_context():
        return db.session.scalar(select(func.count(SyncCycle.id)).where(SyncCycle.user_id == user_id))


# --- presence: only logged-in users are pulled --------------------------------------------------------


def test_logged_out_users_are_not_pulled(app, world, connected, sync_on, clock):
    sync_on("user", "colleague")
    assert claimed_ids(app, clock) == []  # sync on, but nobody has been seen
    client = login(app, "user")
    client.get("/")
    assert claimed_ids(app, clock) == [world["user"]]

    client.post("/logout")
    assert sync_row(app, world["user"]).last_seen_at is None
    clock.advance(3600)
    assert claimed_ids(app, clock) == []


def test_presence_lasts_the_session_lifetime(app, world, connected, sync_on, clock):
    sync_on("user")
    login(app, "user").get("/")
    lifetime = app.config["PERMANENT_SESSION_LIFETIME"]
    clock.advance(lifetime - 60)
    assert claimed_ids(app, clock) == [world["user"]]
    clock.advance(120)
    assert claimed_ids(app, clock) == []


def test_an_api_call_counts_as_being_logged_in(app, world, connected, sync_on, clock, api):
    sync_on("user")
    assert api("user").get("/api/v1/activities").status_code == 200
    assert sync_row(app, world["user"]).last_seen_at == clock()
    assert claimed_ids(app, clock) == [world["user"]]


def test_switching_sync_on_syncs_at_once_even_right_after_navigating(app, world, connected, clock, api):
    client = api("user")
    client.get("/api/v1/activities")  # presence noted; no sync row yet, so nothing to record it in
    assert client.put("/api/v1/me/calendar-sync", json={"enabled": True}).status_code == 200
    assert claimed_ids(app, clock) == [world["user"]]


def test_navigation_makes_the_user_due_at_most_every_ten_seconds(app, world, connected, sync_on, clock):
    sync_on("user")
    client = login(app, "user")
    client.get("/")
    [first] = claim(app, clock)
    with app.app_context():
        finish_claim(first, "ok", now=clock())
    scheduled = sync_row(app, world["user"]).due_at
    assert scheduled == clock() + timedelta(seconds=30)

    clock.advance(5)
    client.get("/profile/calendar-sync")  # within the debounce: nothing changes
    assert sync_row(app, world["user"]).due_at == scheduled
    assert claim(app, clock) == []

    clock.advance(6)
    client.get("/")
    row = sync_row(app, world["user"])
    assert row.due_at == clock() and row.last_seen_at == clock()
    assert claimed_ids(app, clock) == [world["user"]]


def test_anonymous_and_static_requests_are_not_presence(app, world, connected, sync_on, clock):
    sync_on("user")
    client = app.test_client()
    client.get("/login")
    client.get("/static/portal.css")
    assert sync_row(app, world["user"]).last_seen_at is None


def test_a_revoked_or_expired_token_is_no_presence(app, world, connected, sync_on, clock):
    from datetime import UTC, datetime

    from portal.extensions import db
    from portal.models import User
    from portal.signin_models import ApiToken

    sync_on("user")
    with app.app_context():
        user = db.session.get(User, world["user"])
        revoked, revoked_secret = ApiToken.issue(user, name="Old script")
        expired, expired_secret = ApiToken.issue(user, name="Older script")
        revoked.revoked_at = datetime.now(UTC)
        expired.expires_at = datetime(2020, 1, 1, tzinfo=UTC)
        db.session.add_all([revoked, expired])
        db.session.commit()
    for secret in (revoked_secret, expired_secret):
        answer = app.test_client().get("/api/v1/activities", headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 401
    assert sync_row(app, world["user"]).last_seen_at is None


# --- claims ---------------------------------------------------------------------------------------------


def test_a_claim_is_exclusive_until_it_expires(app, world, connected, sync_on, clock):
    sync_on("user", "colleague", "admin")
    for who in ("user", "colleague", "admin"):
        login(app, who).get("/")
    first = claimed_ids(app, clock, limit=2)
    second = claimed_ids(app, clock)
    assert len(first) == 2 and len(second) == 1 and not set(first) & set(second)
    assert claim(app, clock) == []
    clock.advance(app.config["SYNC_LEASE_SECONDS"])  # a worker died holding them: the claims lapse
    assert len(claimed_ids(app, clock)) == 3


def test_concurrent_claimers_never_share_a_user(app, world, connected, sync_on, clock):
    sync_on("user", "colleague", "admin", "helpdesk")
    for who in ("user", "colleague", "admin", "helpdesk"):
        login(app, who).get("/")
    results, barrier = [], threading.Barrier(4)

    def claimer():
        barrier.wait()
        with app.app_context():
            results.append([c.user_id for c in claim_due_users(2, now=clock())])

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everyone = [user_id for batch in results for user_id in batch]
    assert len(everyone) == len(set(everyone)) and everyone
    # A claimer that lost a race simply claims less; the rest is there for the next look.
    rest = claimed_ids(app, clock)
    assert sorted(everyone + rest) == sorted(world[w] for w in ("user", "colleague", "admin", "helpdesk"))


def test_disabled_or_paused_organization_is_not_claimed_and_google_not_called(app, world, connected, sync_on,
                                                                              clock):
    sync_on("user")
    login(app, "user").get("/")
    before = connected.stats()["requests_total"]
    with app.app_context():
        db.session.execute(update(GoogleIntegration).values(enabled=False))
        db.session.commit()
    assert claim(app, clock) == []
    with app.app_context():
        row = db.session.scalar(select(GoogleIntegration))
        row.enabled = True
        row.record_error("delegation_missing", "cause", "fix")  # an integration-level error pauses the sync
        db.session.commit()
    assert claim(app, clock) == []
    assert connected.stats()["requests_total"] == before


def test_next_cycle_keeps_the_interval_rhythm(app):
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with app.app_context():
        on_time = Claim(1, start, start + timedelta(seconds=1), start)
        assert next_due(on_time) == start + timedelta(seconds=30)
        late = Claim(1, start, start + timedelta(seconds=45), start)  # a whole interval behind: new rhythm
        assert next_due(late) == start + timedelta(seconds=75)
        first = Claim(1, None, start, start)
        assert next_due(first) == start + timedelta(seconds=30)


# --- cycles: backoff and the lease ---------------------------------------------------------------------


def test_a_failing_user_backs_off_exponentially_and_recovers(app, world, connected, sync_on, clock):
    sync_on("user")
    login(app, "user").get("/")
    connected.add_fault(status=503, path_regex="/events$", method="GET", user=EMAILS["user"])
    app.config["SYNC_RETRY_ATTEMPTS"] = 1

    delays = []
    for _ in range(3):
        [claimed] = claim(app, clock)
        with app.app_context():
            assert run_claim(claimed, owner="test", clock=clock).status == "failed"
        row = sync_row(app, world["user"])
        delays.append((row.failures, (row.backoff_until - clock()).total_seconds()))
        # Navigation does not shorten a backoff.
        clock.advance(11)
        login(app, "user").get("/")
        assert claim(app, clock) == []
        clock.advance((row.backoff_until - clock()).total_seconds())
    assert delays == [(1, 30.0), (2, 60.0), (3, 120.0)]

    connected.clear_faults()
    [claimed] = claim(app, clock)
    with app.app_context():
        assert run_claim(claimed, owner="test", clock=clock).status == "ok"
    row = sync_row(app, world["user"])
    assert (row.failures, row.backoff_until, row.error_code) == (0, None, None)
    assert row.due_at == clock() + timedelta(seconds=30)


def test_backoff_is_capped(app, world, connected, sync_on, clock):
    sync_on("user")
    login(app, "user").get("/")
    with app.app_context():
        db.session.execute(update(CalendarSync).values(failures=20))
        db.session.commit()
        [claimed] = claim_due_users(1, now=clock())
        finish_claim(claimed, "failed", now=clock())
    row = sync_row(app, world["user"])
    assert row.failures == 21
    assert row.backoff_until == clock() + timedelta(seconds=app.config["SYNC_BACKOFF_CAP_SECONDS"])


def test_a_claimed_user_is_never_run_twice_at_once_even_after_a_trigger(app, world, connected, sync_on, clock):
    # The claim is the user's lease (no second round trip takes one): while it holds, a trigger that makes the
    # user due again gets them neither claimed again nor run by another caller of the engine.
    sync_on("user")
    client = login(app, "user")
    client.get("/")
    [claimed] = claim(app, clock)
    clock.advance(11)
    client.get("/")  # navigation while the cycle runs: due again
    assert sync_row(app, world["user"]).due_at == clock()
    assert claim(app, clock) == []
    with app.app_context():
        assert run_user_cycle(world["user"], trigger="manual") is None
        assert run_claim(claimed, owner="this-worker", clock=clock).status == "ok"
    # Given back at the end of the cycle, and due at once for the trigger that came meanwhile.
    row = sync_row(app, world["user"])
    assert row.claimed_until is None and row.due_at == clock()
    assert [c.user_id for c in claim(app, clock)] == [world["user"]]


def test_a_user_held_by_another_caller_is_not_claimed(app, world, connected, sync_on, clock):
    sync_on("user")
    login(app, "user").get("/")
    with app.app_context():
        db.session.execute(update(CalendarSync).values(claimed_until=clock() + timedelta(seconds=60)))
        db.session.commit()
    assert claim(app, clock) == []
    clock.advance(61)  # the holder died: its hold runs out, and the user is claimed again
    [claimed] = claim(app, clock)
    assert not claimed.clean  # so the cycle looks for a row its holder left "running"
    with app.app_context():
        assert run_claim(claimed, owner="this-worker", clock=clock).status == "ok"
    assert sync_row(app, world["user"]).claimed_until is None


def test_a_trigger_during_a_cycle_is_not_overwritten(app, world, connected, sync_on, clock):
    sync_on("user")
    client = login(app, "user")
    client.get("/")
    [claimed] = claim(app, clock)
    clock.advance(11)
    client.get("/")  # navigation while the cycle runs
    with app.app_context():
        finish_claim(claimed, "ok", now=clock())
    assert sync_row(app, world["user"]).due_at == clock()


# --- changes in the portal -------------------------------------------------------------------------------


def test_a_portal_change_is_in_google_right_after_the_commit(app, world, connected, sync_on, clock, api,
                                                             google_user):
    app.config["SYNC_PUSH_INLINE"] = True
    sync_on("colleague")  # the owner's own sync is off: the participant's brings the item to Google
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=clock() + timedelta(hours=1)))
        db.session.commit()
    response = api("user").post("/api/v1/activities", json={
        "subject": "Budget review", "start": at(), "end": at(1), "time_zone": "Europe/Amsterdam",
        "activity_type": "Meeting", "participants": [EMAILS["colleague"]]})
    assert response.status_code == 201, response.get_json()
    assert [e["summary"] for e in google_user(EMAILS["user"]).live()] == ["Budget review"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(ChangeRecord.processed_at.is_(None))) == 0
        cycle = db.session.scalar(select(SyncCycle).order_by(SyncCycle.id.desc()))
        assert (cycle.trigger, cycle.user_id, cycle.google_created) == ("change", None, 1)
    # The participant with sync on is due now (the owner has no sync to run).
    assert sync_row(app, world["colleague"]).due_at <= datetime.now(UTC)


def test_without_inline_push_the_change_waits_in_the_outbox_and_involved_users_are_due(
        app, world, connected, sync_on, clock, google_user):
    sync_on("user", "colleague")
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=clock() + timedelta(hours=1)))
        db.session.commit()
    make_activity(app, world["user"], subject="Planning", start=at(), end=at(1),
                  participants=[EMAILS["colleague"]])
    assert google_user(EMAILS["user"]).live() == []
    for who in ("user", "colleague"):
        assert sync_row(app, world[who]).due_at <= datetime.now(UTC)
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(ChangeRecord.processed_at.is_(None))) == 1


def flush_new_activity(user_id, subject):
    """A user creates an activity through the domain path, flushed (its outbox row written) but not committed;
    inside an app context."""
    from portal.activities import clean_activity, create_activity
    from portal.changes import changed_by

    user = db.session.get(User, user_id)
    data = clean_activity({"subject": subject, "start": at(), "end": at(1), "time_zone": "Europe/Amsterdam"},
                          organization=user.organization, actor=user)
    changed_by(db.session, user.id)
    create_activity(user.organization, data)
    db.session.flush()


def test_a_rolled_back_change_triggers_nothing(app, world, connected, sync_on, clock):
    app.config["SYNC_PUSH_INLINE"] = True
    sync_on("user")
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=clock() + timedelta(hours=1)))
        db.session.commit()
    before = connected.stats()["requests_total"]
    with app.app_context():
        flush_new_activity(world["user"], "Never")
        db.session.rollback()
    assert connected.stats()["requests_total"] == before
    assert sync_row(app, world["user"]).due_at == clock() + timedelta(hours=1)


@pytest.mark.parametrize("savepoint", ["released", "rolled back"])
def test_a_savepoint_inside_a_change_leaves_its_triggers_to_the_transaction(app, world, connected, sync_on, clock,
                                                                           savepoint):
    # The sync stores its items in savepoints. Releasing one used to dispatch the change's triggers: from a
    # connection of its own, which could not see the uncommitted change (nobody was made due, and the commit
    # found nothing left to dispatch) or waited on the transaction's write lock ("database is locked").
    # Rolling one back (one item that failed) dropped the triggers of the whole transaction.
    sync_on("user")
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=clock() + timedelta(hours=1)))
        db.session.commit()
        flush_new_activity(world["user"], "Later")
        with pytest.raises(LookupError) if savepoint == "rolled back" else nullcontext():
            with db.session.begin_nested():
                if savepoint == "rolled back":
                    raise LookupError("one item that could not be stored")
        assert sync_row(app, world["user"]).due_at == clock() + timedelta(hours=1)  # not before the commit
        db.session.commit()
    assert sync_row(app, world["user"]).due_at <= datetime.now(UTC)


def test_changes_pulled_from_google_are_not_pushed_back(app, world, connected, sync_on, clock, run_sync,
                                                        google_user):
    app.config["SYNC_PUSH_INLINE"] = True
    sync_on("user")
    run_sync("user")
    google_user(EMAILS["user"]).insert(summary="From Google", start={"dateTime": at(), "timeZone": "UTC"},
                                       end={"dateTime": at(1), "timeZone": "UTC"})
    assert run_sync("user").portal_created == 1
    with app.app_context():
        triggers = db.session.scalar(select(func.count()).where(SyncCycle.trigger == "change"))
    assert triggers == 0


# --- the scheduler itself ------------------------------------------------------------------------------


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_the_background_scheduler_syncs_a_navigating_user_and_pushes_changes(app, world, connected, sync_on,
                                                                           google_user):
    app.config.update(SYNC_POLL_SECONDS=0.2, SYNC_WORKER_THREADS=2)
    sync_on("user", "colleague")
    google_user(EMAILS["user"]).insert(summary="Made in Google", start={"dateTime": at(), "timeZone": "UTC"},
                                       end={"dateTime": at(1), "timeZone": "UTC"})
    scheduler = scheduling(app).start(worker_id="test-worker")
    try:
        assert scheduler.running
        login(app, "user").get("/")
        assert wait_for(lambda: finished_cycles(app, world["user"]) >= 1)
        assert cycles_of(app, world["colleague"]) == 0  # never logged in
        with app.app_context():
            cycle = db.session.scalar(select(SyncCycle).where(SyncCycle.user_id == world["user"]))
            assert (cycle.status, cycle.portal_created) == ("ok", 1)

        make_activity(app, world["user"], subject="Made in the portal", start=at(2), end=at(3))
        assert wait_for(lambda: any(e["summary"] == "Made in the portal"
                                    for e in google_user(EMAILS["user"]).live()))
    finally:
        scheduling(app).stop()
    assert not scheduler.running


def test_claims_follow_due_times_not_a_polling_tick(app, world, connected, sync_on):
    # Looking for users made due elsewhere happens only every 10 minutes here; the next cycles still come
    # every second, when due: the scheduler sleeps until the earliest due time.
    app.config.update(SYNC_POLL_SECONDS=600, SYNC_INTERVAL_SECONDS=1, SYNC_WORKER_THREADS=2)
    sync_on("user")
    scheduling(app).start(worker_id="test-worker")
    try:
        login(app, "user").get("/")  # a trigger in this process: synced now
        assert wait_for(lambda: finished_cycles(app, world["user"]) >= 1)  # the first sync keeps its row
        assert wait_for(lambda: (sync_row(app, world["user"]).quiet_cycles or 0) >= 3)
    finally:
        scheduling(app).stop()


def test_the_scheduler_does_not_start_in_tests_unless_asked(app, world, connected):
    assert app.config["SCHEDULER_ENABLED"] is False
    app.test_client().get("/login")
    assert scheduling(app).scheduler is None


def test_the_scheduler_starts_with_the_first_request_when_enabled(app, world, connected):
    app.config["SCHEDULER_ENABLED"] = True
    try:
        app.test_client().get("/login")
        assert isinstance(scheduling(app).scheduler, SyncScheduler) and scheduling(app).scheduler.running
        first = scheduling(app).scheduler
        app.test_client().get("/login")
        assert scheduling(app).scheduler is first
    finally:
        scheduling(app).stop()


def test_the_worker_command_syncs_until_told_to_stop(app, world, connected, sync_on):
    """`flask --app portal worker` as its own process, on the same (SQLite) database as this test."""
    import os
    import signal
    import subprocess
    import sys

    sync_on("user")
    login(app, "user").get("/")
    env = {**os.environ, "PORTAL_SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
           "PORTAL_SECRET_KEY": "test-secret", "PORTAL_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"],
           "PORTAL_GOOGLE_TOKEN_URI": connected.token_uri, "PORTAL_GOOGLE_API_ENDPOINT": connected.api_endpoint,
           "PORTAL_GOOGLE_BATCH_URI": connected.batch_uri, "PORTAL_SYNC_POLL_SECONDS": "0.2"}
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "portal", "worker", "--threads", "1",
                               "--id", "test-worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: finished_cycles(app, world["user"]) >= 1, timeout=20), \
            worker.stdout.read1().decode() if worker.poll() is not None else "no cycle"
    finally:
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=20)[0].decode()
    assert worker.returncode == 0, output
    assert "Sync worker test-worker (threads: 1, SQLite: one job at a time)" in output and "Stopping" in output


def test_a_switched_off_organization_pushes_nothing_and_journals_nothing(app, world, connected, sync_on, clock):
    app.config["SYNC_PUSH_INLINE"] = True
    sync_on("user")
    with app.app_context():
        db.session.execute(update(GoogleIntegration).values(enabled=False))
        db.session.commit()
    before = connected.stats()["requests_total"]
    make_activity(app, world["user"], subject="Offline", start=at(), end=at(1))
    assert connected.stats()["requests_total"] == before
    with app.app_context():
        assert db.session.scalar(select(func.count(SyncCycle.id))) == 0
        assert db.session.scalar(select(func.count()).where(ChangeRecord.processed_at.is_(None))) == 1
