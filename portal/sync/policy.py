"""Who and what syncs: the organization's switch, the users with calendar sync on, which activities go to
Google, and which of Google's events come in and what Google lets the portal change in them."""

from __future__ import annotations

from sqlalchemy import select

from portal.extensions import db
from portal.models import (
    ACTIVITY_TEXTS,
    Activity,
    ActivityType,
    GoogleIntegration,
    Organization,
    User,
)
from portal.sync import core
from portal.sync.models import CalendarSync


def integration_of(organization: Organization) -> GoogleIntegration | None:
    return db.session.scalar(select(GoogleIntegration).where(GoogleIntegration.organization_id == organization.id))


def sync_allowed(organization: Organization) -> bool:
    """Integration switched on, configured, and not paused by an integration-level error."""
    return organization_allowed(organization.id)


def organization_allowed(organization_id: int) -> bool:
    row = db.session.scalar(select(GoogleIntegration).where(GoogleIntegration.organization_id == organization_id))
    return row is not None and row.sync_allowed


def allowed_organization_ids() -> list[int]:
    """The organizations whose sync may run (as `sync_allowed` says), in one query."""
    rows = db.session.scalars(select(GoogleIntegration).where(GoogleIntegration.enabled.is_(True))).all()
    return [row.organization_id for row in rows if row.sync_allowed]


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


# Google's event types (calendar.v3.json, Event.eventType) and what the sync makes of them: out of office and
# focus time are work time and come in as activities; working locations and birthdays are markers of a day,
# not work, and stay in Google only; Gmail's events come in, and Google refuses changes to everything the
# portal syncs except privacy (the event types guide), so the portal never sends those.
IGNORED_EVENT_TYPES = frozenset({"workingLocation", "birthday"})
# The portal's fields Google refuses to change, by kind of event (a locked copy: Event.locked, "no changes can
# be made to the main event fields summary, description, location, start, end or recurrence").
FIXED_FIELDS = {  # kind of event -> (the error code Google's refusal is, the fields it refuses)
    "fromGmail": ("made_by_gmail", frozenset(core.SYNCED_FIELDS) - {"private"}),
    "locked": ("locked_copy", frozenset({*ACTIVITY_TEXTS, "all_day", "start", "end", "time_zone", "recurrence"})),
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


def type_for(organization: Organization, private: bool, current: ActivityType | None = None) -> ActivityType | None:
    """The type an item from Google takes: Google's private flag means the organization's Personal type;
    otherwise the portal's own choice stands, and a new item gets the default type."""
    personal, default = organization.personal_activity_type, organization.default_activity_type
    if private and personal is not None:
        return personal
    if current is not None and (not current.is_personal or private):
        return current  # the portal's own choice of type is never touched by Google
    return default
