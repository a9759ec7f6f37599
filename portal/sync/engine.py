"""The sync engine: one cycle for one user (pull, merge, push) and the push of an organization's outbox.

Data flows one way: Google changes (from the user's calendar, by sync token) and portal changes (from the
outbox) become the core's items; `plan_cycle` decides; Google writes go out in batches; then the portal
writes, the links' agreed states and the journal are committed. A write that failed leaves its link's
agreed state where it was and its outbox rows pending, so the next cycle tries again; nothing is dropped.

Errors are handled at their level: integration-level (bad key, delegation) pauses the organization and
sets its banner; user-level (not a Workspace user) sets that user's banner; item-level is journaled on the
item while the rest of the cycle goes on; transient ones are retried within the cycle, then next cycle.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

from portal.changes import changed_by
from portal.extensions import db
from portal.models import (
    Activity,
    ActivityParticipant,
    ChangeRecord,
    GoogleIntegration,
    Organization,
    RecurrenceException,
    User,
    utcnow,
)
from portal.sync import core
from portal.sync.batch import Backoff, Write, run_writes
from portal.sync.google import (
    CalendarClient,
    GoogleError,
    IntegrationError,
    SyncTokenExpired,
    TransientError,
    UserError,
    error_for,
)
from portal.sync.mapping import (
    ACTIVITY_ID_PROPERTY,
    ORGANIZATION_PROPERTY,
    MappingError,
    activity_state,
    attendee_responses,
    event_body,
    event_state,
    external_attendees,
    instance_body,
    instance_id,
    instance_reset_body,
    occurrence_times,
    state_from_json,
    state_to_json,
)
from portal.sync.models import CalendarSync, Lease, SyncCycle, SyncJournalEntry, SyncLink
from portal.sync.recurrence import is_occurrence, occurrence_keys_among

log = logging.getLogger(__name__)

FIRST_SYNC_DAYS = 30
LEASE_SECONDS = 300
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


def integration_of(organization: Organization) -> GoogleIntegration | None:
    return db.session.scalar(select(GoogleIntegration).where(GoogleIntegration.organization_id == organization.id))


def sync_allowed(organization: Organization) -> bool:
    """Integration switched on, configured, and not paused by an integration-level error."""
    row = integration_of(organization)
    return row is not None and row.sync_allowed


def syncing_users(organization_id: int) -> dict[int, str]:
    """The organization's active users with calendar sync on: id -> e-mail."""
    return dict(db.session.execute(
        select(User.id, User.email).join(CalendarSync, CalendarSync.user_id == User.id)
        .where(CalendarSync.organization_id == organization_id, CalendarSync.enabled.is_(True), User.active.is_(True))
    ).all())


def sync_user_ids(organization_id: int) -> set[int]:
    return set(syncing_users(organization_id))


def type_goes_to_google(activity: Activity) -> bool:
    """The portal's own rule: project tasks and types not selected for sync never go to Google."""
    return not activity.is_deleted and activity.project_task_id is None and activity.activity_type.sync_to_google


def is_eligible(activity: Activity, syncing: set[int]) -> bool:
    """Whether the activity goes to Google (the integration itself being on is checked before): its type
    goes, and someone with calendar sync on takes part in it."""
    if not type_goes_to_google(activity):
        return False
    return activity.owner_id in syncing or any(link.user_id in syncing for link in activity.participant_links)


def _chunks(values, size=IN_CLAUSE_CHUNK):
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _parse_google_time(value: str | None) -> datetime:
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


# Google's event types (calendar.v3.json, Event.eventType) and what the sync makes of them: out of office and
# focus time are work time and come in as activities; working locations and birthdays are markers of a day,
# not work, and stay in Google only; Gmail's events come in, and Google refuses changes to everything the
# portal syncs except privacy (the event types guide), so the portal never sends those.
IGNORED_EVENT_TYPES = frozenset({"workingLocation", "birthday"})
# The portal's fields Google refuses to change, by kind of event (a locked copy: Event.locked, "no changes can
# be made to the main event fields summary, description, location, start, end or recurrence").
FIXED_FIELDS = {  # kind of event -> (the error code Google's refusal is, the fields it refuses)
    "fromGmail": ("made_by_gmail", frozenset(core.SYNCED_FIELDS) - {"private"}),
    "locked": ("locked_copy", frozenset({"subject", "description", "location", "all_day", "start", "end",
                                         "time_zone", "recurrence"})),
}
# Refusals after which Google's version stays on both sides and the portal's values go to the journal, with
# what the journal says ({organizer}: who organizes the event).
KEEP_GOOGLES_VERSION = {
    "not_organizer": "Only {organizer}, who organizes this event, can change it in Google; their version was "
                     "kept and this value is kept here.",
    "made_by_gmail": "Gmail made this event and Google lets nobody change this; Google's version was kept and "
                     "this value is kept here.",
    "locked_copy": "This event is a locked copy in Google and cannot change this; Google's version was kept "
                   "and this value is kept here.",
}


def event_type_of(event: dict) -> str:
    event_type = str(event.get("eventType") or "default")
    return "locked" if event_type == "default" and event.get("locked") is True else event_type


class OrganizationUsers(Mapping):
    """An organization's active users by e-mail, read when asked for.

    A cycle meets a handful of an organization's users (organizers, attendees, owners), and an organization
    may have tens of thousands: reading them all every cycle would make each cycle cost the size of the
    organization. Iteration covers only the users read so far.
    """

    def __init__(self, organization_id: int):
        self._organization_id = organization_id
        self._found: dict[str, User] = {}
        self._absent: set[str] = set()

    def prefetch(self, emails) -> None:
        wanted = {str(e).strip().lower() for e in emails if e} - self._found.keys() - self._absent
        for chunk in _chunks(wanted):
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


def _event_emails(events) -> set[str]:
    emails = set()
    for event in events:
        if not isinstance(event, dict):
            continue
        for person in [event.get("organizer"), event.get("creator"), *(event.get("attendees") or [])]:
            if isinstance(person, dict) and person.get("email"):
                emails.add(str(person["email"]).lower())
    return emails


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
    links: dict[int, SyncLink] = field(default_factory=dict)
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
    orphans: dict[str, dict] = field(default_factory=dict)
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

    def client(self, email: str) -> CalendarClient:
        email = email.lower()
        if email not in self.clients:
            from portal.integration import endpoints, signing_key

            if self.key is None:
                self.key = signing_key(self.integration)
            self.clients[email] = CalendarClient(self.key, email, endpoints())
        return self.clients[email]

    @property
    def requests(self) -> int:
        return sum(c.requests_made for c in self.clients.values())

    def journal(self, kind: str, *, activity_id=None, google_event_id=None, side=None, field=None, before=None,
                after=None, message=None) -> None:
        db.session.add(SyncJournalEntry(
            organization_id=self.organization.id, cycle_id=self.row.id, activity_id=activity_id,
            google_event_id=google_event_id, kind=kind, side=side, field=field, before=before, after=after,
            message=message))


# ---------------------------------------------------------------- entry points


def run_user_cycle(user_id: int, *, trigger: str = "scheduler", owner: str | None = None) -> SyncCycle | None:
    """Pull the user's Google calendar and push their pending portal changes. None when another worker
    holds this user's lease; otherwise the cycle's row (never raises for Google's answers)."""
    user = db.session.get(User, user_id)
    if user is None or not user.active:
        return None
    state = db.session.get(CalendarSync, user_id)
    if state is None or not state.enabled:
        return None
    owner = owner or worker_name()
    lease = f"user:{user_id}"
    if not Lease.acquire(lease, owner, _lease_seconds()):
        return None
    claims: set[str] = set()
    try:
        return _run(user.organization, trigger, puller=user, owner=owner, claims=claims)
    finally:
        db.session.rollback()
        Lease.release_many(claims, owner)
        Lease.release(lease, owner)


def _lease_seconds() -> float:
    from flask import current_app

    return float(current_app.config.get("SYNC_LEASE_SECONDS", LEASE_SECONDS))


def push_pending(organization_id: int, *, trigger: str = "change", owner: str | None = None) -> SyncCycle | None:
    """Push the organization's pending portal changes to Google. None when another worker is at it."""
    organization = db.session.get(Organization, organization_id)
    if organization is None:
        return None
    owner = owner or worker_name()
    lease = f"outbox:{organization_id}"
    if not Lease.acquire(lease, owner, _lease_seconds()):
        return None
    claims: set[str] = set()
    try:
        return _run(organization, trigger, puller=None, owner=owner, claims=claims)
    finally:
        db.session.rollback()
        Lease.release_many(claims, owner)
        Lease.release(lease, owner)


def _close_abandoned(organization_id: int, user_id: int | None) -> None:
    """A cycle still "running" although we hold its lease was cut short (a killed worker): say so."""
    db.session.execute(
        update(SyncCycle)
        .where(SyncCycle.organization_id == organization_id, SyncCycle.user_id.is_(user_id) if user_id is None
               else SyncCycle.user_id == user_id, SyncCycle.status == "running")
        .values(status="failed", message="The worker running this cycle stopped; another one took over.")
    )


class Raced(Exception):
    """Another worker changed a row this cycle was writing (its claim ran out, or a row outside the claims):
    the cycle ends, and the next one merges those items again."""


RACES = (StaleDataError, ObjectDeletedError, Raced)


def _run(organization: Organization, trigger: str, *, puller: User | None, owner: str = "",
         claims: set[str] | None = None) -> SyncCycle:
    started = time.monotonic()
    organization_id = organization.id
    _close_abandoned(organization.id, puller.id if puller else None)
    row = SyncCycle(organization_id=organization.id, user_id=puller.id if puller else None, trigger=trigger,
                    started_at=utcnow(), status="running")
    db.session.add(row)
    integration = integration_of(organization)
    if integration is None or not integration.sync_allowed:
        row.status, row.message = "skipped", "The organization's Google Calendar integration is off or paused."
        db.session.commit()
        return row
    db.session.commit()
    cycle = Cycle(organization=organization, integration=integration, row=row, puller=puller, owner=owner,
                  claims=claims if claims is not None else set())
    try:
        _cycle(cycle)
        row.status = "partial" if row.errors else "ok"
        if puller is not None:
            _user_succeeded(puller)
    except IntegrationError as exc:
        db.session.rollback()
        integration.record_error(exc.code, exc.cause, exc.fix)
        row.status, row.message = "failed", exc.cause
        log.warning("sync paused for organization %s: %s", organization.id, exc.code)
    except (UserError, SyncTokenExpired) as exc:
        db.session.rollback()
        if puller is not None:
            CalendarSync.for_user(puller).record_error(exc.code, exc.cause, exc.fix)
        row.status, row.message = "failed", exc.cause
    except TransientError as exc:
        db.session.rollback()
        row.status, row.message = "failed", f"{exc.cause} (retried next cycle)"
    except GoogleError as exc:
        db.session.rollback()
        row.status, row.message = "failed", exc.cause
    except RACES:
        db.session.rollback()
        log.info("sync cycle of organization %s met another worker's change; merged again next cycle",
                 organization_id)
        row.status = "failed"
        row.message = ("Another worker changed some of these items at the same moment; they are merged again "
                       "in the next cycle.")
    except Exception as exc:  # noqa: BLE001 - a cycle always ends with a state, never stays "running"
        db.session.rollback()  # first: a failed flush leaves nothing readable until then
        log.exception("sync cycle of organization %s stopped on an unexpected error", organization_id)
        row.status = "failed"
        row.message = f"The cycle stopped on an unexpected error ({type(exc).__name__}); it is tried again."
    row.requests = cycle.requests
    row.duration_ms = int((time.monotonic() - started) * 1000)
    if puller is not None:
        CalendarSync.for_user(puller).last_cycle_at = utcnow()
    db.session.add(row)
    db.session.commit()
    return row


def _user_succeeded(user: User) -> None:
    state = CalendarSync.for_user(user)
    state.clear_error()
    state.failures = 0
    state.last_success_at = utcnow()


# ---------------------------------------------------------------- one cycle


def _cycle(cycle: Cycle) -> None:
    organization = cycle.organization
    cycle.users_by_email = OrganizationUsers(organization.id)
    syncing = syncing_users(organization.id)
    cycle.syncing, cycle.syncing_emails = set(syncing), frozenset(e.lower() for e in syncing.values())
    now = utcnow()

    google_items: dict[str, core.GoogleItem] = {}
    first_sync = False
    state = None
    if cycle.puller is not None:
        state = CalendarSync.for_user(cycle.puller)
        google_items, next_token, first_sync = _pull(cycle, state)
    cycle.first_sync = first_sync
    checkpoint("pulled")
    db.session.commit()  # no write lock is held across the Google calls that follow

    portal_items = _portal_items(cycle, google_items, first_sync=first_sync)
    checkpoint("claiming")
    _claim_links(cycle, portal_items, google_items)
    _fill_missing_sides(cycle, portal_items, google_items)
    _settle_reserved(cycle, portal_items, google_items)
    actions = core.plan_cycle(_core_links(cycle), portal_items, google_items, first_sync=first_sync, now=now,
                              window_days=FIRST_SYNC_DAYS, syncing=cycle.syncing_emails)
    _execute(cycle, actions)
    checkpoint("applied")
    # What reached Google is recorded now: nothing that follows can take it back.
    db.session.commit()
    if cycle.refetch:
        checkpoint("replanning")
        _replan_refetched(cycle)
        db.session.commit()
    _refresh_attendees(cycle)
    checkpoint("outbox")
    _mark_outbox(cycle)
    if state is not None and not cycle.held_back:
        state.sync_token = next_token
        state.full_sync_needed = False
        if first_sync and state.first_synced_at is None:
            state.first_synced_at = utcnow()
    if cycle.busy:
        cycle.row.message = (f"{len(cycle.busy)} item(s) were being synced by another worker at the same "
                             "moment; they are synced in the next cycle.")
    db.session.commit()


def _pull(cycle: Cycle, state: CalendarSync):
    client = cycle.client(cycle.puller.email)
    first_sync = state.full_sync_needed or not state.sync_token
    try:
        events, next_token, zone = _list_events(client, None if first_sync else state.sync_token)
    except SyncTokenExpired:
        # Google forgot our place: list again, windowed; links make sure nothing is copied twice.
        cycle.journal("resync", message="Google asked for a full sync (410); the calendar was read again.")
        first_sync = True
        events, next_token, zone = _list_events(client, None)
    cycle.row.pulled = len(events)

    series: dict[str, dict] = {}
    instances: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        if not isinstance(event, dict) or not event.get("id"):
            continue
        if event.get("recurringEventId"):
            instances[event["recurringEventId"]].append(event)
        else:
            series[event["id"]] = event
    _load_links(cycle, google_ids=set(series) | set(instances))
    cycle.users_by_email.prefetch(_event_emails(events) | {cycle.puller.email})

    # Occurrences that changed without their series: read the series so the item is complete.
    for parent_id in set(instances) - set(series):
        try:
            series[parent_id] = client.execute(
                client.service.events().get(calendarId="primary", eventId=parent_id), item=True)
        except GoogleError as exc:
            if isinstance(exc, IntegrationError | UserError | TransientError):
                raise
            cycle.journal("error", google_event_id=parent_id, side="google", message=exc.cause)
            cycle.row.errors += 1

    items: dict[str, core.GoogleItem] = {}
    by_event = {link.google_event_id: link for link in cycle.links.values() if link.google_event_id}
    for event_id, event in series.items():
        try:
            item = _pulled_item(cycle, event_id, event, by_event.get(event_id), instances.get(event_id, []),
                                zone=zone, first_sync=first_sync)
        except (IntegrationError, UserError, TransientError):
            raise
        except Exception as exc:  # noqa: BLE001 - one odd event must never stop the cycle
            log.exception("pulling event %s failed", event_id)
            _item_problem(cycle, by_event.get(event_id), google_event_id=event_id,
                          message=f"Google event not synced: {type(exc).__name__}: {exc}")
            continue
        if item is not None:
            items[event_id] = item
    _adopt_reserved_events(cycle, items)
    return items, next_token, first_sync


def _pulled_item(cycle: Cycle, event_id: str, event: dict, link: SyncLink | None, instances: list[dict], *,
                 zone: str, first_sync: bool) -> core.GoogleItem | None:
    """What one pulled event means for its item, or None when it means nothing (yet)."""
    if link is not None and not link.confirmed and link.pending_state is not None:
        cycle.unsettled.add(link.id)  # an insert of ours whose answer was lost: `_settle_reserved` reads it
        return None
    puller = cycle.puller.email.lower()
    organizer_field = event.get("organizer") if isinstance(event.get("organizer"), dict) else {}
    organizer = str(organizer_field.get("email") or puller).lower()
    from_organizer = organizer == puller
    modified = _parse_google_time(event.get("updated"))
    # The puller holds only an attendee's copy while the organizer's copy is within reach: what the
    # attendee did to their copy (removed it, declined one occurrence) is their answer, not a delete of
    # the item for everyone. The organizer's copy says what the item is.
    someone_elses = (link is not None and link.confirmed and link.google_event_id == event_id
                     and (link.calendar_email or "").lower() not in ("", puller)
                     and (link.calendar_email or "").lower() in cycle.users_by_email)
    if event.get("status") == "cancelled":
        if link is None or not link.confirmed:
            return None
        if someone_elses:
            return _fetch_google_item(cycle, link)
        return core.GoogleItem(None, modified)
    if someone_elses and any(i.get("status") == "cancelled" for i in instances if isinstance(i, dict)):
        return _fetch_google_item(cycle, link)
    if event.get("eventType") in IGNORED_EVENT_TYPES and (link is None or not link.confirmed):
        return None
    known = state_from_json(link.base_state) if link is not None and link.base_state else None
    base = _outside_the_window(known) if first_sync else known
    if known is not None and event.get("recurrence") and _series_moved(known, event):
        # The series' time or rule changed: which occurrences are changed or cancelled may have changed for
        # dates no occurrence was listed for. Read them all rather than carry the agreed ones over.
        client = cycle.client(cycle.puller.email)
        instances = _exception_instances(cycle, client, event)
        agreed, base = known, None
    else:
        agreed = base
    orphans: dict = {}
    try:
        state_now = event_state(event, instances, cycle.users_by_email, base=base, orphans=orphans,
                                calendar_time_zone=known.time_zone if known is not None else zone)
    except MappingError as exc:
        _item_problem(cycle, link, google_event_id=event_id, message=f"Google event not synced: {exc}")
        return None
    _note_orphans(cycle, event_id, organizer, orphans, agreed)
    props = event.get("extendedProperties") if isinstance(event.get("extendedProperties"), dict) else {}
    props = props.get("private") if isinstance(props.get("private"), dict) else {}
    cycle.events[event_id] = EventInfo(
        organizer=organizer,
        external=external_attendees(event, cycle.users_by_email),
        activity_property=(props.get(ACTIVITY_ID_PROPERTY)
                           if props.get(ORGANIZATION_PROPERTY) == cycle.organization.uid else None),
        from_organizer_copy=from_organizer,
        etag=event.get("etag") if from_organizer else None,
        responses=attendee_responses(event),
        event_type=event_type_of(event),
        guests=guests_of(event),
    )
    cycle.google_states[event_id] = state_now
    return core.GoogleItem(state_now, modified, cycle.events[event_id].etag)


def _series_moved(known: core.ItemState, event: dict) -> bool:
    """Whether a recurring event's time or rule differs from the agreed state (a cheap look, no mapping)."""
    try:
        probe = event_state({**event, "status": "confirmed"}, [], {}, calendar_time_zone=known.time_zone)
    except MappingError:
        return True
    return (probe.start, probe.end, probe.all_day, probe.recurrence) != (known.start, known.end, known.all_day,
                                                                        known.recurrence)


def _list_events(client: CalendarClient, sync_token: str | None):
    """Every page of the calendar's changes since `sync_token` (or, without one, of its last 30 days).

    A 410 on any page (the token expired while paging) raises SyncTokenExpired: the pages read so far
    are dropped and the caller lists the calendar again from the start, without a token."""
    from flask import current_app

    page_size = int(current_app.config.get("SYNC_PAGE_SIZE", 2500))  # Google's largest page
    events, page_token, zone = [], None, "UTC"
    while True:
        if page_token:
            checkpoint("page")
        params = {"calendarId": "primary", "maxResults": page_size, "singleEvents": False, "showDeleted": True}
        if sync_token:
            params["syncToken"] = sync_token
        else:
            params["timeMin"] = (utcnow() - timedelta(days=FIRST_SYNC_DAYS)).isoformat().replace("+00:00", "Z")
        if page_token:
            params["pageToken"] = page_token
        answer = client.execute(client.service.events().list(**params))
        events.extend(answer.get("items") or [])
        zone = answer.get("timeZone") or zone
        page_token = answer.get("nextPageToken")
        if not page_token:
            return events, answer.get("nextSyncToken"), zone


def _adopt_reserved_events(cycle: Cycle, items: dict[str, core.GoogleItem]) -> None:
    """An event whose insert answer never reached us is still ours: confirm its reserved link."""
    by_event = {link.google_event_id: link for link in cycle.links.values() if link.google_event_id}
    for event_id, info in cycle.events.items():
        link = by_event.get(event_id)
        if link is not None and not link.confirmed and items.get(event_id) is not None:
            link.confirmed, link.base_state, link.base_hash = True, None, None
        elif link is None and info.activity_property and info.activity_property.isdigit():
            activity_id = int(info.activity_property)
            activity = db.session.get(Activity, activity_id)
            taken = db.session.scalar(select(SyncLink).where(SyncLink.activity_id == activity_id))
            # Google copies private properties onto the new series of a "this and following" split: only an
            # event with an id the portal itself chose for that activity is the activity's own.
            if activity is not None and activity.organization_id == cycle.organization.id and taken is None \
                    and not activity.is_deleted and _chosen_for(cycle, activity_id, event_id):
                link = SyncLink(organization_id=cycle.organization.id, activity_id=activity_id,
                                google_event_id=event_id, calendar_email=info.organizer, origin="portal",
                                confirmed=True, generation=0)
                try:
                    with db.session.begin_nested():
                        db.session.add(link)
                        db.session.flush()
                        _claim_new(cycle, link)
                except IntegrityError:  # another worker linked it at the same moment: theirs stands
                    continue
                cycle.links[link.id] = link


def _chosen_for(cycle: Cycle, activity_id: int, event_id: str, generations: int = 32) -> bool:
    namespace = cycle.organization.uid
    return any(core.event_id_for(activity_id, namespace=namespace, generation=g) == event_id
               for g in range(generations))


def _load_links(cycle: Cycle, *, google_ids=(), activity_ids=()) -> None:
    found = []
    for chunk in _chunks(google_ids):
        found += db.session.scalars(select(SyncLink).where(SyncLink.organization_id == cycle.organization.id,
                                                           SyncLink.google_event_id.in_(chunk)))
    for chunk in _chunks(activity_ids):
        found += db.session.scalars(select(SyncLink).where(SyncLink.activity_id.in_(chunk)))
    for link in found:
        cycle.links[link.id] = link
        # What this cycle decides about the link rests on it as read now: see `_claim_links`.
        cycle.loaded_versions.setdefault(link.id, link.version)


def _portal_items(cycle: Cycle, google_items, *, first_sync: bool) -> dict[int, core.PortalItem]:
    organization = cycle.organization
    pending = select(ChangeRecord).where(ChangeRecord.organization_id == organization.id,
                                         ChangeRecord.processed_at.is_(None)).order_by(ChangeRecord.id).limit(5000)
    wanted: set[int] = set()
    if cycle.puller is not None:
        involved = _involving(cycle.puller)
        pending = pending.where(ChangeRecord.activity_id.in_(involved))
    for record in db.session.scalars(pending):
        _read_change(cycle, record)
        wanted.add(record.activity_id)
    # The portal side of every pulled, linked event is read too, so both sides merge in one plan, with its
    # pending changes (the puller may have only just been added to it).
    pulled = {link.activity_id for link in cycle.links.values() if link.activity_id} - wanted
    for chunk in _chunks(pulled):
        for record in db.session.scalars(select(ChangeRecord).where(
                ChangeRecord.activity_id.in_(chunk), ChangeRecord.processed_at.is_(None)).order_by(ChangeRecord.id)):
            _read_change(cycle, record)
    wanted |= pulled
    if first_sync and cycle.puller is not None:
        window_start = utcnow() - timedelta(days=FIRST_SYNC_DAYS + 2)
        candidates = select(Activity.id).where(
            Activity.id.in_(_involving(cycle.puller)), Activity.deleted_at.is_(None),
            or_(Activity.recurrence_text != "", Activity.end_at >= window_start,
                Activity.end_date >= window_start.date()))
        wanted |= set(db.session.scalars(candidates))
    _load_links(cycle, activity_ids=wanted - {link.activity_id for link in cycle.links.values()})

    items: dict[int, core.PortalItem] = {}
    link_of = {link.activity_id: link for link in cycle.links.values() if link.activity_id}
    for chunk in _chunks(wanted):
        for activity in db.session.scalars(select(Activity).where(Activity.id.in_(chunk))):
            if activity.organization_id != organization.id:
                continue
            if _parked(cycle, link_of.get(activity.id), activity):
                cycle.activities[activity.id] = activity
                cycle.failed_portal.add(activity.id)  # its changes stay pending until it can go somewhere
                continue
            item = _portal_item(cycle, activity, link_of.get(activity.id))
            if item is not None:
                items[activity.id] = item
    return items


def _read_change(cycle: Cycle, record: ChangeRecord) -> None:
    cycle.outbox[record.activity_id].append(record.id)
    cycle.outbox_fields[record.id] = frozenset(record.fields or ())


def _portal_item(cycle: Cycle, activity: Activity, link: SyncLink | None) -> core.PortalItem | None:
    """The activity as the core sees it now (None: it cannot be synced, and says why)."""
    cycle.activities[activity.id] = activity
    cycle.activity_versions[activity.id] = activity.version
    if activity.is_deleted:
        cycle.portal_states[activity.id] = None
        return core.PortalItem(None, activity.deleted_at)
    try:
        state = activity_state(activity)
    except ValueError as exc:
        _item_problem(cycle, link, activity_id=activity.id, message=f"Activity not synced: {exc}")
        return None
    cycle.portal_states[activity.id] = state
    flipped_type = _type_for(cycle, not state.private, activity.activity_type)
    eligible_if_flipped = (activity.project_task_id is None and flipped_type is not None
                           and flipped_type.sync_to_google)
    return core.PortalItem(state, activity.updated_at, type_goes_to_google(activity), _touched(cycle, activity.id),
                           eligible_if_flipped)


def _touched(cycle: Cycle, activity_id: int) -> frozenset[str]:
    """The fields the activity's pending portal changes (not yet agreed on) edited."""
    return frozenset().union(*(cycle.outbox_fields.get(rid, ()) for rid in cycle.outbox.get(activity_id, ())))


def _claim_links(cycle: Cycle, portal_items, google_items) -> None:
    """Claim every linked item this cycle has something to do for; one another cycle holds is left alone.

    A user's cycle, a colleague's cycle and the outbox push may all meet one item (an owner and a
    participant, say): each holds a different lease, so the item is claimed on its own, for the length of
    a lease. A left item's portal changes stay pending; when Google listed a change of it, the user's sync
    token stays where it was, so the next cycle lists that change again.
    """
    from flask import current_app

    wanted = {f"link:{link.id}": link for link in cycle.links.values() if link.id is not None and (
        link.activity_id in portal_items or link.google_event_id in google_items or link.id in cycle.unsettled)}
    if not wanted:
        return
    seconds = float(current_app.config.get("SYNC_LEASE_SECONDS", LEASE_SECONDS))
    versions = {link.id: cycle.loaded_versions.get(link.id, link.version) for link in wanted.values()}
    taken = Lease.acquire_many(wanted, cycle.owner or worker_name(), seconds)
    cycle.claims.update(taken)
    # A link another cycle wrote between our reading it and our claim was read stale: left for next time.
    claimed = [int(name.split(":", 1)[1]) for name in taken]
    current = dict(db.session.execute(select(SyncLink.id, SyncLink.version).where(SyncLink.id.in_(claimed))).all()) \
        if claimed else {}
    for name, link in wanted.items():
        if name in taken and current.get(link.id) == versions[link.id]:
            continue
        cycle.busy.add(link.id)
        _hold_back(cycle, link, portal_items, google_items)
    # The links this cycle does not hold are another cycle's to change or delete: forget them, so that no
    # later commit reloads a row that is gone or stale.
    for link_id, link in list(cycle.links.items()):
        if f"link:{link_id}" not in cycle.claims:
            _forget_link(cycle, link)


def _forget_link(cycle: Cycle, link: SyncLink) -> None:
    cycle.links.pop(link.id, None)
    if link in db.session:
        db.session.expunge(link)


def _claim_new(cycle: Cycle, link: SyncLink) -> None:
    """A link this cycle creates is this cycle's: its lease is written in the same transaction."""
    from flask import current_app

    seconds = float(current_app.config.get("SYNC_LEASE_SECONDS", LEASE_SECONDS))
    name = f"link:{link.id}"
    db.session.add(Lease(name=name, owner=cycle.owner or worker_name(), expires_at=utcnow() + timedelta(
        seconds=seconds)))
    cycle.claims.add(name)
    cycle.loaded_versions[link.id] = link.version

def _hold_back(cycle: Cycle, link: SyncLink, portal_items, google_items) -> None:
    """Leave the item for a later cycle: nothing is planned for it now, its portal changes stay pending, and
    when the pull listed a change of it the user's sync token stays, so the next pull lists it again."""
    cycle.failed_links.add(link.id)
    if link.activity_id is not None:
        cycle.failed_portal.add(link.activity_id)
        portal_items.pop(link.activity_id, None)
    if link.google_event_id in google_items:
        google_items.pop(link.google_event_id)
        cycle.held_back = cycle.held_back or cycle.puller is not None
    cycle.unsettled.discard(link.id)
    cycle.held.add(link.id)


def _parked(cycle: Cycle, link: SyncLink | None, activity: Activity) -> bool:
    """An item that found no calendar in Google lately and has not changed since: not tried again yet."""
    if link is None or link.confirmed or link.google_event_id or not link.error_message or link.error_at is None:
        return False
    if cycle.first_sync or activity.is_deleted:
        return False
    return utcnow() - link.error_at < timedelta(seconds=PARKED_SECONDS) and activity.updated_at <= link.error_at


def _involving(user: User):
    participates = select(ActivityParticipant.activity_id).where(ActivityParticipant.user_id == user.id)
    return select(Activity.id).where(Activity.organization_id == user.organization_id,
                                     or_(Activity.owner_id == user.id, Activity.id.in_(participates)))


def _link_of_activity(cycle: Cycle, activity_id: int) -> SyncLink | None:
    return next((link for link in cycle.links.values() if link.activity_id == activity_id), None)


def _fill_missing_sides(cycle: Cycle, portal_items, google_items) -> None:
    """A link without an agreed state needs both sides this cycle: read the one that did not come along."""
    for link in cycle.links.values():
        if not link.confirmed or link.base_state is not None or not link.activity_id or not link.google_event_id:
            continue
        if f"link:{link.id}" not in cycle.claims:
            continue  # another cycle has it, or it has nothing to do now
        if link.activity_id not in portal_items:
            activity = db.session.get(Activity, link.activity_id)
            if activity is not None:
                item = _portal_item(cycle, activity, link)
                if item is None:
                    continue
                portal_items[activity.id] = item
        if link.google_event_id not in google_items:
            item = _fetch_google_item(cycle, link)
            if item is not None:
                google_items[link.google_event_id] = item


def _read_event(cycle: Cycle, link: SyncLink) -> tuple[dict | None, list[dict]]:
    """The event as its own calendar holds it now, with every changed occurrence; (None, []) when Google
    does not know the id. Raises GoogleError for anything else."""
    return _read_event_at(cycle, link.calendar_email, link.google_event_id)


def _read_event_at(cycle: Cycle, calendar: str, event_id: str) -> tuple[dict | None, list[dict]]:
    client = cycle.client(calendar)
    try:
        event = client.execute(client.service.events().get(calendarId="primary", eventId=event_id), item=True)
    except GoogleError as exc:
        if exc.status == 404:
            return None, []
        if exc.status == 410:  # gone: deleted long enough ago that Google no longer shows it
            return {"id": event_id, "status": "cancelled"}, []
        raise
    if not isinstance(event, dict):
        raise error_for("event_refused", status=200, detail="Google answered with something that is not an event")
    instances = _exception_instances(cycle, client, event) if event.get("status") != "cancelled" else []
    return event, instances


def _fetch_google_item(cycle: Cycle, link: SyncLink) -> core.GoogleItem | None:
    """The event as its own calendar holds it now (with every changed occurrence), read on purpose."""
    try:
        event, instances = _read_event(cycle, link)
    except GoogleError as exc:
        if isinstance(exc, IntegrationError | TransientError) or _is_pullers(cycle, exc):
            raise
        _item_problem(cycle, link, google_event_id=link.google_event_id, message=exc.cause)
        return None
    if event is None:
        return core.GoogleItem(None, utcnow())
    return _google_item(cycle, link, event, instances)


def _google_item(cycle: Cycle, link: SyncLink, event: dict, instances: list[dict],
                 zone: str | None = None) -> core.GoogleItem | None:
    """What an event read on its own (not from the pull) means: its state, or None when it is deleted.
    `zone`: the item's zone when the link has no agreed state yet (an all-day event has none in Google)."""
    modified = _parse_google_time(event.get("updated"))
    if event.get("status") == "cancelled":
        return core.GoogleItem(None, modified)
    orphans: dict = {}
    base = state_from_json(link.base_state) if link.base_state else None
    try:
        state = event_state(event, instances, cycle.users_by_email, orphans=orphans,
                            calendar_time_zone=base.time_zone if base is not None else zone or "UTC")
    except MappingError as exc:
        _item_problem(cycle, link, google_event_id=link.google_event_id, message=f"Google event not synced: {exc}")
        return None
    _note_orphans(cycle, link.google_event_id, link.calendar_email, orphans, base)
    organizer = str((event.get("organizer") or {}).get("email") or link.calendar_email).lower()
    cycle.events[link.google_event_id] = EventInfo(
        organizer=organizer, external=external_attendees(event, cycle.users_by_email),
        activity_property=None, from_organizer_copy=True, etag=event.get("etag"),
        responses=attendee_responses(event), event_type=event_type_of(event),
        guests=guests_of(event))
    cycle.google_states[link.google_event_id] = state
    return core.GoogleItem(state, modified, event.get("etag"))


def _settle_reserved(cycle: Cycle, portal_items, google_items) -> None:
    """Inserts whose answer never came back (lost on the way, or the worker stopped before recording it)
    are settled by reading the reserved id back before anything is sent again.

    A 409 on a second insert is not enough: Google documents that it cannot guarantee to detect an id
    collision at insert time (calendar.v3.json, Event.id), and the event may have been deleted since, in
    which case the delete must win rather than a second copy appear.
    """
    for link in list(cycle.links.values()):
        if not link.google_event_id or link.pending_state is None:
            continue
        if link.confirmed:
            _settle_update(cycle, link, portal_items, google_items)
            continue
        if link.id not in cycle.unsettled and link.activity_id not in portal_items:
            continue
        try:
            event, instances = _read_event(cycle, link)
        except GoogleError as exc:
            if isinstance(exc, IntegrationError) or _is_pullers(cycle, exc):
                raise
            # Unknown whether the first insert went through: nothing is sent for this item until it is known.
            _hold_back(cycle, link, portal_items, google_items)
            if not isinstance(exc, TransientError):
                _item_problem(cycle, link, google_event_id=link.google_event_id, message=exc.cause)
            continue
        if event is None:
            continue  # it never arrived: the insert goes out again, with the same id
        item = _confirm_insert(cycle, link, event, instances, _pending(link)[0])
        if item is not None:
            google_items[link.google_event_id] = item
        _retouch(cycle, link, portal_items)


def _retouch(cycle: Cycle, link: SyncLink, portal_items) -> None:
    """The item's portal changes agreed on by a settled write no longer count as edits."""
    item = portal_items.get(link.activity_id)
    if item is not None:
        portal_items[link.activity_id] = replace(item, touched=_touched(cycle, link.activity_id))


def _settle_update(cycle: Cycle, link: SyncLink, portal_items, google_items) -> None:
    """An update whose outcome was never recorded (its answer lost, or the worker stopped before the
    portal's commit): when Google holds exactly what was sent, the write went through while the portal kept
    what it had then. The merge then starts from there, so the portal's own changes that went to Google
    are not taken for changes made in Google (which would, say, undo a delete made in the portal since)."""
    if link.google_event_id not in google_items and link.activity_id not in portal_items:
        return  # not part of this cycle: settled when it is
    item = google_items.get(link.google_event_id)
    if item is None:
        try:
            item = _fetch_google_item(cycle, link)
        except TransientError:
            item = None
        if item is None:  # unknown whether our write went through: nothing more is sent for it now
            _hold_back(cycle, link, portal_items, google_items)
            return
        google_items[link.google_event_id] = item
    if (link.pending_state or {}).get("delete"):
        _settle_delete(cycle, link, item, portal_items)
    elif _agree_on_sent(cycle, link, item) is None:
        _hold_back(cycle, link, portal_items, google_items)
    else:
        _retouch(cycle, link, portal_items)


def _settle_delete(cycle: Cycle, link: SyncLink, item: core.GoogleItem, portal_items) -> None:
    """A delete sent from the portal whose outcome was never recorded. When Google has it deleted, it went
    through; and when the activity is back in the portal since (restored from the trash), that restore is
    the later word: the event is made again, rather than the restore being undone."""
    upto = _pending_upto(link)
    link.pending_state = None
    if item.state is not None:
        return  # it never reached Google: the restore simply undid the delete here
    _outbox_taken_upto(cycle, link.activity_id, upto if upto is not None else -1)
    portal = portal_items.get(link.activity_id)
    if portal is not None and portal.state is not None:
        portal_items[link.activity_id] = replace(portal, touched=frozenset(core.SYNCED_FIELDS))


def _agree_on_sent(cycle: Cycle, link: SyncLink, item: core.GoogleItem) -> bool | None:
    """Settle a noted update against what Google holds now (see `_settle_update`): whether it went through,
    or None when that cannot be told now (the note then stays, for the next cycle).

    An event deleted since still shows its last content when read on its own (Google keeps the details of
    a cancelled event on the organizer's calendar, though it only promises the id): when that content is
    what was sent, the delete came after our write, from someone who had seen it, and it wins.
    """
    if not link.confirmed or not link.pending_state:
        return False
    if link.pending_state.get("delete"):
        link.pending_state = None  # read again after a delete that did not go through: nothing to settle
        return False
    sent, portal_then = _pending(link)
    landed = item.state is not None and item.state == sent
    if item.state is None:
        try:
            last = _last_content(cycle, link, sent.time_zone)
        except (TransientError, UserError):
            return None
        base = state_from_json(link.base_state) if link.base_state else None
        if last is not None and base is not None:
            # Changed in Google after our write, then deleted: it landed if Google showed what the portal
            # had changed (whoever deleted it had seen that).
            ours = [f for f in core.SYNCED_FIELDS if getattr(portal_then, f) != getattr(base, f)]
            landed = all(getattr(last, f) == getattr(sent, f) for f in ours)
            try:
                landed = landed and _occurrences_landed(cycle, link, base, sent)
            except (TransientError, UserError):
                return None
        else:
            landed = last == replace(sent, exceptions=core.FrozenMap())
    upto = _pending_upto(link)
    link.pending_state = None
    if landed:
        if link.base_state:  # whether the pair was synced is judged by the agreement before this write
            cycle.synced_before[link.id] = core.takes_part(state_from_json(link.base_state),
                                                           cycle.syncing_emails)
        link.base_state, link.base_hash = state_to_json(portal_then), portal_then.content_hash()
        _outbox_taken_upto(cycle, link.activity_id, upto if upto is not None else -1)
    return landed


def _occurrences_landed(cycle: Cycle, link: SyncLink, base: core.ItemState, sent: core.ItemState) -> bool:
    """Whether the occurrences the portal changed reached Google before the series was deleted: each one
    read on its own still shows its last content. (A cancelled occurrence cannot tell, the whole series
    being cancelled now; cancelling one occurrence is no reason to bring a deleted series back.)"""
    for key, exc in sent.exceptions.items():
        if base.exceptions.get(key) == exc or exc.cancelled:
            continue
        try:
            event, _ = _read_event_at(cycle, link.calendar_email, instance_id(link.google_event_id, key))
        except GoogleError as error:
            if isinstance(error, TransientError | IntegrationError | UserError):
                raise
            return False
        if not event or (exc.subject is not None and (event.get("summary") or "").strip() != exc.subject):
            return False
    return True


def _last_content(cycle: Cycle, link: SyncLink, zone: str) -> core.ItemState | None:
    """The series fields a deleted event last had, when Google still shows them; None when it does not.
    Raises what Google raises when it cannot be read now."""
    try:
        event, _ = _read_event(cycle, link)
    except GoogleError as exc:
        if isinstance(exc, TransientError | IntegrationError | UserError):
            raise
        return None
    if not event or not event.get("start") or not event.get("end"):
        return None
    try:
        state = event_state({**event, "status": "confirmed"}, [], cycle.users_by_email, calendar_time_zone=zone)
    except MappingError:
        return None
    return replace(state, exceptions=core.FrozenMap())


def _note_pending(cycle: Cycle, link: SyncLink, sent: core.ItemState, portal: core.ItemState | None) -> None:
    """Write down, before sending, what Google is about to get, what the portal had then, and the last of
    the portal's changes that went into it (`upto`: those are agreed on once the write turns out to have
    gone through)."""
    rows = cycle.outbox.get(link.activity_id) or []
    link.pending_state = {"sent": state_to_json(sent), "portal": state_to_json(portal or sent),
                          "upto": max(rows) if rows else None}


def _pending_upto(link: SyncLink) -> int | None:
    data = link.pending_state or {}
    return data.get("upto") if isinstance(data, dict) else None


def _pending(link: SyncLink) -> tuple[core.ItemState, core.ItemState]:
    data = link.pending_state
    if "sent" not in data:  # noted by an earlier version: an insert's state alone
        state = state_from_json(data)
        return state, state
    return state_from_json(data["sent"]), state_from_json(data["portal"])


def _confirm_insert(cycle: Cycle, link: SyncLink, event: dict, instances: list[dict],
                    intended: core.ItemState) -> core.GoogleItem | None:
    """Our insert did reach Google: link the event, with what the insert carried as the agreed state.

    The occurrence changes follow a series insert in writes of their own; those Google does not have were
    never written, so they are not part of the agreed state (and go out as changes of the portal's).
    """
    item = _google_item(cycle, link, event, instances, zone=intended.time_zone)
    base = intended
    if item is not None and item.state is not None:
        written = {key: exc for key, exc in intended.exceptions.items() if key in item.state.exceptions}
        base = replace(intended, exceptions=core.FrozenMap(written))
    upto = _pending_upto(link)
    link.confirmed = True
    link.pending_state = None
    link.base_state, link.base_hash = state_to_json(base), base.content_hash()
    _outbox_taken_upto(cycle, link.activity_id, upto if upto is not None else -1)
    if event.get("etag") and event.get("status") != "cancelled":
        link.etag = event["etag"]
    cycle.journal("created", activity_id=link.activity_id, google_event_id=link.google_event_id, side="google",
                  after=state_to_json(base), message="The insert had reached Google, but its answer had not "
                  "reached the portal: the event is linked, not inserted again.")
    return item


def _outside_the_window(known: core.ItemState | None) -> core.ItemState | None:
    """What a windowed full listing cannot show of a known series: its exceptions from before the window.

    A first sync (a colleague switching on, or Google's 410) lists the last 30 days only; an occurrence
    edited before that is not gone, it is just not listed, so the agreed exception is kept.
    """
    if known is None or not known.exceptions:
        return None
    window_start = utcnow() - timedelta(days=FIRST_SYNC_DAYS)
    earlier = {}
    for key, exc in known.exceptions.items():
        try:
            original, _ = occurrence_times(known, key)
        except ValueError:
            continue
        ends = [original, exc.end] if exc.end is not None else [original]
        if all(_as_instant(moment, known.time_zone) < window_start for moment in ends):
            earlier[key] = exc
    return replace(known, exceptions=core.FrozenMap(earlier)) if earlier else None


def _as_instant(moment, time_zone: str) -> datetime:
    if isinstance(moment, datetime):
        return moment
    return datetime.combine(moment, datetime.min.time(), tzinfo=ZoneInfo(time_zone))


def _note_orphans(cycle: Cycle, event_id: str, calendar: str, orphans: dict, base: core.ItemState | None) -> None:
    """Remember the occurrences to remove from Google because its series no longer has them.

    Only exceptions both sides agreed on before, orphaned by a change of the series since: an occurrence
    Google lists that the portal's reading of the rule never had is left alone rather than deleted.
    """
    if base is None or calendar not in cycle.users_by_email:
        return
    agreed = {key: exc for key, exc in orphans.items() if key in base.exceptions}
    if agreed:
        cycle.orphans[event_id] = {"calendar": calendar, "keys": agreed}


def _is_pullers(cycle: Cycle, exc: GoogleError) -> bool:
    """Whether a user-level error concerns the user whose cycle this is (their banner), not another
    user's calendar that only one item needed (that item's problem)."""
    if not isinstance(exc, UserError):
        return False
    return cycle.puller is not None and (exc.subject or "").lower() == cycle.puller.email.lower()


def _exception_instances(cycle: Cycle, client: CalendarClient, event: dict) -> list[dict]:
    """The changed and cancelled occurrences of a series, read when the series was read on its own."""
    if not event.get("recurrence"):
        return []
    answer = client.execute(client.service.events().list(
        calendarId="primary", iCalUID=event.get("iCalUID") or event["id"], showDeleted=True, singleEvents=False,
        maxResults=2500), item=True)
    return [e for e in answer.get("items") or [] if e.get("recurringEventId") == event["id"]]


def _core_links(cycle: Cycle) -> dict[int, core.Link]:
    links = {}
    for link_id, link in cycle.links.items():
        base = state_from_json(link.base_state) if link.base_state else None
        google_id = link.google_event_id if link.confirmed else None
        origin = {"google": core.Side.GOOGLE, "both": None}.get(link.origin, core.Side.PORTAL)
        links[link_id] = core.Link(link.activity_id, google_id, base, origin, cycle.synced_before.get(link_id))
    return links


def _item_problem(cycle: Cycle, link: SyncLink | None, *, activity_id=None, google_event_id=None,
                  message: str) -> None:
    cycle.row.errors += 1
    cycle.journal("error", activity_id=activity_id or (link.activity_id if link else None),
                  google_event_id=google_event_id or (link.google_event_id if link else None), message=message)
    if link is not None:
        link.error_message, link.error_at = message, utcnow()
        cycle.failed_links.add(link.id)
    if activity_id is not None:
        cycle.failed_portal.add(activity_id)


# ---------------------------------------------------------------- carrying out the plan


def _execute(cycle: Cycle, actions: list) -> None:
    first, then = _deletes_last(cycle, actions)
    _execute_now(cycle, first)
    if then:
        checkpoint("taken-in")
        db.session.commit()
        # A link whose portal write failed keeps its event: the next cycle takes the changes in again.
        ready = []
        for action in then:
            link = _link_for_action(cycle, action)
            if link is not None and link.id not in cycle.failed_links and link.activity_id not in cycle.failed_portal:
                ready.append(action)
        _execute_now(cycle, ready)


def _link_id(cycle: Cycle, action) -> int | None:
    link = _link_for_action(cycle, action)
    return link.id if link is not None else None


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
        link_id = _link_id(cycle, action) if isinstance(
            action, core.UpdateActivity | core.RestoreActivity | core.DeleteEvent | core.Unlink) else None
        if link_id is not None and isinstance(action, core.UpdateActivity | core.RestoreActivity):
            taken_in.add(link_id)
        if link_id is not None and isinstance(action, core.DeleteEvent) and link_id in taken_in:
            held.add(link_id)
        (then if link_id in held else first).append(action)
    return first, then


def _execute_now(cycle: Cycle, actions: list) -> None:
    _reserve_event_ids(cycle, actions)
    checkpoint("reserved")
    results = _google_writes(cycle, actions)
    checkpoint("written")
    _hold_failed_links(cycle, actions, results)
    for index, action in enumerate(actions):
        try:
            with db.session.begin_nested():
                _apply(cycle, index, action, results)
        except (IntegrationError, UserError):
            raise
        except (StaleDataError, ObjectDeletedError):
            # Another worker or a person changed this item meanwhile: the next cycle merges it again.
            _mark_failed(cycle, action, "Changed during the cycle; merged again in the next one.")
        except IntegrityError:
            # Another worker took the same new event in at the same moment (one event, one link): theirs stands.
            if not isinstance(action, core.CreateActivity):
                raise
            log.info("event %s was taken in by another worker at the same moment", action.google_id)
            cycle.failed_google.add(action.google_id)
        except Exception as exc:  # noqa: BLE001 - one bad item must never stop the cycle
            log.exception("sync action %s failed", type(action).__name__)
            _mark_failed(cycle, action, f"Could not be stored: {type(exc).__name__}: {exc}")


def _target_calendar(cycle: Cycle, activity_id: int | None, link: SyncLink | None) -> str:
    if link is not None and link.calendar_email:
        return link.calendar_email
    activity = cycle.activities.get(activity_id) if activity_id else None
    return activity.owner.email if activity is not None else cycle.puller.email


def _reserve_event_ids(cycle: Cycle, actions: list) -> None:
    """Write the chosen event ids down before inserting, so a lost answer can never become a duplicate, and
    the pairs a first sync matched before writing either side, so a cycle cut short never copies them."""
    for action in actions:
        if isinstance(action, core.LinkItems):
            _reserve_match(cycle, action)
        elif getattr(action, "portal_id", None) in cycle.failed_portal and isinstance(
                action, core.CreateEvent | core.RecreateEvent):
            continue  # not sent this cycle: what an earlier attempt noted must stay as it is
        elif isinstance(action, core.CreateEvent):
            activity = cycle.activities[action.portal_id]
            link = cycle.links.get(action.link_id) if action.link_id else _link_of_activity(cycle, action.portal_id)
            if link is None:
                link = _new_portal_link(cycle, activity)
                if link is None:
                    continue
            target, reason = _home_calendar(cycle, activity)
            if target is None:
                _park(cycle, link, activity, reason)
                continue
            link.google_event_id = core.event_id_for(action.portal_id, namespace=cycle.organization.uid,
                                                     generation=link.generation)
            link.calendar_email = target
            _note_pending(cycle, link, action.state, action.state)
        elif isinstance(action, core.RecreateEvent):
            link = cycle.links[action.link_id]
            link.generation = fresh_generation(cycle.activities[action.portal_id], link)
            link.confirmed = False
            link.google_event_id = core.event_id_for(action.portal_id, namespace=cycle.organization.uid,
                                                     generation=link.generation)
            _note_pending(cycle, link, action.state, action.state)
        elif isinstance(action, core.DeleteEvent) and not action.reason:
            link = _link_for_action(cycle, action)
            if link is not None and link.confirmed:  # the portal's delete: see `_settle_delete`
                rows = cycle.outbox.get(link.activity_id) or []
                link.pending_state = {"delete": True, "upto": max(rows) if rows else None}
        elif isinstance(action, core.UpdateEvent):
            link = _link_for_action(cycle, action)
            if link is not None and link.confirmed:
                base = state_from_json(link.base_state) if link.base_state else None
                current = cycle.google_states.get(action.google_id) or base
                if action.state != current:  # something will be sent
                    _note_pending(cycle, link, action.state, cycle.portal_states.get(link.activity_id, base))
        elif isinstance(action, core.RecordConflict):
            # Journaled before the writes: a worker stopped after overwriting the losing value in Google
            # must not take the only record of it down with its transaction.
            _journal_conflict(cycle, action)
    db.session.commit()


def _reserve_match(cycle: Cycle, action: core.LinkItems) -> None:
    """A matched pair is linked before its writes, still without an agreed state: should the cycle stop
    half-way, the next one reads both sides and merges them again instead of copying either."""
    if _link_of_activity(cycle, action.portal_id) is not None:
        return
    info = cycle.events.get(action.google_id)
    calendar = info.organizer if info is not None and info.organizer in cycle.users_by_email \
        else cycle.activities[action.portal_id].owner.email
    link = SyncLink(organization_id=cycle.organization.id, activity_id=action.portal_id,
                    google_event_id=action.google_id, calendar_email=calendar, origin="both",
                    generation=fresh_generation(cycle.activities[action.portal_id]),
                    confirmed=True, etag=info.etag if info is not None else None)
    try:
        with db.session.begin_nested():
            db.session.add(link)
            db.session.flush()
            _claim_new(cycle, link)
    except IntegrityError:  # linked by another worker just now: that link is worked from next cycle
        cycle.failed_portal.add(action.portal_id)
        cycle.failed_google.add(action.google_id)
        return
    cycle.links[link.id] = link


def _new_portal_link(cycle: Cycle, activity: Activity) -> SyncLink | None:
    """A link for an activity about to be inserted in Google; None when another worker linked it just now
    (this cycle then leaves the activity alone, and the next one works from that link)."""
    link = SyncLink(organization_id=cycle.organization.id, activity_id=activity.id,
                    calendar_email=activity.owner.email, origin="portal", confirmed=False,
                    generation=fresh_generation(activity))
    try:
        with db.session.begin_nested():
            db.session.add(link)
            db.session.flush()
            _claim_new(cycle, link)
    except IntegrityError:
        cycle.failed_portal.add(activity.id)
        return None
    cycle.links[link.id] = link
    return link


def _home_calendar(cycle: Cycle, activity: Activity) -> tuple[str | None, str]:
    """The calendar a new event goes to: the owner's, or, when Google does not know the owner, that of a
    participant who syncs (who is then its organizer in Google). None, with the reason, when neither."""
    owner = activity.owner.email.lower()
    if _in_workspace(cycle, owner):
        return owner, ""
    stand_ins = sorted((p for p in activity.participant_links if p.user_id in cycle.syncing and p.user.active),
                       key=lambda p: p.user_id)
    for participant in stand_ins:
        email = participant.user.email.lower()
        if email != owner and _in_workspace(cycle, email):
            return email, ""
    return None, (f"The owner {activity.owner.email} is not a user of the Google Workspace, and no participant "
                  "who is has calendar sync switched on, so the item has no calendar to go to in Google. "
                  "It is synced as soon as a participant switches sync on (or the owner's address exists in "
                  "the Workspace).")


def _in_workspace(cycle: Cycle, email: str) -> bool:
    """Whether Google issues a token for the user; a refusal is remembered for the rest of the cycle."""
    email = email.lower()
    if email in cycle.outside_workspace:
        return False
    if cycle.puller is not None and email == cycle.puller.email.lower():
        return True
    try:
        cycle.client(email).authorize()
    except UserError as exc:
        if exc.code != "unknown_user":
            return True  # known to Google but otherwise unreachable: the write says why, on the item
        cycle.outside_workspace.add(email)
        return False
    except TransientError:
        return True  # cannot tell now; the write fails the same way and is retried
    return True


def _park(cycle: Cycle, link: SyncLink, activity: Activity, reason: str) -> None:
    """Record why the item is not in Google and leave it until it changes (or an hour passes)."""
    first_time = link.error_message != reason
    link.error_message, link.error_at = reason, utcnow()
    cycle.failed_portal.add(activity.id)
    cycle.parked.add(activity.id)
    if first_time:
        cycle.row.errors += 1
        cycle.journal("error", activity_id=activity.id, side="google", message=reason)


def _google_writes(cycle: Cycle, actions: list) -> dict:
    from flask import current_app

    config = current_app.config
    backoff = Backoff(attempts=int(config.get("SYNC_RETRY_ATTEMPTS", 4)),
                      base_seconds=float(config.get("SYNC_RETRY_BASE_SECONDS", 0.5)),
                      cap_seconds=float(config.get("SYNC_RETRY_CAP_SECONDS", 8.0)))
    batch_size = int(config.get("SYNC_BATCH_SIZE", 50))
    writes = []
    refused = {}
    by_event = {link.google_event_id: link for link in cycle.links.values() if link.google_event_id}
    for index, action in enumerate(actions):
        if getattr(action, "portal_id", None) in cycle.failed_portal and isinstance(
                action, core.CreateEvent | core.RecreateEvent):
            continue  # its link could not be reserved: never insert without one
        if isinstance(action, core.UpdateEvent) and action.google_id in cycle.failed_google:
            continue
        if isinstance(action, core.UpdateEvent) and _organized_elsewhere(cycle, action.google_id, by_event):
            # Google refuses changes to an event organized outside the organization: do not even ask.
            refused[index] = error_for("not_organizer", status=403, reason="forbiddenForNonOrganizer")
            continue
        fixed = _fixed_by_google(cycle, action) if isinstance(action, core.UpdateEvent) else None
        if fixed:
            refused[index] = error_for(fixed, status=400, reason="invalid")
            continue
        if isinstance(action, core.UpdateEvent | core.DeleteEvent) and (
                not _etag_for(cycle, action) or _series_unread(cycle, action) or _guests_unread(cycle, action)):
            # A write could overwrite (or a delete destroy) a change made in Google that we have not seen:
            # read the event first and merge again.
            refused[index] = _replan(cycle, action)
            continue
        try:
            write = _write_for(cycle, index, action)
        except (IntegrationError, UserError, TransientError):
            raise
        except Exception as exc:  # noqa: BLE001 - one item that cannot be written must not stop the others
            log.exception("preparing %s failed", type(action).__name__)
            refused[index] = error_for("event_refused", detail=f"the write could not be prepared: {exc!r}"[:300])
            continue
        if write is not None:
            writes.append(write)
        elif isinstance(action, core.UpdateEvent) and action.google_id not in cycle.google_states:
            # The portal stands by what was agreed (a field changed and changed back, a restore from the
            # trash): nothing differs from what Google had, unless Google changed since. Read it and see.
            refused[index] = _replan(cycle, action)
    results = run_writes(writes, batch_size=batch_size, backoff=backoff)
    results.update(refused)
    for index, outcome in list(results.items()):
        if not isinstance(actions[index], core.UpdateEvent | core.DeleteEvent) or not isinstance(outcome, GoogleError):
            continue
        if outcome.status == 412 or isinstance(outcome, TransientError):
            # Changed in Google meanwhile, or no answer (the write may have gone through): read it again,
            # then merge once more from what Google really holds.
            results[index] = _replan(cycle, actions[index])
    _settle_duplicates(cycle, actions, results)

    checkpoint("series-written")
    # Occurrence exceptions are written once their series exists.
    exception_writes = []
    for index, action in enumerate(actions):
        if isinstance(action, core.CreateEvent | core.RecreateEvent | core.UpdateEvent):
            outcome = results.get(index)
            if isinstance(outcome, GoogleError) or outcome is REPLAN or getattr(action, "portal_id", None) \
                    in cycle.parked:
                continue
            try:
                exception_writes.extend(_exception_writes(cycle, index, action))
            except (IntegrationError, UserError, TransientError):
                raise
            except Exception as exc:  # noqa: BLE001 - one item that cannot be written must not stop the others
                log.exception("preparing the occurrences of %s failed", type(action).__name__)
                results[index] = error_for("event_refused",
                                           detail=f"its occurrences could not be prepared: {exc!r}"[:300])
    exception_writes.extend(_orphan_writes(cycle, actions))
    if exception_writes:
        for key, outcome in run_writes(exception_writes, batch_size=batch_size, backoff=backoff).items():
            if not isinstance(outcome, GoogleError) or (outcome.status in (404, 410) and key[2] != "patch"):
                continue  # an occurrence already gone is what a delete wanted
            if key[0] == "orphan":
                # Leftovers of a series whose time changed: a failure to tidy them up blocks nothing.
                cycle.journal("error", google_event_id=key[1], side="google",
                              message=f"An old occurrence ({key[2]}) could not be removed: {outcome.cause}")
                continue
            results[key[0]] = outcome
    return results


class _Replan:
    """The outcome of a write that was not made or not taken: its link is read again and planned anew."""

    def __repr__(self) -> str:
        return "REPLAN"


REPLAN = _Replan()


def _replan(cycle: Cycle, action) -> _Replan:
    link = _link_for_action(cycle, action)
    if link is not None:
        cycle.refetch.add(link.id)
        cycle.failed_links.add(link.id)
    return REPLAN


def _series_unread(cycle: Cycle, action) -> bool:
    """Whether the action concerns a recurring event whose occurrences this cycle has not read.

    A series' etag does not change when one of its occurrences is edited (each edited occurrence is an
    event of its own), so If-Match cannot protect an occurrence edited in Google from a delete or an
    occurrence write: unless this cycle read the series, or pulled the calendar it lives in (which lists
    every changed occurrence), it is read before anything is written.
    """
    if action.google_id in cycle.google_states:
        return False
    link = _link_for_action(cycle, action)
    if link is None or not link.base_state or not link.base_state.get("recurrence"):
        return False
    return cycle.puller is None or (link.calendar_email or "").lower() != cycle.puller.email.lower()


def _moves_series(cycle: Cycle, action: core.UpdateEvent, link: SyncLink) -> bool:
    before = cycle.google_states.get(action.google_id) or (state_from_json(link.base_state)
                                                            if link.base_state else None)
    after = action.state
    return before is None or (before.start, before.end, before.all_day, before.recurrence) != (
        after.start, after.end, after.all_day, after.recurrence)


def _etag_for(cycle: Cycle, action) -> str | None:
    link = _link_for_action(cycle, action)
    return action.etag or (link.etag if link is not None else None)


def _organized_elsewhere(cycle: Cycle, google_id, by_event: dict) -> bool:
    """Whether the event's organizer is outside the organization (only they can change it)."""
    info = cycle.events.get(google_id)
    if info is not None:
        return info.organizer not in cycle.users_by_email
    link = by_event.get(google_id)
    activity = cycle.activities.get(link.activity_id) if link is not None and link.activity_id else None
    organizer = (activity.google_organizer or "").lower() if activity is not None else ""
    return bool(organizer) and organizer not in cycle.users_by_email


def _link_for_action(cycle: Cycle, action) -> SyncLink | None:
    link_id = getattr(action, "link_id", None)
    if link_id is not None and link_id in cycle.links:
        return cycle.links[link_id]
    if isinstance(action, core.CreateEvent | core.RecreateEvent | core.LinkItems):
        return _link_of_activity(cycle, action.portal_id)
    google_id = getattr(action, "google_id", None)
    if google_id is not None:
        return next((link for link in cycle.links.values() if link.google_event_id == google_id), None)
    portal_id = getattr(action, "portal_id", None)
    return _link_of_activity(cycle, portal_id) if portal_id is not None else None


def _write_for(cycle: Cycle, index: int, action) -> Write | None:
    if isinstance(action, core.CreateEvent | core.RecreateEvent):
        if action.portal_id in cycle.parked:
            return None
        link = _link_for_action(cycle, action)
        activity = cycle.activities[action.portal_id]
        body = event_body(action.state, organizer_email=link.calendar_email, activity_id=action.portal_id,
                          organization_uid=cycle.organization.uid, external=link.external_attendees,
                          event_id=link.google_event_id)
        # Occurrence exceptions follow in their own writes once the series exists.
        client = cycle.client(_target_calendar(cycle, activity.id, link))
        return Write(index, client, lambda service, body=body: service.events().insert(
            calendarId="primary", body=body, sendUpdates="none"))
    if isinstance(action, core.UpdateEvent):
        link = _link_for_action(cycle, action)
        current = cycle.google_states.get(action.google_id) or (state_from_json(link.base_state)
                                                                 if link and link.base_state else None)
        patch = _series_patch(cycle, action.state, current, link)
        if not patch:
            return None
        client = cycle.client(link.calendar_email)
        etag = _etag_for(cycle, action)

        def build(service, patch=patch, event_id=action.google_id, etag=etag):
            request = service.events().patch(calendarId="primary", eventId=event_id, body=patch, sendUpdates="none")
            if etag:
                request.headers["If-Match"] = etag  # a change in Google we have not seen makes this 412
            return request

        return Write(index, client, build)
    if isinstance(action, core.DeleteEvent):
        link = _link_for_action(cycle, action)
        client = cycle.client(link.calendar_email if link else cycle.puller.email)
        etag = _etag_for(cycle, action)

        def delete(service, event_id=action.google_id, etag=etag):
            request = service.events().delete(calendarId="primary", eventId=event_id, sendUpdates="none")
            request.headers["If-Match"] = etag  # a change in Google we have not seen beats the delete: 412
            return request

        return Write(index, client, delete)
    return None


SERIES_FIELDS = ("summary", "description", "location", "start", "end", "recurrence", "attendees", "visibility")


def _series_patch(cycle: Cycle, target: core.ItemState, current: core.ItemState | None, link: SyncLink) -> dict:
    """Only the series fields that differ: a patch leaves Google's other fields (and exceptions) alone."""
    activity_id = link.activity_id or 0
    info = cycle.events.get(link.google_event_id) if link.google_event_id else None
    known = info.guests if info is not None else None
    wanted = event_body(target, organizer_email=link.calendar_email, activity_id=activity_id,
                        organization_uid=cycle.organization.uid, external=_external(cycle, link), known_guests=known)
    if current is None:
        return {k: wanted[k] for k in SERIES_FIELDS}
    had = event_body(current, organizer_email=link.calendar_email, activity_id=activity_id,
                     organization_uid=cycle.organization.uid, external=_external(cycle, link), known_guests=known)
    return {k: wanted[k] for k in SERIES_FIELDS if wanted[k] != had[k]}


def _external(cycle: Cycle, link: SyncLink) -> list:
    info = cycle.events.get(link.google_event_id) if link.google_event_id else None
    return info.external if info is not None else (link.external_attendees or [])


INHERITED_FIELDS = ("subject", "description", "location", "time_zone")


def _exception_writes(cycle: Cycle, index: int, action) -> list[Write]:
    """The occurrence writes that make Google's exceptions match the target state.

    Changed exceptions are patched (or deleted when cancelled). An exception the target no longer has is
    undone: the occurrence is patched back to the series when the series still has it, and removed when
    it does not (the series' time or rule changed), so no old occurrence stays beside its replacement.
    When the series' title, description or place changes, its edited occurrences get the new values for
    the fields they did not change themselves.
    """
    link = _link_for_action(cycle, action)
    if link is None or not link.google_event_id:
        return []
    target = action.state
    current = None
    if isinstance(action, core.UpdateEvent):
        gid = link.google_event_id
        current = cycle.google_states.get(gid) or (state_from_json(link.base_state) if link.base_state else None)
    had = dict(current.exceptions) if current is not None else {}
    inherited = current is not None and any(getattr(current, f) != getattr(target, f) for f in INHERITED_FIELDS)
    client = cycle.client(link.calendar_email)
    writes = []

    def delete(key, kind="delete"):
        event_id = instance_id(link.google_event_id, key)
        writes.append(Write((index, key, kind), client, lambda s, e=event_id: s.events().delete(
            calendarId="primary", eventId=e, sendUpdates="none")))

    def patch(key, body, kind="patch"):
        event_id = instance_id(link.google_event_id, key)
        writes.append(Write((index, key, kind), client, lambda s, e=event_id, b=body: s.events().patch(
            calendarId="primary", eventId=e, body=b, sendUpdates="none")))

    if target.recurrence:
        for key, exc in target.exceptions.items():
            if had.get(key) == exc and (exc.cancelled or not inherited):
                continue
            if exc.cancelled:
                delete(key)
            else:
                patch(key, instance_body(target, key))
    gone = {key: exc for key, exc in had.items() if key not in target.exceptions}
    if gone:
        alive = occurrence_keys_among(target.start, target.end, target.time_zone, target.recurrence, gone,
                                      all_day=target.all_day) if target.recurrence else set()
        for key, exc in gone.items():
            if key in alive:
                patch(key, instance_reset_body(target, key), "reset")
            elif not exc.cancelled:
                delete(key, "orphan")
    return writes


def _orphan_writes(cycle: Cycle, actions: list) -> list[Write]:
    """Remove occurrences Google kept for a series whose time changed in Google (see event_state)."""
    deleted_here = {a.google_id for a in actions if isinstance(a, core.DeleteEvent)}
    writes = []
    for event_id, found in cycle.orphans.items():
        if event_id in deleted_here or event_id in cycle.failed_google:
            continue
        calendar = found["calendar"]
        client = cycle.client(calendar)
        for key, exc in found["keys"].items():
            if exc.cancelled:
                continue
            instance = instance_id(event_id, key)
            writes.append(Write(("orphan", event_id, key), client, lambda s, e=instance: s.events().delete(
                calendarId="primary", eventId=e, sendUpdates="none")))
    return writes


def _settle_duplicates(cycle: Cycle, actions: list, results: dict) -> None:
    """A 409 on our own chosen id means an earlier attempt did reach Google: link it, never copy it. What
    Google holds now (changed or deleted since) is then merged like any change, in this cycle."""
    for index, action in enumerate(actions):
        outcome = results.get(index)
        if not (isinstance(action, core.CreateEvent | core.RecreateEvent) and isinstance(outcome, GoogleError)
                and outcome.status == 409):
            continue
        link = _link_for_action(cycle, action)
        try:
            event, instances = _read_event(cycle, link)
        except GoogleError as exc:
            results[index] = exc
            continue
        if event is None:
            results[index] = TransientError("no_answer", "Google refused the id as taken but does not show it.",
                                            "It is tried again in the next cycle.")
            continue
        intended = _pending(link)[0] if link.pending_state else action.state
        _confirm_insert(cycle, link, event, instances, intended)
        results[index] = _replan(cycle, action)


def _mark_failed(cycle: Cycle, action, message: str) -> None:
    cycle.row.errors += 1
    portal_id = getattr(action, "portal_id", None)
    google_id = getattr(action, "google_id", None) or getattr(action, "old_google_id", None)
    link_id = getattr(action, "link_id", None)
    if portal_id is not None:
        cycle.failed_portal.add(portal_id)
    if google_id is not None:
        cycle.failed_google.add(google_id)
    link = cycle.links.get(link_id) if link_id is not None else _link_for_action(cycle, action)
    if link is not None:
        cycle.failed_links.add(link.id)
        link.error_message, link.error_at = message, utcnow()
    cycle.journal("error", activity_id=portal_id, google_event_id=google_id, message=message)


def _hold_failed_links(cycle: Cycle, actions: list, results: dict) -> None:
    """A link whose Google write failed (or is to be planned again) takes no portal write this cycle
    either: its two sides and its agreed state stay as they were, and the next plan starts from there."""
    for index, action in enumerate(actions):
        outcome = results.get(index)
        if outcome is REPLAN:
            continue  # `_replan` held it already
        if not isinstance(outcome, GoogleError) or outcome.code == "not_organizer":
            continue
        if isinstance(action, core.DeleteEvent) and outcome.status in (404, 410):
            continue
        link = _link_for_action(cycle, action)
        if link is not None:
            cycle.failed_links.add(link.id)


def _blocked(cycle: Cycle, action) -> bool:
    """Whether an earlier step of this item failed, so its agreed state must not move."""
    link_id = getattr(action, "link_id", None)
    if link_id is not None and link_id in cycle.failed_links:
        return True
    if not isinstance(action, core.CreateActivity | core.ItemError) and cycle.failed_links:
        link = _link_for_action(cycle, action)
        if link is not None and link.id in cycle.failed_links:
            return True
    portal_id = getattr(action, "portal_id", None)
    google_id = getattr(action, "google_id", None)
    if portal_id is not None and portal_id in cycle.failed_portal:
        return True
    if google_id is not None and google_id in cycle.failed_google:
        return True
    if isinstance(action, core.SetBase | core.Unlink):
        link = cycle.links.get(action.link_id)
        if link is not None and (link.activity_id in cycle.failed_portal or link.google_event_id in cycle.failed_google):
            return True
    return False


def _apply(cycle: Cycle, index: int, action, results: dict) -> None:
    outcome = results.get(index)
    if outcome is REPLAN:
        return
    if isinstance(outcome, GoogleError):
        if isinstance(outcome, IntegrationError) or _is_pullers(cycle, outcome):
            raise outcome
        if isinstance(action, core.DeleteEvent) and outcome.status in (404, 410):
            outcome = {}  # already gone: that is what we wanted
        elif isinstance(action, core.UpdateEvent) and outcome.code in KEEP_GOOGLES_VERSION:
            _keep_organizers_version(cycle, action, outcome.code)
            return
        else:
            _mark_failed(cycle, action, f"Google refused: {outcome.cause}")
            return
    if _blocked(cycle, action):
        return
    row = cycle.row
    if isinstance(action, core.CreateEvent | core.RecreateEvent):
        link = _link_for_action(cycle, action)
        link.confirmed = True
        link.etag = (outcome or {}).get("etag")
        cycle.written.add(link.id)
        row.google_created += 1
        row.pushed += 1
        _set_base(link, action.state)
        _outbox_taken(cycle, action.portal_id)
        activity = cycle.activities[action.portal_id]
        stand_in = link.calendar_email.lower() != activity.owner.email.lower()
        message = None
        if stand_in:
            message = (f"The owner {activity.owner.email} is not a user of the Google Workspace: the event is in "
                       f"the calendar of {link.calendar_email}, its organizer in Google.")
        if (activity.google_organizer or None) != (link.calendar_email if stand_in else None):
            changed_by(db.session, None, origin="google")
            activity.google_organizer = link.calendar_email if stand_in else None
        cycle.journal("created", activity_id=action.portal_id, google_event_id=link.google_event_id, side="google",
                      after=state_to_json(action.state), message=message)
    elif isinstance(action, core.UpdateEvent):
        link = _link_for_action(cycle, action)
        if outcome:
            # Taken on with the agreed state (SetBase): an etag must never get ahead of what the portal took in,
            # or a later delete with If-Match would destroy changes the portal never saw.
            cycle.new_etags[link.id] = outcome.get("etag") or link.etag
            cycle.written.add(link.id)
            if action.state.recurrence and _moves_series(cycle, action, link):
                cycle.refetch.add(link.id)  # read its occurrences back: Google may hold some on dates we moved to
            row.google_updated += 1
            row.pushed += 1
            cycle.journal("updated", activity_id=link.activity_id, google_event_id=action.google_id, side="google",
                          before=link.base_state, after=state_to_json(action.state))
    elif isinstance(action, core.DeleteEvent):
        link = _link_for_action(cycle, action)
        row.google_deleted += 1
        row.pushed += 1
        cycle.journal("deleted", activity_id=link.activity_id if link else None, google_event_id=action.google_id,
                      side="google", before=link.base_state if link else None,
                      message=LEFT_MESSAGES.get(action.reason))
    elif isinstance(action, core.CreateActivity):
        _create_activity(cycle, action)
    elif isinstance(action, core.UpdateActivity | core.RestoreActivity):
        _update_activity(cycle, action)
    elif isinstance(action, core.TrashActivity):
        activity = cycle.activities[action.portal_id]
        if _moved_meanwhile(cycle, activity):
            raise StaleDataError("the activity changed during the cycle")
        changed_by(db.session, None, origin="google")
        activity.mark_deleted()
        _wrote(cycle, activity)
        row.portal_deleted += 1
        cycle.journal("deleted", activity_id=activity.id, side="portal", before=state_to_json(activity_state(activity)),
                      message=LEFT_MESSAGES.get(action.reason, "Deleted in Google: the activity is in the trash "
                                                               "and can be restored for 30 days."))
    elif isinstance(action, core.LinkItems):
        link = _link_of_activity(cycle, action.portal_id)
        if link is None:
            link = SyncLink(organization_id=cycle.organization.id, activity_id=action.portal_id,
                            calendar_email=cycle.events[action.google_id].organizer if action.google_id in cycle.events
                            else cycle.activities[action.portal_id].owner.email, origin="both",
                            generation=fresh_generation(cycle.activities[action.portal_id]))
            db.session.add(link)
            db.session.flush()
            _claim_new(cycle, link)
        link.google_event_id = action.google_id
        link.confirmed = True
        info = cycle.events.get(action.google_id)
        if info is not None and info.etag:
            link.etag = info.etag
        _set_base(link, action.state)
        _outbox_taken(cycle, action.portal_id)
        db.session.flush()
        cycle.links[link.id] = link
        cycle.journal("linked", activity_id=action.portal_id, google_event_id=action.google_id,
                      message="Matched on the first sync: linked, not copied.")
    elif isinstance(action, core.SetBase):
        link = cycle.links[action.link_id]
        info = cycle.events.get(link.google_event_id) if link.google_event_id else None
        if info is not None:
            link.external_attendees = info.external
            link.event_type = info.event_type
            if info.etag and link.id not in cycle.written:
                link.etag = info.etag  # the organizer's copy as read this cycle
        if link.id in cycle.new_etags:
            link.etag = cycle.new_etags.pop(link.id)  # our own write's
        state = cycle.refused.get(link.id, action.state)
        _set_base(link, state)
        _outbox_taken(cycle, link.activity_id)
        _forget_orphans(cycle, link.activity_id, state)
    elif isinstance(action, core.Unlink):
        link = cycle.links.pop(action.link_id, None)
        if link is not None:
            _outbox_taken(cycle, link.activity_id)
            db.session.delete(link)
    elif isinstance(action, core.RecordConflict):
        pass  # journaled before the writes (`_reserve_event_ids`)
    elif isinstance(action, core.ItemError):
        _mark_failed(cycle, action, action.message)


def _journal_conflict(cycle: Cycle, action: core.RecordConflict) -> None:
    """Keep the losing value of a conflict, once: a merge tried again (its writes failed, or the worker
    stopped) finds the same conflict and does not journal it twice."""
    conflict = action.conflict
    loser = "google" if conflict.winner == core.Side.PORTAL else "portal"
    lost, kept = _jsonable(conflict.lost_value), _jsonable(conflict.kept_value)
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


# Why one side's copy went while the other stays, as the journal says it.
LEFT_MESSAGES = {
    core.NOT_SYNCED_TYPE: "Its type is not synced to Google (or it is a project task): the event was removed "
                          "from Google Calendar; the activity stays in the portal.",
    core.NOBODY_SYNCING: "Nobody with calendar sync switched on takes part in it any more, so it is no longer "
                         "synced: it stays where it was created and its copy on the other side was removed.",
}


def _forget_orphans(cycle: Cycle, activity_id: int | None, state: core.ItemState) -> None:
    """Drop stored exceptions of occurrences the series no longer has, once both sides agree without them."""
    activity = cycle.activities.get(activity_id) if activity_id else None
    if activity is None or activity.is_deleted or _moved_meanwhile(cycle, activity):
        return  # changed meanwhile (an occurrence edited just now, say): the next cycle looks again
    stale = [exc for exc in activity.exceptions if exc.original_start not in state.exceptions
             and not is_occurrence(state.start, state.end, state.time_zone, state.recurrence, exc.original_start,
                                   all_day=state.all_day)]
    if stale:
        changed_by(db.session, None, origin="google")
        for exc in stale:
            activity.exceptions.remove(exc)
        _wrote(cycle, activity)


def guests_of(event: dict) -> dict:
    attendees = event.get("attendees") if isinstance(event.get("attendees"), list) else []
    return {str(a["email"]).lower(): a for a in attendees if isinstance(a, dict) and isinstance(a.get("email"), str)}


def _guests_unread(cycle: Cycle, action) -> bool:
    """Whether the update rewrites the guest list of an event this cycle has not read: Google replaces the
    list whole, so what each guest has there (name, optional, comment, extra guests) is read first and sent
    back as it is."""
    if not isinstance(action, core.UpdateEvent) or action.google_id in cycle.events:
        return False
    link = _link_for_action(cycle, action)
    current = state_from_json(link.base_state) if link is not None and link.base_state else None
    return current is None or current.participants != action.state.participants


def _fixed_by_google(cycle: Cycle, action: core.UpdateEvent) -> str | None:
    """Why Google refuses the update for every one (an event Gmail made, a locked copy), or None."""
    info = cycle.events.get(action.google_id)
    link = _link_for_action(cycle, action)
    event_type = info.event_type if info is not None else (link.event_type if link is not None else None)
    if event_type not in FIXED_FIELDS:
        return None
    code, fixed = FIXED_FIELDS[event_type]
    current = cycle.google_states.get(action.google_id) or (
        state_from_json(link.base_state) if link is not None and link.base_state else None)
    if current is None:
        return None
    changed = {name for name in core.SYNCED_FIELDS if getattr(current, name) != getattr(action.state, name)}
    return code if changed & fixed or current.exceptions != action.state.exceptions else None


def _keep_organizers_version(cycle: Cycle, action: core.UpdateEvent, why: str = "not_organizer") -> None:
    """Google refused a change because only the event's organizer may make it (403 forbiddenForNonOrganizer),
    or refuses it for every one (an event Gmail made): `why`.

    Asking again would be refused again, every cycle. Google's version stays, in Google and in the portal;
    what the portal had is journaled as a lost value, so nothing disappears without a trace.
    """
    link = _link_for_action(cycle, action)
    if link is None or link.activity_id is None:
        _mark_failed(cycle, action, "Only the organizer of this event can change it in Google.")
        return
    google = cycle.google_states.get(link.google_event_id) or (state_from_json(link.base_state)
                                                               if link.base_state else None)
    activity = cycle.activities.get(link.activity_id) or db.session.get(Activity, link.activity_id)
    if google is None or activity is None:
        _mark_failed(cycle, action, "Only the organizer of this event can change it in Google.")
        return
    info = cycle.events.get(link.google_event_id)
    organizer = (info.organizer if info else None) or activity.google_organizer or "its organizer"
    message = KEEP_GOOGLES_VERSION[why].format(organizer=organizer)
    mine = activity_state(activity)
    for name in core.SYNCED_FIELDS:
        if getattr(mine, name) != getattr(google, name):
            cycle.row.conflicts += 1
            cycle.journal("conflict", activity_id=activity.id, google_event_id=link.google_event_id, side="portal",
                          field=name, before=_jsonable(getattr(mine, name)), after=_jsonable(getattr(google, name)),
                          message=message)
    with db.session.begin_nested():
        changed_by(db.session, None, origin="google")
        if info is not None and info.organizer != activity.owner.email.lower():
            activity.google_organizer = info.organizer
        _assign(cycle, activity, google)
        _wrote(cycle, activity)
    cycle.refused[link.id] = google
    cycle.row.portal_updated += 1


def _jsonable(value):
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set | tuple | list):
        return sorted(_jsonable(v) for v in value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, core.ExceptionState):
        return {"cancelled": value.cancelled, "subject": value.subject, "description": value.description,
                "location": value.location, "start": _jsonable(value.start), "end": _jsonable(value.end)}
    return str(value)


def _outbox_taken(cycle: Cycle, activity_id: int | None) -> None:
    """The portal changes this cycle read for the activity are in the agreed state now: they are marked done
    in the same transaction, so a change already agreed on is never taken for a new one (a worker stopped
    before the cycle's end would otherwise leave them pending, "touching" fields both sides agree on)."""
    _outbox_taken_upto(cycle, activity_id, None)


def _outbox_taken_upto(cycle: Cycle, activity_id: int | None, upto: int | None) -> None:
    """Mark the cycle's outbox rows of the activity done, all of them or those up to row `upto`."""
    ids = cycle.outbox.get(activity_id, []) if activity_id is not None else []
    taken = [rid for rid in ids if upto is None or rid <= upto]
    if not taken:
        return
    cycle.outbox[activity_id] = [rid for rid in ids if rid not in taken]
    db.session.execute(update(ChangeRecord).where(ChangeRecord.id.in_(taken)).values(processed_at=utcnow()))


def _set_base(link: SyncLink, state: core.ItemState) -> None:
    link.base_state = state_to_json(state)
    link.base_hash = state.content_hash()
    link.pending_state = None
    link.synced_at = utcnow()
    link.error_message = link.error_at = None


def _wrote(cycle: Cycle, activity: Activity) -> None:
    """Our own write is not someone else's change: later steps of this cycle compare against it."""
    db.session.flush()
    cycle.activity_versions[activity.id] = activity.version


def _moved_meanwhile(cycle: Cycle, activity: Activity) -> bool:
    db.session.refresh(activity, ["version"])
    return activity.version != cycle.activity_versions.get(activity.id, activity.version)


def _owner_for(cycle: Cycle, google_id: str) -> User:
    info = cycle.events.get(google_id)
    organizer = cycle.users_by_email.get(info.organizer) if info else None
    return organizer or cycle.puller


def _type_for(cycle: Cycle, private: bool, current=None):
    organization = cycle.organization
    personal, default = organization.personal_activity_type, organization.default_activity_type
    if private and personal is not None:
        return personal
    if current is not None and (not current.is_personal or private):
        return current  # the portal's own choice of type is never touched by Google
    return default


def _assign(cycle: Cycle, activity: Activity, state: core.ItemState) -> None:
    activity.subject = state.subject[:255]
    activity.description = state.description
    activity.location = state.location[:255]
    activity.all_day = state.all_day
    activity.time_zone = state.time_zone
    if state.all_day:
        activity.start_date, activity.end_date, activity.start_at, activity.end_at = state.start, state.end, None, None
    else:
        activity.start_at, activity.end_at, activity.start_date, activity.end_date = state.start, state.end, None, None
    activity.recurrence = list(state.recurrence)
    activity.activity_type = _type_for(cycle, state.private, activity.activity_type)
    owner_email = activity.owner.email if activity.owner else None
    participants = [cycle.users_by_email[e] for e in sorted(state.participants)
                    if e in cycle.users_by_email and e != owner_email]
    activity.set_participants(participants)
    wanted = dict(state.exceptions)
    for exc in list(activity.exceptions):
        if exc.original_start not in wanted:
            activity.exceptions.remove(exc)
    existing = {exc.original_start: exc for exc in activity.exceptions}
    for key, exc_state in wanted.items():
        row = existing.get(key) or RecurrenceException(original_start=key)
        row.cancelled = exc_state.cancelled
        row.subject, row.description, row.location = exc_state.subject, exc_state.description, exc_state.location
        timed = isinstance(exc_state.start, datetime)
        row.start_at = exc_state.start if timed else None
        row.end_at = exc_state.end if timed else None
        row.start_date = exc_state.start if exc_state.start is not None and not timed else None
        row.end_date = exc_state.end if exc_state.end is not None and not timed else None
        if key not in existing:
            activity.exceptions.append(row)


def _create_activity(cycle: Cycle, action: core.CreateActivity) -> None:
    changed_by(db.session, None, origin="google")
    owner = _owner_for(cycle, action.google_id)
    activity = Activity(organization=cycle.organization, organization_id=cycle.organization.id, owner=owner,
                        created_at=utcnow(), updated_at=utcnow())
    activity.activity_type = _type_for(cycle, action.state.private)
    _assign(cycle, activity, action.state)
    db.session.add(activity)
    db.session.flush()
    info = cycle.events.get(action.google_id)
    link = cycle.links.get(action.link_id) if action.link_id else None
    if link is None:
        link = SyncLink(organization_id=cycle.organization.id, google_event_id=action.google_id, origin="google",
                        generation=fresh_generation(activity))
        db.session.add(link)
    link.activity_id = activity.id
    link.confirmed = True
    link.calendar_email = info.organizer if info and info.organizer in cycle.users_by_email else owner.email
    link.etag = info.etag if info else None
    link.external_attendees = info.external if info else None
    link.event_type = info.event_type if info else None
    _set_base(link, action.state)
    db.session.flush()
    if f"link:{link.id}" not in cycle.claims:
        _claim_new(cycle, link)
    cycle.links[link.id] = link
    cycle.activities[activity.id] = activity
    cycle.row.portal_created += 1
    cycle.journal("created", activity_id=activity.id, google_event_id=action.google_id, side="portal",
                  after=state_to_json(action.state))


def _update_activity(cycle: Cycle, action) -> None:
    activity = cycle.activities[action.portal_id]
    if _moved_meanwhile(cycle, activity):
        raise StaleDataError("the activity changed during the cycle")
    before = state_to_json(activity_state(activity)) if not activity.is_deleted else None
    changed_by(db.session, None, origin="google")
    if isinstance(action, core.RestoreActivity):
        activity.deleted_at = None
    _assign(cycle, activity, action.state)
    if activity.owner.email.lower() not in action.state.participants:
        # Only a participant organizing for an owner Google does not know can drop the owner from the guests.
        # The owner stays the owner, and a pending change puts them back on the guest list in Google.
        db.session.add(ChangeRecord(organization_id=activity.organization_id, activity_id=activity.id,
                                    action="update", origin="portal"))
    _wrote(cycle, activity)
    cycle.row.portal_updated += 1
    if isinstance(action, core.RestoreActivity):
        cycle.journal("restored", activity_id=activity.id, side="portal", before=before,
                      after=state_to_json(action.state),
                      message="Deleted on one side while it was changed in Google: the change wins over the "
                              "delete, so the activity is back from the trash with it.")
    else:
        cycle.journal("updated", activity_id=activity.id, side="portal", before=before,
                      after=state_to_json(action.state))


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
            item = _fetch_google_item(cycle, link)
        except TransientError as exc:
            _mark_link_failed(cycle, link, f"Google could not be read: {exc.cause}")
            continue
        activity = cycle.activities.get(link.activity_id) if link.activity_id else None
        if activity is None and link.activity_id:
            activity = db.session.get(Activity, link.activity_id)
        if item is None or activity is None:
            cycle.failed_links.add(link_id)
            continue
        if _agree_on_sent(cycle, link, item) is None:  # our own write that went through is no Google change
            _mark_link_failed(cycle, link, "Google could not be read; tried again in the next cycle.")
            continue
        portal_item = _portal_item(cycle, activity, link)
        if portal_item is None:
            continue
        google_items[link.google_event_id] = item  # its etag goes with the writes, the link's waits for SetBase
        portal_items[activity.id] = portal_item
    planned = _core_links(cycle)
    core_links = {link_id: planned[link_id] for link_id in links if link_id in planned
                  and cycle.links[link_id].activity_id in portal_items}
    actions = core.plan_cycle(core_links, portal_items, google_items, syncing=cycle.syncing_emails)
    _execute(cycle, actions)


def _mark_link_failed(cycle: Cycle, link: SyncLink, message: str) -> None:
    cycle.failed_links.add(link.id)
    if link.activity_id:
        cycle.failed_portal.add(link.activity_id)
    cycle.row.errors += 1
    cycle.journal("error", activity_id=link.activity_id, google_event_id=link.google_event_id, message=message)


def _refresh_attendees(cycle: Cycle) -> None:
    """Keep each activity's view of its Google event current: every participant's answer, the guests from
    outside the organization, and who organizes it. None of these are synced fields, so they change without
    the item changing, and none of them is ever written to Google."""
    by_event = {link.google_event_id: link for link in cycle.links.values()
                if link.google_event_id and link.activity_id and link.confirmed}
    for event_id, info in cycle.events.items():
        link = by_event.get(event_id)
        if link is None or link.activity_id in cycle.failed_portal or link.id in cycle.busy:
            continue
        try:
            with db.session.begin_nested():
                activity = cycle.activities.get(link.activity_id) or db.session.get(Activity, link.activity_id)
                if activity is None or activity.is_deleted:
                    continue
                changed_by(db.session, None, origin="google")
                for participant in activity.participant_links:
                    answer = info.responses.get(participant.user.email.lower())
                    if answer and participant.response_status != answer:
                        participant.response_status = answer
                if link.external_attendees != info.external:
                    link.external_attendees = info.external
                    link.event_type = info.event_type
                organizer = info.organizer if info.organizer != activity.owner.email.lower() else None
                if activity.google_organizer != organizer:
                    activity.google_organizer = organizer
        except Exception as exc:  # noqa: BLE001 - answers are shown, never worth stopping the cycle for
            log.exception("updating the attendees of %s failed", event_id)
            cycle.journal("error", activity_id=link.activity_id, google_event_id=event_id,
                          message=f"The attendees' answers could not be stored: {type(exc).__name__}")


def _mark_outbox(cycle: Cycle) -> None:
    now = utcnow()
    done = [rid for activity_id, ids in cycle.outbox.items() if activity_id not in cycle.failed_portal
            and not any(link.activity_id == activity_id for link_id, link in cycle.links.items()
                        if link_id in cycle.failed_links) for rid in ids]
    for chunk in _chunks(done):
        for record in db.session.scalars(select(ChangeRecord).where(ChangeRecord.id.in_(chunk))):
            record.processed_at = now
