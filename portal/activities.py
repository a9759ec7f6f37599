"""Creating, changing and deleting activities: the one place that validates them, for pages, API and CLI.

Input arrives as a plain mapping shaped like the API's activity JSON. `clean_activity` turns it into an
`ActivityData` or raises `ValidationError` naming every bad field, so nothing is half-written.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import select

from portal import models
from portal.extensions import db
from portal.models import (
    ACTIVITY_FIELDS,
    ACTIVITY_TEXTS,
    DESCRIPTION_LIMIT,
    LOCATION_LIMIT,
    OCCURRENCE_FIELDS,
    PARTICIPANTS_LIMIT,
    SUBJECT_LIMIT,
    Activity,
    ActivityParticipant,
    ActivityType,
    Occurrence,
    Organization,
    Project,
    ProjectTask,
    User,
    normalize_email,
    utcnow,
)
from portal.sync.occurrences import (
    is_occurrence,
    occurrence_key,
    occurrence_moment,
    occurrences,
    split_recurrence,
)
from portal.sync.recurrence import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    RecurrenceError,
    refuse_oversized,
    validate_recurrence,
)

MAX_SUBJECT = SUBJECT_LIMIT
MAX_LOCATION = LOCATION_LIMIT
MAX_DESCRIPTION = DESCRIPTION_LIMIT
MAX_DATABASE_ID = 2**63 - 1
# Names in the zone database that are not zones: they mean whatever the server is set to.
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})

# Fields a client may send back unchanged after reading them; they are never written from input.
READ_ONLY_FIELDS = {"id", "updated_at", "created_at", "google_event_id", "sync_status", "sync_error", "deleted",
                    "organization", "exceptions", "responses"}
WRITABLE_FIELDS = frozenset(ACTIVITY_FIELDS)


class ValidationError(Exception):
    """Input that cannot be saved; `fields` maps each bad field to what is wrong with it."""

    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


@dataclass
class ActivityData:
    subject: str
    description: str
    location: str
    all_day: bool
    time_zone: str
    start_at: datetime | None
    end_at: datetime | None
    start_date: date | None
    end_date: date | None
    recurrence: list[str]
    activity_type: ActivityType
    owner: User
    participants: list[User] = field(default_factory=list)
    project_task: ProjectTask | None = None


@functools.cache
def known_time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_time_zone(name: object) -> bool:
    if not isinstance(name, str) or name not in known_time_zones() or name in NOT_ZONES:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def activity_to_values(activity: Activity) -> dict:
    """The activity's `ACTIVITY_FIELDS` as the API shows them: also the base a partial update is merged onto."""
    return {
        **{name: getattr(activity, name) for name in ACTIVITY_TEXTS},
        "all_day": activity.all_day,
        "time_zone": activity.time_zone,
        "start": format_moment(activity, "start"),
        "end": format_moment(activity, "end"),
        "recurrence": activity.recurrence,
        "activity_type": activity.activity_type.name,
        "owner": activity.owner.email,
        "participants": [u.email for u in activity.participants],
        "project_task": activity.project_task_id,
    }


def format_moment(activity: Activity, which: str) -> str:
    if activity.all_day:
        return getattr(activity, f"{which}_date").isoformat()
    return getattr(activity, f"{which}_at").astimezone(activity.zone).isoformat()


def clean_activity(
    values: dict,
    *,
    organization: Organization,
    actor: User,
    existing: Activity | None = None,
    allow_local_times: bool = False,
) -> ActivityData:
    """Validate API-shaped values; with `existing`, missing keys keep the activity's current values.

    `allow_local_times` lets the calendar form send wall-clock times without an offset, meaning the
    activity's own time zone; API clients must send RFC 3339 with an offset, as documented.
    """
    errors: dict[str, str] = {}
    if not isinstance(values, dict):
        raise ValidationError({"body": "Expected a JSON object."})
    unknown = sorted(set(values) - WRITABLE_FIELDS - READ_ONLY_FIELDS)
    for name in unknown:
        errors[name] = "Unknown field."
    merged = activity_to_values(existing) if existing is not None else {}
    merged.update({k: v for k, v in values.items() if k in WRITABLE_FIELDS})

    subject = _clean_text(merged.get("subject"), "subject", MAX_SUBJECT, errors, required=True)
    description = _clean_text(merged.get("description"), "description", MAX_DESCRIPTION, errors)
    location = _clean_text(merged.get("location"), "location", MAX_LOCATION, errors)

    all_day = merged.get("all_day", False)
    if not isinstance(all_day, bool):
        errors["all_day"] = "Must be true or false."
        all_day = False

    time_zone = merged.get("time_zone") or actor.time_zone
    if not is_time_zone(time_zone):
        errors["time_zone"] = f"Unknown time zone {str(time_zone)[:64]!r}; use an IANA name like Europe/Amsterdam."
        time_zone = "UTC"

    start_at = end_at = start_date = end_date = None
    if all_day:
        start_date = _parse_date(merged.get("start"), "start", errors)
        end_date = _parse_date(merged.get("end"), "end", errors)
        if start_date and end_date and end_date <= start_date:
            errors["end"] = "The end date must be after the start date (the end date is exclusive)."
    else:
        zone = ZoneInfo(time_zone)
        start_at = _parse_instant(merged.get("start"), "start", zone, allow_local_times, errors)
        end_at = _parse_instant(merged.get("end"), "end", zone, allow_local_times, errors)
        if start_at and end_at and end_at < start_at:
            # End equal to start is a normal item (a reminder, a deadline): Google holds them too.
            errors["end"] = "The end must not be before the start."

    recurrence = merged.get("recurrence") or []
    # A rule this change leaves alone is kept as it is written (often as Google wrote it): spelled again, it
    # would go back to Google as a change of the rule.
    kept_rule = (existing is not None and recurrence == list(existing.recurrence) and all_day == existing.all_day)
    if not isinstance(recurrence, list) or not all(isinstance(line, str) for line in recurrence):
        errors["recurrence"] = "Must be a list of RFC 5545 lines such as RRULE:FREQ=WEEKLY;BYDAY=MO."
        recurrence = []
    elif kept_rule:
        try:
            # Stored before the caps (or behind the portal's back): kept as it is, it would stay unreadable.
            refuse_oversized(recurrence)
        except RecurrenceError as exc:
            errors["recurrence"] = f"{exc}; send a shorter rule along with this change."
    elif recurrence and not kept_rule:
        try:
            recurrence = validate_recurrence(recurrence, all_day=all_day)
        except RecurrenceError as exc:
            errors["recurrence"] = str(exc)
            recurrence = []
        else:
            first = start_date if all_day else start_at
            if recurrence and first is not None and not _expands(recurrence, first, all_day, time_zone):
                errors["recurrence"] = ("The rule cannot be worked out into occurrences (a date before the year "
                                        f"{EARLIEST_YEAR} or after {LATEST_YEAR}, or a leap second?).")
                recurrence = []

    activity_type = _clean_activity_type(merged.get("activity_type"), organization, errors)
    owner = _clean_owner(merged.get("owner"), organization, actor, existing, errors)
    participants = _clean_participants(merged.get("participants"), organization, errors, owner=owner,
                                       existing=existing)
    project_task = _clean_project_task(merged.get("project_task"), organization, errors)

    if errors:
        raise ValidationError(errors)
    return ActivityData(
        subject=subject,
        description=description,
        location=location,
        all_day=all_day,
        time_zone=time_zone,
        start_at=start_at,
        end_at=end_at,
        start_date=start_date,
        end_date=end_date,
        recurrence=list(recurrence),
        activity_type=activity_type,
        owner=owner,
        participants=participants,
        project_task=project_task,
    )


def _expands(lines: list[str], first, all_day: bool, time_zone: str) -> bool:
    """Whether the stored rule can be read back and worked out, so no page showing it can fail."""
    if all_day:
        moment = datetime.combine(first, time(), tzinfo=ZoneInfo(time_zone)).astimezone(UTC)
        end = first + timedelta(days=1)
    else:
        moment, end = first, first + timedelta(hours=1)
    tick = timedelta(microseconds=1)
    try:
        list(occurrences(first, end, time_zone, lines, after=moment - tick, before=moment + tick, all_day=all_day))
    except (ValueError, OverflowError):
        return False
    return True


def text_problem(value: str) -> str | None:
    """Why a text cannot be stored and shown as it is, or None."""
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
        return "Contains control characters."
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "Contains characters that are not valid Unicode."
    return None


def _clean_text(value, name, limit, errors, *, required=False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors[name] = "Must be text."
        return ""
    value = value.strip() if name != "description" else value.replace("\r\n", "\n")
    if required and not value.strip():
        errors[name] = "This field is required."
    elif len(value) > limit:
        errors[name] = f"At most {limit} characters."
    elif problem := text_problem(value):
        errors[name] = problem
    return value


def _parse_date(value, name, errors) -> date | None:
    if value in (None, ""):
        errors[name] = "This field is required."
        return None
    if not isinstance(value, str):
        errors[name] = "Must be a date like 2026-03-31."
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        errors[name] = "Must be a date like 2026-03-31 (all-day items have dates, not times)."
        return None
    if len(value) != 10 or not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
        errors[name] = (
            f"Must be a date like 2026-03-31 between {EARLIEST_YEAR} and {LATEST_YEAR}."
        )
        return None
    return parsed


def _parse_instant(value, name, zone, allow_local, errors) -> datetime | None:
    if value in (None, ""):
        errors[name] = "This field is required."
        return None
    if not isinstance(value, str):
        errors[name] = "Must be a date and time like 2026-03-31T09:00:00+02:00."
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        errors[name] = "Must be a date and time like 2026-03-31T09:00:00+02:00."
        return None
    if "T" not in value.upper() or not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
        errors[name] = "Must be a date and time like 2026-03-31T09:00:00+02:00."
        return None
    if parsed.tzinfo is None:
        if not allow_local:
            errors[name] = "Include the UTC offset, e.g. 2026-03-31T09:00:00+02:00."
            return None
        parsed = _localize(parsed, zone)
    # Whole seconds, as Google keeps them: occurrence keys and instance ids have no fractions.
    return parsed.astimezone(UTC).replace(microsecond=0)


def _localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Attach a zone to a wall-clock time; a time skipped by a DST jump moves forward, as calendars do."""
    aware = naive.replace(tzinfo=zone)
    roundtrip = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if roundtrip != naive:
        aware = naive.replace(tzinfo=zone, fold=1)
    return aware


def _clean_activity_type(value, organization, errors) -> ActivityType | None:
    types = organization.activity_types
    if value in (None, ""):
        default = organization.default_activity_type
        if default is None:
            errors["activity_type"] = "Your organization has no default activity type; choose one."
        return default
    for activity_type in types:
        if activity_type.name == value or (type(value) is int and activity_type.id == value):
            return activity_type
    names = ", ".join(t.name for t in types)
    errors["activity_type"] = f"Unknown activity type; choose one of: {names}."
    return None


def _clean_owner(value, organization, actor, existing, errors) -> User | None:
    if value in (None, ""):
        return existing.owner if existing is not None else actor
    if not isinstance(value, str) or text_problem(value):
        errors["owner"] = "Must be the e-mail address of a user."
        return None
    owner = organization.user_by_email(value)
    if owner is None or not owner.active:
        errors["owner"] = f"{value[:254]} is not an active user of your organization."
        return None
    current = existing.owner if existing is not None else actor
    if owner.id != current.id and not actor.is_admin:
        errors["owner"] = "Only an admin can give an activity to someone else."
        return None
    if owner.id != current.id and not can_own(owner):
        errors["owner"] = (f"{owner.email} is helpdesk staff, who cannot change activities: give it to someone "
                           "who can.")
        return None
    return owner


def can_own(user: User) -> bool:
    """Whether an activity may be given to `user`: helpdesk staff change no activities, so an item of theirs
    would be changed by nobody but admins. (An item the sync already gave them keeps its owner.)"""
    return user.active and not user.is_helpdesk


def _clean_participants(value, organization, errors, *, owner: User | None = None,
                        existing: Activity | None = None) -> list[User]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and not text_problem(v) for v in value):
        errors["participants"] = "Must be a list of e-mail addresses."
        return []
    if len(value) > PARTICIPANTS_LIMIT:
        errors["participants"] = f"At most {PARTICIPANTS_LIMIT} participants."
        return []
    # Someone the calendar sync already put on the item (an invitation made in Google) stays: refusing them
    # here would block every other change to it.
    already = {u.id for u in existing.participants} if existing is not None else set()
    users, unknown, refused = [], [], []
    for email in dict.fromkeys(normalize_email(v) for v in value if v.strip()):
        user = organization.user_by_email(email)
        if user is None or not user.active:
            unknown.append(email[:254])
        elif owner is not None and user.id == owner.id:
            refused.append(f"{user.email} is the owner, who organizes it rather than takes part")
        elif user.is_helpdesk and user.id not in already:
            # Taking part would show them the item's contents, which helpdesk staff never see.
            refused.append(f"{user.email} is helpdesk staff, who cannot take part in activities")
        else:
            users.append(user)
    problems = (["Not a user of your organization: " + ", ".join(unknown)] if unknown else []) + refused
    if problems:
        errors["participants"] = "; ".join(problems) + "."
    return users


def can_be_invited(user: User, organization: Organization, owner: User | None) -> bool:
    """Whether `user` may be added as a participant of an item of `owner`: the same rules as `clean_activity`."""
    return (user.organization_id == organization.id and user.active and not user.is_helpdesk
            and (owner is None or user.id != owner.id))


def _clean_project_task(value, organization, errors) -> ProjectTask | None:
    if value in (None, ""):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        errors["project_task"] = "Must be the id of a project task, or null."
        return None
    if not 0 < value <= MAX_DATABASE_ID:
        errors["project_task"] = f"No project task {str(value)[:30]} in your organization."
        return None
    task = db.session.scalar(
        select(ProjectTask)
        .join(Project)
        .where(ProjectTask.id == value, Project.organization_id == organization.id)
    )
    if task is None:
        errors["project_task"] = f"No project task {value} in your organization."
    return task


def apply_activity_data(activity: Activity, data: ActivityData) -> None:
    activity.subject = data.subject
    activity.description = data.description
    activity.location = data.location
    activity.all_day = data.all_day
    activity.time_zone = data.time_zone
    activity.start_at, activity.end_at = data.start_at, data.end_at
    activity.start_date, activity.end_date = data.start_date, data.end_date
    activity.recurrence = data.recurrence
    activity.activity_type = data.activity_type
    activity.owner = data.owner
    activity.project_task = data.project_task
    activity.set_participants(data.participants)


def create_activity(organization: Organization, data: ActivityData) -> Activity:
    activity = Activity(organization=organization, organization_id=organization.id)
    apply_activity_data(activity, data)
    now = utcnow()
    activity.created_at = activity.updated_at = now
    db.session.add(activity)
    return activity


def update_activity(activity: Activity, data: ActivityData) -> None:
    before = SeriesAnchor.of(activity) if activity.recurrence and activity.exceptions else None
    apply_activity_data(activity, data)
    if before is not None and activity.recurrence and activity.all_day == before.all_day:
        reanchor_exceptions(activity, before)


class SeriesAnchor(NamedTuple):
    """Where a series starts: its first start on its own wall clock, whether it is all-day, its zone and its
    length."""

    first: datetime
    all_day: bool
    zone: str
    length: timedelta

    @classmethod
    def of(cls, activity: Activity) -> SeriesAnchor:
        if activity.all_day:
            return cls(datetime.combine(activity.start_date, datetime.min.time()), True, activity.time_zone,
                       activity.end_date - activity.start_date)
        return cls(activity.start_at.astimezone(ZoneInfo(activity.time_zone)).replace(tzinfo=None), False,
                   activity.time_zone, activity.end_at - activity.start_at)


def reanchor_exceptions(activity: Activity, before: SeriesAnchor) -> None:
    """The changed and cancelled occurrences of a series whose start moved move along, as in Google: each by
    as much as the series did, to the occurrence it now replaces (one moved on its own keeps its time); those
    that fall on no occurrence of the new rule go."""
    old_first, all_day, old_zone, old_length = before
    new_first, _, new_zone, new_length = SeriesAnchor.of(activity)
    shift = new_first - old_first
    if not shift and old_zone == new_zone:
        return
    start, end = (activity.start_date, activity.end_date) if all_day else (activity.start_at, activity.end_at)
    taken: set[str] = set()
    keys: dict[int, str] = {}
    for exc in sorted(activity.exceptions, key=lambda e: e.original_start):
        try:
            old = occurrence_moment(exc.original_start, old_zone, all_day=all_day)
        except RecurrenceError:
            continue
        if all_day:
            moved = old + shift
        else:
            local = old.astimezone(ZoneInfo(old_zone)).replace(tzinfo=None) + shift
            moved = local.replace(tzinfo=ZoneInfo(new_zone))
        key = occurrence_key(moved, all_day)
        if key in taken or not is_occurrence(start, end, new_zone, activity.recurrence, key, all_day=all_day):
            activity.exceptions.remove(exc)
            continue
        taken.add(key)
        keys[id(exc)] = key
        own = (exc.start_date, exc.end_date) if all_day else (exc.start_at, exc.end_at)
        if not exc.cancelled and own == (old, old + old_length):
            # It kept the rule's time: it follows the series to its new one. (A cancelled one has no time.)
            new_start = moved if all_day else moved.astimezone(UTC)
            if all_day:
                exc.start_date, exc.end_date = new_start, new_start + new_length
            else:
                exc.start_at, exc.end_at = new_start, new_start + new_length
    if any(exc.original_start != keys[id(exc)] for exc in activity.exceptions):
        # Keys are unique per series: park them first, so one occurrence can take another's old key.
        for n, exc in enumerate(activity.exceptions):
            exc.original_start = f"~{n}"
        db.session.flush()
        for exc in activity.exceptions:
            exc.original_start = keys[id(exc)]


def delete_activity(activity: Activity) -> None:
    activity.mark_deleted()


# ---------------------------------------------------------------- who may do what
# As in Google Calendar: the owner (the organizer there) and the organization's admins change and delete
# an activity; participants see it and answer it. An organization may let participants change it too (then
# its Google events say `guestsCanModify`), never delete it: a guest deleting an event in Google only
# removes their own copy, which here is answering "declined".

ANSWERS = ("accepted", "tentative", "declined")


def participation(user: User, activity: Activity) -> ActivityParticipant | None:
    return next((link for link in activity.participant_links if link.user_id == user.id), None)


def can_delete(user: User, activity: Activity) -> bool:
    return (activity.visible_to(user) and user.can_edit_activities
            and (user.is_admin or activity.owner_id == user.id))


def can_edit(user: User, activity: Activity) -> bool:
    if can_delete(user, activity):
        return True
    return (activity.visible_to(user) and user.can_edit_activities and activity.organization.participants_can_edit
            and participation(user, activity) is not None)


def refusal(user: User, activity: Activity, *, deleting: bool = False,
            how_to_answer: str = "answer it instead (accepted, tentative or declined)") -> str | None:
    """Why the user may not change (or delete) the activity they can see, in words for them; None if they may."""
    if not user.can_edit_activities:
        return "Your role may not change activities."
    if can_delete(user, activity) or (not deleting and can_edit(user, activity)):
        return None
    what = "delete" if deleting else "change"
    answer = f" As a participant, {how_to_answer}." if participation(user, activity) else ""
    return f"Only the owner of this activity ({activity.owner.email}) and admins can {what} it.{answer}"


def answer_activity(activity: Activity, user: User, response: object) -> ActivityParticipant:
    """The participant's answer, sent to their own Google copy by their next sync cycle.

    Raises PermissionError for someone who does not take part, ValidationError for an unknown answer.
    """
    link = participation(user, activity)
    if link is None:
        raise PermissionError("Only participants answer an activity; the owner organizes it.")
    if response not in ANSWERS:
        raise ValidationError({"response": f"Must be one of {', '.join(ANSWERS)}."})
    if link.response_status != response:
        link.response_status = response
        link.response_pending = True
    return link


def edit_activity(activity: Activity, data: ActivityData) -> None:
    """A change to the whole activity (every occurrence of a series) made in the calendar."""
    update_activity(activity, data)
    # Exceptions of occurrences the new time or rule no longer has go, as they do in Google.
    activity.drop_orphan_exceptions()


# ---------------------------------------------------------------- one occurrence of a series
# As Google Calendar asks it, a change or a deletion made from one occurrence applies to "this" occurrence,
# to it and the "following" ones, or to "all" of them.


def edit_occurrence(activity: Activity, occurrence: Occurrence, scope: str, values: dict, *, actor: User,
                    errors: dict[str, str] | None = None) -> tuple[str, Activity]:
    """Change a series from one of its occurrences: "this" one alone takes its own texts and times, "following"
    cuts the series there and starts a new one with the change, "all" changes the series, moved by as much
    as the occurrence was.

    `values` are API-shaped, with wall-clock times in the series' zone allowed; `errors` are what the caller
    already found wrong in them (a form's recurrence picker), raised along with the rest (an occurrence of its
    own has no rule, so "this" ignores them). Returns the scope applied ("following" from the first
    occurrence is "all") and the series holding the change.
    """
    if scope == "following" and occurrence.key == first_occurrence_key(activity):
        scope = "all"
    if scope not in ("this", "following", "all"):
        raise ValidationError({"scope": "Choose which occurrences to change."})
    errors = dict(errors or {})
    if scope == "this":
        refuse_more_exceptions(activity, occurrence.key)
    if scope == "all":
        values = series_values(activity, occurrence, values)
    elif scope == "this":
        # An occurrence has its own times and texts; everything else stays the series'.
        values = {**activity_to_values(activity), **{name: values[name] for name in OCCURRENCE_FIELDS},
                  "all_day": activity.all_day}
        errors = {}
    try:
        data = clean_activity(values, organization=actor.organization, actor=actor, existing=activity,
                              allow_local_times=True)
    except ValidationError as exc:
        raise ValidationError({**exc.fields, **errors}) from None
    if errors:
        raise ValidationError(errors)
    if scope == "all":
        edit_activity(activity, data)
        return scope, activity
    if scope == "this":
        activity.set_exception(occurrence.key, subject=data.subject, description=data.description,
                               location=data.location, start=data.start_date if data.all_day else data.start_at,
                               end=data.end_date if data.all_day else data.end_at)
        return scope, activity
    old_lines, new_lines = _split(activity, occurrence.key)
    return scope, split_off(activity, occurrence.key, data, old_lines, new_lines)


def delete_occurrence(activity: Activity, occurrence: Occurrence, scope: str) -> str:
    """Delete "this" occurrence of a series (it is cancelled), or it and the "following" ones (the series ends
    before it), or "all" (the activity goes). Returns the scope applied ("following" from the first
    occurrence is "all")."""
    if scope not in ("this", "following", "all"):
        raise ValidationError({"scope": "Choose which occurrences to delete."})
    if scope == "this":
        refuse_more_exceptions(activity, occurrence.key)
        activity.set_exception(occurrence.key, cancelled=True)
        return scope
    if scope == "all" or occurrence.key == first_occurrence_key(activity):
        delete_activity(activity)
        return "all"
    activity.recurrence, _ = _split(activity, occurrence.key)
    activity.drop_orphan_exceptions()
    return scope


def refuse_more_exceptions(activity: Activity, key: str) -> None:
    limit = models.EXCEPTIONS_PER_SERIES_LIMIT
    if activity.exception_for(key) is None and len(activity.exceptions) >= limit:
        raise ValidationError({"scope": f"At most {limit} changed or cancelled occurrences in one series: change "
                                        "this one with the following ones, or all of them."})


def first_occurrence_key(activity: Activity) -> str:
    start = activity.start_date if activity.all_day else activity.start_at
    return occurrence_key(start, activity.all_day)


def _split(activity: Activity, key: str) -> tuple[list[str], list[str]]:
    try:
        return split_recurrence(activity.recurrence, activity.start_date if activity.all_day else activity.start_at,
                                activity.time_zone, key, all_day=activity.all_day)
    except RecurrenceError as exc:
        raise ValidationError({"recurrence": str(exc)}) from None


def split_off(activity: Activity, key: str, data: ActivityData, old_lines: list[str], new_lines: list[str]) -> Activity:
    """Google's "this and following": the series ends before occurrence ``key`` and a new series, with the
    changes, starts there. Occurrences edited after the cut move to the new series."""
    unchanged_rule = data.recurrence == activity.recurrence
    successor = create_activity(activity.organization, data)
    successor.recurrence = new_lines if unchanged_rule else data.recurrence
    moved = [e for e in activity.exceptions if e.original_start >= key]
    for exception in moved:
        activity.exceptions.remove(exception)
        successor.set_exception(exception.original_start, cancelled=exception.cancelled, subject=exception.subject,
                                description=exception.description, location=exception.location,
                                start=exception.start_at or exception.start_date,
                                end=exception.end_at or exception.end_date)
    successor.drop_orphan_exceptions()
    activity.recurrence = old_lines
    activity.drop_orphan_exceptions()
    return successor


def series_values(activity: Activity, occurrence: Occurrence, values: dict) -> dict:
    """The series' values for an "all occurrences" change made from one occurrence.

    Like Google: moving the occurrence by some time moves the series by the same; texts the person did
    not change keep the series' own (an occurrence may have had its own title).
    """
    posted, values = values, dict(values)
    shown_exception = activity.exception_for(occurrence.key)
    shown = {"subject": occurrence.subject, "location": occurrence.location,
             "description": shown_exception.description if shown_exception is not None
             and shown_exception.description is not None else activity.description}
    for name in ACTIVITY_TEXTS:
        if (posted.get(name) or "").strip() == (shown[name] or "").strip():
            values[name] = getattr(activity, name)
    if posted.get("all_day") != activity.all_day:
        return values  # switching between all-day and timed: the dates given are the series' new dates
    try:
        if activity.all_day:
            new_start, new_end = date.fromisoformat(posted["start"]), date.fromisoformat(posted["end"])
            shift = new_start - occurrence.start
            start = activity.start_date + shift
            values["start"], values["end"] = start.isoformat(), (start + (new_end - new_start)).isoformat()
        else:
            new_start, new_end = datetime.fromisoformat(posted["start"]), datetime.fromisoformat(posted["end"])
            zone = activity.zone
            shift = new_start.replace(tzinfo=None) - occurrence.start.astimezone(zone).replace(tzinfo=None)
            start = activity.start_at.astimezone(zone).replace(tzinfo=None) + shift
            values["start"], values["end"] = start.isoformat(), (start + (new_end - new_start)).isoformat()
    except (KeyError, TypeError, ValueError):
        pass  # clean_activity names what is wrong with the posted times
    return values


def default_times(user: User, day: date | None = None) -> tuple[datetime, datetime]:
    """A sensible new item: the next whole hour today (or 09:00 on a chosen day), one hour long."""
    zone = user.zone
    if day is None:
        now = datetime.now(zone)
        start = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    else:
        start = datetime.combine(day, time(9, 0), tzinfo=zone)
    return start, start + timedelta(hours=1)


def visible_activities_query(
    user: User, *, owner: User | None = None, updated_since: datetime | None = None, include_deleted: bool = False
):
    """Activities the user may see: their own and those they take part in; admins see the organization's."""

    query = select(Activity).where(Activity.organization_id == user.organization_id)
    if not include_deleted:
        query = query.where(Activity.deleted_at.is_(None))
    if not user.is_admin:
        query = query.where(Activity.id.in_(Activity.ids_involving(user)))
    if owner is not None:
        query = query.where(Activity.owner_id == owner.id)
    if updated_since is not None:
        query = query.where(Activity.updated_at > updated_since)
    return query
