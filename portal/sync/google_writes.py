"""What goes to Google for a planned action: pure, like the core (no Flask, HTTP or database).

The engine knows which event an action is about and what Google held when the cycle read it; this module
turns that into `EventWrite`s, plain data that `CalendarClient.request_for` makes into a request. So a
series patch, the writes that make Google's occurrences match the portal's exceptions, and the removal of
occurrences a moved series left behind are decided here and tested without an emulator.

Every write says `sendUpdates="none"`: the portal syncs calendars, it never mails guests (Google mails
them for a write that asks it to, one mail per guest per write).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from portal.models import ACTIVITY_TEXTS
from portal.sync import core
from portal.sync.mapping import event_body, instance_body, instance_id, instance_reset_body
from portal.sync.occurrences import occurrence_keys_among

# The event fields a series update may send; anything else Google holds (reminders, colour, conference
# data, attachments) is left as Google has it, because a patch only replaces what it names.
SERIES_FIELDS = (*ACTIVITY_TEXTS.values(), "start", "end", "recurrence", "attendees", "visibility")
# The series fields an occurrence takes from its series unless it changed them itself: when one of them
# changes on the series, every edited occurrence is written again with the new value.
INHERITED_FIELDS = (*ACTIVITY_TEXTS, "time_zone")


@dataclass(frozen=True)
class EventWrite:
    """One request to Google's Events resource, as data.

    `calendar` is the user whose primary calendar the write goes to (and whose token signs it); `if_match`
    makes Google refuse the write (412) when the event changed since that etag was read; `key` tells the
    answer apart in a batch.
    """

    key: Hashable
    method: Literal["insert", "patch", "delete"]
    calendar: str
    event_id: str
    body: Mapping | None = None
    if_match: str | None = None


@dataclass(frozen=True)
class EventPlace:
    """Where an item's event lives in Google and what the portal knows of it besides its state."""

    calendar: str  # the organizer's calendar: the copy every guest's copy follows
    event_id: str
    activity_id: int
    organization_uid: str
    external: list = field(default_factory=list)  # guests from outside the organization, sent back as they are
    known_guests: Mapping | None = None  # the guests as Google has them (what they set themselves stays)
    etag: str | None = None
    # The organization's "participants may edit" (None: leave Google's as it is): sent with every write of
    # the series, so Google lets the guests change the event exactly when the portal lets participants.
    guests_can_modify: bool | None = None

    def body(self, state: core.ItemState, *, with_id: bool = False) -> dict:
        body = event_body(state, organizer_email=self.calendar, activity_id=self.activity_id,
                          organization_uid=self.organization_uid, external=self.external,
                          event_id=self.event_id if with_id else None, known_guests=self.known_guests)
        if self.guests_can_modify is not None:
            body["guestsCanModify"] = self.guests_can_modify
        return body


def insert_write(key: Hashable, place: EventPlace, state: core.ItemState) -> EventWrite:
    """The series (or single event) under the id the portal chose; its occurrence exceptions follow in
    writes of their own once it exists (`exception_writes`)."""
    return EventWrite(key, "insert", place.calendar, place.event_id, place.body(state, with_id=True))


def series_patch(place: EventPlace, target: core.ItemState, current: core.ItemState | None) -> dict:
    """Only the series fields that differ from what Google holds: a patch leaves Google's other fields, and
    the occurrences edited there, alone. Without a known current state, every series field goes."""
    wanted = place.body(target)
    if current is None:
        return {name: wanted[name] for name in (*SERIES_FIELDS, "guestsCanModify") if name in wanted}
    had = place.body(current)
    patch = {name: wanted[name] for name in SERIES_FIELDS if wanted[name] != had[name]}
    if patch and place.guests_can_modify is not None:
        patch["guestsCanModify"] = place.guests_can_modify
    return patch


def update_write(key: Hashable, place: EventPlace, target: core.ItemState,
                 current: core.ItemState | None) -> EventWrite | None:
    """The series patch, conditional on the etag read (a change in Google not seen yet makes it 412); None
    when nothing differs."""
    patch = series_patch(place, target, current)
    if not patch:
        return None
    return EventWrite(key, "patch", place.calendar, place.event_id, patch, place.etag)


def delete_write(key: Hashable, place: EventPlace) -> EventWrite:
    """A delete conditional on the etag read: a change made in Google that the portal has not seen beats it."""
    return EventWrite(key, "delete", place.calendar, place.event_id, if_match=place.etag)


def moves_series(before: core.ItemState | None, after: core.ItemState) -> bool:
    """Whether a write changes when the series' occurrences fall (its time or its rule)."""
    return before is None or (before.start, before.end, before.all_day, before.recurrence) != (
        after.start, after.end, after.all_day, after.recurrence)


def exception_writes(index: Hashable, place: EventPlace, target: core.ItemState,
                     current: core.ItemState | None) -> list[EventWrite]:
    """The occurrence writes that make Google's exceptions match the target state, keyed
    `(index, occurrence key, kind)` with kind "patch", "delete", "reset" or "orphan".

    Changed exceptions are patched (or deleted when cancelled). An exception the target no longer has is
    undone: the occurrence is patched back to the series when the series still has it, and removed when
    it does not (the series' time or rule changed), so no old occurrence stays beside its replacement.
    When the series' title, description or place changes, its edited occurrences get the new values for
    the fields they did not change themselves.
    """
    had = dict(current.exceptions) if current is not None else {}
    inherited = current is not None and any(getattr(current, f) != getattr(target, f) for f in INHERITED_FIELDS)
    writes = []

    def write(key: str, kind: str, body: dict | None = None) -> None:
        method = "patch" if body is not None else "delete"
        writes.append(EventWrite((index, key, kind), method, place.calendar, instance_id(place.event_id, key), body))

    if target.recurrence:
        for key, exc in target.exceptions.items():
            if had.get(key) == exc and (exc.cancelled or not inherited):
                continue
            if exc.cancelled:
                write(key, "delete")
            else:
                write(key, "patch", instance_body(target, key))
    gone = {key: exc for key, exc in had.items() if key not in target.exceptions}
    if gone:
        alive = occurrence_keys_among(target.start, target.end, target.time_zone, target.recurrence, gone,
                                      all_day=target.all_day) if target.recurrence else set()
        for key, exc in gone.items():
            if key in alive:
                write(key, "reset", instance_reset_body(target, key))
            elif not exc.cancelled:
                write(key, "orphan")
    return writes


@dataclass(frozen=True)
class Orphans:
    """Occurrences Google kept for a series whose time changed in Google, which the series no longer has."""

    calendar: str
    exceptions: Mapping[str, core.ExceptionState]


def orphan_writes(orphans: Mapping[str, Orphans], *, skip: Iterable[str] = ()) -> list[EventWrite]:
    """Remove those occurrences (keyed `("orphan", event id, occurrence key)`), except of the events in
    `skip` (deleted whole in this cycle, or failed); a cancelled one is gone already."""
    skip = set(skip)
    return [EventWrite(("orphan", event_id, key), "delete", found.calendar, instance_id(event_id, key))
            for event_id, found in orphans.items() if event_id not in skip
            for key, exc in found.exceptions.items() if not exc.cancelled]


def answer_write(key: Hashable, calendar: str, copy: Mapping, response: str) -> EventWrite | None:
    """A participant's answer, as Google lets an attendee give it: a patch of their own copy of the event
    whose attendee list is the one Google holds with only their own `responseStatus` changed (Events:
    patch; an attendee may change nothing else: "forbiddenForNonOrganizer"), conditional on the copy's etag.
    None when Google has that answer already or does not list them as a guest.
    """
    attendees = [dict(a) for a in copy.get("attendees") or [] if isinstance(a, Mapping)]
    mine = next((a for a in attendees if str(a.get("email", "")).lower() == calendar.lower()), None)
    if mine is None or mine.get("responseStatus") == response:
        return None
    mine["responseStatus"] = response
    return EventWrite(key, "patch", calendar, str(copy["id"]), {"attendees": attendees}, copy.get("etag"))
