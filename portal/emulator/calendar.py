"""Calendar API v3 semantics: events CRUD, lists with paging and sync tokens, recurring series and
their exceptions, attendee copies, watch channels."""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import re
import secrets

from portal.emulator import recurrence
from portal.emulator.errors import ApiError, insufficient_scopes, invalid, not_found
from portal.emulator.state import Channel, Core, Entry
from portal.emulator.timeutil import (
    UTC,
    When,
    fmt_updated,
    parse_query_time,
    parse_when,
    to_ms,
    zone,
)

SCOPE = "https://www.googleapis.com/auth/"
READ_SCOPES = {SCOPE + s for s in ("calendar", "calendar.readonly", "calendar.events",
                                   "calendar.events.readonly", "calendar.events.owned",
                                   "calendar.events.owned.readonly")}
WRITE_SCOPES = {SCOPE + s for s in ("calendar", "calendar.events", "calendar.events.owned")}

SHARED_SIMPLE = ("summary", "description", "location", "colorId", "transparency", "visibility",
                 "guestsCanModify", "guestsCanInviteOthers", "guestsCanSeeOtherGuests", "anyoneCanAddSelf")
BOOL_FIELDS = ("guestsCanModify", "guestsCanInviteOthers", "guestsCanSeeOtherGuests", "anyoneCanAddSelf")
ENUMS = {
    "visibility": ("default", "public", "private", "confidential"),
    "transparency": ("opaque", "transparent"),
    "status": ("confirmed", "tentative", "cancelled"),
}
RESPONSE_STATUSES = ("needsAction", "declined", "tentative", "accepted")
ATTENDEE_KEYS = ("email", "displayName", "optional", "responseStatus", "comment", "additionalGuests",
                 "resource")
OWN_ATTENDEE_KEYS = ("responseStatus", "comment", "additionalGuests")
ID_RE = re.compile(r"^[a-v0-9]{5,1024}$")
INSTANCE_SUFFIX = re.compile(r"^(\d{8})(T(\d{6})Z)?$")
SYNC_FORBIDDEN = ("iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty",
                  "timeMin", "timeMax", "updatedMin")
# calendar.v3.json, Event.eventType; the event types guide (developers.google.com/calendar/api/guides/event-types)
# and the calendar status guide (.../guides/calendar-status) give each type's rules.
EVENT_TYPES = ("default", "outOfOffice", "focusTime", "workingLocation", "birthday", "fromGmail")
TYPE_PROPERTIES = {"outOfOffice": "outOfOfficeProperties", "focusTime": "focusTimeProperties",
                   "workingLocation": "workingLocationProperties", "birthday": "birthdayProperties"}
# What may change on events of a type (the event types guide): a birthday's colorId, summary and reminders; a
# Gmail event's colorId, reminders, visibility, transparency, status and extended properties.
TYPE_EDITABLE = {"birthday": {"colorId", "summary", "reminders"},
                 "fromGmail": {"colorId", "reminders", "visibility", "transparency", "status", "extendedProperties"}}
LOCKED_FIELDS = ("summary", "description", "location", "start", "end", "recurrence")
MAX_ATTACHMENTS = 25
DEFAULT_MAX_RESULTS = 250
MAX_MAX_RESULTS = 2500
HORIZON = dt.timedelta(days=730)
CHANNEL_DEFAULT_TTL = 604800


class Ctx:
    """Per-request context: state, acting user, calendars changed, time of the request."""

    def __init__(self, state, actor, base_url="", scopes=None):
        self.state = state
        self.actor = actor
        self.base_url = base_url
        self.scopes = scopes
        self.dirty = set()
        self.now = state.now()
        self.short_page = None  # a fraction: this list answers a page that much shorter (a `short_page` fault)


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")


def unb64(text):
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def new_event_id(state):
    alphabet = "0123456789abcdefghijklmnopqrstuv"
    return "".join(state.ids.choice(alphabet) for _ in range(26))


# ---------------------------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------------------------

def require_scope(ctx, write):
    allowed = WRITE_SCOPES if write else READ_SCOPES | {SCOPE + "calendar.calendars.readonly"}
    if ctx.scopes is not None and not (ctx.scopes & allowed):

        raise insufficient_scopes()


def resolve_calendar(ctx, calendar_id):
    cal_id = ctx.actor if calendar_id == "primary" else (calendar_id or "").lower()
    if not cal_id or cal_id != ctx.actor or cal_id not in ctx.state.calendars:
        raise not_found()
    return ctx.state.calendars[cal_id]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def html_link(event_id, cal_id):
    eid = base64.b64encode(f"{event_id} {cal_id}".encode()).decode().rstrip("=")
    return "https://www.google.com/calendar/event?eid=" + eid


def _person(email, owner):
    out = {"email": email}
    if email == owner:
        out["self"] = True
    return out


def render_attendees(core, owner):
    result = []
    for a in core.attendees:
        item = dict(a)
        if item["email"] == core.organizer:
            item["organizer"] = True
        if item["email"] == owner:
            item["self"] = True
        result.append(item)
    return result


def render(state, entry):
    """The full Event resource of a calendar copy."""
    core = entry.core
    cal = state.calendars[entry.cal_id]
    owner = entry.cal_id
    ev = {
        "kind": "calendar#event",
        "etag": entry.etag,
        "id": core.id,
        "status": "cancelled" if entry.cancelled else core.status,
        "htmlLink": html_link(core.id, owner),
        "created": fmt_updated(core.created),
        "updated": fmt_updated(entry.updated),
    }
    for key in ("summary", "description", "location", "colorId"):
        if key in core.fields:
            ev[key] = core.fields[key]
    ev["creator"] = _person(core.creator, owner)
    ev["organizer"] = _person(core.organizer, owner)
    ev["start"] = core.start.to_json(cal.time_zone)
    ev["end"] = core.end.to_json(cal.time_zone)
    if core.fields.get("recurrence"):
        ev["recurrence"] = list(core.fields["recurrence"])
    if core.recurring_event_id:
        ev["recurringEventId"] = core.recurring_event_id
        ev["originalStartTime"] = core.original_start.to_json(cal.time_zone)
    for key in ("transparency", "visibility"):
        if key in core.fields:
            ev[key] = core.fields[key]
    ev["iCalUID"] = core.ical_uid
    ev["sequence"] = core.sequence
    if core.attendees:
        ev["attendees"] = render_attendees(core, owner)
    for key in BOOL_FIELDS:
        if key in core.fields:
            ev[key] = core.fields[key]
    ext = {}
    if entry.private_props:
        ext["private"] = dict(entry.private_props)
    if core.shared_props:
        ext["shared"] = dict(core.shared_props)
    if ext:
        ev["extendedProperties"] = ext
    ev["reminders"] = copy.deepcopy(entry.reminders) if entry.reminders else {"useDefault": True}
    if "source" in core.fields:
        ev["source"] = dict(core.fields["source"])
    for key in ("endTimeUnspecified", "privateCopy", "locked", "attachments", "conferenceData",
                *TYPE_PROPERTIES.values()):
        if key in core.fields:
            ev[key] = copy.deepcopy(core.fields[key])
    meet = [p["uri"] for p in (core.fields.get("conferenceData") or {}).get("entryPoints", [])
            if p.get("entryPointType") == "video" and "meet.google.com" in p.get("uri", "")]
    if meet:
        ev["hangoutLink"] = meet[0]
    ev["eventType"] = getattr(core, "event_type", "default")
    return ev


def render_cancelled(state, entry):
    """A deleted event as Google returns it. calendar.v3.json, Event.status: "Cancelled exceptions are only
    guaranteed to have values for the id, recurringEventId and originalStartTime fields populated. The other
    fields might be empty." The organizer's own copy of a deleted event keeps its details (Google lists it
    with summary, start, ... and status "cancelled"); a cancelled exception and a removed guest's copy carry
    only what is guaranteed, so a client must never need more."""
    if entry.core.organizer == entry.cal_id and not entry.core.recurring_event_id and not entry.removed:
        ev = render(state, entry)
        ev["status"] = "cancelled"
        return ev
    return render_minimal(state, entry)


def render_minimal(state, entry):
    """A deleted event as Google lists it: only the identifying fields."""
    ev = {"kind": "calendar#event", "etag": entry.etag, "id": entry.core.id, "status": "cancelled"}
    if entry.core.recurring_event_id:
        ev["recurringEventId"] = entry.core.recurring_event_id
        ev["originalStartTime"] = entry.core.original_start.to_json(state.calendars[entry.cal_id].time_zone)
    return ev


# ---------------------------------------------------------------------------------------------
# Recurring series
# ---------------------------------------------------------------------------------------------

def expansion(core):
    if core.start.all_day:
        local = dt.datetime.combine(core.start.date, dt.time())
        return recurrence.Expansion(core.fields["recurrence"], local, "UTC", True)
    tz = zone(core.start.tz_name) or UTC
    local = core.start.instant.astimezone(tz).replace(tzinfo=None)
    return recurrence.Expansion(core.fields["recurrence"], local, core.start.tz_name or "UTC", False)


def instance_id(core, exp, local):
    if exp.all_day:
        return f"{core.id}_{local:%Y%m%d}"
    return f"{core.id}_{exp.to_utc(local):%Y%m%dT%H%M%SZ}"


def instance_times(core, exp, local):
    """(start When, end When, originalStart When) of the instance starting at `local`."""
    if exp.all_day:
        days = core.end.date - core.start.date
        start = When(date=local.date())
        return start, When(date=local.date() + days), When(date=local.date())
    start_utc = exp.to_utc(local)
    duration = core.end.instant - core.start.instant
    start = When(instant=start_utc, tz_name=core.start.tz_name)
    end = When(instant=start_utc + duration, tz_name=core.end.tz_name or core.start.tz_name)
    return start, end, When(instant=start_utc, tz_name=core.start.tz_name)


def render_instance(state, series_entry, exp, local):
    core = series_entry.core
    ev = render(state, series_entry)
    cal_tz = state.calendars[series_entry.cal_id].time_zone
    start, end, original = instance_times(core, exp, local)
    ev.pop("recurrence", None)
    ev["id"] = instance_id(core, exp, local)
    ev["htmlLink"] = html_link(ev["id"], series_entry.cal_id)
    ev["recurringEventId"] = core.id
    ev["originalStartTime"] = original.to_json(cal_tz)
    ev["start"] = start.to_json(cal_tz)
    ev["end"] = end.to_json(cal_tz)
    return ev


def occurrence_locals(core, exp, time_min=None, time_max=None, now=None):
    """Local starts of the instances overlapping [time_min, time_max) (bounded horizon: two years past now,
    or past the series' start when that lies further ahead, so a series far in the future is still found)."""
    upper = time_max or (max(now or dt.datetime.now(UTC), exp.to_utc(exp.local_start)) + HORIZON)
    if exp.all_day:
        until_local = upper.replace(tzinfo=None)
    else:
        until_local = upper.astimezone(exp.tz).replace(tzinfo=None)
    result = []
    for local in exp.occurrences(until_local=until_local):
        start, end, _ = instance_times(core, exp, local)
        s, e = start.utc_start(), end.utc_start()
        if time_max is not None and s >= time_max:
            continue
        if time_min is not None and e <= time_min:
            continue
        result.append(local)
    return result


def parse_instance_id(cal, event_id):
    """(series entry, local start) for a not-yet-materialized instance id, or None."""
    if "_" not in event_id:
        return None
    sid, suffix = event_id.rsplit("_", 1)
    series = cal.entries.get(sid)
    m = INSTANCE_SUFFIX.match(suffix)
    if series is None or not m or not series.core.fields.get("recurrence"):
        return None
    exp = expansion(series.core)
    try:
        if m.group(2):
            utc = dt.datetime.strptime(m.group(1) + m.group(3), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
            local = dt.datetime.combine(utc.date(), utc.time()) if exp.all_day else \
                utc.astimezone(exp.tz).replace(tzinfo=None)
        else:
            local = dt.datetime.strptime(m.group(1), "%Y%m%d")
            if not exp.all_day:
                return None
    except ValueError:
        return None
    if exp.all_day != (m.group(2) is None):
        return None
    if local not in exp.occurrences(until_local=local):
        return None
    return series, exp, local


def materialize(ctx, cal, series_entry, exp, local):
    """Turn an instance into an exception event present in every calendar holding the series."""
    state = ctx.state
    series = series_entry.core
    inst_id = instance_id(series, exp, local)
    start, end, original = instance_times(series, exp, local)
    exc = Core(inst_id, series.organizer, series.creator, series.created)
    exc.ical_uid = series.ical_uid
    exc.fields = copy.deepcopy({k: v for k, v in series.fields.items() if k != "recurrence"})
    exc.start, exc.end, exc.original_start = start, end, original
    exc.shared_props = dict(series.shared_props)
    exc.sequence = series.sequence
    exc.status = series.status
    exc.recurring_event_id = series.id
    exc.event_type = getattr(series, "event_type", "default")
    series.exceptions[inst_id] = exc
    for other in state.calendars.values():
        s_entry = other.entries.get(series.id)
        if s_entry is not None and s_entry.core is series and inst_id not in other.entries:
            e = Entry(other.id, exc)
            e.private_props = dict(s_entry.private_props)
            e.reminders = copy.deepcopy(s_entry.reminders)
            e.removed = s_entry.removed
            e.updated = s_entry.updated
            e.etag = s_entry.etag
            other.entries[inst_id] = e
    return cal.entries[inst_id]


# ---------------------------------------------------------------------------------------------
# Normalizing request bodies
# ---------------------------------------------------------------------------------------------

def _string_map(value, what):
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid(f"Invalid {what}.")
    return dict(value)


def normalize_attendees(value, organizer, previous=()):
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("Invalid attendees.")
    out, seen = [], set()
    for raw in value:
        if not isinstance(raw, dict) or not isinstance(raw.get("email"), str) or "@" not in raw["email"]:
            raise invalid("Invalid attendee email.")
        item = {k: raw[k] for k in ATTENDEE_KEYS if k in raw and raw[k] is not None}
        item["email"] = item["email"].strip().lower()
        if item["email"] in seen:
            continue
        seen.add(item["email"])
        status = item.get("responseStatus")
        if status is None:
            # A guest's answer is kept when the organizer rewrites the list without it.
            known = next((a.get("responseStatus") for a in previous if a["email"] == item["email"]), None)
            item["responseStatus"] = known or ("accepted" if item["email"] == organizer else "needsAction")
        elif status not in RESPONSE_STATUSES:
            raise invalid("Invalid attendee response status.")
        out.append(item)
    return out


class Proposal:
    """A validated event body: what a write would set."""

    def __init__(self):
        self.fields = {}
        self.start = None
        self.end = None
        self.status = "confirmed"
        self.shared_props = {}
        self.private_props = {}
        self.reminders = None
        self.sequence = None
        self.event_type = "default"


def normalize(body, cal_tz, organizer, previous_attendees=(), params=None, previous=None):
    if not isinstance(body, dict):
        raise invalid("Invalid resource.")
    p = Proposal()
    _normalize_simple_fields(body, p)
    status = body.get("status")
    if status is not None:
        if status not in ENUMS["status"]:
            raise invalid("Invalid status value.")
        p.status = status
    _normalize_times(body, p, cal_tz)
    attendees = normalize_attendees(body.get("attendees"), organizer, previous_attendees)
    if attendees:
        p.fields["attendees"] = attendees
    ext = body.get("extendedProperties")
    if ext is not None:
        if not isinstance(ext, dict):
            raise invalid("Invalid extendedProperties.")
        p.private_props = _string_map(ext.get("private"), "private extended property")
        p.shared_props = _string_map(ext.get("shared"), "shared extended property")
    p.reminders = _normalize_reminders(body.get("reminders"))
    seq = body.get("sequence")
    if seq is not None:
        if not isinstance(seq, int) or seq < 0:
            raise invalid("Invalid sequence value.")
        p.sequence = seq
    _normalize_kept_fields(body, p, params or {}, previous)
    return p


def _normalize_simple_fields(body, p):
    """The strings, booleans and enums, and the source; an enum's default value is not stored."""
    for key in SHARED_SIMPLE:
        value = body.get(key)
        if value is None:
            continue
        if key in BOOL_FIELDS:
            if not isinstance(value, bool):
                raise invalid(f"Invalid value for: {key}")
        elif not isinstance(value, str):
            raise invalid(f"Invalid value for: {key}")
        if key in ENUMS and value not in ENUMS[key]:
            raise invalid(f"Invalid {key} value.")
        if key == "visibility" and value == "default":
            continue
        if key == "transparency" and value == "opaque":
            continue
        p.fields[key] = value
    if body.get("source") is not None:
        if not isinstance(body["source"], dict):
            raise invalid("Invalid value for: source")
        p.fields["source"] = {k: str(body["source"][k]) for k in ("url", "title") if k in body["source"]}


def _normalize_times(body, p, cal_tz):
    """Start, end and recurrence: a recurring event's start needs a time zone for its occurrences."""
    p.start = parse_when(body.get("start"), "start", cal_tz)
    p.end = parse_when(body.get("end"), "end", cal_tz)
    if p.start.all_day != p.end.all_day:
        raise invalid("Invalid end time.")
    if p.end.utc_start() < p.start.utc_start() or (p.start.all_day and p.end.date <= p.start.date):
        raise ApiError(400, "timeRangeEmpty")
    rec = body.get("recurrence")
    if rec:
        recurrence.validate(rec)
        if not p.start.all_day and not p.start.tz_name:
            raise ApiError(400, "required", "Missing time zone definition for start time.")
        p.fields["recurrence"] = list(rec)


def _normalize_reminders(rem):
    """The reminders to store: None keeps the calendar's default ones."""
    if rem is not None and not isinstance(rem, dict):
        raise invalid("Invalid reminders.")
    if rem and rem.get("overrides"):
        # calendar.v3.json, Event.reminders.overrides: "The maximum number of override reminders is 5."
        if rem.get("useDefault") is not False:
            raise ApiError(400, "cannotUseDefaultRemindersAndSpecifyOverride",
                           "Cannot specify both default reminders and overrides at the same time.")
        if not isinstance(rem["overrides"], list) or len(rem["overrides"]) > 5:
            raise ApiError(400, "tooManyReminders", "The maximum number of override reminders is 5.")
    if not isinstance(rem, dict) or rem.get("useDefault") is not False:
        return None
    overrides = []
    for o in rem.get("overrides") or []:
        if not isinstance(o, dict) or o.get("method") not in ("email", "popup"):
            raise invalid("Invalid reminder method.")
        minutes = o.get("minutes", 10)
        if not isinstance(minutes, int) or isinstance(minutes, bool) or not 0 <= minutes <= 40320:
            raise invalid("Invalid reminder minutes.")
        overrides.append({"method": o["method"], "minutes": minutes})
    return {"useDefault": False, "overrides": overrides} if overrides else {"useDefault": False}


def _normalize_kept_fields(body, p, params, previous):
    """Event type and its properties, and the fields a client that does not know them must not lose."""
    event_type = body.get("eventType") or "default"
    if event_type not in EVENT_TYPES:
        raise invalid("Invalid event type.", location="eventType")
    p.event_type = event_type
    for etype, prop in TYPE_PROPERTIES.items():
        value = body.get(prop)
        if value is None:
            continue
        if etype != event_type or not isinstance(value, dict):
            raise invalid(f"Invalid {prop}: only events of type {etype} have them.", location=prop)
        p.fields[prop] = copy.deepcopy(value)
    for key in ("endTimeUnspecified", "privateCopy"):
        value = body.get(key)
        if value is None and previous is not None and key == "privateCopy":
            value = previous.fields.get(key)  # "Immutable"
        if value is None:
            continue
        if not isinstance(value, bool):
            raise invalid(f"Invalid value for: {key}")
        if value:
            p.fields[key] = True
    if previous is not None and previous.fields.get("locked"):
        p.fields["locked"] = True
    # Event.conferenceData: "To persist your changes, remember to set the conferenceDataVersion request
    # parameter to 1 for all event modification requests"; version 0 ignores the body's conference data.
    if str(params.get("conferenceDataVersion") or "0") == "1":
        data = body.get("conferenceData")
        if data is not None:
            if not isinstance(data, dict):
                raise invalid("Invalid conference data.")
            p.fields["conferenceData"] = _conference(data)
    elif previous is not None and previous.fields.get("conferenceData"):
        p.fields["conferenceData"] = copy.deepcopy(previous.fields["conferenceData"])
    # Event.attachments: "In order to modify attachments the supportsAttachments request parameter should be
    # set to true. There can be at most 25 attachments per event".
    if params.get("supportsAttachments") == "true":
        items = body.get("attachments")
        if items is not None:
            if not isinstance(items, list) or len(items) > MAX_ATTACHMENTS or not all(
                    isinstance(a, dict) and isinstance(a.get("fileUrl"), str) for a in items):
                raise invalid("Invalid attachments: at most 25, each with a fileUrl.", location="attachments")
            if items:
                p.fields["attachments"] = [{k: a[k] for k in ("fileUrl", "title", "mimeType", "iconLink", "fileId")
                                            if isinstance(a.get(k), str)} for a in items]
    elif previous is not None and previous.fields.get("attachments"):
        p.fields["attachments"] = copy.deepcopy(previous.fields["attachments"])


def _conference(data):
    """Conference data as Google stores it: a createRequest for Meet is answered with a new conference."""
    data = copy.deepcopy(data)
    request = data.get("createRequest")
    if isinstance(request, dict) and not data.get("conferenceId"):
        code = "-".join("".join(secrets.choice("abcdefghijkmnopqrstuvwxyz") for _ in range(n)) for n in (3, 4, 3))
        request["status"] = {"statusCode": "success"}
        data.update({
            "conferenceId": code,
            "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet",
                                   "iconUri": "https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/"
                                              "logo_meet_2020q4_color_2x_web_512dp.png"},
            "entryPoints": [{"entryPointType": "video", "uri": f"https://meet.google.com/{code}",
                             "label": f"meet.google.com/{code}"}],
        })
    return data


def check_type_rules(p, before=None, before_view=None, after_view=None, trusted=False):
    """The write rules of event types and locked copies; `before` is the core being changed (None: insert)."""
    if before is None:
        if p.event_type == "fromGmail" and not trusted:
            raise invalid("Events of type fromGmail cannot be created.", location="eventType")
        if p.event_type == "birthday":
            days = (p.end.date - p.start.date).days if p.start.all_day else 0
            yearly = p.fields.get("recurrence") in (["RRULE:FREQ=YEARLY"], ["RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=-1"])
            if (days != 1 or not yearly or p.fields.get("visibility") != "private"
                    or p.fields.get("transparency") != "transparent"):
                raise invalid("A birthday is a one-day all-day event, private, transparent, recurring yearly.",
                              location="eventType")
            extra = set(p.fields) - {"summary", "colorId", "recurrence", "visibility", "transparency",
                                     "birthdayProperties"}
            if extra:
                raise invalid(f"A birthday event cannot have {', '.join(sorted(extra))}.", location="eventType")
        if p.event_type in ("outOfOffice", "focusTime") and p.start.all_day:
            raise invalid(f"An event of type {p.event_type} cannot be all-day.", location="eventType")
        if p.event_type == "workingLocation" and not p.fields.get("workingLocationProperties"):
            raise ApiError(400, "required", "Missing workingLocationProperties.")
        return
    before_type = getattr(before, "event_type", "default")
    if p.event_type != before_type:
        raise invalid("The event type cannot be changed.", location="eventType")
    changed = {k for k in set(before_view) | set(after_view) if before_view.get(k) != after_view.get(k)}
    if before_type in TYPE_EDITABLE and changed - TYPE_EDITABLE[before_type]:
        raise ApiError(400, "invalid", f"Events of type {before_type} only allow changes to "
                                       f"{', '.join(sorted(TYPE_EDITABLE[before_type]))}; "
                                       f"not {', '.join(sorted(changed - TYPE_EDITABLE[before_type]))}.")
    if before.fields.get("locked") and changed & set(LOCKED_FIELDS):
        raise ApiError(403, "forbidden", "This event is a locked copy: its "
                                         f"{', '.join(sorted(changed & set(LOCKED_FIELDS)))} cannot be changed.")


def write_view(fields, start, end, status, shared_props, private_props, reminders):
    """What a write may change, by field name, for the event type rules."""
    view = {k: json.dumps(v, sort_keys=True) for k, v in fields.items() if k not in ("attendees",)}
    view["attendees"] = json.dumps(fields.get("attendees") or [], sort_keys=True)
    view["start"], view["end"], view["status"] = str(_when_key(start)), str(_when_key(end)), status
    view["extendedProperties"] = json.dumps([shared_props, private_props], sort_keys=True)
    view["reminders"] = json.dumps(reminders, sort_keys=True)
    return view


def merge_patch(target, patch):
    """Google's patch semantics: objects merge recursively, arrays and scalars replace, null clears.

    "When patching, ... all nested fields of a patched object are merged" (Calendar API guide,
    "Performance tips: Patch semantics"): so `start: {"date": ...}` on a timed event keeps its `dateTime`
    (and is then refused as a start with both), `start.dateTime` alone keeps the old `timeZone`, and
    `reminders: {"useDefault": true}` on an event with overrides keeps the overrides (refused). A field
    set to JSON null is removed. Only `update` replaces objects whole."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _when_key(w):
    return (w.date, w.instant, w.tz_name)


def _shared_view(fields, start, end, status, shared_props, mask_email):
    fields = copy.deepcopy(fields)
    for a in fields.get("attendees", []):
        if a["email"] == mask_email:
            for k in OWN_ATTENDEE_KEYS:
                a.pop(k, None)
    return (json.dumps(fields, sort_keys=True), _when_key(start), _when_key(end), status,
            json.dumps(shared_props, sort_keys=True))


# ---------------------------------------------------------------------------------------------
# Attendee copies
# ---------------------------------------------------------------------------------------------

def entries_of(state, core):
    for cal in state.calendars.values():
        e = cal.entries.get(core.id)
        if e is not None and e.core is core:
            yield e


def propagate(ctx, core, touch_existing=True):
    """Make attendee copies match the attendee list; touch every copy of the event."""
    state = ctx.state
    wanted = {a["email"] for a in core.attendees if a["email"] in state.users} - {core.organizer}
    if core.status == "cancelled":
        wanted = set()
    existing = {e.cal_id: e for e in entries_of(state, core)}
    for email in wanted:
        cal = state.calendars[email]
        entry = existing.get(email)
        if entry is None:
            if core.id in cal.entries:  # an unrelated event with the same id: leave it alone
                continue
            entry = Entry(email, core)
            cal.entries[core.id] = entry
            state.touch(entry, ctx.now, ctx.dirty)
            existing[email] = entry
        elif entry.removed and not _declined(core, email):
            entry.removed = False
            state.touch(entry, ctx.now, ctx.dirty)
        elif touch_existing:
            state.touch(entry, ctx.now, ctx.dirty)
    for cal_id, entry in existing.items():
        if cal_id in wanted:
            continue
        if cal_id == core.organizer:
            if touch_existing:
                state.touch(entry, ctx.now, ctx.dirty)
            continue
        if not entry.removed:
            entry.removed = True
            state.touch(entry, ctx.now, ctx.dirty)
        elif touch_existing and core.status == "cancelled":
            state.touch(entry, ctx.now, ctx.dirty)
    for exc in core.exceptions.values():
        propagate(ctx, exc, touch_existing=False)


def _declined(core, email):
    return any(a["email"] == email and a.get("responseStatus") == "declined" for a in core.attendees)


def count_emails(ctx, core, params, extra_recipients=()):
    send = params.get("sendUpdates")
    if send is None and params.get("sendNotifications") == "true":
        send = "all"
    if send not in ("all", "externalOnly"):
        return
    recipients = {a["email"] for a in core.attendees} | set(extra_recipients)
    recipients.discard(ctx.actor)
    if send == "externalOnly":
        recipients = {r for r in recipients if r not in ctx.state.users}
    ctx.state.emails_sent += len(recipients)


# ---------------------------------------------------------------------------------------------
# Event methods
# ---------------------------------------------------------------------------------------------

def check_if_match(headers, etag):
    wanted = headers.get("If-Match")
    if wanted and wanted.strip() != "*" and wanted.strip() != etag:
        raise ApiError(412, "conditionNotMet")


def calendars_get(ctx, calendar_id):
    require_scope(ctx, False)
    cal = resolve_calendar(ctx, calendar_id)
    return 200, {
        "kind": "calendar#calendar",
        "etag": f'"{1000 + len(cal.id)}"',
        "id": cal.id,
        "summary": cal.id,
        "timeZone": cal.time_zone,
        "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
    }


def events_insert(ctx, calendar_id, params, body, trusted=False):
    """`trusted`: the control API seeding what only Google makes (Gmail events, locked copies)."""
    require_scope(ctx, True)
    cal = resolve_calendar(ctx, calendar_id)
    if not isinstance(body, dict):
        raise invalid("Invalid resource.")
    event_id = body.get("id")
    if event_id is not None:
        if not isinstance(event_id, str) or not ID_RE.match(event_id):
            raise invalid("Invalid resource id value.")
        if event_id in cal.entries:
            raise ApiError(409, "duplicate")
    else:
        event_id = new_event_id(ctx.state)
    p = normalize(body, cal.time_zone, cal.id, params=params)
    check_type_rules(p, trusted=trusted)
    if trusted and body.get("locked") is True:
        p.fields["locked"] = True
    core = Core(event_id, cal.id, ctx.actor, ctx.now)
    if isinstance(body.get("iCalUID"), str) and body["iCalUID"]:
        core.ical_uid = body["iCalUID"]
    apply_proposal(core, p)
    if p.sequence is not None:
        core.sequence = p.sequence
    entry = Entry(cal.id, core)
    entry.private_props = p.private_props
    entry.reminders = p.reminders
    cal.entries[event_id] = entry
    ctx.state.touch(entry, ctx.now, ctx.dirty)
    propagate(ctx, core, touch_existing=False)
    count_emails(ctx, core, params)
    return 200, render(ctx.state, entry)


def apply_proposal(core, p):
    core.event_type = p.event_type
    core.fields = p.fields
    core.start, core.end = p.start, p.end
    core.status = p.status
    core.shared_props = p.shared_props


def lookup(cal, event_id):
    """The entry for an id, materializing nothing; or (series, exp, local) for a virtual instance."""
    entry = cal.entries.get(event_id)
    if entry is not None:
        return entry, None
    virtual = parse_instance_id(cal, event_id)
    if virtual is None:
        raise not_found()
    return None, virtual


def events_get(ctx, calendar_id, event_id, params, headers):
    require_scope(ctx, False)
    cal = resolve_calendar(ctx, calendar_id)
    entry, virtual = lookup(cal, event_id)
    if entry is not None:
        return 200, render(ctx.state, entry)
    series, exp, local = virtual
    return 200, render_instance(ctx.state, series, exp, local)


def events_modify(ctx, calendar_id, event_id, params, body, headers, patch):
    require_scope(ctx, True)
    cal = resolve_calendar(ctx, calendar_id)
    if not isinstance(body, dict):
        raise invalid("Invalid resource.")
    entry, virtual = lookup(cal, event_id)
    if entry is None:
        series, exp, local = virtual
        check_if_match(headers, series.etag)
        if series.cancelled:
            raise ApiError(410, "deleted")
        current = render_instance(ctx.state, series, exp, local)
    else:
        check_if_match(headers, entry.etag)
        if entry.cancelled and body.get("status") not in ("confirmed", "tentative"):
            raise ApiError(410, "deleted")
        current = render(ctx.state, entry)
    core_before = entry.core if entry is not None else series.core
    merged = merge_patch(copy.deepcopy(current), body) if patch else copy.deepcopy(body)
    organizer = core_before.organizer
    p = normalize(merged, cal.time_zone, organizer, core_before.attendees if entry is not None else
                  series.core.attendees, params=params, previous=core_before)
    if entry is not None:
        before_view = write_view(core_before.fields, core_before.start, core_before.end, core_before.status,
                                 core_before.shared_props, entry.private_props, entry.reminders)
    else:
        start, end, _ = instance_times(series.core, exp, local)
        before_view = write_view({k: v for k, v in series.core.fields.items() if k != "recurrence"}, start, end,
                                 series.core.status, series.core.shared_props, series.private_props,
                                 series.reminders)
    check_type_rules(p, core_before, before_view, write_view(p.fields, p.start, p.end, p.status, p.shared_props,
                                                             p.private_props, p.reminders))
    if (entry is None or entry.core.recurring_event_id) and "recurrence" in p.fields:
        raise invalid("Invalid recurrence rule.")
    # Event.guestsCanModify: "Whether attendees other than the organizer can modify the event."
    is_organizer = cal.id == organizer or bool(core_before.fields.get("guestsCanModify")) and any(
        a["email"] == cal.id for a in core_before.attendees)
    if entry is None:
        # Checked before the instance becomes an exception, so a refused change leaves no trace.
        if not is_organizer:
            fields = {k: v for k, v in series.core.fields.items() if k != "recurrence"}
            start, end, _ = instance_times(series.core, exp, local)
            _check_attendee_change(cal, fields, start, end, series.core, p)
        entry = materialize(ctx, cal, series, exp, local)
    elif not is_organizer:
        _check_attendee_change(cal, entry.core.fields, entry.core.start, entry.core.end, entry.core, p)
    core = entry.core
    if not is_organizer:
        _apply_attendee_change(ctx, entry, p)
        count_emails(ctx, core, params)
        return 200, render(ctx.state, entry)
    if p.sequence is not None and p.sequence < core.sequence:
        raise invalid("Invalid sequence value. The specified sequence number is below the current "
                      "sequence number of the resource.")
    old_attendees = {a["email"] for a in core.attendees}
    old_expansion = expansion(core) if core.fields.get("recurrence") and core.exceptions else None
    old_start, old_end = core.start, core.end
    significant = (_when_key(p.start) != _when_key(core.start) or _when_key(p.end) != _when_key(core.end)
                   or p.fields.get("recurrence") != core.fields.get("recurrence")
                   or p.fields.get("location") != core.fields.get("location"))
    apply_proposal(core, p)
    if old_expansion is not None and p.fields.get("recurrence"):
        reanchor(ctx, core, old_expansion, old_start, old_end)
    # A changed occurrence keeps what it overrides and takes the rest from its series: a guest added to or
    # removed from the series is added to or removed from occurrences whose guests were not changed alone.
    if {a["email"] for a in core.attendees} != old_attendees:
        for exc in core.exceptions.values():
            if {a["email"] for a in exc.attendees} == old_attendees:
                exc.fields["attendees"] = copy.deepcopy(core.attendees)
                propagate(ctx, exc)
    if significant:
        core.sequence += 1
    if p.sequence is not None and p.sequence > core.sequence:
        core.sequence = p.sequence
    entry.private_props = p.private_props
    entry.reminders = p.reminders
    if core.status == "cancelled":
        for exc in core.exceptions.values():
            exc.status = "cancelled"
    propagate(ctx, core)
    count_emails(ctx, core, params, old_attendees)
    return 200, render(ctx.state, entry)


def reanchor(ctx, core, old, old_start, old_end):
    """A series whose start moved takes its changed and cancelled occurrences along (Google re-anchors the
    instances on the new start): each exception moves by as much as the series did and gets the id of the
    occurrence it now replaces; an occurrence it only retitled follows the new time, one it moved keeps its
    time. The old ids read as cancelled, so a client that synced them lets them go; exceptions that no
    longer fall on an occurrence of the new rule are cancelled with them."""
    new = expansion(core)
    shift = new.local_start - old.local_start
    for old_id, exc in list(core.exceptions.items()):
        if old.all_day:
            old_local = dt.datetime.combine(exc.original_start.date, dt.time())
            by_rule = (When(date=old_local.date()), When(date=old_local.date() + (old_end.date - old_start.date)))
        else:
            old_local = exc.original_start.instant.astimezone(old.tz).replace(tzinfo=None)
            begin = old.to_utc(old_local)
            by_rule = (When(instant=begin), When(instant=begin + (old_end.instant - old_start.instant)))
        new_local = old_local + shift
        new_id = instance_id(core, new, new_local)
        if new_id == old_id:
            continue
        entries = list(entries_of(ctx.state, exc))
        if new_local in new.occurrences(until_local=new_local) and new_id not in core.exceptions:
            moved = Core(new_id, exc.organizer, exc.creator, exc.created)
            moved.ical_uid, moved.fields = exc.ical_uid, copy.deepcopy(exc.fields)
            moved.shared_props, moved.sequence, moved.status = dict(exc.shared_props), exc.sequence + 1, exc.status
            moved.recurring_event_id, moved.event_type = core.id, getattr(exc, "event_type", "default")
            start, end, original = instance_times(core, new, new_local)
            own_time = (exc.start.utc_start(), exc.end.utc_start()) != (by_rule[0].utc_start(), by_rule[1].utc_start())
            moved.start, moved.end = (exc.start, exc.end) if own_time else (start, end)
            moved.original_start = original
            core.exceptions[new_id] = moved
            for e in entries:
                twin = Entry(e.cal_id, moved)
                twin.private_props, twin.reminders = dict(e.private_props), copy.deepcopy(e.reminders)
                twin.removed = e.removed
                ctx.state.calendars[e.cal_id].entries[new_id] = twin
                ctx.state.touch(twin, ctx.now, ctx.dirty)
        if old_local in new.occurrences(until_local=old_local):
            # The old id names an occurrence of the new rule too: it is that plain occurrence again.
            exc.fields = copy.deepcopy({k: v for k, v in core.fields.items() if k != "recurrence"})
            exc.start, exc.end, exc.original_start = instance_times(core, new, old_local)
            exc.status = core.status
        else:
            exc.status = "cancelled"
            del core.exceptions[old_id]
        for e in entries:
            ctx.state.touch(e, ctx.now, ctx.dirty)


def _check_attendee_change(cal, fields, start, end, core, p):
    """An attendee may only change their own response and their copy's private properties."""
    before = _shared_view(fields, start, end, core.status, core.shared_props, cal.id)
    after = _shared_view(p.fields, p.start, p.end, p.status, p.shared_props, cal.id)
    if before != after:
        raise ApiError(403, "forbiddenForNonOrganizer")


def _apply_attendee_change(ctx, entry, p):
    core = entry.core
    mine_new = next((a for a in p.fields.get("attendees", []) if a["email"] == entry.cal_id), None)
    mine_old = next((a for a in core.attendees if a["email"] == entry.cal_id), None)
    shared_changed = False
    if mine_new is not None and mine_old is not None:
        for k in OWN_ATTENDEE_KEYS:
            if mine_new.get(k) != mine_old.get(k):
                shared_changed = True
                if k in mine_new:
                    mine_old[k] = mine_new[k]
                else:
                    mine_old.pop(k, None)
    entry.private_props = p.private_props
    entry.reminders = p.reminders
    if shared_changed:
        for e in entries_of(ctx.state, core):
            ctx.state.touch(e, ctx.now, ctx.dirty)
    else:
        ctx.state.touch(entry, ctx.now, ctx.dirty)


def events_delete(ctx, calendar_id, event_id, params, headers):
    require_scope(ctx, True)
    cal = resolve_calendar(ctx, calendar_id)
    entry, virtual = lookup(cal, event_id)
    if entry is None:
        series, exp, local = virtual
        check_if_match(headers, series.etag)
        if series.cancelled:
            raise ApiError(410, "deleted")
        entry = materialize(ctx, cal, series, exp, local)
    else:
        check_if_match(headers, entry.etag)
        if entry.cancelled:
            raise ApiError(410, "deleted")
    core = entry.core
    if cal.id == core.organizer:
        core.status = "cancelled"
        for exc in core.exceptions.values():
            exc.status = "cancelled"
        for e in entries_of(ctx.state, core):
            ctx.state.touch(e, ctx.now, ctx.dirty)
        for exc in core.exceptions.values():
            for e in entries_of(ctx.state, exc):
                ctx.state.touch(e, ctx.now, ctx.dirty)
        count_emails(ctx, core, params)
    else:
        # An attendee deleting their copy declines the event and removes it from their calendar.
        for a in core.attendees:
            if a["email"] == cal.id:
                a["responseStatus"] = "declined"
        entry.removed = True
        for e in entries_of(ctx.state, core):
            ctx.state.touch(e, ctx.now, ctx.dirty)
    return 204, None


# ---------------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------------

def _bool(params, name):
    value = params.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise invalid(location=name)
    return value == "true"


def _max_results(params):
    raw = params.get("maxResults")
    if raw is None:
        return DEFAULT_MAX_RESULTS
    try:
        value = int(raw)
    except ValueError:
        raise invalid(location="maxResults") from None
    if value < 1:
        raise invalid(location="maxResults")
    return min(value, MAX_MAX_RESULTS)


def _prop_filters(params, name):
    result = []
    for raw in params.getlist(name) if hasattr(params, "getlist") else []:
        if "=" not in raw:
            raise invalid(location=name)
        result.append(tuple(raw.split("=", 1)))
    return result


def _fingerprint(params):
    items = sorted((k, v) for k in params for v in params.getlist(k) if k not in ("pageToken", "syncToken"))
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()[:10]


def make_sync_token(cal, seq):
    return b64({"c": cal.id, "s": seq, "e": cal.sync_epoch})


def _read_sync_token(cal, token):
    try:
        data = unb64(token)
        seq, epoch, cal_id = int(data["s"]), int(data["e"]), data["c"]
    except Exception:  # noqa: BLE001 - any garbage is an invalid token
        raise invalid("Invalid sync token value.", location="syncToken") from None
    if cal_id != cal.id or epoch != cal.sync_epoch or seq > cal.seq:
        raise ApiError(410, "fullSyncRequired")
    return seq


def _list_envelope(cal, now):
    return {
        "kind": "calendar#events",
        "etag": f'"{cal.seq + 1}"',
        "summary": cal.id,
        "description": "",
        "updated": fmt_updated(cal.updated or now),
        "timeZone": cal.time_zone,
        "accessRole": "owner",
        "defaultReminders": [{"method": "popup", "minutes": 10}],
    }


def _text_match(core, q):
    q = q.lower()
    hay = " ".join(str(core.fields.get(k, "")) for k in ("summary", "description", "location"))
    hay += " " + " ".join(a["email"] for a in core.attendees)
    return all(word in hay.lower() for word in q.split())


def _overlaps(start, end, time_min, time_max):
    s, e = start.utc_start(), end.utc_start()
    if time_max is not None and s >= time_max:
        return False
    if time_min is not None and e <= time_min and not (s == e and s >= time_min):
        return False
    return True


@dataclasses.dataclass
class _ListQuery:
    """The checked parameters of an events.list request, with where its page starts."""

    max_results: int
    single: bool
    show_deleted: bool
    order_by: str | None
    since: int | None  # a sync: only entries changed after this sequence number
    snap: int  # the calendar's sequence number when the first page was read
    after_key: list | None  # the sort key of the previous page's last row
    time_min: dt.datetime | None
    time_max: dt.datetime | None
    updated_min: dt.datetime | None
    private_f: list
    shared_f: list
    q: str | None
    ical_uid: str | None
    event_types: set


def events_list(ctx, calendar_id, params):
    require_scope(ctx, False)
    cal = resolve_calendar(ctx, calendar_id)
    query = _list_query(cal, params)
    rows = []  # (sort key, item)
    for entry in list(cal.entries.values()):
        if _listed(cal, entry, query):
            rows.extend(_list_rows(ctx, cal, entry, query))
    return 200, _list_page(ctx, cal, params, query, rows)


def _list_query(cal, params):
    max_results = _max_results(params)
    single = _bool(params, "singleEvents")
    show_deleted = _bool(params, "showDeleted")
    order_by = params.get("orderBy")
    if order_by not in (None, "startTime", "updated"):
        raise invalid(location="orderBy")
    if order_by == "startTime" and not single:
        raise invalid("The requested ordering is not available for the particular query.", location="orderBy")
    after_key, snap, since = _page_start(cal, params.get("pageToken"))
    sync_token = params.get("syncToken")
    if sync_token:
        token_since = _sync_start(cal, sync_token, params)
        if since is None:
            since = token_since

    time_min = parse_query_time(params["timeMin"], "timeMin") if params.get("timeMin") else None
    time_max = parse_query_time(params["timeMax"], "timeMax") if params.get("timeMax") else None
    if time_min and time_max and time_max <= time_min:
        raise ApiError(400, "timeRangeEmpty")
    updated_min = parse_query_time(params["updatedMin"], "updatedMin") if params.get("updatedMin") else None
    private_f = _prop_filters(params, "privateExtendedProperty")
    shared_f = _prop_filters(params, "sharedExtendedProperty")
    q = params.get("q")
    ical_uid = params.get("iCalUID")
    event_types = set(params.getlist("eventTypes")) if hasattr(params, "getlist") else set()
    if event_types - set(EVENT_TYPES):
        raise invalid("Invalid event type.", location="eventTypes")
    return _ListQuery(max_results=max_results, single=single, show_deleted=show_deleted, order_by=order_by,
                      since=since, snap=snap, after_key=after_key, time_min=time_min, time_max=time_max,
                      updated_min=updated_min, private_f=private_f, shared_f=shared_f, q=q, ical_uid=ical_uid,
                      event_types=event_types)


def _page_start(cal, page_token):
    """(after_key, snap, since): where the page token says the listing goes on; a first page lists the
    calendar as it is now."""
    if not page_token:
        return None, cal.seq, None
    try:
        pt = unb64(page_token)
        after_key, snap, since = pt["k"], int(pt["s"]), pt.get("since")
        if pt.get("e") != cal.sync_epoch and since is not None:
            raise ApiError(410, "fullSyncRequired")
    except ApiError:
        raise
    except Exception:  # noqa: BLE001
        raise invalid("Invalid page token.", location="pageToken") from None
    return after_key, snap, since


def _sync_start(cal, sync_token, params):
    for name in SYNC_FORBIDDEN:
        if params.get(name) is not None:
            raise invalid(f"Sync token cannot be combined with the {name} parameter.", location=name)
    # calendar.v3.json, events.list syncToken: "All events deleted since the previous list request will
    # always be in the result set and it is not allowed to set showDeleted to False."
    if params.get("showDeleted") == "false":
        raise invalid("Sync token cannot be combined with showDeleted=false.", location="showDeleted")
    return _read_sync_token(cal, sync_token)


def _listed(cal, entry, query):
    """Whether the request's filters keep an entry; a sync keeps whatever changed since."""
    core = entry.core
    if query.event_types and getattr(core, "event_type", "default") not in query.event_types:
        return False
    if query.since is not None:
        return entry.seq > query.since
    deleted_visible = query.show_deleted or (query.updated_min is not None)
    # calendar.v3.json, events.list showDeleted: "Cancelled instances of recurring events (but not
    # the underlying recurring event) will still be included if showDeleted and singleEvents are
    # both False."
    cancelled_instance = (core.recurring_event_id is not None and not query.single
                          and not _series_cancelled(cal, core))
    if entry.cancelled and not deleted_visible and not cancelled_instance:
        return False
    if query.updated_min is not None and entry.updated < query.updated_min:
        return False
    if query.ical_uid and core.ical_uid != query.ical_uid:
        return False
    if query.q and not _text_match(core, query.q):
        return False
    if any(entry.private_props.get(k) != v for k, v in query.private_f):
        return False
    return not any(core.shared_props.get(k) != v for k, v in query.shared_f)


def _list_rows(ctx, cal, entry, query):
    """The rows (sort key, item) of a kept entry: the entry, or with singleEvents a series' occurrences; none
    when it is outside the time range."""
    core, since = entry.core, query.since
    recurring = bool(core.fields.get("recurrence"))
    if entry.cancelled:
        if since is None and not recurring and not _overlaps(core.start, core.end, query.time_min,
                                                             query.time_max):
            return []
        return [((f"{entry.seq:012d}" if since is not None else _start_key(core.start, entry), core.id),
                 render_cancelled(ctx.state, entry))]
    if recurring and query.single:
        return _occurrence_rows(ctx, cal, entry, query)
    if recurring:
        if since is None and (query.time_min or query.time_max):
            exp = expansion(core)
            if not occurrence_locals(core, exp, query.time_min, query.time_max, ctx.now):
                return []
    elif since is None and not _overlaps(core.start, core.end, query.time_min, query.time_max):
        return []
    if query.single and core.recurring_event_id and since is None and core.status == "cancelled":
        return []
    return [(_row_key(since, query.order_by, entry, core.start, core.id), render(ctx.state, entry))]


def _occurrence_rows(ctx, cal, entry, query):
    core = entry.core
    exp = expansion(core)
    rows = []
    for local in occurrence_locals(core, exp, query.time_min, query.time_max, ctx.now):
        inst_id = instance_id(core, exp, local)
        if inst_id in cal.entries:
            continue  # exceptions are listed as their own entries
        item = render_instance(ctx.state, entry, exp, local)
        start = instance_times(core, exp, local)[0]
        key = _row_key(query.since, query.order_by, entry, start, inst_id)
        rows.append((key, item))
    return rows


def _list_page(ctx, cal, params, query, rows):
    """The response body: the page of the sorted rows, and the token for the next page or the next sync."""
    rows.sort(key=lambda r: r[0])
    after_key = query.after_key
    if after_key is not None:
        after = tuple(after_key)
        rows = [r for r in rows if r[0] > after]
    limit = _page_limit(ctx, query.max_results, len(rows))
    page = rows[:limit]
    body = _list_envelope(cal, ctx.now)
    body["items"] = [item for _, item in page]
    if len(rows) > limit:
        last = list(page[-1][0]) if page else (list(after_key) if after_key is not None else None)
        body["nextPageToken"] = b64({"k": last, "s": query.snap, "since": query.since, "e": cal.sync_epoch,
                                     "f": _fingerprint(params)})
    else:
        body["nextSyncToken"] = make_sync_token(cal, query.snap)
    return body


def _series_cancelled(cal, core):
    series = cal.entries.get(core.recurring_event_id)
    return series is None or series.cancelled


def _page_limit(ctx, max_results, available):
    """Page size: `maxResults`, or (a short-page fault) fewer, even none, though more would match."""
    if ctx.short_page is None or not available:
        return max_results
    return min(max_results, int(min(max_results, available) * ctx.short_page))


def _start_key(when, entry):
    return when.utc_start().strftime("%Y%m%dT%H%M%S")


def _row_key(since, order_by, entry, start, item_id):
    if since is not None:
        return (f"{entry.seq:012d}", start.utc_start().strftime("%Y%m%dT%H%M%S"), item_id)
    if order_by == "updated":
        return (fmt_updated(entry.updated), item_id)
    return (start.utc_start().strftime("%Y%m%dT%H%M%S"), item_id)


def events_instances(ctx, calendar_id, event_id, params):
    require_scope(ctx, False)
    cal = resolve_calendar(ctx, calendar_id)
    entry = cal.entries.get(event_id)
    if entry is None:
        raise not_found()
    core = entry.core
    if not core.fields.get("recurrence"):
        # A single event's only instance is itself.
        body = _list_envelope(cal, ctx.now)
        body["items"] = [render(ctx.state, entry)] if not entry.cancelled else []
        return 200, body
    if entry.cancelled:
        raise ApiError(410, "deleted")
    max_results = _max_results(params)
    show_deleted = _bool(params, "showDeleted")
    time_min = parse_query_time(params["timeMin"], "timeMin") if params.get("timeMin") else None
    time_max = parse_query_time(params["timeMax"], "timeMax") if params.get("timeMax") else None
    original_start = params.get("originalStart")
    exp = expansion(core)
    rows = []
    for local in occurrence_locals(core, exp, None, time_max, ctx.now):
        inst_id = instance_id(core, exp, local)
        exc_entry = cal.entries.get(inst_id)
        if exc_entry is not None:
            if exc_entry.cancelled and not show_deleted:
                continue
            item = render(ctx.state, exc_entry) if not exc_entry.cancelled else render_minimal(ctx.state,
                                                                                                exc_entry)
            start, end = exc_entry.core.start, exc_entry.core.end
        else:
            item = render_instance(ctx.state, entry, exp, local)
            start, end, _ = instance_times(core, exp, local)
        if time_min is not None and end.utc_start() <= time_min:
            continue
        if time_max is not None and start.utc_start() >= time_max:
            continue
        if original_start:
            try:
                wanted = parse_query_time(original_start, "originalStart")
            except ApiError:
                raise
            if exp.to_utc(local) != wanted:
                continue
        rows.append(((exp.to_utc(local).strftime("%Y%m%dT%H%M%S"), inst_id), item))
    rows.sort(key=lambda r: r[0])
    page_token = params.get("pageToken")
    if page_token:
        try:
            key = unb64(page_token)["k"]
            after = tuple(key) if key is not None else None
        except Exception:  # noqa: BLE001
            raise invalid("Invalid page token.", location="pageToken") from None
        if after is not None:
            rows = [r for r in rows if r[0] > after]
    limit = _page_limit(ctx, max_results, len(rows))
    body = _list_envelope(cal, ctx.now)
    body["items"] = [item for _, item in rows[:limit]]
    if len(rows) > limit:
        body["nextPageToken"] = b64({"k": list(rows[limit - 1][0]) if limit else
                                     (list(after) if page_token and after is not None else None)})
    return 200, body


# ---------------------------------------------------------------------------------------------
# Push channels
# ---------------------------------------------------------------------------------------------

def events_watch(ctx, calendar_id, params, body, allow_http=False):
    require_scope(ctx, False)
    cal = resolve_calendar(ctx, calendar_id)
    state = ctx.state
    if not isinstance(body, dict) or not body.get("id") or not isinstance(body.get("id"), str):
        raise ApiError(400, "required", "Required channel id.")
    if body.get("type") not in ("web_hook", "webhook"):
        raise invalid("Invalid value for: type", location="type")
    address = body.get("address")
    if not isinstance(address, str) or not address.startswith(("http://", "https://")):
        raise invalid("Invalid value for: address", location="address")
    if address.startswith("http://") and not allow_http:
        # Push guide: "the address ... must use HTTPS"; Google answers 400 push.webhookUrlNotHttps.
        raise ApiError(400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address}",
                       domain="global")
    if body["id"] in state.channels and not state.channels[body["id"]].stopped:
        raise ApiError(400, "channelIdNotUnique", f"Channel id {body['id']} not unique")
    ttl = CHANNEL_DEFAULT_TTL
    raw_ttl = (body.get("params") or {}).get("ttl")
    if raw_ttl is not None:
        try:
            ttl = int(raw_ttl)
        except (TypeError, ValueError):
            raise invalid("Invalid value for: ttl", location="params.ttl") from None
    token = body.get("token")
    resource_id = secrets.token_urlsafe(20)
    resource_uri = f"{ctx.base_url}/calendar/v3/calendars/{cal.id}/events?alt=json"
    channel = Channel(body["id"], resource_id, cal.id, address, token,
                      ctx.now + dt.timedelta(seconds=ttl), resource_uri)
    state.channels[channel.id] = channel
    out = {
        "kind": "api#channel",
        "id": channel.id,
        "resourceId": resource_id,
        "resourceUri": resource_uri,
        "expiration": str(to_ms(channel.expiration)),
    }
    if token is not None:
        out["token"] = token
    return 200, out


def channels_stop(ctx, body):
    state = ctx.state
    if not isinstance(body, dict):
        raise invalid("Invalid resource.")
    channel = state.channels.get(body.get("id"))
    if channel is None or channel.resource_id != body.get("resourceId") or channel.stopped:
        raise ApiError(404, "notFound", f"Channel '{body.get('id')}' not found for project 'emulated-project'")
    channel.stopped = True
    return 204, None

