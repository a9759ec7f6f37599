"""How an activity stands with Google, as pages and the API show it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Activity, utcnow
from portal.sync.mapping import activity_state
from portal.sync.models import SyncCycle, SyncJournalEntry, SyncLink
from portal.sync.policy import is_eligible, sync_allowed, sync_user_ids
from portal.sync.runtime import poll_interval, push_trusted, seconds


@dataclass(frozen=True)
class SyncStatus:
    status: str  # not_synced | pending | synced | error
    google_event_id: str | None = None
    error: str | None = None
    reason: str | None = None  # why an activity is not synced, in plain words


class StatusReader:
    """Reads the status of many activities of one organization: name them up front to read their links in
    one query."""

    def __init__(self, organization, activities=()):
        self.allowed = sync_allowed(organization)
        self.syncing = sync_user_ids(organization.id)
        # The links of the activities named up front are read in one query; others one at a time.
        self.read = {a.id for a in activities}
        self.links = {link.activity_id: link for link in db.session.scalars(
            select(SyncLink).where(SyncLink.activity_id.in_(self.read)))} if self.read else {}

    def _link(self, activity: Activity) -> SyncLink | None:
        if activity.id in self.read:
            return self.links.get(activity.id)
        return db.session.scalar(select(SyncLink).where(SyncLink.activity_id == activity.id))

    def __call__(self, activity: Activity) -> SyncStatus:
        link = self._link(activity)
        event_id = link.google_event_id if link is not None and link.confirmed else None
        if link is not None and link.error_message:
            return SyncStatus("error", event_id, link.error_message)
        if activity.project_task_id is not None:
            return SyncStatus("not_synced", reason="Activities created as project tasks are never synced.")
        if not self.allowed:
            return SyncStatus("not_synced", event_id, reason="The organization's Google Calendar sync is off.")
        eligible = is_eligible(activity, self.syncing)
        if link is None or not link.confirmed:
            if not eligible:
                return SyncStatus("not_synced", reason=_why_not(activity, self.syncing))
            return SyncStatus("pending")
        if activity.is_deleted:
            return SyncStatus("pending", event_id)
        if link.base_hash == activity_state(activity).content_hash():
            return SyncStatus("synced", event_id)
        return SyncStatus("pending", event_id)


def _why_not(activity: Activity, syncing: set[int]) -> str:
    if not activity.activity_type.sync_to_google:
        return f"The type {activity.activity_type.name} is not selected for sync to Google."
    if activity.owner_id not in syncing and not any(p.user_id in syncing for p in activity.participant_links):
        return "Neither the owner nor a participant has calendar sync switched on."
    return "Not synced."


@dataclass(frozen=True)
class Health:
    """How one user's calendar sync stands, for every page that shows it (profile, calendar banner, helpdesk,
    admin diagnostics): a state for filters and styles, a short label and what it means in words."""

    state: str  # off | organization_off | paused | not_logged_in | first_sync | backing_off | error | healthy
    label: str
    explanation: str

    @property
    def tone(self) -> str:
        """The message kind it is shown as: success, warning or error (off states are neutral: muted)."""
        return {"healthy": "success", "first_sync": "warning", "not_logged_in": "warning",
                "backing_off": "warning", "paused": "error", "error": "error"}.get(self.state, "muted")


HEALTH_STATES = ("healthy", "first_sync", "backing_off", "error", "paused", "not_logged_in", "off",
                 "organization_off")


def user_health(row, integration, *, now, session_lifetime, user_active: bool = True) -> Health:
    """One user's health from their `CalendarSync` row (None: never switched on) and the organization's
    integration. The order matters: a paused organization explains a user's silence better than their own
    row does, and a user who is not logged in is not synced at all (the seed: syncing starts at log-in)."""
    if row is None or not row.enabled:
        return Health("off", "Off", "Calendar sync is switched off for this user.")
    if integration is None or not integration.enabled or not integration.is_configured:
        return Health("organization_off", "Organization off",
                      "The organization's Google Calendar integration is switched off, so nothing syncs.")
    if integration.is_paused:
        return Health("paused", "Paused",
                      f"The organization's sync is paused: {integration.error_cause or 'an error'} "
                      "It starts again once an admin fixes the settings.")
    if row.error_code:
        return Health("error", "Error", row.error_cause or "The last sync failed.")
    if not user_active or row.last_seen_at is None or row.last_seen_at < now - session_lifetime:
        return Health("not_logged_in", "Waiting for log-in",
                      "The calendar syncs while the user is logged in to the portal; it starts again at the "
                      "next log-in.")
    if row.backoff_until is not None and row.backoff_until > now:
        return Health("backing_off", "Retrying",
                      f"The last {row.failures} attempt(s) failed for a passing reason; the sync tries again "
                      "by itself.")
    if row.last_success_at is None:
        return Health("first_sync", "First sync under way",
                      "The first sync matches and links what both calendars already hold.")
    return Health("healthy", "Healthy", "The calendar is in sync.")


def update_words(row, now: datetime | None = None) -> str:
    """How Google's changes reach the portal, in one sentence: notifications, or the poll alone. The pages
    call it as `sync_updates(row)` (a template global) beside a healthy user's status."""
    now = now or utcnow()
    if push_trusted(row.push_expires_at, now):
        return f"Instant updates from Google: on (also checked every {_every(poll_interval(row.push_expires_at, now))})."
    return f"Instant updates from Google: off; Google is checked every {_every(seconds('SYNC_INTERVAL_SECONDS'))}."


def _every(interval) -> str:
    total = round(interval.total_seconds())
    return f"{round(total / 60)} min" if total >= 120 else f"{total} s"


# ---------------------------------------------------------------------------------------------------
# Recent cycles, as one user sees them


@dataclass(frozen=True)
class CycleSummary:
    """One cycle as a user's page lists it. `outbox` cycles are the organization's pushes of portal
    changes; their counts here are only those of the user's own activities (the organization's totals stay
    on the `SyncCycle` row, for diagnostics)."""

    id: int
    started_at: object  # datetime (UTC), shown with |when
    status: str  # ok | partial | failed | skipped | running
    message: str | None
    trigger: str
    outbox: bool
    duration_ms: int = 0
    portal_created: int = 0
    portal_updated: int = 0
    portal_deleted: int = 0
    google_created: int = 0
    google_updated: int = 0
    google_deleted: int = 0
    conflicts: int = 0
    errors: int = 0
    # The user's quiet cycles (counted, not stored) between their previous stored cycle and this one.
    quiet_before: int = 0
    quiet_first_at: object = None
    quiet_last_at: object = None

    @property
    def to_google(self) -> int:
        return self.google_created + self.google_updated + self.google_deleted

    @property
    def from_google(self) -> int:
        return self.portal_created + self.portal_updated + self.portal_deleted


def recent_cycles_for(user, *, limit: int = 5) -> list[CycleSummary]:
    """The user's latest `limit` cycles, newest first: their own cycles (pulling their calendar and pushing
    their changes) merged with the outbox pushes that wrote one of the activities they own.

    A change made in the portal is pushed by the organization's outbox right after it is saved, in a cycle
    without a user; its counts are attributed from the sync journal (`SyncJournalEntry.cycle_id` and the
    owner of the activity it names), so a user sees "1 to Google" for their own edit, not the organization's
    total. An outbox cycle that failed as a whole wrote no journal for anyone and is not listed here; its
    changes stay pending and show in the push that then succeeds.

    Cost: one query for the user's own cycles, and two over the journal entries newer than the oldest of
    those (ids only grow), through the journal's cycle index.
    """
    own = list(db.session.scalars(select(SyncCycle).where(SyncCycle.user_id == user.id)
                                  .order_by(SyncCycle.id.desc()).limit(limit)))
    # An outbox cycle older than the oldest own cycle listed could only be shown if it were among the newest.
    floor = own[-1].id if len(own) == limit else 0
    touches = (select(SyncJournalEntry.cycle_id)
               .join(SyncCycle, SyncCycle.id == SyncJournalEntry.cycle_id)
               .join(Activity, Activity.id == SyncJournalEntry.activity_id)
               .where(SyncJournalEntry.cycle_id > floor, SyncCycle.organization_id == user.organization_id,
                      SyncCycle.user_id.is_(None), Activity.owner_id == user.id)
               .group_by(SyncJournalEntry.cycle_id).order_by(SyncJournalEntry.cycle_id.desc()).limit(limit))
    outbox_ids = list(db.session.scalars(touches))
    counts: dict[int, dict[str, int]] = {cycle_id: {} for cycle_id in outbox_ids}
    if outbox_ids:
        rows = db.session.execute(
            select(SyncJournalEntry.cycle_id, SyncJournalEntry.kind, SyncJournalEntry.side, func.count())
            .join(Activity, Activity.id == SyncJournalEntry.activity_id)
            .where(SyncJournalEntry.cycle_id.in_(outbox_ids), Activity.owner_id == user.id)
            .group_by(SyncJournalEntry.cycle_id, SyncJournalEntry.kind, SyncJournalEntry.side))
        for cycle_id, kind, side, number in rows:
            field = _COUNTED.get((kind, side)) or _COUNTED.get((kind, None))
            if field is not None:
                counts[cycle_id][field] = counts[cycle_id].get(field, 0) + number
    outbox_rows = list(db.session.scalars(select(SyncCycle).where(SyncCycle.id.in_(outbox_ids)))) \
        if outbox_ids else []
    summaries = [_own_summary(row) for row in own] + [_outbox_summary(row, counts[row.id]) for row in outbox_rows]
    summaries.sort(key=lambda summary: summary.id, reverse=True)
    return summaries[:limit]


# Journal entries -> the count they stand for. "created"/"updated"/"deleted" name the side written; a
# restore brings an activity back in the portal; conflicts and errors count whatever the side.
_COUNTED = {
    ("created", "google"): "google_created", ("updated", "google"): "google_updated",
    ("deleted", "google"): "google_deleted", ("created", "portal"): "portal_created",
    ("updated", "portal"): "portal_updated", ("restored", "portal"): "portal_updated",
    ("deleted", "portal"): "portal_deleted", ("conflict", None): "conflicts", ("error", None): "errors",
}
_COUNTS = ("portal_created", "portal_updated", "portal_deleted", "google_created", "google_updated",
           "google_deleted", "conflicts", "errors")


def _own_summary(row) -> CycleSummary:
    return CycleSummary(id=row.id, started_at=row.started_at, status=row.status, message=row.message,
                        trigger=row.trigger, outbox=False, duration_ms=row.duration_ms or 0,
                        quiet_before=row.quiet_before or 0, quiet_first_at=row.quiet_first_at,
                        quiet_last_at=row.quiet_last_at, **{name: getattr(row, name) or 0 for name in _COUNTS})


def _outbox_summary(row, counts: dict[str, int]) -> CycleSummary:
    # A push that went wrong only for other users' items went right for this one.
    status = "ok" if row.status == "partial" and not counts.get("errors") else row.status
    return CycleSummary(id=row.id, started_at=row.started_at, status=status, message=row.message,
                        trigger=row.trigger, outbox=True, duration_ms=row.duration_ms or 0,
                        **{name: counts.get(name, 0) for name in _COUNTS})
