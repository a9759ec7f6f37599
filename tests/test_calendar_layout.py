"""The week grid's layout, worked out without a page: lanes for overlapping items, places and sizes by time."""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from portal.calendar_layout import side_by_side, week_layout
from portal.models import Occurrence

AMS = ZoneInfo("Europe/Amsterdam")
MONDAY = date(2027, 1, 11)


def lanes_of(intervals):
    return {p.item: (p.lane, p.lanes, p.span) for p in side_by_side(intervals)}


def test_items_apart_share_one_lane():
    assert lanes_of([(9, 10, "a"), (11, 12, "b")]) == {"a": (0, 1, 1), "b": (0, 1, 1)}


def test_an_item_ending_when_the_next_starts_does_not_overlap_it():
    assert lanes_of([(9, 10, "a"), (10, 11, "b")]) == {"a": (0, 1, 1), "b": (0, 1, 1)}


def test_overlapping_items_go_side_by_side_whatever_order_they_come_in():
    assert lanes_of([(10, 11, "b"), (9, 10.5, "a")]) == {"a": (0, 2, 1), "b": (1, 2, 1)}


def test_a_chain_of_overlaps_is_one_group_and_reuses_freed_lanes():
    assert lanes_of([(9, 11, "a"), (10, 12, "b"), (11, 13, "c")]) == {
        "a": (0, 2, 1), "b": (1, 2, 1), "c": (0, 2, 1)}


def test_of_equal_starts_the_longer_one_comes_first():
    assert lanes_of([(9, 10, "short"), (9, 12, "long")]) == {"long": (0, 2, 1), "short": (1, 2, 1)}


def test_an_item_widens_into_lanes_free_for_its_whole_time():
    placed = lanes_of([(9, 12, "a"), (9, 10, "b"), (9, 10, "c"), (10, 12, "d")])
    assert placed == {"a": (0, 3, 1), "b": (1, 3, 1), "c": (2, 3, 1), "d": (1, 3, 2)}


def test_a_new_group_starts_with_full_width_again():
    placed = lanes_of([(9, 11, "a"), (10, 11, "b"), (14, 15, "c")])
    assert placed["c"] == (0, 1, 1) and placed["a"][1] == 2


def test_nothing_to_place():
    assert side_by_side([]) == []


def test_lanes_work_on_datetimes():
    nine = datetime(2027, 1, 11, 9, tzinfo=AMS)
    placed = lanes_of([(nine, nine + timedelta(hours=1), "a"), (nine, nine + timedelta(hours=2), "b")])
    assert placed == {"b": (0, 2, 1), "a": (1, 2, 1)}


def timed(day, start, end, subject="Item", end_day=None):
    def at(d, hhmm):
        hours, minutes = map(int, hhmm.split(":"))
        return datetime(d.year, d.month, d.day, hours, minutes, tzinfo=AMS)
    return Occurrence(None, "", at(day, start), at(end_day or day, end), subject, "", False)


def all_day(first, last, subject="Holiday"):
    return Occurrence(None, "", first, last + timedelta(days=1), subject, "", False)


def layout(*occurrences, now=datetime(2027, 1, 13, 12, tzinfo=AMS)):
    return week_layout(list(occurrences), MONDAY, AMS, now)


def test_an_item_is_placed_and_sized_by_its_time_of_day():
    week = layout(timed(MONDAY, "09:00", "10:00", "Nine"), timed(MONDAY, "10:00", "11:00", "Ten"))
    nine, ten = week.days[0].timed
    assert (nine.top, nine.height) == (pytest.approx(37.5), pytest.approx(100 / 24))
    assert ten.top == pytest.approx(100 * 10 / 24)
    assert (nine.left, nine.width, ten.left, ten.width) == (0, 100, 0, 100)
    assert nine.style_data() == {"data-top": "37.5", "data-height": "4.167", "data-left": "0", "data-width": "100"}


def test_overlapping_items_share_the_day_column():
    week = layout(timed(MONDAY, "09:00", "10:30", "A"), timed(MONDAY, "10:00", "11:00", "B"))
    a, b = week.days[0].timed
    assert (a.left, a.width, b.left, b.width) == (0, 50, 50, 50)


def test_a_short_item_is_drawn_tall_enough_to_read_and_kept_clear_of_the_next():
    week = layout(timed(MONDAY, "09:00", "09:00", "Reminder"), timed(MONDAY, "09:15", "10:00", "Call"))
    reminder, call = week.days[0].timed
    assert reminder.height == pytest.approx(100 * 30 / 1440)
    assert reminder.width == call.width == 50


def test_an_item_across_midnight_shows_on_both_days_cut_at_midnight():
    tuesday, wednesday = MONDAY + timedelta(days=1), MONDAY + timedelta(days=2)
    week = layout(timed(tuesday, "22:00", "01:00", "Night shift", end_day=wednesday))
    [late], [early] = week.days[1].timed, week.days[2].timed
    assert (late.top, late.top + late.height, late.goes_on, late.from_earlier) == (
        pytest.approx(100 * 22 / 24), pytest.approx(100), True, False)
    assert (early.top, early.height, early.from_earlier) == (0, pytest.approx(100 / 24), True)
    assert not week.days[0].timed and not week.days[3].timed


def test_all_day_items_go_on_top_and_keep_their_lane_across_days():
    wednesday, thursday, friday = (MONDAY + timedelta(days=n) for n in (2, 3, 4))
    trip = all_day(wednesday, friday, "Trip")
    day_off = all_day(thursday, thursday, "Day off")
    week = layout(day_off, trip, timed(MONDAY + timedelta(days=6), "08:00", "08:00", "Sunday", end_day=MONDAY + timedelta(days=7)))
    assert [[b and b.occurrence.subject for b in d.all_day] for d in week.days] == [
        [], [], ["Trip"], ["Trip", "Day off"], ["Trip"], [], ["Sunday"]]
    wed, thu, fri = (week.days[n].all_day[0] for n in (2, 3, 4))
    assert (wed.from_earlier, wed.goes_on, thu.from_earlier, thu.goes_on, fri.goes_on) == (
        False, True, True, True, False)


def test_an_all_day_item_of_the_week_before_and_after_is_cut_to_the_week():
    week = layout(all_day(MONDAY - timedelta(days=3), MONDAY + timedelta(days=9), "Long"))
    assert all(d.all_day and d.all_day[0].occurrence.subject == "Long" for d in week.days)
    assert week.days[0].all_day[0].from_earlier and week.days[6].all_day[0].goes_on


def test_today_has_the_now_line_and_the_other_days_do_not():
    week = layout(now=datetime(2027, 1, 13, 12, tzinfo=AMS))
    assert [d.is_today for d in week.days] == [False, False, True, False, False, False, False]
    assert week.days[2].now == pytest.approx(50) and week.days[0].now is None
    assert all(not d.is_today for d in layout(now=datetime(2027, 2, 1, 12, tzinfo=AMS)).days)


def test_the_grid_opens_at_seven_or_at_the_hour_of_an_earlier_item():
    assert layout().scroll_to == pytest.approx(100 * 7 / 24)
    assert layout(timed(MONDAY, "05:30", "06:00")).scroll_to == pytest.approx(100 * 5 / 24)


def test_wall_clock_places_items_on_a_day_saving_time_starts():
    sunday = date(2026, 3, 29)
    week = week_layout([timed(sunday, "09:00", "10:00")], date(2026, 3, 23), AMS, datetime(2026, 3, 1, tzinfo=AMS))
    assert week.days[6].timed[0].top == pytest.approx(37.5)


def test_the_zone_is_named_with_its_abbreviation_and_a_change_of_clocks():
    from portal.calendar_layout import zone_label

    monday = datetime(2026, 3, 23, tzinfo=AMS)
    assert zone_label(AMS, monday) == "Europe/Amsterdam, CET"
    assert zone_label(AMS, monday, days=7) == "Europe/Amsterdam, CET, CEST from Sun 29 Mar"
    assert zone_label(ZoneInfo("UTC"), monday, days=7) == "UTC"


def test_a_list_row_says_its_date_and_times_with_the_zone():
    from portal.calendar_layout import ListRow

    row = ListRow(None, timed(MONDAY, "09:00", "10:30"), upcoming=True)
    assert row.when(AMS) == "Mon 2027-01-11 09:00–10:30 CET"
    assert ListRow(None, all_day(MONDAY, MONDAY + timedelta(days=2)), False).when(AMS) == (
        "Mon 2027-01-11, 3 days (all day)")
    overnight = timed(MONDAY, "22:00", "01:00", end_day=MONDAY + timedelta(days=1))
    assert ListRow(None, overnight, False).when(AMS) == "Mon 2027-01-11 22:00–Tue 2027-01-12 01:00 CET"
