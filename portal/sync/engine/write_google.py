"""Google writes: reserving event ids before inserting, the checks that stop a write from overwriting what
the cycle has not read, and the batches of series, occurrence and clean-up writes."""

from __future__ import annotations

import logging
from dataclasses import replace

from flask import current_app
from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from portal.extensions import db
from portal.models import (
    Activity,
    ActivityParticipant,
    User,
    utcnow,
)
from portal.sync import core
from portal.sync.batch import Backoff, run_writes
from portal.sync.engine.settle import note_pending, settle_duplicates
from portal.sync.engine.state import (
    REPLAN,
    Cycle,
    checkpoint,
    claim_new,
    fresh_generation,
    journal_conflict,
    link_for_action,
    link_of_activity,
    link_of_event,
    replan,
)
from portal.sync.google import (
    GoogleError,
    IntegrationError,
    TransientError,
    UserError,
    error_for,
)
from portal.sync.google_writes import (
    EventPlace,
    EventWrite,
    answer_write,
    exception_writes,
    insert_write,
    orphan_writes,
    update_write,
)
from portal.sync.mapping import (
    state_from_json,
)
from portal.sync.models import CalendarSync, SyncLink
from portal.sync.policy import FIXED_FIELDS

log = logging.getLogger(__name__)


def _target_calendar(cycle: Cycle, activity_id: int | None, link: SyncLink | None) -> str:
    if link is not None and link.calendar_email:
        return link.calendar_email
    activity = cycle.activities.get(activity_id) if activity_id else None
    return activity.owner.email if activity is not None else cycle.puller.email


def reserve_event_ids(cycle: Cycle, actions: list) -> None:
    """Write the chosen event ids down before inserting, so a lost answer can never become a duplicate, and
    the pairs a first sync matched before writing either side, so a cycle cut short never copies them."""
    fresh: list[tuple[SyncLink, set[int], set[str]]] = []  # new links, stored together at the end
    with db.session.no_autoflush:
        _reserve(cycle, actions, fresh)
    _store_links(cycle, fresh)
    db.session.commit()


def _store_links(cycle: Cycle, fresh: list[tuple[SyncLink, set[int], set[str]]]) -> None:
    """Insert the new links with one flush; when one of them is taken already (another worker linked its
    activity or event just now), each is inserted alone and only that one is left for the next cycle."""
    if not fresh:
        return
    try:
        with db.session.begin_nested():
            db.session.add_all([link for link, _, _ in fresh])
        stored = [link for link, _, _ in fresh]
    except IntegrityError:
        stored = []
        for link, activities, events in fresh:
            link.id = None
            try:
                with db.session.begin_nested():
                    db.session.add(link)
            except IntegrityError:  # linked by another worker just now: that link is worked from next cycle
                cycle.failed_portal |= activities
                cycle.failed_google |= events
                continue
            stored.append(link)
    for link in stored:
        claim_new(cycle, link)
        cycle.links[link.id] = link


def _reserve(cycle: Cycle, actions: list, fresh: list) -> None:
    for action in actions:
        if isinstance(action, core.LinkItems):
            _reserve_match(cycle, action, fresh)
        elif getattr(action, "portal_id", None) in cycle.failed_portal and isinstance(
                action, core.CreateEvent | core.RecreateEvent):
            continue  # not sent this cycle: what an earlier attempt noted must stay as it is
        elif isinstance(action, core.CreateEvent):
            activity = cycle.activities[action.portal_id]
            link = cycle.links.get(action.link_id) if action.link_id else link_of_activity(cycle, action.portal_id)
            if link is None:
                link = _new_portal_link(cycle, activity, fresh)
            target, reason = _home_calendar(cycle, activity)
            if target is None:
                _park(cycle, link, activity, reason)
                continue
            link.google_event_id = core.event_id_for(action.portal_id, namespace=cycle.organization.uid,
                                                     generation=link.generation)
            link.calendar_email = target
            note_pending(cycle, link, action.state, action.state)
        elif isinstance(action, core.RecreateEvent):
            link = cycle.links[action.link_id]
            link.generation = fresh_generation(cycle.activities[action.portal_id], link)
            link.confirmed = False
            link.google_event_id = core.event_id_for(action.portal_id, namespace=cycle.organization.uid,
                                                     generation=link.generation)
            note_pending(cycle, link, action.state, action.state)
        elif isinstance(action, core.DeleteEvent) and not action.reason:
            link = link_for_action(cycle, action)
            if link is not None and link.confirmed:  # the portal's delete: see `_settle_delete`
                rows = cycle.outbox.get(link.activity_id) or []
                link.pending_state = {"delete": True, "upto": max(rows) if rows else None}
        elif isinstance(action, core.UpdateEvent):
            link = link_for_action(cycle, action)
            if link is not None and link.confirmed:
                base = state_from_json(link.base_state) if link.base_state else None
                current = cycle.google_states.get(action.google_id) or base
                if action.state != current:  # something will be sent
                    note_pending(cycle, link, action.state, cycle.portal_states.get(link.activity_id, base))
        elif isinstance(action, core.RecordConflict):
            # Journaled before the writes: a worker stopped after overwriting the losing value in Google
            # must not take the only record of it down with its transaction.
            journal_conflict(cycle, action)


def _reserve_match(cycle: Cycle, action: core.LinkItems, fresh: list) -> None:
    """A matched pair is linked before its writes, still without an agreed state: should the cycle stop
    half-way, the next one reads both sides and merges them again instead of copying either."""
    if link_of_activity(cycle, action.portal_id) is not None:
        return
    info = cycle.events.get(action.google_id)
    calendar = info.organizer if info is not None and info.organizer in cycle.users_by_email \
        else cycle.activities[action.portal_id].owner.email
    link = SyncLink(organization_id=cycle.organization.id, activity_id=action.portal_id,
                    google_event_id=action.google_id, calendar_email=calendar, origin="both",
                    generation=fresh_generation(cycle.activities[action.portal_id]),
                    confirmed=True, etag=info.etag if info is not None else None)
    fresh.append((link, {action.portal_id}, {action.google_id}))


def _new_portal_link(cycle: Cycle, activity: Activity, fresh: list) -> SyncLink:
    """A link for an activity about to be inserted in Google, stored with the others (`_store_links`); when
    another worker linked the activity just now, this cycle leaves it alone and the next one works from
    that link."""
    link = SyncLink(organization_id=cycle.organization.id, activity_id=activity.id,
                    calendar_email=activity.owner.email, origin="portal", confirmed=False,
                    generation=fresh_generation(activity))
    fresh.append((link, {activity.id}, set()))
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


def write_to_google(cycle: Cycle, actions: list) -> dict:
    """Send the plan's Google writes: series first, then their occurrences and the clean-up of occurrences
    a moved series left behind. Returns {action index: Google's answer | GoogleError | REPLAN}."""
    config = current_app.config
    backoff = Backoff(attempts=int(config["SYNC_RETRY_ATTEMPTS"]),
                      base_seconds=float(config["SYNC_RETRY_BASE_SECONDS"]),
                      cap_seconds=float(config["SYNC_RETRY_CAP_SECONDS"]))
    batch_size = int(config["SYNC_BATCH_SIZE"])
    writes, refused = _series_writes(cycle, actions)
    results = run_writes(writes, cycle.client, batch_size=batch_size, backoff=backoff)
    results.update(refused)
    for index, outcome in list(results.items()):
        if not isinstance(actions[index], core.UpdateEvent | core.DeleteEvent) or not isinstance(outcome, GoogleError):
            continue
        if outcome.status == 412 or isinstance(outcome, TransientError):
            # Changed in Google meanwhile, or no answer (the write may have gone through): read it again,
            # then merge once more from what Google really holds.
            results[index] = replan(cycle, actions[index])
    settle_duplicates(cycle, actions, results)

    checkpoint("series-written")
    # Occurrence exceptions are written once their series exists.
    occurrence_writes = _occurrence_writes(cycle, actions, results)
    if occurrence_writes:
        for key, outcome in run_writes(occurrence_writes, cycle.client, batch_size=batch_size,
                                       backoff=backoff).items():
            if not isinstance(outcome, GoogleError) or (outcome.status in (404, 410) and key[2] != "patch"):
                continue  # an occurrence already gone is what a delete wanted
            if key[0] == "orphan":
                # Leftovers of a series whose time changed: a failure to tidy them up blocks nothing.
                cycle.journal("error", google_event_id=key[1], side="google",
                              message=f"An old occurrence ({key[2]}) could not be removed: {outcome.cause}")
                continue
            results[key[0]] = outcome
    return results


def _series_writes(cycle: Cycle, actions: list) -> tuple[list[EventWrite], dict]:
    """The writes of the series (or single events), and the actions answered without asking Google."""
    writes = []
    refused = {}
    for index, action in enumerate(actions):
        if getattr(action, "portal_id", None) in cycle.failed_portal and isinstance(
                action, core.CreateEvent | core.RecreateEvent):
            continue  # its link could not be reserved: never insert without one
        if isinstance(action, core.UpdateEvent) and action.google_id in cycle.failed_google:
            continue
        answer = _answer_without_asking(cycle, action)
        if answer is not None:
            refused[index] = answer
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
            refused[index] = replan(cycle, action)
    return writes, refused


def _answer_without_asking(cycle: Cycle, action):
    """Google's refusal known in advance, or REPLAN when the write could overwrite what the cycle has not
    read; None when the write may go."""
    if isinstance(action, core.UpdateEvent) and _organized_elsewhere(cycle, action.google_id):
        # Google refuses changes to an event organized outside the organization: do not even ask.
        return error_for("not_organizer", status=403, reason="forbiddenForNonOrganizer")
    fixed = _fixed_by_google(cycle, action) if isinstance(action, core.UpdateEvent) else None
    if fixed:
        return error_for(fixed, status=400, reason="invalid")
    if isinstance(action, core.UpdateEvent | core.DeleteEvent) and (
            not _etag_for(cycle, action) or _series_unread(cycle, action) or _guests_unread(cycle, action)):
        # A write could overwrite (or a delete destroy) a change made in Google that we have not seen:
        # read the event first and merge again.
        return replan(cycle, action)
    return None


def _occurrence_writes(cycle: Cycle, actions: list, results: dict) -> list[EventWrite]:
    """The occurrence writes of the series written (or left unchanged) this cycle, and the removal of
    orphaned occurrences; an item whose occurrences cannot be prepared gets its own error."""
    writes = []
    for index, action in enumerate(actions):
        if not isinstance(action, core.CreateEvent | core.RecreateEvent | core.UpdateEvent):
            continue
        outcome = results.get(index)
        if isinstance(outcome, GoogleError) or outcome is REPLAN or getattr(action, "portal_id", None) \
                in cycle.parked:
            continue
        try:
            writes.extend(_exception_writes(cycle, index, action))
        except (IntegrationError, UserError, TransientError):
            raise
        except Exception as exc:  # noqa: BLE001 - one item that cannot be written must not stop the others
            log.exception("preparing the occurrences of %s failed", type(action).__name__)
            results[index] = error_for("event_refused",
                                       detail=f"its occurrences could not be prepared: {exc!r}"[:300])
    deleted = {a.google_id for a in actions if isinstance(a, core.DeleteEvent)}
    writes.extend(orphan_writes(cycle.orphans, skip=deleted | cycle.failed_google))
    return writes


def _series_unread(cycle: Cycle, action) -> bool:
    """Whether the action concerns a recurring event whose occurrences this cycle has not read.

    A series' etag does not change when one of its occurrences is edited (each edited occurrence is an
    event of its own), so If-Match cannot protect an occurrence edited in Google from a delete or an
    occurrence write: unless this cycle read the series, or pulled the calendar it lives in (which lists
    every changed occurrence), it is read before anything is written.
    """
    if action.google_id in cycle.google_states:
        return False
    link = link_for_action(cycle, action)
    if link is None or not link.base_state or not link.base_state.get("recurrence"):
        return False
    return cycle.puller is None or (link.calendar_email or "").lower() != cycle.puller.email.lower()


def _etag_for(cycle: Cycle, action) -> str | None:
    link = link_for_action(cycle, action)
    return action.etag or (link.etag if link is not None else None)


def _organized_elsewhere(cycle: Cycle, google_id) -> bool:
    """Whether the event's organizer is outside the organization (only they can change it)."""
    info = cycle.events.get(google_id)
    if info is not None:
        return info.organizer not in cycle.users_by_email
    link = link_of_event(cycle, google_id)
    activity = cycle.activities.get(link.activity_id) if link is not None and link.activity_id else None
    organizer = (activity.google_organizer or "").lower() if activity is not None else ""
    return bool(organizer) and organizer not in cycle.users_by_email


def _place(cycle: Cycle, link: SyncLink, *, calendar: str | None = None, etag: str | None = None,
           read: bool = True) -> EventPlace:
    """What the write planner needs to know of the link's event; `read`: with the guests and outside
    guests as this cycle read them (an insert sends those the link remembers)."""
    info = cycle.events.get(link.google_event_id) if read and link.google_event_id else None
    external = info.external if info is not None else (link.external_attendees or [])
    return EventPlace(calendar=calendar or link.calendar_email, event_id=link.google_event_id,
                      activity_id=link.activity_id or 0, organization_uid=cycle.organization.uid,
                      external=external, known_guests=info.guests if info is not None else None, etag=etag,
                      guests_can_modify=_guests_can_modify(cycle, info))


def _guests_can_modify(cycle: Cycle, info) -> bool | None:
    """What the event's `guestsCanModify` must become (None: leave it): the organization's "participants may
    edit", sent only where Google holds something else, so an event written for another reason keeps its
    other fields as they are. Unread (an insert), only a True needs saying: False is Google's default."""
    wanted = bool(cycle.organization.participants_can_edit)
    if info is None:
        return True if wanted else None
    return wanted if info.guests_can_modify != wanted else None


def _write_for(cycle: Cycle, index: int, action) -> EventWrite | None:
    if isinstance(action, core.CreateEvent | core.RecreateEvent):
        if action.portal_id in cycle.parked:
            return None
        link = link_for_action(cycle, action)
        calendar = _target_calendar(cycle, action.portal_id, link)
        place = replace(_place(cycle, link, read=False), calendar=calendar, activity_id=action.portal_id)
        return insert_write(index, place, action.state)
    if isinstance(action, core.UpdateEvent):
        link = link_for_action(cycle, action)
        place = replace(_place(cycle, link, etag=_etag_for(cycle, action)), event_id=action.google_id)
        return update_write(index, place, action.state, cycle.google_state(action.google_id, link))
    if isinstance(action, core.DeleteEvent):
        link = link_for_action(cycle, action)
        calendar = link.calendar_email if link else cycle.puller.email
        return EventWrite(index, "delete", calendar, action.google_id, if_match=_etag_for(cycle, action))
    return None


def _exception_writes(cycle: Cycle, index: int, action) -> list[EventWrite]:
    link = link_for_action(cycle, action)
    if link is None or not link.google_event_id:
        return []
    current = cycle.google_state(link.google_event_id, link) if isinstance(action, core.UpdateEvent) else None
    return exception_writes(index, _place(cycle, link), action.state, current)


def hold_failed_links(cycle: Cycle, actions: list, results: dict) -> None:
    """A link whose Google write failed (or is to be planned again) takes no portal write this cycle
    either: its two sides and its agreed state stay as they were, and the next plan starts from there."""
    for index, action in enumerate(actions):
        outcome = results.get(index)
        if outcome is REPLAN:
            continue  # `replan` held it already
        if not isinstance(outcome, GoogleError) or outcome.code == "not_organizer":
            continue
        if isinstance(action, core.DeleteEvent) and outcome.status in (404, 410):
            continue
        link = link_for_action(cycle, action)
        if link is not None:
            cycle.failed_links.add(link.id)


def _guests_unread(cycle: Cycle, action) -> bool:
    """Whether the update rewrites the guest list of an event this cycle has not read: Google replaces the
    list whole, so what each guest has there (name, optional, comment, extra guests) is read first and sent
    back as it is."""
    if not isinstance(action, core.UpdateEvent) or action.google_id in cycle.events:
        return False
    link = link_for_action(cycle, action)
    current = state_from_json(link.base_state) if link is not None and link.base_state else None
    return current is None or current.participants != action.state.participants


def _fixed_by_google(cycle: Cycle, action: core.UpdateEvent) -> str | None:
    """Why Google refuses the update for every one (an event Gmail made, a locked copy), or None."""
    info = cycle.events.get(action.google_id)
    link = link_for_action(cycle, action)
    event_type = info.event_type if info is not None else (link.event_type if link is not None else None)
    if event_type not in FIXED_FIELDS:
        return None
    code, fixed = FIXED_FIELDS[event_type]
    current = cycle.google_state(action.google_id, link)
    if current is None:
        return None
    changed = {name for name in core.SYNCED_FIELDS if getattr(current, name) != getattr(action.state, name)}
    return code if changed & fixed or current.exceptions != action.state.exceptions else None


def send_answers(cycle: Cycle, state: CalendarSync | None) -> None:
    """The puller's answers given in the portal, written to their own Google copy of each event.

    Runs after `refresh_attendees`, which leaves pending answers alone, so the answer this cycle read from
    Google before sending never overwrites the one it sends. An answer given again meanwhile stays pending
    (the flag is cleared only for the answer sent). An item not in Google yet keeps its answer pending.
    Only when the user's sync state says answers may be waiting (`answers_pending`) are they looked for.
    """
    user = cycle.puller
    if user is None or state is None or not state.answers_pending:
        return
    # The row is locked first: an answer given from now on sets the flag again after this cycle commits
    # (its update waits for the lock), and one committed before is among those read below.
    mine = CalendarSync.user_id == user.id
    db.session.execute(update(CalendarSync).where(mine).values(answers_pending=False))
    _send_pending_answers(cycle, user)
    # Still set while any answer waits (one that could not be sent, an item not in Google yet).
    still = db.session.execute(
        update(CalendarSync).where(mine)
        .values(answers_pending=exists().where(ActivityParticipant.user_id == user.id,
                                               ActivityParticipant.response_pending.is_(True)))
        .returning(CalendarSync.answers_pending)).scalar()
    set_committed_value(state, "answers_pending", bool(still))


def _send_pending_answers(cycle: Cycle, user: User) -> None:
    pending = db.session.execute(
        select(ActivityParticipant.activity_id, ActivityParticipant.response_status, SyncLink.google_event_id)
        .join(SyncLink, SyncLink.activity_id == ActivityParticipant.activity_id)
        .where(ActivityParticipant.user_id == user.id, ActivityParticipant.response_pending.is_(True),
               SyncLink.confirmed.is_(True), SyncLink.google_event_id.is_not(None))
    ).all()
    if not pending:
        return
    client = cycle.client(user.email)
    for activity_id, response, event_id in pending:
        try:
            write = answer_write(("answer", activity_id), user.email, client.get_event(event_id), response)
            if write is not None:
                client.execute(client.request_for(write), item=True)
        except (IntegrationError, UserError):
            raise
        except TransientError as exc:  # tried again in the next cycle
            log.info("answer of user %s to %s not sent: %s", user.id, event_id, exc.code)
            continue
        except GoogleError as exc:
            if exc.status == 412:  # the copy changed between reading and writing: the next cycle reads it again
                continue
            cycle.row.errors += 1
            cycle.journal("error", activity_id=activity_id, google_event_id=event_id, side="google",
                          message=f"Your answer could not be sent to Google Calendar: {exc.cause}")
        else:
            cycle.journal("answered", activity_id=activity_id, google_event_id=event_id, side="google",
                          after=response, message=f"{user.email} answered {response} in their Google calendar.")
        db.session.execute(
            update(ActivityParticipant)
            .where(ActivityParticipant.activity_id == activity_id, ActivityParticipant.user_id == user.id,
                   ActivityParticipant.response_status == response)
            .values(response_pending=False)
        )
        db.session.commit()
