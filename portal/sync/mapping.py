"""Translations between the sides and the core's ItemState: activities, Google events, stored JSON.

Anything malformed coming from Google raises `MappingError` naming what is wrong; the engine records it
on that item and goes on with the rest of the cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from portal.models import ACTIVITY_TEXTS, DESCRIPTION_LIMIT, LOCATION_LIMIT, SUBJECT_LIMIT
from portal.sync.core import ExceptionState, FrozenMap, ItemState
from portal.sync.occurrences import occurrence_key, occurrence_keys_among, occurrence_moment, occurrences
from portal.sync.recurrence import EARLIEST_YEAR, LATEST_YEAR

PRIVATE_VISIBILITIES = ("private", "confidential")
ACTIVITY_ID_PROPERTY = "psaActivityId"
ORGANIZATION_PROPERTY = "psaOrganization"
RESPONSE_STATUSES = ("needsAction", "accepted", "tentative", "declined")


class MappingError(ValueError):
    """A Google event the portal cannot represent, with the reason in plain words."""


# ---------------------------------------------------------------- stored JSON


def _when_to_json(value):
    if value is None:
        return None
    if isinstance(value, datetime):
        return {"dateTime": value.astimezone(UTC).isoformat()}
    return {"date": value.isoformat()}


def _when_from_json(value):
    if value is None:
        return None
    if "dateTime" in value:
        return datetime.fromisoformat(value["dateTime"])
    return date.fromisoformat(value["date"])


def state_to_json(state: ItemState) -> dict:
    return {
        "subject": state.subject,
        "description": state.description,
        "location": state.location,
        "all_day": state.all_day,
        "start": _when_to_json(state.start),
        "end": _when_to_json(state.end),
        "time_zone": state.time_zone,
        "recurrence": list(state.recurrence),
        "participants": sorted(state.participants),
        "private": state.private,
        "exceptions": {
            key: {
                "cancelled": exc.cancelled,
                "subject": exc.subject,
                "description": exc.description,
                "location": exc.location,
                "start": _when_to_json(exc.start),
                "end": _when_to_json(exc.end),
            }
            for key, exc in state.exceptions.items()
        },
    }


def state_from_json(data: Mapping) -> ItemState:
    return ItemState(
        subject=data["subject"],
        description=data["description"],
        location=data["location"],
        all_day=data["all_day"],
        start=_when_from_json(data["start"]),
        end=_when_from_json(data["end"]),
        time_zone=data["time_zone"],
        recurrence=tuple(data["recurrence"]),
        participants=frozenset(data["participants"]),
        private=data["private"],
        exceptions=FrozenMap({
            key: ExceptionState(
                cancelled=exc["cancelled"],
                subject=exc["subject"],
                description=exc["description"],
                location=exc["location"],
                start=_when_from_json(exc["start"]),
                end=_when_from_json(exc["end"]),
            )
            for key, exc in data["exceptions"].items()
        }),
    )


# ---------------------------------------------------------------- the portal side


def activity_state(activity) -> ItemState:
    """The activity as the core sees it. The owner counts as a participant (the organizer attends).

    Exceptions of occurrences the series no longer has (its time or rule changed) are left out:
    Google drops those too, and keeping them would show a moved occurrence beside its replacement.
    """
    participants = {activity.owner.email} | {u.email for u in activity.participants}
    exceptions = {}
    for exc in activity.exceptions:
        exceptions[exc.original_start] = ExceptionState(
            cancelled=exc.cancelled,
            **{name: getattr(exc, name) for name in ACTIVITY_TEXTS},
            start=exc.start_at or exc.start_date,
            end=exc.end_at or exc.end_date,
        )
    state = ItemState(
        subject=activity.subject,
        description=activity.description or "",
        location=activity.location or "",
        all_day=activity.all_day,
        start=activity.start_date if activity.all_day else activity.start_at,
        end=activity.end_date if activity.all_day else activity.end_at,
        time_zone=activity.time_zone,
        recurrence=tuple(activity.recurrence),
        participants=frozenset(participants),
        private=bool(activity.activity_type and activity.activity_type.is_personal),
        exceptions=FrozenMap(exceptions),
    )
    return without_orphans(state)[0]


def without_orphans(state: ItemState) -> tuple[ItemState, dict[str, ExceptionState]]:
    """The state minus exceptions whose occurrence the series no longer has, and those exceptions.

    Exceptions that change nothing (Google makes one when a guest answers for one occurrence only) are
    left out too, so such an answer is not taken for an edit of the occurrence.
    """
    if not state.exceptions:
        return state, {}
    alive = occurrence_keys_among(state.start, state.end, state.time_zone, state.recurrence, state.exceptions,
                                  all_day=state.all_day) if state.recurrence else set()
    kept = {k: v for k, v in state.exceptions.items() if k in alive and not is_plain(state, k, v)}
    if len(kept) == len(state.exceptions):
        return state, {}
    orphans = {k: v for k, v in state.exceptions.items() if k not in alive}
    return replace(state, exceptions=FrozenMap(kept)), orphans


def is_plain(state: ItemState, key: str, exc: ExceptionState) -> bool:
    """Whether an exception leaves its occurrence exactly as the series has it."""
    if exc.cancelled or exc.subject is not None or exc.description is not None or exc.location is not None:
        return False
    start, end = occurrence_times(state, key)
    return exc.start in (None, start) and exc.end in (None, end)


# ---------------------------------------------------------------- the Google side


def _zone_name(name: str | None, fallback: str) -> str:
    for candidate in (name, fallback, "UTC"):
        if not candidate:
            continue
        try:
            ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return candidate
    return "UTC"


_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\n\t")


def google_text(value, limit: int, what: str) -> str:
    """A text from Google as the portal can keep and edit it: no control characters, no broken Unicode,
    no longer than the portal's field. The same event always maps to the same text, so this never makes
    the two sides look different from one cycle to the next."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MappingError(f"the event's {what} is not text")
    value = value.translate(_CONTROL).encode("utf-8", "replace").decode("utf-8")
    return value[:limit]


def _parse_when(value, what: str):
    if not isinstance(value, Mapping):
        raise MappingError(f"the event has no {what}")
    if value.get("dateTime"):
        text = value["dateTime"]
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except (TypeError, ValueError):
            raise MappingError(f"the event's {what} {text!r} is not a date and time") from None
        if moment.tzinfo is None:
            zone = _zone_name(value.get("timeZone"), "UTC")
            moment = moment.replace(tzinfo=ZoneInfo(zone))
        _within_years(moment, what)
        return moment
    if value.get("date"):
        try:
            day = date.fromisoformat(value["date"])
        except (TypeError, ValueError):
            raise MappingError(f"the event's {what} {value['date']!r} is not a date") from None
        _within_years(day, what)
        return day
    raise MappingError(f"the event's {what} has neither a date nor a date and time")


def _within_years(moment, what: str) -> None:
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise MappingError(f"the event's {what} lies outside the years {EARLIEST_YEAR} to {LATEST_YEAR}")


def original_start_key(instance: Mapping) -> str:
    original = instance.get("originalStartTime")
    if not isinstance(original, Mapping):
        raise MappingError("an occurrence of a series has no original start time")
    when = _parse_when(original, "original start")
    return occurrence_key(when, not isinstance(when, datetime))


def event_participants(event: Mapping, organization_emails: set[str]) -> frozenset[str]:
    emails = set()
    organizer = (event.get("organizer") or {}).get("email", "")
    if organizer.lower() in organization_emails:
        emails.add(organizer.lower())
    # Every attendee who is a user takes part, whatever they answered: RSVPs are shown, never synced away.
    for attendee in event.get("attendees") or []:
        email = (attendee.get("email") or "").lower()
        if email in organization_emails:
            emails.add(email)
    return frozenset(emails)


def external_attendees(event: Mapping, organization_emails: set[str]) -> list[dict]:
    """Attendees outside the organization, kept on the Google side untouched."""
    return [
        {k: v for k, v in attendee.items() if k in ("email", "responseStatus", *GUEST_OWN_FIELDS)}
        for attendee in event.get("attendees") or []
        if isinstance(attendee, Mapping) and (attendee.get("email") or "").lower() not in organization_emails
    ]


def attendee_responses(event: Mapping) -> dict[str, str]:
    """Each attendee's answer as Google reports it (``accepted``, ``declined``, ...), by e-mail."""
    answers = {}
    for attendee in event.get("attendees") or []:
        if not isinstance(attendee, Mapping):
            continue
        email = str(attendee.get("email") or "").strip().lower()
        status = attendee.get("responseStatus")
        if email and status in RESPONSE_STATUSES:
            answers[email] = status
    return answers



def event_state(
    event: Mapping,
    instances: Iterable[Mapping],
    organization_emails: set[str],
    *,
    calendar_time_zone: str = "UTC",
    base: ItemState | None = None,
    orphans: dict[str, ExceptionState] | None = None,
) -> ItemState:
    """A Google event (a series with its changed occurrences) as an ItemState.

    `instances` are the occurrences Google listed as changed or cancelled; in an incremental pull they are
    only the ones that changed, so exceptions not listed keep what `base` had. Exceptions of occurrences
    the series no longer has are left out and, when `orphans` is given, put there: the engine removes
    them from Google so that no occurrence shows twice.
    """
    if event.get("status") == "cancelled":
        raise MappingError("a cancelled event has no state")
    start = _parse_when(event.get("start"), "start")
    end = _parse_when(event.get("end"), "end")
    all_day = not isinstance(start, datetime)
    if all_day != (not isinstance(end, datetime)):
        raise MappingError("the event mixes a date with a date and time")
    # An all-day event has no zone in Google (or one copy's calendar zone, which differs between guests):
    # the zone the item already has is kept, so reading another guest's copy changes nothing.
    fallback = base.time_zone if base is not None else calendar_time_zone
    zone = _zone_name((event.get("start") or {}).get("timeZone"), fallback)
    recurrence = event.get("recurrence") or []
    if not isinstance(recurrence, list) or not all(isinstance(line, str) for line in recurrence):
        raise MappingError("the event's recurrence is not a list of RFC 5545 lines")
    exceptions = dict(base.exceptions) if base is not None else {}
    for instance in instances:
        if not isinstance(instance, Mapping):
            continue
        key = original_start_key(instance)
        if instance.get("status") == "cancelled":
            exceptions[key] = ExceptionState(cancelled=True)
            continue
        inst_start = _parse_when(instance.get("start"), "occurrence start")
        inst_end = _parse_when(instance.get("end"), "occurrence end")
        exceptions[key] = ExceptionState(
            subject=_differs(google_text(instance.get("summary"), SUBJECT_LIMIT, "summary").strip(),
                             google_text(event.get("summary"), SUBJECT_LIMIT, "summary").strip()),
            description=_differs(google_text(instance.get("description"), DESCRIPTION_LIMIT, "description"),
                                 google_text(event.get("description"), DESCRIPTION_LIMIT, "description")),
            location=_differs(google_text(instance.get("location"), LOCATION_LIMIT, "location"),
                              google_text(event.get("location"), LOCATION_LIMIT, "location")),
            start=inst_start,
            end=inst_end,
        )
    try:
        state = ItemState(
            subject=google_text(event.get("summary"), SUBJECT_LIMIT, "summary").strip(),
            description=google_text(event.get("description"), DESCRIPTION_LIMIT, "description"),
            location=google_text(event.get("location"), LOCATION_LIMIT, "location"),
            all_day=all_day,
            start=start,
            end=end,
            time_zone=zone,
            recurrence=tuple(recurrence),
            participants=event_participants(event, organization_emails),
            private=event.get("visibility") in PRIVATE_VISIBILITIES,
            exceptions=FrozenMap(exceptions),
        )
        state, dropped = without_orphans(state)
        if state.recurrence:
            _first_occurrence(state)
    except (TypeError, ValueError) as exc:  # the core refuses states that make no sense (end before start, bad rule)
        raise MappingError(str(exc)) from None
    except OverflowError:
        raise MappingError("the event's recurrence reaches beyond the dates a calendar can show") from None
    if orphans is not None:
        orphans.update(dropped)
    return state


def _first_occurrence(state: ItemState) -> None:
    """Work the rule out at its start: a rule that reads in but cannot be expanded (a date the canonical
    spelling cannot hold, a time past the year 9999) must not reach the pages that show the item."""
    if state.all_day:
        moment = datetime.combine(state.start, datetime.min.time(), tzinfo=ZoneInfo(state.time_zone))
    else:
        moment = state.start
    tick = timedelta(microseconds=1)
    list(occurrences(state.start, state.end, state.time_zone, state.recurrence, after=moment - tick,
                     before=moment + tick, all_day=state.all_day))


def _differs(value, series_value):
    return value if value != series_value else None


def _when_body(value, zone: str) -> dict:
    # A patch merges `start`/`end` into what Google holds, so the form not used is cleared with null: a
    # timed event patched with a `date` alone would keep its `dateTime` and Google would refuse both.
    if isinstance(value, datetime):
        return {"dateTime": value.astimezone(ZoneInfo(zone)).isoformat(), "timeZone": zone, "date": None}
    return {"date": value.isoformat(), "dateTime": None, "timeZone": None}


def event_body(
    state: ItemState,
    *,
    organizer_email: str,
    activity_id: int,
    organization_uid: str,
    external: list[dict] | None = None,
    event_id: str | None = None,
    known_guests: Mapping[str, Mapping] | None = None,
) -> dict:
    """The Google event for a state: what an insert or a full update sends.

    Google replaces the guest list whole, so each participant goes with the fields Google holds for them and
    the portal does not own (`known_guests`, by e-mail: name, optional, comment, extra guests, resource)."""
    known_guests = known_guests or {}
    attendees = [{**{k: v for k, v in (known_guests.get(email) or {}).items() if k in GUEST_OWN_FIELDS},
                  "email": email}
                 for email in sorted(state.participants) if email != organizer_email.lower()]
    if attendees:
        attendees.append({"email": organizer_email, "organizer": True, "responseStatus": "accepted"})
    # Answers belong to the guests: sending an old one back would overwrite what they said since.
    attendees.extend({k: v for k, v in guest.items() if k != "responseStatus"} for guest in external or []
                     if isinstance(guest, Mapping) and guest.get("email"))
    body = {
        **_texts_body(state),
        "start": _when_body(state.start, state.time_zone),
        "end": _when_body(state.end, state.time_zone),
        "recurrence": list(state.recurrence),
        "attendees": attendees,
        "visibility": "private" if state.private else "default",
        "extendedProperties": {"private": {ACTIVITY_ID_PROPERTY: str(activity_id),
                                           ORGANIZATION_PROPERTY: organization_uid}},
    }
    if event_id:
        body["id"] = event_id
    return body


GUEST_OWN_FIELDS = ("displayName", "optional", "comment", "additionalGuests", "resource")


def instance_id(series_id: str, key: str) -> str:
    return f"{series_id}_{key}"


def instance_body(state: ItemState, key: str) -> dict:
    """The patch that makes one occurrence match its exception.

    Fields the exception does not change are sent with the series' values, so an occurrence
    edited in Google before a series rename does not keep the old title there.
    """
    exc = state.exceptions[key]
    start, end = occurrence_times(state, key)
    return {
        **_texts_body(state, exc),
        "start": _when_body(exc.start if exc.start is not None else start, state.time_zone),
        "end": _when_body(exc.end if exc.end is not None else end, state.time_zone),
        "status": "confirmed",
    }


def instance_reset_body(state: ItemState, key: str) -> dict:
    """The patch that makes an occurrence plain again (its exception was removed)."""
    start, end = occurrence_times(state, key)
    return {
        **_texts_body(state),
        "start": _when_body(start, state.time_zone),
        "end": _when_body(end, state.time_zone),
        "status": "confirmed",
    }


def _texts_body(state: ItemState, exc: ExceptionState | None = None) -> dict:
    """The texts as Google's event fields: an occurrence's own where it has them, else the series'."""
    body = {}
    for name, google in ACTIVITY_TEXTS.items():
        own = getattr(exc, name) if exc is not None else None
        body[google] = own if own is not None else getattr(state, name)
    return body


def occurrence_times(state: ItemState, key: str):
    """The start and end an occurrence has by the rule (before any exception moves it)."""
    start = occurrence_moment(key, state.time_zone, all_day=state.all_day)
    if state.all_day:
        return start, start + (state.end - state.start)
    return start, start + timedelta(seconds=(state.end - state.start).total_seconds())
