"""A cycle's working memory and its journal: what it read, what it holds, what failed, and the helpers
every phase shares to look links up and record an item's problem."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

from portal.extensions import db
from portal.integration import endpoints, signing_key
from portal.models import (
    ACTIVITY_TEXTS,
    Activity,
    ChangeRecord,
    GoogleIntegration,
    Organization,
    User,
    utcnow,
)
from portal.sync import core
from portal.sync.google import (
    CalendarClient,
    GoogleError,
    UserError,
)
from portal.sync.google_writes import Orphans
from portal.sync.mapping import state_from_json
from portal.sync.models import Lease, SyncCycle, SyncJournalEntry, SyncLink

FIRST_SYNC_DAYS = 30
IN_CLAUSE_CHUNK = 500
# An item that has no calendar to go to (its owner is not in the Workspace and no participant syncs) is
# tried again when it changes, on a first sync, or after this long: never once per cycle.
PARKED_SECONDS = 3600


# Points between two writes where a cycle can be cut short as a killed worker's would be: the chaos tests
# register a hook that stops the cycle there, to prove that no such point loses or duplicates anything.
CHECKPOINTS: list[Callable[[str], None]] = []


def checkpoint(name: str) -> None:
    for hook in CHECKPOINTS:
        hook(name)


_KEEP = "sync_kept"
_ALL = "all"


@contextmanager
def kept_across_commits(*objects):
    """Commits inside keep `objects` loaded instead of expiring them; without objects, everything the session
    holds. Everything else expires at each commit as usual.

    A cycle commits several times (after the pull, after reserving ids, after each slice of a first sync);
    expiring then made every link and activity it touched next be read again, one statement each, which
    for a large cycle cost more than the cycle's own work, and made an idle cycle read its user, sync state,
    organization and integration again after each commit. What the cycle holds stays right without that
    re-read: the user is claimed and its links are leased to the cycle, an activity's version is read again
    before the cycle writes it, and a row changed meanwhile fails its versioned update (the item is then
    merged again next cycle)."""
    session = db.session()
    previous = session.expire_on_commit, session.info.get(_KEEP)
    session.expire_on_commit = False
    session.info[_KEEP] = {id(o) for o in objects if o is not None} if objects else _ALL
    try:
        yield
    finally:
        session.expire_on_commit = previous[0]
        if previous[1] is None:
            session.info.pop(_KEEP, None)
        else:
            session.info[_KEEP] = previous[1]


@sa_event.listens_for(Session, "after_commit")
def _expire_all_but_kept(session) -> None:
    keep = session.info.get(_KEEP)
    if keep is None or keep is _ALL:
        return
    for obj in list(session.identity_map.values()):
        if id(obj) not in keep:
            session.expire(obj)


def fresh_generation(activity: Activity, link: SyncLink | None = None) -> int:
    """Where the event ids of a new link (or of a re-created event) are counted from.

    An activity may be linked, unlinked (deleted in Google, then restored) and linked again, and Google
    never gives a deleted id back: a new life must never meet an earlier event under the same id. The
    activity's version only grows, and every new life or re-creation follows a change of the activity, so
    counting from it never repeats an id (and a run of the same changes chooses the same ids).
    """
    return max(activity.version or 0, (link.generation + 1) if link is not None else 0)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def chunks(values, size=IN_CLAUSE_CHUNK):
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start:start + size]


def parse_google_time(value: str | None) -> datetime:
    if not value:
        return utcnow()
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return utcnow()


@dataclass
class EventInfo:
    """What the engine keeps of a pulled event besides its state."""

    organizer: str
    external: list
    activity_property: str | None
    from_organizer_copy: bool
    etag: str | None
    responses: dict = field(default_factory=dict)
    event_type: str = "default"
    guests: dict = field(default_factory=dict)  # e-mail -> the attendee as Google has it
    guests_can_modify: bool = False


class OrganizationUsers(Mapping):
    """An organization's active users by e-mail, read when asked for.

    A cycle meets a handful of an organization's users (organizers, attendees, owners), and an organization
    may have tens of thousands: reading them all every cycle would make each cycle cost the size of the
    organization. Iteration covers only the users read so far.
    """

    def __init__(self, organization_id: int, known=()):
        self._organization_id = organization_id
        self._found: dict[str, User] = {user.email.lower(): user for user in known}  # already loaded
        self._absent: set[str] = set()

    def prefetch(self, emails) -> None:
        wanted = {str(e).strip().lower() for e in emails if e} - self._found.keys() - self._absent
        for chunk in chunks(wanted):
            for user in db.session.scalars(select(User).where(User.organization_id == self._organization_id,
                                                              User.email.in_(chunk), User.active.is_(True))):
                self._found[user.email] = user
        self._absent |= wanted - self._found.keys()

    def __getitem__(self, email: str) -> User:
        email = str(email).strip().lower()
        if email not in self._found and email not in self._absent:
            self.prefetch([email])
        return self._found[email]

    def __iter__(self):
        return iter(self._found)

    def __len__(self) -> int:
        return len(self._found)


def event_emails(events) -> set[str]:
    emails = set()
    for event in events:
        if not isinstance(event, dict):
            continue
        for person in [event.get("organizer"), event.get("creator"), *(event.get("attendees") or [])]:
            if isinstance(person, dict) and person.get("email"):
                emails.add(str(person["email"]).lower())
    return emails


class LinkMap(dict):
    """The cycle's links by id, with the links of an activity and of an event at hand: a cycle of thousands
    of items looks links up for each of them, and a scan per look-up made a large cycle's cost grow with the
    square of its size. The indexes follow the links' `activity_id` and `google_event_id` as the engine
    changes them (attribute events below); a hit is checked against the link before it is trusted."""

    _FIELDS = ("activity_id", "google_event_id")

    def __init__(self, *args, **kwargs):
        super().__init__()
        self._indexed: dict[int, tuple] = {}  # link id -> the values it is indexed under
        self._by: dict[str, dict[object, dict[int, None]]] = {name: defaultdict(dict) for name in self._FIELDS}
        self.update(*args, **kwargs)

    def __setitem__(self, link_id, link) -> None:
        super().__setitem__(link_id, link)
        self._index(link_id, link)
        maps = link.__dict__.setdefault("_link_maps", [])
        if not any(ref() is self and key == link_id for ref, key in maps):
            maps.append((weakref.ref(self), link_id))

    def __delitem__(self, link_id) -> None:
        super().__delitem__(link_id)
        self._unindex(link_id)

    def pop(self, link_id, *default):
        if link_id in self:
            self._unindex(link_id)
        return super().pop(link_id, *default)

    def popitem(self):
        link_id, link = super().popitem()
        self._unindex(link_id)
        return link_id, link

    def clear(self) -> None:
        super().clear()
        self._indexed.clear()
        for index in self._by.values():
            index.clear()

    def update(self, *args, **kwargs) -> None:
        for link_id, link in dict(*args, **kwargs).items():
            self[link_id] = link

    def setdefault(self, link_id, link=None):
        if link_id not in self:
            self[link_id] = link
        return self[link_id]

    def _index(self, link_id, link, values: tuple | None = None) -> None:
        self._unindex(link_id)
        values = values if values is not None else tuple(getattr(link, name) for name in self._FIELDS)
        self._indexed[link_id] = values
        for name, value in zip(self._FIELDS, values, strict=True):
            if value is not None:
                self._by[name][value][link_id] = None

    def _unindex(self, link_id) -> None:
        values = self._indexed.pop(link_id, None)
        if values is None:
            return
        for name, value in zip(self._FIELDS, values, strict=True):
            if value is not None:
                held = self._by[name].get(value)
                if held is not None:
                    held.pop(link_id, None)
                    if not held:
                        del self._by[name][value]

    def _moved(self, link_id, link, name: str, value) -> None:
        if self.get(link_id) is not link:
            return
        values = list(self._indexed.get(link_id) or (None, None))
        values[self._FIELDS.index(name)] = value
        self._index(link_id, link, tuple(values))

    def reindex(self) -> None:
        """Index every link again from its attributes as they are now (after a rollback reverted some)."""
        for link_id, link in list(self.items()):
            self._index(link_id, link)

    def first(self, name: str, value) -> SyncLink | None:
        """The link (the first the cycle met) whose `name` is `value`."""
        if value is None:
            return None
        for link_id in self._by[name].get(value, ()):
            link = self.get(link_id)
            if link is not None and getattr(link, name) == value:
                return link
        return None


def _follow(name: str):
    def moved(target, value, oldvalue, initiator):
        for ref, link_id in target.__dict__.get("_link_maps", ()):
            links = ref()
            if links is not None:
                links._moved(link_id, target, name, value)
    return moved


for _name in LinkMap._FIELDS:
    sa_event.listen(getattr(SyncLink, _name), "set", _follow(_name))


@dataclass
class Cycle:
    """The working memory of one run: never shared between runs or threads."""

    organization: Organization
    integration: GoogleIntegration
    row: SyncCycle
    puller: User | None = None
    clients: dict[str, CalendarClient] = field(default_factory=dict)
    key: object = None
    users_by_email: OrganizationUsers = None  # type: ignore[assignment]
    syncing: set[int] = field(default_factory=set)  # users with calendar sync on
    syncing_emails: frozenset[str] = frozenset()
    links: LinkMap = field(default_factory=LinkMap)
    activities: dict[int, Activity] = field(default_factory=dict)
    activity_versions: dict[int, int] = field(default_factory=dict)
    outbox: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    outbox_fields: dict[int, frozenset[str]] = field(default_factory=dict)  # outbox row -> fields it edited
    new_etags: dict[int, str] = field(default_factory=dict)  # link -> our write's etag, taken with SetBase
    synced_before: dict[int, bool] = field(default_factory=dict)  # link -> synced before a settled write
    loaded_versions: dict[int, int] = field(default_factory=dict)  # link -> version when first read
    events: dict[str, EventInfo] = field(default_factory=dict)
    google_states: dict[str, core.ItemState | None] = field(default_factory=dict)
    failed_portal: set[int] = field(default_factory=set)
    failed_google: set[str] = field(default_factory=set)
    failed_links: set[int] = field(default_factory=set)
    refetch: set[int] = field(default_factory=set)  # links to read from Google again and plan anew, once
    unsettled: set[int] = field(default_factory=set)  # links whose reserved id the pull listed: settle them
    written: set[int] = field(default_factory=set)  # links whose event we wrote (their etag is the answer's)
    # Exceptions Google still holds for occurrences its series no longer has, by event id: removed there.
    orphans: dict[str, Orphans] = field(default_factory=dict)
    outside_workspace: set[str] = field(default_factory=set)  # e-mails Google said it does not know
    parked: set[int] = field(default_factory=set)  # activities with nowhere to go in Google, for now
    refused: dict[int, core.ItemState] = field(default_factory=dict)  # link id -> Google's state, kept
    portal_states: dict[int, core.ItemState | None] = field(default_factory=dict)  # as planned this cycle
    first_sync: bool = False
    owner: str = ""  # who runs it, in leases
    claims: set[str] = field(default_factory=set)  # the link leases this cycle holds
    busy: set[int] = field(default_factory=set)  # links another cycle holds: left for the next cycle
    held: set[int] = field(default_factory=set)  # links left for a later cycle, for whatever reason
    held_back: bool = False  # a change Google listed was left for later: the sync token must not move
    progress: object = None  # the user's CalendarSync while a first sync counts its items done
    # What handlers finish once their rows are flushed (ids to lease and journal by): a batch of items is
    # stored with one flush, not one per item.
    after_flush: list[Callable[[], None]] = field(default_factory=list)
    batching: bool = False  # while a batch is stored: outbox rows taken are marked with its flush
    taken: list[int] = field(default_factory=list)  # outbox rows taken in the batch being stored
    current_versions: dict[int, int] = field(default_factory=dict)  # activity -> version read for the batch

    _KEPT = ("links", "activities", "activity_versions", "outbox", "outbox_fields", "new_etags", "synced_before",
             "loaded_versions", "events", "google_states", "failed_portal", "failed_google", "failed_links",
             "refetch", "unsettled", "written", "orphans", "outside_workspace", "parked", "refused",
             "portal_states", "claims", "busy", "held")

    # The row's counts: a quiet cycle's row is not in the session yet, so no rollback would take them back.
    _COUNTS = ("pulled", "pushed", "portal_created", "portal_updated", "portal_deleted", "google_created",
               "google_updated", "google_deleted", "conflicts", "errors")

    def mark(self) -> dict:
        """What the cycle holds now, to go back to when a batch's writes are rolled back."""
        return ({name: getattr(self, name).copy() for name in self._KEPT} | {"held_back": self.held_back}
                | {"counts": {name: getattr(self.row, name) for name in self._COUNTS}})

    def restore(self, mark: dict) -> None:
        for name, value in mark.items():
            if name == "counts":
                for count, number in value.items():
                    setattr(self.row, count, number)
            elif name == "links":
                self.links = LinkMap(value)
            else:
                setattr(self, name, value)
        self.after_flush, self.taken, self.current_versions = [], [], {}

    def flush(self) -> None:
        """Flush the session, then finish what waited for the rows' ids."""
        taken, self.taken = self.taken, []
        for chunk in chunks(taken):
            db.session.execute(update(ChangeRecord).where(ChangeRecord.id.in_(chunk)).values(processed_at=utcnow()))
        db.session.flush()
        while self.after_flush:
            waiting, self.after_flush = self.after_flush, []
            for finish in waiting:
                finish()

    def client(self, email: str) -> CalendarClient:
        email = email.lower()
        if email not in self.clients:
            if self.key is None:
                self.key = signing_key(self.integration)
            self.clients[email] = CalendarClient(self.key, email, endpoints())
        return self.clients[email]

    def google_state(self, google_id: str | None, link: SyncLink | None) -> core.ItemState | None:
        """What Google holds for the event: as this cycle read it or, unread, as last agreed."""
        return self.google_states.get(google_id) or (state_from_json(link.base_state)
                                                      if link is not None and link.base_state else None)

    @property
    def requests(self) -> int:
        return sum(c.requests_made for c in self.clients.values())

    def journal(self, kind: str, *, activity_id=None, google_event_id=None, side=None, field=None, before=None,
                after=None, message=None) -> None:
        db.session.add(SyncJournalEntry(
            organization_id=self.organization.id, cycle=self.row, activity_id=activity_id,
            google_event_id=google_event_id, kind=kind, side=side, field=field, before=before, after=after,
            message=message))


def lease_seconds() -> float:
    return float(current_app.config["SYNC_LEASE_SECONDS"])


class Raced(Exception):
    """Another worker changed a row this cycle was writing (its claim ran out, or a row outside the claims):
    the cycle ends, and the next one merges those items again."""


RACES = (StaleDataError, ObjectDeletedError, Raced)

# What a cycle records when another writer held the database longer than the cycle waits for it (SQLite's
# busy timeout, PostgreSQL's lock timeouts, deadlocks and serialization failures). The cycle's work is rolled
# back whole, its outbox rows stay pending and its links keep their agreed state: the next cycle does it again.
DATABASE_BUSY = ("The portal's database was busy (locked by another writer); nothing was lost — the changes "
                 "are retried in the next cycle.")
# PostgreSQL's codes for "someone else holds what you need": serialization_failure, deadlock_detected,
# lock_not_available.
_POSTGRES_BUSY = frozenset({"40001", "40P01", "55P03"})


def database_busy(exc: BaseException) -> bool:
    """Whether `exc` is the database refusing a write because another writer holds a lock: a passing
    condition, unlike a bug or a broken database."""
    if not isinstance(exc, DBAPIError):
        return False
    original = exc.orig
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if code in _POSTGRES_BUSY:
        return True
    if isinstance(original, sqlite3.OperationalError):
        text = str(original).lower()
        return "database is locked" in text or "database table is locked" in text
    return False


def claim_new(cycle: Cycle, link: SyncLink) -> None:
    """A link this cycle creates is this cycle's: its lease is written in the same transaction."""
    seconds = float(current_app.config["SYNC_LEASE_SECONDS"])
    name = f"link:{link.id}"
    db.session.add(Lease(name=name, owner=cycle.owner or worker_name(), expires_at=utcnow() + timedelta(
        seconds=seconds)))
    cycle.claims.add(name)
    cycle.loaded_versions[link.id] = link.version


def link_of_activity(cycle: Cycle, activity_id: int) -> SyncLink | None:
    return cycle.links.first("activity_id", activity_id)


def link_of_event(cycle: Cycle, google_id: str) -> SyncLink | None:
    return cycle.links.first("google_event_id", google_id)


def is_pullers(cycle: Cycle, exc: GoogleError) -> bool:
    """Whether a user-level error concerns the user whose cycle this is (their banner), not another
    user's calendar that only one item needed (that item's problem)."""
    if not isinstance(exc, UserError):
        return False
    return cycle.puller is not None and (exc.subject or "").lower() == cycle.puller.email.lower()


def item_problem(cycle: Cycle, link: SyncLink | None, *, activity_id=None, google_event_id=None,
                  message: str) -> None:
    cycle.row.errors += 1
    cycle.journal("error", activity_id=activity_id or (link.activity_id if link else None),
                  google_event_id=google_event_id or (link.google_event_id if link else None), message=message)
    if link is not None:
        link.error_message, link.error_at = message, utcnow()
        cycle.failed_links.add(link.id)
    if activity_id is not None:
        cycle.failed_portal.add(activity_id)


def link_id_of(cycle: Cycle, action) -> int | None:
    link = link_for_action(cycle, action)
    return link.id if link is not None else None


class _Replan:
    """The outcome of a write that was not made or not taken: its link is read again and planned anew."""

    def __repr__(self) -> str:
        return "REPLAN"


REPLAN = _Replan()


def replan(cycle: Cycle, action) -> _Replan:
    link = link_for_action(cycle, action)
    if link is not None:
        cycle.refetch.add(link.id)
        cycle.failed_links.add(link.id)
    return REPLAN


def link_for_action(cycle: Cycle, action) -> SyncLink | None:
    link_id = getattr(action, "link_id", None)
    if link_id is not None and link_id in cycle.links:
        return cycle.links[link_id]
    if isinstance(action, core.CreateEvent | core.RecreateEvent | core.LinkItems):
        return link_of_activity(cycle, action.portal_id)
    google_id = getattr(action, "google_id", None)
    if google_id is not None:
        return link_of_event(cycle, google_id)
    portal_id = getattr(action, "portal_id", None)
    return link_of_activity(cycle, portal_id) if portal_id is not None else None


def mark_failed(cycle: Cycle, action, message: str) -> None:
    cycle.row.errors += 1
    portal_id = getattr(action, "portal_id", None)
    google_id = getattr(action, "google_id", None) or getattr(action, "old_google_id", None)
    link_id = getattr(action, "link_id", None)
    if portal_id is not None:
        cycle.failed_portal.add(portal_id)
    if google_id is not None:
        cycle.failed_google.add(google_id)
    link = cycle.links.get(link_id) if link_id is not None else link_for_action(cycle, action)
    if link is not None:
        cycle.failed_links.add(link.id)
        link.error_message, link.error_at = message, utcnow()
    cycle.journal("error", activity_id=portal_id, google_event_id=google_id, message=message)


def journal_conflict(cycle: Cycle, action: core.RecordConflict) -> None:
    """Keep the losing value of a conflict, once: a merge tried again (its writes failed, or the worker
    stopped) finds the same conflict and does not journal it twice."""
    conflict = action.conflict
    loser = "google" if conflict.winner == core.Side.PORTAL else "portal"
    lost, kept = jsonable(conflict.lost_value), jsonable(conflict.kept_value)
    if action.portal_id is not None:
        earlier = db.session.scalars(
            select(SyncJournalEntry).where(SyncJournalEntry.activity_id == action.portal_id,
                                           SyncJournalEntry.kind == "conflict", SyncJournalEntry.field == conflict.field)
            .order_by(SyncJournalEntry.id.desc()).limit(20))
        if any(entry.before == lost and entry.after == kept and entry.side == loser for entry in earlier):
            return
    cycle.row.conflicts += 1
    cycle.journal("conflict", activity_id=action.portal_id, google_event_id=action.google_id, side=loser,
                  field=conflict.field, before=lost, after=kept,
                  message=f"Both sides changed {conflict.field}; the later change ({conflict.winner}) was kept, "
                          "the other value is kept here so it can be restored.")


def guests_of(event: dict) -> dict:
    attendees = event.get("attendees") if isinstance(event.get("attendees"), list) else []
    return {str(a["email"]).lower(): a for a in attendees if isinstance(a, dict) and isinstance(a.get("email"), str)}


def jsonable(value):
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set | tuple | list):
        return sorted(jsonable(v) for v in value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, core.ExceptionState):
        return {"cancelled": value.cancelled, **{name: getattr(value, name) for name in ACTIVITY_TEXTS},
                "start": jsonable(value.start), "end": jsonable(value.end)}
    return str(value)


def outbox_taken(cycle: Cycle, activity_id: int | None) -> None:
    """The portal changes this cycle read for the activity are in the agreed state now: they are marked done
    in the same transaction, so a change already agreed on is never taken for a new one (a worker stopped
    before the cycle's end would otherwise leave them pending, "touching" fields both sides agree on)."""
    outbox_taken_upto(cycle, activity_id, None)


def outbox_pending_again(cycle: Cycle, activity_id: int, fields: frozenset[str]) -> None:
    """Write down once more, as a pending change of the portal's, a part of its changes that a settled write
    turned out not to carry (the occurrences that follow a series insert in writes of their own): the
    outbox rows it settled are done, and this one keeps the rest pending until it has reached Google,
    whatever else happens in this cycle."""
    record = ChangeRecord(organization_id=cycle.organization.id, activity_id=activity_id, action="update",
                          origin="portal", fields=sorted(fields))
    db.session.add(record)
    db.session.flush()
    cycle.outbox[activity_id].append(record.id)
    cycle.outbox_fields[record.id] = frozenset(fields)


def outbox_taken_upto(cycle: Cycle, activity_id: int | None, upto: int | None) -> None:
    """Mark the cycle's outbox rows of the activity done, all of them or those up to row `upto`."""
    ids = cycle.outbox.get(activity_id, []) if activity_id is not None else []
    taken = [rid for rid in ids if upto is None or rid <= upto]
    if not taken:
        return
    cycle.outbox[activity_id] = [rid for rid in ids if rid not in taken]
    if cycle.batching:
        cycle.taken.extend(taken)
    else:
        db.session.execute(update(ChangeRecord).where(ChangeRecord.id.in_(taken)).values(processed_at=utcnow()))


def mark_link_failed(cycle: Cycle, link: SyncLink, message: str) -> None:
    cycle.failed_links.add(link.id)
    if link.activity_id:
        cycle.failed_portal.add(link.activity_id)
    cycle.row.errors += 1
    cycle.journal("error", activity_id=link.activity_id, google_event_id=link.google_event_id, message=message)
