"""The first sync, planned but not made: what switching sync on would link, copy each way and leave alone.

It reads Google and the portal through the first sync's own read phase and plans with the core's own
planner, then throws the session's changes away: nothing is written on either side (Google is only read),
and the numbers are the planner's decisions, not an estimate made beside them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from flask import current_app
from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, User, utcnow
from portal.sync import core
from portal.sync.engine.read import (
    links_for_core,
    portal_item_of,
    pull_calendar,
    read_portal_items,
)
from portal.sync.engine.state import FIRST_SYNC_DAYS, Cycle, OrganizationUsers, parse_google_time
from portal.sync.google import GoogleError
from portal.sync.models import SyncCycle, SyncJournalEntry, SyncLink
from portal.sync.policy import IGNORED_EVENT_TYPES, integration_of, syncing_users

log = logging.getLogger(__name__)

# Portal items that ended long before the window are not read by a first sync at all; the preview reads at
# most this many of them (the latest first) to say which ones are left alone.
OLDER_PORTAL_CAP = 500


class PreviewRefused(Exception):
    """The preview cannot be made now; the message says why in words."""


@dataclass(frozen=True)
class PreviewItem:
    subject: str
    start: date | datetime
    all_day: bool = False
    recurrence: tuple[str, ...] = ()
    portal_id: int | None = None
    google_id: str | None = None

    @property
    def sort_key(self) -> datetime:
        if isinstance(self.start, datetime):
            return self.start
        return datetime.combine(self.start, datetime.min.time(), tzinfo=UTC)


@dataclass
class FirstSyncPreview:
    linked: list[PreviewItem] = field(default_factory=list)  # on both sides already: linked, not copied
    to_google: list[PreviewItem] = field(default_factory=list)
    to_portal: list[PreviewItem] = field(default_factory=list)
    older: list[PreviewItem] = field(default_factory=list)  # ended before the window: left alone
    older_more: bool = False  # there are more old items than were read
    portal_only: list[PreviewItem] = field(default_factory=list)  # their type does not sync, or project tasks
    problems: list[str] = field(default_factory=list)
    made_at: datetime = field(default_factory=utcnow)
    requests: int = 0

    def sort(self) -> None:
        for items in (self.linked, self.to_google, self.to_portal, self.portal_only):
            items.sort(key=lambda item: item.sort_key)
        self.older.sort(key=lambda item: item.sort_key, reverse=True)  # the most recent first


class _SwitchedOn:
    """The user's sync state as switching on leaves it: no sync token, a first sync to make."""

    full_sync_needed = True
    sync_token = None


def preview_first_sync(user: User) -> FirstSyncPreview:
    """Plan the user's first sync as if they switched sync on now, and write nothing anywhere."""
    organization = user.organization
    integration = integration_of(organization)
    if integration is None or not integration.sync_allowed:
        raise PreviewRefused("Your organization's Google Calendar integration is not switched on (or is paused "
                             "by an error), so there is nothing to preview yet; ask your admin.")
    row = SyncCycle(organization_id=organization.id, user_id=user.id, trigger="preview", started_at=utcnow(),
                    status="running", errors=0, conflicts=0, pulled=0)  # never stored
    cycle = Cycle(organization=organization, integration=integration, row=row, puller=user, owner="preview")
    cycle.users_by_email = OrganizationUsers(organization.id)
    syncing = syncing_users(organization.id) | {user.id: user.email}  # as if this user had switched on
    cycle.syncing, cycle.syncing_emails = set(syncing), frozenset(e.lower() for e in syncing.values())
    now = utcnow()
    try:
        with db.session.no_autoflush:
            return _plan(cycle, now)
    except GoogleError as exc:
        raise PreviewRefused(f"Google could not be read: {exc.cause} {exc.fix}".strip()) from exc
    finally:
        # Whatever the read phase noted (journal lines, link errors, adopted links) is not kept.
        db.session.rollback()


def _plan(cycle: Cycle, now: datetime) -> FirstSyncPreview:
    # Read before the pull: the pull may note things in the session, and no write lock should be held
    # across a call to Google.
    old_events, more = _old_events(cycle, now)
    google_items, _token, _first = pull_calendar(cycle, _SwitchedOn())  # type: ignore[arg-type]
    cycle.first_sync = True
    portal_items = read_portal_items(cycle, google_items, first_sync=True)
    older_more = _read_older_portal_items(cycle, portal_items, now)
    left_alone: list = []
    actions = core.plan_cycle(links_for_core(cycle), portal_items, google_items, first_sync=True, now=now,
                              window_days=FIRST_SYNC_DAYS, syncing=cycle.syncing_emails, left_alone=left_alone)
    preview = FirstSyncPreview(made_at=now)
    for action in actions:
        if isinstance(action, core.LinkItems):
            preview.linked.append(_item(action.state, portal_id=action.portal_id, google_id=action.google_id))
        elif isinstance(action, core.CreateEvent):
            preview.to_google.append(_item(action.state, portal_id=action.portal_id))
        elif isinstance(action, core.CreateActivity):
            preview.to_portal.append(_item(action.state, google_id=action.google_id))
        elif isinstance(action, core.ItemError):
            preview.problems.append(action.message)
    for side, item_id in left_alone:
        if side is core.Side.PORTAL:
            preview.older.append(_item(portal_items[item_id].state, portal_id=item_id))
        else:
            preview.older.append(_item(google_items[item_id].state, google_id=item_id))
    linked = {link.activity_id for link in cycle.links.values()}
    for activity_id, item in portal_items.items():
        if item.state is not None and not item.eligible_for_google and activity_id not in linked:
            preview.portal_only.append(_item(item.state, portal_id=activity_id))
    preview.problems += [entry.message for entry in db.session.new
                         if isinstance(entry, SyncJournalEntry) and entry.kind == "error" and entry.message]
    preview.older += _older_google_items(old_events, google_items)
    preview.older_more = older_more or more
    preview.requests = cycle.requests
    preview.sort()
    return preview


def _item(state: core.ItemState, *, portal_id=None, google_id=None) -> PreviewItem:
    return PreviewItem(state.subject, state.start, state.all_day, tuple(state.recurrence), portal_id, google_id)


def _read_older_portal_items(cycle: Cycle, portal_items: dict, now: datetime) -> bool:
    """Add the user's unlinked activities that ended too long ago for the first sync to read them: the
    planner then leaves them alone as it would any old item. True when there were more than were read."""
    window_start = now - timedelta(days=FIRST_SYNC_DAYS)
    linked = select(SyncLink.activity_id).where(SyncLink.activity_id.is_not(None))
    query = (select(Activity).where(Activity.id.in_(Activity.ids_involving(cycle.puller)), Activity.deleted_at.is_(None),
                                    Activity.recurrence_text == "", Activity.id.not_in(linked),
                                    (Activity.end_at < window_start) | (Activity.end_date < window_start.date()))
             .order_by(Activity.id.desc()).limit(OLDER_PORTAL_CAP + 1))
    found = list(db.session.scalars(query))
    for activity in found[:OLDER_PORTAL_CAP]:
        if activity.id not in portal_items:
            item = portal_item_of(cycle, activity, None)
            if item is not None:
                portal_items[activity.id] = item
    return len(found) > OLDER_PORTAL_CAP


def _old_events(cycle: Cycle, now: datetime) -> tuple[list, bool]:
    """The events of the user's calendar that start before the window (one page of them, read only); True
    when there are more."""
    client = cycle.client(cycle.puller.email)
    window_start = (now - timedelta(days=FIRST_SYNC_DAYS)).isoformat().replace("+00:00", "Z")
    answer = client.execute(client.service.events().list(
        calendarId="primary", timeMax=window_start, singleEvents=False, showDeleted=False,
        maxResults=int(current_app.config["SYNC_PAGE_SIZE"])))
    return list(answer.get("items") or []), bool(answer.get("nextPageToken"))


def _older_google_items(events: list, google_items: dict) -> list[PreviewItem]:
    """Those of the old events the first sync's listing does not hold: they ended before the window, and
    the first sync does not even list them."""
    older = []
    for event in events:
        if not isinstance(event, dict) or not event.get("id") or event["id"] in google_items:
            continue
        if event.get("status") == "cancelled" or event.get("recurringEventId") \
                or event.get("eventType") in IGNORED_EVENT_TYPES:
            continue
        start = event.get("start") if isinstance(event.get("start"), dict) else {}
        if start.get("dateTime"):
            when, all_day = parse_google_time(start["dateTime"]), False
        elif start.get("date"):
            try:
                when, all_day = date.fromisoformat(start["date"]), True
            except ValueError:
                continue
        else:
            continue
        recurrence = tuple(line for line in event.get("recurrence") or [] if isinstance(line, str))
        older.append(PreviewItem(str(event.get("summary") or "(no title)"), when, all_day, recurrence,
                                 google_id=event["id"]))
    return older
