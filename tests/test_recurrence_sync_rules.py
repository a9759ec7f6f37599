"""The pure pieces under the recurrence sync: cutting a series, finding the occurrences a series still has,
and the occurrence writes and readings of Google events."""

from datetime import UTC, date, datetime, timedelta

import pytest

from portal.sync.core import ExceptionState, FrozenMap, ItemState
from portal.sync.mapping import MappingError, event_body, event_state, instance_body, instance_reset_body
from portal.sync.occurrences import occurrence_keys_among, split_recurrence
from portal.sync.recurrence import RecurrenceError

NINE = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)  # Monday 09:00 in Amsterdam


@pytest.mark.parametrize(("lines", "key", "old", "new"), [
    (["RRULE:FREQ=WEEKLY;COUNT=6"], "20270118T080000Z",
     ["RRULE:FREQ=WEEKLY;UNTIL=20270118T075959Z"], ["RRULE:FREQ=WEEKLY;COUNT=4"]),
    (["RRULE:FREQ=WEEKLY;UNTIL=20270301T000000Z;BYDAY=MO,TH"], "20270111T080000Z",
     ["RRULE:FREQ=WEEKLY;UNTIL=20270111T075959Z;BYDAY=MO,TH"],
     ["RRULE:FREQ=WEEKLY;UNTIL=20270301T000000Z;BYDAY=MO,TH"]),
    (["RRULE:FREQ=DAILY", "EXDATE:20270105T080000Z", "EXDATE:20270110T080000Z", "RDATE:20270120T150000Z"],
     "20270108T080000Z", ["RRULE:FREQ=DAILY;UNTIL=20270108T075959Z", "EXDATE:20270105T080000Z"],
     ["RRULE:FREQ=DAILY", "RDATE:20270120T150000Z", "EXDATE:20270110T080000Z"]),
    # Across the March DST change the cut is still the occurrence's own UTC instant.
    (["RRULE:FREQ=WEEKLY;COUNT=10"], "20270329T070000Z",
     ["RRULE:FREQ=WEEKLY;UNTIL=20270329T065959Z"], ["RRULE:FREQ=WEEKLY;COUNT=1"]),
])
def test_split_of_a_timed_series(lines, key, old, new):
    start = NINE if key != "20270329T070000Z" else datetime(2027, 1, 25, 8, 0, tzinfo=UTC)
    assert split_recurrence(lines, start, "Europe/Amsterdam", key, all_day=False) == (old, new)


def test_split_of_an_all_day_series_uses_dates():
    old, new = split_recurrence(["RRULE:FREQ=MONTHLY;COUNT=12;BYDAY=-1FR"], date(2027, 1, 29), "Pacific/Honolulu",
                                "20270430", all_day=True)
    assert old == ["RRULE:FREQ=MONTHLY;UNTIL=20270429;BYDAY=-1FR"]
    assert new == ["RRULE:FREQ=MONTHLY;COUNT=9;BYDAY=-1FR"]


@pytest.mark.parametrize(("lines", "key", "message"), [
    (["RRULE:FREQ=WEEKLY;COUNT=6"], "20270104T080000Z", "first occurrence cannot be split"),
    (["RDATE:20270111T080000Z"], "20270111T080000Z", r"list of dates \(RDATE\) only"),
    (["RRULE:FREQ=WEEKLY", "EXRULE:FREQ=MONTHLY"], "20270111T080000Z", "exclusion rule"),
    (["RRULE:FREQ=WEEKLY"], "20270111", "must be a UTC date-time"),
])
def test_what_cannot_be_split_says_why(lines, key, message):
    with pytest.raises(RecurrenceError, match=message):
        split_recurrence(lines, NINE, "Europe/Amsterdam", key, all_day=False)


def test_occurrence_keys_among_finds_the_ones_the_series_still_has():
    keys = ["20270111T080000Z", "20270111T090000Z", "20270112T080000Z", "nonsense", "20270329T070000Z"]
    found = occurrence_keys_among(NINE, NINE + timedelta(hours=1), "Europe/Amsterdam", ["RRULE:FREQ=WEEKLY"], keys,
                                  all_day=False)
    assert found == {"20270111T080000Z", "20270329T070000Z"}
    assert occurrence_keys_among(date(2027, 1, 4), date(2027, 1, 5), "Pacific/Tongatapu",
                                 ["RRULE:FREQ=WEEKLY;COUNT=2"], ["20270111", "20270118", "20270111T080000Z"],
                                 all_day=True) == {"20270111"}


def series(**extra):
    values = {"subject": "Standup", "start": NINE, "end": NINE + timedelta(minutes=30),
              "time_zone": "Europe/Amsterdam", "recurrence": ("RRULE:FREQ=DAILY;COUNT=5",),
              "participants": frozenset({"user@acme.test"})}
    values.update(extra)
    return ItemState(**values)


def google_series(**extra):
    event = {"id": "abc", "summary": "Standup", "status": "confirmed",
             "start": {"dateTime": "2027-01-04T09:00:00+01:00", "timeZone": "Europe/Amsterdam"},
             "end": {"dateTime": "2027-01-04T09:30:00+01:00", "timeZone": "Europe/Amsterdam"},
             "recurrence": ["RRULE:FREQ=DAILY;COUNT=5"], "organizer": {"email": "user@acme.test"}}
    event.update(extra)
    return event


def instance(key, **extra):
    start = datetime.strptime(key, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    body = {"id": f"abc_{key}", "recurringEventId": "abc", "status": "confirmed", "summary": "Standup",
            "originalStartTime": {"dateTime": start.isoformat()},
            "start": {"dateTime": start.isoformat()}, "end": {"dateTime": (start + timedelta(minutes=30)).isoformat()}}
    body.update(extra)
    return body


def test_event_state_reads_edited_cancelled_plain_and_orphaned_occurrences():
    orphans = {}
    base = series(exceptions=FrozenMap({"20270107T070000Z": ExceptionState(subject="Old orphan")}))
    state = event_state(google_series(), [
        instance("20270105T080000Z", summary="Standup (late)", start={"dateTime": "2027-01-05T10:00:00Z"},
                 end={"dateTime": "2027-01-05T10:30:00Z"}),
        instance("20270106T080000Z", status="cancelled"),
        instance("20270107T080000Z"),  # only a guest's answer changed: not an edit
    ], {"user@acme.test"}, base=base, orphans=orphans)
    assert set(state.exceptions) == {"20270105T080000Z", "20270106T080000Z"}
    assert state.exceptions["20270105T080000Z"].subject == "Standup (late)"
    assert state.exceptions["20270106T080000Z"].cancelled
    assert list(orphans) == ["20270107T070000Z"]


def test_event_state_refuses_malformed_occurrences_by_name():
    with pytest.raises(MappingError, match="original start"):
        event_state(google_series(), [{"recurringEventId": "abc", "status": "confirmed"}], set())
    with pytest.raises(MappingError, match="summary is not text"):
        event_state(google_series(summary=["not", "text"]), [], set())


def test_instance_bodies_carry_the_series_values_they_do_not_change():
    state = series(location="Room 1", exceptions=FrozenMap({
        "20270105T080000Z": ExceptionState(subject="Standup (late)", start=NINE + timedelta(days=1, hours=2),
                                           end=NINE + timedelta(days=1, hours=2, minutes=30))}))
    body = instance_body(state, "20270105T080000Z")
    assert body["summary"] == "Standup (late)" and body["location"] == "Room 1" and body["status"] == "confirmed"
    assert body["start"] == {"dateTime": "2027-01-05T11:00:00+01:00", "timeZone": "Europe/Amsterdam", "date": None}
    reset = instance_reset_body(state, "20270106T080000Z")
    assert reset["summary"] == "Standup" and reset["start"]["dateTime"] == "2027-01-06T09:00:00+01:00"


def test_event_body_never_sends_a_guests_answer():
    body = event_body(series(participants=frozenset({"user@acme.test", "colleague@acme.test"})),
                      organizer_email="user@acme.test", activity_id=1, organization_uid="x",
                      external=[{"email": "guest@example.com", "responseStatus": "declined", "displayName": "G"}])
    assert {"email": "guest@example.com", "displayName": "G"} in body["attendees"]
    assert [a for a in body["attendees"] if a["email"] == "colleague@acme.test"] == [{"email": "colleague@acme.test"}]
