"""RFC 5545 recurrence lines: validation, canonical spelling and expansion.

Pure: python-dateutil and zoneinfo only. Lines look like the ones Google keeps in
``event.recurrence``: ``RRULE:...``, ``EXRULE:...``, ``RDATE[;params]:...``,
``EXDATE[;params]:...``. DTSTART is never part of them; the start comes from the
event itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as du

__all__ = [
    "ExpansionLimit",
    "RecurrenceError",
    "is_editable",
    "normalize_recurrence",
    "refuse_oversized",
    "validate_recurrence",
]


class RecurrenceError(ValueError):
    """A recurrence line the portal cannot accept; ``str(err)`` is meant for people."""


class ExpansionLimit(RecurrenceError):
    """Working a series out took more steps than the caller allowed: what was yielded is all there is."""


WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")

# Sub-daily frequencies are valid RFC 5545 but neither Google's UI nor the portal's editor
# offers them, and a calendar item every minute is almost certainly a mistake.
FREQS = {"DAILY": du.DAILY, "WEEKLY": du.WEEKLY, "MONTHLY": du.MONTHLY, "YEARLY": du.YEARLY}

# Canonical part order; it decides the spelling two equivalent rules share.
PART_ORDER = (
    "FREQ", "COUNT", "UNTIL", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY",
    "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST",
)  # fmt: skip
_INT_LISTS = {
    "BYSECOND": (0, 59, False),  # RFC 5545 allows 60 (a leap second); no calendar can place one
    "BYMINUTE": (0, 59, False),
    "BYHOUR": (0, 23, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYMONTH": (1, 12, False),
    "BYSETPOS": (1, 366, True),
}
_LINE_ORDER = {"RRULE": 0, "EXRULE": 1, "RDATE": 2, "EXDATE": 3}

BYDAY_RE = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_DATE_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DATETIME_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(Z?)$")

# A value in RDATE/EXDATE/UNTIL: a date, an aware UTC datetime, or a floating
# (naive) datetime meaning wall-clock time in the series' own zone.
DateValue = date | datetime


@dataclass(frozen=True)
class Rule:
    kind: str  # RRULE or EXRULE
    parts: tuple[tuple[str, str], ...]  # canonical, in PART_ORDER

    def get(self, key: str) -> str | None:
        return dict(self.parts).get(key)


@dataclass(frozen=True)
class _Dates:
    kind: str  # RDATE or EXDATE
    value: DateValue


@dataclass(frozen=True)
class Parsed:
    rules: tuple[Rule, ...]
    dates: tuple[_Dates, ...]

    def lines(self) -> tuple[str, ...]:
        out = {_render_rule(r) for r in self.rules} | {_render_date(d) for d in self.dates}
        return tuple(sorted(out, key=lambda line: (_LINE_ORDER[_name_of(line)], line)))


# ---------------------------------------------------------------- parsing


def _name_of(line: str) -> str:
    return re.split(r"[;:]", line, maxsplit=1)[0].upper()


def parse_recurrence(lines: Iterable[str], *, time_zone: str | None = None, all_day: bool = False) -> Parsed:
    """The lines read and checked, each rule and date list as a value (raises RecurrenceError)."""
    if isinstance(lines, str):
        # A bare string would be iterated character by character: a classic silent bug.
        lines = [lines]
    lines = list(lines)
    refuse_oversized(lines)
    rules: list[Rule] = []
    dates: list[_Dates] = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        head, sep, value = line.partition(":")
        if not sep:
            raise RecurrenceError(f"Recurrence line without a ':' separator: {raw!r}")
        name, *params = head.split(";")
        name = name.strip().upper()
        if name == "DTSTART":
            raise RecurrenceError("DTSTART is not allowed in recurrence lines; the item's start is used instead")
        # RFC 5545 3.2: any property may carry x-params ("X-EVOLUTION-ENDDATE=..."), for other programs only.
        params = [p for p in params if not p.strip().upper().startswith("X-")]
        if name in ("RRULE", "EXRULE"):
            if params:
                raise RecurrenceError(f"{name} takes no parameters: {raw!r}")
            rules.append(_parse_rule(name, value))
        elif name in ("RDATE", "EXDATE"):
            dates.extend(_Dates(name, v) for v in _parse_dates(name, params, value, time_zone, all_day))
        else:
            raise RecurrenceError(f"Unknown recurrence property {name or raw!r}; expected RRULE, EXRULE, RDATE or EXDATE")
    return Parsed(tuple(rules), tuple(dates))


def _parse_rule(kind: str, value: str) -> Rule:
    raw_parts: dict[str, str] = {}
    for chunk in value.split(";"):
        if not chunk.strip():
            continue
        key, sep, val = chunk.partition("=")
        key, val = key.strip().upper(), val.strip().upper()
        if not sep or not val:
            raise RecurrenceError(f"{kind} part {chunk!r} has no value")
        if key not in PART_ORDER:
            raise RecurrenceError(f"Unknown {kind} part {key!r}")
        if key in raw_parts:
            raise RecurrenceError(f"{kind} part {key} appears twice")
        raw_parts[key] = val

    freq = raw_parts.get("FREQ")
    if freq is None:
        raise RecurrenceError(f"{kind} needs a FREQ")
    if freq not in FREQS:
        raise RecurrenceError(f"FREQ={freq} is not supported; use DAILY, WEEKLY, MONTHLY or YEARLY")
    if "COUNT" in raw_parts and "UNTIL" in raw_parts:
        raise RecurrenceError(f"{kind} cannot have both COUNT and UNTIL")
    if "BYSETPOS" in raw_parts and not any(k.startswith("BY") and k != "BYSETPOS" for k in raw_parts):
        raise RecurrenceError("BYSETPOS only makes sense together with another BY... part")

    parts: dict[str, str] = {"FREQ": freq}
    for key, val in raw_parts.items():
        if key == "FREQ":
            continue
        if key in ("COUNT", "INTERVAL"):
            n = _int(val, key)
            if n < 1:
                raise RecurrenceError(f"{key} must be 1 or more, not {val}")
            if key == "INTERVAL" and n == 1:
                continue  # the default: dropping it lets equivalent spellings compare equal
            parts[key] = str(n)
        elif key == "UNTIL":
            parts[key] = format_value(parse_value(val, "UNTIL"))
        elif key == "WKST":
            if val not in WEEKDAYS:
                raise RecurrenceError(f"WKST={val} is not a weekday")
            if val != "MO":
                parts[key] = val
        elif key == "BYDAY":
            parts[key] = _canonical_byday(val, freq, has_byweekno="BYWEEKNO" in raw_parts)
        else:
            lo, hi, signed = _INT_LISTS[key]
            parts[key] = _canonical_int_list(key, val, lo, hi, signed)
    _refuse_impossible_monthdays(parts)
    _refuse_runaway_rules(parts)
    ordered = tuple((k, parts[k]) for k in PART_ORDER if k in parts)
    return Rule(kind, ordered)


_MONTH_LENGTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _refuse_impossible_monthdays(parts: dict[str, str]) -> None:
    # dateutil walks day by day up to the year 9999 looking for a match of a rule that has
    # none (BYMONTH=2;BYMONTHDAY=30): seconds of CPU per item, so such rules are refused.
    if "BYMONTHDAY" not in parts:
        return
    months = [int(m) for m in parts["BYMONTH"].split(",")] if "BYMONTH" in parts else range(1, 13)
    longest = max(_MONTH_LENGTH[m - 1] for m in months)
    if all(abs(int(d)) > longest for d in parts["BYMONTHDAY"].split(",")):
        raise RecurrenceError("The rule never occurs: no month it names has that day")


MAX_COUNT = 10_000
MAX_PER_DAY = 24
# Google documents no limit on an event's recurrence lines. Its editor writes one RRULE, and it expands a series
# to at most 730 instances, so a longer list of dates can never all show there. Thousands of lines, each
# harmless, multiply the work of every page showing the week: counted before anything is parsed.
MAX_RULES = 10  # RRULE and EXRULE lines together
MAX_DATES = 730  # RDATE and EXDATE values together, however they are spread over lines


def refuse_oversized(lines: list[str]) -> None:
    """RecurrenceError when the lines hold more rules or dates than a series may have."""
    rules = dates = 0
    for line in lines:
        name = _name_of(line.strip())
        if name in ("RRULE", "EXRULE"):
            rules += 1
        elif name in ("RDATE", "EXDATE"):
            dates += line.partition(":")[2].count(",") + 1
    if rules > MAX_RULES:
        raise RecurrenceError(f"A series may have at most {MAX_RULES} RRULE and EXRULE lines, not {rules}")
    if dates > MAX_DATES:
        raise RecurrenceError(f"A series may list at most {MAX_DATES} RDATE and EXDATE dates, not {dates}")
# The most candidates one period of each frequency can hold before BYSETPOS picks among them.
_DAYS_PER_PERIOD = {"DAILY": 1, "WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}


def _list_len(parts: dict[str, str], key: str) -> int:
    return len(parts[key].split(",")) if key in parts else 1


def _refuse_runaway_rules(parts: dict[str, str]) -> None:
    """Rules that never occur, or occur without end within a day, cost seconds in dateutil (it searches
    up to the year 9999) or flood a calendar: refused with the reason, wherever they come from."""
    if int(parts.get("COUNT", "1")) > MAX_COUNT:
        raise RecurrenceError(f"COUNT may be at most {MAX_COUNT}; for longer series leave COUNT out")
    per_day = _list_len(parts, "BYHOUR") * _list_len(parts, "BYMINUTE") * _list_len(parts, "BYSECOND")
    if per_day > MAX_PER_DAY:
        raise RecurrenceError(f"At most {MAX_PER_DAY} occurrences a day (BYHOUR × BYMINUTE × BYSECOND)")
    if "BYSETPOS" in parts:
        days = _DAYS_PER_PERIOD[parts["FREQ"]]
        if "BYDAY" in parts and parts["FREQ"] in ("DAILY", "WEEKLY"):
            days = min(days, _list_len(parts, "BYDAY"))
        elif "BYDAY" in parts and not any(ch.isdigit() for ch in parts["BYDAY"]):
            # A weekday comes at most 5 times a month and 53 times a year.
            days = min(days, _list_len(parts, "BYDAY") * (5 if parts["FREQ"] == "MONTHLY" else 53))
        if "BYMONTHDAY" in parts and parts["FREQ"] in ("MONTHLY", "YEARLY"):
            days = min(days, _list_len(parts, "BYMONTHDAY") * (12 if parts["FREQ"] == "YEARLY" else 1))
        candidates = days * per_day
        if all(abs(int(pos)) > candidates for pos in parts["BYSETPOS"].split(",")):
            raise RecurrenceError(f"The rule never occurs: BYSETPOS asks for a position beyond the {candidates} "
                                  "candidate(s) each period has")
    if "BYWEEKNO" in parts and "BYMONTH" in parts and not _weeks_meet_months(parts):
        raise RecurrenceError("The rule never occurs: no week it names falls in a month it names")
    if "BYYEARDAY" in parts and "BYMONTH" in parts and not _yeardays_meet_months(parts):
        raise RecurrenceError("The rule never occurs: no day of the year it names falls in a month it names")


def _weeks_meet_months(parts: dict[str, str]) -> bool:
    months = {int(m) for m in parts["BYMONTH"].split(",")}
    weeks = [int(w) for w in parts["BYWEEKNO"].split(",")]
    for year in range(2020, 2048):  # 28 years: every weekday/leap-year alignment occurs
        last_week = date(year, 12, 28).isocalendar()[1]
        for week in weeks:
            number = week if week > 0 else last_week + 1 + week
            if not 1 <= number <= last_week:
                continue
            monday = date.fromisocalendar(year, number, 1)
            if any((monday + timedelta(days=d)).month in months for d in range(7)):
                return True
    return False


def _yeardays_meet_months(parts: dict[str, str]) -> bool:
    months = {int(m) for m in parts["BYMONTH"].split(",")}
    for year in (2023, 2024):  # a common and a leap year
        length = 366 if year == 2024 else 365
        for day in (int(d) for d in parts["BYYEARDAY"].split(",")):
            number = day if day > 0 else length + 1 + day
            if 1 <= number <= length and (date(year, 1, 1) + timedelta(days=number - 1)).month in months:
                return True
    return False


def _int(val: str, what: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", val):
        raise RecurrenceError(f"{what} needs a whole number, not {val!r}")
    return int(val)


def _canonical_int_list(key: str, val: str, lo: int, hi: int, signed: bool) -> str:
    numbers = set()
    for item in val.split(","):
        n = _int(item.strip(), key)
        if not (lo <= abs(n) <= hi) or (n < 0 and not signed):
            raise RecurrenceError(f"{key} value {item} is out of range")
        numbers.add(n)
    # Positive values first, then negatives counted from the end: a stable, readable order.
    return ",".join(str(n) for n in sorted(numbers, key=lambda n: (n < 0, abs(n))))


def _canonical_byday(val: str, freq: str, *, has_byweekno: bool) -> str:
    days: set[tuple[int, int | None]] = set()
    for item in val.split(","):
        m = BYDAY_RE.match(item.strip())
        if not m:
            raise RecurrenceError(f"BYDAY value {item!r} is not a weekday like MO or 2TU")
        ordinal = int(m.group(1)) if m.group(1) else None
        if ordinal is not None:
            if not 1 <= abs(ordinal) <= 53:
                raise RecurrenceError(f"BYDAY ordinal in {item!r} is out of range")
            if freq not in ("MONTHLY", "YEARLY") or has_byweekno:
                raise RecurrenceError(f"BYDAY ordinals like {item!r} need FREQ=MONTHLY or YEARLY")
        days.add((WEEKDAYS.index(m.group(2)), ordinal))
    ordered = sorted(days, key=lambda d: (d[0], d[1] is not None, d[1] or 0))
    return ",".join(f"{'' if o is None else o}{WEEKDAYS[w]}" for w, o in ordered)


def _parse_dates(kind: str, params: Sequence[str], value: str, time_zone: str | None,
                 all_day: bool = False) -> list[DateValue]:
    tzid: ZoneInfo | None = None
    value_type = None
    for param in params:
        key, _, val = param.partition("=")
        key = key.strip().upper()
        if key == "TZID":
            tzid = zone_info(val.strip().strip('"'))
        elif key == "VALUE":
            value_type = val.strip().upper()
            if value_type == "PERIOD":
                raise RecurrenceError(f"{kind} periods are not supported; list the start times instead")
            if value_type not in ("DATE", "DATE-TIME"):
                raise RecurrenceError(f"{kind} VALUE={val} is not DATE or DATE-TIME")
        else:
            raise RecurrenceError(f"Unknown {kind} parameter {key!r}")
    default_zone = tzid or (zone_info(time_zone) if time_zone else None)
    out: list[DateValue] = []
    for item in value.split(","):
        parsed = parse_value(item.strip().upper(), kind)
        if value_type == "DATE" and isinstance(parsed, datetime):
            raise RecurrenceError(f"{kind};VALUE=DATE holds a date-time: {item!r}")
        if value_type == "DATE-TIME" and not isinstance(parsed, datetime):
            raise RecurrenceError(f"{kind};VALUE=DATE-TIME holds a date: {item!r}")
        if all_day and isinstance(parsed, datetime):
            # An all-day series' day given as a time (as some clients write it): the day it is on its own
            # wall clock (its TZID's, or UTC's), which is what it names.
            out.append(parsed.date())
            continue
        if isinstance(parsed, datetime) and parsed.tzinfo is None and default_zone is not None:
            # Wall-clock times become UTC instants so the same exclusion spelled with a
            # TZID or in UTC compares equal.
            parsed = parsed.replace(tzinfo=default_zone).astimezone(UTC)
        out.append(parsed)
    return out


# The calendar years the product works in, for activities and for the dates inside their rules alike.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2200


def parse_value(val: str, what: str) -> DateValue:
    if (m := _DATE_RE.match(val) or _DATETIME_RE.match(val)) and not EARLIEST_YEAR <= int(m[1]) <= LATEST_YEAR:
        raise RecurrenceError(f"{what} {val!r} lies outside the years {EARLIEST_YEAR} to {LATEST_YEAR}")
    if m := _DATE_RE.match(val):
        try:
            return date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError as err:
            raise RecurrenceError(f"{what} {val!r} is not a valid date") from err
    if m := _DATETIME_RE.match(val):
        try:
            dt = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]))
        except ValueError as err:
            raise RecurrenceError(f"{what} {val!r} is not a valid date-time") from err
        return dt.replace(tzinfo=UTC) if m[7] else dt
    raise RecurrenceError(f"{what} {val!r} is not a date (YYYYMMDD) or date-time (YYYYMMDDTHHMMSSZ)")


def zone_info(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise RecurrenceError(f"Unknown time zone {name!r}") from err


def format_value(value: DateValue) -> str:
    # Built by hand: strftime writes years before 1000 with fewer than four digits.
    day = f"{value.year:04d}{value.month:02d}{value.day:02d}"
    if isinstance(value, datetime):
        return f"{day}T{value.hour:02d}{value.minute:02d}{value.second:02d}" + ("Z" if value.tzinfo else "")
    return day


def _render_rule(rule: Rule) -> str:
    return f"{rule.kind}:" + ";".join(f"{k}={v}" for k, v in rule.parts)


def _render_date(item: _Dates) -> str:
    if isinstance(item.value, datetime):
        return f"{item.kind}:{format_value(item.value)}"
    return f"{item.kind};VALUE=DATE:{format_value(item.value)}"


# ---------------------------------------------------------------- public: spelling


def normalize_recurrence(lines: Iterable[str], *, time_zone: str | None = None, all_day: bool = False
                         ) -> tuple[str, ...]:
    """Canonical spelling, so that equivalent rules compare equal.

    Uppercase, parts in a fixed order, defaults (INTERVAL=1, WKST=MO) dropped, lists
    sorted, one RDATE/EXDATE value per line, duplicates removed. With ``time_zone``
    floating RDATE/EXDATE times are turned into UTC. Raises RecurrenceError on
    anything that is not a recurrence line.
    """
    return parse_recurrence(lines, time_zone=time_zone, all_day=all_day).lines()


def validate_recurrence(lines: Iterable[str], *, all_day: bool, time_zone: str | None = None) -> list[str]:
    """Canonical lines, or RecurrenceError with a message fit for the person who typed them."""
    parsed = parse_recurrence(lines, time_zone=time_zone, all_day=all_day)
    rules = []
    for rule in parsed.rules:
        parts = dict(rule.parts)
        if all_day:
            if any(k in parts for k in ("BYHOUR", "BYMINUTE", "BYSECOND")):
                raise RecurrenceError("An all-day series cannot repeat by hour, minute or second")
            until = parse_value(parts["UNTIL"], "UNTIL") if "UNTIL" in parts else None
            if isinstance(until, datetime):
                # Clients disagree on how all-day series spell UNTIL; the date is what is meant.
                parts["UNTIL"] = format_value(as_date(until))
        rules.append(Rule(rule.kind, tuple((k, parts[k]) for k in PART_ORDER if k in parts)))
    if all_day:
        for item in parsed.dates:
            if isinstance(item.value, datetime):
                raise RecurrenceError(f"{item.kind} of an all-day series must be a date, not a time")
    return list(Parsed(tuple(rules), parsed.dates).lines())


def is_editable(lines: Iterable[str]) -> tuple[bool, str | None]:
    """Whether the portal's editor can represent the rule; if not, why (shown on the item)."""
    try:
        parsed = parse_recurrence(lines)
    except RecurrenceError as err:
        return False, str(err)
    rrules = [r for r in parsed.rules if r.kind == "RRULE"]
    if any(r.kind == "EXRULE" for r in parsed.rules):
        return False, "The series uses an exclusion rule (EXRULE), which the portal cannot edit"
    if len(rrules) > 1:
        return False, "The series combines several repeat rules, which the portal cannot edit"
    if not rrules and any(d.kind == "RDATE" for d in parsed.dates):
        return False, "The series repeats on a list of dates (RDATE) only, which the portal cannot edit"
    return True, None


# ---------------------------------------------------------------- public: expansion

def as_date(value: DateValue) -> date:
    return value.astimezone(UTC).date() if isinstance(value, datetime) and value.tzinfo else (
        value.date() if isinstance(value, datetime) else value
    )
