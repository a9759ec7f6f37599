"""plan_cycle: the per-cycle decision table over links, creates and first-sync matches."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from portal.sync.core import (
    NOBODY_SYNCING,
    NOT_SYNCED_TYPE,
    Conflict,
    CreateActivity,
    CreateEvent,
    DeleteEvent,
    GoogleItem,
    ItemError,
    ItemState,
    Link,
    LinkItems,
    PortalItem,
    RecordConflict,
    RecreateEvent,
    RestoreActivity,
    SetBase,
    Side,
    TrashActivity,
    Unlink,
    UpdateActivity,
    UpdateEvent,
    plan_cycle,
)

NOW = datetime(2025, 6, 2, 12, tzinfo=UTC)
T = NOW + timedelta(days=1)
BASE = ItemState(subject="Planning", start=T, end=T + timedelta(hours=1), time_zone="Europe/Amsterdam")
P_EDIT = replace(BASE, subject="Planning (portal)")
G_EDIT = replace(BASE, location="Room 7")
EARLY, LATE = NOW - timedelta(minutes=5), NOW - timedelta(minutes=1)
LINKS = {"L1": Link(1, "g1", BASE)}


def p(state, at=EARLY, eligible=True):
    return PortalItem(state, at, eligible)


def g(state, at=LATE, etag="e1"):
    return GoogleItem(state, at, etag)


@pytest.mark.parametrize(
    ("portal", "google", "expected"),
    [
        pytest.param({}, {}, [], id="nothing changed: no actions"),
        pytest.param({1: p(BASE)}, {"g1": g(BASE)}, [], id="echo of our own writes: no actions"),
        pytest.param({1: p(P_EDIT)}, {}, [UpdateEvent("g1", P_EDIT, None), SetBase("L1", P_EDIT)], id="portal edit"),
        pytest.param({}, {"g1": g(G_EDIT)}, [UpdateActivity(1, G_EDIT), SetBase("L1", G_EDIT)], id="google edit"),
        pytest.param({1: p(None)}, {}, [DeleteEvent("g1", None), Unlink("L1")], id="portal delete"),
        pytest.param({}, {"g1": g(None)}, [TrashActivity(1), Unlink("L1")], id="google delete"),
        pytest.param({1: p(None)}, {"g1": g(None)}, [Unlink("L1")], id="deleted on both"),
        pytest.param({1: p(P_EDIT)}, {"g1": g(None)}, [RecreateEvent("L1", 1, "g1", P_EDIT), SetBase("L1", P_EDIT)],
                     id="google delete loses to portal edit"),
        pytest.param({1: p(None)}, {"g1": g(G_EDIT)}, [RestoreActivity(1, G_EDIT), SetBase("L1", G_EDIT)],
                     id="portal delete loses to google edit"),
        pytest.param({1: p(P_EDIT)}, {"g1": g(P_EDIT)}, [SetBase("L1", P_EDIT)], id="same edit on both: only the base moves"),
        pytest.param({1: p(P_EDIT)}, {"g1": g(G_EDIT)},
                     [UpdateActivity(1, replace(P_EDIT, location="Room 7")), UpdateEvent("g1", replace(P_EDIT, location="Room 7"), "e1"),
                      SetBase("L1", replace(P_EDIT, location="Room 7"))], id="both edit other fields: merged to both"),
        pytest.param({1: p(BASE, eligible=False)}, {}, [DeleteEvent("g1", None, NOT_SYNCED_TYPE), Unlink("L1")],
                     id="type deselected: event deleted, activity stays"),
        pytest.param({1: p(BASE, eligible=False)}, {"g1": g(G_EDIT)},
                     [UpdateActivity(1, G_EDIT), DeleteEvent("g1", "e1", NOT_SYNCED_TYPE), Unlink("L1")],
                     id="type deselected while google edited: edit kept, then event deleted"),
        pytest.param({1: p(BASE, eligible=False)}, {"g1": g(None)}, [Unlink("L1")], id="type deselected, event already gone"),
    ],
)
def test_linked_items(portal, google, expected):
    assert plan_cycle(LINKS, portal, google) == expected


def test_conflict_is_recorded_before_the_writes_with_the_losing_value():
    portal_state = replace(BASE, subject="Portal title")
    google_state = replace(BASE, subject="Google title")
    actions = plan_cycle(LINKS, {1: p(portal_state, at=EARLY)}, {"g1": g(google_state, at=LATE)})
    assert actions == [
        RecordConflict("L1", 1, "g1", Conflict("subject", Side.GOOGLE, "Google title", "Portal title")),
        UpdateActivity(1, google_state),
        SetBase("L1", google_state),
    ]


def test_item_born_in_google_is_not_deleted_there_by_a_portal_type_rule():
    links = {"L1": Link(1, "g1", BASE, origin=Side.GOOGLE)}
    assert plan_cycle(links, {1: p(P_EDIT, eligible=False)}, {}) == [UpdateEvent("g1", P_EDIT, None), SetBase("L1", P_EDIT)]


def test_new_items_are_created_on_the_other_side_and_rules_respected():
    other = replace(BASE, subject="Other")
    actions = plan_cycle(
        {},
        {2: p(BASE), 3: p(other, eligible=False), 4: p(None)},
        {"gz": g(other), "gy": g(None)},
    )
    # not eligible (type not selected, project task, nobody syncing) never reaches Google;
    # deleted before the first sync leaves nothing to do
    assert actions == [CreateEvent(2, BASE), CreateActivity("gz", other)]


def test_half_open_links_finish_their_create():
    links = {"L1": Link(1, None, None), "L2": Link(None, "g2", None), "L3": Link(3, None, None)}
    actions = plan_cycle(links, {1: p(BASE), 3: p(None)}, {"g2": g(G_EDIT)})
    assert actions == [CreateEvent(1, BASE, "L1"), CreateActivity("g2", G_EDIT, "L2"), Unlink("L3")]


def test_one_bad_item_does_not_stop_the_cycle():
    links = {
        "bad": Link(1, "g9", None),  # never agreed and only one side known: cannot be decided
        "first": Link(2, "g2", BASE),
        "dup": Link(4, "g2", BASE),  # a second link to the same event would make a duplicate
        "ok": Link(3, "g3", BASE),
    }
    actions = plan_cycle(links, {1: p(P_EDIT), 3: p(P_EDIT), 4: p(P_EDIT)}, {})
    errors = [a for a in actions if isinstance(a, ItemError)]
    assert [(e.side, e.item_id, e.link_id) for e in errors] == [(Side.PORTAL, 1, "bad"), (Side.GOOGLE, "g2", "dup")]
    assert all(e.message for e in errors)
    assert [a for a in actions if not isinstance(a, ItemError)] == [UpdateEvent("g3", P_EDIT, None), SetBase("ok", P_EDIT)]


# ---------------------------------------------------------------- first sync


def test_first_sync_links_matches_and_creates_the_rest():
    old = replace(BASE, subject="Old", start=NOW - timedelta(days=60), end=NOW - timedelta(days=60, hours=-1))
    old_series = replace(old, subject="Old series", recurrence=("RRULE:FREQ=WEEKLY",))
    p_match = replace(BASE, description="portal notes")
    g_match = replace(BASE, subject=" planning ", description="google notes")
    actions = plan_cycle(
        {},
        {1: p(p_match, at=EARLY), 2: p(old), 3: p(P_EDIT)},
        {"g1": g(g_match, at=LATE), "g2": g(old_series), "g3": g(old)},
        first_sync=True,
        now=NOW,
    )
    merged = replace(g_match)
    assert actions == [
        RecordConflict(None, 1, "g1", Conflict("subject", Side.GOOGLE, " planning ", "Planning")),
        RecordConflict(None, 1, "g1", Conflict("description", Side.GOOGLE, "google notes", "portal notes")),
        UpdateActivity(1, merged),
        LinkItems(1, "g1", merged),
        CreateEvent(3, P_EDIT),
        CreateActivity("g2", old_series),  # older than 30 days but with future occurrences
    ]


def test_first_sync_of_identical_items_is_a_plain_link():
    actions = plan_cycle({}, {1: p(BASE)}, {"g1": g(BASE)}, first_sync=True, now=NOW)
    assert actions == [LinkItems(1, "g1", BASE)]


def test_first_sync_keeps_existing_links():
    actions = plan_cycle(LINKS, {1: p(BASE), 2: p(BASE)}, {"g1": g(BASE), "g2": g(BASE)}, first_sync=True, now=NOW)
    assert actions == [LinkItems(2, "g2", BASE)]


def test_first_sync_needs_now():
    with pytest.raises(ValueError):
        plan_cycle({}, {}, {}, first_sync=True)


# An item syncs only while someone with calendar sync on takes part in it (the mission: a user whose sync
# is off has items synced only through a colleague who syncs).
SYNCING = frozenset({"anna@acme.test"})
WITH_ANNA = replace(BASE, participants=frozenset({"cees@acme.test", "anna@acme.test"}))
WITHOUT_ANNA = replace(BASE, participants=frozenset({"cees@acme.test"}))


@pytest.mark.parametrize(
    ("origin", "base", "portal", "google", "expected"),
    [
        pytest.param(Side.PORTAL, WITH_ANNA, {}, {"g1": g(WITHOUT_ANNA)},
                     [UpdateActivity(1, WITHOUT_ANNA), DeleteEvent("g1", "e1", NOBODY_SYNCING), Unlink("L1")],
                     id="born in the portal, the syncing guest removed in Google: taken in, the event leaves"),
        pytest.param(Side.PORTAL, WITH_ANNA, {1: p(WITHOUT_ANNA)}, {},
                     [DeleteEvent("g1", None, NOBODY_SYNCING), Unlink("L1")],
                     id="born in the portal, the syncing participant removed there: the event leaves"),
        pytest.param(Side.GOOGLE, WITH_ANNA, {1: p(WITHOUT_ANNA)}, {},
                     [UpdateEvent("g1", WITHOUT_ANNA, None), TrashActivity(1, NOBODY_SYNCING), Unlink("L1")],
                     id="born in Google, the syncing participant removed in the portal: sent, the activity leaves"),
        pytest.param(Side.GOOGLE, WITH_ANNA, {}, {"g1": g(WITHOUT_ANNA)},
                     [UpdateActivity(1, WITHOUT_ANNA), TrashActivity(1, NOBODY_SYNCING), Unlink("L1")],
                     id="born in Google, the syncing guest removed there: the activity leaves, as it last was"),
        pytest.param(Side.PORTAL, WITHOUT_ANNA, {1: p(replace(WITHOUT_ANNA, subject="x"))}, {}, [],
                     id="nobody syncing before nor now (sync switched off): nothing moves"),
        pytest.param(Side.PORTAL, WITHOUT_ANNA, {1: p(None)}, {"g1": g(None)}, [Unlink("L1")],
                     id="nobody syncing, deleted on both sides: the link ends"),
        pytest.param(Side.PORTAL, WITHOUT_ANNA, {1: p(WITH_ANNA)}, {},
                     [UpdateEvent("g1", WITH_ANNA, None), SetBase("L1", WITH_ANNA)],
                     id="a syncing participant added again: the pair syncs again from its last agreement"),
    ],
)
def test_who_syncs_decides_whether_a_pair_syncs(origin, base, portal, google, expected):
    links = {"L1": Link(1, "g1", base, origin=origin)}
    assert plan_cycle(links, portal, google, syncing=SYNCING) == expected


def test_new_portal_items_go_to_google_only_when_someone_syncing_takes_part():
    actions = plan_cycle({}, {1: p(WITHOUT_ANNA), 2: p(WITH_ANNA)}, {}, syncing=SYNCING)
    assert actions == [CreateEvent(2, WITH_ANNA)]


def test_a_half_open_link_is_finished_only_while_someone_syncing_takes_part():
    links = {"L1": Link(1, None, None)}
    assert plan_cycle(links, {1: p(WITHOUT_ANNA)}, {}, syncing=SYNCING) == [Unlink("L1")]
    assert plan_cycle(links, {1: p(WITH_ANNA)}, {}, syncing=SYNCING) == [CreateEvent(1, WITH_ANNA, "L1")]


def test_a_pair_matched_on_a_first_sync_keeps_both_copies_when_it_stops_syncing():
    links = {"L1": Link(1, "g1", WITH_ANNA, origin=None)}
    assert plan_cycle(links, {1: p(WITHOUT_ANNA)}, {}, syncing=SYNCING) == [
        UpdateEvent("g1", WITHOUT_ANNA, None), Unlink("L1")]
    assert plan_cycle(links, {1: p(WITH_ANNA, eligible=False)}, {"g1": g(replace(WITH_ANNA, location="R"))},
                      syncing=SYNCING) == [UpdateActivity(1, replace(WITH_ANNA, location="R")), Unlink("L1")]
