"""The item state, the three-way reconcile, first-sync matching and event ids."""

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from portal.sync.core import (
    SYNCED_FIELDS,
    Conflict,
    ExceptionState,
    ItemState,
    Side,
    event_id_for,
    in_first_sync_window,
    match_first_sync,
    match_key,
    reconcile,
)
from portal.sync.recurrence import RecurrenceError

AMS = ZoneInfo("Europe/Amsterdam")
T = datetime(2025, 3, 3, 9, tzinfo=UTC)
EARLY, LATE = T, T + timedelta(hours=1)

BASE = ItemState(
    subject="Weekly review",
    description="agenda",
    location="Room 1",
    start=T,
    end=T + timedelta(hours=1),
    time_zone="Europe/Amsterdam",
    recurrence=("RRULE:FREQ=WEEKLY;COUNT=10",),
    participants=frozenset({"ann@example.com", "bob@example.com"}),
)
PORTAL_EDIT = replace(BASE, subject="Weekly review (moved room)")
GOOGLE_EDIT = replace(BASE, location="Room 2")
BOTH_EDITS = replace(BASE, subject="Weekly review (moved room)", location="Room 2")


def run(base, portal, google, *, portal_at=EARLY, google_at=LATE):
    return reconcile(base, portal, google, portal_modified_at=portal_at, google_modified_at=google_at)


def flags(res):
    names = ("write_portal", "write_google", "delete_portal", "delete_google", "recreate_portal", "recreate_google", "unlink")
    return {n for n in names if getattr(res, n)}


# ---------------------------------------------------------------- the decision table


@pytest.mark.parametrize(
    ("base", "portal", "google", "merged", "expected"),
    [
        pytest.param(BASE, BASE, BASE, BASE, set(), id="unchanged both: nothing (echo)"),
        pytest.param(BASE, PORTAL_EDIT, BASE, PORTAL_EDIT, {"write_google"}, id="portal edit goes to google"),
        pytest.param(BASE, BASE, GOOGLE_EDIT, GOOGLE_EDIT, {"write_portal"}, id="google edit goes to portal"),
        pytest.param(BASE, PORTAL_EDIT, GOOGLE_EDIT, BOTH_EDITS, {"write_portal", "write_google"}, id="both edit other fields: merge"),
        pytest.param(BASE, PORTAL_EDIT, PORTAL_EDIT, PORTAL_EDIT, set(), id="same edit on both: nothing to write"),
        pytest.param(BASE, None, BASE, None, {"delete_google", "unlink"}, id="deleted in portal: delete event"),
        pytest.param(BASE, BASE, None, None, {"delete_portal", "unlink"}, id="deleted in google: trash activity"),
        pytest.param(BASE, None, GOOGLE_EDIT, GOOGLE_EDIT, {"write_portal", "recreate_portal"}, id="portal delete vs google edit: edit wins"),
        pytest.param(BASE, PORTAL_EDIT, None, PORTAL_EDIT, {"write_google", "recreate_google"}, id="google delete vs portal edit: edit wins"),
        pytest.param(BASE, None, None, None, {"unlink"}, id="deleted on both: unlink"),
        pytest.param(None, PORTAL_EDIT, None, PORTAL_EDIT, {"write_google"}, id="never synced portal item: create"),
        pytest.param(None, None, GOOGLE_EDIT, GOOGLE_EDIT, {"write_portal"}, id="never synced google item: create"),
        pytest.param(None, None, None, None, {"unlink"}, id="never synced, gone on both"),
        pytest.param(None, BASE, BASE, BASE, set(), id="no base, equal: nothing"),
    ],
)
def test_decision_table(base, portal, google, merged, expected):
    res = run(base, portal, google)
    assert res.merged == merged
    assert flags(res) == expected
    assert res.conflicts == ()


def test_changed_is_decided_by_content_not_timestamps():
    # A side the engine itself just wrote has a fresh timestamp but equals base: not a change.
    res = run(BASE, replace(BASE), GOOGLE_EDIT, portal_at=LATE + timedelta(days=1), google_at=EARLY)
    assert res.merged == GOOGLE_EDIT and flags(res) == {"write_portal"} and not res.conflicts


# ---------------------------------------------------------------- conflicts


@pytest.mark.parametrize(("portal_at", "google_at", "winner"), [(EARLY, LATE, Side.GOOGLE), (LATE, EARLY, Side.PORTAL)])
def test_same_field_changed_on_both_sides_later_wins_and_loser_is_kept(portal_at, google_at, winner):
    portal = replace(BASE, subject="From portal", description="portal notes")
    google = replace(BASE, subject="From google", location="Room 9")
    res = run(BASE, portal, google, portal_at=portal_at, google_at=google_at)
    kept, lost = ("From google", "From portal") if winner is Side.GOOGLE else ("From portal", "From google")
    assert res.conflicts == (Conflict("subject", winner, kept, lost),)
    # the fields only one side touched survive whoever won the subject
    assert res.merged == replace(BASE, subject=kept, description="portal notes", location="Room 9")
    assert res.write_portal and res.write_google


def test_exact_tie_goes_to_the_portal():
    res = run(BASE, replace(BASE, subject="P"), replace(BASE, subject="G"), portal_at=T, google_at=T)
    assert res.merged.subject == "P"
    assert res.conflicts == (Conflict("subject", Side.PORTAL, "P", "G"),)


def test_time_slot_is_one_choice_and_each_lost_field_is_journaled():
    moved = replace(BASE, start=T + timedelta(hours=2), end=T + timedelta(hours=3))
    longer = replace(BASE, end=T + timedelta(hours=4))
    res = run(BASE, moved, longer, portal_at=EARLY, google_at=LATE)
    # never portal's start with google's end: that slot would be one nobody chose
    assert (res.merged.start, res.merged.end) == (longer.start, longer.end)
    assert res.conflicts == (
        Conflict("start", Side.GOOGLE, T, T + timedelta(hours=2)),
        Conflict("end", Side.GOOGLE, T + timedelta(hours=4), T + timedelta(hours=3)),
    )


def test_without_base_every_difference_is_a_conflict():
    portal = replace(BASE, description="portal")
    google = replace(BASE, description="google", private=True)
    res = run(None, portal, google, portal_at=LATE, google_at=EARLY)
    assert res.merged == portal
    assert {c.field for c in res.conflicts} == {"description", "private"}
    assert res.write_google and not res.write_portal


def test_participants_changed_on_both_sides():
    portal = replace(BASE, participants=BASE.participants | {"cid@example.com"})
    google = replace(BASE, participants=frozenset({"ann@example.com"}))
    res = run(BASE, portal, google)
    assert res.merged.participants == google.participants
    assert res.conflicts[0].lost_value == portal.participants


# ---------------------------------------------------------------- exceptions


K2 = "20250310T090000Z"  # second occurrence
K3 = "20250317T090000Z"
EDITED = ExceptionState(subject="Review with the client")
CANCELLED = ExceptionState(cancelled=True)


def with_exc(state, **exceptions):
    return replace(state, exceptions={**state.exceptions, **{k.removeprefix("k"): v for k, v in exceptions.items()}})


def test_exception_added_on_one_side_survives_a_series_edit_on_the_other():
    portal = with_exc(BASE, **{"k" + K2: EDITED})
    google = replace(BASE, subject="Weekly review v2")
    res = run(BASE, portal, google)
    assert res.merged.subject == "Weekly review v2"
    assert dict(res.merged.exceptions) == {K2: EDITED}
    assert not res.conflicts


def test_cancelled_occurrence_on_one_side_and_edited_occurrence_on_the_other_both_survive():
    portal = with_exc(BASE, **{"k" + K2: CANCELLED})
    google = with_exc(BASE, **{"k" + K3: EDITED})
    res = run(BASE, portal, google)
    assert dict(res.merged.exceptions) == {K2: CANCELLED, K3: EDITED}


def test_same_occurrence_changed_on_both_sides_later_wins():
    portal = with_exc(BASE, **{"k" + K2: CANCELLED})
    google = with_exc(BASE, **{"k" + K2: EDITED})
    res = run(BASE, portal, google, portal_at=EARLY, google_at=LATE)
    assert dict(res.merged.exceptions) == {K2: EDITED}
    assert res.conflicts == (Conflict(f"exceptions[{K2}]", Side.GOOGLE, EDITED, CANCELLED),)


def test_exception_removed_on_one_side_edited_series_on_the_other():
    base = with_exc(BASE, **{"k" + K2: EDITED})
    portal = replace(base, exceptions={})
    google = replace(base, description="new agenda")
    res = run(base, portal, google)
    assert res.merged.exceptions == {} and res.merged.description == "new agenda"


def test_exception_of_an_occurrence_the_moved_series_no_longer_has_is_dropped_and_journaled():
    moved = replace(BASE, start=T + timedelta(hours=1), end=T + timedelta(hours=2))
    google = with_exc(BASE, **{"k" + K2: EDITED})
    res = run(BASE, moved, google, portal_at=EARLY, google_at=LATE)
    assert res.merged.start == moved.start
    assert res.merged.exceptions == {}
    assert Conflict(f"exceptions[{K2}]", Side.PORTAL, None, EDITED) in res.conflicts


# ---------------------------------------------------------------- the state value


def test_state_canonicalizes_on_construction():
    a = ItemState(
        subject="x",
        start=datetime(2025, 3, 3, 10, tzinfo=AMS),
        end=datetime(2025, 3, 3, 11, tzinfo=AMS),
        recurrence=["RRULE:BYDAY=WE,MO;FREQ=WEEKLY;INTERVAL=1"],
        participants={" Ann@Example.COM "},
        exceptions={"20250310t090000z": EDITED},
    )
    assert a.start == T and a.start.tzinfo is UTC
    assert a.recurrence == ("RRULE:FREQ=WEEKLY;BYDAY=MO,WE",)
    assert a.participants == frozenset({"ann@example.com"})
    assert list(a.exceptions) == [K2]
    assert hash(a) == hash(replace(a))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"start": datetime(2025, 1, 1, 9), "end": datetime(2025, 1, 1, 10)}, ValueError),
        ({"start": date(2025, 1, 1), "end": date(2025, 1, 2)}, ValueError),
        ({"all_day": True, "start": T, "end": T}, ValueError),
        ({"start": T, "end": T - timedelta(minutes=1)}, ValueError),
        ({"start": T, "end": T, "time_zone": "Mars/Olympus"}, Exception),
        ({"start": T, "end": T, "recurrence": ("RRULE:FREQ=SOMETIMES",)}, RecurrenceError),
    ],
)
def test_invalid_states_are_refused_at_construction(kwargs, error):
    with pytest.raises(error):
        ItemState(subject="x", **kwargs)


def test_content_hash_is_stable_and_sensitive_to_every_field():
    assert BASE.content_hash() == replace(BASE).content_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", BASE.content_hash())
    variants = {
        "subject": "other",
        "description": "other",
        "location": "other",
        "all_day": True,
        "start": T - timedelta(hours=1),
        "end": T + timedelta(hours=2),
        "time_zone": "UTC",
        "recurrence": ("RRULE:FREQ=DAILY",),
        "participants": frozenset(),
        "private": True,
        "exceptions": {K2: CANCELLED},
    }
    assert set(variants) == set(SYNCED_FIELDS) | {"exceptions"}
    hashes = {BASE.content_hash()}
    for name, value in variants.items():
        extra = {"start": date(2025, 3, 3), "end": date(2025, 3, 4)} if name == "all_day" else {}
        hashes.add(replace(BASE, **{name: value, **extra}).content_hash())
    assert len(hashes) == len(variants) + 1
    assert replace(BASE, exceptions={K2: ExceptionState(subject="a")}).content_hash() != replace(
        BASE, exceptions={K2: ExceptionState(description="a")}
    ).content_hash()


# ---------------------------------------------------------------- first sync


def test_equivalent_rrule_spellings_match():
    portal = replace(BASE, recurrence=("RRULE:FREQ=WEEKLY;BYDAY=WE,MO;INTERVAL=1",))
    google = replace(BASE, recurrence=("RRULE:INTERVAL=1;FREQ=WEEKLY;BYDAY=MO,WE;WKST=MO",))
    assert match_key(portal) == match_key(google)
    plan = match_first_sync({1: portal}, {"g1": google})
    assert plan.links == [(1, "g1")] and plan.portal_only == [] and plan.google_only == []


def test_match_key_ignores_case_spacing_exclusions_and_fields_outside_the_rule():
    portal = replace(BASE, subject="  weekly REVIEW ", description="x", recurrence=BASE.recurrence + ("EXDATE:20250310T090000Z",))
    assert match_key(portal) == match_key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "Other"},
        {"start": T - timedelta(minutes=30)},
        {"end": T + timedelta(minutes=30)},
        {"recurrence": ("RRULE:FREQ=WEEKLY;COUNT=10;INTERVAL=2",)},
        {"recurrence": ()},
        {"all_day": True, "start": date(2025, 3, 3), "end": date(2025, 3, 4)},
    ],
)
def test_match_key_differs_on_each_criterion(change):
    assert match_key(replace(BASE, **change)) != match_key(BASE)


def test_match_key_compares_moments_whatever_zone_each_side_writes():
    # The same meeting written in another zone (UTC from a phone, the calendar's zone from the web) matches.
    assert match_key(replace(BASE, time_zone="Europe/London")) == match_key(BASE)
    assert match_key(replace(BASE, time_zone="America/New_York")) == match_key(BASE)
    # One hour later is another meeting, in whichever zone.
    later = replace(BASE, start=BASE.start + timedelta(hours=1), end=BASE.end + timedelta(hours=1))
    assert match_key(later) != match_key(BASE)


def test_duplicates_pair_one_to_one_in_id_order():
    plan = match_first_sync({3: BASE, 1: BASE, 2: BASE}, {"gb": BASE, "ga": BASE, "gx": PORTAL_EDIT})
    assert plan.links == [(1, "ga"), (2, "gb")]
    assert plan.portal_only == [3]
    assert plan.google_only == ["gx"]


NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "inside"),
    [
        (replace(BASE, recurrence=(), start=NOW - timedelta(days=40), end=NOW - timedelta(days=40, hours=-1)), False),
        (replace(BASE, recurrence=(), start=NOW - timedelta(days=29), end=NOW - timedelta(days=29, hours=-1)), True),
        (replace(BASE, recurrence=(), start=NOW + timedelta(days=3), end=NOW + timedelta(days=3, hours=1)), True),
        (replace(BASE, start=NOW - timedelta(days=400), end=NOW - timedelta(days=400, hours=-1), recurrence=("RRULE:FREQ=WEEKLY",)), True),
        (replace(BASE, start=NOW - timedelta(days=400), end=NOW - timedelta(days=400, hours=-1), recurrence=("RRULE:FREQ=WEEKLY;UNTIL=20250101T000000Z",)), False),
        (replace(BASE, start=NOW - timedelta(days=400), end=NOW - timedelta(days=400, hours=-1), recurrence=("RRULE:FREQ=MONTHLY;COUNT=3",)), False),
        (replace(BASE, all_day=True, recurrence=(), start=date(2025, 5, 1), end=date(2025, 5, 3)), True),
        (replace(BASE, all_day=True, recurrence=(), start=date(2025, 4, 1), end=date(2025, 4, 2)), False),
    ],
    ids=["old single", "recent single", "future single", "old series, future occurrences", "old series, UNTIL passed",
         "old series, COUNT used up", "recent all-day", "old all-day"],
)
def test_first_sync_window(state, inside):
    assert in_first_sync_window(state, NOW) is inside


# ---------------------------------------------------------------- event ids


def test_event_ids_are_base32hex_deterministic_and_distinct():
    first = event_id_for(42, namespace="org-1")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", first)
    assert first == event_id_for(42, namespace="org-1", generation=0)
    others = {
        event_id_for(43, namespace="org-1"),
        event_id_for(42, namespace="org-2"),
        event_id_for(42, namespace="org-1", generation=1),
        event_id_for(4, namespace="org-12"),  # no ambiguity from plain concatenation
    }
    assert first not in others and len(others) == 4
    with pytest.raises(ValueError):
        event_id_for(42, namespace="org-1", generation=-1)


def test_a_field_edited_and_edited_back_in_the_portal_is_still_an_edit():
    # Found by the chaos run (seeds 20 and 32): the portal set a value and set it back before the next cycle
    # while Google changed the same field; by content alone the portal "did nothing" and its edit was lost.
    google = replace(BASE, location="Room 41")
    resolution = reconcile(BASE, BASE, google, portal_modified_at=LATE, google_modified_at=EARLY,
                           portal_touched=frozenset({"location"}))
    assert resolution.merged == BASE and resolution.write_google and not resolution.write_portal
    assert [(c.field, c.winner, c.lost_value) for c in resolution.conflicts] == [("location", Side.PORTAL, "Room 41")]
    # The later change still wins: Google's, when it came after.
    resolution = reconcile(BASE, BASE, google, portal_modified_at=EARLY, google_modified_at=LATE,
                           portal_touched=frozenset({"location"}))
    assert resolution.merged == google and [c.lost_value for c in resolution.conflicts] == ["Room 1"]
    # Another field touched is no conflict with this one.
    resolution = reconcile(BASE, BASE, google, portal_modified_at=LATE, google_modified_at=EARLY,
                           portal_touched=frozenset({"subject"}))
    assert resolution.merged == google and resolution.conflicts == ()


def test_an_item_edited_and_edited_back_in_the_portal_beats_a_delete_in_google():
    resolution = reconcile(BASE, BASE, None, portal_modified_at=LATE, google_modified_at=EARLY,
                           portal_touched=frozenset({"subject"}))
    assert resolution.recreate_google and resolution.merged == BASE
