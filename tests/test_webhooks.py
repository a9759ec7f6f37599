"""Google push channels and `POST /webhooks/google/calendar`, against the emulator.

The end-to-end cases serve the portal on a real socket so that the emulator itself delivers the
notifications, as Google would.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from werkzeug.serving import make_server

from portal.extensions import db
from portal.models import GoogleIntegration
from portal.sync.channels import ensure_channel, stop_unwanted_channels
from portal.sync.models import CalendarSync, WatchChannel
from portal.sync.runtime import scheduling
from portal.sync.scheduler import claim_due_users, run_claim
from tests.conftest import EMAILS, PASSWORD

HOOK = "/webhooks/google/calendar"
SOON = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)


class Clock:
    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def clock(app):
    clock = Clock()
    scheduling(app).clock = clock
    return clock


@pytest.fixture
def live_portal(app):
    """The portal on a real socket, its address as PUBLIC_BASE_URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    app.config["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{server.server_port}/"
    yield server
    server.shutdown()
    server.server_close()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def sync_row(app, user_id) -> CalendarSync:
    with app.app_context():
        row = db.session.get(CalendarSync, user_id)
        db.session.expunge(row)
        return row


def channels(app, user_id=None) -> list[WatchChannel]:
    with app.app_context():
        query = select(WatchChannel).order_by(WatchChannel.created_at, WatchChannel.id)
        if user_id is not None:
            query = query.where(WatchChannel.user_id == user_id)
        rows = db.session.scalars(query).all()
        for row in rows:
            db.session.expunge(row)
        return rows


def google_channels(emulator) -> dict[str, dict]:
    return {c["id"]: c for c in emulator.control("GET", "/channels")["channels"]}


def synced_once(app, world, clock, who="user"):
    """Log the user in and run their first cycle the way a worker does (which opens the channel)."""
    client = app.test_client()
    assert client.post("/login", data={"email": EMAILS[who], "password": PASSWORD}).status_code == 302
    client.get("/")
    with app.app_context():
        [claim] = [c for c in claim_due_users(10, now=clock()) if c.user_id == world[who]]
        assert run_claim(claim, owner="test-worker", clock=clock).status == "ok"
    return client


# --- the whole way round ---------------------------------------------------------------------------------


def test_a_change_in_google_makes_the_user_due_through_a_notification(app, world, connected, sync_on, clock,
                                                                      live_portal, google_user):
    sync_on("user")
    synced_once(app, world, clock)
    [channel] = channels(app, world["user"])
    assert channel.address == app.config["PUBLIC_BASE_URL"].rstrip("/") + HOOK
    assert google_channels(connected)[channel.id]["calendar"] == EMAILS["user"]
    # Google confirms a new channel with a "sync" message: accepted, but nothing is due for it.
    assert wait_for(lambda: connected.stats()["notifications_delivered"] >= 1)
    scheduled = sync_row(app, world["user"]).due_at
    assert scheduled > clock()

    google_user(EMAILS["user"]).insert(summary="Lunch", start={"dateTime": SOON.isoformat()},
                                       end={"dateTime": (SOON + timedelta(hours=1)).isoformat()})
    assert wait_for(lambda: sync_row(app, world["user"]).due_at == clock())
    [channel] = channels(app, world["user"])
    assert channel.notifications == 1 and channel.last_notified_at == clock()


def test_without_a_public_address_no_channel_is_opened(app, world, connected, sync_on, clock):
    sync_on("user")
    synced_once(app, world, clock)
    assert channels(app) == [] and google_channels(connected) == {}


# --- notifications that are not ours ---------------------------------------------------------------------


@pytest.fixture
def known_channel(app, world, connected, sync_on, clock):
    """A channel as the portal stores it, with a token this test knows."""
    sync_on("user")
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=clock() + timedelta(minutes=5)))
        db.session.add(WatchChannel(id="c" * 32, organization_id=world["acme"], user_id=world["user"],
                                    resource_id="resource-1", token_hash=WatchChannel.hash("right-token"),
                                    address="https://portal.example" + HOOK, created_at=clock(),
                                    expires_at=clock() + timedelta(days=7)))
        db.session.commit()
    return {"X-Goog-Channel-ID": "c" * 32, "X-Goog-Channel-Token": "right-token",
            "X-Goog-Resource-ID": "resource-1", "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": "7"}


@pytest.mark.parametrize("change", [
    {"X-Goog-Channel-ID": None},
    {"X-Goog-Channel-ID": "d" * 32},
    {"X-Goog-Channel-ID": "x" * 5000},
    {"X-Goog-Channel-Token": None},
    {"X-Goog-Channel-Token": "wrong-token"},
    {"X-Goog-Resource-ID": "resource-2"},
])
def test_a_notification_that_is_not_ours_gets_404_and_changes_nothing(app, client, world, known_channel, clock,
                                                                      change):
    headers = {k: v for k, v in {**known_channel, **change}.items() if v is not None}
    before = sync_row(app, world["user"]).due_at
    response = client.post(HOOK, headers=headers)
    assert response.status_code == 404 and response.data == b""
    assert sync_row(app, world["user"]).due_at == before
    assert channels(app)[0].notifications == 0


def test_stopped_and_expired_channels_are_not_ours_any_more(app, client, world, known_channel, clock):
    clock.advance(days=8)
    assert client.post(HOOK, headers=known_channel).status_code == 404
    clock.advance(days=-8)
    with app.app_context():
        db.session.execute(update(WatchChannel).values(stopped_at=clock()))
        db.session.commit()
    assert client.post(HOOK, headers=known_channel).status_code == 404


def test_a_genuine_notification_makes_the_user_due_now(app, client, world, known_channel, clock):
    assert client.get(HOOK, headers=known_channel).status_code == 405
    assert client.post(HOOK, headers={**known_channel, "X-Goog-Resource-State": "sync",
                                      "X-Goog-Message-Number": "1"}).status_code == 204
    assert sync_row(app, world["user"]).due_at == clock() + timedelta(minutes=5)
    assert client.post(HOOK, headers=known_channel).status_code == 204
    assert sync_row(app, world["user"]).due_at == clock()


@pytest.mark.parametrize("change", [
    {"X-Goog-Resource-ID": "resource-\u00e9"},
    {"X-Goog-Channel-ID": "c" * 31 + "\u00e9"},
    {"X-Goog-Channel-Token": "right-token\u00e9"},
    {"X-Goog-Resource-State": "exists\u00e9"},
    {"X-Goog-Message-Number": "8\u00e9"},
    {"X-Goog-Message-Number": "eight"},
    {"X-Goog-Message-Number": "-8"},
    {"X-Goog-Message-Number": "9" * 40},
    {"X-Goog-Message-Number": None},
])
def test_a_malformed_notification_gets_400_and_changes_nothing(app, client, world, known_channel, clock, change):
    headers = {k: v for k, v in {**known_channel, **change}.items() if v is not None}
    before = sync_row(app, world["user"]).due_at
    response = client.post(HOOK, headers=headers)
    assert response.status_code == 400
    assert sync_row(app, world["user"]).due_at == before
    assert channels(app)[0].notifications == 0


def postpone(app, clock):
    """Move the user's next cycle away, so a test sees whether a notification brought it forward."""
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=clock() + timedelta(minutes=5)))
        db.session.commit()


def test_a_replayed_or_older_message_number_is_acknowledged_and_ignored(app, client, world, known_channel,
                                                                        clock):
    assert client.post(HOOK, headers=known_channel).status_code == 204  # number 7
    assert sync_row(app, world["user"]).due_at == clock()
    for number in ("7", "3"):
        postpone(app, clock)
        # Acknowledged: Google retries what is not 2xx, and a replay needs nothing more from it.
        assert client.post(HOOK, headers={**known_channel, "X-Goog-Message-Number": number}).status_code == 204
        assert sync_row(app, world["user"]).due_at == clock() + timedelta(minutes=5)
    assert channels(app)[0].notifications == 1
    # Google's numbers increase but are not consecutive.
    assert client.post(HOOK, headers={**known_channel, "X-Goog-Message-Number": "1000"}).status_code == 204
    assert sync_row(app, world["user"]).due_at == clock()
    assert channels(app)[0].notifications == 2


def test_a_flood_on_one_channel_makes_its_user_due_at_most_so_often(app, client, world, known_channel, clock):
    app.config["WEBHOOK_NOTIFICATIONS_PER_MINUTE"] = 3
    for number in range(10, 13):
        postpone(app, clock)
        assert client.post(HOOK, headers={**known_channel, "X-Goog-Message-Number": str(number)}).status_code == 204
        assert sync_row(app, world["user"]).due_at == clock()
    clock.advance(seconds=20)
    for number in range(13, 30):
        postpone(app, clock)
        assert client.post(HOOK, headers={**known_channel, "X-Goog-Message-Number": str(number)}).status_code == 204
        # Not now, but one share of the minute later (60 s / 3): the flood brings at most one cycle per
        # share, and that cycle reads whatever the notifications announced, so no change is lost.
        assert sync_row(app, world["user"]).due_at == clock() + timedelta(seconds=20)
    clock.advance(seconds=61)
    postpone(app, clock)
    assert client.post(HOOK, headers={**known_channel, "X-Goog-Message-Number": "30"}).status_code == 204
    assert sync_row(app, world["user"]).due_at == clock()


def test_the_webhook_needs_no_csrf_token(csrf_app):
    response = csrf_app.test_client().post(HOOK, headers={"X-Goog-Channel-ID": "nope", "X-Goog-Message-Number": "1"})
    assert response.status_code == 404  # refused as unknown, not as a form without a CSRF token


# --- the channel's life ----------------------------------------------------------------------------------


def test_a_channel_is_renewed_before_it_expires(app, world, connected, sync_on, clock, live_portal):
    sync_on("user")
    synced_once(app, world, clock)
    [first] = channels(app)
    with app.app_context():
        assert ensure_channel(world["user"], now=clock()).id == first.id  # far from expiry: no Google call
    requests = connected.stats()["requests"].get("calendar.events.watch", 0)
    assert requests == 1

    clock.advance(days=6, hours=12)  # within a day of the expiry Google granted
    with app.app_context():
        second_id = ensure_channel(world["user"], now=clock()).id
    assert second_id != first.id
    on_google = google_channels(connected)
    assert on_google[first.id]["stopped"] is True and on_google[second_id]["stopped"] is False
    first, second = channels(app)
    assert second.id == second_id
    assert first.stopped_at == clock() and second.stopped_at is None


def test_switching_sync_off_stops_the_channel(app, world, connected, sync_on, clock, live_portal, api):
    app.config["SYNC_PUSH_INLINE"] = True
    sync_on("user")
    synced_once(app, world, clock)
    [channel] = channels(app)
    assert api("user").put("/api/v1/me/calendar-sync", json={"enabled": False}).status_code == 200
    assert google_channels(connected)[channel.id]["stopped"] is True
    assert channels(app)[0].stopped_at is not None


def test_channel_maintenance_stops_channels_of_users_without_sync(app, world, connected, sync_on, clock,
                                                                  live_portal):
    sync_on("user", "colleague")
    synced_once(app, world, clock, "user")
    synced_once(app, world, clock, "colleague")
    sync_on("colleague", enabled=False)  # no scheduler and no in-line push: left for the maintenance
    assert len([c for c in google_channels(connected).values() if not c["stopped"]]) == 2
    with app.app_context():
        assert stop_unwanted_channels(now=clock()) == 1
    live = {c["calendar"] for c in google_channels(connected).values() if not c["stopped"]}
    assert live == {EMAILS["user"]}


def test_no_channel_calls_for_an_organization_that_is_switched_off(app, world, connected, sync_on, clock,
                                                                   live_portal):
    sync_on("user")
    synced_once(app, world, clock)
    with app.app_context():
        db.session.execute(update(GoogleIntegration).values(enabled=False))
        db.session.execute(update(CalendarSync).values(enabled=False))
        db.session.commit()
    before = connected.stats()["requests_total"]
    clock.advance(days=7)
    with app.app_context():
        assert ensure_channel(world["user"], now=clock()) is None
        assert stop_unwanted_channels(now=clock() - timedelta(days=7)) == 0
    assert connected.stats()["requests_total"] == before


def test_a_refused_channel_is_not_asked_for_again_within_the_hour(app, world, connected, sync_on, clock,
                                                                  live_portal):
    connected.add_fault(status=400, reason="invalid", path_regex="/watch$", method="POST")
    sync_on("user")
    synced_once(app, world, clock)
    [refused] = channels(app)
    assert refused.stopped_at is not None and "400 invalid" in refused.error_message
    connected.clear_faults()
    with app.app_context():
        assert ensure_channel(world["user"], now=clock() + timedelta(minutes=30)) is None
        assert ensure_channel(world["user"], now=clock() + timedelta(minutes=61)) is not None
    assert connected.stats()["requests"].get("calendar.events.watch", 0) == 2


# --- push in place of polling -----------------------------------------------------------------------------

SAFETY = timedelta(minutes=15)
INTERVAL = timedelta(seconds=30)


def trusted_channel(app, world, clock, connected, who="user"):
    """Sync once with a public address and wait for Google's "sync" message: the channel is then trusted."""
    client = synced_once(app, world, clock, who)
    [channel] = [c for c in channels(app, world[who]) if c.stopped_at is None]
    assert wait_for(lambda: sync_row(app, world[who]).push_expires_at is not None)
    assert sync_row(app, world[who]).push_expires_at == channel.expires_at
    return client, channel


def cycle_at(app, world, clock, who="user"):
    """Claim the user at the clock's time, as a worker does, run the cycle; returns (claim, next due)."""
    with app.app_context():
        [claim] = [c for c in claim_due_users(10, now=clock()) if c.user_id == world[who]]
        assert run_claim(claim, owner="test-worker", clock=clock).status == "ok"
    return claim, sync_row(app, world[who]).due_at


def test_with_a_trusted_channel_an_idle_user_is_polled_every_safety_interval(app, world, connected, sync_on,
                                                                             clock, live_portal):
    sync_on("user")
    trusted_channel(app, world, clock, connected)
    due = sync_row(app, world["user"]).due_at  # set by the first cycle, before the channel was confirmed
    assert due == clock() + INTERVAL
    clock.advance(seconds=30)
    before = connected.stats()["requests"]
    claim, due = cycle_at(app, world, clock)
    assert due == claim.due_at + SAFETY
    clock.advance(minutes=15)
    claim, due = cycle_at(app, world, clock)
    assert due == claim.due_at + SAFETY
    after = connected.stats()["requests"]
    # Each safety poll is one list; a trusted channel costs no further look (no watch, no token).
    assert {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)} \
        == {"calendar.events.list": 2}


def test_a_change_in_google_runs_the_cycle_at_once_with_a_trusted_channel(app, world, connected, sync_on, clock,
                                                                          live_portal, google_user):
    sync_on("user")
    trusted_channel(app, world, clock, connected)
    clock.advance(seconds=30)
    cycle_at(app, world, clock)
    assert sync_row(app, world["user"]).due_at == clock() + SAFETY
    google_user(EMAILS["user"]).insert(summary="Lunch", start={"dateTime": SOON.isoformat()},
                                       end={"dateTime": (SOON + timedelta(hours=1)).isoformat()})
    assert wait_for(lambda: sync_row(app, world["user"]).due_at == clock())  # not 15 minutes later
    claim, due = cycle_at(app, world, clock)
    with app.app_context():
        from portal.models import Activity

        assert db.session.scalar(select(Activity.subject).where(Activity.owner_id == world["user"])) == "Lunch"
    assert due == clock() + SAFETY


def test_without_a_public_address_the_user_is_polled_every_interval(app, world, connected, sync_on, clock,
                                                                    live_portal):
    sync_on("user")
    trusted_channel(app, world, clock, connected)
    app.config["PUBLIC_BASE_URL"] = None
    clock.advance(seconds=30)
    claim, due = cycle_at(app, world, clock)
    assert due == claim.due_at + INTERVAL


def test_a_refused_channel_leaves_the_user_polled_every_interval(app, world, connected, sync_on, clock,
                                                                 live_portal):
    connected.add_fault(status=400, reason="invalid", path_regex="/watch$", method="POST")
    sync_on("user")
    synced_once(app, world, clock)
    clock.advance(seconds=30)
    claim, due = cycle_at(app, world, clock)
    assert sync_row(app, world["user"]).push_expires_at is None and due == claim.due_at + INTERVAL


def test_the_trust_ends_when_the_channel_is_due_for_renewal_and_the_new_channel_is_trusted(
        app, world, connected, sync_on, clock, live_portal):
    sync_on("user")
    _, first = trusted_channel(app, world, clock, connected)
    renew_at = first.expires_at - timedelta(seconds=app.config["SYNC_CHANNEL_RENEW_BEFORE_SECONDS"])
    clock.now = renew_at - timedelta(minutes=5)
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=clock(), last_seen_at=clock()))
        db.session.commit()
    claim, due = cycle_at(app, world, clock)
    assert due == renew_at  # not 15 minutes on: that cycle renews the channel
    clock.now = renew_at
    connected.control("POST", "/clock", {"offset_seconds": (renew_at - datetime.now(UTC)).total_seconds()})
    claim, due = cycle_at(app, world, clock)
    assert due == claim.due_at + INTERVAL  # polled until Google confirms the new channel
    second = channels(app, world["user"])[-1]
    assert second.id != first.id
    assert wait_for(lambda: sync_row(app, world["user"]).push_expires_at == second.expires_at)
    assert channels(app, world["user"])[0].stopped_at is not None


def test_a_stopped_or_lost_channel_puts_the_user_back_on_the_interval_at_once(app, world, connected, sync_on,
                                                                             clock, live_portal):
    sync_on("user", "colleague")
    trusted_channel(app, world, clock, connected)
    trusted_channel(app, world, clock, connected, "colleague")
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=clock() + SAFETY))
        db.session.commit()
        from portal.sync.channels import distrust_lost_channels, stop_channels

        # Closed without the sync's knowing (say, by hand in the database): the maintenance notices.
        db.session.execute(update(WatchChannel).where(WatchChannel.user_id == world["colleague"])
                           .values(stopped_at=clock()))
        db.session.commit()
        assert distrust_lost_channels(now=clock()) == 1
        assert stop_channels(world["user"], now=clock()) == 1
        db.session.commit()
    for who in ("user", "colleague"):
        row = sync_row(app, world[who])
        assert row.push_expires_at is None and row.due_at == clock() + INTERVAL


def test_a_new_public_address_puts_the_user_back_on_the_interval_until_a_channel_there_is_confirmed(
        app, world, connected, sync_on, clock, live_portal):
    sync_on("user")
    trusted_channel(app, world, clock, connected)
    app.config["PUBLIC_BASE_URL"] = app.config["PUBLIC_BASE_URL"].replace("127.0.0.1", "localhost")
    with app.app_context():
        from portal.sync.channels import distrust_lost_channels

        assert distrust_lost_channels(now=clock()) == 1
    clock.advance(seconds=30)
    cycle_at(app, world, clock)  # opens a channel at the new address
    newest = channels(app, world["user"])[-1]
    assert newest.address.startswith("http://localhost:")
    assert wait_for(lambda: sync_row(app, world["user"]).push_expires_at == newest.expires_at)


def test_the_profile_says_whether_updates_from_google_are_instant(app, world, connected, sync_on, clock,
                                                                  live_portal):
    sync_on("user")
    client, _ = trusted_channel(app, world, clock, connected)
    body = client.get("/profile/calendar-sync").get_data(as_text=True)
    assert "Instant updates from Google: on (also checked every 15 min)." in body
    with app.app_context():
        from portal.sync.channels import stop_channels

        assert stop_channels(world["user"]) == 1
    body = client.get("/profile/calendar-sync").get_data(as_text=True)
    assert "Instant updates from Google: off; Google is checked every 30 s." in body


def test_a_channel_that_missed_a_change_is_replaced_and_the_user_polled_meanwhile(app, world, connected, sync_on,
                                                                                 clock, live_portal, google_user):
    sync_on("user")
    _, first = trusted_channel(app, world, clock, connected)
    clock.advance(seconds=30)
    cycle_at(app, world, clock)
    assert sync_row(app, world["user"]).due_at == clock() + SAFETY
    # Google's notification is lost: the web hook fails for a moment (a deployment, say).
    view = app.view_functions["webhooks.google_calendar"]
    app.view_functions["webhooks.google_calendar"] = lambda: ("", 503)
    try:
        delivered = connected.stats()["notifications_delivered"]
        google_user(EMAILS["user"]).insert(summary="Lunch", start={"dateTime": SOON.isoformat()},
                                           end={"dateTime": (SOON + timedelta(hours=1)).isoformat()})
        assert wait_for(lambda: connected.stats()["notifications_delivered"] > delivered)
    finally:
        app.view_functions["webhooks.google_calendar"] = view
    assert sync_row(app, world["user"]).due_at == clock() + SAFETY  # nothing came
    clock.advance(minutes=15)
    claim, due = cycle_at(app, world, clock)  # the safety poll finds the change no notification announced
    with app.app_context():
        from portal.models import Activity

        assert db.session.scalar(select(Activity.subject).where(Activity.owner_id == world["user"])) == "Lunch"
    old, new = channels(app, world["user"])
    assert old.id == first.id and old.stopped_at == clock() and "silent" in old.error_message
    assert new.stopped_at is None and due <= clock() + INTERVAL  # polled until the new channel is confirmed
    assert wait_for(lambda: sync_row(app, world["user"]).push_expires_at == new.expires_at)
