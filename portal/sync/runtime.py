"""The sync's state in a running app, shared by the scheduler, the triggers, the web hook and `flask worker`.

Per app: this process's scheduler (if it runs one), the clock the scheduling code reads (tests replace it)
and when each user was last seen. Beside it, what every trigger ends with: make users due, and wake this
process's scheduler so it looks for them now rather than at its next tick.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import or_, update

from portal.extensions import db
from portal.models import utcnow
from portal.sync.models import CalendarSync

EXTENSION = "sync_scheduling"


class Scheduling:
    """What the triggers need per app: the scheduler of this process (if any), presence debounce, clock.

    `make_scheduler(app, worker_id=..., clock=...)` builds the scheduler; `portal.sync.init_app` passes it in.
    """

    def __init__(self, app: Flask, make_scheduler: Callable):
        self.app = app
        self.make_scheduler = make_scheduler
        self.scheduler = None  # this process's `SyncScheduler`, once started
        self.clock: Callable[[], datetime] = utcnow
        self.presence: dict[int, datetime] = {}
        self.lock = threading.Lock()

    def start(self, *, worker_id: str | None = None):
        with self.lock:
            if self.scheduler is None or not self.scheduler.running:
                self.scheduler = self.make_scheduler(self.app, worker_id=worker_id, clock=self.clock).start()
                atexit.register(self.scheduler.shutdown, False)
            return self.scheduler

    def stop(self, wait: bool = True) -> None:
        with self.lock:
            scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=wait)


def scheduling(app: Flask | None = None) -> Scheduling | None:
    return (app or current_app).extensions.get(EXTENSION)


def seconds(key: str) -> timedelta:
    return timedelta(seconds=float(current_app.config[key]))


def push_trusted_until(push_expires_at: datetime | None) -> datetime | None:
    """Until when Google's notifications stand in for the 30-second poll (None: poll every interval).

    Trusted: the portal has a public address, and the user's watch channel was confirmed (Google's "sync"
    message arrived and its answer was recorded; `CalendarSync.push_expires_at`). The trust ends when the
    channel is due for renewal: the cycle at that moment renews it, and the new channel's "sync" message
    trusts it again. A stopped, refused or moved channel clears `push_expires_at` (`channels.distrust`).
    """
    if push_expires_at is None or not current_app.config.get("PUBLIC_BASE_URL"):
        return None
    return push_expires_at - seconds("SYNC_CHANNEL_RENEW_BEFORE_SECONDS")


def push_trusted(push_expires_at: datetime | None, now: datetime) -> bool:
    until = push_trusted_until(push_expires_at)
    return until is not None and until > now


def poll_interval(push_expires_at: datetime | None, now: datetime) -> timedelta:
    """How long an idle user waits for the next pull: the safety poll while push is trusted (never more often
    than the interval), else the interval."""
    interval = seconds("SYNC_INTERVAL_SECONDS")
    return max(interval, seconds("SYNC_SAFETY_POLL_SECONDS")) if push_trusted(push_expires_at, now) else interval


def make_due(user_ids, *, now: datetime | None = None, connection=None) -> int:
    """Make these users (those with sync on) due now; a user due earlier already stays as is."""
    user_ids = sorted(set(user_ids))
    if not user_ids:
        return 0
    now = now or utcnow()
    statement = (update(CalendarSync)
                 .where(CalendarSync.user_id.in_(user_ids), CalendarSync.enabled.is_(True),
                        or_(CalendarSync.due_at.is_(None), CalendarSync.due_at > now))
                 .values(due_at=now))
    if connection is not None:
        return connection.execute(statement).rowcount
    result = db.session.execute(statement)
    db.session.commit()
    return result.rowcount


def wake(state: Scheduling | None) -> None:
    """Have this process's scheduler look for due users now; nothing without one (workers elsewhere poll)."""
    if state is not None and state.scheduler is not None:
        state.scheduler.wake()
