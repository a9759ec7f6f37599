"""What one user's calendar sync did lately, read for their profile: the journal of the items they own or take
part in (whichever cycle wrote it: their own, or the organization's outbox pushing their portal changes), the
conflicts whose losing value can be put back, the items that could not be synced, and their cycles with the
quiet ones collapsed. The words come from `journal_text`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select

from portal.activities import can_edit
from portal.extensions import db
from portal.models import ACTIVITY_TEXTS, Activity, User
from portal.sync.journal_text import (
    FIELD_NAMES,
    SIDE_NAMES,
    cycle_counts,
    cycle_result,
    describe_entry,
    fix_for,
    plural,
    show_value,
)
from portal.sync.models import CalendarSync, SyncCycle, SyncJournalEntry, SyncLink
from portal.sync.status import CycleSummary, recent_cycles_for

PAGE_SIZE = 10
CYCLE_ROWS = 8
CYCLES_READ = 60  # enough to fill the rows when most cycles are quiet


def _mine(user: User):
    """The journal entries that concern the user: their items' (owned or joined), and their own cycles'
    entries about no item (a full re-read, an event that could not be read)."""
    own_cycles = select(SyncCycle.id).where(SyncCycle.user_id == user.id)
    return and_(SyncJournalEntry.organization_id == user.organization_id,
                or_(SyncJournalEntry.activity_id.in_(Activity.ids_involving(user)),
                    and_(SyncJournalEntry.activity_id.is_(None), SyncJournalEntry.cycle_id.in_(own_cycles))))


def _activities(ids) -> dict[int, Activity]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return {a.id: a for a in db.session.scalars(select(Activity).where(Activity.id.in_(ids)))}


def item_address(activity: Activity | None) -> str | None:
    """Where the item can be opened: its page, or the trash when it is deleted."""
    from flask import url_for

    if activity is None:
        return None
    if activity.is_deleted:
        return url_for("calendar.trash")
    return url_for("calendar.edit", activity_id=activity.id)


@dataclass(frozen=True)
class Change:
    id: int
    at: datetime
    kind: str
    text: str
    address: str | None


def recent_changes(user: User, *, before: int | None = None,
                   limit: int = PAGE_SIZE) -> tuple[list[Change], int | None]:
    """The newest `limit` entries (older than entry `before`), and the id to page on from (None: no more)."""
    query = select(SyncJournalEntry).where(_mine(user))
    if before is not None:
        query = query.where(SyncJournalEntry.id < before)
    rows = db.session.scalars(query.order_by(SyncJournalEntry.id.desc()).limit(limit + 1)).all()
    more = rows[limit - 1].id if len(rows) > limit else None
    rows = rows[:limit]
    activities = _activities(r.activity_id for r in rows)
    zone = user.zone
    return [Change(r.id, r.created_at, r.kind, describe_entry(r, activities.get(r.activity_id), zone),
                   item_address(activities.get(r.activity_id))) for r in rows], more


@dataclass(frozen=True)
class Conflict:
    entry: SyncJournalEntry
    activity: Activity
    field: str
    lost: str
    kept: str
    loser: str
    restorable: bool
    put_back: bool  # the item holds the losing value again
    address: str | None


def conflicts(user: User, limit: int = 10) -> list[Conflict]:
    """The latest conflicts on the user's items, each with the value that lost and whether it can be put back
    (a text field, by someone who may change the item, and not back already)."""
    rows = db.session.scalars(select(SyncJournalEntry).where(_mine(user), SyncJournalEntry.kind == "conflict")
                              .order_by(SyncJournalEntry.id.desc()).limit(limit)).all()
    activities = _activities(r.activity_id for r in rows)
    zone = user.zone
    found = []
    for entry in rows:
        activity = activities.get(entry.activity_id)
        if activity is None:
            continue
        text = entry.field in ACTIVITY_TEXTS and isinstance(entry.before, str)
        back = text and getattr(activity, entry.field) == entry.before
        restorable = text and not back and not activity.is_deleted and can_edit(user, activity)
        found.append(Conflict(entry, activity, FIELD_NAMES.get(entry.field or "", entry.field or "value"),
                              show_value(entry.field, entry.before, zone), show_value(entry.field, entry.after, zone),
                              SIDE_NAMES.get(entry.side or "", "one side"), restorable, back, item_address(activity)))
    return found


@dataclass(frozen=True)
class Failed:
    activity: Activity
    reason: str
    fix: str
    since: datetime | None
    address: str | None


def failed_items(user: User, limit: int = 20) -> list[Failed]:
    """The user's items the sync could not bring to Google (or take from it) right now, with the fix."""
    links = db.session.scalars(
        select(SyncLink).where(SyncLink.organization_id == user.organization_id, SyncLink.error_message.is_not(None),
                               SyncLink.activity_id.in_(Activity.ids_involving(user)))
        .order_by(SyncLink.error_at.desc()).limit(limit)).all()
    activities = _activities(link.activity_id for link in links)
    return [Failed(activities[link.activity_id], link.error_message, fix_for(link.error_message), link.error_at,
                   item_address(activities[link.activity_id]))
            for link in links if link.activity_id in activities]


@dataclass(frozen=True)
class CycleRow:
    started_at: datetime
    until: datetime | None  # the last of a run of quiet cycles
    quiet: int  # how many quiet cycles the row stands for (0: a cycle that did something)
    result: str
    counts: str
    message: str | None
    pushed_for_me: bool  # an organization push that carried the user's portal changes


def _is_quiet(cycle: CycleSummary) -> bool:
    return (cycle.status in ("ok", "skipped") and not cycle.message
            and not (cycle.from_google or cycle.to_google or cycle.conflicts or cycle.errors))


def cycle_rows(user: User, *, rows: int = CYCLE_ROWS) -> list[CycleRow]:
    """The user's latest cycles, newest first, with the organization's pushes of their changes among them
    (counted for their items only, by `recent_cycles_for`); runs of quiet cycles become one row. Quiet cycles
    are counted, not stored: the current run is on the user's `CalendarSync`, the run before each stored
    cycle on its row."""
    cycles = recent_cycles_for(user, limit=CYCLES_READ)
    found: list[CycleRow] = []
    run: list[tuple[int, datetime, datetime, str | None]] = []  # (count, first, last, status of a lone one)

    def close_run():
        count = sum(part[0] for part in run)
        if count == 1 and len(run) == 1:
            found.append(CycleRow(run[0][1], None, 0, cycle_result(run[0][3] or "ok"), "nothing changed",
                                  None, False))
        elif count:
            first, last = min(part[1] for part in run), max(part[2] for part in run)
            found.append(CycleRow(first, last, count, plural(count, "quiet cycle"), "nothing changed", None, False))
        run.clear()

    state = db.session.get(CalendarSync, user.id)
    if state is not None and state.quiet_cycles:
        run.append((state.quiet_cycles, state.quiet_since or state.last_quiet_at, state.last_quiet_at, None))
    for cycle in cycles:
        if _is_quiet(cycle):
            run.append((1, cycle.started_at, cycle.started_at, cycle.status))
        else:
            close_run()
            counts = cycle_counts(cycle.from_google, cycle.to_google, cycle.conflicts, cycle.errors)
            found.append(CycleRow(cycle.started_at, None, 0, cycle_result(cycle.status), counts, cycle.message,
                                  cycle.outbox))
        if cycle.quiet_before:
            run.append((cycle.quiet_before, cycle.quiet_first_at or cycle.quiet_last_at, cycle.quiet_last_at, None))
    close_run()
    return found[:rows]
