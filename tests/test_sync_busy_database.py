"""A cycle that meets a database another writer holds locked: what it records about itself, and that the
change it could not finish still reaches Google in the next cycle.

The contention is real: a second SQLite connection takes the write lock (BEGIN IMMEDIATE) while the cycle
runs, and the app's connections wait only a moment for it instead of the production half minute."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from portal.extensions import db
from portal.models import Activity
from portal.sync.models import SyncCycle, SyncLink
from tests.helpers import make_activity

START = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)
BUSY_MS = 200


def at(hours=0):
    return (START + timedelta(hours=hours)).isoformat()


@pytest.fixture
def short_busy_timeout(app):
    """The app's connections give up on a lock after BUSY_MS (their own listener runs after the portal's)."""
    def short(dbapi_connection, record):
        dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_MS}")

    with app.app_context():
        db.engine.dispose()
        event.listen(db.engine, "connect", short)
    yield
    with app.app_context():
        event.remove(db.engine, "connect", short)
        db.engine.dispose()


class WriteLock:
    """Another writer on the same database file, holding its write lock until released."""

    def __init__(self, app):
        self.path = app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
        self.connection = None

    def take(self):
        self.connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.connection.execute("BEGIN IMMEDIATE")

    def release(self):
        if self.connection is not None:
            self.connection.rollback()
            self.connection.close()
            self.connection = None


@pytest.fixture
def write_lock(app):
    lock = WriteLock(app)
    yield lock
    lock.release()


@pytest.fixture
def lock_at(write_lock):
    """`lock_at("claiming")`: the next cycle reaching that point finds the database locked by another writer."""
    from portal.sync import engine

    hooks = []

    def arm(point):
        taken = []

        def hook(name):
            if name == point and not taken:
                taken.append(name)
                write_lock.take()

        engine.CHECKPOINTS.append(hook)
        hooks.append(hook)

    yield arm
    for hook in hooks:
        engine.CHECKPOINTS.remove(hook)


def outbox_push(app, world):
    """Push Acme's outbox; what the cycle let escape (if anything) is returned, not raised."""
    from portal.sync.engine import push_pending

    with app.app_context():
        try:
            push_pending(world["acme"])
        except OperationalError as exc:
            return exc
        return None


def cycles(app):
    with app.app_context():
        rows = db.session.scalars(select(SyncCycle).where(SyncCycle.user_id.is_(None)).order_by(SyncCycle.id)).all()
        for row in rows:
            db.session.expunge(row)
        return rows


def deleted_in_portal(app, world, google_user, run_sync):
    activity_id = make_activity(app, world["user"], subject="Retro", start=at(), end=at(1))
    run_sync("user")
    owner = google_user("user@acme.test")
    assert [e["summary"] for e in owner.live()] == ["Retro"]
    with app.app_context():
        from portal.activities import delete_activity

        delete_activity(db.session.get(Activity, activity_id))
        db.session.commit()
    return owner


BUSY_TEXT = "database was busy"


@pytest.mark.parametrize("point", ["claiming", "written", "outbox"])
def test_a_delete_that_meets_a_locked_database_is_recorded_as_such_and_reaches_google_next_cycle(
        app, world, connected, sync_on, run_sync, google_user, short_busy_timeout, write_lock, lock_at, point):
    # "claiming": locked before anything went to Google; "written": Google has the delete, the portal could not
    # record it. Either way the lock is held until the cycle is over, and released before the next one.
    sync_on("user")
    owner = deleted_in_portal(app, world, google_user, run_sync)
    lock_at(point)
    outbox_push(app, world)
    assert write_lock.connection is not None, "the cycle never reached the point where the lock is taken"
    write_lock.release()

    assert outbox_push(app, world) is None
    first, *later = cycles(app)
    assert first.status == "failed"
    assert BUSY_TEXT in (first.message or ""), first.message
    assert "nothing was lost" in first.message
    assert "took over" not in (first.message or "")
    assert all(row.status in ("ok", "partial") for row in later), [(r.status, r.message) for r in later]
    assert owner.live() == []  # the delete reached Google
    with app.app_context():
        assert db.session.scalars(select(SyncLink)).all() == []


def test_a_cycle_whose_write_waits_on_a_lock_released_meanwhile_ends_normally(
        app, world, connected, sync_on, run_sync, google_user, short_busy_timeout, write_lock):
    # Contention shorter than the busy timeout is no error at all: the writer waits its turn.
    import threading

    from portal.sync import engine

    sync_on("user")
    owner = deleted_in_portal(app, world, google_user, run_sync)

    taken = []

    def hook(name):
        if name == "claiming" and not taken:
            taken.append(name)
            write_lock.take()
            threading.Timer(BUSY_MS / 4000, write_lock.release).start()

    engine.CHECKPOINTS.append(hook)
    try:
        assert outbox_push(app, world) is None
    finally:
        engine.CHECKPOINTS.remove(hook)
    [row] = cycles(app)
    assert row.status == "ok", row.message
    assert row.google_deleted == 1
    assert owner.live() == []


def test_a_user_cycle_that_meets_a_locked_database_says_so_and_syncs_next_time(
        app, world, connected, sync_on, run_sync, google_user, short_busy_timeout, write_lock, lock_at):
    sync_on("user")
    owner = deleted_in_portal(app, world, google_user, run_sync)
    lock_at("claiming")
    with app.app_context():
        from portal.sync.engine import run_user_cycle

        try:
            run_user_cycle(world["user"], trigger="test")
        except OperationalError:
            pass
    write_lock.release()
    later = run_sync("user")
    assert later.status == "ok", later.message
    with app.app_context():
        rows = db.session.scalars(select(SyncCycle).where(SyncCycle.user_id == world["user"])
                                  .order_by(SyncCycle.id)).all()
        busy = rows[-2]
        assert busy.status == "failed" and BUSY_TEXT in (busy.message or ""), busy.message
    assert owner.live() == []


class _PostgresError(Exception):
    def __init__(self, sqlstate):
        super().__init__(f"error {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize("original, busy", [
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("database table is locked: sync_links"), True),
    (sqlite3.OperationalError("no such table: sync_links"), False),
    (sqlite3.OperationalError("disk I/O error"), False),
    (_PostgresError("40P01"), True),  # deadlock_detected
    (_PostgresError("40001"), True),  # serialization_failure
    (_PostgresError("55P03"), True),  # lock_not_available
    (_PostgresError("42P01"), False),  # undefined_table: a bug, not a busy database
])
def test_which_database_errors_are_a_busy_database(original, busy):
    from portal.sync.engine.state import database_busy

    assert database_busy(OperationalError("UPDATE sync_links ...", {}, original)) is busy
    assert database_busy(original) is False  # not wrapped by SQLAlchemy: not the database's answer
