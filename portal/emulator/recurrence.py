"""Expansion of RFC 5545 recurrence lines (RRULE/EXRULE/RDATE/EXDATE) the way Google Calendar does:
in the series' start time zone, so the wall-clock time stays the same across DST changes."""

from __future__ import annotations

import datetime as dt
import re

from dateutil.rrule import rrulestr

from portal.emulator.errors import invalid
from portal.emulator.timeutil import UTC, zone

_ALLOWED = ("RRULE", "EXRULE", "RDATE", "EXDATE")
_UNTIL = re.compile(r"UNTIL=(\d{8})(T(\d{6})(Z?))?", re.IGNORECASE)
HORIZON_INSTANCES = 5000


def validate(lines):
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise invalid("Invalid recurrence rule.")
    for line in lines:
        name = line.split(":", 1)[0].split(";", 1)[0].upper()
        if name not in _ALLOWED or ":" not in line:
            raise invalid("Invalid recurrence rule.")
    try:
        # A cheap full parse to reject malformed rules up front.
        Expansion(lines, dt.datetime(2000, 1, 1), "UTC", False)
    except ValueError:
        raise invalid("Invalid recurrence rule.") from None


def _parse_value(value, params, tz, all_day, start_time):
    """One EXDATE/RDATE value -> naive local datetime in the series zone."""
    value = value.strip()
    if "T" not in value.upper() or params.get("VALUE", "").upper() == "DATE":
        d = dt.datetime.strptime(value[:8], "%Y%m%d")
        return d if all_day else dt.datetime.combine(d.date(), start_time)
    utc = value.upper().endswith("Z")
    naive = dt.datetime.strptime(value.rstrip("Zz")[:15], "%Y%m%dT%H%M%S")
    if all_day:
        # An all-day series' day written as a time: the day on that time's own wall clock (its TZID's, or UTC's).
        return dt.datetime.combine(naive.date(), dt.time())
    if utc:
        aware = naive.replace(tzinfo=UTC)
    elif params.get("TZID"):
        aware = naive.replace(tzinfo=zone(params["TZID"]) or UTC)
    else:
        return naive
    return aware.astimezone(tz).replace(tzinfo=None)


class Expansion:
    """Occurrences of a series as naive local datetimes in the series zone."""

    def __init__(self, lines, local_start, tz_name, all_day):
        self.tz = zone(tz_name) or UTC
        self.all_day = all_day
        self.local_start = local_start
        self.rules = []
        self.exrules = []
        self.rdates = set()
        self.exdates = set()
        start_time = local_start.time()
        for line in lines:
            head, value = line.split(":", 1)
            parts = head.split(";")
            name = parts[0].upper()
            params = {}
            for p in parts[1:]:
                if "=" in p:
                    k, v = p.split("=", 1)
                    params[k.upper()] = v
            if name in ("RRULE", "EXRULE"):
                value = self._yearly_by_monthday(value, local_start)
                rule = rrulestr(self._localize_until(value), dtstart=local_start, ignoretz=True)
                (self.rules if name == "RRULE" else self.exrules).append(rule)
            else:
                for item in value.split(","):
                    when = _parse_value(item, params, self.tz, all_day, start_time)
                    (self.rdates if name == "RDATE" else self.exdates).add(when)

    @staticmethod
    def _yearly_by_monthday(rule, local_start):
        """FREQ=YEARLY;BYMONTHDAY=n is how Google writes a yearly event: once a year, in the start's month."""
        parts = {p.split("=", 1)[0].upper() for p in rule.split(";") if "=" in p}
        if ("FREQ=YEARLY" in rule.upper() and "BYMONTHDAY" in parts
                and not parts & {"BYMONTH", "BYWEEKNO", "BYYEARDAY"}):
            return f"{rule};BYMONTH={local_start.month}"
        return rule

    def _localize_until(self, rule):
        def repl(m):
            date_part, _, time_part, z = m.groups()
            if self.all_day or not time_part:
                return f"UNTIL={date_part}T235959" if not time_part else f"UNTIL={date_part}T{time_part}"
            naive = dt.datetime.strptime(date_part + time_part, "%Y%m%d%H%M%S")
            if z:
                naive = naive.replace(tzinfo=UTC).astimezone(self.tz).replace(tzinfo=None)
            return "UNTIL=" + naive.strftime("%Y%m%dT%H%M%S")

        return _UNTIL.sub(repl, rule)

    def to_utc(self, local):
        if self.all_day:
            return local.replace(tzinfo=UTC)
        return local.replace(tzinfo=self.tz).astimezone(UTC)

    def occurrences(self, until_local=None, limit=HORIZON_INSTANCES):
        """Sorted naive local starts, up to `until_local` (inclusive) and `limit` items."""
        found = set(self.rdates)
        found.add(self.local_start)
        for rule in self.rules:
            for i, occ in enumerate(rule):
                if until_local is not None and occ > until_local:
                    break
                if i >= limit:
                    break
                found.add(occ)
        excluded = set(self.exdates)
        for rule in self.exrules:
            for i, occ in enumerate(rule):
                if until_local is not None and occ > until_local or i >= limit:
                    break
                excluded.add(occ)
        # RDATE adds its dates even before DTSTART (RFC 5545 3.8.5.2 sets no order; Google documents none).
        result = sorted(x for x in found if x not in excluded and (x >= self.local_start or x in self.rdates)
                        and (until_local is None or x <= until_local))
        return result[:limit]

    def is_finite(self):
        return all(r._count is not None or r._until is not None for r in self.rules)
