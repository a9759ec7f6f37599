"""Reading: the pull of a user's Google calendar, the portal's pending changes and items, the link claims,
and events read on purpose (one item, not the whole calendar)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload

from portal.extensions import db
from portal.models import (
    Activity,
    ActivityParticipant,
    ChangeRecord,
    utcnow,
)
from portal.sync import core
from portal.sync.engine.state import (
    FIRST_SYNC_DAYS,
    PARKED_SECONDS,
    Cycle,
    EventInfo,
    checkpoint,
    chunks,
    claim_new,
    event_emails,
    guests_of,
    is_pullers,
    item_problem,
    parse_google_time,
    worker_name,
)
from portal.sync.google import (
    CalendarClient,
    GoogleError,
    IntegrationError,
    SyncTokenExpired,
    TransientError,
    UserError,
    error_for,
)
from portal.sync.google_writes import Orphans
from portal.sync.mapping import (
    ACTIVITY_ID_PROPERTY,
    ORGANIZATION_PROPERTY,
    MappingError,
    activity_state,
    attendee_responses,
    event_state,
    external_attendees,
    occurrence_times,
    state_from_json,
)
from portal.sync.models import CalendarSync, Lease, SyncLink
from portal.sync.policy import IGNORED_EVENT_TYPES, event_type_of, type_for, type_goes_to_google

log = logging.getLogger(__name__)


def pull_calendar(cycle: Cycle, state: CalendarSync):
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
    if not first_sync:
        for event_id in _as_agreed(cycle, series, instances):
            del series[event_id]
    cycle.users_by_email.prefetch(event_emails(events) | {cycle.puller.email})

    # Occurrences that changed without their series: read the series so the item is complete.
    for parent_id in set(instances) - set(series):
        try:
            series[parent_id] = client.get_event(parent_id)
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
            item_problem(cycle, by_event.get(event_id), google_event_id=event_id,
                          message=f"Google event not synced: {type(exc).__name__}: {exc}")
            continue
        if item is not None:
            items[event_id] = item
    _adopt_reserved_events(cycle, items)
    return items, next_token, first_sync


def _as_agreed(cycle: Cycle, series: dict[str, dict], instances: dict[str, list[dict]]) -> list[str]:
    """The listed events that are exactly what both sides last agreed on: their etag is the one the link
    took with its agreed state, from the calendar the link writes to, with no occurrence listed. These are
    mostly our own writes coming back in the next listing; they are no change, so they are dropped here,
    before anything is read or planned for them (their links are forgotten, as unlisted ones are)."""
    puller = cycle.puller.email.lower()
    agreed = []
    by_event = {link.google_event_id: link for link in cycle.links.values() if link.google_event_id}
    for event_id, event in series.items():
        link = by_event.get(event_id)
        if (link is not None and link.confirmed and link.pending_state is None and link.base_state is not None
                and link.etag and event.get("etag") == link.etag and event.get("status") != "cancelled"
                and (link.calendar_email or "").lower() == puller and not instances.get(event_id)
                and link.id not in cycle.unsettled):
            agreed.append(event_id)
            _forget_link(cycle, link)
    return agreed


def _pulled_item(cycle: Cycle, event_id: str, event: dict, link: SyncLink | None, instances: list[dict], *,
                 zone: str, first_sync: bool) -> core.GoogleItem | None:
    """What one pulled event means for its item, or None when it means nothing (yet)."""
    if link is not None and not link.confirmed and link.pending_state is not None:
        cycle.unsettled.add(link.id)  # an insert of ours whose answer was lost: `settle_reserved` reads it
        return None
    puller = cycle.puller.email.lower()
    organizer_field = event.get("organizer") if isinstance(event.get("organizer"), dict) else {}
    organizer = str(organizer_field.get("email") or puller).lower()
    from_organizer = organizer == puller
    modified = parse_google_time(event.get("updated"))
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
            return fetch_google_item(cycle, link)
        return core.GoogleItem(None, modified)
    if someone_elses and any(i.get("status") == "cancelled" for i in instances if isinstance(i, dict)):
        return fetch_google_item(cycle, link)
    if event.get("eventType") in IGNORED_EVENT_TYPES and (link is None or not link.confirmed):
        return None
    known = state_from_json(link.base_state) if link is not None and link.base_state else None
    base = _outside_the_window(known) if first_sync else known
    if known is not None and event.get("recurrence") and _series_moved(known, event):
        # The series' time or rule changed: which occurrences are changed or cancelled may have changed for
        # dates no occurrence was listed for. Read them all rather than carry the agreed ones over.
        client = cycle.client(cycle.puller.email)
        instances = client.exception_instances(event)
        agreed, base = known, None
    else:
        agreed = base
    orphans: dict = {}
    try:
        state_now = event_state(event, instances, cycle.users_by_email, base=base, orphans=orphans,
                                calendar_time_zone=known.time_zone if known is not None else zone)
    except MappingError as exc:
        item_problem(cycle, link, google_event_id=event_id, message=f"Google event not synced: {exc}")
        return None
    _note_orphans(cycle, event_id, organizer, orphans, agreed)
    props = event.get("extendedProperties") if isinstance(event.get("extendedProperties"), dict) else {}
    props = props.get("private") if isinstance(props.get("private"), dict) else {}
    cycle.events[event_id] = _event_info(
        cycle, event, organizer, from_organizer_copy=from_organizer,
        activity_property=(props.get(ACTIVITY_ID_PROPERTY)
                           if props.get(ORGANIZATION_PROPERTY) == cycle.organization.uid else None))
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
    page_size = int(current_app.config["SYNC_PAGE_SIZE"])
    time_min = None if sync_token else (utcnow() - timedelta(days=FIRST_SYNC_DAYS)).isoformat().replace("+00:00", "Z")
    events, page_token, zone = [], None, "UTC"
    while True:
        if page_token:
            checkpoint("page")
        answer = client.list_changes(sync_token, time_min=time_min, page_size=page_size, page_token=page_token)
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
                        claim_new(cycle, link)
                except IntegrityError:  # another worker linked it at the same moment: theirs stands
                    continue
                cycle.links[link.id] = link


def _chosen_for(cycle: Cycle, activity_id: int, event_id: str, generations: int = 32) -> bool:
    namespace = cycle.organization.uid
    return any(core.event_id_for(activity_id, namespace=namespace, generation=g) == event_id
               for g in range(generations))


def _load_links(cycle: Cycle, *, google_ids=(), activity_ids=()) -> None:
    found = []
    for chunk in chunks(google_ids):
        found += db.session.scalars(select(SyncLink).where(SyncLink.organization_id == cycle.organization.id,
                                                           SyncLink.google_event_id.in_(chunk)))
    for chunk in chunks(activity_ids):
        found += db.session.scalars(select(SyncLink).where(SyncLink.activity_id.in_(chunk)))
    for link in found:
        cycle.links[link.id] = link
        # What this cycle decides about the link rests on it as read now: see `claim_links`.
        cycle.loaded_versions.setdefault(link.id, link.version)


def read_portal_items(cycle: Cycle, google_items, *, first_sync: bool) -> dict[int, core.PortalItem]:
    organization = cycle.organization
    pending = select(ChangeRecord).where(ChangeRecord.organization_id == organization.id,
                                         ChangeRecord.processed_at.is_(None)).order_by(ChangeRecord.id).limit(5000)
    wanted: set[int] = set()
    if cycle.puller is not None:
        involved = Activity.ids_involving(cycle.puller)
        pending = pending.where(ChangeRecord.activity_id.in_(involved))
    for record in db.session.scalars(pending):
        _read_change(cycle, record)
        wanted.add(record.activity_id)
    # The portal side of every pulled, linked event is read too, so both sides merge in one plan, with its
    # pending changes (the puller may have only just been added to it).
    pulled = {link.activity_id for link in cycle.links.values() if link.activity_id} - wanted
    for chunk in chunks(pulled):
        for record in db.session.scalars(select(ChangeRecord).where(
                ChangeRecord.activity_id.in_(chunk), ChangeRecord.processed_at.is_(None)).order_by(ChangeRecord.id)):
            _read_change(cycle, record)
    wanted |= pulled
    if first_sync and cycle.puller is not None:
        window_start = utcnow() - timedelta(days=FIRST_SYNC_DAYS + 2)
        candidates = select(Activity.id).where(
            Activity.id.in_(Activity.ids_involving(cycle.puller)), Activity.deleted_at.is_(None),
            or_(Activity.recurrence_text != "", Activity.end_at >= window_start,
                Activity.end_date >= window_start.date()))
        wanted |= set(db.session.scalars(candidates))
    _load_links(cycle, activity_ids=wanted - {link.activity_id for link in cycle.links.values()})

    items: dict[int, core.PortalItem] = {}
    link_of = {link.activity_id: link for link in cycle.links.values() if link.activity_id}
    for chunk in chunks(wanted):
        for activity in db.session.scalars(select(Activity).where(Activity.id.in_(chunk))
                                           .options(*ITEM_LOADS)):
            if activity.organization_id != organization.id:
                continue
            if _parked(cycle, link_of.get(activity.id), activity):
                cycle.activities[activity.id] = activity
                cycle.failed_portal.add(activity.id)  # its changes stay pending until it can go somewhere
                continue
            item = portal_item_of(cycle, activity, link_of.get(activity.id))
            if item is not None:
                items[activity.id] = item
    return items


# What the sync reads of an activity (its state, its owner's and participants' addresses, its type),
# loaded with the activities a chunk at a time rather than one lazy load per activity and relation.
ITEM_LOADS = (joinedload(Activity.owner), joinedload(Activity.activity_type),
              selectinload(Activity.participant_links).joinedload(ActivityParticipant.user),
              selectinload(Activity.exceptions))


def _read_change(cycle: Cycle, record: ChangeRecord) -> None:
    cycle.outbox[record.activity_id].append(record.id)
    cycle.outbox_fields[record.id] = frozenset(record.fields or ())


def portal_item_of(cycle: Cycle, activity: Activity, link: SyncLink | None) -> core.PortalItem | None:
    """The activity as the core sees it now (None: it cannot be synced, and says why)."""
    cycle.activities[activity.id] = activity
    cycle.activity_versions[activity.id] = activity.version
    if activity.is_deleted:
        cycle.portal_states[activity.id] = None
        return core.PortalItem(None, activity.deleted_at)
    try:
        state = activity_state(activity)
    except ValueError as exc:
        item_problem(cycle, link, activity_id=activity.id, message=f"Activity not synced: {exc}")
        return None
    cycle.portal_states[activity.id] = state
    flipped_type = type_for(cycle.organization, not state.private, activity.activity_type)
    eligible_if_flipped = (activity.project_task_id is None and flipped_type is not None
                           and flipped_type.sync_to_google)
    return core.PortalItem(state, activity.updated_at, type_goes_to_google(activity), touched_fields(cycle, activity.id),
                           eligible_if_flipped)


def touched_fields(cycle: Cycle, activity_id: int) -> frozenset[str]:
    """The fields the activity's pending portal changes (not yet agreed on) edited."""
    return frozenset().union(*(cycle.outbox_fields.get(rid, ()) for rid in cycle.outbox.get(activity_id, ())))


def claim_links(cycle: Cycle, portal_items, google_items) -> None:
    """Claim every linked item this cycle has something to do for; one another cycle holds is left alone.

    A user's cycle, a colleague's cycle and the outbox push may all meet one item (an owner and a
    participant, say): each holds a different lease, so the item is claimed on its own, for the length of
    a lease. A left item's portal changes stay pending; when Google listed a change of it, the user's sync
    token stays where it was, so the next cycle lists that change again.
    """
    wanted = {f"link:{link.id}": link for link in cycle.links.values() if link.id is not None and (
        link.activity_id in portal_items or link.google_event_id in google_items or link.id in cycle.unsettled)}
    if not wanted:
        return
    seconds = float(current_app.config["SYNC_LEASE_SECONDS"])
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
        hold_back(cycle, link, portal_items, google_items)
    # The links this cycle does not hold are another cycle's to change or delete: forget them, so that no
    # later commit reloads a row that is gone or stale.
    for link_id, link in list(cycle.links.items()):
        if f"link:{link_id}" not in cycle.claims:
            _forget_link(cycle, link)


def _forget_link(cycle: Cycle, link: SyncLink) -> None:
    cycle.links.pop(link.id, None)
    if link in db.session:
        db.session.expunge(link)

def hold_back(cycle: Cycle, link: SyncLink, portal_items, google_items) -> None:
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


def fill_missing_sides(cycle: Cycle, portal_items, google_items) -> None:
    """A link without an agreed state needs both sides this cycle: read the one that did not come along."""
    for link in cycle.links.values():
        if not link.confirmed or link.base_state is not None or not link.activity_id or not link.google_event_id:
            continue
        if f"link:{link.id}" not in cycle.claims:
            continue  # another cycle has it, or it has nothing to do now
        if link.activity_id not in portal_items:
            activity = db.session.get(Activity, link.activity_id)
            if activity is not None:
                item = portal_item_of(cycle, activity, link)
                if item is None:
                    continue
                portal_items[activity.id] = item
        if link.google_event_id not in google_items:
            item = fetch_google_item(cycle, link)
            if item is not None:
                google_items[link.google_event_id] = item


def read_event(cycle: Cycle, link: SyncLink) -> tuple[dict | None, list[dict]]:
    """The event as its own calendar holds it now, with every changed occurrence; (None, []) when Google
    does not know the id. Raises GoogleError for anything else."""
    return read_event_at(cycle, link.calendar_email, link.google_event_id)


def read_event_at(cycle: Cycle, calendar: str, event_id: str) -> tuple[dict | None, list[dict]]:
    client = cycle.client(calendar)
    try:
        event = client.get_event(event_id)
    except GoogleError as exc:
        if exc.status == 404:
            return None, []
        if exc.status == 410:  # gone: deleted long enough ago that Google no longer shows it
            return {"id": event_id, "status": "cancelled"}, []
        raise
    if not isinstance(event, dict):
        raise error_for("event_refused", status=200, detail="Google answered with something that is not an event")
    instances = client.exception_instances(event) if event.get("status") != "cancelled" else []
    return event, instances


def fetch_google_item(cycle: Cycle, link: SyncLink) -> core.GoogleItem | None:
    """The event as its own calendar holds it now (with every changed occurrence), read on purpose."""
    try:
        event, instances = read_event(cycle, link)
    except GoogleError as exc:
        if isinstance(exc, IntegrationError | TransientError) or is_pullers(cycle, exc):
            raise
        item_problem(cycle, link, google_event_id=link.google_event_id, message=exc.cause)
        return None
    if event is None:
        return core.GoogleItem(None, utcnow())
    return item_of_event(cycle, link, event, instances)


def item_of_event(cycle: Cycle, link: SyncLink, event: dict, instances: list[dict],
                 zone: str | None = None) -> core.GoogleItem | None:
    """What an event read on its own (not from the pull) means: its state, or None when it is deleted.
    `zone`: the item's zone when the link has no agreed state yet (an all-day event has none in Google)."""
    modified = parse_google_time(event.get("updated"))
    if event.get("status") == "cancelled":
        return core.GoogleItem(None, modified)
    orphans: dict = {}
    base = state_from_json(link.base_state) if link.base_state else None
    try:
        state = event_state(event, instances, cycle.users_by_email, orphans=orphans,
                            calendar_time_zone=base.time_zone if base is not None else zone or "UTC")
    except MappingError as exc:
        item_problem(cycle, link, google_event_id=link.google_event_id, message=f"Google event not synced: {exc}")
        return None
    _note_orphans(cycle, link.google_event_id, link.calendar_email, orphans, base)
    organizer = str((event.get("organizer") or {}).get("email") or link.calendar_email).lower()
    cycle.events[link.google_event_id] = _event_info(cycle, event, organizer, from_organizer_copy=True)
    cycle.google_states[link.google_event_id] = state
    return core.GoogleItem(state, modified, event.get("etag"))


def _event_info(cycle: Cycle, event: dict, organizer: str, *, from_organizer_copy: bool,
                activity_property: str | None = None) -> EventInfo:
    """What the cycle keeps of an event besides its state; its etag only from the organizer's copy (the
    one writes go to)."""
    return EventInfo(
        organizer=organizer, external=external_attendees(event, cycle.users_by_email),
        activity_property=activity_property, from_organizer_copy=from_organizer_copy,
        etag=event.get("etag") if from_organizer_copy else None, responses=attendee_responses(event),
        event_type=event_type_of(event), guests=guests_of(event),
        guests_can_modify=event.get("guestsCanModify") is True)


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
        cycle.orphans[event_id] = Orphans(calendar, agreed)


def links_for_core(cycle: Cycle) -> dict[int, core.Link]:
    links = {}
    for link_id, link in cycle.links.items():
        base = state_from_json(link.base_state) if link.base_state else None
        google_id = link.google_event_id if link.confirmed else None
        origin = {"google": core.Side.GOOGLE, "both": None}.get(link.origin, core.Side.PORTAL)
        links[link_id] = core.Link(link.activity_id, google_id, base, origin, cycle.synced_before.get(link_id))
    return links
