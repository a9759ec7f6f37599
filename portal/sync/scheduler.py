"""When the sync runs: 30-second pull cycles for logged-in users, and pushes right after portal changes.

The database is the only coordination between processes. Each `CalendarSync` row carries `due_at`; a worker
claims due users by moving their `due_at` and `claimed_until` past a lease period in one statement that also
selects them (`FOR UPDATE SKIP LOCKED` on PostgreSQL, a compare-and-set per row on SQLite), runs their cycles
in its thread pool, and sets the next `due_at` in the cycle's own last commit. The claim is the user's lease:
while `claimed_until` holds, nobody claims the user again (not even after a trigger made them due), and other
callers of the engine compare-and-set the same column, so a user is never synced twice at once. A worker
that dies mid-cycle leaves its claims to expire, and another worker takes the users over.

Who is claimed: users with sync switched on, in an organization whose sync is allowed, who are logged in
(an authenticated request within the session lifetime, see `portal.sync.triggers`), who are due and not
backing off. Failed cycles back off exponentially up to a cap; the first cycle that works resets that.

Claims are not paced by a clock: a dispatcher thread claims as users fall due and as threads free up, and
sleeps until the next one is due (bounded by `SYNC_POLL_SECONDS`, for users made due by other processes).
The cycles run in a plain thread pool whose free slots bound what is claimed, so a busy worker never sits on
users another worker could sync. APScheduler runs the maintenance every interval. Every job builds its own
app context.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import case, func, or_, select, update

from portal.extensions import db
from portal.models import ChangeRecord, User, utcnow
from portal.sync.channels import check_silence, distrust_lost_channels, ensure_channel, stop_unwanted_channels
from portal.sync.engine import push_pending, run_user_cycle, worker_name
from portal.sync.engine.run import give_back_unreleased
from portal.sync.models import CalendarSync, Lease
from portal.sync.policy import allowed_organization_ids, organization_allowed
from portal.sync.runtime import poll_interval, push_trusted, push_trusted_until, scheduling, seconds

log = logging.getLogger(__name__)
# The least a worker waits before looking for due users again, when none is due yet: users falling due within
# it are claimed together (one statement), at most this much later than due. At 5,000 users per 30 s that is
# about 30 users a claim; a fifth of a second late is nothing against a 30 s interval.
CLAIM_GRANULARITY = 0.2


def backoff_delay(failures: int) -> timedelta:
    """Exponential in the number of failed cycles in a row, capped."""
    base = float(current_app.config["SYNC_BACKOFF_BASE_SECONDS"])
    cap = float(current_app.config["SYNC_BACKOFF_CAP_SECONDS"])
    return timedelta(seconds=min(cap, base * 2 ** max(0, min(failures - 1, 30))))


# ---------------------------------------------------------------------------------------------------
# Claiming due users


@dataclass(frozen=True)
class Claim:
    user_id: int
    due_at: datetime | None  # when the user was due (None: never synced)
    claimed_at: datetime
    until: datetime  # the due_at (and claimed_until) the claim wrote: while it is still there, the claim is ours
    clean: bool = True  # the user's last holder gave them back at the end of its cycle
    push_expires_at: datetime | None = None  # the confirmed channel's expiry, read with the claim


def _claimable(now: datetime, organization_ids: list[int]):
    """Users with sync on, logged in, in an allowed organization, not backing off and held by nobody."""
    return (
        CalendarSync.enabled.is_(True),
        User.active.is_(True),
        CalendarSync.organization_id.in_(organization_ids),
        CalendarSync.last_seen_at >= now - current_app.permanent_session_lifetime,
        or_(CalendarSync.backoff_until.is_(None), CalendarSync.backoff_until <= now),
        or_(CalendarSync.claimed_until.is_(None), CalendarSync.claimed_until <= now),
    )


def due_users_query(now: datetime, organization_ids: list[int]):
    return (
        select(CalendarSync.user_id, CalendarSync.due_at, CalendarSync.claimed_until, CalendarSync.push_expires_at)
        .join(User, User.id == CalendarSync.user_id)
        .where(*_claimable(now, organization_ids), or_(CalendarSync.due_at.is_(None), CalendarSync.due_at <= now))
        .order_by(CalendarSync.due_at.asc().nulls_first(), CalendarSync.user_id)
    )


def next_due_at(now: datetime, organization_ids: list[int]) -> datetime | None:
    """When the next claimable user falls due (None: nobody will without a trigger)."""
    if not organization_ids:
        return None
    return db.session.scalar(select(func.min(CalendarSync.due_at)).join(User, User.id == CalendarSync.user_id)
                             .where(*_claimable(now, organization_ids)))


def claim_due_users(limit: int, *, now: datetime | None = None, organization_ids: list[int] | None = None,
                    owner: str | None = None) -> list[Claim]:
    """Claim up to `limit` due users (longest-waiting first) and commit; no two callers get the same user.

    The claim holds the user (`claimed_until`) for the cycle: a trigger that makes the user due meanwhile
    does not get them claimed again before the cycle gives them back."""
    now = now or utcnow()
    if limit <= 0:
        return []
    if organization_ids is None:
        organization_ids = allowed_organization_ids()
    if not organization_ids:
        db.session.commit()
        return []
    give_back_unreleased()
    owner = owner or worker_name()
    until = now + seconds("SYNC_LEASE_SECONDS")
    query = due_users_query(now, organization_ids).limit(limit)
    claims: list[Claim] = []
    if db.session.get_bind().dialect.name == "postgresql":
        # One statement: rows another worker is claiming right now are skipped, not waited for, and the
        # chosen ones are moved past the lease period as they are returned with their old values.
        picked = query.with_for_update(skip_locked=True, of=CalendarSync).cte("picked")
        rows = db.session.execute(
            update(CalendarSync).where(CalendarSync.user_id == picked.c.user_id)
            .values(due_at=until, claimed_until=until, claimed_by=owner)
            .returning(CalendarSync.user_id, picked.c.due_at, picked.c.claimed_until,
                       picked.c.push_expires_at)).all()
        claims = [Claim(r[0], r[1], now, until, r[2] is None, r[3]) for r in rows]
        claims.sort(key=lambda c: (c.due_at is not None, c.due_at or now, c.user_id))
    else:
        for row in db.session.execute(query).all():
            same_due = CalendarSync.due_at.is_(None) if row.due_at is None else CalendarSync.due_at == row.due_at
            result = db.session.execute(update(CalendarSync).where(CalendarSync.user_id == row.user_id, same_due)
                                        .values(due_at=until, claimed_until=until, claimed_by=owner))
            if result.rowcount == 1:
                claims.append(Claim(row.user_id, row.due_at, now, until, row.claimed_until is None,
                                    row.push_expires_at))
    db.session.commit()
    return claims


def next_due(claim: Claim) -> datetime:
    """Fixed-rate: the next cycle is one interval after the one this claim was due, so a user is synced
    in every interval; a user more than an interval late starts a new rhythm from now.

    While the user's watch channel is trusted, the interval is the safety poll's (notifications make the
    user due the moment Google reports a change), but never past the trust's end: that cycle renews the
    channel. Read from the claim, so it costs no statement."""
    interval = poll_interval(claim.push_expires_at, claim.claimed_at)
    if claim.due_at is not None and claim.due_at + interval > claim.claimed_at:
        due = claim.due_at + interval
    else:
        due = claim.claimed_at + interval
    if push_trusted(claim.push_expires_at, claim.claimed_at):
        due = min(due, push_trusted_until(claim.push_expires_at))
    return due


def claim_end(claim: Claim, outcome: str | None, *, now: datetime, failures: int = 0,
              clean: bool = True) -> dict:
    """The user's `CalendarSync` values once the claimed cycle ended: when they are due next, back-off, and
    given back. `outcome`: the cycle's status, "busy" (not run) or "failed"; `failures`: failed cycles in a
    row before this one. A trigger that arrived during the cycle moved `due_at` away from the claim's value;
    it is then left alone. An unclean end (the cycle crashed) leaves an instant that has passed in
    `claimed_until`, so the next cycle looks for a row left "running"."""
    ours = CalendarSync.due_at == claim.until
    values: dict = {"claimed_until": CalendarSync.released(claim.until, clean=clean)}
    if outcome == "busy":
        retry = now + seconds("SYNC_BUSY_RETRY_SECONDS")
        values["due_at"] = case((ours, retry), else_=CalendarSync.due_at)
    elif outcome == "failed":
        backoff_until = now + backoff_delay(failures + 1)
        values.update(failures=failures + 1, backoff_until=backoff_until,
                      due_at=case((ours, backoff_until), else_=CalendarSync.due_at))
    else:
        values["due_at"] = case((ours, next_due(claim)), else_=CalendarSync.due_at)
        if outcome in ("ok", "partial"):
            values.update(failures=0, backoff_until=None)
    return values


def finish_claim(claim: Claim, outcome: str | None, *, now: datetime | None = None, clean: bool = True) -> None:
    """Record how a claimed user's cycle went and when they are due next, when the cycle did not (it did not
    run, or crashed); a cycle that ran writes the same in its own last commit (`claim_end`)."""
    now = now or utcnow()
    failures = 0
    if outcome == "failed":
        failures = db.session.scalar(select(CalendarSync.failures).where(CalendarSync.user_id == claim.user_id)) or 0
    db.session.execute(update(CalendarSync).where(CalendarSync.user_id == claim.user_id)
                       .values(**claim_end(claim, outcome, now=now, failures=failures, clean=clean)))
    db.session.commit()


def run_claim(claim: Claim, *, owner: str, clock: Callable[[], datetime] = utcnow):
    """Run one claimed user's cycle, record the outcome, and keep their watch channel open."""
    def ending(status: str, state: CalendarSync) -> dict:
        return claim_end(claim, status, now=clock(), failures=state.failures or 0)

    try:
        cycle = run_user_cycle(claim.user_id, trigger="scheduler", owner=owner, claim=claim, ending=ending)
        outcome = "busy" if cycle is None else cycle.status
        if cycle is None:
            finish_claim(claim, outcome, now=clock())
    except Exception:  # a bug in one user's cycle must not take the worker down
        log.exception("Sync cycle of user %s crashed", claim.user_id)
        db.session.rollback()
        cycle, outcome = None, "failed"
        finish_claim(claim, outcome, now=clock(), clean=False)
    trusted = push_trusted(claim.push_expires_at, claim.claimed_at)
    from_google = trusted and cycle is not None and cycle.portal_created + cycle.portal_updated + cycle.portal_deleted
    if from_google:  # were these changes announced? (Looked at only when the cycle brought some.)
        since = (claim.due_at or claim.claimed_at) - seconds("SYNC_SAFETY_POLL_SECONDS")
        trusted = not check_silence(claim.user_id, since, clock())
    # A trusted channel is open and not due for renewal: nothing to look at (its end is a cycle of its own).
    if outcome in ("ok", "partial") and current_app.config.get("PUBLIC_BASE_URL") and not trusted:
        name = f"channel:{claim.user_id}"
        if Lease.acquire(name, owner, float(current_app.config["SYNC_LEASE_SECONDS"])):
            try:
                ensure_channel(claim.user_id, now=clock())
            except Exception:
                log.exception("Push channel of user %s could not be opened", claim.user_id)
                db.session.rollback()
            finally:
                Lease.release(name, owner)
    return cycle


def pending_outbox() -> dict[int, int]:
    """Organizations with portal changes not pushed yet: organization id -> newest change id."""
    rows = db.session.execute(
        select(ChangeRecord.organization_id, func.max(ChangeRecord.id))
        .where(ChangeRecord.processed_at.is_(None), ChangeRecord.origin != "google")
        .group_by(ChangeRecord.organization_id)
    ).all()
    return dict(rows)


# ---------------------------------------------------------------------------------------------------
# The scheduler


class SyncScheduler:
    """Runs the sync in this process: ticks from APScheduler, cycles and pushes in thread pools."""

    def __init__(self, app: Flask, *, worker_id: str | None = None, clock: Callable[[], datetime] = utcnow):
        # Only a process that runs a scheduler loads APScheduler, not every `flask` command or web process.
        from apscheduler.executors.pool import ThreadPoolExecutor as TickExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.app = app
        self.clock = clock
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        config = app.config
        # SQLite has one writer at a time, and a cycle writes between its Google calls: parallel jobs
        # would only wait for each other's locks (and time out). There, all sync work runs one at a time.
        self.serial = str(config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite")
        self.threads = 1 if self.serial else max(1, int(config["SYNC_WORKER_THREADS"]))
        self.batch_size = max(1, int(config["SYNC_CLAIM_BATCH_SIZE"]))
        self.poll_seconds = float(config["SYNC_POLL_SECONDS"])
        self.interval = float(config["SYNC_INTERVAL_SECONDS"])
        self._cycles = ThreadPoolExecutor(self.threads, thread_name_prefix="sync-cycle")
        self._pushes = self._cycles if self.serial else ThreadPoolExecutor(
            max(1, int(config["SYNC_PUSH_THREADS"])), thread_name_prefix="sync-push")
        self._lock = threading.Lock()
        self._running: set[int] = set()
        self._push_state: dict[int, str] = {}  # organization -> "running" | "again"
        self._after_push: dict[int, list[Callable]] = {}
        self._outbox_seen: dict[int, tuple[int, datetime]] = {}  # organization -> (newest change, when)
        self._sequence = itertools.count(1)
        self._stopped = False
        self._wakeup = threading.Event()
        self._queued: dict[int, tuple] = {}  # user -> (future, claim) until the cycle ends
        self._dispatcher: threading.Thread | None = None
        # How many free threads a full pool waits for before claiming again.
        self._refill = max(1, min(self.batch_size, self.threads // 4))
        self._aps = BackgroundScheduler(timezone=UTC, executors={"default": TickExecutor(2)},
                                        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> SyncScheduler:
        now = datetime.now(UTC)
        self._aps.add_job(self.maintain, "interval", seconds=self.interval, id="maintain",
                          next_run_time=now + timedelta(seconds=self.poll_seconds))
        self._aps.start()
        self._dispatcher = threading.Thread(target=self._dispatch, name="sync-claims", daemon=True)
        self._dispatcher.start()
        log.info("Sync scheduler %s started: %s threads, every %ss", self.worker_id, self.threads, self.interval)
        return self

    def shutdown(self, wait: bool = True) -> None:
        """Stop claiming; with `wait`, let running cycles finish (their claims would expire anyway)."""
        if self._stopped:
            return
        self._stopped = True
        self._wakeup.set()
        try:
            self._aps.shutdown(wait=wait)
        except Exception:  # noqa: BLE001 - not started, or the interpreter is going down
            pass
        if wait and self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(timeout=30)
        self._cycles.shutdown(wait=wait, cancel_futures=True)
        self._pushes.shutdown(wait=wait, cancel_futures=True)
        self._give_back_cancelled()

    def _give_back_cancelled(self) -> None:
        """Claims whose cycle never started (cancelled at shutdown) are given back at once, not left held
        until their lease runs out."""
        with self._lock:
            cancelled = [claim for future, claim in self._queued.values() if future.cancelled()]
        if not cancelled:
            return
        try:
            with self.app.app_context():
                for claim in cancelled:
                    finish_claim(claim, "busy", now=self.clock())
        except Exception:  # noqa: BLE001 - going down: they run out by themselves
            log.warning("%s claims are left to run out", len(cancelled))

    @property
    def running(self) -> bool:
        return not self._stopped and self._aps.running

    def wake(self) -> None:
        """Look for due users now (a trigger in this process)."""
        self._wakeup.set()

    def _owner(self) -> str:
        return f"{self.worker_id}#{next(self._sequence)}"

    # -- claiming ----------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Claim due users as they fall due and as threads free up, not on a clock tick: sleep until the
        next user is due (at least CLAIM_GRANULARITY, so claims come in batches; at most SYNC_POLL_SECONDS,
        for users other processes made due), or until woken by a trigger or a full pool's finished cycle.
        The allowed organizations are read, and the outbox swept, once per SYNC_POLL_SECONDS."""
        allowed: list[int] = []
        refreshed = float("-inf")
        while not self._stopped:
            self._wakeup.clear()
            delay = self.poll_seconds
            try:
                with self.app.app_context():
                    if time.monotonic() - refreshed >= self.poll_seconds:
                        refreshed = time.monotonic()
                        allowed = allowed_organization_ids()
                        self._sweep_outbox(allowed)
                    delay = self._claim_and_submit(allowed)
            except Exception:
                log.exception("Looking for due users failed")
            if delay > 0:
                self._wakeup.wait(delay)

    def _claim_and_submit(self, allowed: list[int]) -> float:
        """Claim what the free threads can take and submit it; how long to wait before looking again."""
        with self._lock:
            free = self.threads - len(self._running)
        if self._stopped or not allowed:
            db.session.commit()
            return self.poll_seconds
        if free <= 0:
            return self.poll_seconds  # a finished cycle wakes us once enough threads are free
        asked = min(free, self.batch_size)
        now = self.clock()
        claims = claim_due_users(asked, now=now, organization_ids=allowed, owner=self.worker_id)
        for claim in claims:
            with self._lock:
                self._running.add(claim.user_id)
            try:
                future = self._cycles.submit(self._run_cycle, claim)
                with self._lock:
                    if claim.user_id in self._running:
                        self._queued[claim.user_id] = (future, claim)
            except RuntimeError:  # shut down between the claim and here: the claim expires
                with self._lock:
                    self._running.discard(claim.user_id)
        if len(claims) == asked:
            return 0.0  # there may be more due: look again as soon as threads are free
        if claims:
            return CLAIM_GRANULARITY  # users are falling due all the time: the next few, together
        due = next_due_at(now, allowed)
        db.session.commit()
        if due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(CLAIM_GRANULARITY, (due - now).total_seconds()))

    def _run_cycle(self, claim: Claim) -> None:
        try:
            with self.app.app_context():
                run_claim(claim, owner=self._owner(), clock=self.clock)
        except Exception:
            log.exception("Sync job of user %s failed", claim.user_id)
        finally:
            with self._lock:
                self._running.discard(claim.user_id)
                self._queued.pop(claim.user_id, None)
                free = self.threads - len(self._running)
            # A full pool had users waiting: claim again once a batch's worth of threads is free (one
            # claim statement for several users, not one per finished cycle).
            if free == min(self._refill, self.threads):
                self.wake()

    def _sweep_outbox(self, allowed: list[int]) -> None:
        """Push what changed in other processes (web processes without a scheduler) or was missed; an
        organization whose rows stay pending (items Google refuses) is tried once per interval, not per tick."""
        now = self.clock()
        allowed = set(allowed)
        if not allowed:
            return
        for organization_id, newest in pending_outbox().items():
            if organization_id not in allowed:
                continue
            seen = self._outbox_seen.get(organization_id)
            if seen and seen[0] >= newest and now - seen[1] < timedelta(seconds=self.interval):
                continue
            self._outbox_seen[organization_id] = (newest, now)
            self.request_push(organization_id, trigger="sweep")
        db.session.commit()

    def maintain(self) -> None:
        with self.app.app_context():
            try:
                if self.app.config.get("PUBLIC_BASE_URL"):
                    stop_unwanted_channels(now=self.clock())
                    distrust_lost_channels(now=self.clock())
            except Exception:
                log.exception("Push channel maintenance failed")
                db.session.rollback()

    # -- triggers from this process ----------------------------------------------------------------
    def request_push(self, organization_id: int, *, trigger: str = "change", then: Callable | None = None) -> None:
        """Push the organization's outbox soon; requests while a push runs are folded into one more run.
        `then` runs (in an app context) once the push is done."""
        with self._lock:
            if self._stopped:
                return
            if then is not None:
                self._after_push.setdefault(organization_id, []).append(then)
            if organization_id in self._push_state:
                self._push_state[organization_id] = "again"
                return
            self._push_state[organization_id] = "running"
        try:
            self._pushes.submit(self._push, organization_id, trigger)
        except RuntimeError:
            with self._lock:
                self._push_state.pop(organization_id, None)

    def _push(self, organization_id: int, trigger: str) -> None:
        while True:
            busy = False
            try:
                with self.app.app_context():
                    # A switched-off organization's edits are not even journaled as skipped pushes.
                    if organization_allowed(organization_id):
                        busy = push_pending(organization_id, trigger=trigger, owner=self._owner()) is None
            except Exception:
                log.exception("Pushing the outbox of organization %s failed", organization_id)
            with self._lock:
                again = self._push_state.get(organization_id) == "again"
                if again and not self._stopped:
                    self._push_state[organization_id] = "running"
                    continue
                self._push_state.pop(organization_id, None)
                follow_ups = self._after_push.pop(organization_id, [])
            break
        for follow_up in follow_ups:
            self._in_context(follow_up)
        if busy and not self._stopped:
            # Another worker holds the outbox and may have read it before our commit: ask again shortly.
            retry = datetime.now(UTC) + timedelta(seconds=float(self.app.config["SYNC_BUSY_RETRY_SECONDS"]))
            try:
                self._aps.add_job(self.request_push, "date", run_date=retry, args=[organization_id],
                                  kwargs={"trigger": trigger})
            except Exception:  # noqa: BLE001 - shutting down
                pass

    def submit(self, function: Callable, *args) -> None:
        """Run `function(*args)` in an app context on the push pool (small trigger work off the request)."""
        try:
            self._pushes.submit(self._in_context, function, *args)
        except RuntimeError:
            pass

    def _in_context(self, function: Callable, *args) -> None:
        with self.app.app_context():
            try:
                function(*args)
            except Exception:
                log.exception("Sync trigger %s failed", getattr(function, "__name__", function))
                db.session.rollback()


def start_scheduler(app: Flask, *, worker_id: str | None = None) -> SyncScheduler:
    return scheduling(app).start(worker_id=worker_id)
