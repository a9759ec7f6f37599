"""Where a series' occurrences fall: expanding a rule (with a budget for the pages), the keys Google names
occurrences by, and splitting a series at one of them ("this and following")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dateutil import rrule as du

from portal.sync.recurrence import (
    BYDAY_RE,
    FREQS,
    PART_ORDER,
    WEEKDAYS,
    DateValue,
    ExpansionLimit,
    Parsed,
    RecurrenceError,
    Rule,
    as_date,
    format_value,
    is_editable,
    parse_recurrence,
    parse_value,
    zone_info,
)


def occurrence_key(occ_start: date | datetime, all_day: bool) -> str:
    """The key of one occurrence: Google's instance-id suffix (``<seriesId>_<key>``)."""
    if all_day:
        return (occ_start.date() if isinstance(occ_start, datetime) else occ_start).strftime("%Y%m%d")
    if not isinstance(occ_start, datetime) or occ_start.tzinfo is None:
        raise ValueError("a timed occurrence key needs an aware datetime")
    return occ_start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def occurrences(
    start: date | datetime,
    end: date | datetime,
    time_zone: str,
    lines: Iterable[str],
    *,
    after: datetime,
    before: datetime | None,
    all_day: bool,
    budget: int | None = None,
) -> Iterator[tuple[date | datetime, date | datetime]]:
    """Occurrences overlapping ``[after, before)`` in start order.

    Timed series yield aware UTC datetimes, all-day series yield dates (end exclusive).
    The rule runs on the series' wall clock in ``time_zone``, so a 09:00 meeting stays at
    09:00 local across DST; all-day series never go through UTC and so never shift a day.
    The start itself is always the first occurrence (RFC 5545), even if the rule skips it.
    With ``budget``, ExpansionLimit ends the iteration once that many candidates were looked at: a page
    shows what came before and says more exists. Without one (the sync, which must be exact) it runs on.
    """
    zone = zone_info(time_zone)
    parsed = parse_recurrence(lines, time_zone=time_zone, all_day=all_day)
    duration = end - start
    if all_day:
        first = datetime.combine(as_date(start), time())
    else:
        first = _aware(start).astimezone(zone).replace(tzinfo=None)

    def instant(naive: datetime) -> datetime:
        return naive.replace(tzinfo=zone).astimezone(UTC)

    def emit(naive: datetime) -> tuple[date | datetime, date | datetime, datetime, datetime]:
        if all_day:
            s_date = naive.date()
            e_date = s_date + duration
            return s_date, e_date, instant(naive), instant(datetime.combine(e_date, time()))
        s = instant(naive)
        return s, s + duration, s, s + duration

    excluded_times, excluded_dates = _exclusions(parsed, zone, all_day)
    rset = _ruleset(parsed, first, zone, all_day)
    # EXRULEs are walked here, not by dateutil: inside an rruleset a rule that excludes every occurrence
    # makes it search silently up to the year 9999, past any budget.
    exrules = []
    for rule in parsed.rules:
        if rule.kind == "EXRULE":
            walk = iter(_rrule(rule, first, zone, all_day))
            exrules.append([next(walk, None), walk])
    steps = 0

    def step() -> None:
        # dateutil cannot skip ahead: reaching this week walks every occurrence since the start.
        nonlocal steps
        steps += 1
        if budget is not None and steps > budget:
            raise ExpansionLimit(f"The series has more occurrences than {budget} steps can work out")

    def excluded_by_rule(naive: datetime) -> bool:
        for cursor in exrules:
            while cursor[0] is not None and cursor[0] < naive:
                step()
                cursor[0] = next(cursor[1], None)
        return any(cursor[0] == naive for cursor in exrules)

    # Start the scan a little before ``after`` in local wall-clock terms; the slack covers
    # the occurrence length and any UTC offset, the exact overlap test is done in UTC.
    slack = abs(duration) + timedelta(days=2)
    try:
        scan_from = (_aware(after) - slack).astimezone(zone).replace(tzinfo=None)
    except OverflowError:  # ``after`` at the dawn of time: simply start at the first occurrence
        scan_from = first
    for naive in rset:
        step()
        if naive < scan_from:
            continue
        if naive in excluded_times or naive.date() in excluded_dates or excluded_by_rule(naive):
            continue
        occ = emit(naive)
        if before is not None and occ[2] >= _aware(before):
            return
        if occ[3] > _aware(after) or (occ[3] == occ[2] == _aware(after)):
            yield occ[0], occ[1]


def has_occurrence_after(
    start: date | datetime,
    end: date | datetime,
    time_zone: str,
    lines: Iterable[str],
    moment: datetime,
    *,
    all_day: bool,
) -> bool:
    """Whether any occurrence (the start included) ends after ``moment``."""
    return next(occurrences(start, end, time_zone, lines, after=moment, before=None, all_day=all_day), None) is not None


def is_occurrence(
    start: date | datetime,
    end: date | datetime,
    time_zone: str,
    lines: Iterable[str],
    key: str,
    *,
    all_day: bool,
) -> bool:
    """Whether ``key`` (see occurrence_key) names an occurrence of the series."""
    value = parse_value(key.upper(), "occurrence key")
    if all_day:
        moment = datetime.combine(as_date(value), time(), tzinfo=zone_info(time_zone)).astimezone(UTC)
    elif isinstance(value, datetime) and value.tzinfo is not None:
        moment = value
    else:
        return False
    tick = timedelta(microseconds=1)
    window = occurrences(start, end, time_zone, lines, after=moment - tick, before=moment + tick, all_day=all_day)
    return any(occurrence_key(s, all_day) == key.upper() for s, _ in window)


def _ruleset(parsed: Parsed, first: datetime, zone: ZoneInfo, all_day: bool) -> du.rruleset:
    rset = du.rruleset()
    rset.rdate(first)
    for rule in parsed.rules:
        if rule.kind == "RRULE":
            rset.rrule(_rrule(rule, first, zone, all_day))
    for item in parsed.dates:
        if item.kind == "RDATE":
            rset.rdate(_local(item.value, first, zone, all_day))
    return rset


def _exclusions(parsed: Parsed, zone: ZoneInfo, all_day: bool) -> tuple[set[datetime], set[date]]:
    times: set[datetime] = set()
    dates: set[date] = set()
    for item in parsed.dates:
        if item.kind != "EXDATE":
            continue
        value = item.value
        if isinstance(value, datetime) and not all_day:
            times.add(value.astimezone(zone).replace(tzinfo=None) if value.tzinfo else value)
        else:
            # A date excludes the whole local day, which is how clients use EXDATE;VALUE=DATE.
            dates.add(_local(value, datetime.min, zone, True).date())
    return times, dates


def _local(value: DateValue, first: datetime, zone: ZoneInfo, all_day: bool) -> datetime:
    """An RDATE/EXDATE/UNTIL value on the series' naive wall clock."""
    if isinstance(value, datetime):
        naive = value.astimezone(zone).replace(tzinfo=None) if value.tzinfo else value
        return datetime.combine(naive.date(), time()) if all_day else naive
    return datetime.combine(value, time() if all_day else first.time())


def _rrule(rule: Rule, first: datetime, zone: ZoneInfo, all_day: bool) -> du.rrule:
    parts = dict(rule.parts)
    kwargs: dict[str, object] = {"dtstart": first, "freq": FREQS[parts["FREQ"]]}
    if "INTERVAL" in parts:
        kwargs["interval"] = int(parts["INTERVAL"])
    if "COUNT" in parts:
        kwargs["count"] = int(parts["COUNT"])
    if "UNTIL" in parts:
        until = parse_value(parts["UNTIL"], "UNTIL")
        if isinstance(until, datetime):
            kwargs["until"] = _local(until, first, zone, all_day)
        else:
            # A date UNTIL includes that whole local day (Google reads it that way).
            kwargs["until"] = datetime.combine(until, time.max)
    if "WKST" in parts:
        kwargs["wkst"] = WEEKDAYS.index(parts["WKST"])
    if "BYDAY" in parts:
        days = []
        for item in parts["BYDAY"].split(","):
            m = BYDAY_RE.match(item)
            assert m is not None
            weekday = du.weekday(WEEKDAYS.index(m.group(2)))
            days.append(weekday(int(m.group(1))) if m.group(1) else weekday)
        kwargs["byweekday"] = days
    for key in ("BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "BYHOUR", "BYMINUTE", "BYSECOND"):
        if key in parts:
            kwargs[key.lower()] = [int(n) for n in parts[key].split(",")]
    if google_reads_as_yearly(parts):
        kwargs["bymonth"] = [first.month]
    return du.rrule(**kwargs)  # type: ignore[arg-type]


def google_reads_as_yearly(parts: dict[str, str]) -> bool:
    """Google writes a yearly event as FREQ=YEARLY;BYMONTHDAY=n and means once a year, in the start's month
    (rules as the API returns them: allenporter/gcal_sync, tests/test_timeline.py); RFC 5545 alone would
    repeat it every month."""
    return (parts.get("FREQ") == "YEARLY" and "BYMONTHDAY" in parts
            and not any(k in parts for k in ("BYMONTH", "BYWEEKNO", "BYYEARDAY")))



def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("expected an aware datetime")
    return value


def occurrence_moment(key: str, time_zone: str, *, all_day: bool) -> date | datetime:
    """The original start an occurrence key names: a date (all-day) or an aware UTC datetime.

    Raises RecurrenceError when the key does not have the shape the series needs.
    """
    value = parse_value(key.strip().upper(), "occurrence key")
    if all_day:
        if isinstance(value, datetime):
            raise RecurrenceError(f"Occurrence {key!r} of an all-day series must be a date")
        return value
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise RecurrenceError(f"Occurrence {key!r} of a timed series must be a UTC date-time (…Z)")
    return value


def occurrence_keys_among(
    start: date | datetime,
    end: date | datetime,
    time_zone: str,
    lines: Iterable[str],
    keys: Iterable[str],
    *,
    all_day: bool,
    budget: int | None = None,
) -> set[str]:
    """Which of ``keys`` still name occurrences of the series, in one scan of the rule.

    A series whose time or rule changed leaves exceptions behind at starts it no longer has;
    callers drop those instead of showing a moved occurrence next to its replacement.
    """
    wanted: dict[str, datetime] = {}
    zone = zone_info(time_zone)
    for key in keys:
        try:
            moment = occurrence_moment(key, time_zone, all_day=all_day)
        except RecurrenceError:
            continue
        if isinstance(moment, datetime):
            wanted[key.strip().upper()] = moment
        else:
            wanted[key.strip().upper()] = datetime.combine(moment, time(), tzinfo=zone).astimezone(UTC)
    if not wanted:
        return set()
    tick = timedelta(microseconds=1)
    low, high = min(wanted.values()) - tick, max(wanted.values()) + tick
    found = set()
    for occ_start, _ in occurrences(start, end, time_zone, lines, after=low, before=high, all_day=all_day,
                                    budget=budget):
        key = occurrence_key(occ_start, all_day)
        if key in wanted:
            found.add(key)
    return found


def split_recurrence(
    lines: Iterable[str],
    start: date | datetime,
    time_zone: str,
    key: str,
    *,
    all_day: bool,
) -> tuple[list[str], list[str]]:
    """A series cut at occurrence ``key``: (the lines up to it, the lines from it on).

    This is Google's "this and following": the old series ends just before the occurrence
    (UNTIL, which replaces COUNT), the new one starts at it and keeps what is left of a COUNT.
    Dates listed with RDATE/EXDATE go to the side of the cut they fall on. Only rules the
    editor can represent (one RRULE) can be cut.
    """
    editable, reason = is_editable(lines)
    if not editable:
        raise RecurrenceError(reason or "This series cannot be split")
    parsed = parse_recurrence(lines, time_zone=None if all_day else time_zone, all_day=all_day)
    zone = zone_info(time_zone)
    cut = occurrence_moment(key, time_zone, all_day=all_day)
    if all_day:
        first = datetime.combine(as_date(start), time())
        cut_local = datetime.combine(cut, time())  # type: ignore[arg-type]
        until_value = format_value(cut - timedelta(days=1))  # type: ignore[operator]
    else:
        first = _aware(start).astimezone(zone).replace(tzinfo=None)  # type: ignore[arg-type]
        cut_local = cut.astimezone(zone).replace(tzinfo=None)  # type: ignore[union-attr]
        until_value = format_value(cut - timedelta(seconds=1))  # type: ignore[operator]
    if cut_local <= first:
        raise RecurrenceError("The first occurrence cannot be split off: change the whole series instead")

    before_rules, after_rules = [], []
    for rule in parsed.rules:
        parts = dict(rule.parts)
        if rule.kind == "RRULE":
            earlier = {k: v for k, v in parts.items() if k != "COUNT"}
            earlier["UNTIL"] = until_value
            if "UNTIL" in parts and _until_local(parts["UNTIL"], zone, all_day) < cut_local:
                earlier["UNTIL"] = parts["UNTIL"]
            later = dict(parts)
            if "COUNT" in parts:
                used = sum(1 for _ in _rule_before(rule, first, zone, all_day, cut_local))
                later["COUNT"] = str(max(1, int(parts["COUNT"]) - used))
            before_rules.append(Rule(rule.kind, tuple((k, earlier[k]) for k in PART_ORDER if k in earlier)))
            after_rules.append(Rule(rule.kind, tuple((k, later[k]) for k in PART_ORDER if k in later)))
        else:
            before_rules.append(rule)
            after_rules.append(rule)
    before_dates, after_dates = [], []
    for item in parsed.dates:
        local = _local(item.value, first, zone, all_day)
        (before_dates if local < cut_local else after_dates).append(item)
    old = Parsed(tuple(before_rules), tuple(before_dates)).lines()
    new = Parsed(tuple(after_rules), tuple(after_dates)).lines()
    return list(old), list(new)


def _until_local(value: str, zone: ZoneInfo, all_day: bool) -> datetime:
    until = parse_value(value, "UNTIL")
    if isinstance(until, datetime):
        return _local(until, datetime.min, zone, all_day)
    return datetime.combine(until, time.max)


def _rule_before(rule: Rule, first: datetime, zone: ZoneInfo, all_day: bool, cut_local: datetime) -> Iterator[datetime]:
    for naive in _rrule(rule, first, zone, all_day):
        if naive >= cut_local:
            return
        yield naive
