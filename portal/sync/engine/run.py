"""Entry points and the order of a cycle's phases: leases, the cycle's row and how it ends, read -> plan ->
write Google -> write the portal, and the rounds that plan again what Google changed meanwhile."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import event, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

from portal.extensions import db
from portal.models import (
    Activity,
    GoogleIntegration,
    Organization,
    User,
    utcnow,
)
from portal.sync import core
from portal.sync.engine.read import (
    claim_links,
    fetch_google_item,
    fill_missing_sides,
    links_for_core,
    portal_item_of,
    pull_calendar,
    read_portal_items,
)
from portal.sync.engine.settle import agree_on_sent, settle_reserved
from portal.sync.engine.state import (
    DATABASE_BUSY,
    FIRST_SYNC_DAYS,
    RACES,
    Cycle,
    OrganizationUsers,
    checkpoint,
    database_busy,
    kept_across_commits,
    lease_seconds,
    link_for_action,
    link_id_of,
    mark_failed,
    mark_link_failed,
    worker_name,
)
from portal.sync.engine.write_google import (
    hold_failed_links,
    reserve_event_ids,
    send_answers,
    write_to_google,
)
from portal.sync.engine.write_portal import apply, mark_outbox, read_versions, refresh_attendees
from portal.sync.google import (
    GoogleError,
    IntegrationError,
    SyncTokenExpired,
    TransientError,
    UserError,
)
from portal.sync.models import CalendarSync, Lease, SyncCycle
from portal.sync.policy import integration_of, syncing_users

log = logging.getLogger(__name__)
_UNSET = object()


def run_user_cycle(user_id: int, *, trigger: str = "scheduler", owner: str | None = None, claim=None,
                   ending: Callable[[str, CalendarSync], dict] | None = None) -> SyncCycle | None:
    """Pull the user's Google calendar and push their pending portal changes. None when someone else holds
    the user (or the user cannot sync); otherwise the cycle's row (never raises for Google's answers).

    `claim` (the scheduler's `Claim`): the user is held by it already, so no second round trip takes them;
    otherwise the user is held here (`CalendarSync.claimed_until`, compare-and-set). `ending(status, state)`
    gives column values for the user's `CalendarSync` (the scheduler's next due time, back-off), written in
    the cycle's last commit."""
    owner = owner or worker_name()
    now = utcnow()
    if claim is None:
        until = _hold_user(user_id, now, owner)
        if until is None:
            return None
        clean = False  # whether the last holder ended cleanly is not known here: look for its rows
    else:
        until, clean = claim.until, claim.clean
    hold = _Hold(user_id, until, None, ending)
    claims: set[str] = set()
    try:
        loaded = db.session.execute(
            select(User, CalendarSync, Organization, GoogleIntegration)
            .join(CalendarSync, CalendarSync.user_id == User.id)
            .join(Organization, Organization.id == User.organization_id)
            .outerjoin(GoogleIntegration, GoogleIntegration.organization_id == Organization.id)
            .where(User.id == user_id)).first()
        if loaded is None or not loaded[0].active or not loaded[1].enabled:
            db.session.rollback()
            _release_user(user_id, until)
            hold.released = True
            return None
        user, state, organization, integration = loaded
        hold.state, hold.synced_before = state, state.first_synced_at is not None
        with kept_across_commits(user, state, organization, integration):
            return _run(organization, trigger, puller=user, owner=owner, claims=claims, integration=integration,
                        hold=hold, clean=clean)
    finally:
        db.session.rollback()
        try:
            if claims:
                Lease.release_many(claims, owner)
            if not hold.released:
                _release_user(user_id, until, clean=False)
        except Exception as exc:
            if not database_busy(exc):
                raise
            # Still locked: the leases run out by themselves, the hold is given back by this process's next
            # cycle (or runs out), and what stopped the cycle is raised.
            db.session.rollback()
            with _UNRELEASED_LOCK:
                _UNRELEASED[user_id] = until
            log.warning("user %s is given back later: the database is busy", user_id)


def push_pending(organization_id: int, *, trigger: str = "change", owner: str | None = None) -> SyncCycle | None:
    """Push the organization's pending portal changes to Google. None when another worker is at it."""
    organization = db.session.get(Organization, organization_id)
    if organization is None:
        return None
    return _leased(f"outbox:{organization_id}", organization, trigger, owner=owner)


def _leased(lease: str, organization: Organization, trigger: str, *, owner: str | None) -> SyncCycle | None:
    """Run an outbox push under `lease` (None when another worker holds it); the link claims it takes go
    with it."""
    owner = owner or worker_name()
    if not Lease.acquire(lease, owner, lease_seconds()):
        return None
    claims: set[str] = set()
    try:
        with kept_across_commits(organization):
            return _run(organization, trigger, puller=None, owner=owner, claims=claims)
    finally:
        db.session.rollback()
        try:
            Lease.release_many(claims, owner)
            Lease.release(lease, owner)
        except Exception as exc:
            if not database_busy(exc):
                raise
            # Still locked: the leases run out by themselves, and what stopped the cycle is what gets raised.
            db.session.rollback()
            log.warning("the leases of %s are left to expire: the database is busy", lease)


# ---------------------------------------------------------------------------------------------------
# Holding a user: whoever holds `CalendarSync.claimed_until` runs the user's cycle; nobody else does.


@dataclass
class _Hold:
    user_id: int
    until: datetime
    state: CalendarSync | None
    ending: Callable[[str, CalendarSync], dict] | None = None
    released: bool = False
    synced_before: bool = True  # a first sync keeps its row, whatever it found
    ended: bool = False  # the end's values are set on `state` (and flushed with the cycle's last writes)


_UNRELEASED: dict[int, datetime] = {}  # user -> the hold this process could not give back (database locked)
_UNRELEASED_LOCK = threading.Lock()


def give_back_unreleased() -> None:
    """Give back the holds this process could not (their cycle ended on a locked database), as unclean ends."""
    with _UNRELEASED_LOCK:
        held = dict(_UNRELEASED)
    if not held:
        return
    for user_id, until in held.items():
        _give_back(user_id, until, clean=False)
    db.session.commit()
    with _UNRELEASED_LOCK:
        for user_id, until in held.items():
            if _UNRELEASED.get(user_id) == until:
                del _UNRELEASED[user_id]


def _hold_user(user_id: int, now: datetime, owner: str) -> datetime | None:
    """Take the user for one cycle if nobody holds them (or their holder's time ran out); the instant the hold
    ends, or None."""
    give_back_unreleased()
    until = now + timedelta(seconds=lease_seconds())
    result = db.session.execute(
        update(CalendarSync).where(CalendarSync.user_id == user_id,
                                   or_(CalendarSync.claimed_until.is_(None), CalendarSync.claimed_until <= now))
        .values(claimed_until=until, claimed_by=owner))
    db.session.commit()
    return until if result.rowcount == 1 else None


def _give_back(user_id: int, until: datetime, *, clean: bool = True) -> None:
    db.session.execute(update(CalendarSync).where(CalendarSync.user_id == user_id)
                       .values(claimed_until=CalendarSync.released(until, clean=clean)))


def _release_user(user_id: int, until: datetime, *, clean: bool = True) -> None:
    _give_back(user_id, until, clean=clean)
    db.session.commit()


# ---------------------------------------------------------------------------------------------------
# The objects a cycle keeps across its commits, and its row stored only once it writes


_ROW = "sync_cycle_row"


def _writes_pending(session) -> bool:
    """Whether the session holds a change besides the user's own sync state and the cycle's row."""
    for obj in (*session.new, *session.deleted, *session.dirty):
        if isinstance(obj, CalendarSync | SyncCycle):
            continue
        if obj in session.dirty and not session.is_modified(obj):
            continue
        return True
    return False


@event.listens_for(Session, "before_flush")
def _store_row_on_first_write(session, flush_context, instances) -> None:
    """A cycle's row is stored with the first write of the cycle's that is not the user's own sync state, so
    a cycle cut short after it has written anything leaves its row "running" (`_close_abandoned` says so
    later); a quiet cycle never stores one (`_end_state` counts it instead)."""
    row = session.info.get(_ROW)
    if row is not None and row not in session and _writes_pending(session):
        session.add(row)


# A cycle still "running" although we hold its lease ended without recording how. Usually its worker died;
# when it was this process that could not write the end (the database stayed locked), the end is known here.
ABANDONED = ("This cycle ended without recording its outcome (its worker stopped or lost the database); the "
             "next cycle took its changes up again.")
_UNRECORDED: dict[int, tuple[str, str | None]] = {}  # cycle id -> (status, message) it could not write
_UNRECORDED_LOCK = threading.Lock()
_UNRECORDED_KEPT = 1000
# Rows of cycles that failed before they had written anything and could not write their end either:
# (organization, user) -> their columns, stored by the next cycle of the same user (or outbox).
_UNSTORED: dict[tuple[int, int | None], list[dict]] = {}


def _remember_unrecorded(cycle_id: int, status: str, message: str | None) -> None:
    with _UNRECORDED_LOCK:
        _UNRECORDED[cycle_id] = (status, message)
        while len(_UNRECORDED) > _UNRECORDED_KEPT:
            del _UNRECORDED[next(iter(_UNRECORDED))]


def _close_abandoned(organization_id: int, user_id: int | None) -> None:
    """Close the cycles of this user (or outbox) left "running": with their own outcome when this process
    knows it, otherwise saying only what is known."""
    scope = (SyncCycle.organization_id == organization_id,
             SyncCycle.user_id.is_(None) if user_id is None else SyncCycle.user_id == user_id)
    with _UNRECORDED_LOCK:
        known = dict(_UNRECORDED)
        unstored = _UNSTORED.pop((organization_id, user_id), [])
    for values in unstored:
        db.session.add(SyncCycle(**values))
    if known:
        running = set(db.session.scalars(select(SyncCycle.id).where(*scope, SyncCycle.status == "running",
                                                                    SyncCycle.id.in_(known))))
        for cycle_id in sorted(running):
            status, message = known[cycle_id]
            db.session.execute(update(SyncCycle).where(SyncCycle.id == cycle_id, SyncCycle.status == "running")
                               .values(status=status, message=message))
        # Those closed by an earlier cycle's commit are done with.
        closed = set(db.session.scalars(select(SyncCycle.id).where(*scope, SyncCycle.id.in_(known),
                                                                   SyncCycle.status != "running")))
        with _UNRECORDED_LOCK:
            for cycle_id in closed - running:
                _UNRECORDED.pop(cycle_id, None)
    db.session.execute(update(SyncCycle).where(*scope, SyncCycle.status == "running")
                       .values(status="failed", message=ABANDONED))


_COUNTS = ("duration_ms", "requests", "pulled", "pushed", "portal_created", "portal_updated", "portal_deleted",
           "google_created", "google_updated", "google_deleted", "conflicts", "errors", "quiet_before")


def _run(organization: Organization, trigger: str, *, puller: User | None, owner: str = "",
         claims: set[str] | None = None, integration=_UNSET, hold: _Hold | None = None,
         clean: bool = False) -> SyncCycle:
    started = time.monotonic()
    organization_id = organization.id
    if not clean:  # the last holder of this user (or outbox) may have left a row "running"
        _close_abandoned(organization.id, puller.id if puller else None)
    row = SyncCycle(organization_id=organization.id, user_id=puller.id if puller else None, trigger=trigger,
                    started_at=utcnow(), status="running", **dict.fromkeys(_COUNTS, 0))
    if puller is None:  # an outbox push keeps its row from the start, as it always writes
        db.session.add(row)
    if integration is _UNSET:
        integration = integration_of(organization)
    if integration is None or not integration.sync_allowed:
        row.status, row.message = "skipped", "The organization's Google Calendar integration is off or paused."
        _record_end(row, hold)
        return row
    db.session.commit()
    cycle = Cycle(organization=organization, integration=integration, row=row, puller=puller, owner=owner,
                  claims=claims if claims is not None else set())
    session = db.session()
    session.info[_ROW] = row
    try:
        _cycle(cycle)
        row.status = "partial" if row.errors else "ok"
        if puller is not None:
            _user_succeeded(puller, hold)
        _end_state(row, hold)
        # The cycle's last writes meet the database here, in the try: a race or a busy database ends the
        # cycle as such, with its writes undone. The user's state is one UPDATE, with the end's values.
        db.session.flush()
        if hold is not None:
            hold.ended = True
    except IntegrationError as exc:
        db.session.rollback()
        integration.record_error(exc.code, exc.cause, exc.fix)
        row.status, row.message = "failed", exc.cause
        row.error_code = exc.code
        log.warning("sync paused for organization %s: %s", organization.id, exc.code)
    except (UserError, SyncTokenExpired) as exc:
        db.session.rollback()
        if puller is not None:
            CalendarSync.for_user(puller).record_error(exc.code, exc.cause, exc.fix)
        row.status, row.message = "failed", exc.cause
        row.error_code = exc.code
    except TransientError as exc:
        db.session.rollback()
        row.status, row.message = "failed", f"{exc.cause} (retried next cycle)"
        row.error_code = exc.code
    except GoogleError as exc:
        db.session.rollback()
        row.status, row.message = "failed", exc.cause
        row.error_code = exc.code
    except RACES:
        db.session.rollback()
        log.info("sync cycle of organization %s met another worker's change; merged again next cycle",
                 organization_id)
        row.status = "failed"
        row.message = ("Another worker changed some of these items at the same moment; they are merged again "
                       "in the next cycle.")
        row.error_code = "concurrent_change"
    except Exception as exc:  # noqa: BLE001 - a cycle always ends with a state, never stays "running"
        db.session.rollback()  # first: a failed flush leaves nothing readable until then
        row.status = "failed"
        if database_busy(exc):
            log.warning("sync cycle of organization %s met a busy database: %s", organization_id, exc.orig)
            row.message = DATABASE_BUSY
            row.error_code = "database_busy"
        else:
            log.exception("sync cycle of organization %s stopped on an unexpected error", organization_id)
            row.message = f"The cycle stopped on an unexpected error ({type(exc).__name__}); it is tried again."
            row.error_code = "unexpected_error"
    finally:
        session.info.pop(_ROW, None)
    row.requests = cycle.requests
    row.duration_ms = int((time.monotonic() - started) * 1000)
    _record_end(row, hold)
    return row


def _end_state(row: SyncCycle, hold: _Hold | None) -> None:
    """Set how the cycle ended on the user's sync state (nothing for an outbox push): a quiet cycle is only
    counted there (`CalendarSync.quiet_cycles`); any other keeps its row, which takes the quiet run before it
    along. The scheduler's values (`ending`) and giving the user back go in the same UPDATE."""
    session = db.session()
    if hold is None:
        session.add(row)
        return
    state = hold.state
    with session.no_autoflush:
        quiet = hold.synced_before and row not in session and not _writes_pending(session) and row.quiet
        state.last_cycle_at = utcnow()
        if quiet:
            state.quiet_cycles = (state.quiet_cycles or 0) + 1
            state.quiet_since = state.quiet_since or row.started_at
            state.last_quiet_at = row.started_at
        else:
            row.quiet_before = state.quiet_cycles or 0
            row.quiet_first_at, row.quiet_last_at = state.quiet_since, state.last_quiet_at
            state.quiet_cycles, state.quiet_since, state.last_quiet_at = 0, None, None
            session.add(row)
        for name, value in (hold.ending(row.status, state) if hold.ending else {}).items():
            setattr(state, name, value)
        state.claimed_until = CalendarSync.released(hold.until)


def _record_end(row: SyncCycle, hold: _Hold | None) -> None:
    """Write how the cycle ended, in one commit with the user's sync state (`_end_state`), which gives the
    user back. If the database is still locked, this process remembers the row's end, so the next cycle
    closes it with what happened instead of taking it for a dead worker's; the error is raised."""
    with db.session.no_autoflush:
        cycle_id, status, message = row.id, row.status, row.message
    try:
        if hold is None or not hold.ended:  # a cycle that failed (its writes undone) or was skipped
            _end_state(row, hold)
        db.session.commit()
        if hold is not None:
            hold.released = True
    except Exception as exc:
        if not database_busy(exc):
            raise
        db.session.rollback()
        # A cycle that went well up to here did not: its last writes (outbox, sync token) are undone.
        if status in ("ok", "partial"):
            status, message = "failed", DATABASE_BUSY
        if cycle_id is not None:
            _remember_unrecorded(cycle_id, status, message)
        elif not (hold is not None and row.quiet and status == "ok"):
            # Never stored (it had written nothing): the next cycle of this user (or outbox) stores it.
            values = {c.key: getattr(row, c.key) for c in SyncCycle.__table__.columns if c.key != "id"}
            with _UNRECORDED_LOCK:
                _UNSTORED.setdefault((row.organization_id, row.user_id), []).append(
                    {**values, "status": status, "message": message})
                while len(_UNSTORED) > _UNRECORDED_KEPT:
                    del _UNSTORED[next(iter(_UNSTORED))]
        raise


def _user_succeeded(user: User, hold: _Hold | None = None) -> None:
    state = hold.state if hold is not None else CalendarSync.for_user(user)
    if state.error_code is not None:
        state.clear_error()
    if state.failures:
        state.failures = 0
    state.last_success_at = utcnow()


def _cycle(cycle: Cycle) -> None:
    with kept_across_commits():
        _phases(cycle)


def _phases(cycle: Cycle) -> None:
    organization = cycle.organization
    cycle.users_by_email = OrganizationUsers(organization.id, known=[cycle.puller] if cycle.puller else ())
    now = utcnow()

    google_items: dict[str, core.GoogleItem] = {}
    first_sync = False
    state = None
    if cycle.puller is not None:
        state = CalendarSync.for_user(cycle.puller)
        google_items, next_token, first_sync = pull_calendar(cycle, state)
    cycle.first_sync = first_sync
    checkpoint("pulled")
    db.session.commit()  # no write lock is held across the Google calls that follow

    portal_items = read_portal_items(cycle, google_items, first_sync=first_sync)
    if google_items or portal_items or cycle.links:  # with nothing to plan, who syncs (a whole organization) is not read
        syncing = syncing_users(organization.id)
        cycle.syncing, cycle.syncing_emails = set(syncing), frozenset(e.lower() for e in syncing.values())
    checkpoint("claiming")
    claim_links(cycle, portal_items, google_items)
    fill_missing_sides(cycle, portal_items, google_items)
    settle_reserved(cycle, portal_items, google_items)
    actions = core.plan_cycle(links_for_core(cycle), portal_items, google_items, first_sync=first_sync, now=now,
                              window_days=FIRST_SYNC_DAYS, syncing=cycle.syncing_emails)
    if first_sync and state is not None and state.full_sync_needed:  # a first sync, not a re-read after a 410
        cycle.progress = state
        state.first_sync_total, state.first_sync_done = len(item_groups(actions)), 0
    _execute(cycle, actions, in_slices=cycle.progress is not None)
    checkpoint("applied")
    # What reached Google is recorded now: nothing that follows can take it back.
    db.session.commit()
    if cycle.refetch:
        checkpoint("replanning")
        _replan_refetched(cycle)
        db.session.commit()
    refresh_attendees(cycle)
    send_answers(cycle, state)
    checkpoint("outbox")
    mark_outbox(cycle)
    if state is not None and not cycle.held_back:
        state.sync_token = next_token
        state.full_sync_needed = False
        if first_sync and state.first_synced_at is None:
            state.first_synced_at = utcnow()
        if cycle.progress is not None:
            state.first_sync_done = state.first_sync_total
    if cycle.busy:
        cycle.row.message = (f"{len(cycle.busy)} item(s) were being synced by another worker at the same "
                             "moment; they are synced in the next cycle.")
    # Committed with the cycle's end (`_run`, `_record_end`): one commit, with the user's state and row.




def _execute(cycle: Cycle, actions: list, *, in_slices: bool = False) -> None:
    first, then = _deletes_last(cycle, actions)
    if in_slices:
        _execute_in_slices(cycle, first)
    else:
        _execute_now(cycle, first)
    if then:
        checkpoint("taken-in")
        db.session.commit()
        # A link whose portal write failed keeps its event: the next cycle takes the changes in again.
        ready = []
        for action in then:
            link = link_for_action(cycle, action)
            if link is not None and link.id not in cycle.failed_links and link.activity_id not in cycle.failed_portal:
                ready.append(action)
        _execute_now(cycle, ready)


# The action that closes what a plan does for one item: a link's actions end with its SetBase or Unlink, a
# first-sync match with its LinkItems, and a copy or an item's error is a single action.
_ITEM_ENDS = (core.SetBase, core.Unlink, core.LinkItems, core.CreateEvent, core.CreateActivity, core.ItemError)


def item_groups(actions: list) -> list[list]:
    """The plan cut into its items, in order; an item's actions are never split."""
    groups, current = [], []
    for action in actions:
        current.append(action)
        if isinstance(action, _ITEM_ENDS):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def _execute_in_slices(cycle: Cycle, actions: list) -> None:
    """A first sync may hold thousands of items: its plan is carried out a write batch of items at a time,
    each slice committed with how far it got, so the user sees the count grow (one commit per batch, not
    per item). A plan of one batch runs as any other cycle's."""
    state = cycle.progress
    groups = item_groups(actions)
    size = max(1, int(current_app.config["SYNC_BATCH_SIZE"]))
    orphans = cycle.orphans
    for start in range(0, len(groups), size):
        if start:
            cycle.orphans = {}  # the occurrences a series left behind are removed once, with the first slice
        try:
            _execute_now(cycle, [action for group in groups[start:start + size] for action in group])
        finally:
            cycle.orphans = orphans
        state.first_sync_done = min((state.first_sync_done or 0) + len(groups[start:start + size]),
                                    state.first_sync_total or 0)
        db.session.commit()
        checkpoint("first-sync-slice")


def _deletes_last(cycle: Cycle, actions: list) -> tuple[list, list]:
    """An event is deleted from Google only after the portal has stored what Google had changed in it.

    When a plan takes Google's changes into an activity and deletes the event (the activity no longer
    qualifies for Google), a cycle cut short between the delete and the portal's commit would lose those
    changes for good: the delete, and what follows it for that link, wait for the portal's commit.
    """
    taken_in: set[int] = set()
    held: set[int] = set()
    first, then = [], []
    for action in actions:
        link_id = link_id_of(cycle, action) if isinstance(
            action, core.UpdateActivity | core.RestoreActivity | core.DeleteEvent | core.Unlink) else None
        if link_id is not None and isinstance(action, core.UpdateActivity | core.RestoreActivity):
            taken_in.add(link_id)
        if link_id is not None and isinstance(action, core.DeleteEvent) and link_id in taken_in:
            held.add(link_id)
        (then if link_id in held else first).append(action)
    return first, then


def _execute_now(cycle: Cycle, actions: list) -> None:
    reserve_event_ids(cycle, actions)
    checkpoint("reserved")
    results = write_to_google(cycle, actions)
    checkpoint("written")
    hold_failed_links(cycle, actions, results)
    size = max(1, int(current_app.config["SYNC_BATCH_SIZE"]))
    groups = item_groups(actions)
    index = 0
    for start in range(0, len(groups), size):  # a batch of items, as many as a Google batch holds
        batch = []
        for group in groups[start:start + size]:
            batch.extend((index + offset, action) for offset, action in enumerate(group))
            index += len(group)
        _store(cycle, batch, results)


def _store(cycle: Cycle, batch: list[tuple[int, object]], results: dict) -> None:
    """Store a batch of items' outcomes in the portal with one flush. When any of them fails, the batch is
    rolled back and stored again an item at a time, each in its own savepoint: one bad item never stops
    the others, and only it is marked failed."""
    mark = cycle.mark()
    try:
        with db.session.begin_nested(), db.session.no_autoflush:
            cycle.batching = True
            read_versions(cycle, [action for _, action in batch])
            for index, action in batch:
                apply(cycle, index, action, results)
            cycle.flush()
        return
    except (IntegrationError, UserError):
        raise
    except Exception as exc:  # noqa: BLE001 - told apart below, item by item
        if database_busy(exc):
            raise  # not an item's problem: no other item could be stored either
    finally:
        cycle.batching, cycle.current_versions = False, {}
    cycle.restore(mark)
    for index, action in batch:
        _store_one(cycle, index, action, results)


def _store_one(cycle: Cycle, index: int, action, results: dict) -> None:
    try:
        with db.session.begin_nested():
            apply(cycle, index, action, results)
            cycle.flush()
    except (IntegrationError, UserError):
        raise
    except Exception as exc:  # noqa: BLE001 - one bad item must never stop the cycle
        cycle.after_flush = []
        cycle.links.reindex()  # the rollback put back the ids some links had
        if isinstance(exc, StaleDataError | ObjectDeletedError):
            # Another worker or a person changed this item meanwhile: the next cycle merges it again.
            mark_failed(cycle, action, "Changed during the cycle; merged again in the next one.")
        elif isinstance(exc, IntegrityError) and isinstance(action, core.CreateActivity):
            # Another worker took the same new event in at the same moment (one event, one link): theirs stands.
            log.info("event %s was taken in by another worker at the same moment", action.google_id)
            cycle.failed_google.add(action.google_id)
        elif isinstance(exc, IntegrityError) or database_busy(exc):
            raise  # a busy database is not this item's problem: no other item could be stored either
        else:
            log.exception("sync action %s failed", type(action).__name__)
            mark_failed(cycle, action, f"Could not be stored: {type(exc).__name__}: {exc}")


REPLAN_ROUNDS = 3


def _replan_refetched(cycle: Cycle) -> None:
    """Links whose write was not made or not taken (Google changed the event meanwhile, its etag was
    unknown, an insert turned out to exist already, or a write went through but its answer was lost):
    read them from Google again and merge once more, in this cycle, a few rounds at most. Each link alone:
    one that cannot be read waits for the next cycle, the others go on."""
    for _ in range(REPLAN_ROUNDS):
        if not cycle.refetch:
            return
        _replan_round(cycle)
    for link_id in cycle.refetch:  # changed again in Google every time: the next cycle reads it once more
        cycle.failed_links.add(link_id)
        link = cycle.links.get(link_id)
        if link is not None and link.activity_id:
            cycle.failed_portal.add(link.activity_id)
    cycle.refetch = set()


def _replan_round(cycle: Cycle) -> None:
    links = {link_id: cycle.links[link_id] for link_id in sorted(cycle.refetch) if link_id in cycle.links}
    cycle.refetch = set()
    google_items, portal_items, core_links = {}, {}, {}
    for link_id, link in links.items():
        cycle.failed_links.discard(link_id)
        try:
            item = fetch_google_item(cycle, link)
        except TransientError as exc:
            mark_link_failed(cycle, link, f"Google could not be read: {exc.cause}")
            continue
        activity = cycle.activities.get(link.activity_id) if link.activity_id else None
        if activity is None and link.activity_id:
            activity = db.session.get(Activity, link.activity_id)
        if item is None or activity is None:
            cycle.failed_links.add(link_id)
            continue
        if agree_on_sent(cycle, link, item) is None:  # our own write that went through is no Google change
            mark_link_failed(cycle, link, "Google could not be read; tried again in the next cycle.")
            continue
        portal_item = portal_item_of(cycle, activity, link)
        if portal_item is None:
            continue
        google_items[link.google_event_id] = item  # its etag goes with the writes, the link's waits for SetBase
        portal_items[activity.id] = portal_item
    planned = links_for_core(cycle)
    core_links = {link_id: planned[link_id] for link_id in links if link_id in planned
                  and cycle.links[link_id].activity_id in portal_items}
    actions = core.plan_cycle(core_links, portal_items, google_items, syncing=cycle.syncing_emails)
    _execute(cycle, actions)
