"""The Google write planner: which requests a planned action becomes, without an emulator or a database."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from portal.sync.core import ExceptionState, FrozenMap, ItemState
from portal.sync.google_writes import (
    SERIES_FIELDS,
    EventPlace,
    EventWrite,
    Orphans,
    delete_write,
    exception_writes,
    insert_write,
    moves_series,
    orphan_writes,
    series_patch,
    update_write,
)
from portal.sync.mapping import ACTIVITY_ID_PROPERTY, ORGANIZATION_PROPERTY
from portal.sync.occurrences import occurrence_key

START = datetime(2025, 6, 2, 8, tzinfo=UTC)  # a Monday, 10:00 in Amsterdam
WEEKLY = ItemState(subject="Stand-up", start=START, end=START + timedelta(minutes=30),
                   time_zone="Europe/Amsterdam", recurrence=("RRULE:FREQ=WEEKLY;COUNT=6",),
                   participants=frozenset({"ann@acme.test", "bob@acme.test"}))
SINGLE = ItemState(subject="Review", start=START, end=START + timedelta(hours=1), time_zone="UTC")
PLACE = EventPlace(calendar="ann@acme.test", event_id="evt1", activity_id=7, organization_uid="org-1", etag='"e1"')


def key(weeks: int) -> str:
    return occurrence_key(START + timedelta(weeks=weeks), False)


def with_exceptions(state: ItemState, **exceptions: ExceptionState) -> ItemState:
    return replace(state, exceptions=FrozenMap({key(int(k[1:])): v for k, v in exceptions.items()}))


def kinds(writes: list[EventWrite]) -> dict[str, tuple[str, str]]:
    """occurrence key -> (kind, method) of the planned occurrence writes."""
    return {w.key[1]: (w.key[2], w.method) for w in writes}


# -------------------------------------------------------------- series writes


def test_an_insert_carries_the_chosen_id_and_the_portal_s_marks():
    write = insert_write(3, PLACE, WEEKLY)
    assert (write.key, write.method, write.calendar, write.event_id) == (3, "insert", "ann@acme.test", "evt1")
    assert write.body["id"] == "evt1"
    assert write.body["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=6"]
    marks = write.body["extendedProperties"]["private"]
    assert marks[ACTIVITY_ID_PROPERTY] == "7" and marks[ORGANIZATION_PROPERTY] == "org-1"
    assert write.if_match is None  # an insert has no version to be conditional on


def test_a_patch_sends_only_the_series_fields_that_differ_and_is_conditional():
    write = update_write(0, PLACE, replace(WEEKLY, subject="Daily stand-up"), WEEKLY)
    assert write.method == "patch" and write.if_match == '"e1"'
    assert dict(write.body) == {"summary": "Daily stand-up"}


def test_nothing_differs_no_write():
    assert update_write(0, PLACE, WEEKLY, WEEKLY) is None


def test_without_a_known_google_state_every_series_field_goes():
    assert set(series_patch(PLACE, WEEKLY, None)) == set(SERIES_FIELDS)


def test_a_patch_never_names_fields_the_portal_does_not_sync():
    patch = series_patch(PLACE, replace(WEEKLY, subject="x", location="y", private=True), WEEKLY)
    assert set(patch) <= set(SERIES_FIELDS)
    assert {"reminders", "colorId", "conferenceData", "attachments"}.isdisjoint(patch)


def test_a_guest_s_own_fields_known_from_google_go_back_as_they_are():
    guests = {"bob@acme.test": {"email": "bob@acme.test", "optional": True, "comment": "late",
                                "responseStatus": "accepted"}}
    place = replace(PLACE, known_guests=guests)
    added = replace(WEEKLY, participants=WEEKLY.participants | {"cy@acme.test"})
    patch = series_patch(place, added, WEEKLY)
    bob = next(a for a in patch["attendees"] if a["email"] == "bob@acme.test")
    assert bob["optional"] is True and bob["comment"] == "late"


def test_a_delete_is_conditional_on_the_etag_read():
    write = delete_write(("x",), PLACE)
    assert (write.method, write.event_id, write.if_match, write.body) == ("delete", "evt1", '"e1"', None)


def test_moving_a_series_is_a_change_of_its_time_or_rule_only():
    assert not moves_series(WEEKLY, replace(WEEKLY, subject="Renamed"))
    assert moves_series(WEEKLY, replace(WEEKLY, start=START + timedelta(hours=1),
                                        end=START + timedelta(hours=1, minutes=30)))
    assert moves_series(WEEKLY, replace(WEEKLY, recurrence=("RRULE:FREQ=WEEKLY;COUNT=3",)))
    assert moves_series(None, WEEKLY)


# -------------------------------------------------------------- occurrence (exception) writes


def test_a_new_exception_is_an_occurrence_patch_with_its_own_and_the_series_values():
    target = with_exceptions(WEEKLY, w1=ExceptionState(subject="Stand-up (demo)"))
    writes = exception_writes(4, PLACE, target, WEEKLY)
    assert len(writes) == 1
    write = writes[0]
    assert write.key == (4, key(1), "patch") and write.method == "patch"
    assert write.event_id == f"evt1_{key(1)}" and write.calendar == "ann@acme.test"
    assert write.body["summary"] == "Stand-up (demo)"
    assert write.body["location"] == WEEKLY.location  # not changed by the exception: the series' value


def test_a_cancelled_occurrence_is_a_delete_of_that_occurrence():
    target = with_exceptions(WEEKLY, w2=ExceptionState(cancelled=True))
    assert kinds(exception_writes(0, PLACE, target, WEEKLY)) == {key(2): ("delete", "delete")}


def test_exceptions_google_already_has_are_not_written_again():
    state = with_exceptions(WEEKLY, w1=ExceptionState(subject="demo"), w2=ExceptionState(cancelled=True))
    assert exception_writes(0, PLACE, state, state) == []


def test_a_renamed_series_writes_its_edited_occurrences_again_but_not_its_cancelled_ones():
    had = with_exceptions(WEEKLY, w1=ExceptionState(location="Room 2"), w2=ExceptionState(cancelled=True))
    target = replace(had, subject="Daily stand-up")
    writes = exception_writes(0, PLACE, target, had)
    assert kinds(writes) == {key(1): ("patch", "patch")}
    assert writes[0].body["summary"] == "Daily stand-up" and writes[0].body["location"] == "Room 2"


def test_an_undone_exception_of_an_occurrence_the_series_still_has_is_reset():
    had = with_exceptions(WEEKLY, w1=ExceptionState(subject="demo"))
    writes = exception_writes(0, PLACE, WEEKLY, had)
    assert kinds(writes) == {key(1): ("reset", "patch")}
    assert writes[0].body["summary"] == "Stand-up" and writes[0].body["status"] == "confirmed"


def test_an_exception_the_moved_series_no_longer_has_is_removed():
    had = with_exceptions(WEEKLY, w1=ExceptionState(subject="demo"), w3=ExceptionState(cancelled=True))
    moved = replace(WEEKLY, start=START + timedelta(hours=2), end=START + timedelta(hours=2, minutes=30))
    # the edited occurrence would stay beside its replacement; the cancelled one is gone already
    assert kinds(exception_writes(0, PLACE, moved, had)) == {key(1): ("orphan", "delete")}


def test_a_series_that_stops_recurring_removes_its_edited_occurrences():
    had = with_exceptions(WEEKLY, w1=ExceptionState(subject="demo"))
    assert kinds(exception_writes(0, PLACE, replace(WEEKLY, recurrence=()), had)) == {key(1): ("orphan", "delete")}


def test_an_inserted_series_writes_all_its_exceptions():
    target = with_exceptions(WEEKLY, w1=ExceptionState(subject="demo"), w2=ExceptionState(cancelled=True))
    assert kinds(exception_writes(0, PLACE, target, None)) == {key(1): ("patch", "patch"),
                                                               key(2): ("delete", "delete")}


def test_an_all_day_series_occurrence_is_addressed_by_its_date():
    day = date(2025, 6, 2)
    series = ItemState(subject="Off", all_day=True, start=day, end=day + timedelta(days=1),
                       time_zone="Europe/Amsterdam", recurrence=("RRULE:FREQ=DAILY;COUNT=5",))
    target = replace(series, exceptions=FrozenMap({"20250603": ExceptionState(subject="Half day")}))
    (write,) = exception_writes(0, PLACE, target, series)
    assert write.event_id == "evt1_20250603"
    assert write.body["start"]["date"] == "2025-06-03" and write.body["start"]["dateTime"] is None


# -------------------------------------------------------------- orphans


def test_orphans_are_deleted_except_cancelled_ones_and_those_of_skipped_events():
    orphans = {
        "evt1": Orphans("ann@acme.test", {key(1): ExceptionState(subject="x"), key(2): ExceptionState(cancelled=True)}),
        "evt2": Orphans("bob@acme.test", {key(1): ExceptionState(location="y")}),
    }
    writes = orphan_writes(orphans, skip={"evt2"})
    assert [(w.key, w.method, w.calendar, w.event_id) for w in writes] == [
        (("orphan", "evt1", key(1)), "delete", "ann@acme.test", f"evt1_{key(1)}")]


# -------------------------------------------------------------- properties

subjects = st.text(alphabet="abc ", min_size=1, max_size=5).map(str.strip).filter(bool)
edits = st.fixed_dictionaries({}, optional={
    "subject": subjects, "location": st.sampled_from(["", "Room 1", "Room 2"]),
    "description": st.sampled_from(["", "notes"]),
})
exception_maps = st.dictionaries(
    st.integers(0, 5),
    st.one_of(st.builds(ExceptionState, cancelled=st.just(True)),
              st.builds(ExceptionState, subject=st.one_of(st.none(), subjects),
                        location=st.one_of(st.none(), st.just("Room 9")))),
    max_size=4)


def _state(edit: dict, exceptions: dict) -> ItemState:
    return replace(WEEKLY, **edit, exceptions=FrozenMap({key(w): e for w, e in exceptions.items()}))


@given(edits, exception_maps, edits, exception_maps)
def test_occurrence_writes_address_one_occurrence_each_of_the_series(edit_a, had, edit_b, wanted):
    current, target = _state(edit_a, had), _state(edit_b, wanted)
    writes = exception_writes(9, PLACE, target, current)
    occurrence_keys = [w.key[1] for w in writes]
    assert len(occurrence_keys) == len(set(occurrence_keys))  # never two writes to one occurrence
    for write in writes:
        assert write.event_id == f"evt1_{write.key[1]}" and write.calendar == PLACE.calendar
        assert write.key[1] in current.exceptions or write.key[1] in target.exceptions
        if write.method == "delete":
            assert write.body is None
            cancelled_now = write.key[1] in target.exceptions and target.exceptions[write.key[1]].cancelled
            assert cancelled_now or write.key[1] not in target.exceptions
    # every exception the target has and Google does not is written
    for k, exc in target.exceptions.items():
        if current.exceptions.get(k) != exc:
            assert k in occurrence_keys


@given(edits, exception_maps)
def test_writing_what_google_holds_plans_nothing(edit, exceptions):
    state = _state(edit, exceptions)
    assert update_write(0, PLACE, state, state) is None
    assert exception_writes(0, PLACE, state, state) == []
