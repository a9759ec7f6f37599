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
