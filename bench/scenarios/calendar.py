"""One user's calendar on both sides, and one measured cycle of theirs run in the harness's process.

`populate(world, n)`: n events in the user's Google calendar and n activities of theirs in the portal, half of
them the same meetings (same subject, start and end: the first sync links them), the rest on one side only.
`measure_cycle`: one `run_user_cycle` with the harness's counters: wall time, CPU of this process (the
emulator runs in its own), SQL statements (a SQLAlchemy event), Google round trips (the emulator's log).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests

from bench.measure import StatementCounter, reset_peak_rss, sample_process

SLOT = timedelta(minutes=20)  # every item has a slot of its own: only the intended pairs match


@dataclass
class Calendar:
    user_id: int
    email: str


def _slot(n: int) -> datetime:
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + n * SLOT


def _times(n: int) -> tuple[str, str]:
    start = _slot(n)
    return start.isoformat(), (start + timedelta(minutes=15)).isoformat()


def populate(world, n: int, prefix: str = "cal") -> Calendar:
    """A user with sync on and not synced yet; n Google events and n activities, n // 2 of them shared."""
    from portal.activities import clean_activity, create_activity
    from portal.extensions import db
    from portal.models import Organization, User

    (user_id, email), = world.add_users(1, prefix).items()
    shared = n // 2
    google = [(f"Shared meeting {k}", k) for k in range(shared)] + \
             [(f"Google meeting {k}", shared + k) for k in range(n - shared)]
    portal = [(f"Shared meeting {k}", k) for k in range(shared)] + \
             [(f"Portal meeting {k}", n + k) for k in range(n - shared)]

    def add_event(item):
        subject, slot = item
        start, end = _times(slot)
        world.emulator.control("POST", f"/users/{email}/events", {
            "summary": subject, "start": {"dateTime": start, "timeZone": "UTC"},
            "end": {"dateTime": end, "timeZone": "UTC"}})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(add_event, google))
    with world.app.app_context():
        user = db.session.get(User, user_id)
        organization = db.session.get(Organization, user.organization_id)
        for number, (subject, slot) in enumerate(portal, 1):
            start, end = _times(slot)
            data = clean_activity({"subject": subject, "start": start, "end": end, "time_zone": "UTC"},
                                  organization=organization, actor=user)
            create_activity(organization, data)
            if number % 500 == 0:
                db.session.commit()
        db.session.commit()
    return Calendar(user_id, email)


@dataclass
class CycleCost:
    status: str
    seconds: float
    cpu_seconds: float
    statements: int
    requests: int
    peak_rss_mb: float
    by_verb: dict

    def as_dict(self) -> dict:
        return {"status": self.status, "seconds": round(self.seconds, 2), "cpu_s": round(self.cpu_seconds, 2),
                "statements": self.statements, "requests": self.requests, "peak_rss_mb": round(self.peak_rss_mb, 1),
                "statements_by_verb": self.by_verb}


def measure_cycle(world, calendar: Calendar, *, latency_ms: float) -> CycleCost:
    """One cycle of the user, run here, at `latency_ms` per Google round trip."""
    from portal.extensions import db
    from portal.sync.engine import run_user_cycle

    world.emulator.set_latency(latency_ms)
    mark = world.emulator.mark()
    counter = StatementCounter().install()
    reset_peak_rss()
    try:
        with world.app.app_context():
            began, cpu = time.perf_counter(), time.process_time()
            cycle = run_user_cycle(calendar.user_id, trigger="bench")
            seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
            status = cycle.status if cycle is not None else "skipped"
            db.session.commit()
    finally:
        counter.uninstall()
        world.emulator.set_latency(0)
    return CycleCost(status, seconds, cpu, counter.total, len(world.emulator.requests(mark)),
                     sample_process().peak_rss_mb, dict(counter.snapshot()))


def google_events(world, calendar: Calendar) -> list[dict]:
    return world.emulator.control("GET", f"/users/{calendar.email}/events")["items"]


def edit_in_google(world, calendar: Calendar, event_ids: list[str], location: str) -> None:
    """The person edits these events in Google (through the Calendar API, as their own client would)."""
    token = world.emulator.control("POST", "/tokens", {"user": calendar.email})["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def patch(event_id):
        session.patch(f"{world.emulator.base_url}/calendar/v3/calendars/primary/events/{event_id}",
                      json={"location": location}, timeout=30).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(patch, event_ids))


def edit_in_portal(world, calendar: Calendar, subjects: list[str], location: str) -> None:
    """The user edits these activities in the portal (each change writes its outbox row, as a page's would)."""
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import Activity

    with world.app.app_context():
        for activity in db.session.scalars(select(Activity).where(Activity.owner_id == calendar.user_id,
                                                                  Activity.subject.in_(subjects))):
            activity.location = location
        db.session.commit()
