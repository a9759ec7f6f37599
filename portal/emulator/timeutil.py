"""RFC 3339 parsing/formatting and the time handling of Calendar event start/end values."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from portal.emulator.errors import ApiError, invalid, required

UTC = dt.UTC

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$"
)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def zone(name):
    """ZoneInfo for an IANA name, or None when unknown."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_rfc3339(value, default_tz=None):
    """Parse an RFC 3339 timestamp. Without an offset, `default_tz` applies (else ValueError)."""
    m = _RFC3339.match(value or "")
    if not m:
        raise ValueError(value)
    y, mo, d, h, mi, s, frac, off = m.groups()
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    naive = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
    if off is None:
        if default_tz is None:
            raise ValueError(value)
        return naive.replace(tzinfo=default_tz)
    if off in ("Z", "z"):
        return naive.replace(tzinfo=UTC)
    sign = 1 if off[0] == "+" else -1
    hours, minutes = int(off[1:3]), int(off[4:6])
    return naive.replace(tzinfo=dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes)))


def parse_date(value):
    m = _DATE.match(value or "")
    if not m:
        raise ValueError(value)
    return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def fmt_updated(moment):
    """'2024-01-01T10:00:00.123Z' as Google formats created/updated."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def fmt_datetime(moment, tz):
    """An event dateTime in the given zone: '2024-03-25T09:00:00+01:00' ('Z' for UTC)."""
    local = moment.astimezone(tz)
    text = local.replace(microsecond=0).isoformat()
    if text.endswith("+00:00") and (tz is UTC or getattr(tz, "key", None) in ("UTC", "Etc/UTC")):
        text = text[:-6] + "Z"
    return text


def to_ms(moment):
    return int(moment.timestamp() * 1000)


def http_date(moment):
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


class When:
    """A normalized event start/end: either all-day (date) or timed (aware UTC instant + zone name)."""

    __slots__ = ("date", "instant", "tz_name")

    def __init__(self, date=None, instant=None, tz_name=None):
        self.date = date
        self.instant = instant
        self.tz_name = tz_name

    @property
    def all_day(self):
        return self.date is not None

    def utc_start(self):
        """Instant used for ordering and range checks (all-day: midnight UTC)."""
        if self.date is not None:
            return dt.datetime(self.date.year, self.date.month, self.date.day, tzinfo=UTC)
        return self.instant

    def to_json(self, calendar_tz):
        if self.date is not None:
            return {"date": self.date.isoformat()}
        tz = zone(self.tz_name) if self.tz_name else zone(calendar_tz) or UTC
        out = {"dateTime": fmt_datetime(self.instant, tz)}
        if self.tz_name:
            out["timeZone"] = self.tz_name
        return out


def parse_when(value, which, calendar_tz):
    """Validate an EventDateTime body value; returns a When. Raises Google's 400s."""
    if value is None or not isinstance(value, dict) or not (value.get("date") or value.get("dateTime")):
        raise required(f"Missing {which} time.")
    tz_name = value.get("timeZone")
    if tz_name is not None:
        if not isinstance(tz_name, str) or zone(tz_name) is None:
            raise invalid(f"Invalid time zone definition for {which} time.")
    if value.get("date") and value.get("dateTime"):
        raise invalid(f"Invalid {which} time.")
    if value.get("date"):
        try:
            return When(date=parse_date(value["date"]))
        except (ValueError, TypeError):
            raise invalid(f"Invalid {which} time.") from None
    try:
        default = zone(tz_name) if tz_name else None
        instant = parse_rfc3339(value["dateTime"], default)
    except (ValueError, TypeError):
        if tz_name is None and isinstance(value.get("dateTime"), str) and _RFC3339.match(value["dateTime"]):
            raise ApiError(400, "required", f"Missing time zone definition for {which} time.") from None
        raise invalid(f"Invalid {which} time.") from None
    return When(instant=instant.astimezone(UTC), tz_name=tz_name)


def parse_query_time(value, name):
    try:
        return parse_rfc3339(value).astimezone(UTC)
    except (ValueError, TypeError):
        raise invalid(f"Bad Request: invalid {name}", location=name) from None
