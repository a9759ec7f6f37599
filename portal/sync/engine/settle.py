"""Writes whose outcome was never recorded (an answer lost, a worker stopped): what was sent is noted
before sending, and settled against what Google holds before anything is sent again."""

from __future__ import annotations

from dataclasses import replace

from portal.sync import core
from portal.sync.engine.read import (
    fetch_google_item,
    hold_back,
    item_of_event,
    read_event,
    read_event_at,
    touched_fields,
)
from portal.sync.engine.state import (
    Cycle,
    is_pullers,
    item_problem,
    link_for_action,
    outbox_pending_again,
    outbox_taken_upto,
    replan,
)
from portal.sync.google import (
    GoogleError,
    IntegrationError,
    TransientError,
    UserError,
)
from portal.sync.mapping import (
    MappingError,
    event_state,
    instance_id,
    state_from_json,
    state_to_json,
)
from portal.sync.models import SyncLink


def settle_reserved(cycle: Cycle, portal_items, google_items) -> None:
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
            event, instances = read_event(cycle, link)
        except GoogleError as exc:
            if isinstance(exc, IntegrationError) or is_pullers(cycle, exc):
                raise
            # Unknown whether the first insert went through: nothing is sent for this item until it is known.
            hold_back(cycle, link, portal_items, google_items)
            if not isinstance(exc, TransientError):
                item_problem(cycle, link, google_event_id=link.google_event_id, message=exc.cause)
            continue
        if event is None:
            continue  # it never arrived: the insert goes out again, with the same id
        try:
            item = _confirm_insert(cycle, link, event, instances, _pending(link)[0])
        except TransientError:  # its occurrences could not be read: settled in the next cycle
            hold_back(cycle, link, portal_items, google_items)
            continue
        if item is not None:
            google_items[link.google_event_id] = item
        _retouch(cycle, link, portal_items)


def _retouch(cycle: Cycle, link: SyncLink, portal_items) -> None:
    """The item's portal changes agreed on by a settled write no longer count as edits."""
    item = portal_items.get(link.activity_id)
    if item is not None:
        portal_items[link.activity_id] = replace(item, touched=touched_fields(cycle, link.activity_id))


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
            item = fetch_google_item(cycle, link)
        except TransientError:
            item = None
        if item is None:  # unknown whether our write went through: nothing more is sent for it now
            hold_back(cycle, link, portal_items, google_items)
            return
        google_items[link.google_event_id] = item
    if (link.pending_state or {}).get("delete"):
        _settle_delete(cycle, link, item, portal_items)
    elif agree_on_sent(cycle, link, item) is None:
        hold_back(cycle, link, portal_items, google_items)
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
    outbox_taken_upto(cycle, link.activity_id, upto if upto is not None else -1)
    portal = portal_items.get(link.activity_id)
    if portal is not None and portal.state is not None:
        portal_items[link.activity_id] = replace(portal, touched=frozenset(core.SYNCED_FIELDS))


def agree_on_sent(cycle: Cycle, link: SyncLink, item: core.GoogleItem) -> bool | None:
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
        outbox_taken_upto(cycle, link.activity_id, upto if upto is not None else -1)
    return landed


def _occurrences_landed(cycle: Cycle, link: SyncLink, base: core.ItemState, sent: core.ItemState) -> bool:
    """Whether the occurrences the portal changed reached Google before the series was deleted: each one
    read on its own still shows its last content. (A cancelled occurrence cannot tell, the whole series
    being cancelled now; cancelling one occurrence is no reason to bring a deleted series back.)"""
    return all(base.exceptions.get(key) == exc or _occurrence_landed(cycle, link, key, exc)
               for key, exc in sent.exceptions.items())


def _occurrence_landed(cycle: Cycle, link: SyncLink, key: str, exc: core.ExceptionState) -> bool:
    """Whether one occurrence the portal changed shows that change in Google, read on its own (a deleted
    series still shows its occurrences' last content). A cancelled occurrence cannot tell and counts as
    landed. Raises what Google raises when it cannot be read now."""
    if exc.cancelled:
        return True
    try:
        event, _ = read_event_at(cycle, link.calendar_email, instance_id(link.google_event_id, key))
    except GoogleError as error:
        if isinstance(error, TransientError | IntegrationError | UserError):
            raise
        return False
    return bool(event) and (exc.subject is None or (event.get("summary") or "").strip() == exc.subject)


def _last_content(cycle: Cycle, link: SyncLink, zone: str) -> core.ItemState | None:
    """The series fields a deleted event last had, when Google still shows them; None when it does not.
    Raises what Google raises when it cannot be read now."""
    try:
        event, _ = read_event(cycle, link)
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


def note_pending(cycle: Cycle, link: SyncLink, sent: core.ItemState, portal: core.ItemState | None) -> None:
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
    never written, so they are not part of the agreed state: they stay pending as changes of the portal's,
    in an outbox row of their own, so that a failure before they are written does not forget them.
    """
    item = item_of_event(cycle, link, event, instances, zone=intended.time_zone)
    base = intended
    if item is not None:
        # Deleted in Google since (no state): only the occurrences that show their change there were seen by
        # whoever deleted it; the others are the portal's changes still, and win over the delete.
        written = {key: exc for key, exc in intended.exceptions.items()
                   if (key in item.state.exceptions if item.state is not None
                       else _occurrence_landed(cycle, link, key, exc))}
        base = replace(intended, exceptions=core.FrozenMap(written))
    upto = _pending_upto(link)
    link.confirmed = True
    link.pending_state = None
    link.base_state, link.base_hash = state_to_json(base), base.content_hash()
    outbox_taken_upto(cycle, link.activity_id, upto if upto is not None else -1)
    if base.exceptions != intended.exceptions and link.activity_id:
        outbox_pending_again(cycle, link.activity_id, frozenset({"exceptions"}))
    if event.get("etag") and event.get("status") != "cancelled":
        link.etag = event["etag"]
    cycle.journal("created", activity_id=link.activity_id, google_event_id=link.google_event_id, side="google",
                  after=state_to_json(base), message="The insert had reached Google, but its answer had not "
                  "reached the portal: the event is linked, not inserted again.")
    return item


def settle_duplicates(cycle: Cycle, actions: list, results: dict) -> None:
    """A 409 on our own chosen id means an earlier attempt did reach Google: link it, never copy it. What
    Google holds now (changed or deleted since) is then merged like any change, in this cycle."""
    for index, action in enumerate(actions):
        outcome = results.get(index)
        if not (isinstance(action, core.CreateEvent | core.RecreateEvent) and isinstance(outcome, GoogleError)
                and outcome.status == 409):
            continue
        link = link_for_action(cycle, action)
        try:
            event, instances = read_event(cycle, link)
        except GoogleError as exc:
            results[index] = exc
            continue
        if event is None:
            results[index] = TransientError("no_answer", "Google refused the id as taken but does not show it.",
                                            "It is tried again in the next cycle.")
            continue
        intended = _pending(link)[0] if link.pending_state else action.state
        try:
            _confirm_insert(cycle, link, event, instances, intended)
        except TransientError as exc:
            results[index] = exc
            continue
        results[index] = replan(cycle, action)
