"""What a user's "recent sync cycles" say: their own cycles, and the organization's outbox pushes that
carried their changes to Google, each counted for the user it was for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from portal.extensions import db
from portal.models import User
from portal.sync.models import SyncCycle
from tests.helpers import make_activity

START = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)


def at(hours=0):
    return (START + timedelta(hours=hours)).isoformat()


def push(app, world):
    from portal.sync.engine import push_pending

    with app.app_context():
        row = push_pending(world["acme"])
        assert row is not None and row.status == "ok", row and row.message
        return row.id


def recent(app, world, who, limit=5):
    from portal.sync.status import recent_cycles_for

    with app.app_context():
        return recent_cycles_for(db.session.get(User, world[who]), limit=limit)


def test_a_portal_edit_pushed_by_the_outbox_shows_in_the_owners_recent_cycles(
        app, world, connected, sync_on, run_sync, api, google_user):
    sync_on("user", "colleague")
    mine = make_activity(app, world["user"], subject="Review", start=at(), end=at(1))
    theirs = make_activity(app, world["colleague"], subject="Standup", start=at(2), end=at(3))
    run_sync("user")
    run_sync("colleague")

    assert api("user").patch(f"/api/v1/activities/{mine}", json={"subject": "Review (moved)"}).status_code == 200
    assert api("colleague").patch(f"/api/v1/activities/{theirs}", json={"location": "Room 4"}).status_code == 200
    outbox = push(app, world)
    assert [e["summary"] for e in google_user("user@acme.test").live()] == ["Review (moved)"]
    with app.app_context():
        row = db.session.get(SyncCycle, outbox)
        assert row.user_id is None and row.google_updated == 2  # the organization's view: both pushes

    newest, *older = recent(app, world, "user")
    assert newest.id == outbox and newest.outbox
    assert (newest.google_created, newest.google_updated, newest.google_deleted) == (0, 1, 0)
    assert newest.to_google == 1 and newest.from_google == 0
    assert newest.status == "ok" and newest.started_at is not None
    # Their own earlier cycle, which created the event, is there too, newest first.
    assert [c.outbox for c in older] == [False]
    assert older[0].google_created == 1

    [colleagues_push, _] = recent(app, world, "colleague")
    assert colleagues_push.id == outbox and colleagues_push.to_google == 1  # theirs, not the user's

    # A pull later: the user's own cycle comes first, the push stays in the list.
    run_sync("user")
    latest = recent(app, world, "user")
    assert [c.outbox for c in latest] == [False, True, False]
    assert latest[0].to_google == 0


def test_a_delete_pushed_by_the_outbox_counts_for_the_owner_and_problems_stay_theirs(
        app, world, connected, sync_on, run_sync, api):
    sync_on("user")
    mine = make_activity(app, world["user"], subject="Old", start=at(), end=at(1))
    run_sync("user")
    assert api("user").delete(f"/api/v1/activities/{mine}").status_code == 204
    outbox = push(app, world)
    [pushed, _] = recent(app, world, "user")
    assert pushed.id == outbox and pushed.google_deleted == 1 and pushed.to_google == 1
    assert (pushed.errors, pushed.conflicts) == (0, 0)
    # The admin had nothing pushed for them: the outbox cycle is not theirs.
    assert recent(app, world, "admin") == []


def test_recent_cycles_are_limited_and_own_cycles_keep_their_counts(app, world, connected, sync_on, run_sync,
                                                                     google_user):
    sync_on("user")
    google_user("user@acme.test").insert(summary="From Google", start={"dateTime": at()}, end={"dateTime": at(1)})
    first = run_sync("user")
    for n in range(6):  # each with a change, so each keeps its row (quiet cycles are only counted)
        google_user("user@acme.test").insert(summary=f"Also from Google {n}", start={"dateTime": at(n + 2)},
                                             end={"dateTime": at(n + 3)})
        run_sync("user")
    cycles = recent(app, world, "user", limit=5)
    assert len(cycles) == 5 and not any(c.outbox for c in cycles)
    assert [c.id for c in cycles] == sorted((c.id for c in cycles), reverse=True)
    everything = recent(app, world, "user", limit=50)
    assert everything[-1].id == first.id and everything[-1].portal_created == 1 and everything[-1].from_google == 1
    with app.app_context():
        assert db.session.scalar(select(SyncCycle.portal_created).where(SyncCycle.id == first.id)) == 1
