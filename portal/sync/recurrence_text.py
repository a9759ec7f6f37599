"""A recurrence rule in a few English words, for the pages (``Weekly on Mon, Wed, every 2 weeks, 10 times``)."""

from __future__ import annotations

from collections.abc import Iterable

from portal.sync.recurrence import BYDAY_RE, WEEKDAYS, RecurrenceError, as_date, parse_recurrence, parse_value

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def describe(lines: Iterable[str]) -> str:
    """Short English text of a rule, e.g. ``Weekly on Mon, Wed, every 2 weeks, 10 times``."""
    try:
        parsed = parse_recurrence(lines)
    except RecurrenceError:
        return "Custom recurrence"
    rrules = [r for r in parsed.rules if r.kind == "RRULE"]
    if not rrules:
        return "Custom dates" if parsed.dates else "Does not repeat"
    if len(rrules) > 1 or any(r.kind == "EXRULE" for r in parsed.rules):
        return "Custom recurrence"
    rule = dict(rrules[0].parts)
    freq = rule["FREQ"]
    text = [freq.capitalize()]
    if "BYDAY" in rule:
        text[0] += " on " + ", ".join(_describe_day(d) for d in rule["BYDAY"].split(","))
    if "BYMONTHDAY" in rule:
        days = rule["BYMONTHDAY"].split(",")
        text.append(("day " if len(days) == 1 else "days ") + ", ".join(_describe_monthday(d) for d in days))
    if "BYMONTH" in rule:
        text.append("in " + ", ".join(_MONTH_NAMES[int(m) - 1] for m in rule["BYMONTH"].split(",")))
    if "BYSETPOS" in rule:
        text.append("occurrence " + ", ".join(_describe_monthday(p) for p in rule["BYSETPOS"].split(",")))
    if "INTERVAL" in rule:
        unit = {"DAILY": "days", "WEEKLY": "weeks", "MONTHLY": "months", "YEARLY": "years"}[freq]
        text.append(f"every {rule['INTERVAL']} {unit}")
    if "COUNT" in rule:
        text.append("once" if rule["COUNT"] == "1" else f"{rule['COUNT']} times")
    if "UNTIL" in rule:
        until = parse_value(rule["UNTIL"], "UNTIL")
        text.append(f"until {as_date(until).isoformat()}")
    excluded = sum(1 for d in parsed.dates if d.kind == "EXDATE")
    added = sum(1 for d in parsed.dates if d.kind == "RDATE")
    if added:
        text.append(f"plus {added} extra date{'s' if added > 1 else ''}")
    if excluded:
        text.append(f"except {excluded} date{'s' if excluded > 1 else ''}")
    return ", ".join(text)


def _describe_day(item: str) -> str:
    m = BYDAY_RE.match(item)
    assert m is not None  # canonical input
    name = _WEEKDAY_NAMES[WEEKDAYS.index(m.group(2))]
    if not m.group(1):
        return name
    return f"the {_ordinal_word(int(m.group(1)))} {name}"


def _describe_monthday(item: str) -> str:
    n = int(item)
    return str(n) if n > 0 else ("last" if n == -1 else f"{-n} from the end")


def _ordinal_word(n: int) -> str:
    if n == -1:
        return "last"
    if n < 0:
        return f"{_ordinal_word(-n)} to last"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
