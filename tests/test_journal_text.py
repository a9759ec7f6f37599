"""The sync's journal in words: one sentence per kind of entry, counts in words, the catalogue's fixes."""

from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from portal.sync.journal_text import cycle_counts, describe_entry, fix_for, show_when

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
WEEKLY = SimpleNamespace(subject="Weekly sync")


def state(**values):
    base = {"subject": "Weekly sync", "description": "", "location": "", "all_day": False,
            "start": {"dateTime": "2026-12-02T08:00:00+00:00"}, "end": {"dateTime": "2026-12-02T09:00:00+00:00"},
            "time_zone": "Europe/Amsterdam", "recurrence": [], "participants": ["user@acme.test"],
            "private": False, "exceptions": {}}
    return base | values


def entry(kind, side=None, field=None, before=None, after=None, message=None):
    return SimpleNamespace(kind=kind, side=side, field=field, before=before, after=after, message=message)


def test_created_in_google_from_the_portal():
    assert describe_entry(entry("created", "google", after=state(subject="Dentist")), None,
                          AMSTERDAM) == "Created ‘Dentist’ in Google"


def test_created_in_the_portal_from_google():
    text = describe_entry(entry("created", "portal", after=state(subject="Lunch")), None, AMSTERDAM)
    assert text == "Added ‘Lunch’ to the portal — created in Google"


def test_moved_in_google():
    moved = state(start={"dateTime": "2026-12-03T09:00:00+00:00"}, end={"dateTime": "2026-12-03T10:00:00+00:00"})
    text = describe_entry(entry("updated", "portal", before=state(), after=moved), WEEKLY, AMSTERDAM)
    assert text == "Moved ‘Weekly sync’ to Thu 3 Dec 10:00 CET — changed in Google"


def test_moved_and_renamed_and_place_changed_from_the_portal():
    after = state(subject="Weekly sync (new)", location="Room 4",
                  start={"dateTime": "2026-12-03T09:00:00+00:00"}, end={"dateTime": "2026-12-03T10:00:00+00:00"})
    text = describe_entry(entry("updated", "google", before=state(), after=after), None, AMSTERDAM)
    assert text == ("Moved ‘Weekly sync’ to Thu 3 Dec 10:00 CET, renamed it ‘Weekly sync (new)’ and changed "
                    "its place — sent to Google")


def test_renamed_only():
    text = describe_entry(entry("updated", "portal", before=state(), after=state(subject="Standup")), None, AMSTERDAM)
    assert text == "Renamed ‘Weekly sync’ to ‘Standup’ — changed in Google"


def test_other_fields_are_named():
    after = state(description="Agenda", participants=["a@acme.test", "user@acme.test"], recurrence=["RRULE:FREQ=DAILY"])
    text = describe_entry(entry("updated", "portal", before=state(), after=after), WEEKLY, AMSTERDAM)
    assert text == "Changed the description, repeat rule and participants of ‘Weekly sync’ — changed in Google"


def test_update_without_a_visible_difference():
    assert describe_entry(entry("updated", "google", before=state(), after=state()), WEEKLY,
                          AMSTERDAM) == "Updated ‘Weekly sync’ — sent to Google"


def test_all_day_move_shows_a_day():
    after = state(all_day=True, start={"date": "2026-12-04"}, end={"date": "2026-12-05"})
    text = describe_entry(entry("updated", "portal", before=state(), after=after), WEEKLY, AMSTERDAM)
    assert text.startswith("Moved ‘Weekly sync’ to Fri 4 Dec 2026")


def test_deleted_on_each_side():
    assert describe_entry(entry("deleted", "google", before=state()), None, AMSTERDAM) == \
        "Deleted ‘Weekly sync’ in Google"
    text = describe_entry(entry("deleted", "portal", before=state(), message="It can be restored for 30 days."),
                          WEEKLY, AMSTERDAM)
    assert text == "Moved ‘Weekly sync’ to the trash — deleted in Google. It can be restored for 30 days."


def test_restored():
    assert describe_entry(entry("restored", "portal", after=state()), WEEKLY, AMSTERDAM).startswith(
        "Brought ‘Weekly sync’ back from the trash")


def test_linked():
    assert describe_entry(entry("linked"), WEEKLY, AMSTERDAM) == \
        "Linked ‘Weekly sync’ with the same event in Google (found on both sides, not copied)"


def test_conflict_names_both_values():
    text = describe_entry(entry("conflict", "portal", "location", before="Room 1", after="Room 2"), WEEKLY, AMSTERDAM)
    assert text == "Both sides changed the place of ‘Weekly sync’: kept “Room 2”, the value from the portal was “Room 1”"


def test_conflict_on_a_time():
    text = describe_entry(entry("conflict", "google", "start", before="2026-12-02T08:00:00+00:00",
                                after="2026-12-02T09:00:00+00:00"), WEEKLY, AMSTERDAM)
    assert "kept Wed 2 Dec 10:00 CET" in text and "from Google was Wed 2 Dec 09:00 CET" in text


def test_error():
    text = describe_entry(entry("error", message="Only the organizer of this event can change it in Google."),
                          WEEKLY, AMSTERDAM)
    assert text == "Could not sync ‘Weekly sync’: Only the organizer of this event can change it in Google."


def test_answered():
    assert describe_entry(entry("answered", "google", after="tentative"), WEEKLY, AMSTERDAM) == \
        "Sent the answer “Maybe” to ‘Weekly sync’ to Google"


def test_no_item_at_all():
    assert describe_entry(entry("error", message="Bad event."), None, AMSTERDAM) == "Could not sync an item: Bad event."
    assert describe_entry(entry("resync"), None, AMSTERDAM).startswith("Google asked for the whole calendar")


def test_every_kind_is_a_sentence_without_raw_values():
    for kind in ("created", "updated", "deleted", "restored", "linked", "conflict", "error", "answered"):
        for side in ("google", "portal", None):
            text = describe_entry(entry(kind, side, "subject", before="A", after="B"), WEEKLY, AMSTERDAM)
            assert text and "None" not in text and "True" not in text and "{" not in text


def test_times_carry_their_zone():
    assert show_when({"dateTime": "2026-07-01T08:00:00+00:00"}, AMSTERDAM) == "Wed 1 Jul 10:00 CEST"
    assert show_when("2026-12-01T08:00:00+00:00", ZoneInfo("Asia/Tokyo")) == "Tue 1 Dec 17:00 JST"


@pytest.mark.parametrize(("counts", "words"), [
    ((0, 0, 0, 0), "nothing changed"),
    ((2, 1, 0, 0), "2 from Google, 1 to Google"),
    ((0, 0, 1, 2), "1 conflict, 2 items not synced"),
    ((0, 3, 2, 1), "3 to Google, 2 conflicts, 1 item not synced"),
])
def test_cycle_counts_in_words(counts, words):
    assert cycle_counts(*counts) == words


def test_fix_comes_from_the_catalogue():
    assert fix_for("Only the organizer of this event can change it in Google.") == "Change the activity as its owner."
    assert fix_for("Google refused the event: the end is before the start").startswith("Correct the activity")
    assert fix_for("Something nobody catalogued.").startswith("The portal tries again")
    assert fix_for(None).startswith("The portal tries again")
