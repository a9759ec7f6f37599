"""Idle cycles are cheap and counted, not stored.

A logged-in user with nothing changed on either side costs one Google request and a handful of SQL
statements per cycle; such a quiet cycle writes no cycle row, only a counter on the user's sync state,
and every page that lists cycles shows the quiet ones as counts. A cycle that changed something or failed
keeps its row. The Calendar API's resource is built once per process and shared by every client and
thread, and each request still goes out as its own user.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select, update

from portal.extensions import db
from portal.sync.models import CalendarSync, SyncCycle
from portal.sync.scheduler import claim_due_users, run_claim
from tests.conftest import EMAILS, PASSWORD

SOON = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def login(app, who):
    client = app.test_client()
    response = client.post("/login", data={"email": EMAILS[who], "password": PASSWORD})
    assert response.status_code == 302
    return client


class Statements:
    """Counts the SQL statements sent while it is active."""

    def __init__(self, engine):
        self.engine, self.sent = engine, []

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._count)

    def _count(self, conn, cursor, statement, *args):
        self.sent.append(statement)


def scheduled_cycle(app):
    """One scheduler cycle of the (single) due user: claim it, run it; (row, statements of the cycle)."""
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=datetime.now(UTC) - timedelta(seconds=1)))
        db.session.commit()
        [claim] = claim_due_users(5)
        with Statements(db.engine) as statements:
            row = run_claim(claim, owner="test")
        return row, statements.sent


def stored_cycles(app, user_id):
    with app.app_context():
        return db.session.scalar(select(func.count(SyncCycle.id)).where(SyncCycle.user_id == user_id))


def state_of(app, user_id) -> CalendarSync:
    with app.app_context():
        row = db.session.get(CalendarSync, user_id)
        db.session.expunge(row)
        return row


@pytest.fixture
def synced(app, world, connected, sync_on):
    """The user logged in, sync on, first sync done (it keeps its row)."""
    sync_on("user")
    client = login(app, "user")
    client.get("/")  # presence: a logged-in user is synced
    row, _ = scheduled_cycle(app)
    assert row.status == "ok" and stored_cycles(app, world["user"]) == 1
    return client


def test_an_idle_cycle_costs_few_statements_and_one_request_and_stores_no_row(app, world, synced, connected):
    connected.control("DELETE", "/stats")
    row, statements = scheduled_cycle(app)
    assert row.status == "ok"
    # Load the user (one query: user, sync state, organization, integration), read the outbox, one update
    # of the sync state (its end, its count, its next due time, given back). The pending answers are read
    # only when the user's sync state says an answer was given since.
    assert len(statements) <= 3, statements
    assert sum(s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) for s in statements) == 1, statements
    assert connected.stats()["requests_total"] == 1
    assert stored_cycles(app, world["user"]) == 1  # the first sync's only
    state = state_of(app, world["user"])
    assert state.quiet_cycles == 1 and state.last_quiet_at == state.quiet_since
    assert state.claimed_until is None and state.due_at > datetime.now(UTC)


def test_quiet_cycles_are_counted_and_every_page_shows_them(app, world, synced, google_user, login_as):
    for _ in range(3):
        assert scheduled_cycle(app)[0].status == "ok"
    assert stored_cycles(app, world["user"]) == 1
    assert state_of(app, world["user"]).quiet_cycles == 3
    profile = synced.get("/profile/calendar-sync").get_data(as_text=True)
    assert "4 quiet cycles" in profile  # the first sync found nothing either: it is stored, and quiet

    # A change in Google: that cycle keeps its row, and takes the quiet run before it along.
    google_user(EMAILS["user"]).insert(summary="Dentist", start={"dateTime": SOON.isoformat()},
                                       end={"dateTime": (SOON + timedelta(hours=1)).isoformat()})
    row, _ = scheduled_cycle(app)
    assert row.status == "ok" and row.portal_created == 1
    assert stored_cycles(app, world["user"]) == 2
    assert state_of(app, world["user"]).quiet_cycles == 0
    with app.app_context():
        stored = db.session.scalars(select(SyncCycle).where(SyncCycle.user_id == world["user"])
                                    .order_by(SyncCycle.id.desc())).first()
        assert stored.quiet_before == 3 and stored.quiet_first_at <= stored.quiet_last_at < stored.started_at
    scheduled_cycle(app)  # quiet again: a new run
    profile = synced.get("/profile/calendar-sync").get_data(as_text=True)
    # Newest first: the new quiet one, the change, the four quiet ones before it.
    assert profile.index("1 from Google") < profile.index("4 quiet cycles")

    admin = login_as("admin")
    page = admin.get("/settings/integrations/google-calendar/diagnostics").get_data(as_text=True)
    assert "4 idle cycles" in page and "1 idle cycle " in page
    assert "1 quiet cycle since" in page  # the health table's current run
    assert "6 fine" in page  # the chart counts every cycle: first sync, 3 quiet, the change, 1 quiet


def test_a_cycle_that_failed_keeps_its_row(app, world, synced, connected):
    scheduled_cycle(app)
    connected.add_fault(kind="error", status=503, path_regex="/events$", method="GET", count=1)
    row, _ = scheduled_cycle(app)
    assert row.status == "failed"
    assert stored_cycles(app, world["user"]) == 2
    with app.app_context():
        failed = db.session.scalars(select(SyncCycle).where(SyncCycle.user_id == world["user"],
                                                            SyncCycle.status == "failed")).one()
        assert failed.quiet_before == 1
    state = state_of(app, world["user"])
    assert state.quiet_cycles == 0 and state.failures == 1 and state.claimed_until is None


def test_the_calendar_resource_is_shared_and_each_request_goes_as_its_user(app, world, connected):
    from portal.integration import calendar_client, integration_for
    from portal.models import Organization

    users = ["user", "colleague", "admin"]
    with app.app_context():
        row = integration_for(db.session.get(Organization, world["acme"]))
        clients = {who: calendar_client(row, EMAILS[who]) for who in users}
    assert len({id(client.service) for client in clients.values()}) == 1

    def work(who):
        client = clients[who]
        events = client.service.events()
        for n in range(6):
            client.execute(events.insert(calendarId="primary", body={
                "summary": who, "start": {"dateTime": (SOON + timedelta(hours=n)).isoformat()},
                "end": {"dateTime": (SOON + timedelta(hours=n, minutes=30)).isoformat()}}))
        batch = client.new_batch()
        for n in range(3):
            batch.add(events.insert(calendarId="primary", body={
                "summary": who, "start": {"date": (SOON + timedelta(days=n + 1)).date().isoformat()},
                "end": {"date": (SOON + timedelta(days=n + 2)).date().isoformat()}}))
        client.execute_batch(batch)

    threads = [threading.Thread(target=work, args=(who,)) for who in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for who in users:
        answer = clients[who].list_changes(None, time_min=(SOON - timedelta(days=1)).isoformat())
        # Each calendar holds exactly its own user's events, made by that user.
        assert sorted(e["summary"] for e in answer["items"]) == [who] * 9
        assert {e["creator"]["email"] for e in answer["items"]} == {EMAILS[who]}


def test_a_request_without_its_users_connection_is_never_sent(app, world, connected):
    from portal.integration import calendar_client, integration_for
    from portal.models import Organization

    with app.app_context():
        client = calendar_client(integration_for(db.session.get(Organization, world["acme"])), EMAILS["user"])
    with pytest.raises(RuntimeError, match="without the http"):
        client.service.events().list(calendarId="primary").execute()
    assert "items" in client.execute(client.service.events().list(calendarId="primary"))


def test_collapsed_rows_and_the_chart_count_the_quiet_runs():
    from zoneinfo import ZoneInfo

    from portal.diagnostics import build_timeline, collapse_cycles

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    class Row:
        def __init__(self, minutes_ago, status="ok", changed=0, quiet_before=0, run_minutes=0):
            self.started_at = now - timedelta(minutes=minutes_ago)
            self.status, self.message, self.error_code, self.user_id = status, None, None, 1
            self.portal_created, self.errors = changed, 0
            self.portal_updated = self.portal_deleted = self.google_created = self.google_updated = 0
            self.google_deleted = self.conflicts = 0
            self.quiet_before = quiet_before
            self.quiet_last_at = self.started_at - timedelta(seconds=30)
            self.quiet_first_at = self.quiet_last_at - timedelta(minutes=run_minutes)

    rows = [Row(10, changed=2, quiet_before=120, run_minutes=60), Row(100, status="failed", quiet_before=1)]
    current = [(20, now - timedelta(minutes=9), now), (5, now - timedelta(minutes=3), now - timedelta(minutes=1))]
    collapsed = collapse_cycles(rows, quiet_now=current)
    assert [(r.kind, r.count) for r in collapsed] == [("idle", 25), ("changed", 1), ("idle", 120),
                                                      ("failed", 1), ("idle", 1)]
    assert collapsed[0].first == now - timedelta(minutes=9) and collapsed[0].last == now
    timeline = build_timeline([], [], now=now, zone=ZoneInfo("Europe/Amsterdam"),
                              quiet_runs=[*current, (120, rows[0].quiet_first_at, rows[0].quiet_last_at)])
    assert timeline.totals["ok"] == 145
