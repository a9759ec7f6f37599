"""Where the calendar's items go: the week's hour grid (each item placed and sized by its time, overlapping
ones side by side, all-day ones in a row on top) and the list's next dates. Pure: occurrences in, positions out;
the pages print the positions as data attributes that portal.js applies (the Content-Security-Policy drops
style attributes)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from portal.models import Occurrence
from portal.sync.recurrence import LATEST_YEAR

DAY_MINUTES = 24 * 60
# An item shorter than this is drawn this tall, so its title stays readable; it also takes this much room
# when deciding what sits side by side, or two short items would be drawn over each other.
SHORTEST_MINUTES = 30
WORKDAY_START = 7 * 60  # the grid opens scrolled to 07:00 (or to the week's first earlier item)


@dataclass(frozen=True)
class Placed:
    """An item with its place among those it overlaps: lane `lane` of `lanes` side by side, `span` lanes wide
    (it widens to the right where nothing overlaps it)."""

    item: Any
    lane: int
    lanes: int
    span: int = 1


def side_by_side(intervals: Iterable[tuple[Any, Any, Any]]) -> list[Placed]:
    """Interval partitioning: each (start, end, item) gets the first lane free at its start; items that overlap
    each other directly or through others form a group whose lanes share its width. Ends are exclusive: an item
    ending at 10:00 and one starting at 10:00 share a lane. Returned in start order (longer first on a tie)."""
    ordered = sorted(intervals, key=lambda i: (i[0], _Reverse(i[1])))  # of equal starts, the longer first
    placed: list[Placed] = []
    group: list[tuple[Any, Any, Any, int]] = []  # (start, end, item, lane)
    lane_ends: list[Any] = []
    group_end = None

    def close():
        lanes = len(lane_ends)
        for start, end, item, lane in group:
            span = 1
            while lane + span < lanes and not any(
                    other_lane == lane + span and other_start < end and start < other_end
                    for other_start, other_end, _, other_lane in group):
                span += 1
            placed.append(Placed(item, lane, lanes, span))

    for start, end, item in ordered:
        end = max(start, end)
        if group and not start < group_end:
            close()
            group, lane_ends = [], []
        lane = next((n for n, lane_end in enumerate(lane_ends) if not start < lane_end), None)
        if lane is None:
            lane = len(lane_ends)
            lane_ends.append(end)
        else:
            lane_ends[lane] = end
        group.append((start, end, item, lane))
        group_end = end if group_end is None or len(group) == 1 else max(group_end, end)
    if group:
        close()
    return placed


class _Reverse:
    """Sorts its value the other way round (for values that cannot be negated, like datetimes)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return other.value < self.value

    def __eq__(self, other):
        return self.value == other.value


# --- the week ---------------------------------------------------------------------------------------------

@dataclass
class TimedBlock:
    """One timed occurrence's piece on one day of the grid, in percent of the day's height and column width."""

    occurrence: Occurrence
    top: float
    height: float
    left: float
    width: float
    from_earlier: bool  # began on an earlier day (after midnight here)
    goes_on: bool  # ends on a later day
    when: str  # its times ("09:00–10:00"), in the zone the week is shown in

    def style_data(self) -> dict[str, str]:
        return {"data-top": _pct(self.top), "data-height": _pct(self.height), "data-left": _pct(self.left),
                "data-width": _pct(self.width)}


@dataclass
class AllDayBlock:
    """An all-day (or day-long) occurrence in the top row of one day; the same item keeps its lane on every day
    it covers, so it reads as one bar across them."""

    occurrence: Occurrence
    from_earlier: bool  # began before this day
    goes_on: bool  # goes on after this day
    when: str  # "All day", or the days and times of a timed item a day long or more


@dataclass
class WeekDay:
    day: date
    is_today: bool
    all_day: list[AllDayBlock | None] = field(default_factory=list)  # by lane; None keeps a lane free
    timed: list[TimedBlock] = field(default_factory=list)
    now: float | None = None  # where the "now" line is, on today

    @property
    def name(self) -> str:
        """Short enough never to wrap: "Mon 30"."""
        return f"{self.day:%a} {self.day.day}"

    @property
    def empty(self) -> bool:
        return not self.timed and not any(self.all_day)

    @property
    def occurrences(self) -> list[Occurrence]:
        return [b.occurrence for b in self.all_day if b] + [b.occurrence for b in self.timed]


@dataclass
class Week:
    days: list[WeekDay]
    scroll_to: float  # percent of the day the grid opens at

    def by_day(self) -> dict[date, list[Occurrence]]:
        return {d.day: d.occurrences for d in self.days}


def _pct(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _minutes(moment: datetime) -> int:
    return moment.hour * 60 + moment.minute


def week_layout(occurrences: Sequence[Occurrence], monday: date, zone: ZoneInfo, now: datetime) -> Week:
    """The week from `monday` (seven days) as the grid shows it in `zone`: all-day items, and timed ones of a
    day or more, in the top row; the others placed by their wall-clock time, cut at midnight when they cross
    it, overlapping ones side by side; today with the current time."""
    days = [monday + timedelta(days=n) for n in range(7)]
    today = now.astimezone(zone).date()
    week = [WeekDay(day, day == today) for day in days]
    on_top: list[tuple[int, int, tuple[Occurrence, date, date]]] = []
    pieces: dict[int, list[tuple[int, int, tuple[Occurrence, int, int, bool, bool]]]] = {n: [] for n in range(7)}
    earliest = WORKDAY_START
    for occurrence in occurrences:
        first, last = _day_range(occurrence, zone)
        if last < monday or first > days[-1]:
            continue
        if occurrence.all_day or occurrence.end - occurrence.start >= timedelta(days=1):
            begin, end = max(first, monday), min(last, days[-1])
            on_top.append(((begin - monday).days, (end - monday).days + 1, (occurrence, first, last)))
            continue
        start, finish = occurrence.local_start(zone), occurrence.local_end(zone)
        for n, day in enumerate(days):
            if not first <= day <= last:
                continue
            top = _minutes(start) if start.date() == day else 0
            bottom = _minutes(finish) if finish.date() == day else DAY_MINUTES
            top = min(top, DAY_MINUTES - SHORTEST_MINUTES)
            bottom = min(max(bottom, top + SHORTEST_MINUTES), DAY_MINUTES)
            pieces[n].append((top, bottom, (occurrence, top, bottom, start.date() < day, finish.date() > day)))
            earliest = min(earliest, top)
    for placed in side_by_side(on_top):
        occurrence, first, last = placed.item
        for n, day in enumerate(days):
            if first <= day <= last:
                lanes = week[n].all_day
                lanes.extend([None] * (placed.lane + 1 - len(lanes)))
                lanes[placed.lane] = AllDayBlock(occurrence, first < day, last > day, when_text(occurrence, zone))
    for n, intervals in pieces.items():
        for placed in side_by_side(intervals):
            occurrence, top, bottom, from_earlier, goes_on = placed.item
            week[n].timed.append(TimedBlock(
                occurrence, top=100 * top / DAY_MINUTES, height=100 * (bottom - top) / DAY_MINUTES,
                left=100 * placed.lane / placed.lanes, width=100 * placed.span / placed.lanes,
                from_earlier=from_earlier, goes_on=goes_on, when=when_text(occurrence, zone)))
    for weekday in week:
        if weekday.is_today:
            local = now.astimezone(zone)
            weekday.now = 100 * (_minutes(local) + local.second / 60) / DAY_MINUTES
    return Week(week, scroll_to=100 * (earliest // 60 * 60) / DAY_MINUTES)


def when_text(occurrence: Occurrence, zone: ZoneInfo) -> str:
    """An occurrence's times as the grid shows them (the page names the zone): "09:00–10:00", "All day", or
    with days when it lasts a day or more ("Mon 09:00–Wed 17:00")."""
    if occurrence.all_day:
        return "All day"
    start, end = occurrence.local_start(zone), occurrence.local_end(zone)
    if end - start >= timedelta(days=1):
        return f"{start:%a %H:%M}–{end:%a %H:%M}"
    return f"{start:%H:%M}–{end:%H:%M}"


def _day_range(occurrence: Occurrence, zone: ZoneInfo) -> tuple[date, date]:
    """The first and last day (in `zone`) an occurrence covers; an item ending at midnight ends the day before,
    a zero-length one at midnight is on its own day."""
    if occurrence.all_day:
        return occurrence.start, max(occurrence.start, occurrence.end - timedelta(days=1))
    start, end = occurrence.local_start(zone), occurrence.local_end(zone)
    last = (end - timedelta(microseconds=1)).date() if end > start else start.date()
    return start.date(), last


# --- the list ---------------------------------------------------------------------------------------------

def next_occurrence(activity, now: datetime, *, budget: int | None = None) -> Occurrence | None:
    """The occurrence of `activity` going on at `now` or the first after it (a series' next date, not its first
    one), None when it has none left. `budget` caps working out a large rule, as in the week view."""
    if not activity.is_recurring:
        occurrence = Occurrence.of(activity, "", *activity.span, None)
        return occurrence if _ends_after(occurrence, now) else None
    horizon = datetime.combine(date(LATEST_YEAR, 12, 1), time.min, tzinfo=now.tzinfo)
    # A few rather than one: an occurrence moved earlier than the one before it still comes first.
    found, more = activity.occurrences_shown(now, horizon, limit=3, budget=budget)
    found = [o for o in found if _ends_after(o, now)]
    if not found and more:
        # Too large to work out here: its first date stands in, rather than leaving the series out.
        return Occurrence.of(activity, "", *activity.span, None)
    return min(found, key=lambda o: _start_instant(o, now.tzinfo), default=None)


def _ends_after(occurrence: Occurrence, now: datetime) -> bool:
    if occurrence.all_day:
        return occurrence.end > now.date()
    return occurrence.end > now


def _start_instant(occurrence: Occurrence, zone) -> datetime:
    if occurrence.all_day:
        return datetime.combine(occurrence.start, time.min, tzinfo=zone)
    return occurrence.start


def first_occurrence(activity) -> Occurrence:
    """A series' first occurrence as the rule gives it (an item's only one)."""
    start, end = activity.span
    return Occurrence.of(activity, "", start, end, None)


@dataclass(frozen=True)
class ListRow:
    activity: object  # an Activity
    occurrence: Occurrence  # the occurrence shown: the next one of a series
    upcoming: bool  # a series shown at its next occurrence (said so: it is not the series' first date)

    def sort_key(self, zone):
        start = self.occurrence.start
        if self.occurrence.all_day:
            return datetime.combine(start, time.min, tzinfo=zone)
        return start

    def when(self, zone) -> str:
        """The date and time in words, the zone beside any time ("Wed 2026-12-02 09:00–10:00 CET")."""
        start, end = self.occurrence.local_start(zone), self.occurrence.local_end(zone)
        if self.occurrence.all_day:
            days = (end - start).days
            text = f"{start:%a %Y-%m-%d}"
            return f"{text}, {days} days (all day)" if days > 1 else f"{text} (all day)"
        last = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%a %Y-%m-%d %H:%M}"
        return f"{start:%a %Y-%m-%d %H:%M}–{last} {end.tzname()}"


def zone_label(zone, moment: datetime, days: int = 1) -> str:
    """The zone as people read it beside times: its name and abbreviation ("Europe/Amsterdam, CET"), and
    where the clocks change within `days` from `moment`, the day it changes ("CET, CEST from Sun 29 Mar")."""
    names, local = [], moment.astimezone(zone)
    for n in range(days):
        day = (local + timedelta(days=n)).replace(hour=12, minute=0, second=0, microsecond=0)
        short = day.tzname() or ""
        if not names or names[-1][0] != short:
            names.append((short, f"{day:%a %d %b}"))
    parts = [names[0][0]] + [f"{short} from {day}" for short, day in names[1:]]
    text = ", ".join(p for p in parts if p and p != zone.key)
    return f"{zone.key}, {text}" if text else zone.key
