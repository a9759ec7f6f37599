"""Portal writes: each planned action's effect on the portal's rows (activities, links, outbox, journal)
once Google's answers are in."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

from portal.changes import changed_by
from portal.extensions import db
from portal.models import (
    ACTIVITY_TEXTS,
    Activity,
    ChangeRecord,
    RecurrenceException,
    User,
    utcnow,
)
from portal.sync import core
from portal.sync.engine.state import (
    REPLAN,
    Cycle,
    chunks,
    claim_new,
    database_busy,
    fresh_generation,
    is_pullers,
    jsonable,
    link_for_action,
    link_of_activity,
    mark_failed,
    outbox_taken,
)
from portal.sync.google import (
    GoogleError,
    IntegrationError,
)
from portal.sync.google_writes import moves_series
from portal.sync.mapping import (
    activity_state,
    external_attendees,
    state_to_json,
)
from portal.sync.models import SyncLink
from portal.sync.occurrences import is_occurrence
from portal.sync.policy import KEEP_GOOGLES_VERSION, event_type_of, type_for

log = logging.getLogger(__name__)


def _blocked(cycle: Cycle, action) -> bool:
    """Whether an earlier step of this item failed, so its agreed state must not move."""
    link_id = getattr(action, "link_id", None)
    if link_id is not None and link_id in cycle.failed_links:
        return True
    if not isinstance(action, core.CreateActivity | core.ItemError) and cycle.failed_links:
        link = link_for_action(cycle, action)
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


def apply(cycle: Cycle, index: int, action, results: dict) -> None:
    """Carry one planned action out on the portal's side, given what Google answered to its write."""
    outcome = results.get(index)
    if outcome is REPLAN:
        return
    if isinstance(outcome, GoogleError):
        if isinstance(outcome, IntegrationError) or is_pullers(cycle, outcome):
            raise outcome
        if isinstance(action, core.DeleteEvent) and outcome.status in (404, 410):
            outcome = {}  # already gone: that is what we wanted
        elif isinstance(action, core.UpdateEvent) and outcome.code in KEEP_GOOGLES_VERSION:
            _keep_organizers_version(cycle, action, outcome.code)
            return
        else:
            mark_failed(cycle, action, f"Google refused: {outcome.cause}")
            return
    if _blocked(cycle, action):
        return
    HANDLERS[type(action)](cycle, action, outcome or {})


def _event_created(cycle: Cycle, action: core.CreateEvent | core.RecreateEvent, answer: dict) -> None:
    row = cycle.row
    link = link_for_action(cycle, action)
    link.confirmed = True
    link.etag = answer.get("etag")
    info = cycle.events.get(link.google_event_id)
    if info is None and answer:  # what the inserted event has, so the next listing finds nothing to take in
        link.external_attendees = external_attendees(answer, cycle.users_by_email)
        link.event_type = event_type_of(answer)
    cycle.written.add(link.id)
    row.google_created += 1
    row.pushed += 1
    _set_base(link, action.state)
    outbox_taken(cycle, action.portal_id)
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


def _event_updated(cycle: Cycle, action: core.UpdateEvent, answer: dict) -> None:
    if not answer:
        return  # nothing was sent
    link = link_for_action(cycle, action)
    # Taken on with the agreed state (SetBase): an etag must never get ahead of what the portal took in,
    # or a later delete with If-Match would destroy changes the portal never saw.
    cycle.new_etags[link.id] = answer.get("etag") or link.etag
    cycle.written.add(link.id)
    if action.state.recurrence and moves_series(cycle.google_state(action.google_id, link), action.state):
        cycle.refetch.add(link.id)  # read its occurrences back: Google may hold some on dates we moved to
    cycle.row.google_updated += 1
    cycle.row.pushed += 1
    cycle.journal("updated", activity_id=link.activity_id, google_event_id=action.google_id, side="google",
                  before=link.base_state, after=state_to_json(action.state))


def _event_deleted(cycle: Cycle, action: core.DeleteEvent, answer: dict) -> None:
    link = link_for_action(cycle, action)
    cycle.row.google_deleted += 1
    cycle.row.pushed += 1
    cycle.journal("deleted", activity_id=link.activity_id if link else None, google_event_id=action.google_id,
                  side="google", before=link.base_state if link else None,
                  message=LEFT_MESSAGES.get(action.reason))


def _trash_activity(cycle: Cycle, action: core.TrashActivity, answer: dict) -> None:
    activity = cycle.activities[action.portal_id]
    if _moved_meanwhile(cycle, activity):
        raise StaleDataError("the activity changed during the cycle")
    changed_by(db.session, None, origin="google")
    activity.mark_deleted()
    _wrote(cycle, activity)
    cycle.row.portal_deleted += 1
    cycle.journal("deleted", activity_id=activity.id, side="portal", before=state_to_json(activity_state(activity)),
                  message=LEFT_MESSAGES.get(action.reason, "Deleted in Google: the activity is in the trash "
                                                           "and can be restored for 30 days."))


def _link_items(cycle: Cycle, action: core.LinkItems, answer: dict) -> None:
    link = link_of_activity(cycle, action.portal_id)
    if link is None:
        link = SyncLink(organization_id=cycle.organization.id, activity_id=action.portal_id,
                        calendar_email=cycle.events[action.google_id].organizer if action.google_id in cycle.events
                        else cycle.activities[action.portal_id].owner.email, origin="both",
                        generation=fresh_generation(cycle.activities[action.portal_id]))
        db.session.add(link)
        db.session.flush()
        claim_new(cycle, link)
    link.google_event_id = action.google_id
    link.confirmed = True
    info = cycle.events.get(action.google_id)
    if info is not None and info.etag:
        link.etag = info.etag
    if info is not None:  # as `_agree` keeps them, so `refresh_attendees` finds them current
        link.external_attendees, link.event_type = info.external, info.event_type
    _set_base(link, action.state)
    outbox_taken(cycle, action.portal_id)
    cycle.links[link.id] = link
    cycle.journal("linked", activity_id=action.portal_id, google_event_id=action.google_id,
                  message="Matched on the first sync: linked, not copied.")


def _agree(cycle: Cycle, action: core.SetBase, answer: dict) -> None:
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
    outbox_taken(cycle, link.activity_id)
    _forget_orphans(cycle, link.activity_id, state)


def _unlink(cycle: Cycle, action: core.Unlink, answer: dict) -> None:
    link = cycle.links.pop(action.link_id, None)
    if link is not None:
        outbox_taken(cycle, link.activity_id)
        db.session.delete(link)


def _journaled_already(cycle: Cycle, action: core.RecordConflict, answer: dict) -> None:
    """Conflicts are journaled before the writes (`write_google.reserve_event_ids`)."""


def _item_error(cycle: Cycle, action: core.ItemError, answer: dict) -> None:
    mark_failed(cycle, action, action.message)


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
    if activity is None or activity.is_deleted:
        return
    stale = [exc for exc in activity.exceptions if exc.original_start not in state.exceptions
             and not is_occurrence(state.start, state.end, state.time_zone, state.recurrence, exc.original_start,
                                   all_day=state.all_day)]
    if stale and not _moved_meanwhile(cycle, activity):  # changed meanwhile: the next cycle looks again
        changed_by(db.session, None, origin="google")
        for exc in stale:
            activity.exceptions.remove(exc)
        _wrote(cycle, activity)


def _keep_organizers_version(cycle: Cycle, action: core.UpdateEvent, why: str = "not_organizer") -> None:
    """Google refused a change because only the event's organizer may make it (403 forbiddenForNonOrganizer),
    or refuses it for every one (an event Gmail made): `why`.

    Asking again would be refused again, every cycle. Google's version stays, in Google and in the portal;
    what the portal had is journaled as a lost value, so nothing disappears without a trace.
    """
    link = link_for_action(cycle, action)
    if link is None or link.activity_id is None:
        mark_failed(cycle, action, "Only the organizer of this event can change it in Google.")
        return
    google = cycle.google_state(link.google_event_id, link)
    activity = cycle.activities.get(link.activity_id) or db.session.get(Activity, link.activity_id)
    if google is None or activity is None:
        mark_failed(cycle, action, "Only the organizer of this event can change it in Google.")
        return
    info = cycle.events.get(link.google_event_id)
    organizer = (info.organizer if info else None) or activity.google_organizer or "its organizer"
    message = KEEP_GOOGLES_VERSION[why].format(organizer=organizer)
    mine = activity_state(activity)
    for name in core.SYNCED_FIELDS:
        if getattr(mine, name) != getattr(google, name):
            cycle.row.conflicts += 1
            cycle.journal("conflict", activity_id=activity.id, google_event_id=link.google_event_id, side="portal",
                          field=name, before=jsonable(getattr(mine, name)), after=jsonable(getattr(google, name)),
                          message=message)
    with db.session.begin_nested():
        changed_by(db.session, None, origin="google")
        if info is not None and info.organizer != activity.owner.email.lower():
            activity.google_organizer = info.organizer
        _assign(cycle, activity, google)
        _wrote(cycle, activity)
    cycle.refused[link.id] = google
    cycle.row.portal_updated += 1


def _set_base(link: SyncLink, state: core.ItemState) -> None:
    link.base_state = state_to_json(state)
    link.base_hash = state.content_hash()
    link.pending_state = None
    link.synced_at = utcnow()
    link.error_message = link.error_at = None


def _wrote(cycle: Cycle, activity: Activity) -> None:
    """Our own write is not someone else's change: later steps of this cycle compare against it (the
    version it has once flushed, with the rest of its batch)."""
    def recorded():
        cycle.activity_versions[activity.id] = activity.version
    cycle.after_flush.append(recorded)


def _moved_meanwhile(cycle: Cycle, activity: Activity) -> bool:
    current = cycle.current_versions.pop(activity.id, None)
    if current is None:
        db.session.refresh(activity, ["version"])
        current = activity.version
    return current != cycle.activity_versions.get(activity.id, current)


# The actions that check, just before writing, that nobody changed the activity since the cycle read it.
_CHECKED = (core.UpdateActivity, core.RestoreActivity, core.TrashActivity)


def read_versions(cycle: Cycle, actions) -> None:
    """The activities' versions as they are now, for a batch's checks (`_moved_meanwhile`): one query for
    the batch instead of one per activity."""
    wanted = {action.portal_id for action in actions if isinstance(action, _CHECKED)
              and action.portal_id in cycle.activities}
    cycle.current_versions = {}
    for chunk in chunks(wanted):
        cycle.current_versions.update(db.session.execute(
            select(Activity.id, Activity.version).where(Activity.id.in_(chunk))).tuples().all())


def _owner_for(cycle: Cycle, google_id: str) -> User:
    info = cycle.events.get(google_id)
    organizer = cycle.users_by_email.get(info.organizer) if info else None
    return organizer or cycle.puller


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
    activity.activity_type = type_for(cycle.organization, state.private, activity.activity_type)
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
        for name in ACTIVITY_TEXTS:
            setattr(row, name, getattr(exc_state, name))
        timed = isinstance(exc_state.start, datetime)
        row.start_at = exc_state.start if timed else None
        row.end_at = exc_state.end if timed else None
        row.start_date = exc_state.start if exc_state.start is not None and not timed else None
        row.end_date = exc_state.end if exc_state.end is not None and not timed else None
        if key not in existing:
            activity.exceptions.append(row)


def _create_activity(cycle: Cycle, action: core.CreateActivity, answer: dict) -> None:
    changed_by(db.session, None, origin="google")
    owner = _owner_for(cycle, action.google_id)
    activity = Activity(organization=cycle.organization, organization_id=cycle.organization.id, owner=owner,
                        created_at=utcnow(), updated_at=utcnow())
    activity.activity_type = type_for(cycle.organization, action.state.private)
    activity.version = activity.version or 1  # what fresh_generation counts from, before the insert
    _assign(cycle, activity, action.state)
    db.session.add(activity)
    info = cycle.events.get(action.google_id)
    link = cycle.links.get(action.link_id) if action.link_id else None
    if link is None:
        link = SyncLink(organization_id=cycle.organization.id, google_event_id=action.google_id, origin="google",
                        generation=fresh_generation(activity))
        db.session.add(link)
    link.activity = activity  # its id once the batch is flushed
    link.confirmed = True
    link.calendar_email = info.organizer if info and info.organizer in cycle.users_by_email else owner.email
    link.etag = info.etag if info else None
    link.external_attendees = info.external if info else None
    link.event_type = info.event_type if info else None
    _set_base(link, action.state)
    cycle.row.portal_created += 1

    def stored():
        if f"link:{link.id}" not in cycle.claims:
            claim_new(cycle, link)
        cycle.links[link.id] = link
        cycle.activities[activity.id] = activity
        cycle.journal("created", activity_id=activity.id, google_event_id=action.google_id, side="portal",
                      after=state_to_json(action.state))
    cycle.after_flush.append(stored)


def _update_activity(cycle: Cycle, action: core.UpdateActivity | core.RestoreActivity, answer: dict) -> None:
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


def refresh_attendees(cycle: Cycle) -> None:
    """Keep each activity's view of its Google event current: every participant's answer, the guests from
    outside the organization, and who organizes it. None of these are synced fields, so they change without
    the item changing. An answer given in the portal and not sent yet (`send_answers`) stays as it is."""
    by_event = {link.google_event_id: link for link in cycle.links.values()
                if link.google_event_id and link.activity_id and link.confirmed}
    for event_id, info in cycle.events.items():
        link = by_event.get(event_id)
        if link is None or link.activity_id in cycle.failed_portal or link.id in cycle.busy:
            continue
        activity = cycle.activities.get(link.activity_id)
        if activity is not None and not _attendees_differ(activity, link, info):
            continue  # nothing to write: no savepoint, no flush
        for attempt in (1, 2):
            try:
                _store_attendees(link, info, activity)
                break
            except (StaleDataError, ObjectDeletedError):
                # Someone changed the activity since the cycle read it: read it again and store once more;
                # when that fails too, the sync token stays, so the next cycle lists the event again.
                if attempt == 2:
                    log.info("the attendees of %s changed again while being stored", event_id)
                    cycle.held_back = cycle.held_back or cycle.puller is not None
                elif activity is not None:
                    db.session.expire(activity)
            except Exception as exc:  # noqa: BLE001 - answers are shown, never worth stopping the cycle for
                if database_busy(exc):
                    raise  # nothing else could be stored either: the cycle ends as a busy database's
                log.exception("updating the attendees of %s failed", event_id)
                cycle.journal("error", activity_id=link.activity_id, google_event_id=event_id,
                              message=f"The attendees' answers could not be stored: {type(exc).__name__}")
                break


def _store_attendees(link: SyncLink, info, activity: Activity | None) -> None:
    with db.session.begin_nested():
        activity = activity or db.session.get(Activity, link.activity_id)
        if activity is None or activity.is_deleted:
            return
        changed_by(db.session, None, origin="google")
        for participant in activity.participant_links:
            answer = info.responses.get(participant.user.email.lower())
            if answer and participant.response_status != answer and not participant.response_pending:
                participant.response_status = answer
        if link.external_attendees != info.external:
            link.external_attendees = info.external
            link.event_type = info.event_type
        organizer = info.organizer if info.organizer != activity.owner.email.lower() else None
        if activity.google_organizer != organizer:
            activity.google_organizer = organizer


def _attendees_differ(activity: Activity, link: SyncLink, info) -> bool:
    """Whether `refresh_attendees` has anything to write for the item (looked at in memory first)."""
    if activity.is_deleted:
        return False
    if link.external_attendees != info.external:
        return True
    if activity.google_organizer != (info.organizer if info.organizer != activity.owner.email.lower() else None):
        return True
    return any(info.responses.get(p.user.email.lower()) not in (None, "", p.response_status)
               and not p.response_pending for p in activity.participant_links)


def mark_outbox(cycle: Cycle) -> None:
    now = utcnow()
    failed = {cycle.links[link_id].activity_id for link_id in cycle.failed_links if link_id in cycle.links}
    done = [rid for activity_id, ids in cycle.outbox.items() if activity_id not in cycle.failed_portal
            and activity_id not in failed for rid in ids]
    for chunk in chunks(done):
        db.session.execute(update(ChangeRecord).where(ChangeRecord.id.in_(chunk), ChangeRecord.processed_at.is_(None))
                           .values(processed_at=now))


# What each of the core's actions does on the portal's side; tests check that every action has its entry.
HANDLERS: dict[type, Callable[[Cycle, object, dict], None]] = {
    core.CreateEvent: _event_created,
    core.RecreateEvent: _event_created,
    core.UpdateEvent: _event_updated,
    core.DeleteEvent: _event_deleted,
    core.CreateActivity: _create_activity,
    core.UpdateActivity: _update_activity,
    core.RestoreActivity: _update_activity,
    core.TrashActivity: _trash_activity,
    core.LinkItems: _link_items,
    core.SetBase: _agree,
    core.Unlink: _unlink,
    core.RecordConflict: _journaled_already,
    core.ItemError: _item_error,
}
