"""Real-world event shapes through the sync, both ways.

`tests/corpus/event_shapes.json` holds events as other projects' fixtures, recurrence test suites and Google's
own guides show them (each entry names its origin). Each goes into a person's Google calendar through the
real client, comes into the portal, is edited there and goes back; and, where the portal can hold it, is made
in the portal and goes to Google. Times are compared as instants, occurrence sets against an expansion made
here with python-dateutil straight from the rule text (not with the portal's recurrence code), and every
field of the event the portal does not own must come back unchanged.

The shapes are moved 28 years ahead (between 1901 and 2099 that keeps every date on its weekday, so every
rule means the same), into the sync's window; the person's calendar is the one of the fixture's organizer.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from googleapiclient.errors import HttpError

from tests.test_sync_engine import activities

CORPUS = json.loads((Path(__file__).parent / "corpus" / "event_shapes.json").read_text())["shapes"]
SHIFT = 28
OWNER = "user@acme.test"
CALENDAR_ZONE = "Europe/Amsterdam"  # the owner's calendar (tests/conftest.py)
IGNORED_TYPES = {"workingLocation", "birthday"}  # README: markers of a day, not work; they stay in Google
READ_ONLY = ("id", "status", "organizer", "creator", "recurringEventId", "originalStartTime", "hangoutLink",
             "eventLabelId", "iCalUID", "htmlLink", "etag", "created", "updated", "sequence", "kind", "locked")
VOLATILE = ("etag", "updated", "sequence", "summary")  # what an edit of the title may change
FIRST = 12  # occurrences compared per series
# Shapes Google refuses as written (other tools produced them): the person's insert gets a 400 naming why.
REFUSED_BY_GOOGLE = {
    "gcal_sync_zero_length_all_day": "timeRangeEmpty",  # an all-day range must hold a day
    "gcal_sync_reminders_default_plus_overrides": "cannotUseDefaultRemindersAndSpecifyOverride",
}
# Shapes the portal cannot hold: they stay in Google only, and the item says why (README).
NOT_IN_THE_PORTAL = {
    "recurring_ical_events_rdate_value_period": "RDATE periods are not supported",
    "gcal_sync_zero_length_all_day": "The end date must be after the start date",
}


def shift_years(text: str) -> str:
    return re.sub(r"(?<!\d)((?:19|20)\d\d)(?=-\d\d-\d\d|\d{4}(?!\d))", lambda m: str(int(m.group(1)) + SHIFT),
                  text)


def prepared(shape: dict) -> dict:
    event = json.loads(shift_years(json.dumps(shape["event"]).replace("owner@example.com", OWNER)))
    if event.get("recurrence") and "dateTime" in event["start"] and not event["start"].get("timeZone"):
        # Google requires a time zone for recurring events (Event.start.timeZone: "For recurring events this
        # field is required"); fixtures that omit it were recorded from calendars in their own zone.
        event["start"]["timeZone"] = event["end"]["timeZone"] = CALENDAR_ZONE
    return event


def moment(value: dict, zone: str = CALENDAR_ZONE):
    if "date" in value:
        return date.fromisoformat(value["date"])
    return local(value, zone).astimezone(UTC)


def local(value: dict, zone: str = CALENDAR_ZONE) -> datetime:
    """A dateTime as Google reads it: without an offset, the wall time in its timeZone."""
    when = datetime.fromisoformat(value["dateTime"])
    return when if when.tzinfo else when.replace(tzinfo=ZoneInfo(value.get("timeZone") or zone))


def _rule_lines(lines: list[str], all_day: bool, zone: ZoneInfo, first_month: int) -> list[str]:
    """The rule text as dateutil reads it: the same rule, only written the way dateutil expects."""
    out = []
    for line in lines:
        name, _, value = line.partition(":")
        head, *params = name.split(";")
        if head == "RRULE":
            parts = dict(p.split("=", 1) for p in value.split(";"))
            if parts.get("FREQ") == "YEARLY" and "BYMONTHDAY" in parts and "BYMONTH" not in parts:
                # Google writes yearly events as FREQ=YEARLY;BYMONTHDAY=n and means once a year, in the start's
                # month (gcal_sync's fixture of rules returned from the API); RFC 5545 alone would expand it
                # to every month.
                parts["BYMONTH"] = str(first_month)
            until = parts.get("UNTIL")
            if until:
                if all_day:  # an all-day series ends with the day UNTIL falls on (dates compare as 00:00 UTC)
                    parts["UNTIL"] = until.rstrip("Z") if "T" in until else until + "T000000"
                elif "T" not in until:  # RFC 5545: a DATE UNTIL on a timed series includes that whole day
                    end_of_day = datetime.strptime(until, "%Y%m%d").replace(hour=23, minute=59, second=59,
                                                                             tzinfo=zone)
                    parts["UNTIL"] = end_of_day.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            out.append("RRULE:" + ";".join(f"{k}={v}" for k, v in parts.items()))
            continue
        tzid = next((p.split("=", 1)[1] for p in params if p.startswith("TZID=")), None)
        values = []
        for raw in value.split(","):
            raw = raw.split("/")[0]  # VALUE=PERIOD: the period's start
            if all_day:
                values.append(raw[:8] + "T000000")
            elif "T" not in raw:
                values.append(raw + "T000000")
            elif raw.endswith("Z"):
                values.append(raw)
            else:
                local = datetime.strptime(raw, "%Y%m%dT%H%M%S").replace(tzinfo=ZoneInfo(tzid) if tzid else zone)
                values.append(local.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"))
        out.append(f"{head}:{','.join(values)}")
    return out


def expected_starts(event: dict, count: int = FIRST) -> list:
    """The first occurrences by RFC 5545, expanded here by dateutil from the event as Google holds it."""
    start = event["start"]
    all_day = "date" in start
    zone = ZoneInfo(start.get("timeZone") or CALENDAR_ZONE)
    first = datetime.fromisoformat(start["date"]) if all_day else local(start).astimezone(zone)
    if not event.get("recurrence"):
        return [first.date() if all_day else first.astimezone(UTC)]
    rules = rrulestr("\n".join(_rule_lines(event["recurrence"], all_day, zone, first.month)), dtstart=first,
                     forceset=True)
    rules.rdate(first)  # RFC 5545 3.8.5: the recurrence set starts with DTSTART (an EXDATE may remove it)
    found = []
    for when in rules:
        found.append(when.date() if all_day else when.astimezone(UTC))
        if len(found) == count:
            break
    return found


def as_key(value):
    return value.isoformat() if isinstance(value, date) and not isinstance(value, datetime) else \
        value.astimezone(UTC).isoformat()


def google_starts(person, event_id: str, starts: list) -> list:
    if not starts:
        return []
    low = datetime.combine(starts[0], datetime.min.time(), UTC) if not isinstance(starts[0], datetime) else starts[0]
    high = datetime.combine(starts[-1], datetime.min.time(), UTC) if not isinstance(starts[-1], datetime) \
        else starts[-1]
    items = person.events.instances(calendarId="primary", eventId=event_id, maxResults=2500,
                                    timeMin=(low - timedelta(days=1)).isoformat(),
                                    timeMax=(high + timedelta(seconds=1)).isoformat()).execute()["items"]
    zone = CALENDAR_ZONE
    got = sorted(moment(i["start"], zone) for i in items if i.get("status") != "cancelled")
    return [g for g in got if as_key(g) >= as_key(starts[0])][:len(starts)]


def portal_starts(app, activity_id: int, starts: list) -> list:
    from portal.extensions import db
    from portal.models import Activity

    if not starts:
        return []
    low, high = starts[0], starts[-1]
    low = datetime.combine(low, datetime.min.time(), UTC) if not isinstance(low, datetime) else low
    high = datetime.combine(high, datetime.min.time(), UTC) if not isinstance(high, datetime) else high
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        found = [o.start for o in activity.occurrences_between(low - timedelta(seconds=1), high + timedelta(days=1))]
    found = [f if not isinstance(f, datetime) else f.astimezone(UTC) for f in found]
    return [f for f in sorted(found, key=as_key) if as_key(f) >= as_key(starts[0])][:len(starts)]


def insert(connected, person, event: dict) -> dict:
    body = {k: v for k, v in event.items() if k not in READ_ONLY}
    if event.get("eventType") == "fromGmail" or event.get("locked"):
        # Only Google makes these (Gmail, locked copies): the emulator's control API stands in for it.
        return connected.control("POST", f"/users/{OWNER}/events", {**body, "locked": bool(event.get("locked"))})
    return person.events.insert(calendarId="primary", body=body, conferenceDataVersion=1,
                                supportsAttachments=True).execute()


def _shape_ids():
    return [s["name"] for s in CORPUS]


def test_the_corpus_is_large_and_every_shape_names_its_origin():
    assert len(CORPUS) >= 40
    assert len({s["name"] for s in CORPUS}) == len(CORPUS)
    assert all(s["origin"].strip() for s in CORPUS)


@pytest.mark.parametrize("shape", CORPUS, ids=_shape_ids())
def test_expansion_here_agrees_with_the_corpus(shape):
    """The expansion this file compares against reproduces what the corpus recorded for each shape."""
    event = prepared(shape)
    expect = shape["expect"]
    wanted = [shift_years(v) for v in expect["first_occurrences"]]
    got = expected_starts(event, count=len(wanted))
    as_text = [g.isoformat() if not isinstance(g, datetime) else g.astimezone(UTC).isoformat() for g in got]
    recorded = [w if "T" not in w else datetime.fromisoformat(w).astimezone(UTC).isoformat() for w in wanted]
    assert as_text == recorded


@pytest.mark.parametrize("shape", CORPUS, ids=_shape_ids())
def test_google_to_portal_and_back(shape, app, api, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    person = google_user(OWNER)
    event = prepared(shape)
    if shape["name"] in REFUSED_BY_GOOGLE:
        with pytest.raises(HttpError) as refused:
            insert(connected, person, event)
        assert refused.value.resp.status == 400
        assert refused.value.error_details[0]["reason"] == REFUSED_BY_GOOGLE[shape["name"]]
        return
    made = insert(connected, person, event)
    cycle = run_sync("user")
    found = activities(app)
    if shape["name"] in NOT_IN_THE_PORTAL:
        from portal.extensions import db
        from portal.sync.models import SyncJournalEntry

        assert cycle.status == "partial" and found == []
        with app.app_context():
            said = [e.message for e in db.session.query(SyncJournalEntry).filter_by(kind="error")]
        assert any(NOT_IN_THE_PORTAL[shape["name"]] in m for m in said), said
        assert person.get(made["id"])["etag"] == made["etag"]  # Google's event is left as it is
        return
    assert cycle.status == "ok", cycle.message
    if event.get("eventType") in IGNORED_TYPES:
        assert found == []
        return
    [activity] = found
    assert activity.subject == (made.get("summary") or "").strip()[:255] or not made.get("summary")
    assert activity.all_day == ("date" in made["start"])
    if activity.all_day:
        assert (activity.start_date, activity.end_date) == (moment(made["start"], ""), moment(made["end"], ""))
    else:
        assert (activity.start_at, activity.end_at) == (moment(made["start"], ""), moment(made["end"], ""))
    starts = expected_starts(made)
    if made.get("recurrence"):
        assert portal_starts(app, activity.id, starts) == starts
        assert google_starts(person, made["id"], starts) == starts

    before = person.get(made["id"])
    edited = api("user").patch(f"/api/v1/activities/{activity.id}", json={"subject": "Edited in the portal"})
    assert edited.status_code == 200, edited.get_json()
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    after = person.get(made["id"])
    if made.get("eventType") == "fromGmail" or made.get("locked"):
        assert after["summary"] == before["summary"]  # Google refuses it: never sent, journaled instead
    else:
        assert after["summary"] == "Edited in the portal"
    assert {k: v for k, v in after.items() if k not in VOLATILE} == \
        {k: v for k, v in before.items() if k not in VOLATILE}


PORTAL_SHAPES = [s for s in CORPUS if not s["event"].get("eventType") or s["event"]["eventType"] == "default"]


@pytest.mark.parametrize("shape", PORTAL_SHAPES, ids=[s["name"] for s in PORTAL_SHAPES])
def test_portal_to_google(shape, app, api, world, connected, sync_on, run_sync, google_user):
    sync_on("user")
    event = prepared(shape)
    all_day = "date" in event["start"]
    zone = event["start"].get("timeZone") or CALENDAR_ZONE
    body = {"subject": event.get("summary") or "Untitled", "activity_type": "Meeting", "all_day": all_day,
            "time_zone": zone, "recurrence": event.get("recurrence") or []}
    if all_day:
        body.update(start=event["start"]["date"], end=event["end"]["date"])
    else:
        body.update(start=local(event["start"]).isoformat(), end=local(event["end"]).isoformat())
    created = api("user").post("/api/v1/activities", json=body)
    if shape["name"] in NOT_IN_THE_PORTAL:
        assert created.status_code == 400
        assert NOT_IN_THE_PORTAL[shape["name"]] in json.dumps(created.get_json())
        return
    assert created.status_code == 201, created.get_json()
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    person = google_user(OWNER)
    [made] = [e for e in person.live() if not e.get("recurringEventId")]
    assert moment(made["start"], zone) == moment(event["start"], zone)
    assert moment(made["end"], zone) == moment(event["end"], zone)
    starts = expected_starts(event)
    if event.get("recurrence"):
        assert google_starts(person, made["id"], starts) == starts
        assert portal_starts(app, created.get_json()["id"], starts) == starts
