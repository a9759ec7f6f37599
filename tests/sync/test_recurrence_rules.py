"""Recurrence lines: validation messages, canonical spelling and DST-correct expansion."""

from datetime import UTC, date, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from portal.sync.occurrences import has_occurrence_after, is_occurrence, occurrence_key, occurrences
from portal.sync.recurrence import RecurrenceError, is_editable, normalize_recurrence, validate_recurrence
from portal.sync.recurrence_text import describe

AMS = ZoneInfo("Europe/Amsterdam")
EPOCH = datetime(1900, 1, 1, tzinfo=UTC)


def timed(local_start: datetime, zone: str, lines: list[str], *, minutes: int = 60, n: int = 50) -> list[datetime]:
    """Local starts of the first ``n`` occurrences of a timed series."""
    start = local_start.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    occ = occurrences(start, start + timedelta(minutes=minutes), zone, lines, after=EPOCH, before=None, all_day=False)
    return [s.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for s, _ in islice(occ, n)]


def all_day(first: date, zone: str, lines: list[str], *, n: int = 50) -> list[tuple[date, date]]:
    occ = occurrences(first, first + timedelta(days=1), zone, lines, after=EPOCH, before=None, all_day=True)
    return list(islice(occ, n))


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["FOO:BAR"], "Unknown recurrence property"),
        (["RRULE:FREQ=SOMETIMES"], "FREQ=SOMETIMES is not supported"),
        (["RRULE:FREQ=HOURLY"], "FREQ=HOURLY is not supported"),
        (["RRULE:INTERVAL=2"], "needs a FREQ"),
        (["RRULE:FREQ=DAILY;COUNT=3;UNTIL=20240101T000000Z"], "both COUNT and UNTIL"),
        (["DTSTART:20240101T090000Z"], "DTSTART is not allowed"),
        (["EXDATE:2024-01-01"], "is not a date"),
        (["EXDATE:20240231"], "not a valid date"),
        (["RDATE;VALUE=PERIOD:20240101T090000Z/PT1H"], "periods are not supported"),
        (["EXDATE;VALUE=DATE:20240101T090000Z"], "holds a date-time"),
        (["EXDATE;TZID=Mars/Olympus:20240101T090000"], "Unknown time zone"),
        (["EXDATE;FOO=1:20240101"], "Unknown EXDATE parameter"),
        (["RRULE:FREQ=DAILY;INTERVAL=0"], "INTERVAL must be 1 or more"),
        (["RRULE:FREQ=DAILY;COUNT=0"], "COUNT must be 1 or more"),
        (["RRULE:FREQ=DAILY;COUNT=two"], "needs a whole number"),
        (["RRULE:FREQ=WEEKLY;BYDAY=2TU"], "need FREQ=MONTHLY or YEARLY"),
        (["RRULE:FREQ=MONTHLY;BYDAY=XX"], "is not a weekday"),
        (["RRULE:FREQ=MONTHLY;BYDAY=0MO"], "out of range"),
        (["RRULE:FREQ=MONTHLY;BYMONTHDAY=32"], "out of range"),
        (["RRULE:FREQ=YEARLY;BYMONTH=13"], "out of range"),
        (["RRULE:FREQ=YEARLY;BYMONTH=-1"], "out of range"),
        (["RRULE:FREQ=MONTHLY;BYSETPOS=1"], "BYSETPOS only makes sense"),
        (["RRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30,-31"], "never occurs"),
        (["RRULE:FREQ=DAILY;FOO=1"], "Unknown RRULE part"),
        (["RRULE:FREQ=DAILY;FREQ=WEEKLY"], "appears twice"),
        (["RRULE:FREQ=DAILY;COUNT"], "has no value"),
        (["RRULE;X=1:FREQ=DAILY"], "takes no parameters"),
        (["RRULE:FREQ=WEEKLY;WKST=XX"], "not a weekday"),
        (["FREQ=DAILY"], "without a ':'"),
    ],
)
def test_invalid_lines_are_refused_with_a_readable_message(lines, message):
    with pytest.raises(RecurrenceError, match=message):
        validate_recurrence(lines, all_day=False)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["RRULE:FREQ=DAILY;BYHOUR=9"], "cannot repeat by hour"),
    ],
)
def test_all_day_series_refuse_times(lines, message):
    with pytest.raises(RecurrenceError, match=message):
        validate_recurrence(lines, all_day=True)


@pytest.mark.parametrize(("line", "day"), [
    ("EXDATE:20240101T090000Z", "20240101"),
    ("EXDATE;TZID=Europe/Helsinki:20241203T000000", "20241203"),  # midnight in Helsinki is 22:00 UTC the day before
    ("RDATE;TZID=America/New_York:20241202T230000", "20241202"),
])
def test_all_day_series_read_a_time_as_the_day_it_names(line, day):
    [rule] = validate_recurrence([line], all_day=True)
    assert day in rule and "T" not in rule.split(":", 1)[1]


def test_all_day_until_given_as_a_time_becomes_a_date():
    assert validate_recurrence(["RRULE:FREQ=DAILY;UNTIL=20240110T235959Z"], all_day=True) == [
        "RRULE:FREQ=DAILY;UNTIL=20240110"
    ]


def test_a_bare_string_is_one_line_not_many():
    assert normalize_recurrence("rrule:freq=daily") == ("RRULE:FREQ=DAILY",)


# ---------------------------------------------------------------- canonical spelling


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (["RRULE:FREQ=WEEKLY;BYDAY=WE,MO;INTERVAL=1"], ["RRULE:INTERVAL=1;FREQ=WEEKLY;BYDAY=MO,WE;WKST=MO"]),
        (["rrule:freq=monthly;byday=+2tu"], ["RRULE:FREQ=MONTHLY;BYDAY=2TU"]),
        (["RRULE:FREQ=MONTHLY;BYMONTHDAY=15,1,+15"], ["RRULE:FREQ=MONTHLY;BYMONTHDAY=1,15"]),
        (["RRULE:FREQ=YEARLY;BYMONTH=12,3;BYSETPOS=-1,1;BYDAY=SU"], ["RRULE:BYSETPOS=1,-1;FREQ=YEARLY;BYDAY=SU;BYMONTH=3,12"]),
        (["RRULE:FREQ=DAILY", "EXDATE:20240103T080000Z,20240102T080000Z"],
         ["EXDATE:20240102T080000Z", "RRULE:FREQ=DAILY", "EXDATE:20240103T080000Z", "EXDATE:20240102T080000Z"]),
        (["RRULE:FREQ=DAILY", "EXDATE;TZID=Europe/Amsterdam:20240102T090000"],
         ["RRULE:FREQ=DAILY", "EXDATE:20240102T080000Z"]),
        (["RRULE:FREQ=DAILY", "EXDATE;VALUE=DATE:20240102"], ["RRULE:FREQ=DAILY", "EXDATE:20240102"]),
        (["  RRULE:FREQ=DAILY;UNTIL=20240110T090000Z  ", ""], ["RRULE:UNTIL=20240110T090000Z;FREQ=DAILY"]),
    ],
)
def test_equivalent_spellings_normalize_equal(left, right):
    assert normalize_recurrence(left) == normalize_recurrence(right)


def test_canonical_form_is_readable_and_stable():
    lines = ["EXDATE;VALUE=DATE:20240105", "RDATE:20240120T090000Z", "RRULE:WKST=SU;BYDAY=FR,MO;FREQ=WEEKLY;INTERVAL=2"]
    canonical = normalize_recurrence(lines)
    assert canonical == (
        "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR;WKST=SU",
        "RDATE:20240120T090000Z",
        "EXDATE;VALUE=DATE:20240105",
    )
    assert normalize_recurrence(canonical) == canonical


def test_floating_exdate_becomes_utc_when_the_zone_is_known():
    assert normalize_recurrence(["EXDATE:20240701T090000"], time_zone="Europe/Amsterdam") == (
        "EXDATE:20240701T070000Z",
    )
    assert normalize_recurrence(["EXDATE:20240701T090000"]) == ("EXDATE:20240701T090000",)


@pytest.mark.parametrize(
    ("lines", "editable"),
    [
        ([], True),
        (["RRULE:FREQ=WEEKLY;BYDAY=MO", "EXDATE:20240101T090000Z", "RDATE:20240103T090000Z"], True),
        (["RDATE:20240101T090000Z,20240108T090000Z"], False),
        (["RRULE:FREQ=DAILY", "EXRULE:FREQ=WEEKLY;BYDAY=SA,SU"], False),
        (["RRULE:FREQ=DAILY", "RRULE:FREQ=WEEKLY"], False),
        (["RRULE:FREQ=SECONDLY"], False),
    ],
)
def test_is_editable_gives_a_reason_when_not(lines, editable):
    ok, reason = is_editable(lines)
    assert ok is editable
    assert (reason is None) is editable
    if reason:
        assert reason[0].isupper()


@pytest.mark.parametrize(
    ("lines", "text"),
    [
        (["RRULE:FREQ=WEEKLY;BYDAY=WE,MO;INTERVAL=2;COUNT=10"], "Weekly on Mon, Wed, every 2 weeks, 10 times"),
        (["RRULE:FREQ=DAILY"], "Daily"),
        (["RRULE:FREQ=MONTHLY;BYDAY=2TU"], "Monthly on the 2nd Tue"),
        (["RRULE:FREQ=MONTHLY;BYDAY=-1FR"], "Monthly on the last Fri"),
        (["RRULE:FREQ=MONTHLY;BYMONTHDAY=15;UNTIL=20241231"], "Monthly, day 15, until 2024-12-31"),
        (["RRULE:FREQ=YEARLY;BYMONTH=3,9;BYDAY=-1SU"], "Yearly on the last Sun, in Mar, Sep"),
        (["RRULE:FREQ=DAILY;COUNT=1"], "Daily, once"),
        (["RRULE:FREQ=DAILY", "EXDATE:20240101T090000Z"], "Daily, except 1 date"),
        (["RDATE:20240101T090000Z"], "Custom dates"),
        ([], "Does not repeat"),
        (["GARBAGE"], "Custom recurrence"),
    ],
)
def test_describe(lines, text):
    assert describe(lines) == text


# ---------------------------------------------------------------- expansion


def test_weekly_meeting_stays_at_nine_local_across_the_march_dst_change():
    # Europe/Amsterdam moves to summer time on the last Sunday of March (2024-03-31).
    local = timed(datetime(2024, 3, 18, 9, 0), "Europe/Amsterdam", ["RRULE:FREQ=WEEKLY;COUNT=4"])
    assert local == [datetime(2024, 3, d, 9) for d in (18, 25)] + [datetime(2024, 4, d, 9) for d in (1, 8)]
    start = datetime(2024, 3, 18, 9, tzinfo=AMS).astimezone(UTC)
    utc_hours = [
        s.hour
        for s, _ in occurrences(start, start + timedelta(hours=1), "Europe/Amsterdam", ["RRULE:FREQ=WEEKLY;COUNT=4"],
                                after=EPOCH, before=None, all_day=False)
    ]
    assert utc_hours == [8, 8, 7, 7]


def test_occurrence_end_keeps_the_duration():
    start = datetime(2024, 3, 25, 8, tzinfo=UTC)
    occ = list(occurrences(start, start + timedelta(minutes=45), "Europe/Amsterdam", ["RRULE:FREQ=WEEKLY;COUNT=2"],
                           after=EPOCH, before=None, all_day=False))
    assert all(e - s == timedelta(minutes=45) for s, e in occ)


@pytest.mark.parametrize("zone", ["Pacific/Honolulu", "Pacific/Tongatapu"])
def test_all_day_weekly_series_stays_on_its_dates_far_from_utc(zone):
    occ = all_day(date(2024, 3, 28), zone, ["RRULE:FREQ=WEEKLY;COUNT=3"])
    assert occ == [
        (date(2024, 3, 28), date(2024, 3, 29)),
        (date(2024, 4, 4), date(2024, 4, 5)),
        (date(2024, 4, 11), date(2024, 4, 12)),
    ]
    assert [occurrence_key(s, True) for s, _ in occ] == ["20240328", "20240404", "20240411"]


@pytest.mark.parametrize(
    ("first", "rule", "expected"),
    [
        # second Tuesday of each month
        (date(2024, 1, 9), "RRULE:FREQ=MONTHLY;BYDAY=2TU;COUNT=3", [date(2024, 1, 9), date(2024, 2, 13), date(2024, 3, 12)]),
        # last Friday of each month
        (date(2024, 1, 26), "RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=3", [date(2024, 1, 26), date(2024, 2, 23), date(2024, 3, 29)]),
        # last working day of each month
        (date(2024, 1, 31), "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;COUNT=4",
         [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 29), date(2024, 4, 30)]),
        (date(2024, 1, 15), "RRULE:FREQ=MONTHLY;BYMONTHDAY=15;COUNT=3", [date(2024, 1, 15), date(2024, 2, 15), date(2024, 3, 15)]),
        (date(2024, 1, 31), "RRULE:FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=3", [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31)]),
        (date(2024, 3, 1), "RRULE:FREQ=YEARLY;BYMONTH=3,9;BYMONTHDAY=1;COUNT=3", [date(2024, 3, 1), date(2024, 9, 1), date(2025, 3, 1)]),
        (date(2024, 1, 1), "RRULE:FREQ=DAILY;INTERVAL=3;UNTIL=20240110", [date(2024, 1, 1), date(2024, 1, 4), date(2024, 1, 7), date(2024, 1, 10)]),
        # RFC 5545's WKST example: the week start decides which Sunday pairs with which Tuesday
        (date(1997, 8, 5), "RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO",
         [date(1997, 8, 5), date(1997, 8, 10), date(1997, 8, 19), date(1997, 8, 24)]),
        (date(1997, 8, 5), "RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU",
         [date(1997, 8, 5), date(1997, 8, 17), date(1997, 8, 19), date(1997, 8, 31)]),
    ],
)
def test_rule_parts(first, rule, expected):
    assert [s for s, _ in all_day(first, "UTC", [rule])] == expected


def test_until_in_utc_includes_the_last_local_occurrence():
    local = timed(datetime(2024, 6, 3, 9), "Europe/Amsterdam", ["RRULE:FREQ=DAILY;UNTIL=20240605T070000Z"])
    assert local == [datetime(2024, 6, d, 9) for d in (3, 4, 5)]


def test_date_until_on_a_timed_series_includes_that_day():
    local = timed(datetime(2024, 6, 3, 9), "Europe/Amsterdam", ["RRULE:FREQ=DAILY;UNTIL=20240605"])
    assert local == [datetime(2024, 6, d, 9) for d in (3, 4, 5)]


def test_exdate_and_rdate():
    lines = [
        "RRULE:FREQ=DAILY;COUNT=5",
        "EXDATE;TZID=Europe/Amsterdam:20240604T090000",
        "EXDATE;VALUE=DATE:20240606",
        "RDATE:20240610T070000Z",
    ]
    local = timed(datetime(2024, 6, 3, 9), "Europe/Amsterdam", lines)
    assert local == [datetime(2024, 6, 3, 9), datetime(2024, 6, 5, 9), datetime(2024, 6, 7, 9), datetime(2024, 6, 10, 9)]


def test_rdate_only_series_and_the_start_is_always_the_first_occurrence():
    local = timed(datetime(2024, 6, 3, 9), "UTC", ["RDATE:20240610T090000Z,20240617T090000Z"])
    assert local == [datetime(2024, 6, 3, 9), datetime(2024, 6, 10, 9), datetime(2024, 6, 17, 9)]
    # a start the rule would skip (a Monday under BYDAY=TU) still counts, as RFC 5545 says
    local = timed(datetime(2024, 6, 3, 9), "UTC", ["RRULE:FREQ=WEEKLY;BYDAY=TU;COUNT=2"])
    assert local[:2] == [datetime(2024, 6, 3, 9), datetime(2024, 6, 4, 9)]


def test_exrule_removes_occurrences():
    days = [s for s, _ in all_day(date(2024, 6, 3), "UTC", ["RRULE:FREQ=DAILY;COUNT=7", "EXRULE:FREQ=WEEKLY;BYDAY=SA,SU"])]
    assert days == [date(2024, 6, d) for d in (3, 4, 5, 6, 7)]


def test_window_returns_overlapping_occurrences_only():
    start = datetime(2024, 6, 3, 9, tzinfo=UTC)
    occ = list(occurrences(start, start + timedelta(hours=2), "UTC", ["RRULE:FREQ=DAILY"],
                           after=datetime(2024, 6, 10, 10, tzinfo=UTC), before=datetime(2024, 6, 12, 9, tzinfo=UTC),
                           all_day=False))
    # 10 June 09:00-11:00 still runs at 10:00; 12 June starts exactly at `before` and is out
    assert [s.day for s, _ in occ] == [10, 11]


def test_occurrence_key_format():
    assert occurrence_key(datetime(2024, 6, 3, 9, tzinfo=AMS), False) == "20240603T070000Z"
    assert occurrence_key(date(2024, 6, 3), True) == "20240603"
    with pytest.raises(ValueError):
        occurrence_key(datetime(2024, 6, 3, 9), False)


def test_has_occurrence_after():
    start = datetime(2020, 1, 6, 9, tzinfo=UTC)
    end = start + timedelta(hours=1)
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    assert has_occurrence_after(start, end, "UTC", ["RRULE:FREQ=WEEKLY"], moment, all_day=False)
    assert not has_occurrence_after(start, end, "UTC", ["RRULE:FREQ=WEEKLY;UNTIL=20231231T000000Z"], moment, all_day=False)
    assert not has_occurrence_after(start, end, "UTC", ["RRULE:FREQ=WEEKLY;COUNT=10"], moment, all_day=False)
    assert has_occurrence_after(start, end, "UTC", ["RRULE:FREQ=WEEKLY;COUNT=10", "RDATE:20250101T090000Z"], moment,
                                all_day=False)


def test_is_occurrence():
    start = datetime(2024, 6, 3, 7, tzinfo=UTC)
    end = start + timedelta(hours=1)
    rule = ["RRULE:FREQ=WEEKLY;COUNT=3"]
    assert is_occurrence(start, end, "Europe/Amsterdam", rule, "20240610T070000Z", all_day=False)
    assert not is_occurrence(start, end, "Europe/Amsterdam", rule, "20240610T080000Z", all_day=False)
    assert not is_occurrence(start, end, "Europe/Amsterdam", rule, "20240624T070000Z", all_day=False)
    assert not is_occurrence(start, end, "Europe/Amsterdam", rule, "20240610", all_day=False)
    assert is_occurrence(date(2024, 6, 3), date(2024, 6, 4), "Pacific/Tongatapu", rule, "20240617", all_day=True)
    assert not is_occurrence(date(2024, 6, 3), date(2024, 6, 4), "Pacific/Tongatapu", rule, "20240618", all_day=True)
