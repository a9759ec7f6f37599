"""How an activity stands with Google, as pages and the API show it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity
from portal.sync.mapping import activity_state
from portal.sync.models import SyncLink
from portal.sync.policy import is_eligible, sync_allowed, sync_user_ids


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
