"""Change tracking: every flushed change to an activity writes an outbox row in the same transaction.

Hooking the session (rather than each view) means no code path can change an activity without the sync
seeing it: pages, the API, the CLI and the sync itself all go through here. Whoever changes an activity
states who did it with `changed_by(session, user, origin)`; the default origin is the portal.
"""

from __future__ import annotations

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from portal.models import (
    ACTIVITY_TEXTS,
    Activity,
    ActivityParticipant,
    ChangeRecord,
    RecurrenceException,
    utcnow,
)

ORIGIN_KEY = "change_origin"
ACTOR_KEY = "change_actor_id"


def changed_by(session: Session, user_id: int | None, origin: str = "portal") -> None:
    """Attribute the changes flushed from now on in this session."""
    session.info[ORIGIN_KEY] = origin
    session.info[ACTOR_KEY] = user_id


def install(db) -> None:
    if not event.contains(Session, "before_flush", _record_changes):
        event.listen(Session, "before_flush", _record_changes)
    if not event.contains(Session, "after_commit", _forget_actor):
        event.listen(Session, "after_commit", _forget_actor)
        event.listen(Session, "after_rollback", _forget_actor)


def _forget_actor(session: Session) -> None:
    session.info.pop(ORIGIN_KEY, None)
    session.info.pop(ACTOR_KEY, None)


def _owning_activity(session: Session, obj) -> Activity | None:
    if isinstance(obj, Activity):
        return obj
    if isinstance(obj, ActivityParticipant | RecurrenceException):
        # A row added by foreign key alone has no loaded parent yet.
        return obj.activity or session.get(Activity, obj.activity_id)
    return None


# The synced fields (as the sync core names them) each column of an activity holds.
SYNCED_COLUMNS = {
    **{name: (name,) for name in ACTIVITY_TEXTS},
    "start_at": ("all_day", "start", "end", "time_zone"), "end_at": ("all_day", "start", "end", "time_zone"),
    "start_date": ("all_day", "start", "end", "time_zone"), "end_date": ("all_day", "start", "end", "time_zone"),
    "all_day": ("all_day", "start", "end", "time_zone"), "time_zone": ("all_day", "start", "end", "time_zone"),
    "recurrence_text": ("recurrence",), "activity_type_id": ("private",), "owner_id": ("participants",),
}


def _record_changes(session: Session, flush_context, instances) -> None:
    actions: dict[int, tuple[Activity, str]] = {}
    touched: dict[int, set[str]] = {}
    for obj in list(session.new) + list(session.dirty) + list(session.deleted):
        activity = _owning_activity(session, obj)
        if activity is None:
            continue
        if obj is activity and obj in session.dirty and not session.is_modified(obj):
            continue
        action = _action_for(session, activity)
        previous = actions.get(id(activity))
        if previous is None or _PRIORITY[action] > _PRIORITY[previous[1]]:
            actions[id(activity)] = (activity, action)
        touched.setdefault(id(activity), set()).update(_touched_fields(obj, activity))

    if not actions:
        return
    origin = session.info.get(ORIGIN_KEY, "portal")
    actor = session.info.get(ACTOR_KEY)
    for activity, action in actions.values():
        if action != "create" and not _touched(activity):
            activity.touch()
        record = ChangeRecord(activity=activity, action=action, origin=origin, changed_by_id=actor,
                              fields=sorted(touched.get(id(activity), ())) if action == "update" else None)
        if origin == "google":
            # What the sync took in from Google is already there: never pushed back (no echo).
            record.processed_at = record.created_at = utcnow()
        if activity.organization_id is not None:
            record.organization_id = activity.organization_id
        else:  # organization created in the same flush
            record.organization = activity.organization
        session.add(record)


# A participant's own columns that are no synced field: an answer must never count as a change of the guest
# list, or it would compete with (and could undo) one made in Google at the same time.
PARTICIPANT_OWN_COLUMNS = ("response_status", "response_pending")


def _touched_fields(obj, activity: Activity) -> set[str]:
    if isinstance(obj, ActivityParticipant):
        state = inspect(obj)
        session = state.session
        if obj not in session.new and obj not in session.deleted and not any(
                attr.history.has_changes() for attr in state.attrs if attr.key not in PARTICIPANT_OWN_COLUMNS):
            return set()
        return {"participants"}
    if isinstance(obj, RecurrenceException):
        return {"exceptions"}
    state = inspect(activity)
    fields: set[str] = set()
    for column, names in SYNCED_COLUMNS.items():
        if state.attrs[column].history.has_changes():
            fields.update(names)
    return fields


_PRIORITY = {"update": 0, "create": 1, "restore": 2, "delete": 3}


def _action_for(session: Session, activity: Activity) -> str:
    if activity in session.new:
        return "create"
    history = inspect(activity).attrs.deleted_at.history
    if history.has_changes():
        return "delete" if activity.deleted_at is not None else "restore"
    return "update"


def _touched(activity: Activity) -> bool:
    """True when the caller already bumped the version in this flush (so it is bumped once, not twice)."""
    return inspect(activity).attrs.version.history.has_changes()
